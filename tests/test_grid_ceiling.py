"""perf/grid_ceiling.py: a test reference sent to the plan's network grid and back, scored against itself."""
import copy
import importlib.util
import sys
from pathlib import Path

import numpy as np

from _planning_data import blob_case, make_dataset
from textnnunet.experiment_planning.planner import plan_datasets
from textnnunet.utils.plans import Plans

PERF = Path(__file__).resolve().parents[1] / "perf"


def _load():
    sys.path.insert(0, str(PERF))
    spec = importlib.util.spec_from_file_location("grid_ceiling", PERF / "grid_ceiling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ball_case(seed, shape=(24, 40, 40), spacing=(2.0, 1.0, 1.0), radius_mm=9.0):
    image, _, _ = blob_case(shape=shape, spacing=spacing, seed=seed)
    z, y, x = np.indices(shape)
    label = (((z - 12) * spacing[0]) ** 2 + ((y - 20) * spacing[1]) ** 2 + ((x - 20) * spacing[2]) ** 2
             <= radius_mm ** 2).astype(np.uint8)
    image[0][label > 0] = 100.0
    return image, label, spacing


def test_the_grid_of_the_images_own_spacing_loses_nothing_and_a_coarser_one_loses_the_boundary(tmp_path):
    m = _load()
    raw, pre = tmp_path / "raw", tmp_path / "pre"
    make_dataset(raw, "Dataset001_Ball", {"0": "CT"}, {"background": 0, "ball": 1},
                 {f"b{i}": _ball_case(i) for i in range(3)})
    test = make_dataset(raw, "Dataset002_BallTest", {"0": "CT"}, {"background": 0, "ball": 1},
                        {f"t{i}": _ball_case(10 + i) for i in range(2)})
    (test / "imagesTr").rename(test / "imagesTs")
    (test / "labelsTr").rename(test / "labelsTs")
    plan, _ = plan_datasets(raw, pre, [1], memory_target_gb=0.08, base_features=8, progress=False)
    plans = Plans.load(plan)
    native = copy.deepcopy(plans.data)
    native["configurations"]["3d_fullres"]["spacing"] = [2.0, 1.0, 1.0]
    coarse = copy.deepcopy(plans.data)
    coarse["configurations"]["3d_fullres"]["spacing"] = [6.0, 4.0, 4.0]
    same = m.test_set_ceilings(raw, 2, Plans.of(native), "3d_fullres")
    assert (same["dataset"], same["image_type"], set(same["cases"])) == ("Dataset002_BallTest", "CT", {"t0", "t1"})
    assert {k: same["mean"]["ball"][k] for k in ("Dice", "FP", "FN")} == {"Dice": 1.0, "FP": 0, "FN": 0}
    coarser = m.test_set_ceilings(raw, 2, Plans.of(coarse), "3d_fullres")["mean"]["ball"]
    assert 0.5 < coarser["Dice"] < 1.0 and coarser["FP"] + coarser["FN"] > 0


def test_overlap_counts():
    m = _load()
    a = np.zeros((4, 4, 4), bool)
    a[1:3, 1:3, 1:3] = True
    b = np.zeros_like(a)
    b[1:3, 1:3, 1:2] = True
    assert m.overlap(a, b) == {"Dice": 2 * 4 / (2 * 4 + 0 + 4), "FP": 0, "FN": 4, "reference_voxels": 8}
    assert m.overlap(np.zeros_like(a), np.zeros_like(a))["Dice"] == 1.0
