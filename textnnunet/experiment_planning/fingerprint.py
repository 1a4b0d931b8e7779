"""Dataset fingerprint, as nnU-Net v2 collects it: spacings, shapes after cropping to the nonzero region,
how much cropping saved, and foreground intensity statistics per channel. Beyond nnU-Net: per case and label
value, how much image lies below and above the labelled slices along the body axis (`label_margins_mm`): a pooled
plan reports, per class, how much anatomy beyond it the datasets that label it ever show (design.md, "What partial
labels cannot teach").

Files (preprocessed/DatasetXXX_Name/): `dataset_fingerprint.json` and `foreground_intensity_sample.npy`
(a bounded float32 (channels, n) sample of foreground voxels, kept so that joint plans can pool exact
percentiles over several datasets). The JSON is written last: when it exists, the fingerprint is complete.
"""
from __future__ import annotations

import multiprocessing
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from textnnunet.dataset.description import Case, DatasetDescription, training_cases
from textnnunet.errors import UserError
from textnnunet.imageio.sitk_io import ImageGeometry, read_image, read_label, to_canonical
from textnnunet.utils.files import atomic_path, atomic_write_json, load_json

FINGERPRINT_FILE = "dataset_fingerprint.json"
SAMPLE_FILE = "foreground_intensity_sample.npy"
MAX_SAMPLE_PER_CHANNEL = 100_000
PERCENTILES = (0.5, 50.0, 99.5)


@dataclass(frozen=True)
class CaseFingerprint:
    case_id: str
    spacing: tuple[float, float, float]
    shape_after_crop: tuple[int, int, int]
    relative_size_after_crop: float
    foreground_sample: np.ndarray  # float32 (channels, n)
    label_margins_mm: dict[str, list[float]]  # label value -> [inferior, superior] mm of image beyond its slices


def nonzero_bbox(image: np.ndarray) -> list[list[int]]:
    """Half-open [start, end) box per spatial axis around voxels that are nonzero in any channel.

    An all-zero image keeps its full extent (nothing to crop to).
    """
    mask = np.any(image != 0, axis=0)
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(np.any(mask, axis=other))
        box.append([int(hits[0]), int(hits[-1]) + 1] if hits.size else [0, mask.shape[axis]])
    return box


def sample_foreground(values: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Pick `n` foreground voxel indices out of `values.shape[-1]`, covering every voxel as evenly as possible.

    Every case contributes the same number of samples (as nnU-Net's sampling with replacement), but a
    case with few foreground voxels repeats all of them equally often instead of drawing at random, so
    small structures are represented exactly.
    """
    count = values.shape[-1]
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    if count >= n:
        return np.sort(rng.choice(count, n, replace=False))
    repeats, rest = divmod(n, count)
    return np.concatenate([np.tile(np.arange(count), repeats), np.sort(rng.choice(count, rest, replace=False))])


# Up to this label value the slices' values are counted with one bincount per slice; above it (a stray value in a
# label file) with a sort per slice, so memory never grows with the value itself.
_BINCOUNT_MAX_VALUE = 4096


def _slices_per_value(slices: np.ndarray) -> dict[int, np.ndarray]:
    """{label value > 0: indices of the rows (slices) of `slices` (n_slices, voxels) that hold it}."""
    top = int(slices.max())
    if int(slices.min()) >= 0 and top <= _BINCOUNT_MAX_VALUE:
        present = np.stack([np.bincount(row.astype(np.intp, copy=False), minlength=top + 1) for row in slices]) > 0
        return {v: np.flatnonzero(present[:, v]) for v in range(1, top + 1) if present[:, v].any()}
    rows: dict[int, list[int]] = {}
    for index, row in enumerate(slices):
        for value in np.unique(row):
            if value > 0:
                rows.setdefault(int(value), []).append(index)
    return {v: np.asarray(r) for v, r in sorted(rows.items())}


def label_margins_mm(label: np.ndarray, geometry: ImageGeometry) -> dict[str, list[float]]:
    """Per label value > 0: the millimetres of image below (inferior) and above (superior) the axial slices holding
    it, along the body axis: in the canonical LPS frame the first array axis grows towards the head; a tilted slice
    axis counts its component along the body axis. A region of several values has the smallest margin of its
    values on each side. A single slice (2D data) has no body axis: {}."""
    canonical, canonical_geometry = to_canonical(label[None], geometry)
    slices = canonical[0].reshape(canonical.shape[1], -1)
    if slices.shape[0] <= 1 or slices.size == 0:
        return {}
    body_axis_share = abs(float(canonical_geometry.direction[8]))  # z component of the slice axis' direction
    slice_mm = float(canonical_geometry.spacing[0]) * body_axis_share
    last = slices.shape[0] - 1
    return {str(v): [float(hits[0]) * slice_mm, float(last - hits[-1]) * slice_mm]
            for v, hits in _slices_per_value(slices).items()}


def analyze_case(case: Case, case_index: int, samples_per_case: int, seed: int) -> CaseFingerprint:
    """Read one training case, crop to nonzero and sample its foreground intensities (label > 0)."""
    if case.label_file is None:
        raise UserError(f"{case.image_files[0]}: training case '{case.case_id}' has no label file in labelsTr")
    image, geometry = read_image(case.image_files)
    label, label_geometry = read_label(case.label_file)
    if tuple(label.shape) != tuple(image.shape[1:]):
        raise UserError(f"{case.label_file}: label shape {tuple(label.shape)} differs from image shape "
                        f"{tuple(image.shape[1:])}")
    if not np.all(np.isfinite(image)):
        raise UserError(f"{case.image_files[0]}: image of case '{case.case_id}' holds NaN or infinite values")
    box = nonzero_bbox(image)
    region = tuple(slice(a, b) for a, b in box)
    image_crop = image[(slice(None), *region)]
    label_crop = label[region]
    foreground = image_crop[:, label_crop > 0]  # (channels, n_foreground)
    # Seeded per case index, so results do not depend on which worker handles which case.
    rng = np.random.default_rng([seed, case_index])
    picked = sample_foreground(foreground, samples_per_case, rng)
    shape_after = tuple(int(s) for s in image_crop.shape[1:])
    return CaseFingerprint(
        case_id=case.case_id,
        spacing=tuple(float(s) for s in geometry.spacing),
        shape_after_crop=shape_after,
        relative_size_after_crop=float(np.prod(shape_after, dtype=np.float64) / np.prod(image.shape[1:],
                                                                                        dtype=np.float64)),
        foreground_sample=foreground[:, picked].astype(np.float32),
        # on the body (the nonzero box), as preprocessing crops it: zero padding shows no anatomy
        label_margins_mm=label_margins_mm(label_crop, replace(label_geometry, shape=label_crop.shape)),
    )


def intensity_statistics(sample: np.ndarray) -> dict[str, dict[str, float]]:
    """nnU-Net's foreground_intensity_properties_per_channel of a (channels, n) sample."""
    stats = {}
    for c in range(sample.shape[0]):
        values = sample[c].astype(np.float64)
        p005, median, p995 = np.percentile(values, PERCENTILES)
        stats[str(c)] = {
            "mean": float(values.mean()), "median": float(median), "std": float(values.std()),
            "min": float(values.min()), "max": float(values.max()),
            "percentile_00_5": float(p005), "percentile_99_5": float(p995),
        }
    return stats


def bounded_sample(sample: np.ndarray, max_per_channel: int, seed: int) -> np.ndarray:
    """At most `max_per_channel` columns of a (channels, n) sample, chosen at random without replacement."""
    if sample.shape[1] <= max_per_channel:
        return sample
    keep = np.sort(np.random.default_rng(seed).choice(sample.shape[1], max_per_channel, replace=False))
    return sample[:, keep]


def _analyze_all(cases: list[Case], num_processes: int, samples_per_case: int, seed: int, desc_name: str,
                 progress: bool) -> list[CaseFingerprint]:
    work = partial(_analyze_indexed, samples_per_case=samples_per_case, seed=seed)
    jobs = list(enumerate(cases))
    bar = dict(desc=f"Fingerprint {desc_name}", total=len(jobs), disable=not progress, unit="case")
    if num_processes <= 1 or len(jobs) == 1:
        return [work(j) for j in tqdm(jobs, **bar)]
    # spawn, as nnU-Net: forking a process that already holds threads (torch, ITK) can deadlock.
    with multiprocessing.get_context("spawn").Pool(min(num_processes, len(jobs))) as pool:
        return list(tqdm(pool.imap(work, jobs), **bar))


def _analyze_indexed(job: tuple[int, Case], samples_per_case: int, seed: int) -> CaseFingerprint:
    index, case = job
    return analyze_case(case, index, samples_per_case, seed)


def extract_fingerprint(desc: DatasetDescription, num_processes: int = 1, samples_per_case: int = 10000,
                        seed: int = 1234, max_sample_per_channel: int = MAX_SAMPLE_PER_CHANNEL,
                        progress: bool = True) -> tuple[dict, np.ndarray]:
    """Fingerprint of a dataset's training cases: (fingerprint dict, bounded foreground sample (c, n))."""
    cases = training_cases(desc)
    results = _analyze_all(cases, num_processes, samples_per_case, seed, desc.name, progress)
    pooled = np.concatenate([r.foreground_sample for r in results], axis=1)
    if pooled.shape[1] == 0:
        raise UserError(f"{desc.folder / 'labelsTr'}: no foreground voxels (label > 0) in any training case")
    relative_sizes = [r.relative_size_after_crop for r in results]
    fingerprint = {
        "dataset": desc.name,
        "case_ids": [r.case_id for r in results],
        "spacings": [list(r.spacing) for r in results],
        "shapes_after_crop": [list(r.shape_after_crop) for r in results],
        "relative_sizes_after_crop": relative_sizes,
        "median_relative_size_after_cropping": float(np.median(relative_sizes)),
        # Statistics over every drawn sample; only the saved sample is bounded.
        "foreground_intensity_properties_per_channel": intensity_statistics(pooled),
        "channel_names": dict(desc.channel_names),
        "num_cases": len(results),
        "label_margins_mm": [r.label_margins_mm for r in results],
    }
    return fingerprint, bounded_sample(pooled, max_sample_per_channel, seed)


def save_fingerprint(fingerprint: dict, sample: np.ndarray, folder: str | Path) -> Path:
    """Write the sample, then the JSON (its presence marks a complete fingerprint). Returns the JSON path."""
    folder = Path(folder)
    with atomic_path(folder / SAMPLE_FILE, suffix=".npy") as tmp:
        np.save(tmp, np.asarray(sample, dtype=np.float32))
    atomic_write_json(folder / FINGERPRINT_FILE, fingerprint)
    return folder / FINGERPRINT_FILE


def fingerprint_exists(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / FINGERPRINT_FILE).is_file() and (folder / SAMPLE_FILE).is_file()


def load_fingerprint(folder: str | Path) -> tuple[dict, np.ndarray]:
    folder = Path(folder)
    if not fingerprint_exists(folder):
        raise UserError(f"{folder / FINGERPRINT_FILE}: fingerprint missing; run textnnunet_extract_fingerprint "
                        f"(or textnnunet_plan_and_preprocess) for this dataset first")
    fingerprint = load_json(folder / FINGERPRINT_FILE)
    try:
        sample = np.load(folder / SAMPLE_FILE)
    except (ValueError, OSError) as e:
        raise UserError(f"{folder / SAMPLE_FILE}: unreadable ({e}); re-extract the fingerprint") from None
    return fingerprint, sample
