"""Benchmark: budget arithmetic, scoring fixed predictions, aggregation into tables, the report files."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from textnnunet.benchmark import aggregate
from textnnunet.benchmark.budget import plan_budget, trained_iterations
from textnnunet.benchmark.models import evaluate_on_test_set
from textnnunet.benchmark.report import BENCHMARK_JSON, BENCHMARK_MD, COST_PLOT, DICE_PLOT, write_benchmark
from textnnunet.benchmark.run import BenchmarkOptions, build_benchmark
from textnnunet.dataset.description import Case
from textnnunet.errors import UserError
from textnnunet.evaluation.summary import summarize
from textnnunet.imageio.sitk_io import ImageGeometry, write_image

LIVER, SPLEEN = "Dataset001_Liver", "Dataset002_Spleen"


# --------------------------------------------------------------------------------------------------- budget
def test_equal_budget_gives_the_universal_model_the_baselines_total():
    b = plan_budget(epochs=10, iters_per_epoch=25, n_datasets=3)
    assert (b.universal_iters_per_epoch, b.baseline_iterations) == (75, 250)
    assert b.universal_iterations == b.baselines_total_iterations == 750
    assert "750" in b.describe() and "equal budgets" in b.describe()
    unequal = plan_budget(10, 25, 3, equal=False)
    assert unequal.universal_iterations == 250 and unequal.baselines_total_iterations == 750
    assert b.to_json()["universal_iterations"] == 750
    assert trained_iterations({"iters_per_epoch": 7}, 3) == 21
    with pytest.raises(UserError, match="must be >= 1"):
        plan_budget(0, 25, 3)


# ------------------------------------------------------------------------------- scoring fixed predictions
def _case(metrics: dict, dataset: str, case_id: str) -> dict:
    return {"case_id": case_id, "dataset": dataset,
            "metrics": {c: {"Dice": d, "NSD": n} for c, (d, n) in metrics.items()}}


def validation_summaries() -> dict:
    universal = summarize([
        _case({"liver": (0.9, 0.8), "liver tumor": (0.5, 0.4)}, LIVER, "l0"),
        _case({"liver": (0.7, 0.6), "liver tumor": (0.3, 0.2)}, LIVER, "l1"),
        _case({"spleen": (0.8, 0.9)}, SPLEEN, "s0"),
    ])
    liver = summarize([_case({"liver": (0.85, 0.7), "liver tumor": (0.6, 0.5)}, LIVER, "l0"),
                       _case({"liver": (0.75, 0.7), "liver tumor": (0.2, 0.3)}, LIVER, "l1")])
    spleen = summarize([_case({"spleen": (0.9, 0.9)}, SPLEEN, "s0")])
    naive = summarize([_case({"liver": (0.5, 0.5), "liver tumor": (0.1, 0.1)}, LIVER, "l0"),
                       _case({"spleen": (0.4, 0.4)}, SPLEEN, "s0")])
    return {"universal": universal, aggregate.baseline_name(LIVER): liver, aggregate.baseline_name(SPLEEN): spleen,
            "universal__naiveunion": naive}


def test_validation_table_and_differences():
    table = aggregate.validation_table(validation_summaries())
    assert set(table) == {LIVER, SPLEEN}
    liver = table[LIVER]["liver"]
    assert liver["universal"]["dice_mean"] == pytest.approx(0.8) and liver["universal"]["dice_std"] == pytest.approx(0.1)
    assert liver["universal"]["n_cases"] == 2
    assert aggregate.baseline_name(SPLEEN) not in table[LIVER]["liver"]  # a baseline only on its own dataset
    diff = aggregate.validation_differences(table)
    assert diff[LIVER]["liver"]["dice"] == pytest.approx(0.0)
    assert diff[LIVER]["liver tumor"]["dice"] == pytest.approx(0.4 - 0.4)
    assert diff[SPLEEN]["spleen"]["dice"] == pytest.approx(-0.1)
    assert diff[LIVER]["liver"]["nsd"] == pytest.approx(0.7 - 0.7)


class FixedModel:
    """Stands in for a trained model: returns prepared masks, so the scoring is checked without training."""

    def __init__(self, classes, masks_by_case):
        self.classes, self.masks_by_case, self.folder = classes, masks_by_case, Path("fixed")

    def predict_masks(self, image_files, classes, modality=None):
        masks = self.masks_by_case[Path(image_files[0]).name.split("_0000")[0]]
        return {c: masks[c] for c in classes}


def test_scoring_fixed_predictions_on_a_labelled_test_set(tmp_path):
    geometry = ImageGeometry((2.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0), (4, 8, 8))
    label = np.zeros((4, 8, 8), dtype=np.uint8)
    label[1:3, 0:4, 0:4] = 1  # liver
    label[1:3, 1:2, 1:2] = 2  # liver tumour (inside the liver region)
    label[1:3, 5:7, 5:7] = 3  # spleen
    cases = []
    for case_id in ("abd_0", "abd_1"):
        write_image(label, geometry, tmp_path / "labelsTs" / f"{case_id}.nii.gz")
        cases.append(Case(case_id, [tmp_path / "imagesTs" / f"{case_id}_0000.nii.gz"],
                          tmp_path / "labelsTs" / f"{case_id}.nii.gz"))
    liver = np.isin(label, [1, 2])
    half_spleen = label == 3
    half_spleen[:, 5] = False  # half of the spleen: Dice 2*8/(8+16) = 2/3
    fixed = {"abd_0": {"liver": liver, "spleen": label == 3}, "abd_1": {"liver": liver, "spleen": half_spleen}}
    classes = {"liver": (1, 2), "liver tumor": (2,), "spleen": (3,), "pancreas": (6,)}
    model = FixedModel(["liver", "spleen"], fixed)
    summary, seconds = evaluate_on_test_set(model, cases, classes, "Dataset004_Abdomen", tmp_path / "out")
    assert summary["mean"]["liver"]["Dice"] == pytest.approx(1.0)
    assert summary["mean"]["spleen"]["Dice"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert "liver tumor" not in summary["mean"] and "pancreas" not in summary["mean"]  # not covered: not judged
    assert seconds >= 0 and (tmp_path / "out" / "summary.json").is_file()
    with pytest.raises(UserError, match="segments none"):
        evaluate_on_test_set(FixedModel(["kidney"], fixed), cases, classes, "Dataset004_Abdomen", tmp_path / "o2")

    table = aggregate.test_table({"universal": summary, aggregate.baseline_name(LIVER): summary})
    assert table["spleen"]["universal"]["n_cases"] == 2
    diff = aggregate.test_differences(table)
    assert diff["liver"]["baseline"] == aggregate.baseline_name(LIVER) and diff["liver"]["dice"] == pytest.approx(0)


# --------------------------------------------------------------------------------------------------- report
def _models() -> dict:
    def info(kind, classes, params, iters):
        return {"kind": kind, "folder": "x", "classes": classes, "parameters": params,
                "inference_seconds_per_case": 0.5,
                "training": {"epochs": 2, "iters_per_epoch": iters // 2, "iterations": iters, "batch_size": 2,
                             "wall_seconds": 12.0, "device": "cpu"}}

    return {"universal": info("universal", ["liver", "liver tumor", "spleen"], 1000, 40),
            aggregate.baseline_name(LIVER): info("baseline", ["liver", "liver tumor"], 900, 20),
            aggregate.baseline_name(SPLEEN): info("baseline", ["spleen"], 800, 20),
            "universal__naiveunion": info("universal", ["liver", "liver tumor", "spleen"], 1000, 40)}


def test_report_files(tmp_path):
    models = _models()
    test = {"universal": summarize([_case({"liver": (0.9, 0.9), "spleen": (0.8, 0.7), "liver tumor": (0.5, 0.5)},
                                          "Dataset004_Abdomen", "a0")]),
            aggregate.baseline_name(LIVER): summarize([_case({"liver": (0.95, 0.9), "liver tumor": (0.6, 0.5)},
                                                             "Dataset004_Abdomen", "a0")])}
    options = BenchmarkOptions(dataset_ids=[1, 2], epochs=2, iters_per_epoch=10, ablations=["masking"],
                               command="textnnunet_benchmark -d 1 2")
    benchmark = build_benchmark(options, "TextPlans_001_002", plan_budget(2, 10, 2), models, validation_summaries(),
                                test, "Dataset004_Abdomen", ["liver", "liver tumor", "spleen", "pancreas"], 1,
                                env={"device": "CPU test", "platform": "p", "versions": {"torch": "x"}},
                                date="2026-01-01 00:00 UTC")
    assert benchmark["budget_check"] == {"universal_iterations": 40, "baselines_total_iterations": 40, "equal": True}
    assert benchmark["coverage"]["pancreas"] == []
    assert benchmark["coverage"]["spleen"] == ["universal", aggregate.baseline_name(SPLEEN), "universal__naiveunion"]
    assert benchmark["cost"]["universal"] == {"models": 1, "parameters": 1000,
                                              "classes_covered": ["liver", "liver tumor", "spleen"],
                                              "classes_missing": ["pancreas"]}
    assert benchmark["cost"]["baselines"]["models"] == 2 and benchmark["cost"]["baselines"]["parameters"] == 1700
    assert math.isnan(benchmark["test"]["differences"]["spleen"]["dice"])  # no baseline scored spleen on the test set
    assert benchmark["test"]["differences"]["liver"]["dice"] == pytest.approx(-0.05)

    paths = write_benchmark(benchmark, tmp_path / "bench")
    data = json.loads((tmp_path / "bench" / BENCHMARK_JSON).read_text())
    for key in ("date", "settings", "environment", "budget", "budget_check", "models", "validation",
                "validation_differences", "coverage", "cost", "test", "skipped"):
        assert key in data, key
    assert data["models"]["universal"]["training"]["wall_seconds"] == 12.0
    md = (tmp_path / "bench" / BENCHMARK_MD).read_text()
    assert "| liver | 0.8000 ± 0.1000 | 0.8000 ± 0.0500 | +0.0000 |" in md
    assert "| spleen | 0.8000 ± 0.0000 | 0.9000 ± 0.0000 | -0.1000 |" in md
    assert "| pancreas | **none** |" in md
    assert "| baselines | 2 | 1,700 |" in md
    assert "universal__naiveunion Dice" in md and "equal." in md and "textnnunet_benchmark -d 1 2" in md

    assert "| liver tumor | 0.5000 ± 0.0000 | 0.6000 ± 0.0000 | — | — | -0.1000 |" in md  # the test-set row
    # the masking ablation gets its own table: universal against the naive union, row by row
    assert "## Ablation: universal__naiveunion" in md and "the naive union" in md
    assert "| Dataset001_Liver validation: liver | 0.8000 | 0.5000 | +0.3000 |" in md
    assert "| Dataset002_Spleen validation: spleen | 0.8000 | 0.4000 | +0.4000 |" in md
    assert "better on 3 of 3 rows" in md
    for name in (DICE_PLOT, COST_PLOT):
        assert (tmp_path / "bench" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(paths) == {"json", "md", "dice_plot", "cost_plot"}
    assert "nnU-Net v2" not in md and "validation_differences_nnunet_v2" not in data  # nothing imported


def test_cost_counts_a_class_per_image_type_and_speed_names_its_test_set():
    """On a CT+MR pool a CT baseline's spleen does not cover the T2 spleen, and only the pairs a test set scores count
    (nobody is credited or charged for a pair no test table shows); a model not scored on the first test set shows
    its speed on the one it was scored on, named."""
    from textnnunet.benchmark.report import cost_label

    models = _models()
    models["universal"]["image_types"] = ["CT", "T2"]
    models[aggregate.baseline_name(LIVER)]["image_types"] = ["ct"]  # one type whatever its spelling
    models[aggregate.baseline_name(SPLEEN)]["image_types"] = ["T2"]
    asked = [("liver", "CT"), ("spleen", "CT"), ("spleen", "T2")]
    cost = aggregate.cost_summary(models, ["liver", "spleen"], asked)
    assert cost["universal"]["classes_covered"] == ["liver (CT)", "spleen (CT)", "spleen (T2)"]
    assert cost["baselines"]["classes_covered"] == ["liver (CT)", "spleen (T2)"]
    assert cost["baselines"]["classes_missing"] == ["spleen (CT)"]
    assert cost_label(cost["baselines"]) == "2 model(s)\n2/3 covered"
    # One image type among the test sets: classes, as before.
    cost = aggregate.cost_summary(models, ["liver", "spleen"], [("liver", "CT"), ("spleen", "CT")])
    assert cost["baselines"]["classes_covered"] == ["liver", "spleen"]
    from textnnunet.benchmark.run import _asked_pairs
    assert _asked_pairs("Dataset004", ["liver", "spleen"], [{"dataset": "Dataset014", "classes": ["spleen"]}],
                        {"Dataset004": "CT", "Dataset014": "T2"}) == asked

    from textnnunet.benchmark.report import _seconds, _speed
    assert _speed({"inference_seconds_per_case": 0.5, "inference_seconds_by_test_set": {"A": 0.5}}) == _seconds(0.5)
    assert _speed({"inference_seconds_per_case": None,
                   "inference_seconds_by_test_set": {"Dataset014_AbdomenT2": 0.25}}) == (
        f"{_seconds(0.25)} (on Dataset014_AbdomenT2)")
    assert _speed({"inference_seconds_per_case": None}) == _seconds(None)


def test_report_puts_an_imported_nnunet_next_to_ours(tmp_path):
    nnunet = aggregate.nnunet_name(LIVER)
    models = _models()
    models[nnunet] = {"kind": "nnunet_v2", "folder": "nnUNet_results/x", "classes": ["liver", "liver tumor"],
                      "parameters": None, "inference_seconds_per_case": None, "trainer": "nnUNetTrainer",
                      "training": {"epochs": 3, "iters_per_epoch": None, "iterations": None, "batch_size": 2,
                                   "wall_seconds": 15.0, "device": None}}
    validation = validation_summaries()
    validation[nnunet] = summarize([_case({"liver": (0.95, 0.9), "liver tumor": (0.7, 0.6)}, LIVER, "l0"),
                                    _case({"liver": (0.85, 0.8), "liver tumor": (0.5, 0.4)}, LIVER, "l1")])
    test = {"universal": summarize([_case({"liver": (0.9, 0.9), "spleen": (0.8, 0.7)}, "Dataset004_Abdomen", "a0")]),
            nnunet: summarize([_case({"liver": (0.97, 0.9)}, "Dataset004_Abdomen", "a0")])}
    options = BenchmarkOptions(dataset_ids=[1, 2], epochs=2, iters_per_epoch=10, ablations=["masking"])
    benchmark = build_benchmark(options, "TextPlans_001_002", plan_budget(2, 10, 2), models, validation, test,
                                "Dataset004_Abdomen", ["liver", "spleen"], 1,
                                env={"device": "CPU test", "platform": "p", "versions": {"torch": "x"}})
    assert benchmark["validation"][LIVER]["liver"][nnunet]["dice_mean"] == pytest.approx(0.9)
    assert benchmark["validation_differences_nnunet_v2"][LIVER]["liver"]["dice"] == pytest.approx(0.8 - 0.9)
    assert math.isnan(benchmark["validation_differences_nnunet_v2"][SPLEEN]["spleen"]["dice"])
    assert benchmark["test"]["differences_nnunet_v2"]["liver"] == {
        "baseline": nnunet, "dice": pytest.approx(0.9 - 0.97), "nsd": pytest.approx(0.0)}
    assert benchmark["test"]["differences"]["liver"]["baseline"] is None  # our baselines stay the plain Δ
    assert benchmark["coverage"]["liver"] == ["universal", aggregate.baseline_name(LIVER), "universal__naiveunion",
                                              nnunet]
    assert benchmark["cost"]["nnunet_v2"]["parameters"] is None and benchmark["budget_check"]["equal"] is True

    write_benchmark(benchmark, tmp_path / "bench")
    md = (tmp_path / "bench" / BENCHMARK_MD).read_text()
    assert f"| {nnunet} | nnunet_v2 | n/a (3 epochs) | 2 | 15.0 | n/a | n/a | liver, liver tumor |" in md
    assert "| universal NSD | baseline NSD | Δ NSD | n | nnU-Net v2 Dice | nnU-Net v2 NSD | Δ Dice vs nnU-Net v2 | " \
           "universal__naiveunion Dice |" in md
    assert ("| liver | 0.8000 ± 0.1000 | 0.8000 ± 0.0500 | +0.0000 | 0.7000 ± 0.1000 | 0.7000 ± 0.0000 | +0.0000 "
            "| 2 | 0.9000 ± 0.0500 | 0.8500 ± 0.0500 | -0.1000 | 0.5000 ± 0.0000 |") in md
    assert f"{nnunet} Dice" not in md  # not mistaken for an ablation
    assert "| Δ Dice | Δ Dice vs nnU-Net v2 |" in md and "| nnunet_v2 | 1 | n/a | liver | spleen |" in md
    spleen_table = md.split(f"### {SPLEEN}")[1].split("##")[0]
    assert "nnU-Net v2" not in spleen_table  # no nnU-Net imported for the spleen: its table is as before


def test_budget_check_flags_reused_models_with_another_budget():
    models = _models()
    models["universal"]["training"]["iterations"] = 30
    assert aggregate.budget_check(models)["equal"] is False


# ------------------------------------------------------------------------------------------- whole command
def test_benchmark_command_on_tiny_caches_trains_missing_models_then_reuses_them(tmp_path, capsys):
    import torch

    from benchmark_helpers import write_benchmark_inputs
    from textnnunet.cli.benchmark import main as benchmark_main

    torch.set_num_threads(1)
    pre, res = write_benchmark_inputs(tmp_path / "preprocessed"), tmp_path / "results"
    argv = ["-d", "1", "2", "--epochs", "1", "--iters_per_epoch", "1", "--val_iters_per_epoch", "1",
            "--device", "cpu", "--encoder", "onehot", "--disable_tta", "--preprocessed", str(pre), "--results", str(res)]
    with pytest.raises(SystemExit) as e:
        benchmark_main(argv)
    assert e.value.code == 0, capsys.readouterr().err
    out = res / "benchmark_TextPlans_001_002_3d_fullres_fold0"
    bench = json.loads((out / BENCHMARK_JSON).read_text())
    assert set(bench["models"]) == {"universal", aggregate.baseline_name(LIVER), aggregate.baseline_name(SPLEEN)}
    assert bench["budget_check"] == {"universal_iterations": 2, "baselines_total_iterations": 2, "equal": True}
    assert set(bench["validation"][LIVER]["liver"]) == {"universal", aggregate.baseline_name(LIVER)}
    assert bench["validation"][SPLEEN]["spleen"]["universal"]["n_cases"] == 1
    # both models held out the same case of each dataset
    joint = json.loads((pre / "TextPlans_001_002" / "splits_final.json").read_text())
    base = json.loads((res / LIVER / "3d_fullres__baseline" / "splits_final.json").read_text())
    assert base[LIVER] == joint[LIVER]
    ckpt = res / "TextPlans_001_002" / "3d_fullres__onehot" / "fold_0" / "checkpoint_final.pth"
    stamp = ckpt.stat().st_mtime_ns
    with pytest.raises(SystemExit) as e:
        benchmark_main(argv + ["--no_train"])
    assert e.value.code == 0 and ckpt.stat().st_mtime_ns == stamp  # reused, not retrained
    with pytest.raises(SystemExit) as e:
        benchmark_main(["-d", "1", "3", "--no_train", "--preprocessed", str(pre), "--results", str(res)])
    assert e.value.code == 2 and "TextPlans_001_003" in capsys.readouterr().err

    # a genuine nnU-Net v2 of the liver dataset, trained on our splits, next to ours (a perfect one here)
    from benchmark_helpers import label_map_of, write_nnunet_model, write_raw_dataset

    labels = {"background": 0, "liver": [1, 2], "liver_tumor": 2}
    held_out = joint[LIVER][0]["val"]
    write_raw_dataset(tmp_path / "raw", LIVER, labels, {f"liver_{i:03d}": label_map_of(LIVER) for i in range(3)})
    nnunet = write_nnunet_model(tmp_path / "nnUNet_results", LIVER, labels, {c: label_map_of(LIVER) for c in held_out})
    with pytest.raises(SystemExit) as e:
        benchmark_main(argv + ["--no_train", "--raw", str(tmp_path / "raw"), "--nnunet_model", "1", str(nnunet)])
    assert e.value.code == 0, capsys.readouterr().err
    bench = json.loads((out / BENCHMARK_JSON).read_text())
    name = aggregate.nnunet_name(LIVER)
    assert bench["models"][name]["kind"] == "nnunet_v2" and bench["models"][name]["folder"] == str(nnunet)
    for cls in ("liver", "liver tumor"):
        stats = bench["validation"][LIVER][cls][name]
        assert (stats["dice_mean"], stats["nsd_mean"], stats["n_cases"]) == (1.0, 1.0, len(held_out))
    assert name not in bench["validation"][SPLEEN]["spleen"]
    assert f"| {name} | nnunet_v2 |" in (out / BENCHMARK_MD).read_text()
