import json
import math

import numpy as np
import pytest

from textnnunet.errors import UserError
from textnnunet.evaluation.metrics import (
    binary_metrics,
    compute_case_metrics,
    confusion_counts,
    hausdorff_distance_95,
    label_map_to_masks,
    match_classes_by_name,
    normalized_surface_dice,
    surface_voxels,
)
from textnnunet.evaluation.summary import summarize, summary_markdown, write_summary


def _cube(shape=(10, 12, 14), low=(2, 3, 4), high=(6, 8, 9)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[tuple(slice(a, b) for a, b in zip(low, high))] = True
    return mask


# ---------------------------------------------------------------- overlap metrics


def test_counts_dice_iou_on_hand_made_masks():
    ref = np.zeros((1, 4, 4), bool)
    pred = np.zeros((1, 4, 4), bool)
    ref[0, 0, :3] = True  # 3 voxels
    pred[0, 0, 1:] = True  # 3 voxels, 2 shared
    pred[0, 3, 3] = True  # 1 stray voxel
    assert confusion_counts(ref, pred) == {"TP": 2, "FP": 2, "FN": 1, "TN": 11}
    m = binary_metrics(ref, pred, spacing=(1, 1, 1))
    assert m["Dice"] == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))
    assert m["IoU"] == pytest.approx(2 / 5)
    assert (m["n_ref"], m["n_pred"]) == (3, 4)


def test_volumes_use_anisotropic_spacing():
    ref = _cube()  # 4 * 5 * 5 = 100 voxels
    m = binary_metrics(ref, np.zeros_like(ref), spacing=(3.0, 0.5, 0.8))
    assert m["volume_ref_mm3"] == pytest.approx(100 * 3.0 * 0.5 * 0.8)
    assert m["volume_pred_mm3"] == 0.0
    assert m["Dice"] == 0.0 and m["IoU"] == 0.0


def test_empty_reference_and_prediction():
    empty = np.zeros((4, 4, 4), bool)
    m = binary_metrics(empty, empty, spacing=(1, 1, 1), compute_hd95=True)
    # nnU-Net's convention: nothing to judge -> NaN (summaries ignore it); NSD is a perfect 1
    assert math.isnan(m["Dice"]) and math.isnan(m["IoU"]) and math.isnan(m["HD95"])
    assert m["NSD"] == 1.0
    assert m["TN"] == 64


def test_exactly_one_empty_gives_zero_nsd():
    cube = _cube()
    empty = np.zeros_like(cube)
    assert normalized_surface_dice(cube, empty, (1, 1, 1), 2.0) == 0.0
    assert normalized_surface_dice(empty, cube, (1, 1, 1), 2.0) == 0.0
    assert binary_metrics(empty, cube, (1, 1, 1))["Dice"] == 0.0


# ---------------------------------------------------------------- surface metrics


def test_surface_voxels_of_a_cube_and_at_the_image_border():
    cube = _cube(low=(2, 2, 2), high=(6, 6, 6))  # 4^3 cube, 2^3 interior
    assert np.count_nonzero(surface_voxels(cube)) == 64 - 8
    full = np.ones((3, 3, 3), bool)  # touching the border: only the centre is interior
    assert np.count_nonzero(surface_voxels(full)) == 26


def test_nsd_identical_masks_is_one():
    cube = _cube()
    assert normalized_surface_dice(cube, cube, (2.0, 0.7, 0.7), 0.0) == 1.0


def test_nsd_shift_by_one_voxel():
    ref = _cube()
    pred = np.roll(ref, 1, axis=2)  # one voxel along x, spacing 0.8 mm there
    spacing = (3.0, 1.0, 0.8)
    assert normalized_surface_dice(ref, pred, spacing, tolerance_mm=0.8) == 1.0
    assert normalized_surface_dice(ref, pred, spacing, tolerance_mm=2.0) == 1.0
    strict = normalized_surface_dice(ref, pred, spacing, tolerance_mm=0.0)
    assert 0.0 < strict < 1.0
    assert normalized_surface_dice(ref, pred, spacing, tolerance_mm=0.5) == strict


def test_nsd_uses_physical_distances():
    ref = _cube()
    pred = np.roll(ref, 1, axis=0)  # one voxel along z, spacing 3 mm there
    assert normalized_surface_dice(ref, pred, (3.0, 1.0, 1.0), tolerance_mm=2.0) < 1.0
    assert normalized_surface_dice(ref, pred, (3.0, 1.0, 1.0), tolerance_mm=3.0) == 1.0


def test_hd95_of_shifted_cube_is_the_shift():
    ref = _cube()
    pred = np.roll(ref, 2, axis=1)
    assert hausdorff_distance_95(ref, pred, (1.0, 1.5, 1.0)) == pytest.approx(3.0)
    assert hausdorff_distance_95(ref, ref, (1.0, 1.5, 1.0)) == 0.0


def test_crop_does_not_change_results_at_image_border():
    # masks touching the image border: the one-voxel crop margin must not invent or hide surface
    ref = np.zeros((6, 6, 6), bool)
    ref[:, :3, :] = True
    pred = np.zeros_like(ref)
    pred[:, :4, :] = True
    # surfaces: the border faces of both slabs plus the planes y=2 (ref) and y=3 (pred), 1 mm apart
    nsd = normalized_surface_dice(ref, pred, (1, 1, 1), tolerance_mm=1.0)
    assert nsd == 1.0
    assert normalized_surface_dice(ref, pred, (1, 1, 1), tolerance_mm=0.0) < 1.0


def test_cropped_nsd_equals_uncropped_reference_computation():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    spacing = (2.0, 0.9, 1.3)
    for _ in range(3):
        ref = ndimage.binary_dilation(rng.random((12, 16, 16)) > 0.97, iterations=2)
        pred = ndimage.binary_dilation(rng.random((12, 16, 16)) > 0.97, iterations=2)
        s_ref, s_pred = surface_voxels(ref), surface_voxels(pred)
        d_to_ref = ndimage.distance_transform_edt(~s_ref, sampling=spacing)
        d_to_pred = ndimage.distance_transform_edt(~s_pred, sampling=spacing)
        for tol in (0.0, 1.0, 2.5):
            within = np.sum(d_to_ref[s_pred] <= tol) + np.sum(d_to_pred[s_ref] <= tol)
            expected = within / (s_ref.sum() + s_pred.sum())
            assert normalized_surface_dice(ref, pred, spacing, tol) == pytest.approx(expected)


# ---------------------------------------------------------------- case level


def test_compute_case_metrics_per_class_and_errors():
    ref = {"liver": _cube(), "spleen": np.zeros((10, 12, 14), bool)}
    pred = {"liver": _cube(), "spleen": np.zeros((10, 12, 14), bool), "kidney": _cube()}
    metrics = compute_case_metrics(ref, pred, spacing=(1, 1, 1), compute_hd95=True)
    assert set(metrics) == {"liver", "spleen"}  # kidney is not labelled here
    assert metrics["liver"]["Dice"] == 1.0 and metrics["liver"]["NSD"] == 1.0
    assert metrics["liver"]["HD95"] == 0.0
    assert math.isnan(metrics["spleen"]["Dice"])
    with pytest.raises(UserError, match="case_7: no prediction for class"):
        compute_case_metrics(ref, {"liver": _cube()}, (1, 1, 1), case_id="case_7")
    with pytest.raises(UserError, match="shape"):
        compute_case_metrics({"liver": _cube()}, {"liver": np.zeros((2, 2, 2), bool)}, (1, 1, 1))


def test_match_classes_by_name_uses_regions():
    label_map = np.zeros((1, 2, 4), np.uint8)
    label_map[0, 0] = [0, 1, 2, 3]
    reference_classes = {"liver": (1, 2), "liver tumor": (2,), "pancreas": (3,)}
    prediction = {"Liver": np.ones((1, 2, 4)), "Liver_Tumor": np.zeros((1, 2, 4)), "aorta": np.ones((1, 2, 4))}
    ref, pred = match_classes_by_name(label_map, reference_classes, prediction)
    assert list(ref) == list(pred) == ["liver", "liver tumor"]
    assert ref["liver"][0, 0].tolist() == [False, True, True, False]
    assert ref["liver tumor"][0, 0].tolist() == [False, False, True, False]
    assert pred["liver"].dtype == bool
    assert label_map_to_masks(label_map, {"pancreas": [3]})["pancreas"].sum() == 1


# ---------------------------------------------------------------- summary


def _case(case_id, dataset, liver_dice, spleen=None):
    metrics = {"liver": {"Dice": liver_dice, "IoU": liver_dice / 2, "NSD": 1.0}}
    if spleen is not None:
        metrics["spleen"] = {"Dice": spleen, "IoU": spleen, "NSD": 0.5}
    return {"case_id": case_id, "dataset": dataset, "metrics": metrics}


def test_summarize_aggregates_ignoring_nan():
    cases = [
        _case("a", "Dataset001_Liver", 0.8),
        _case("b", "Dataset001_Liver", 0.6),
        _case("c", "Dataset002_Abdomen", float("nan"), spleen=0.9),
    ]
    s = summarize(cases, nsd_tolerance_mm=2.0)
    assert s["num_cases"] == 3
    assert s["mean"]["liver"]["Dice"] == pytest.approx(0.7)
    assert s["std"]["liver"]["Dice"] == pytest.approx(0.1)
    assert s["count"]["liver"] == {"n_cases": 3, "n_dice_defined": 2}
    assert s["count"]["spleen"] == {"n_cases": 1, "n_dice_defined": 1}
    assert s["foreground_mean"]["Dice"] == pytest.approx((0.7 + 0.9) / 2)
    assert s["per_dataset"]["Dataset001_Liver"]["num_cases"] == 2
    assert list(s["per_dataset"]["Dataset001_Liver"]["mean"]) == ["liver"]
    assert math.isnan(s["per_dataset"]["Dataset002_Abdomen"]["mean"]["liver"]["Dice"])
    assert [c["case_id"] for c in s["metric_per_case"]] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="dataset"):
        summarize([{"case_id": "x", "metrics": {}}])


def test_write_summary_json_and_markdown(tmp_path):
    cases = [_case("a", "D1", 0.8), _case("b", "D2", 0.6, spleen=float("nan"))]
    json_path, md_path = write_summary(summarize(cases, nsd_tolerance_mm=1.5), tmp_path / "eval")
    loaded = json.loads(json_path.read_text())
    assert loaded["mean"]["liver"]["Dice"] == pytest.approx(0.7)
    assert math.isnan(loaded["mean"]["spleen"]["Dice"])
    md = md_path.read_text()
    assert "| class | Dice (mean ± std) | IoU | NSD @ 1.5 mm | n | FP voxels | FN voxels |" in md
    assert "| liver | 0.7000 ± 0.1000 | 0.3500 | 1.0000 | 2 |" in md
    assert "| spleen | n/a ± n/a | n/a | 0.5000 | 1 |" in md
    assert "## D1 (1 case(s))" in md and "## D2 (1 case(s))" in md
    assert md == summary_markdown(loaded)
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == ["summary.json", "summary.md"]
