"""The dataset.json model of an nnU-Net v2 raw dataset, seen as named classes (= text prompts)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from textnnunet.errors import UserError
from textnnunet.utils.files import load_json

REQUIRED_KEYS = ("channel_names", "labels", "numTraining", "file_ending")


def normalise_class_name(name: str) -> str:
    """'Liver_Tumor' -> 'liver tumor'. Names are prompts, so they are compared in this form."""
    return re.sub(r"\s+", " ", re.sub(r"[_\-]", " ", str(name))).strip().lower()


@dataclass(frozen=True)
class Case:
    case_id: str
    image_files: list[Path]
    label_file: Path | None


@dataclass
class DatasetDescription:
    folder: Path
    name: str
    dataset_id: int
    channel_names: dict[str, str]
    file_ending: str
    num_training: int
    classes: dict[str, tuple[int, ...]]
    declared_label_values: tuple[int, ...]
    synonyms: dict[str, list[str]] = field(default_factory=dict)
    raw: dict = field(default_factory=dict)

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    @property
    def is_ct(self) -> bool:
        return all(v.strip().upper() == "CT" for v in self.channel_names.values())


def parse_dataset_name(folder_name: str) -> int | None:
    m = re.fullmatch(r"Dataset(\d{3})_(.+)", folder_name)
    return int(m.group(1)) if m else None


def find_dataset_folder(raw_root: Path, identifier: int | str) -> Path:
    raw_root = Path(raw_root)
    if not raw_root.is_dir():
        raise UserError(f"{raw_root}: raw data folder does not exist")
    if isinstance(identifier, str) and not identifier.isdigit():
        folder = raw_root / identifier
        if not folder.is_dir():
            raise UserError(f"{folder}: dataset folder not found")
        return folder
    wanted = int(identifier)
    matches = sorted(p for p in raw_root.iterdir() if p.is_dir() and parse_dataset_name(p.name) == wanted)
    if not matches:
        raise UserError(f"{raw_root}: no folder Dataset{wanted:03d}_<Name> for dataset id {wanted}")
    if len(matches) > 1:
        raise UserError(f"{raw_root}: several folders for dataset id {wanted}: {', '.join(p.name for p in matches)}")
    return matches[0]


def _parse_labels(labels: dict, json_path: Path) -> tuple[dict[str, tuple[int, ...]], tuple[int, ...]]:
    classes: dict[str, tuple[int, ...]] = {}
    declared: set[int] = set()
    for raw_name, value in labels.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        try:
            ints = tuple(sorted({int(v) for v in values}))
        except (TypeError, ValueError):
            raise UserError(f"{json_path}: label '{raw_name}' has a non-integer value {value!r}") from None
        declared.update(ints)
        name = normalise_class_name(raw_name)
        if name == "background" or ints == (0,):
            continue
        if 0 in ints:
            raise UserError(f"{json_path}: class '{raw_name}' includes label value 0 (background)")
        if name in classes:
            raise UserError(f"{json_path}: class name '{raw_name}' appears twice after normalisation")
        classes[name] = ints
    declared.add(0)
    return classes, tuple(sorted(declared))


def load_dataset(raw_root: Path, identifier: int | str) -> DatasetDescription:
    folder = find_dataset_folder(raw_root, identifier)
    return load_dataset_folder(folder)


def load_dataset_folder(folder: Path) -> DatasetDescription:
    folder = Path(folder)
    json_path = folder / "dataset.json"
    meta = load_json(json_path)
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise UserError(f"{json_path}: missing key(s) {', '.join(missing)}")
    channel_names = {str(k): str(v) for k, v in (meta.get("channel_names") or meta.get("modality")).items()}
    if not channel_names:
        raise UserError(f"{json_path}: channel_names is empty")
    classes, declared = _parse_labels(meta["labels"], json_path)
    if not classes:
        raise UserError(f"{json_path}: no foreground class in 'labels'")
    synonyms = {
        normalise_class_name(k): [normalise_class_name(s) for s in v] for k, v in (meta.get("synonyms") or {}).items()
    }
    unknown = sorted(set(synonyms) - set(classes))
    if unknown:
        raise UserError(f"{json_path}: synonyms given for unknown class(es) {', '.join(unknown)}")
    dataset_id = parse_dataset_name(folder.name)
    return DatasetDescription(
        folder=folder,
        name=folder.name,
        dataset_id=dataset_id if dataset_id is not None else -1,
        channel_names=channel_names,
        file_ending=str(meta["file_ending"]),
        num_training=int(meta["numTraining"]),
        classes=classes,
        declared_label_values=declared,
        synonyms=synonyms,
        raw=meta,
    )


def _cases_in(desc: DatasetDescription, images_dir: Path, labels_dir: Path | None) -> list[Case]:
    if not images_dir.is_dir():
        return []
    ending = desc.file_ending
    pattern = re.compile(r"(.+)_(\d{4})" + re.escape(ending) + r"$")
    by_case: dict[str, dict[int, Path]] = {}
    for p in sorted(images_dir.iterdir()):
        m = pattern.match(p.name)
        if m:
            by_case.setdefault(m.group(1), {})[int(m.group(2))] = p
    cases = []
    for case_id, channels in sorted(by_case.items()):
        # Missing channels are kept as non-existent paths so integrity checks can name them.
        files = [channels.get(c, images_dir / f"{case_id}_{c:04d}{ending}") for c in range(desc.num_channels)]
        label = None
        if labels_dir is not None and (labels_dir / f"{case_id}{ending}").exists():
            label = labels_dir / f"{case_id}{ending}"
        cases.append(Case(case_id, files, label))
    return cases


def training_cases(desc: DatasetDescription) -> list[Case]:
    cases = _cases_in(desc, desc.folder / "imagesTr", desc.folder / "labelsTr")
    if not cases:
        raise UserError(f"{desc.folder / 'imagesTr'}: no training images named <case>_0000{desc.file_ending}")
    return cases


def test_cases(desc: DatasetDescription) -> list[Case]:
    return _cases_in(desc, desc.folder / "imagesTs", desc.folder / "labelsTs")
