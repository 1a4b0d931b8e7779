"""Figures the documentation prints that are computed from committed artefacts rather than stored in them.

Each derived file under documentation/measurements/derived/ is written by this script from the raw artefacts it
names (`sources`), with the formula in words; nothing in it is typed by hand. tests/test_docs_artefacts.py checks
that the committed files equal what this script computes from the artefacts now.

    .venv/bin/python perf/derived_figures.py           # (re)write every derived file
    .venv/bin/python perf/derived_figures.py --check   # exit 1 when a committed file differs
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MEASUREMENTS = REPO / "documentation" / "measurements"
DERIVED = MEASUREMENTS / "derived"
ORGANS = ["liver", "spleen", "kidney"]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generalization_matrix import SEEDS  # noqa: E402  (the matrix's variant names)


def _rel(path: Path) -> str:
    return str(path.relative_to(MEASUREMENTS))


def matrix_rows(folder: Path) -> list[Path]:
    """The row artefacts of one matrix folder (one JSON per variant), not the analyses kept beside them."""
    return sorted(q for q in folder.glob("*.json") if q.stem in SEEDS)


def matrix_fp_fn() -> dict:
    """Test-set FP/FN voxel ratios of the generalization matrix, as generalization_matrix.report() prints them."""
    values, sources = {}, []
    for folder in sorted((MEASUREMENTS / "generalization_matrix").iterdir()):
        for path in matrix_rows(folder):
            test = json.loads(path.read_text())["test_Dataset004"]
            values.setdefault(folder.name, {})[path.stem] = {
                c: test[c]["FP"] / max(test[c]["FN"], 1) for c in ORGANS}
            sources.append(_rel(path))
    return {"what": "test Dataset004 false-positive over false-negative voxels per organ",
            "formula": "test_Dataset004[organ]['FP'] / max(test_Dataset004[organ]['FN'], 1)",
            "sources": sources, "values": values}


def matrix_train_minutes() -> dict:
    """Training wall minutes per row of the generalization matrix (the report's "train min" column)."""
    values, sources = {}, []
    for folder in sorted((MEASUREMENTS / "generalization_matrix").iterdir()):
        for path in matrix_rows(folder):
            values.setdefault(folder.name, {})[path.stem] = json.loads(path.read_text())["training"]["seconds"] / 60
            sources.append(_rel(path))
    return {"what": "training wall time in minutes per variant (one torch thread, cores shared with other runs)",
            "formula": "training['seconds'] / 60", "sources": sources, "values": values}


def _differences(table: dict) -> dict:
    """Universal minus every other model of one class's table, in Dice and in Dice points."""
    ours = table.get("universal", {}).get("dice_mean")
    out = {}
    for model, scores in table.items():
        theirs = scores.get("dice_mean")
        if model == "universal" or ours is None or theirs is None or theirs != theirs or ours != ours:
            continue
        out[f"universal - {model}"] = {"dice": ours - theirs, "dice_points": 100 * (ours - theirs)}
    return out


def benchmark_figures(folder: str) -> dict:
    """What the docs print from one textnnunet_benchmark run beyond its benchmark.json: differences on the test set
    and in Dice points, parameters in millions, training wall time in minutes."""
    path = REPO / "documentation" / folder / "benchmark.json"
    record = json.loads(path.read_text())
    models = record["models"]
    baselines = [m for m in models if m.startswith("baseline ")]
    return {
        "what": f"figures derived from {folder}/benchmark.json",
        "formula": "differences: universal dice_mean - other model's dice_mean (x 100 in points); parameters / 1e6; "
                   "training wall_seconds / 60",
        "sources": [str(path.relative_to(REPO))],
        "validation_differences": {ds: {c: _differences(t) for c, t in classes.items()}
                                   for ds, classes in record["validation"].items()},
        "test_differences": {c: _differences(t) for c, t in record.get("test", {}).get("table", {}).items()},
        "parameters_millions": {**{m: models[m]["parameters"] / 1e6 for m in models},
                                "baselines_total": sum(models[m]["parameters"] for m in baselines) / 1e6},
        "training_minutes": {**{m: models[m]["training"]["wall_seconds"] / 60 for m in models
                                if models[m].get("training", {}).get("wall_seconds") is not None},
                             "all_models": sum(models[m].get("training", {}).get("wall_seconds") or 0
                                               for m in models) / 60},
    }


# Matrix rows trained with several training seeds, by setting: the folders of one setting differ only in the seed.
MATRIX_SEED_GROUPS = {
    "mirroring (session-5 defaults)": ["session5_default", "session5_default_seed1", "session6_default_seed2"],
    "no mirroring (session 6)": ["session6_nomirror", "session6_nomirror_seed1", "session6_nomirror_seed2"],
    # the session-6 defaults with augmentation nnunet_intensity (no per-structure intensity offset)
    "no mirroring, no region shift (session 7)": ["session7_no_region_shift", "session7_no_region_shift_seed1",
                                                  "session7_no_region_shift_seed2"],
    # the session-6 defaults with the per-structure offset's sd halved (--region_shift_sigma 0.15)
    "no mirroring, region shift sd 0.15 (session 8)": ["session8_sigma015", "session8_sigma015_seed1",
                                                       "session8_sigma015_seed2"],
    # the session-6 defaults with BCE only (--dice_weight 0), four rows
    "no mirroring, BCE only (session 9)": ["session9_bce_only", "session9_bce_only_seed1", "session9_bce_only_seed2"],
    # the session-6 defaults with the Dice term at half weight (--dice_weight 0.5): the demo row in session 9, the
    # other five rows in session 10 (the same code paths; worktrees at 047764a and 083f081)
    "no mirroring, Dice weight 0.5 (sessions 9-10)": ["session9_dice05", "session9_dice05_seed1",
                                                      "session9_dice05_seed2", "session10_dice05",
                                                      "session10_dice05_seed1", "session10_dice05_seed2"],
    # the session-6 defaults at three times the demo's iterations (150 x 25: about 15 minutes of training alone on the
    # 2 cores, the budget issue 10 names); worktree at 4e0c934, whose training code is session 10's
    "no mirroring, 150 x 25 iterations (session 11)": ["session11_150ep", "session11_150ep_seed1",
                                                       "session11_150ep_seed2"],
}
DICE_BAR, FP_OVER_FN_BAR = 0.85, 2.0


def _dice_passes(test: dict) -> bool:
    return all(test[c]["Dice"] >= DICE_BAR for c in ORGANS)


def _fp_passes(test: dict) -> bool:
    return all(test[c]["FP"] < FP_OVER_FN_BAR * max(test[c]["FN"], 1) for c in ORGANS)


def _passes(test: dict) -> bool:
    """Issue 10's bar for one row: every organ Dice >= 0.85 and FP < 2x FN."""
    return _dice_passes(test) and _fp_passes(test)


def _fp_beyond_rim_passes(bands: dict) -> bool:
    """The FP rule with the FP within one network voxel of the organ left out (perf/matrix_error_distances.py)."""
    return all(bands[c]["FP_beyond_rim_over_FN"] < FP_OVER_FN_BAR for c in ORGANS)


def matrix_seeds() -> dict:
    """Per setting and variant: test Dice per organ over training seeds (mean, sample sd, min) and rows passing."""
    values, sources = {}, []
    for setting, folders in MATRIX_SEED_GROUPS.items():
        rows: dict[str, list[dict]] = {}
        bands_of: dict[str, list[dict]] = {}
        for folder in folders:
            path_bands = MEASUREMENTS / "generalization_matrix" / folder / "error_distances.json"
            bands = json.loads(path_bands.read_text())["variants"] if path_bands.is_file() else {}
            for path in matrix_rows(MEASUREMENTS / "generalization_matrix" / folder):
                record = json.loads(path.read_text())
                rows.setdefault(path.stem, []).append(record["test_Dataset004"])
                sources.append(_rel(path))
                if path.stem in bands:
                    bands_of.setdefault(path.stem, []).append(bands[path.stem])
            if bands:
                sources.append(_rel(path_bands))
        for variant, tests in rows.items():
            entry = {"seeds": len(tests), "passing": sum(_passes(t) for t in tests),
                     "passing_dice": sum(_dice_passes(t) for t in tests),
                     "passing_fp_rule": sum(_fp_passes(t) for t in tests)}
            if len(bands_of.get(variant, [])) == len(tests):
                entry["passing_fp_rule_beyond_rim"] = sum(_fp_beyond_rim_passes(b) for b in bands_of[variant])
            for c in ORGANS:
                dice = [t[c]["Dice"] for t in tests]
                entry[c] = {"mean": statistics.mean(dice), "min": min(dice),
                            "sd": statistics.stdev(dice) if len(dice) > 1 else None,
                            "median_fp_over_fn": statistics.median(t[c]["FP"] / max(t[c]["FN"], 1) for t in tests)}
                if len(bands_of.get(variant, [])) == len(tests):
                    entry[c]["median_fp_rim_over_fn_rim"] = statistics.median(
                        b[c]["FP_rim_over_FN_rim"] for b in bands_of[variant])
            values.setdefault(setting, {})[variant] = entry
    return {"what": "generalization matrix over training seeds: test Dataset004 Dice per organ (mean, sample sd, "
                    "min over seeds; the median FP/FN and rim FP/rim FN over seeds) and how many seeds pass issue 10's bar, its Dice part, its FP part, and the FP "
                    "part counting only FP beyond one network voxel of the organ (where error_distances.json exists "
                    "for every seed)",
            "formula": f"mean/stdev/min of test_Dataset004[organ]['Dice'] over the setting's folders; passing = seeds "
                       f"with every organ Dice >= {DICE_BAR} and FP < {FP_OVER_FN_BAR} x max(FN, 1); passing_dice and "
                       f"passing_fp_rule each part alone; passing_fp_rule_beyond_rim: every organ's "
                       f"FP_beyond_rim_over_FN < {FP_OVER_FN_BAR}",
            "groups": MATRIX_SEED_GROUPS, "sources": sources, "values": values}


def benchmark_seeds_time() -> dict:
    """Per seed of the three-seed benchmark: the baselines' training seconds together and universal / baselines."""
    path = REPO / "documentation" / "benchmark_seeds_cpu" / "benchmark_seeds.json"
    walls = json.loads(path.read_text())["wall_seconds"]
    values = {}
    for seed, models in walls.items():
        baselines = sum(v for m, v in models.items() if m.startswith("baseline"))
        values[seed] = {"baselines_total_s": baselines, "universal_s": models["universal"],
                        "universal_over_baselines": models["universal"] / baselines,
                        "all_models_s": sum(models.values())}
    return {"what": "training wall time per seed: the baselines together against the universal model (equal "
                    "iterations), and every model of the seed together (ablations included)",
            "formula": "sum of wall_seconds[seed]['baseline *']; universal_over_baselines = wall_seconds[seed]"
                       "['universal'] / that sum",
            "sources": [str(path.relative_to(REPO))], "values": values}


def predict_clinical_ct_gb() -> dict:
    """Peak memory of predict_clinical_ct.json in GB as benchmarks.md prints it (the script's MB / 1000)."""
    path = MEASUREMENTS / "predict_clinical_ct.json"
    runs = json.loads(path.read_text())["runs"]
    values = {run: {row: {k: v / 1000 for k, v in stats["peak_rss_mb"].items()}
                    for row, stats in record.get("summary", {}).items() if "peak_rss_mb" in stats}
              for run, record in runs.items()}
    return {"what": "peak resident memory per run and row (median, min, max) in GB",
            "formula": "summary[row]['peak_rss_mb'][stat] / 1000 (peak_rss_mb is ru_maxrss / 1024, so these are "
                       "thousands of MiB)",
            "sources": [_rel(path)], "values": values}


_EPOCH_LINE = re.compile(r"epoch (\d+): train loss ([\d.]+) \| val loss ([\d.]+) \| pseudo Dice (.*?) \| EMA .* \| "
                         r"([\d.]+) s(?: \(waiting for batches ([\d.]+) s\))?$")
_CASE_LINE = re.compile(r"epoch (\d+): whole-case validation \((\d+) cases, ([\d.]+) s\): (.*)$")
_CASE_CLASS = re.compile(r"([a-z ]+) Dice ([\d.]+|nan) FP (\d+) FN (\d+)")


def training_log(path: Path) -> dict:
    """Per epoch of a training log (the trainer's lines as printed): seconds, pseudo Dice and whole-case checks."""
    epochs, checks = [], []
    for line in path.read_text().splitlines():
        if m := _EPOCH_LINE.search(line):
            dice = {name.strip(): float(v) for name, v in (part.rsplit(" ", 1) for part in m.group(4).split(", "))}
            epochs.append({"epoch": int(m.group(1)), "train_loss": float(m.group(2)), "val_loss": float(m.group(3)),
                           "pseudo_dice": dice, "seconds": float(m.group(5)),
                           **({"waiting_for_batches_seconds": float(m.group(6))} if m.group(6) else {})})
        elif m := _CASE_LINE.search(line):
            checks.append({"epoch": int(m.group(1)), "cases": int(m.group(2)), "seconds": float(m.group(3)),
                           "scores": {c.strip(): {"Dice": float(d), "FP": int(fp), "FN": int(fn)}
                                      for c, d, fp, fn in _CASE_CLASS.findall(m.group(4))}})
    seconds = [e["seconds"] for e in epochs]
    return {"epochs": epochs, "whole_case_checks": checks,
            "median_epoch_seconds": statistics.median(seconds) if seconds else None,
            "median_epoch_seconds_after_first": statistics.median(seconds[1:]) if len(seconds) > 1 else None}


def gpu_h200_logs() -> dict:
    """The lent H200's training logs parsed (the 700-iteration run was stopped by its time limit in the fold
    validation, so its log and progress plot are its only artefacts)."""
    folder = MEASUREMENTS / "gpu_h200"
    logs = sorted(folder.glob("full_plan_*.log"))
    return {"what": "per epoch: train/val loss, pseudo Dice, seconds (50 training + 5 validation iterations); "
                    "whole-case checks (Dice, FP, FN voxels on 3 validation cases, one per dataset)",
            "sources": [_rel(p) for p in logs], "values": {p.stem: training_log(p) for p in logs}}


DERIVED_FILES = {"generalization_matrix_fp_fn.json": matrix_fp_fn,
                 "predict_clinical_ct_gb.json": predict_clinical_ct_gb,
                 "generalization_matrix_train_minutes.json": matrix_train_minutes,
                 "generalization_matrix_seeds.json": matrix_seeds,
                 "benchmark_seeds_time.json": benchmark_seeds_time,
                 "gpu_h200_training_logs.json": gpu_h200_logs,
                 **{f"{folder}.json": (lambda folder=folder: benchmark_figures(folder))
                    for folder in ("benchmark_demo_cpu", "benchmark_demo_cpu_ablation", "benchmark_demo_cpu_nnunet")}}


def compute() -> dict[str, dict]:
    return {name: make() for name, make in DERIVED_FILES.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="compare with the committed files, write nothing")
    args = p.parse_args()
    differ = []
    for name, record in compute().items():
        target = DERIVED / name
        text = json.dumps(record, indent=1) + "\n"
        if args.check:
            if not target.is_file() or target.read_text() != text:
                differ.append(name)
            continue
        DERIVED.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        print(f"wrote {target.relative_to(REPO)}")
    if differ:
        print(f"differ from the artefacts: {differ}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
