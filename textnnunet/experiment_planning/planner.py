"""Experiment planning: from fingerprints to plans.json (joint over datasets, or per dataset).

Follows nnU-Net v2's ExperimentPlanner rules (target spacing, patch/batch search against a memory target,
3d_lowres when the fullres patch sees too little of the median image, normalisation per channel name),
with two additions for text-prompted training: the plan pools spacings, shapes and intensities over all
datasets, and it carries the label space (class names = prompts, which dataset annotates which class).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from textnnunet.dataset.description import DatasetDescription, load_dataset, training_cases
from textnnunet.errors import UserError
from textnnunet.experiment_planning.fingerprint import (
    extract_fingerprint, fingerprint_exists, intensity_statistics, load_fingerprint, save_fingerprint,
)
from textnnunet.experiment_planning.label_space import build_label_space
from textnnunet.experiment_planning.topology import ANISOTROPY_THRESHOLD, plan_patch_and_batch, target_spacing
from textnnunet.paths import PLANS_FILE, joint_plans_name
from textnnunet.utils.files import atomic_write_json, load_json
from textnnunet.utils.plans import Plans

PLANNER_NAME = "textnnunet.ExperimentPlanner"
LOWRES_CREATION_THRESHOLD = 0.25  # make 3d_lowres when the fullres patch holds < 25% of the median image
LOWRES_SPACING_STEP = 1.01
LOWRES_MIN_SHRINK = 2.0  # drop 3d_lowres unless its median image has < half the voxels of fullres
USE_MASK_RELATIVE_SIZE = 0.75  # nnU-Net: normalise inside the nonzero mask when cropping removed > 1/4
N_CONV_PER_STAGE = 2
RESAMPLING = {"image_order": 3, "label_order": 1, "order_z": 0,
              "separate_z_anisotropy_threshold": ANISOTROPY_THRESHOLD}


@dataclass(frozen=True)
class PlannerPreset:
    """Memory target and network width; `gpu` is nnU-Net's default, `cpu` trains a demo in minutes."""
    name: str
    memory_target_gb: float
    base_features: int
    max_features_3d: int
    max_features_2d: int
    # Context-first planning (None: nnU-Net's rules unchanged). The fraction of the median image the patch must
    # cover along every axis; the target spacing is coarsened until it does. See documentation/design.md.
    min_context_fraction: float | None = None
    max_context_spacing_mm: float = 8.0  # never coarsen beyond this, whatever the field of view


PRESETS = {
    "gpu": PlannerPreset("gpu", memory_target_gb=8.0, base_features=32, max_features_3d=320, max_features_2d=512),
    # Measured on 2 CPU cores (documentation/results.md): about 0.7 s per training step at the demo's ~32x56x48
    # patch, batch 2, so the demo trains to its Dice bar in minutes. 16 base features cost ~2.5x that.
    # An 80 MB budget at a clinical 0.8 mm in-plane spacing leaves a keyhole patch (about 4 cm) that tells organs
    # apart by intensity only; the cpu preset trades resolution for field of view instead (issue 10).
    "cpu": PlannerPreset("cpu", memory_target_gb=0.08, base_features=8, max_features_3d=128, max_features_2d=256,
                         min_context_fraction=0.75),
}


def default_preset_name(cuda_available: bool) -> str:
    """For the CLI: the gpu preset when CUDA is there, else the cpu one."""
    return "gpu" if cuda_available else "cpu"


def get_preset(name: str) -> PlannerPreset:
    if name not in PRESETS:
        raise UserError(f"--preset: unknown preset '{name}' (choose from {', '.join(PRESETS)})")
    return PRESETS[name]


# ---------------------------------------------------------------------------------------------- channels

def agreed_channel_names(descs: Sequence[DatasetDescription]) -> dict[str, str]:
    """The channel names of the first dataset, after checking that the datasets can share one network input.

    Datasets with the same channels (compared case-insensitively) always can. Single-channel datasets of
    different modalities (CT and MR, T1 and T2) can too: each is normalised by its own channel name (its
    intensity group) and the network sees one input channel. Multi-channel datasets (MSD prostate T2 + ADC,
    brain tumour FLAIR/T1/T1c/T2) are planned only with datasets of the same channels.
    """
    first = descs[0]
    for other in descs[1:]:
        same = _channel_key(other) == _channel_key(first)
        if not same and (len(other.channel_names) > 1 or len(first.channel_names) > 1):
            raise UserError(f"{other.name}: channels {other.channel_names} differ from {first.name}'s "
                            f"{first.channel_names}; multi-channel datasets are planned only with datasets of the "
                            f"same channels (single-channel CT and MR datasets can be planned together)")
    return dict(first.channel_names)


def _channel_key(desc: DatasetDescription) -> list[tuple[int, str]]:
    return sorted((int(k), v.strip().lower()) for k, v in desc.channel_names.items())


def intensity_group_name(desc: DatasetDescription) -> str:
    """Datasets whose channels have the same names share a normalisation: "CT", "T2", "T2+ADC"."""
    return "+".join(desc.channel_names[k].strip() for k in sorted(desc.channel_names, key=int))


def intensity_groups(descs: Sequence[DatasetDescription], fingerprints: Sequence[dict],
                     samples: Sequence[np.ndarray]) -> dict[str, dict]:
    """Normalisation per group of datasets with the same channel names (nnU-Net's rules within each group:
    CT uses the group's pooled foreground percentiles, other modalities z-score each image)."""
    members: dict[str, list[int]] = {}
    keys: dict[tuple, str] = {}
    for i, desc in enumerate(descs):
        name = keys.setdefault(tuple(_channel_key(desc)), intensity_group_name(desc))
        members.setdefault(name, []).append(i)
    groups = {}
    for name, idx in members.items():
        relative = np.concatenate([fingerprints[i].get("relative_sizes_after_crop",
                                                       [fingerprints[i]["median_relative_size_after_cropping"]])
                                   for i in idx])
        schemes, use_mask = normalization_settings(descs[idx[0]].channel_names, float(np.median(relative)),
                                                   any(bool(descs[i].raw.get("use_mask_for_norm")) for i in idx))
        groups[name] = {
            "channel_names": dict(descs[idx[0]].channel_names),
            "datasets": [descs[i].name for i in idx],
            "normalization_schemes": schemes,
            "use_mask_for_norm": use_mask,
            "foreground_intensity_properties_per_channel": pooled_intensity_properties(
                [fingerprints[i] for i in idx], [samples[i] for i in idx]),
        }
    return groups


def normalization_scheme(channel_name: str) -> str:
    """nnU-Net's mapping from channel name to normalisation: CT is absolute (HU), the rest per image."""
    key = channel_name.strip().lower()
    if key == "ct":
        return "CTNormalization"
    if key == "nonorm":
        return "NoNormalization"
    return "ZScoreNormalization"


def normalization_settings(channel_names: dict[str, str], median_relative_size: float,
                           force_mask: bool = False) -> tuple[list[str], list[bool]]:
    """Schemes per channel and whether to normalise inside the nonzero mask only.

    The mask is used when cropping to nonzero removed a lot (e.g. skull-stripped MR), and only for
    per-image z-scoring: the zeros outside are background, not tissue.
    """
    schemes = [normalization_scheme(channel_names[k]) for k in sorted(channel_names, key=int)]
    use_mask = force_mask or median_relative_size < USE_MASK_RELATIVE_SIZE
    return schemes, [bool(use_mask and s == "ZScoreNormalization") for s in schemes]


def pooled_intensity_properties(fingerprints: Sequence[dict], samples: Sequence[np.ndarray],
                                seed: int = 1234) -> dict:
    """Foreground statistics over all datasets, every training case weighted equally.

    Saved samples are bounded per dataset, so a large dataset keeps fewer samples per case; each dataset
    contributes the same number of samples per case before the statistics are taken.
    """
    if len(fingerprints) == 1:
        return fingerprints[0]["foreground_intensity_properties_per_channel"]
    per_case = min(s.shape[1] // max(1, int(f["num_cases"])) for f, s in zip(fingerprints, samples))
    per_case = max(per_case, 1)
    rng = np.random.default_rng(seed)
    parts = []
    for f, s in zip(fingerprints, samples):
        n = min(s.shape[1], per_case * int(f["num_cases"]))
        parts.append(s[:, np.sort(rng.choice(s.shape[1], n, replace=False))])
    return intensity_statistics(np.concatenate(parts, axis=1))


# ---------------------------------------------------------------------------------------- configurations

def resampled_shapes(spacings: np.ndarray, shapes: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Shape of each case after resampling to `spacing` (nnU-Net's compute_new_shape)."""
    return np.round(shapes * spacings / spacing[None]).astype(int)


def _configuration(identifier: str, spacing: Sequence[float], median_shape: Sequence[float],
                   num_voxels_dataset: float, settings: "_Settings") -> dict:
    dim = len(spacing)
    patch = plan_patch_and_batch(spacing, median_shape, num_voxels_dataset, settings.memory_target_gb,
                                 settings.num_classes, settings.base_features,
                                 settings.max_features_3d if dim == 3 else settings.max_features_2d,
                                 N_CONV_PER_STAGE)
    return {
        "data_identifier": identifier,
        "spacing": [float(s) for s in spacing],
        "patch_size": [int(p) for p in patch.patch_size],
        "batch_size": int(patch.batch_size),
        "median_image_size_in_voxels": [int(round(m)) for m in median_shape],
        "normalization_schemes": list(settings.schemes),
        "use_mask_for_norm": list(settings.use_mask),
        "resampling": dict(RESAMPLING),
        "architecture": {
            "conv_dims": dim,
            "n_stages": patch.n_stages,
            "features_per_stage": patch.features_per_stage,
            "kernel_sizes": patch.kernel_sizes,
            "strides": patch.strides,
            "n_conv_per_stage": [N_CONV_PER_STAGE] * patch.n_stages,
            "n_conv_per_stage_decoder": [N_CONV_PER_STAGE] * (patch.n_stages - 1),
        },
        "patch_coverage_of_median_image": [round(float(c), 3) for c in patch_coverage(patch.patch_size, median_shape)],
    }


def patch_coverage(patch_size: Sequence[int], median_shape: Sequence[float]) -> np.ndarray:
    """Fraction of the median image the patch spans along each axis (1 where the patch holds the whole axis)."""
    return np.minimum(1.0, np.asarray(patch_size, np.float64) / np.maximum(np.asarray(median_shape, np.float64), 1))


def _coarser_spacing(spacing: np.ndarray, max_spacing_mm: float, step: float = 1.05) -> np.ndarray:
    """One coarsening step: the finest axes first (towards isotropy, which spends the voxels best), all axes once
    they are equal; no axis beyond `max_spacing_mm` (an axis already coarser than that is left as it is)."""
    open_axes = spacing < max_spacing_mm
    finest = open_axes & (spacing <= spacing[open_axes].min() * 1.001)
    out = spacing.copy()
    out[finest] = np.minimum(spacing[finest] * step, max_spacing_mm)
    return out


def context_first_configuration(identifier: str, spacing: Sequence[float], median_shape: Sequence[float],
                                num_cases: int, settings: "_Settings") -> dict:
    """The configuration at the finest spacing whose planned patch covers `settings.min_context_fraction` of the
    median image along every axis (or at `settings.max_context_spacing_mm`, whichever comes first).

    With a small memory budget nnU-Net's rules keep the median spacing and shrink the patch: at a clinical 0.8 mm
    in-plane spacing and the cpu budget that is a 4 cm keyhole in which liver, spleen and kidney differ only by
    intensity. Coarsening the spacing instead keeps the anatomy around an organ in view. The median image's
    extent in mm stays fixed; only how finely it is sampled changes.
    """
    median_spacing = np.asarray(spacing, dtype=np.float64)
    extent_mm = median_spacing * np.asarray(median_shape, dtype=np.float64)
    current = median_spacing.copy()
    while True:
        shape = extent_mm / current
        config = _configuration(identifier, current, shape, float(np.prod(shape)) * num_cases, settings)
        enough = bool(np.all(patch_coverage(config["patch_size"], shape) >= settings.min_context_fraction))
        if enough or np.all(current >= settings.max_context_spacing_mm):
            break
        current = _coarser_spacing(current, settings.max_context_spacing_mm)
    config["context"] = {
        "rule": "context_first", "min_fraction": float(settings.min_context_fraction),
        "max_spacing_mm": float(settings.max_context_spacing_mm),
        "median_spacing": [float(v) for v in median_spacing], "satisfied": enough,
    }
    # Coarsening by design (0.8 mm images planned at 4 mm) must low-pass first: point-sampled, a 5x coarser grid
    # keeps the full voxel noise and aliases thin structures (preprocessing.resampling.anti_alias).
    config["resampling"] = {**config["resampling"], "anti_aliasing": True}
    return config


@dataclass(frozen=True)
class _Settings:
    memory_target_gb: float
    base_features: int
    max_features_3d: int
    max_features_2d: int
    num_classes: int
    schemes: list[str]
    use_mask: list[bool]
    min_context_fraction: float | None = None
    max_context_spacing_mm: float = 8.0

    def plan(self, identifier: str, spacing: Sequence[float], median_shape: Sequence[float], num_cases: int) -> dict:
        """nnU-Net's rule (median spacing, patch shrunk to the budget), or context-first when the preset asks."""
        if self.min_context_fraction:
            return context_first_configuration(identifier, spacing, median_shape, num_cases, self)
        shape = np.asarray(median_shape, dtype=np.float64)
        return _configuration(identifier, spacing, shape, float(np.prod(shape)) * num_cases, self)


def _lowres_configuration(fullres: dict, median_shape: np.ndarray, num_cases: int,
                          settings: _Settings) -> dict | None:
    """nnU-Net's 3d_lowres: coarsen the spacing in small steps until the patch sees >= 25% of the image.

    Fine axes are coarsened first until no axis is more than 2x finer than the coarsest, then all axes.
    Returns None when the patch already sees enough, or when lowres would barely be smaller than fullres.
    """
    full_spacing = np.asarray(fullres["spacing"], dtype=np.float64)
    patch_voxels = float(np.prod(fullres["patch_size"], dtype=np.float64))
    median_voxels = float(np.prod(median_shape, dtype=np.float64))
    if patch_voxels / median_voxels >= LOWRES_CREATION_THRESHOLD:
        return None
    spacing = full_spacing.copy()
    lowres = None
    while patch_voxels / median_voxels < LOWRES_CREATION_THRESHOLD:
        fine = spacing.max() / spacing > 2
        if np.any(fine):
            spacing[fine] *= LOWRES_SPACING_STEP
        else:
            spacing *= LOWRES_SPACING_STEP
        shape = full_spacing / spacing * median_shape
        median_voxels = float(np.prod(shape, dtype=np.float64))
        lowres = _configuration("3d_lowres", spacing, shape, median_voxels * num_cases, settings)
        patch_voxels = float(np.prod(lowres["patch_size"], dtype=np.float64))
    if np.prod(median_shape, dtype=np.float64) / median_voxels < LOWRES_MIN_SHRINK:
        return None
    return lowres


def region_margins(per_value: dict[str, list[float]], values: Sequence[int]) -> list[float] | None:
    """One case's [inferior, superior] mm beyond a class made of label `values` (a region: the smallest margin of
    its values on each side), from the fingerprint's per-value margins; None where the case does not show it."""
    shown = [per_value[str(v)] for v in values if str(v) in per_value]
    return [min(m[0] for m in shown), min(m[1] for m in shown)] if shown else None


def label_margins(label_space: dict, fingerprints: Sequence[dict]) -> dict[str, dict[str, dict]]:
    """{class: {dataset: {"inferior_mm", "superior_mm", "cases"}}}: over the cases of each dataset labelling the
    class that show it, the median millimetres of image below and above it along the body axis (fingerprint
    `label_margins_mm`; a dataset whose fingerprint predates them is left out). A prompt is taught where its
    structure ends, and what lies beyond, only within these margins (design.md)."""
    out: dict[str, dict[str, dict]] = {}
    for fingerprint in fingerprints:
        dataset, per_case = fingerprint.get("dataset"), fingerprint.get("label_margins_mm")
        if per_case is None or dataset not in label_space["datasets"]:
            continue
        for name, values in label_space["datasets"][dataset].items():
            sides = [m for m in (region_margins(case, values) for case in per_case) if m is not None]
            if sides:
                inferior, superior = np.median(np.asarray(sides), axis=0)
                out.setdefault(name, {})[dataset] = {"inferior_mm": float(inferior), "superior_mm": float(superior),
                                                     "cases": len(sides)}
    return out


# A class whose labelling datasets all show less body than this beyond it, on one side, gets a note at planning:
# about a centimetre: its boundary on that side and the tissue beyond are hardly ever shown.
LABEL_MARGIN_NOTE_MM = 10.0


def narrow_label_margins(margins: dict[str, dict[str, dict]], min_mm: float = LABEL_MARGIN_NOTE_MM
                         ) -> list[tuple[str, str, float]]:
    """(class, side, mm) for each class and side ("below"/"above") where even the labelling dataset that shows
    most shows a median under `min_mm` of image beyond the class."""
    narrow = []
    for name, per_dataset in margins.items():
        for side, key in (("below", "inferior_mm"), ("above", "superior_mm")):
            widest = max(m[key] for m in per_dataset.values())
            if widest < min_mm:
                narrow.append((name, side, widest))
    return narrow


def plan_experiment(descs: list[DatasetDescription], fingerprints: list[dict], samples: list[np.ndarray],
                    plans_name: str, memory_target_gb: float, base_features: int = 32,
                    max_features_3d: int = 320, max_features_2d: int = 512,
                    min_context_fraction: float | None = None, max_context_spacing_mm: float = 8.0) -> dict:
    """Plans for training one network on all `descs` together (spacings and intensities pooled).

    `min_context_fraction` (the cpu preset's rule): coarsen the target spacing until every configuration's patch
    covers that fraction of the median image along each axis; 3d_lowres is then not made (the context it would add
    is already there). None keeps nnU-Net's rules.
    """
    if not descs or len(descs) != len(fingerprints) or len(descs) != len(samples):
        raise ValueError("plan_experiment needs one fingerprint and one sample per dataset")
    for desc, fp in zip(descs, fingerprints):
        if fp.get("dataset", desc.name) != desc.name:
            raise UserError(f"{desc.name}: fingerprint belongs to {fp['dataset']}; re-extract it")
    if base_features < 1 or max_features_3d < base_features or max_features_2d < base_features:
        raise UserError(f"base_features/max_features: need 1 <= base ({base_features}) <= max "
                        f"({max_features_3d} 3d, {max_features_2d} 2d)")
    channel_names = agreed_channel_names(descs)
    label_space = build_label_space(descs)

    spacings = np.concatenate([np.asarray(f["spacings"], dtype=np.float64).reshape(-1, 3) for f in fingerprints])
    shapes = np.concatenate([np.asarray(f["shapes_after_crop"], dtype=np.float64).reshape(-1, 3)
                             for f in fingerprints])
    num_cases = len(spacings)
    groups = intensity_groups(descs, fingerprints, samples)
    # The configurations' normalisation fields (and the plan's intensity properties) are the first group's, as in
    # a plan of one modality; a plan of several also lists every group and which dataset belongs to which.
    first_group = next(iter(groups.values()))
    schemes, use_mask = first_group["normalization_schemes"], first_group["use_mask_for_norm"]
    settings = _Settings(memory_target_gb, base_features, max_features_3d, max_features_2d,
                         num_classes=len(label_space["classes"]) + 1, schemes=schemes, use_mask=use_mask,
                         min_context_fraction=min_context_fraction, max_context_spacing_mm=max_context_spacing_mm)

    fullres_spacing = target_spacing(spacings, shapes)
    median_shape = np.median(resampled_shapes(spacings, shapes, fullres_spacing), axis=0)

    configurations: dict[str, dict] = {}
    if round(median_shape[0]) > 1:  # a stack of single slices gets 2d only
        fullres = settings.plan("3d_fullres", fullres_spacing, median_shape, num_cases)
        configurations["3d_fullres"] = fullres
        lowres = None if min_context_fraction else _lowres_configuration(fullres, median_shape, num_cases, settings)
        if lowres is not None:
            configurations["3d_lowres"] = lowres
    # 2d: the dataset's voxels counted as in 3D (nnU-Net's batch cap), the context rule on the in-plane axes.
    configurations["2d"] = settings.plan("2d", fullres_spacing[1:], median_shape[1:], num_cases * median_shape[0])
    return {
        "plans_name": plans_name,
        "datasets": [d.name for d in descs],
        "channel_names": channel_names,
        "file_ending": descs[0].file_ending,
        "label_space": label_space,
        "foreground_intensity_properties_per_channel": first_group["foreground_intensity_properties_per_channel"],
        "intensity_groups": groups,
        "dataset_intensity_group": {d: name for name, g in groups.items() for d in g["datasets"]},
        "memory_target_gb": float(memory_target_gb),
        "planner": PLANNER_NAME,
        "num_training_cases": {d.name: int(f["num_cases"]) for d, f in zip(descs, fingerprints)},
        "original_median_spacing": [float(v) for v in np.median(spacings, axis=0)],
        "original_median_shape": [int(round(v)) for v in np.median(shapes, axis=0)],
        "configurations": configurations,
        "label_margins_mm": label_margins(label_space, fingerprints),
    }


def plan_single_dataset(desc: DatasetDescription, fingerprint: dict, sample: np.ndarray, memory_target_gb: float,
                        base_features: int = 32, max_features_3d: int = 320, max_features_2d: int = 512,
                        min_context_fraction: float | None = None, max_context_spacing_mm: float = 8.0) -> dict:
    """The per-dataset (baseline) plan: the same rules with one dataset, named after it."""
    return plan_experiment([desc], [fingerprint], [sample], desc.name, memory_target_gb, base_features,
                           max_features_3d, max_features_2d, min_context_fraction, max_context_spacing_mm)


# --------------------------------------------------------------------------------------------- plans files

def save_plans(plans: dict, path: str | Path) -> Path:
    path = Path(path)
    atomic_write_json(path, plans)
    return path


def load_plans(path: str | Path) -> dict:
    """The JSON of a plans.json file or of the folder holding it, validated (`Plans.load`; wrap it in `Plans` to
    read it)."""
    path = Path(path)
    if path.is_dir() or path.suffix != ".json":
        path = path / PLANS_FILE
    return Plans.load(path).to_json()


def ensure_fingerprint(desc: DatasetDescription, folder: Path, num_processes: int = 1, overwrite: bool = False,
                       extract: bool = True, progress: bool = True) -> tuple[dict, np.ndarray]:
    """The saved fingerprint if it is complete and covers the current training cases, else a fresh one."""
    if fingerprint_exists(folder) and not overwrite:
        fingerprint, sample = load_fingerprint(folder)
        current = [c.case_id for c in training_cases(desc)]
        if fingerprint.get("case_ids", current) == current:
            return fingerprint, sample
        if not extract:
            raise UserError(f"{folder}: fingerprint is stale (training cases changed); run "
                            f"textnnunet_extract_fingerprint again")
    elif not extract:
        return load_fingerprint(folder)  # raises the UserError naming the command to run
    fingerprint, sample = extract_fingerprint(desc, num_processes=num_processes, progress=progress)
    save_fingerprint(fingerprint, sample, folder)
    return fingerprint, sample


def plan_datasets(raw_root: str | Path, preprocessed_root: str | Path, dataset_ids: Sequence[int | str],
                  memory_target_gb: float, num_processes: int = 1, base_features: int = 32,
                  max_features_3d: int = 320, max_features_2d: int = 512, extract: bool = True,
                  overwrite: bool = False, progress: bool = True, min_context_fraction: float | None = None,
                  max_context_spacing_mm: float = 8.0) -> tuple[Path, list[Path]]:
    """Fingerprint (missing ones only, unless `overwrite`), then the joint plan and one plan per dataset.

    Writes preprocessed/<TextPlans_...>/plans.json and preprocessed/DatasetXXX_Name/plans.json and returns
    (joint plans path, [per-dataset plans paths]).
    """
    if not dataset_ids:
        raise UserError("dataset ids: give at least one dataset")
    preprocessed_root = Path(preprocessed_root)
    descs: list[DatasetDescription] = []
    for identifier in dataset_ids:
        desc = load_dataset(Path(raw_root), identifier)
        if desc.dataset_id < 0:
            raise UserError(f"{desc.folder}: folder name must be DatasetXXX_Name to be planned")
        if all(d.name != desc.name for d in descs):
            descs.append(desc)
    found = [ensure_fingerprint(d, preprocessed_root / d.name, num_processes, overwrite, extract, progress)
             for d in descs]
    fingerprints = [f for f, _ in found]
    samples = [s for _, s in found]
    widths = dict(base_features=base_features, max_features_3d=max_features_3d, max_features_2d=max_features_2d,
                  min_context_fraction=min_context_fraction, max_context_spacing_mm=max_context_spacing_mm)
    name = joint_plans_name([d.dataset_id for d in descs])
    joint = plan_experiment(descs, fingerprints, samples, name, memory_target_gb, **widths)
    joint_path = save_plans(joint, preprocessed_root / name / PLANS_FILE)
    single_paths = []
    for desc, fingerprint, sample in zip(descs, fingerprints, samples):
        plans = plan_single_dataset(desc, fingerprint, sample, memory_target_gb, **widths)
        single_paths.append(save_plans(plans, preprocessed_root / desc.name / PLANS_FILE))
    return joint_path, single_paths
