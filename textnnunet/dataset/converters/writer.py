"""Writing a converted dataset: nnU-Net v2 raw folders, atomically and resumably.

Every file is written to a temporary name and renamed, so a case is either complete or absent; a case's label is
written first and its channel 0 last, so channel 0 marks the case done. An unfinished conversion leaves a marker
file (the settings it was started with) and no dataset.json: running the same command again resumes it, other
settings are refused unless --overwrite. dataset.json is written last.
"""
from __future__ import annotations

import re
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import SimpleITK as sitk

from textnnunet.dataset.converters.base import (
    NIFTI_GZ,
    ConversionNotes,
    DatasetConverter,
    LabelMapping,
    SourceCase,
)
from textnnunet.dataset.integrity import geometry_differences
from textnnunet.dataset.resumable import check_dataset_id_free, check_resumable
from textnnunet.errors import UserError
from textnnunet.imageio.sitk_io import geometry_of, read_sitk
from textnnunet.utils.files import atomic_path, atomic_write_json, load_json

CONVERTER_VERSION = 1
IN_PROGRESS_MARKER = ".conversion_in_progress.json"
NOTES_FOLDER = ".conversion_notes"  # per-case notes while converting (kept across resumed runs)
REPORT_FILE = "conversion_report.json"


@dataclass(frozen=True)
class ConversionResult:
    folder: Path
    num_training: int
    num_test: int
    num_test_labels: int
    notes: list[str]


@dataclass(frozen=True)
class _CaseJob:
    converter: DatasetConverter
    case: SourceCase
    mapping: LabelMapping
    num_channels: int
    folder: Path


# ----------------------------------------------------------------------------------------------- public
def convert_dataset(converter: DatasetConverter, src: str | Path, raw_root: str | Path, dataset_id: int,
                    name: str | None = None, overwrite: bool = False, num_processes: int = 1) -> ConversionResult:
    """Convert the dataset in `src` into `raw_root`/DatasetXXX_Name; returns what was written."""
    src = Path(src).expanduser().resolve()
    if not src.is_dir():
        raise UserError(f"{src}: source folder not found")
    if not 1 <= int(dataset_id) <= 999:
        raise UserError(f"dataset id {dataset_id}: must be between 1 and 999")
    layout = converter.find_layout(src)
    mapping = converter.label_mapping(layout)
    cases = converter.cases(layout)
    channel_names = converter.channel_names(layout)
    _check_cases(cases, src)
    name = _safe_name(name or converter.dataset_name(layout))
    folder_name = f"Dataset{int(dataset_id):03d}_{name}"
    raw_root = Path(raw_root).expanduser().resolve()
    marker = {"converter": converter.name, "modality": converter.modality, "source": str(src),
              "converter_version": CONVERTER_VERSION}
    folder = _prepare_folder(raw_root, folder_name, int(dataset_id), marker, overwrite)
    jobs = [_CaseJob(converter, case, mapping, len(channel_names), folder) for case in cases]
    _run_jobs(jobs, num_processes)
    num_training = sum(not c.test for c in cases)
    num_test, num_test_labels = sum(c.test for c in cases), sum(c.test and c.label is not None for c in cases)
    meta = dataset_json(converter, layout, mapping, name, channel_names, num_training, num_test, num_test_labels, src)
    notes = _finish_folder(folder, meta, cases)
    return ConversionResult(folder, num_training, num_test, num_test_labels, notes)


def _finish_folder(folder: Path, meta: dict, cases: list[SourceCase]) -> list[str]:
    """Write the notes report and dataset.json (last: it marks the dataset finished), drop the working files."""
    notes = _collect_notes(folder, cases)
    if notes:
        atomic_write_json(folder / REPORT_FILE, {"notes": notes})
    atomic_write_json(folder / "dataset.json", meta)
    shutil.rmtree(folder / NOTES_FOLDER, ignore_errors=True)
    (folder / IN_PROGRESS_MARKER).unlink()
    return notes


def dataset_json(converter: DatasetConverter, layout, mapping: LabelMapping, name: str,
                 channel_names: dict[str, str], num_training: int, num_test: int, num_test_labels: int,
                 src: Path) -> dict:
    meta = {
        "channel_names": channel_names,
        "labels": mapping.dataset_json_labels(),
        "numTraining": num_training,
        "file_ending": NIFTI_GZ,
        "name": name,
        "description": converter.description(layout),
        "reference": converter.reference,
        "licence": converter.licence,
        "textnnunet_conversion": {
            "from": converter.name, "modality": converter.modality, "source_folder": str(src),
            "converter_version": CONVERTER_VERSION, "numTest": num_test, "numTestLabelled": num_test_labels,
        },
    }
    order = mapping.regions_class_order()
    if order is not None:
        meta["regions_class_order"] = order
    return meta


# ----------------------------------------------------------------------------------------------- folder
def _safe_name(name: str) -> str:
    """The Name of DatasetXXX_Name: letters, digits, '-' and '_' (a folder name on every system)."""
    name = str(name)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
        raise UserError(f"dataset name {name!r}: use letters, digits, '-' and '_' (starting with a letter or digit)")
    return name


def _check_cases(cases: list[SourceCase], src: Path) -> None:
    if not any(not c.test for c in cases):
        raise UserError(f"{src}: no labelled training case found")
    seen: set[str] = set()
    for case in cases:
        if case.case_id in seen:
            raise UserError(f"{src}: case id '{case.case_id}' appears twice")
        seen.add(case.case_id)


def _prepare_folder(raw_root: Path, folder_name: str, dataset_id: int, marker: dict, overwrite: bool) -> Path:
    """The dataset folder, after refusing to clobber a finished dataset, another id's folder or foreign files."""
    if raw_root.exists() and not raw_root.is_dir():
        raise UserError(f"{raw_root}: raw data folder is a file")
    raw_root.mkdir(parents=True, exist_ok=True)
    folder = raw_root / folder_name
    check_dataset_id_free(raw_root, folder_name, dataset_id, "choose another -d or move it away")
    if folder.exists() and overwrite:
        shutil.rmtree(folder)
    elif folder.exists():
        check_resumable(folder, IN_PROGRESS_MARKER, marker, "textnnunet_convert_dataset", "conversion")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / IN_PROGRESS_MARKER, marker)
    return folder



# ----------------------------------------------------------------------------------------------- cases
def _targets(job: _CaseJob) -> tuple[list[Path], Path | None]:
    split = "Ts" if job.case.test else "Tr"
    images = [job.folder / f"images{split}" / f"{job.case.case_id}_{c:04d}{NIFTI_GZ}" for c in range(job.num_channels)]
    label = job.folder / f"labels{split}" / f"{job.case.case_id}{NIFTI_GZ}" if job.case.label is not None else None
    return images, label


def _convert_case(job: _CaseJob) -> str:
    image_targets, label_target = _targets(job)
    if all(p.exists() for p in image_targets) and (label_target is None or label_target.exists()):
        return "skipped"  # done by an earlier, interrupted run
    channels = read_channels(job.case.images, job.num_channels)
    if label_target is not None:
        label, notes = job.converter.read_label(job.case, job.mapping)
        check_label_geometry(label, channels[0], job.case)
        _write_notes(job.folder, notes)
        _write(label, label_target)
    for channel, target in reversed(list(zip(channels, image_targets))):  # channel 0 last: marks the case done
        _write(channel, target)
    return "written"


def read_channels(files: tuple[Path, ...], num_channels: int) -> list[sitk.Image]:
    """The 3D channel images of one case: one file per channel, or one 4D (or multi-component) file split."""
    if len(files) == 1:
        channels = split_channels(read_sitk(files[0]), files[0])
    else:
        channels = [read_sitk(f) for f in files]
        for path, image in zip(files, channels):
            if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
                raise UserError(f"{path}: expected one 3D channel, found a {image.GetDimension()}D image with "
                                f"{image.GetNumberOfComponentsPerPixel()} component(s)")
    if len(channels) != num_channels:
        raise UserError(f"{files[0]}: {len(channels)} channel(s) found, the dataset declares {num_channels}")
    reference = geometry_of(channels[0], files[0])
    for index, channel in enumerate(channels[1:], start=1):
        differences = geometry_differences(reference, geometry_of(channel, files[min(index, len(files) - 1)]))
        if differences:
            raise UserError(f"{files[min(index, len(files) - 1)]}: geometry of channel {index} differs from "
                            f"channel 0: {'; '.join(differences)}")
    return channels


def split_channels(image: sitk.Image, path: Path) -> list[sitk.Image]:
    """A 3D image as [image]; a 4D image (x, y, z, c) as c 3D images with the first three axes' geometry (as
    nnU-Net splits MSD's 4D files); a 3D vector image as one image per component."""
    if image.GetDimension() == 4:
        size = list(image.GetSize())
        return [sitk.Extract(image, size[:3] + [0], [0, 0, 0, c]) for c in range(size[3])]
    if image.GetDimension() != 3:
        raise UserError(f"{path}: expected a 3D or 4D image, found {image.GetDimension()}D")
    if image.GetNumberOfComponentsPerPixel() > 1:
        return [sitk.VectorIndexSelectionCast(image, c) for c in range(image.GetNumberOfComponentsPerPixel())]
    return [image]


def check_label_geometry(label: sitk.Image, image: sitk.Image, case: SourceCase) -> None:
    """The label must lie on its image's voxel grid; otherwise nnU-Net would pair the wrong voxels."""
    label_path = case.label  # a file, or TotalSegmentator's folder of masks
    if label.GetDimension() != 3:
        raise UserError(f"{label_path}: expected a 3D label map, found {label.GetDimension()}D")
    differences = geometry_differences(geometry_of(image, case.images[0]), geometry_of(label, label_path))
    if differences:
        raise UserError(f"{label_path}: geometry differs from its image {case.images[0].name}: "
                        f"{'; '.join(differences)}")


def _write(image: sitk.Image, target: Path) -> None:
    with atomic_path(target, suffix=NIFTI_GZ) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)


def _write_notes(folder: Path, notes: ConversionNotes) -> None:
    if notes.lines:
        atomic_write_json(folder / NOTES_FOLDER / f"{notes.case_id}.json", list(notes.lines))


def _collect_notes(folder: Path, cases: list[SourceCase]) -> list[str]:
    lines: list[str] = []
    for case in cases:
        path = folder / NOTES_FOLDER / f"{case.case_id}.json"
        if path.is_file():
            lines += [f"{case.case_id}: {line}" for line in load_json(path)]
    return lines


def _run_jobs(jobs: list[_CaseJob], num_processes: int) -> None:
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc="converting cases", unit="case", disable=len(jobs) < 2 or None)
    if num_processes <= 1 or len(jobs) <= 1:
        for job in jobs:
            _convert_case(job)
            bar.update()
    else:
        # spawn: do not fork a parent that may hold threads (torch, tqdm's monitor).
        with ProcessPoolExecutor(max_workers=num_processes, mp_context=get_context("spawn")) as pool:
            for _ in pool.map(_convert_case, jobs):
                bar.update()
    bar.close()
