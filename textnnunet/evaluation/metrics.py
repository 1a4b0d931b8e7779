"""Per-class segmentation metrics on binary masks (numpy/scipy only).

Conventions (nnU-Net's where it has one):
- Dice and IoU are NaN when reference and prediction are both empty (nothing to judge); summaries
  average with NaN ignored.
- Normalized surface Dice (NSD) at a tolerance in mm, computed on surface *voxels* (mask minus its
  6/4-connected erosion, image border counts as outside) with physical distances from
  `distance_transform_edt(sampling=spacing)`: the share of both surfaces lying within the tolerance
  of the other surface. 1.0 when both masks are empty, 0.0 when exactly one is.
- HD95 (optional): the larger of the two directed 95th-percentile surface distances, in mm; NaN when
  either mask is empty.

Every metric is an entry of the registry `METRICS` (name -> `Metric`): `binary_metrics` computes the entries in
order, summary.md shows the ones with a `summary_column`, the benchmark compares the ones with a `benchmark_key`.
A new metric is one function and one entry there.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from textnnunet.dataset.description import normalise_class_name
from textnnunet.errors import UserError


def confusion_counts(reference: np.ndarray, prediction: np.ndarray) -> dict[str, int]:
    """TP, FP, FN, TN voxel counts of two boolean masks of the same shape."""
    ref = np.asarray(reference, dtype=bool)
    pred = np.asarray(prediction, dtype=bool)
    tp = int(np.count_nonzero(ref & pred))
    fp = int(np.count_nonzero(pred & ~ref))
    fn = int(np.count_nonzero(ref & ~pred))
    return {"TP": tp, "FP": fp, "FN": fn, "TN": int(ref.size - tp - fp - fn)}


def dice_from_counts(tp: int, fp: int, fn: int) -> float:
    denominator = 2 * tp + fp + fn
    return float("nan") if denominator == 0 else 2 * tp / denominator


def iou_from_counts(tp: int, fp: int, fn: int) -> float:
    denominator = tp + fp + fn
    return float("nan") if denominator == 0 else tp / denominator


def volume_mm3(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Number of foreground voxels times the voxel volume (spacing in mm, same axis order as mask)."""
    return float(np.count_nonzero(mask)) * float(np.prod(spacing))


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """Foreground voxels with at least one face neighbour outside the mask (or outside the image)."""
    mask = np.asarray(mask, dtype=bool)
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _crop_to_union(reference: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop both masks to their joint bounding box, so distance transforms stay small.

    Exact: every surface voxel lies inside the box, and a mask voxel on the box edge has a
    background neighbour just outside it, so it is a surface voxel with or without the crop.
    """
    coords = np.argwhere(reference | prediction)
    box = tuple(slice(lo, hi + 1) for lo, hi in zip(coords.min(axis=0), coords.max(axis=0)))
    return reference[box], prediction[box]


def _surface_distances(
    reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each prediction surface voxel to the reference surface, and vice versa.

    Both masks must be non-empty.
    """
    ref, pred = _crop_to_union(reference, prediction)
    surface_ref, surface_pred = surface_voxels(ref), surface_voxels(pred)
    to_ref = ndimage.distance_transform_edt(~surface_ref, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~surface_pred, sampling=spacing)
    return to_ref[surface_pred], to_pred[surface_ref]


def _check_spacing(spacing: Sequence[float], ndim: int) -> tuple[float, ...]:
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != ndim or any(s <= 0 for s in spacing):
        raise ValueError(f"spacing {spacing} must have {ndim} positive values")
    return spacing


def normalized_surface_dice(
    reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float], tolerance_mm: float
) -> float:
    """(|S_pred within tol of S_ref| + |S_ref within tol of S_pred|) / (|S_pred| + |S_ref|)."""
    ref = np.asarray(reference, dtype=bool)
    pred = np.asarray(prediction, dtype=bool)
    spacing = _check_spacing(spacing, ref.ndim)
    if tolerance_mm < 0:
        raise ValueError(f"tolerance_mm must be >= 0, got {tolerance_mm}")
    has_ref, has_pred = ref.any(), pred.any()
    if not has_ref and not has_pred:
        return 1.0
    if not has_ref or not has_pred:
        return 0.0
    pred_to_ref, ref_to_pred = _surface_distances(ref, pred, spacing)
    within = np.count_nonzero(pred_to_ref <= tolerance_mm) + np.count_nonzero(ref_to_pred <= tolerance_mm)
    return float(within / (pred_to_ref.size + ref_to_pred.size))


def hausdorff_distance_95(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float]) -> float:
    """Symmetric 95th-percentile Hausdorff distance in mm (max of the two directed percentiles)."""
    ref = np.asarray(reference, dtype=bool)
    pred = np.asarray(prediction, dtype=bool)
    spacing = _check_spacing(spacing, ref.ndim)
    if not ref.any() or not pred.any():
        return float("nan")
    pred_to_ref, ref_to_pred = _surface_distances(ref, pred, spacing)
    return float(max(np.percentile(pred_to_ref, 95), np.percentile(ref_to_pred, 95)))


@dataclass(frozen=True)
class MetricInputs:
    """One class of one case: boolean masks, spacing (mm, mask axis order), the confusion counts, NSD tolerance."""

    reference: np.ndarray
    prediction: np.ndarray
    spacing: tuple[float, ...]
    counts: Mapping[str, int]
    nsd_tolerance_mm: float


@dataclass(frozen=True)
class Metric:
    """compute: the value for one class of one case. summary_column: its header in summary.md (None: not shown);
    summary_style: "score" (mean, the first one with ± std) or "count" (mean voxel count per case).
    uses_tolerance: the header names the NSD tolerance. benchmark_key: compared between models in benchmark.json
    (`<key>_mean`, `<key>_std`) and benchmark.md, the first one also in the ablation and test tables and plots.
    optional: computed only when asked for (HD95, slow)."""

    compute: Callable[[MetricInputs], float | int]
    summary_column: str | None = None
    summary_style: str = "score"
    uses_tolerance: bool = False
    benchmark_key: str | None = None
    optional: bool = False


def _count_of(key: str) -> Callable[[MetricInputs], int]:
    return lambda m: m.counts[key]


METRICS: dict[str, Metric] = {
    "TP": Metric(_count_of("TP")),
    "FP": Metric(_count_of("FP"), summary_column="FP voxels", summary_style="count"),
    "FN": Metric(_count_of("FN"), summary_column="FN voxels", summary_style="count"),
    "TN": Metric(_count_of("TN")),
    "Dice": Metric(lambda m: dice_from_counts(m.counts["TP"], m.counts["FP"], m.counts["FN"]),
                   summary_column="Dice", benchmark_key="dice"),
    "IoU": Metric(lambda m: iou_from_counts(m.counts["TP"], m.counts["FP"], m.counts["FN"]), summary_column="IoU"),
    "n_ref": Metric(lambda m: m.counts["TP"] + m.counts["FN"]),
    "n_pred": Metric(lambda m: m.counts["TP"] + m.counts["FP"]),
    "volume_ref_mm3": Metric(lambda m: volume_mm3(m.reference, m.spacing)),
    "volume_pred_mm3": Metric(lambda m: volume_mm3(m.prediction, m.spacing)),
    "NSD": Metric(lambda m: normalized_surface_dice(m.reference, m.prediction, m.spacing, m.nsd_tolerance_mm),
                  summary_column="NSD", uses_tolerance=True, benchmark_key="nsd"),
    "HD95": Metric(lambda m: hausdorff_distance_95(m.reference, m.prediction, m.spacing), optional=True),
}


def summary_metrics(style: str) -> list[str]:
    """Names of the metrics summary.md shows in this style ("score" or "count"), in registry order."""
    return [name for name, m in METRICS.items() if m.summary_column is not None and m.summary_style == style]


def benchmark_metrics() -> list[tuple[str, str]]:
    """(metric name, benchmark key) of the metrics the benchmark compares, the primary one first."""
    return [(name, m.benchmark_key) for name, m in METRICS.items() if m.benchmark_key is not None]


def binary_metrics(
    reference: np.ndarray,
    prediction: np.ndarray,
    spacing: Sequence[float],
    nsd_tolerance_mm: float = 2.0,
    compute_hd95: bool = False,
) -> dict[str, float | int]:
    """Every metric of the registry for one class (the optional ones only when asked: HD95 with compute_hd95)."""
    ref = np.asarray(reference, dtype=bool)
    pred = np.asarray(prediction, dtype=bool)
    spacing = _check_spacing(spacing, ref.ndim)
    inputs = MetricInputs(ref, pred, spacing, confusion_counts(ref, pred), nsd_tolerance_mm)
    requested = {"HD95"} if compute_hd95 else set()
    return {name: metric.compute(inputs) for name, metric in METRICS.items()
            if not metric.optional or name in requested}


def compute_case_metrics(
    reference: Mapping[str, np.ndarray],
    prediction: Mapping[str, np.ndarray],
    spacing: Sequence[float],
    nsd_tolerance_mm: float = 2.0,
    compute_hd95: bool = False,
    case_id: str = "case",
) -> dict[str, dict[str, float | int]]:
    """Metrics for every class of `reference` (class name -> mask); `prediction` must hold each one.

    Classes only in `prediction` are ignored: a case is judged on what its reference labels.
    """
    missing = [name for name in reference if name not in prediction]
    if missing:
        raise UserError(f"{case_id}: no prediction for class(es) {', '.join(missing)}")
    metrics = {}
    for name, ref in reference.items():
        pred = prediction[name]
        if np.shape(ref) != np.shape(pred):
            raise UserError(
                f"{case_id}: class '{name}' reference shape {np.shape(ref)} != prediction shape {np.shape(pred)}"
            )
        metrics[name] = binary_metrics(ref, pred, spacing, nsd_tolerance_mm, compute_hd95)
    return metrics


def label_map_to_masks(label_map: np.ndarray, classes: Mapping[str, Sequence[int]]) -> dict[str, np.ndarray]:
    """Boolean mask per class; a class covers all its label values (region syntax: liver = {1, 2})."""
    label_map = np.asarray(label_map)
    return {name: np.isin(label_map, np.asarray(values, dtype=label_map.dtype)) for name, values in classes.items()}


def match_classes_by_name(
    reference_label_map: np.ndarray,
    reference_classes: Mapping[str, Sequence[int]],
    prediction_masks: Mapping[str, np.ndarray],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Reference and prediction masks for the classes both sides name, in the reference's order.

    Names are compared after `normalise_class_name`, so a universal model's "Liver_Tumor" output is
    scored against a dataset's "liver tumor" region. Classes the dataset does not label are left out
    (they cannot be judged there); so are reference classes the model did not predict.
    """
    predicted = {normalise_class_name(k): np.asarray(v, dtype=bool) for k, v in prediction_masks.items()}
    wanted = {normalise_class_name(k): tuple(v) for k, v in reference_classes.items()}
    shared = {name: values for name, values in wanted.items() if name in predicted}
    return label_map_to_masks(reference_label_map, shared), {name: predicted[name] for name in shared}
