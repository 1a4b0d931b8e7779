"""Miniature fakes of the public datasets' own layouts (real folder and file names, 6x8x8 volumes), with what
their conversion must produce, case by case."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from textnnunet.dataset.converters.amos22 import AMOS22_CLASSES
from textnnunet.dataset.converters.btcv import BTCV_CLASSES
from textnnunet.dataset.converters.flare22 import FLARE22_CLASSES
from textnnunet.dataset.converters.kits23 import KITS23_CLASSES
from textnnunet.dataset.converters.msd import MSD_TASKS
from textnnunet.dataset.converters.totalsegmentator import TOTALSEGMENTATOR_V2_STRUCTURES
from textnnunet.dataset.converters.word import WORD_CLASSES

SHAPE = (6, 8, 8)  # (z, y, x)


@dataclass(frozen=True)
class Geometry:
    """Source geometry in SimpleITK order; deliberately not the identity (flipped x, odd origin and spacing)."""
    spacing: tuple[float, float, float] = (0.75, 1.25, 3.5)
    origin: tuple[float, float, float] = (120.5, -42.25, -310.0)
    direction: tuple[float, ...] = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass
class ExpectedCase:
    case_id: str
    channels: list[np.ndarray]  # what each _000N file must hold
    label: np.ndarray | None  # what the converted label file must hold (None: no label file)
    test: bool
    geometry: Geometry


@dataclass
class FakeSource:
    source: str  # --from
    src: Path
    dataset_name: str  # Name of DatasetXXX_Name
    channel_names: dict[str, str]
    classes: dict[str, tuple[int, ...]]
    cases: list[ExpectedCase] = field(default_factory=list)
    modality: str | None = None


def write_volume(path: Path, array: np.ndarray, geometry: Geometry) -> None:
    """A 3D (z, y, x) array, or a 4D (c, z, y, x) one as a 4D file with channels last, as MSD stores them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array, isVector=False)
    if array.ndim == 4:
        image.SetSpacing(geometry.spacing + (1.0,))
        image.SetOrigin(geometry.origin + (0.0,))
        d = np.eye(4)
        d[:3, :3] = np.reshape(geometry.direction, (3, 3))
        image.SetDirection(tuple(d.ravel()))
    else:
        image.SetSpacing(geometry.spacing)
        image.SetOrigin(geometry.origin)
        image.SetDirection(geometry.direction)
    sitk.WriteImage(image, str(path), useCompression=True)


def random_image(rng: np.random.Generator, channels: int = 1) -> list[np.ndarray]:
    return [rng.integers(-1000, 1500, size=SHAPE).astype(np.int16) for _ in range(channels)]


def random_labels(rng: np.random.Generator, values: list[int]) -> np.ndarray:
    """Every value at least once, the rest at random (background most often)."""
    labels = rng.choice([0] * len(values) + list(values), size=int(np.prod(SHAPE))).astype(np.uint8)
    labels[: len(values)] = values
    return rng.permutation(labels).reshape(SHAPE)


def _classes(table: dict) -> dict[str, tuple[int, ...]]:
    return {name: (v,) if isinstance(v, int) else tuple(v) for name, v in table.items()}


def _values(table: dict) -> list[int]:
    return sorted(set().union(*(_classes(table).values())))


# ----------------------------------------------------------------------------------------------- MSD
def make_msd(root: Path, task_folder: str, modality: dict[str, str], seed: int) -> FakeSource:
    """TaskNN_Name with dataset.json, 2 training cases (one label stored as float, as some MSD files are), 1 test
    case, and a macOS '._' copy that must be ignored."""
    rng, geometry = np.random.default_rng(seed), Geometry()
    task = MSD_TASKS[task_folder.split("_", 1)[1]]
    src = root / task_folder
    prefix = task.folder_name.lower()
    fake = FakeSource("msd", src, task.folder_name, modality, _classes(task.classes))
    training, test = [], []
    for index, is_test in ((0, False), (3, False), (7, True)):
        case_id = f"{prefix}_{index}"
        channels = random_image(rng, len(modality))
        volume = np.stack(channels) if len(channels) > 1 else channels[0]
        write_volume(src / ("imagesTs" if is_test else "imagesTr") / f"{case_id}.nii.gz", volume, geometry)
        label = None
        if not is_test:
            label = random_labels(rng, sorted(task.source_labels))
            stored = label.astype(np.float32) if index == 0 else label
            write_volume(src / "labelsTr" / f"{case_id}.nii.gz", stored, geometry)
            training.append({"image": f"./imagesTr/{case_id}.nii.gz", "label": f"./labelsTr/{case_id}.nii.gz"})
        else:
            test.append(f"./imagesTs/{case_id}.nii.gz")
        fake.cases.append(ExpectedCase(case_id, channels, label, is_test, geometry))
    (src / "imagesTr" / f"._{prefix}_0.nii.gz").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    meta = {"name": task.folder_name, "description": "fake", "tensorImageSize": "4D" if len(modality) > 1 else "3D",
            "modality": modality, "labels": {"0": "background", **{str(k): v for k, v in task.source_labels.items()}},
            "numTraining": len(training), "numTest": len(test), "training": training, "test": test}
    (src / "dataset.json").write_text(json.dumps(meta, indent=4))
    return fake


# ----------------------------------------------------------------------------------------------- KiTS23
def make_kits23(root: Path, seed: int = 11) -> FakeSource:
    rng, geometry = np.random.default_rng(seed), Geometry(spacing=(0.8, 0.8, 5.0), origin=(0.0, 0.0, 0.0))
    src = root / "kits23"
    fake = FakeSource("kits23", src, "KiTS23", {"0": "CT"}, _classes(KITS23_CLASSES))
    for number, has_label in ((0, True), (1, True), (412, False)):
        folder = src / "dataset" / f"case_{number:05d}"
        channels = random_image(rng)
        write_volume(folder / "imaging.nii.gz", channels[0], geometry)
        label = random_labels(rng, [1, 2, 3]) if has_label else None
        if has_label:
            write_volume(folder / "segmentation.nii.gz", label, geometry)
        fake.cases.append(ExpectedCase(folder.name, channels, label, not has_label, geometry))
    return fake


# ----------------------------------------------------------------------------------------------- BTCV
def make_btcv(root: Path, seed: int = 12) -> FakeSource:
    rng, geometry = np.random.default_rng(seed), Geometry()
    src = root / "Abdomen"
    fake = FakeSource("btcv", src, "BTCV", {"0": "CT"}, _classes(BTCV_CLASSES))
    for number, is_test in ((1, False), (2, False), (61, True)):
        split = "Testing" if is_test else "Training"
        channels = random_image(rng)
        write_volume(src / "RawData" / split / "img" / f"img{number:04d}.nii.gz", channels[0], geometry)
        label = None if is_test else random_labels(rng, _values(BTCV_CLASSES))
        if label is not None:
            write_volume(src / "RawData" / split / "label" / f"label{number:04d}.nii.gz", label, geometry)
        fake.cases.append(ExpectedCase(f"btcv_{number:04d}", channels, label, is_test, geometry))
    return fake


# ----------------------------------------------------------------------------------------------- AMOS22
AMOS_FAKE_CASES = (  # (id, images folder, labels folder or None, test)
    (1, "imagesTr", "labelsTr", False), (507, "imagesTr", "labelsTr", False), (8, "imagesVa", "labelsVa", False),
    (540, "imagesVa", "labelsVa", False), (500, "imagesTr", "labelsTr", False), (100, "imagesTs", None, True),
    (600, "imagesTs", None, True),
)


def make_amos22(root: Path, modality: str, seed: int = 13) -> FakeSource:
    """The same source for both modalities (ids <= 500 are CT); `modality` says which cases the fake expects."""
    rng, geometry = np.random.default_rng(seed), Geometry()
    src = root / "amos22"
    fake = FakeSource("amos22", src, f"AMOS22{modality}", {"0": modality}, _classes(AMOS22_CLASSES), modality=modality)
    for number, images, labels, is_test in AMOS_FAKE_CASES:
        name = f"amos_{number:04d}.nii.gz"
        channels = random_image(rng)
        label = None if labels is None else random_labels(rng, _values(AMOS22_CLASSES))
        if not (src / images / name).exists():
            write_volume(src / images / name, channels[0], geometry)
            if label is not None:
                write_volume(src / labels / name, label, geometry)
        else:  # the other modality's fake already wrote the files: expect what is there
            channels = [sitk.GetArrayFromImage(sitk.ReadImage(str(src / images / name)))]
            label = None if labels is None else sitk.GetArrayFromImage(sitk.ReadImage(str(src / labels / name)))
        if (number <= 500) == (modality == "CT"):
            fake.cases.append(ExpectedCase(f"amos_{number:04d}", channels, label, is_test, geometry))
    return fake


# ----------------------------------------------------------------------------------------------- WORD
def make_word(root: Path, seed: int = 14) -> FakeSource:
    rng, geometry = np.random.default_rng(seed), Geometry()
    src = root / "WORD-V0.1.0"
    fake = FakeSource("word", src, "WORD", {"0": "CT"}, _classes(WORD_CLASSES))
    for number, images, labels, is_test in ((1, "imagesTr", "labelsTr", False), (2, "imagesTr", "labelsTr", False),
                                            (101, "imagesVal", "labelsVal", False),
                                            (121, "imagesTs", "labelsTs", True)):
        name = f"word_{number:04d}.nii.gz"
        channels = random_image(rng)
        label = random_labels(rng, _values(WORD_CLASSES))
        write_volume(src / images / name, channels[0], geometry)
        write_volume(src / labels / name, label, geometry)
        fake.cases.append(ExpectedCase(f"word_{number:04d}", channels, label, is_test, geometry))
    return fake


# ----------------------------------------------------------------------------------------------- FLARE22
def make_flare22(root: Path, seed: int = 15) -> FakeSource:
    rng, geometry = np.random.default_rng(seed), Geometry(direction=(1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0))
    src = root / "FLARE22"
    fake = FakeSource("flare22", src, "FLARE22", {"0": "CT"}, _classes(FLARE22_CLASSES))
    for number in (1, 2):
        case_id = f"FLARE22_Tr_{number:04d}"
        channels = random_image(rng)
        label = random_labels(rng, _values(FLARE22_CLASSES))
        write_volume(src / "FLARE22Train" / "images" / f"{case_id}_0000.nii.gz", channels[0], geometry)
        write_volume(src / "FLARE22Train" / "labels" / f"{case_id}.nii.gz", label, geometry)
        fake.cases.append(ExpectedCase(case_id, channels, label, False, geometry))
    return fake


# ----------------------------------------------------------------------------------------------- TotalSegmentator
TS = TOTALSEGMENTATOR_V2_STRUCTURES


def make_totalsegmentator(root: Path, seed: int = 16) -> FakeSource:
    """Three cases with all 117 masks, meta.csv putting s0002 in the test split. In s0000 two masks overlap:
    kidney_left also claims a kidney_cyst_left voxel (the cyst, written later, keeps it) and costal_cartilages
    claims a spleen voxel (costal cartilages, value 117, wins)."""
    from textnnunet.dataset.converters.totalsegmentator import totalsegmentator_label_mapping

    rng, geometry = np.random.default_rng(seed), Geometry()
    src = root / "Totalsegmentator_dataset_v201"
    classes = totalsegmentator_label_mapping().classes
    fake = FakeSource("totalsegmentator", src, "TotalSegmentator", {"0": "CT"}, dict(classes))
    for number, split in ((0, "train"), (1, "val"), (2, "test")):
        folder = src / f"s{number:04d}"
        channels = random_image(rng)
        label = random_labels(rng, sorted(TS.values()))
        masks = {structure: label == value for structure, value in TS.items()}
        expected = label.copy()
        if number == 0:
            cyst_voxel = np.argwhere(label == TS["kidney_cyst_left"])[0]
            masks["kidney_left"][tuple(cyst_voxel)] = True
            spleen_voxel = np.argwhere(label == TS["spleen"])[0]
            masks["costal_cartilages"][tuple(spleen_voxel)] = True
            expected[tuple(spleen_voxel)] = TS["costal_cartilages"]
        write_volume(folder / "ct.nii.gz", channels[0], geometry)
        for structure, mask in masks.items():
            write_volume(folder / "segmentations" / f"{structure}.nii.gz", mask.astype(np.uint8), geometry)
        fake.cases.append(ExpectedCase(folder.name, channels, expected, split == "test", geometry))
    rows = ["image_id;age;gender;institute;study_type;split"]
    rows += [f"s{n:04d};60;m;A;ct abdomen;{split}" for n, split in ((0, "train"), (1, "val"), (2, "test"))]
    (src / "meta.csv").write_text("\n".join(rows) + "\n")
    return fake


def make_all_fakes(root: Path) -> list[FakeSource]:
    return [
        make_msd(root, "Task03_Liver", {"0": "CT"}, seed=1),
        make_msd(root, "Task01_BrainTumour", {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}, seed=2),
        make_msd(root, "Task05_Prostate", {"0": "T2", "1": "ADC"}, seed=3),
        make_kits23(root), make_btcv(root), make_amos22(root, "CT"), make_amos22(root, "MR"), make_word(root),
        make_flare22(root), make_totalsegmentator(root),
    ]
