"""perf/train_step_overhead.py and perf/plan_and_preprocess_vs_nnunet.py: their pieces and a tiny timed run
(the measurements themselves are not tests)."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

PERF = Path(__file__).resolve().parents[1] / "perf"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, PERF / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_partial_pairs_split_classes_over_datasets():
    bench = _load("train_step_overhead")
    pairs = bench.partial_pairs(batch=4, k=7, datasets=3, device="cpu")
    assert pairs.shape == (4, 7) and pairs.dtype == torch.bool
    # every class belongs to exactly one dataset; items 0 and 3 come from dataset 0
    assert torch.equal(pairs[0], pairs[3])
    assert int(pairs[:3].sum(0).min()) == 1 and int(pairs[:3].sum(0).max()) == 1


def test_capped_exclusion_keeps_at_most_cap_unlabelled_classes_per_item():
    bench = _load("train_step_overhead")
    unlabelled = ~bench.partial_pairs(batch=4, k=30, datasets=3, device="cpu")  # 20 unlabelled classes per item
    capped = bench.capped_exclusion(unlabelled, 8, torch.Generator().manual_seed(0))
    assert capped.sum(1).tolist() == [8, 8, 8, 8]
    assert not (capped & ~unlabelled).any()  # only classes the item's dataset does not label
    few = ~bench.partial_pairs(batch=2, k=6, datasets=3, device="cpu")  # 4 unlabelled: under the cap, all kept
    assert torch.equal(bench.capped_exclusion(few, 8, torch.Generator()), few)


def test_predict_vs_nnunet_steady_state_from_two_folder_sizes():
    bench = _load("predict_vs_nnunet")
    measured = {"nnunetv2": {"median_wall_seconds": 40.0}, "nnunetv2@3": {"median_wall_seconds": 100.0},
                "textnnunet_5": {"median_wall_seconds": 25.0}, "textnnunet_5@3": {"median_wall_seconds": 55.0}}
    rows = bench.steady_state(measured, [1, 3], ["nnunetv2", "textnnunet_5"])
    assert rows["nnunetv2"]["per_case_seconds"] == 30.0 and rows["nnunetv2"]["fixed_seconds"] == 10.0
    assert rows["textnnunet_5"]["per_case_seconds"] == 15.0 and rows["textnnunet_5"]["per_case_over_nnunetv2"] == 0.5
    assert bench.steady_state(measured, [1], ["nnunetv2"]) == {}


def test_tiny_interleaved_run_writes_every_round(tmp_path):
    bench = _load("train_step_overhead")
    out = tmp_path / "ho.json"
    bench.main(["--patch", "16", "16", "16", "-K", "3", "--repeats", "2", "--steps", "1", "--warmup", "1",
                "--no_memory", "--json", str(out)])
    result = json.loads(out.read_text())
    assert [r["variant"] for r in result["rounds"]] == ["softmax", "text_partial", "text_all"] * 2  # interleaved
    rows = {r["variant"]: r for r in result["rows"]}
    assert rows["text_all"]["pairs_per_batch"] == 2 * 3 and rows["softmax"]["pairs_per_batch"] is None
    assert 0 < rows["text_partial"]["pairs_per_batch"] < 6
    assert rows["text_all"]["seconds_per_step"]["n"] == 2 and "ratio_of_medians" in rows["text_all"]
    assert result["machine"]["cpu_count"] and len(result["loadavg_start"]) == 3
    assert "| 3 |" in result["markdown"]


def test_clinical_phantom_specs_are_clinical_size():
    bench = _load("plan_and_preprocess_vs_nnunet")
    specs = bench._clinical_specs(3)
    assert [s.dataset_id for s in specs] == [1, 2, 3]
    for s in specs:
        inplane = s.fov_mm[1] / s.spacing[1]
        slices = s.fov_mm[0] / s.spacing[0]
        assert 400 <= inplane * 0.96 and inplane * 1.04 <= 512  # the generator jitters in-plane spacing by 4%
        assert 100 <= slices * 0.95 and slices * 1.05 <= 315
        assert s.num_training == {"full": 3} and s.num_test == {"full": 0}


def test_equal_row_commands_give_nnunet_the_same_processes(tmp_path):
    bench = _load("plan_and_preprocess_vs_nnunet")

    class Args:
        datasets, num_processes, cpu_preset_too = ["1", "2"], 2, True

    cmds = bench.commands("equal", Args, Path("/bin"), Path("/nn"), tmp_path)
    theirs = cmds["nnunetv2"][0]
    assert theirs[theirs.index("-np") + 1] == "2" and theirs[theirs.index("-npfp") + 1] == "2"
    assert theirs[-2:] == ["-c", "3d_fullres"]
    ours = cmds["textnnunet"][0]
    assert "--no_baselines" in ours and ours[ours.index("-c") + 1] == "3d_fullres"
    assert set(cmds) == {"textnnunet", "nnunetv2", "textnnunet_cpu_preset"}
    defaults = bench.commands("default", Args, Path("/bin"), Path("/nn"), tmp_path)
    assert "-c" not in defaults["textnnunet"][0] and "-c" not in defaults["nnunetv2"][0]


@pytest.mark.parametrize("values", [[3.0, 1.0, 2.0]])
def test_spread(values):
    bench = _load("plan_and_preprocess_vs_nnunet")
    assert bench.spread(values) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}


def test_liver_errors_split_false_positives_by_slice():
    check = _load("liver_fp_beyond_fov")
    ref = np.zeros((4, 3, 3), bool)
    ref[1:3, 1, 1] = True  # liver on slices 1 and 2
    pred = ref.copy()
    pred[1, 0, 0] = True  # FP on a liver slice
    pred[3, :2, 0] = True  # two FP on a slice without liver
    pred[2, 1, 1] = False  # one FN
    e = check.liver_errors(pred, ref)
    assert (e["FP"], e["FN"], e["FP_at_liver_slices"], e["FP_off_liver_slices"]) == (3, 1, 1, 2)
    assert e["Dice"] == 2 * 1 / (2 * 1 + 3 + 1)


def test_structure_margins_take_the_smallest_margin_of_the_structures_values():
    margins = _load("label_margins")
    per_value = {"1": [30.0, 8.0], "2": [4.0, 20.0]}
    assert margins.structure_margins(per_value, (1, 2)) == {"inferior_mm": 4.0, "superior_mm": 8.0}
    assert margins.structure_margins(per_value, (3,)) == {"inferior_mm": None, "superior_mm": None}
    assert margins.label_values({"labels": {"liver": [1, 2], "spleen": 3}}, "liver") == (1, 2)
    assert margins.label_values({"labels": {"liver": [1, 2], "spleen": 3}}, "spleen") == (3,)


def test_matrix_sealed_judges_each_organ_by_issue_10s_bar():
    sealed = _load("matrix_sealed")
    classes = {"liver": {"Dice": 0.95, "FP": 300.0, "FN": 100.0},  # FP/FN 3: fails the FP rule
               "spleen": {"Dice": 0.85, "FP": 10.0, "FN": 10.0},  # on the Dice bar: passes
               "kidney": {"Dice": 0.84, "FP": 0.0, "FN": 0.0}}  # under it; FP/FN with no FN counts FN as 1
    bar = sealed.organ_bar(classes)
    assert [bar[o]["passes"] for o in ("liver", "spleen", "kidney")] == [False, True, False]
    assert bar["liver"]["FP_over_FN"] == 3.0 and bar["kidney"]["FP_over_FN"] == 0.0
