"""perf/predict_clinical_ct.py: its stage timer and input resampling (the timed runs themselves are not tests)."""
import importlib.util
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

SCRIPT = Path(__file__).resolve().parents[1] / "perf" / "predict_clinical_ct.py"


def _load():
    spec = importlib.util.spec_from_file_location("predict_clinical_ct", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stage_timer_counts_nested_calls_once():
    bench = _load()
    timer = bench.StageTimer()
    inner = timer.wrap(lambda: time.sleep(0.05), "inner")
    outer = timer.wrap(lambda: (time.sleep(0.05), inner()), "outer")
    outer()
    assert 0.04 < timer.seconds["inner"] < 0.5
    assert 0.04 < timer.seconds["outer"] < 0.5  # exclusive of the nested call
    assert timer.seconds["outer"] + timer.seconds["inner"] < 0.6


def test_clinical_ct_keeps_the_physical_extent(tmp_path):
    bench = _load()
    img = sitk.GetImageFromArray(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6))
    img.SetSpacing((3.0, 3.0, 3.0))
    img.SetOrigin((10.0, -4.0, 2.0))
    img.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    source = tmp_path / "src.nii.gz"
    sitk.WriteImage(img, str(source))
    target = tmp_path / "ct_0000.nii.gz"
    info = bench.make_clinical_ct(source, target)
    out = sitk.ReadImage(str(target))
    assert list(out.GetSize()) == info["size_xyz"] == [round(6 * 3 / 0.8), round(5 * 3 / 0.8), 4 * 3 / 1.5]
    np.testing.assert_allclose(out.GetSpacing(), bench.TARGET_SPACING_XYZ, rtol=1e-6)  # NIfTI stores float32
    np.testing.assert_allclose(out.GetDirection(), img.GetDirection(), atol=1e-6)
    assert out.GetPixelID() == sitk.sitkInt16
    # The first voxel's outer corner is the source's outer corner.
    corner = np.array(out.GetOrigin()) - np.array(out.GetDirection()).reshape(3, 3) @ (np.array(out.GetSpacing()) / 2)
    source_corner = np.array(img.GetOrigin()) - np.array(img.GetDirection()).reshape(3, 3) @ np.array([1.5] * 3)
    np.testing.assert_allclose(corner, source_corner, atol=1e-4)


def test_summary_has_median_and_spread():
    bench = _load()
    rows = [{"mode": "api", "prompts": 5, "returncode": 0, "wall_s": w, "peak_rss_mb": 900.0, "startup_s": 3.0,
             "case_s": w - 3, "load_before": [2.0, 2.0, 2.0], "stages_s": {"read": 1.0, "sliding_window": w - 5}}
            for w in (10.0, 12.0, 11.0)]
    summary = bench.summarise(rows)["api_5prompts"]
    assert summary["wall_s"] == {"median": 11.0, "min": 10.0, "max": 12.0}
    assert list(summary["stages_s"]) == ["read", "sliding_window"] and summary["repeats"] == 3
