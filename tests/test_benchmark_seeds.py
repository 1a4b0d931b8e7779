"""textnnunet_benchmark --seeds: mean ± sd over seeds, the tie rule, resuming, several test sets (the sealed one)."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from textnnunet.benchmark import aggregate
from textnnunet.benchmark.budget import plan_budget
from textnnunet.benchmark.report import BENCHMARK_JSON, BENCHMARK_MD, write_benchmark
from textnnunet.benchmark.run import BenchmarkOptions, benchmark_folder, build_benchmark
from textnnunet.benchmark.seeds import (
    SEED_DONE,
    SEEDS_JSON,
    SEEDS_MD,
    aggregate_seeds,
    compare,
    run_seeds,
    seed_stats,
    seeds_markdown,
)
from textnnunet.errors import UserError
from textnnunet.evaluation.summary import summarize

LIVER, SPLEEN, DEV, SEALED = "Dataset001_Liver", "Dataset002_Spleen", "Dataset004_Abdomen", "Dataset010_AbdomenSealed"
BASE_LIVER, BASE_SPLEEN = aggregate.baseline_name(LIVER), aggregate.baseline_name(SPLEEN)
ENV = {"device": "CPU test", "platform": "p", "versions": {"torch": "x"}}


# ------------------------------------------------------------------------------------------ pure statistics
def test_seed_stats_is_mean_and_sample_sd_of_the_finite_values():
    s = seed_stats([0.8, 0.9, 1.0])
    assert s["mean"] == pytest.approx(0.9) and s["sd"] == pytest.approx(0.1) and s["n"] == 3
    assert seed_stats([0.8, None, float("nan"), 1.0])["values"] == [0.8, 1.0]
    one = seed_stats([0.7])
    assert one["mean"] == 0.7 and math.isnan(one["sd"])
    assert seed_stats([])["n"] == 0 and math.isnan(seed_stats([])["mean"])


def test_tie_when_the_difference_is_within_two_of_the_larger_sd():
    ours, theirs = seed_stats([0.90, 0.92, 0.94]), seed_stats([0.88, 0.89, 0.90])  # sd 0.02 and 0.01
    c = compare(ours, theirs)
    assert c["difference"] == pytest.approx(0.03) and c["threshold"] == pytest.approx(0.04) and c["verdict"] == "tie"
    assert compare(seed_stats([0.95, 0.96, 0.97]), theirs)["verdict"] == "better"  # 0.07 > 2 x 0.01
    assert compare(theirs, seed_stats([0.95, 0.96, 0.97]))["verdict"] == "worse"
    assert compare(seed_stats([0.9, 0.9]), seed_stats([0.9, 0.9]))["verdict"] == "tie"  # equal, no spread
    assert compare(seed_stats([0.9]), seed_stats([0.5]))["verdict"] == "n/a"  # one seed: no sd, no verdict
    assert compare(seed_stats([0.9, 0.8]), seed_stats([]))["verdict"] == "n/a"  # the other model lacks the class
    assert compare(ours, theirs, factor=1.0)["verdict"] == "better"  # the factor is the rule's


def _case(metrics: dict, dataset: str, case_id: str) -> dict:
    return {"case_id": case_id, "dataset": dataset,
            "metrics": {c: {"Dice": d, "NSD": d} for c, d in metrics.items()}}


def _info(kind, classes):
    return {"kind": kind, "folder": "f", "classes": classes, "parameters": 100, "inference_seconds_per_case": 1.0,
            "training": {"epochs": 2, "iters_per_epoch": 5, "iterations": 10 if kind == "baseline" else 20,
                         "batch_size": 2, "wall_seconds": 3.0, "device": "cpu"}}


def fake_benchmark(seed: int, offset: float, sealed: bool = True) -> dict:
    """One seed's benchmark dict: universal, two baselines, the naive-union ablation; Dataset004 (+ the sealed set)."""
    u, b = 0.80 + offset, 0.85
    validation = {
        "universal": summarize([_case({"liver": u, "liver tumor": 0.5}, LIVER, "l0"), _case({"spleen": u}, SPLEEN, "s0")]),
        BASE_LIVER: summarize([_case({"liver": b + offset / 10, "liver tumor": 0.4}, LIVER, "l0")]),
        BASE_SPLEEN: summarize([_case({"spleen": 0.2 + offset}, SPLEEN, "s0")]),
        "universal__naiveunion": summarize([_case({"liver": 0.5, "liver tumor": 0.1}, LIVER, "l0"),
                                            _case({"spleen": 0.4}, SPLEEN, "s0")]),
    }

    def test_summaries(ds):
        return {"universal": summarize([_case({"liver": u, "spleen": u}, ds, "a0")]),
                BASE_LIVER: summarize([_case({"liver": u}, ds, "a0")]),
                BASE_SPLEEN: summarize([_case({"spleen": 0.1}, ds, "a0")]),
                "universal__naiveunion": summarize([_case({"liver": 0.3, "spleen": 0.3}, ds, "a0")])}

    models = {"universal": _info("universal", ["liver", "liver tumor", "spleen"]),
              BASE_LIVER: _info("baseline", ["liver", "liver tumor"]), BASE_SPLEEN: _info("baseline", ["spleen"]),
              "universal__naiveunion": _info("universal", ["liver", "liver tumor", "spleen"])}
    options = BenchmarkOptions(dataset_ids=[1, 2], epochs=2, iters_per_epoch=5, ablations=["masking"],
                               command=f"textnnunet_benchmark -d 1 2 [seed {seed}]")
    more = [{"summaries": test_summaries(SEALED), "dataset": SEALED, "classes": ["liver", "spleen", "kidney"],
             "num_cases": 1}] if sealed else None
    return build_benchmark(options, "TextPlans_001_002", plan_budget(2, 5, 2), models, validation,
                           test_summaries(DEV), DEV, ["liver", "spleen", "kidney"], 1, env=ENV,
                           date="2026-01-01 00:00 UTC", more_tests=more, sealed=[SEALED])


def test_aggregate_over_seeds_gives_mean_sd_and_verdicts_on_validation_and_every_test_set():
    benchmarks = {s: fake_benchmark(s, offset) for s, offset in ((0, 0.0), (1, 0.02), (2, 0.04))}
    agg = aggregate_seeds(benchmarks, [0, 1, 2], command="textnnunet_benchmark -d 1 2 --seeds 0 1 2")
    liver = agg["validation"][LIVER]["liver"]
    assert liver["models"]["universal"]["dice"]["mean"] == pytest.approx(0.82)
    assert liver["models"]["universal"]["dice"]["sd"] == pytest.approx(0.02)
    assert liver["models"][BASE_LIVER]["dice"]["mean"] == pytest.approx(0.852)
    assert liver["vs_baseline"]["dice"]["verdict"] == "tie"  # -0.032 within 2 x 0.02
    spleen = agg["validation"][SPLEEN]["spleen"]
    assert spleen["vs_baseline"]["dice"]["verdict"] == "better"  # 0.82 against 0.22
    assert liver["vs_ablations"]["universal__naiveunion"]["dice"]["verdict"] == "better"
    assert [t["dataset"] for t in agg["tests"]] == [DEV, SEALED]
    assert [t["sealed"] for t in agg["tests"]] == [False, True]
    kidney = agg["tests"][1]["classes"]["kidney"]  # no model covers it
    assert kidney["models"] == {} and kidney["vs_baseline"] is None and kidney["baseline"] is None
    test_spleen = agg["tests"][1]["classes"]["spleen"]
    assert test_spleen["baseline"] == BASE_SPLEEN and test_spleen["vs_baseline"]["dice"]["verdict"] == "better"
    assert agg["tests"][0]["classes"]["liver"]["vs_baseline"]["dice"]["verdict"] == "tie"  # the same values
    assert agg["summary"]["universal vs baseline"] == {"better": 4, "tie": 3, "worse": 0, "n/a": 0}
    assert agg["finished_seeds"] == [0, 1, 2] and agg["missing_seeds"] == []
    assert "--seeds 0 1 2" in agg["command"] and "2 x the larger" in agg["tie_rule"]
    json.dumps(agg)  # JSON-able as it is

    md = seeds_markdown(agg)
    assert "| Dataset001_Liver | liver | 0.8200 ± 0.0200 | 0.8520 ± 0.0020 | -0.0320 | 0.0400 | tie |" in md
    assert "| Dataset002_Spleen | spleen | 0.8200 ± 0.0200 | 0.2200 ± 0.0200 | +0.6000 | 0.0400 | " \
           "**universal better** |" in md
    assert "## Test set: Dataset010_AbdomenSealed" in md and "**The sealed test set**" in md
    assert md.count("**The sealed test set**") == 1  # Dataset004 is the development test set, not sealed
    assert "## Ablation: universal__naiveunion" in md and "| universal vs baseline | 4 | 3 | 0 | 0 |" in md
    assert "2 x the larger of the two models' standard deviations" in md


def test_a_partial_run_reports_its_missing_seeds():
    agg = aggregate_seeds({0: fake_benchmark(0, 0.0, sealed=False)}, [0, 1, 2])
    assert agg["missing_seeds"] == [1, 2] and len(agg["tests"]) == 1
    assert agg["validation"][LIVER]["liver"]["vs_baseline"]["dice"]["verdict"] == "n/a"
    assert "**missing: 1 2**" in seeds_markdown(agg) and "(n=1)" in seeds_markdown(agg)
    with pytest.raises(UserError, match="no finished seed"):
        aggregate_seeds({}, [0])


def test_single_seed_report_keeps_its_format_and_adds_further_test_sets(tmp_path):
    one = fake_benchmark(0, 0.0, sealed=False)
    assert "more_tests" not in one and "more_test_datasets" not in one["settings"]
    two = fake_benchmark(0, 0.0)
    assert two["more_tests"][0]["dataset"] == SEALED and two["settings"]["more_test_datasets"] == [SEALED]
    assert two["test"] == one["test"]
    write_benchmark(two, tmp_path)
    md = (tmp_path / BENCHMARK_MD).read_text()
    assert "## Test set: Dataset004_Abdomen" in md and "## Test set: Dataset010_AbdomenSealed" in md
    assert f"| {SEALED} test: liver |" in md  # the ablation table covers every test set


# ------------------------------------------------------------------------------------------- resuming (fake)
def test_seeds_run_skips_finished_seeds_and_reruns_when_settings_change(tmp_path, monkeypatch):
    pre, res = tmp_path / "preprocessed", tmp_path / "results"
    pre.mkdir()
    calls = []

    def fake_run(options, *, raw, preprocessed, results, echo):
        calls.append((options.base_config.seed, Path(results).name))
        out = benchmark_folder(results, "TextPlans_001_002", options.configuration, options.fold)
        write_benchmark(fake_benchmark(options.base_config.seed, 0.01 * options.base_config.seed), out)
        return out

    monkeypatch.setattr("textnnunet.benchmark.report.plot_dice", lambda *a: None)
    monkeypatch.setattr("textnnunet.benchmark.report.plot_cost", lambda *a: None)
    options = BenchmarkOptions(dataset_ids=[1, 2], epochs=2, iters_per_epoch=5, command="cmd")
    root = run_seeds(options, [0, 1], preprocessed=pre, results=res, echo=False, run=fake_run)
    assert root == res / "benchmark_seeds_TextPlans_001_002_3d_fullres_fold0"
    assert calls == [(0, "seed_0"), (1, "seed_1")]
    assert json.loads((root / SEEDS_JSON).read_text())["finished_seeds"] == [0, 1] and (root / SEEDS_MD).is_file()
    assert json.loads((root / "seed_1" / SEED_DONE).read_text())["key"]["seed"] == 1

    calls.clear()  # again, with one more seed: only that one runs
    run_seeds(options, [0, 1, 2], preprocessed=pre, results=res, echo=False, run=fake_run)
    assert calls == [(2, "seed_2")]
    assert json.loads((root / SEEDS_JSON).read_text())["finished_seeds"] == [0, 1, 2]

    calls.clear()  # a seed that died before its seed_run.json is run again (its finished models are reused there)
    (root / "seed_1" / SEED_DONE).unlink()
    run_seeds(options, [0, 1, 2], preprocessed=pre, results=res, echo=False, run=fake_run)
    assert calls == [(1, "seed_1")]

    calls.clear()  # another test set changes the numbers: every seed is evaluated again
    options.test_dataset = 4
    run_seeds(options, [0, 1], preprocessed=pre, results=res, echo=False, run=fake_run)
    assert calls == [(0, "seed_0"), (1, "seed_1")]

    with pytest.raises(UserError, match="distinct"):
        run_seeds(options, [0, 0], preprocessed=pre, results=res, echo=False, run=fake_run)


# ------------------------------------------------------------------------------------ the whole command, tiny
def _with_normalisation(preprocessed: Path) -> None:
    """The tiny plans with what predicting a raw image needs (CT normalisation, resampling)."""
    for plan in preprocessed.rglob("plans.json"):
        plans = json.loads(plan.read_text())
        plans["file_ending"] = ".nii.gz"
        plans["foreground_intensity_properties_per_channel"] = {
            "0": {"mean": 50.0, "std": 40.0, "percentile_00_5": -100.0, "percentile_99_5": 250.0}}
        plans["configurations"]["3d_fullres"].update(
            normalization_schemes=["CTNormalization"], use_mask_for_norm=[False],
            resampling={"image_order": 3, "label_order": 1, "order_z": 0, "separate_z_anisotropy_threshold": 3.0})
        plan.write_text(json.dumps(plans))


def test_seeds_command_on_tiny_caches_with_two_test_sets_then_resumes(tmp_path, capsys):
    import torch

    from benchmark_helpers import label_map_of, write_benchmark_inputs, write_raw_dataset
    from textnnunet.cli.benchmark import main as benchmark_main

    torch.set_num_threads(1)
    pre, res, raw = write_benchmark_inputs(tmp_path / "preprocessed"), tmp_path / "results", tmp_path / "raw"
    _with_normalisation(pre)
    test_labels = label_map_of(LIVER).copy()
    test_labels[label_map_of(SPLEEN) > 0] = 3
    labels = {"background": 0, "liver": [1, 2], "liver_tumor": 2, "spleen": 3}
    write_raw_dataset(raw, DEV, labels, {"abdomen_000": test_labels}, test=True)
    sealed = write_raw_dataset(raw, SEALED, labels, {"sealed_000": test_labels,
                                                     "sealed_001": test_labels[::-1].copy()}, test=True)
    meta = json.loads((sealed / "dataset.json").read_text())
    meta["textnnunet_phantom"] = {"sealed": True}  # as textnnunet_generate_phantoms --sealed writes it
    (sealed / "dataset.json").write_text(json.dumps(meta))
    argv = ["-d", "1", "2", "--epochs", "1", "--iters_per_epoch", "1", "--val_iters_per_epoch", "1",
            "--device", "cpu", "--encoder", "onehot", "--disable_tta", "--test_dataset", "4", "10",
            "--preprocessed", str(pre), "--results", str(res), "--raw", str(raw), "--seeds", "0", "1"]
    with pytest.raises(SystemExit) as e:
        benchmark_main(argv)
    assert e.value.code == 0, capsys.readouterr().err
    root = res / "benchmark_seeds_TextPlans_001_002_3d_fullres_fold0"
    agg = json.loads((root / SEEDS_JSON).read_text())
    assert agg["finished_seeds"] == [0, 1] and [t["dataset"] for t in agg["tests"]] == [DEV, SEALED]
    stats = agg["validation"][LIVER]["liver"]["models"]["universal"]["dice"]
    assert stats["n"] == 2 and len(stats["values"]) == 2
    assert agg["tests"][1]["num_cases"] == 2 and agg["tests"][1]["sealed"]
    for seed in (0, 1):
        bench = json.loads((root / f"seed_{seed}" / "benchmark_TextPlans_001_002_3d_fullres_fold0" /
                            BENCHMARK_JSON).read_text())
        assert bench["test"]["dataset"] == DEV and bench["more_tests"][0]["dataset"] == SEALED
        assert bench["more_tests"][0]["sealed"] and "sealed" not in bench["test"]
        assert bench["budget_check"]["equal"]
        ckpt = torch.load(root / f"seed_{seed}" / "TextPlans_001_002" / "3d_fullres__onehot" / "fold_0" /
                          "checkpoint_final.pth", map_location="cpu", weights_only=False)
        assert ckpt["training_config"]["seed"] == seed  # each seed trains its own models
    first = torch.load(root / "seed_0" / LIVER / "3d_fullres__baseline" / "fold_0" / "checkpoint_final.pth",
                       map_location="cpu", weights_only=False)["network"]
    second = torch.load(root / "seed_1" / LIVER / "3d_fullres__baseline" / "fold_0" / "checkpoint_final.pth",
                        map_location="cpu", weights_only=False)["network"]
    assert any(not torch.equal(first[k], second[k]) for k in first)
    assert not (res / "benchmark_TextPlans_001_002_3d_fullres_fold0").exists()  # the single-seed folder untouched
    capsys.readouterr()

    ckpt = root / "seed_1" / "TextPlans_001_002" / "3d_fullres__onehot" / "fold_0" / "checkpoint_final.pth"
    stamp = ckpt.stat().st_mtime_ns
    with pytest.raises(SystemExit) as e:
        benchmark_main(argv)
    out = capsys.readouterr().out
    assert e.value.code == 0 and out.count("finished earlier, skipped") == 2 and "training" not in out
    assert ckpt.stat().st_mtime_ns == stamp
