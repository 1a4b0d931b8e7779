"""Dataset integrity checks (like nnU-Net's --verify_dataset_integrity), reporting every problem at once.

Each problem is one line that names the file and says what is wrong, so a user can fix them all in one pass
instead of meeting them one by one deep inside preprocessing.
"""
from __future__ import annotations

import gzip
import re
import struct
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from textnnunet.dataset.description import Case, DatasetDescription, test_cases, training_cases
from textnnunet.errors import UserError
from textnnunet.imageio.sitk_io import ImageGeometry, geometry_of, read_label, read_sitk

GEOMETRY_TOLERANCE = 1e-3  # same default as ImageGeometry.matches: mm for spacing/origin, cosines for direction


def geometry_differences(reference: ImageGeometry, other: ImageGeometry, tol: float = GEOMETRY_TOLERANCE) -> list[str]:
    """What differs between two geometries, as short phrases ('spacing [3, 2, 2] vs [3, 2.5, 2.5]')."""
    found = []
    if tuple(other.shape) != tuple(reference.shape):
        found.append(f"shape (z,y,x) {list(other.shape)} vs {list(reference.shape)}")
    if not np.allclose(other.spacing, reference.spacing, rtol=tol, atol=tol):
        found.append(f"spacing (z,y,x) {_fmt(other.spacing)} vs {_fmt(reference.spacing)}")
    if not np.allclose(other.origin, reference.origin, rtol=tol, atol=tol):
        found.append(f"origin {_fmt(other.origin)} vs {_fmt(reference.origin)}")
    if not np.allclose(other.direction, reference.direction, atol=tol):
        found.append(f"direction {_fmt(other.direction)} vs {_fmt(reference.direction)}")
    return found


def _fmt(values) -> str:
    return "[" + ", ".join(f"{float(v):.4g}" for v in values) + "]"


# ----------------------------------------------------------------------------------------------- NaN in NIfTI
_NIFTI_FLOAT_TYPES = {16: "f4", 64: "f8"}  # NIfTI datatype codes of float32 / float64


def nifti_non_finite_count(path: Path) -> int | None:
    """NaN/Inf voxels stored in a float NIfTI file, counted from the raw bytes.

    ITK's NIfTI reader (SimpleITK 2.x) silently turns NaN and Inf into 0, so the array cannot show them;
    the file itself still holds them. None when the file is not a float NIfTI-1/2 image.
    """
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    for endian in ("<", ">"):
        size = struct.unpack(endian + "i", raw[:4])[0] if len(raw) >= 4 else 0
        if size == 348:  # NIfTI-1
            datatype = struct.unpack(endian + "h", raw[70:72])[0]
            dims = struct.unpack(endian + "8h", raw[40:56])
            offset = int(struct.unpack(endian + "f", raw[108:112])[0])
            break
        if size == 540:  # NIfTI-2
            datatype = struct.unpack(endian + "h", raw[12:14])[0]
            dims = struct.unpack(endian + "8q", raw[16:80])
            offset = int(struct.unpack(endian + "q", raw[168:176])[0])
            break
    else:
        return None
    if datatype not in _NIFTI_FLOAT_TYPES:
        return None
    count = int(np.prod([max(int(d), 1) for d in dims[1:dims[0] + 1]]))
    values = np.frombuffer(raw, dtype=np.dtype(endian + _NIFTI_FLOAT_TYPES[datatype]), count=count, offset=offset)
    return int(values.size - np.count_nonzero(np.isfinite(values)))


def _non_finite_problem(path: Path, array: np.ndarray) -> str | None:
    if not np.issubdtype(array.dtype, np.floating):
        return None
    bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if not bad and path.name.endswith((".nii", ".nii.gz")):
        try:
            bad = nifti_non_finite_count(path) or 0
        except (OSError, struct.error, ValueError):
            bad = 0  # the header did not parse as expected; SimpleITK already read the file, trust it
        if bad:
            return f"{path}: {bad} voxel(s) are NaN or Inf in the file (SimpleITK would silently read them as 0)"
    return f"{path}: {bad} voxel(s) are NaN or Inf" if bad else None


# ----------------------------------------------------------------------------------------------- layout
def _training_cases_found(desc: DatasetDescription) -> list[Case]:
    try:
        return training_cases(desc)
    except UserError:
        return []  # no imagesTr or nothing in it: the numTraining check names the problem if one is expected


def _stray_files(desc: DatasetDescription, folder: Path, is_label_folder: bool, case_ids: set[str]) -> list[str]:
    """Files that nnU-Net would silently ignore or mis-read: wrong names, unknown channels, orphan labels."""
    if not folder.is_dir():
        return []
    ending = desc.file_ending
    image_name = re.compile(r"(.+)_(\d{4})" + re.escape(ending) + r"$")
    problems = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue  # hidden files (editor swap files, unfinished atomic writes) are not data
        if not path.name.endswith(ending):
            problems.append(f"{path}: file ending is not '{ending}' (the dataset.json file_ending)")
        elif is_label_folder:
            if path.name[: -len(ending)] not in case_ids:
                images = folder.parent / ("imagesTr" if folder.name == "labelsTr" else "imagesTs")
                problems.append(f"{path}: label without an image in {images}")
        else:
            match = image_name.match(path.name)
            if match is None:
                problems.append(f"{path}: image name is not <case>_<XXXX>{ending} (4-digit channel index)")
            elif int(match.group(2)) >= desc.num_channels:
                problems.append(f"{path}: channel {match.group(2)} is not in channel_names "
                                f"({desc.num_channels} channel(s) declared)")
    return problems


def _layout_problems(desc: DatasetDescription, train: list[Case], test: list[Case]) -> list[str]:
    problems = []
    if len(train) != desc.num_training:
        problems.append(f"{desc.folder / 'dataset.json'}: numTraining is {desc.num_training} but "
                        f"{desc.folder / 'imagesTr'} holds {len(train)} case(s)")
    if not train and not test:
        problems.append(f"{desc.folder}: no images named <case>_<XXXX>{desc.file_ending} in imagesTr or imagesTs")
    for case in train:
        if case.label_file is None:
            problems.append(f"{desc.folder / 'labelsTr' / (case.case_id + desc.file_ending)}: missing "
                            f"(training case '{case.case_id}' has no label)")
    for sub, cases, is_label in (("imagesTr", train, False), ("labelsTr", train, True),
                                 ("imagesTs", test, False), ("labelsTs", test, True)):
        problems += _stray_files(desc, desc.folder / sub, is_label, {c.case_id for c in cases})
    return problems


# ----------------------------------------------------------------------------------------------- one case
def check_case(case: Case, declared_label_values: tuple[int, ...], tol: float = GEOMETRY_TOLERANCE) -> list[str]:
    """Problems of one case: missing/unreadable channels, non-3D, NaN/Inf, geometry, undeclared label values."""
    problems: list[str] = []
    reference: tuple[Path, ImageGeometry] | None = None
    for channel, path in enumerate(case.image_files):
        if not path.is_file():
            problems.append(f"{path}: missing (channel {channel} of case '{case.case_id}')")
            continue
        try:
            image = read_sitk(path)
            geometry = geometry_of(image, path)
        except UserError as e:
            problems.append(str(e))
            continue
        non_finite = _non_finite_problem(path, sitk.GetArrayViewFromImage(image))
        if non_finite:
            problems.append(non_finite)
        if reference is None:
            reference = (path, geometry)
        else:
            diffs = geometry_differences(reference[1], geometry, tol)
            if diffs:
                problems.append(f"{path}: geometry differs from channel 0 ({reference[0].name}): {'; '.join(diffs)}")
    if case.label_file is not None:
        problems += _check_label(case.label_file, reference, declared_label_values, tol)
    return problems


def _check_label(path: Path, reference: tuple[Path, ImageGeometry] | None, declared: tuple[int, ...],
                 tol: float) -> list[str]:
    try:
        labels, geometry = read_label(path)
    except UserError as e:
        return [str(e)]
    problems = []
    if reference is not None:
        diffs = geometry_differences(reference[1], geometry, tol)
        if diffs:
            problems.append(f"{path}: geometry differs from its image ({reference[0].name}): {'; '.join(diffs)}")
    undeclared = sorted(set(np.unique(labels).tolist()) - set(declared))
    if undeclared:
        problems.append(f"{path}: label value(s) {', '.join(map(str, undeclared))} not declared in dataset.json "
                        f"labels (declared: {', '.join(map(str, declared))})")
    return problems


def _check_case_job(job: tuple[Case, tuple[int, ...], float]) -> list[str]:
    return check_case(*job)


# ----------------------------------------------------------------------------------------------- public
def verify_dataset_integrity(desc: DatasetDescription, num_processes: int = 1,
                             tol: float = GEOMETRY_TOLERANCE) -> list[str]:
    """Every problem found in the dataset, one line each (empty list: the dataset is fine).

    dataset.json itself was already validated by load_dataset; this checks the files against it.
    """
    train, test = _training_cases_found(desc), test_cases(desc)
    problems = _layout_problems(desc, train, test)
    jobs = [(case, desc.declared_label_values, tol) for case in train + test]
    if num_processes > 1 and len(jobs) > 1:
        # spawn: do not fork a parent that may hold threads (torch, tqdm).
        with ProcessPoolExecutor(max_workers=num_processes, mp_context=get_context("spawn")) as pool:
            per_case = list(pool.map(_check_case_job, jobs, chunksize=4))
    else:
        per_case = [_check_case_job(job) for job in jobs]
    for found in per_case:
        problems += found
    return problems


def assert_dataset_integrity(desc: DatasetDescription, num_processes: int = 1,
                             tol: float = GEOMETRY_TOLERANCE) -> None:
    """Raise UserError listing every problem (the first line says how many) unless the dataset is clean."""
    problems = verify_dataset_integrity(desc, num_processes, tol)
    if problems:
        lines = "\n".join(f"  {p}" for p in problems)
        raise UserError(f"{desc.folder}: {len(problems)} integrity problem(s) found\n{lines}")
