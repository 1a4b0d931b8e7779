"""perf/matrix_error_distances.py: errors split by distance to the organ, in units of the network's voxel."""
import importlib.util
from pathlib import Path

import numpy as np
from scipy import ndimage

PERF = Path(__file__).resolve().parents[1] / "perf"


def _load():
    spec = importlib.util.spec_from_file_location("matrix_error_distances", PERF / "matrix_error_distances.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ball(shape=(20, 20, 20), centre=(10, 10, 10), radius=5.0):
    z, y, x = np.indices(shape)
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius ** 2


def test_a_one_voxel_dilation_is_all_rim_and_a_distant_blob_is_gross():
    m = _load()
    reference = _ball()
    rim = ndimage.binary_dilation(reference) & ~reference
    blob = _ball(centre=(10, 10, 18), radius=1.0) & ~ndimage.binary_dilation(reference, iterations=4)
    predicted = reference | rim | blob
    errors = m.case_errors(reference, predicted)
    assert errors["FN"] == 0 and errors["FP"] == rim.sum() + blob.sum()
    assert errors["FP_bands"] == {"rim_1": int(rim.sum()), "near_1_3": 0, "gross_over_3": int(blob.sum())}


def test_distances_count_in_network_voxels_not_test_voxels():
    m = _load()
    reference = _ball()
    shell = ndimage.binary_dilation(reference, iterations=3) & ~reference  # up to 3 test voxels out
    # test grid 1 mm, network voxel 4 mm: everything within 3 mm lies inside one network voxel
    assert m.distance_bands(shell, reference, spacing=(1.0, 1.0, 1.0), unit=4.0)["rim_1"] == int(shell.sum())
    # network voxel = test voxel: the outer layers are "near"
    bands = m.distance_bands(shell, reference, spacing=(1.0, 1.0, 1.0), unit=1.0)
    assert bands["near_1_3"] > 0 and sum(bands.values()) == int(shell.sum())


def test_missed_organ_counts_as_gross_and_summary_ratios():
    m = _load()
    reference = _ball()
    errors = m.case_errors(reference, np.zeros_like(reference))
    assert errors["FN_bands"]["gross_over_3"] == int(reference.sum())
    summary = m.summarise({"a": {"FP": 30, "FN": 10, "FP_bands": {"rim_1": 20, "near_1_3": 5, "gross_over_3": 5},
                                 "FN_bands": {"rim_1": 10, "near_1_3": 0, "gross_over_3": 0}}})
    assert summary["FP_over_FN"] == 3.0 and summary["FP_beyond_rim_over_FN"] == 1.0
    assert abs(summary["FP_share"]["rim_1"] - 2 / 3) < 1e-9


def test_a_test_set_is_read_from_files_with_its_network_voxel_and_case_facts(tmp_path):
    """The pooled-run path (test_set_errors): references and per-prompt predictions as NIfTI, unit from the plan."""
    import json

    import SimpleITK as sitk

    m = _load()
    raw, predictions = tmp_path / "raw", tmp_path / "pred"
    (raw / "labelsTs").mkdir(parents=True)
    predictions.mkdir()
    (raw / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "right_kidney": 2}}))
    reference = _ball()
    labels = np.where(reference, 2, 0).astype(np.uint8)
    predicted = (ndimage.binary_dilation(reference) | (labels == 1)).astype(np.uint8)  # the kidney one voxel too big
    for array, path in ((labels, raw / "labelsTs" / "case_000.nii.gz"),
                        (predicted, predictions / "case_000_right_kidney.nii.gz")):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((2.0, 2.0, 2.0))
        sitk.WriteImage(image, str(path))
    plans = {"configurations": {"3d_fullres": {"spacing": [3.0, 1.5, 1.5]}}}
    result = m.test_set_errors(raw, predictions, plans, ["right_kidney"])
    assert result["network_voxel_mm"] == 3.0
    case = result["right_kidney"]["cases"]["case_000"]
    assert case["reference_voxels"] == int(reference.sum()) and case["spacing_mm"] == [2.0, 2.0, 2.0]
    assert case["FN"] == 0 and case["FP_bands"]["rim_1"] == case["FP"] > 0  # 2 mm out: within one 3 mm voxel
