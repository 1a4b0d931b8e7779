"""`run_seeds` (textnnunet_benchmark --seeds 0 1 2): the whole comparison once per training seed, then mean ± sd.

Each seed is one ordinary benchmark run (`run_benchmark`) with TrainingConfig.seed set to it and its own results
root, results/benchmark_seeds_<plan>_<configuration>_fold<k>/seed_<s>/ (its models and its benchmark folder); the
preprocessed caches and the joint plan's split are shared, so every seed holds out the same cases. A seed is
finished when seed_<s>/seed_run.json (written atomically after its benchmark.json) records the same settings: a
re-run skips it, and within an unfinished seed `run_benchmark` skips every model with a final checkpoint and
resumes the others, so a run of hours can span sessions. After each seed, benchmark_seeds.json and .md are
rewritten from the finished seeds.

The statistics are pure functions of the per-seed benchmark dicts (`aggregate_seeds`): per class and model the
mean and sample sd over seeds of the per-seed value (the mean over that seed's cases), the difference of the means,
and a verdict: a tie when |difference| <= 2 x the larger of the two sds (TIE_RULE).
"""
from __future__ import annotations

import dataclasses
import datetime
import math
from pathlib import Path
from typing import Callable, Iterable, Mapping

from textnnunet.benchmark.aggregate import UNIVERSAL, baseline_name, finite, is_ablation, is_baseline
from textnnunet.benchmark.report import BENCHMARK_JSON, PRIMARY, PRIMARY_KEY, SEALED_NOTE, test_blocks
from textnnunet.errors import UserError
from textnnunet.evaluation.metrics import benchmark_metrics
from textnnunet.utils.files import atomic_write_json, atomic_write_text, load_json

SEEDS_JSON = "benchmark_seeds.json"
SEEDS_MD = "benchmark_seeds.md"
SEED_DONE = "seed_run.json"
# Bumped when what a seed's benchmark scores changes, so finished seeds are not mixed with new ones. 2 (session 10):
# a model is scored only on test images of a type it was trained on.
SCORING_RULES = 2
TIE_FACTOR = 2.0
TIE_RULE = (f"tie when |mean difference| <= {TIE_FACTOR:g} x the larger of the two models' standard deviations over "
            "seeds (sample sd, n - 1); otherwise the model with the higher mean is better. With one seed there is no "
            "sd and no verdict.")


# ------------------------------------------------------------------------------------------ pure statistics
def seed_stats(values: Iterable[float | None]) -> dict:
    """Mean and sample sd (n - 1) over seeds of the finite values; sd is NaN below two values."""
    values = [float(v) for v in values if v is not None and finite(float(v))]
    n = len(values)
    mean = sum(values) / n if n else float("nan")
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n >= 2 else float("nan")
    return {"mean": mean, "sd": sd, "n": n, "values": values}


def compare(ours: Mapping, theirs: Mapping, factor: float = TIE_FACTOR) -> dict:
    """Ours against theirs (two `seed_stats`): difference of means, the tie threshold and the verdict.

    verdict: "tie" (|difference| <= factor x the larger sd), "better" / "worse" (ours against theirs), or "n/a"
    (a side without values, or fewer than two seeds on either side: no sd to judge by).
    """
    difference = ours["mean"] - theirs["mean"] if ours["n"] and theirs["n"] else float("nan")
    spread = max(ours["sd"], theirs["sd"]) if finite(ours["sd"]) and finite(theirs["sd"]) else float("nan")
    threshold = factor * spread
    if not finite(difference) or not finite(threshold):
        verdict = "n/a"
    elif abs(difference) <= threshold:
        verdict = "tie"
    else:
        verdict = "better" if difference > 0 else "worse"
    return {"difference": difference, "threshold": threshold, "verdict": verdict}


def _metric_stats(per_seed: list[Mapping | None]) -> dict:
    """{metric key: seed_stats} from one model's per-seed stats blocks (None where a seed lacks the model)."""
    return {key: seed_stats(block.get(f"{key}_mean") if block else None for block in per_seed)
            for _, key in benchmark_metrics()}


def _compare_metrics(ours: Mapping, theirs: Mapping) -> dict:
    return {key: compare(ours[key], theirs[key]) for _, key in benchmark_metrics()}


def _models_in(tables: list[Mapping]) -> list[str]:
    names: list[str] = []
    for table in tables:
        names += [m for m in table if m not in names]
    return names


def _cell_block(tables: list[Mapping], reference: str | None) -> dict:
    """One class: each model's stats over seeds, universal against `reference` and against every ablation."""
    models = {m: _metric_stats([t.get(m) for t in tables]) for m in _models_in(tables)}
    block: dict = {"models": models, "baseline": reference, "vs_baseline": None, "vs_ablations": {}}
    if UNIVERSAL in models and reference in models:
        block["vs_baseline"] = _compare_metrics(models[UNIVERSAL], models[reference])
    if UNIVERSAL in models:
        block["vs_ablations"] = {m: _compare_metrics(models[UNIVERSAL], models[m]) for m in models if is_ablation(m)}
    return block


def aggregate_seeds(benchmarks: Mapping[int, Mapping], seeds: list[int] | None = None, command: str | None = None,
                    date: str | None = None) -> dict:
    """benchmark_seeds.json from the per-seed benchmark dicts ({seed: benchmark.json}): pure, no files."""
    if not benchmarks:
        raise UserError("no finished seed to aggregate")
    finished = sorted(benchmarks)
    runs = [benchmarks[s] for s in finished]
    first = runs[0]
    validation: dict = {}
    for ds, classes in first["validation"].items():
        for cls in classes:
            tables = [run["validation"].get(ds, {}).get(cls, {}) for run in runs]
            validation.setdefault(ds, {})[cls] = _cell_block(tables, baseline_name(ds))
    tests = []
    for i, test in enumerate(test_blocks(first)):
        per_seed = [test_blocks(run)[i] if len(test_blocks(run)) > i else {"table": {}} for run in runs]
        classes = {}
        for cls in test["classes"]:
            tables = [t["table"].get(cls, {}) for t in per_seed]
            references = [m for m in _models_in(tables) if is_baseline(m)]
            classes[cls] = _cell_block(tables, references[0] if references else None)
        tests.append({"dataset": test["dataset"], "num_cases": test["num_cases"], "sealed": bool(test.get("sealed")),
                      **({"image_type": test["image_type"]} if test.get("image_type") else {}), "classes": classes})
    settings = {k: v for k, v in first["settings"].items() if k != "command"}
    return {
        "date": date or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "seeds": list(seeds) if seeds is not None else finished, "finished_seeds": finished,
        "missing_seeds": [s for s in (seeds or finished) if s not in benchmarks],
        "tie_rule": TIE_RULE, "tie_factor": TIE_FACTOR,
        "settings": settings, "command": first["settings"].get("command", "") if command is None else command,
        "environment": first.get("environment", {}), "budget": first.get("budget", {}),
        "budget_check": {str(s): benchmarks[s].get("budget_check") for s in finished},
        "models": {m: {"kind": info.get("kind"), "classes": info.get("classes"), "parameters": info.get("parameters")}
                   for m, info in first["models"].items()},
        "wall_seconds": {str(s): {m: info.get("training", {}).get("wall_seconds")
                                  for m, info in benchmarks[s]["models"].items()} for s in finished},
        "validation": validation,
        "tests": tests,
        "summary": verdict_counts(validation, tests),
    }


def verdict_counts(validation: Mapping, tests: list[Mapping], key: str = PRIMARY_KEY) -> dict:
    """How many rows of each table are ties, wins, losses (universal against baseline, and per ablation)."""
    counts: dict[str, dict[str, int]] = {}

    def add(table: str, comparison: Mapping | None) -> None:
        if comparison is not None:
            verdict = comparison[key]["verdict"]
            row = counts.setdefault(table, {"better": 0, "tie": 0, "worse": 0, "n/a": 0})
            row[verdict] += 1

    blocks = [b for classes in validation.values() for b in classes.values()]
    blocks += [b for t in tests for b in t["classes"].values()]
    for b in blocks:
        add("universal vs baseline", b["vs_baseline"])
        for ablation, comparison in b["vs_ablations"].items():
            add(f"universal vs {ablation}", comparison)
    return counts


# ------------------------------------------------------------------------------------------------ markdown
def _f(value, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if finite(value) else "n/a"


def _pm(stats: Mapping | None, key: str = PRIMARY_KEY) -> str:
    if not stats or not stats[key]["n"]:
        return "—"
    s = stats[key]
    return f"{_f(s['mean'])} ± {_f(s['sd'])}" + (f" (n={s['n']})" if s["n"] < 2 else "")


def _verdict(comparison: Mapping | None, key: str = PRIMARY_KEY) -> tuple[str, str, str]:
    if comparison is None:
        return "n/a", "n/a", "n/a"
    c = comparison[key]
    verdict = {"better": "**universal better**", "worse": "**universal worse**"}.get(c["verdict"], c["verdict"])
    difference = f"{c['difference']:+.4f}" if finite(c["difference"]) else "n/a"
    return difference, _f(c["threshold"]), verdict


def seeds_markdown(agg: Mapping) -> str:
    s, budget = agg["settings"], agg.get("budget", {})
    env = agg.get("environment", {})
    lines = [f"# Benchmark over seeds: {s['plans_name']} {s['configuration']} fold {s['fold']}", "",
             f"- date: {agg['date']}",
             f"- seeds: {' '.join(map(str, agg['seeds']))} (finished: {' '.join(map(str, agg['finished_seeds']))}"
             + (f"; **missing: {' '.join(map(str, agg['missing_seeds']))}**" if agg["missing_seeds"] else "")
             + "); the seed is the training seed (initialisation, sampling, augmentation); the split is the same "
               "for every seed",
             f"- command: `{agg['command']}`",
             f"- device: {env.get('device', '?')}; "
             + ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items()),
             f"- budget asked: {budget.get('description', '?')}",
             "- budget trained, per seed: " + "; ".join(
                 f"seed {seed}: universal {c['universal_iterations']}, baselines {c['baselines_total_iterations']}"
                 + ("" if c["equal"] else " (**not equal**)")
                 for seed, c in agg["budget_check"].items() if c),
             f"- per-seed reports: `seed_<s>/benchmark_*/benchmark.md`",
             "",
             f"{PRIMARY}: mean ± sd over seeds of each seed's mean over the cases. Δ = universal − the other model. "
             f"Rule: {agg['tie_rule']}", ""]
    counts = agg["summary"]
    if counts:
        lines += ["| comparison | universal better | tie | universal worse | no verdict |", "|---|---|---|---|---|"]
        lines += [f"| {name} | {c['better']} | {c['tie']} | {c['worse']} | {c['n/a']} |" for name, c in counts.items()]
        lines.append("")

    lines += [f"## Validation: held-out cases of each dataset (fold {s['fold']})", "",
              f"| dataset | class | universal {PRIMARY} | baseline {PRIMARY} | Δ | 2 sd | verdict |",
              "|---|---|---|---|---|---|---|"]
    for ds, classes in agg["validation"].items():
        for cls, b in classes.items():
            lines.append(f"| {ds} | {cls} | {_pm(b['models'].get(UNIVERSAL))} | "
                         f"{_pm(b['models'].get(b['baseline']))} | " + " | ".join(_verdict(b["vs_baseline"])) + " |")
    lines.append("")
    for test in agg["tests"]:
        images = f"{test['image_type']} images, " if test.get("image_type") else ""
        lines += [f"## Test set: {test['dataset']} ({images}{test['num_cases']} fully labelled cases, never trained on)",
                  ""]
        if test["sealed"]:
            lines += [SEALED_NOTE, ""]
        lines += [f"| class | universal {PRIMARY} | baseline that covers it | baseline {PRIMARY} | Δ | 2 sd | verdict |",
                  "|---|---|---|---|---|---|---|"]
        for cls, b in test["classes"].items():
            lines.append(f"| {cls} | {_pm(b['models'].get(UNIVERSAL))} | {b['baseline'] or '—'} | "
                         f"{_pm(b['models'].get(b['baseline']))} | " + " | ".join(_verdict(b["vs_baseline"])) + " |")
        lines.append("")
    ablations = [m for m in agg["models"] if is_ablation(m)]
    for ablation in ablations:
        lines += [f"## Ablation: {ablation}", "", f"The universal model against {ablation}, same budget, per seed. "
                  "Δ = universal − ablation.", "",
                  f"| where: class | universal {PRIMARY} | ablation {PRIMARY} | Δ | 2 sd | verdict |",
                  "|---|---|---|---|---|---|"]
        rows = [(f"{ds} validation: {cls}", b) for ds, classes in agg["validation"].items() for cls, b in classes.items()]
        rows += [(f"{t['dataset']} test: {cls}", b) for t in agg["tests"] for cls, b in t["classes"].items()]
        for where, b in rows:
            if ablation in b["vs_ablations"]:
                lines.append(f"| {where} | {_pm(b['models'].get(UNIVERSAL))} | {_pm(b['models'].get(ablation))} | "
                             + " | ".join(_verdict(b["vs_ablations"][ablation])) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def write_seeds_report(agg: Mapping, folder: Path) -> dict[str, Path]:
    folder = Path(folder)
    paths = {"json": folder / SEEDS_JSON, "md": folder / SEEDS_MD}
    atomic_write_json(paths["json"], agg)
    atomic_write_text(paths["md"], seeds_markdown(agg))
    return paths


# ---------------------------------------------------------------------------------------------------- runs
def seeds_folder(results: Path, plans_name: str, configuration: str, fold) -> Path:
    return Path(results) / f"benchmark_seeds_{plans_name}_{configuration}_fold{fold}"


def seed_key(options, seed: int) -> dict:
    """What a finished seed must match to be skipped: everything that changes its numbers."""
    config = {k: v for k, v in options.base_config.to_json().items() if k != "seed"}
    return {"seed": int(seed), "dataset_ids": list(options.dataset_ids), "configuration": options.configuration,
            "fold": options.fold, "epochs": options.epochs, "iters_per_epoch": options.iters_per_epoch,
            "val_iters_per_epoch": options.val_iters_per_epoch, "equal_budget": options.equal_budget,
            "ablations": sorted(options.ablations), "encoder": options.encoder, "use_mirroring": options.use_mirroring,
            "test_datasets": [str(t) for t in ([options.test_dataset] if options.test_dataset is not None else [])
                              + list(options.more_test_datasets)],
            "nnunet_models": [list(m) for m in options.nnunet_models], "training_config": config,
            "scoring_rules": SCORING_RULES}


def run_seeds(options, seeds: list[int], *, raw=None, preprocessed=None, results=None, echo: bool = True,
              run: Callable | None = None) -> Path:
    """One benchmark per seed (skipping finished seeds), then the report over seeds; returns its folder.

    `run`: the per-seed benchmark (default `run_benchmark`; tests pass a fake).
    """
    from textnnunet.benchmark.run import run_benchmark
    from textnnunet.paths import joint_plans_name, resolve_folders
    from textnnunet.training.splits import parse_fold

    run = run or run_benchmark
    log = print if echo else (lambda *_: None)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise UserError("--seeds: give at least one seed")
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise UserError(f"--seeds {' '.join(map(str, seeds))}: seeds must be distinct non-negative integers")
    folders = resolve_folders(raw, preprocessed, results, required=("preprocessed", "results"))
    options = dataclasses.replace(options, fold=parse_fold(options.fold))
    root = seeds_folder(folders.results, joint_plans_name(options.dataset_ids), options.configuration, options.fold)
    benchmarks: dict[int, dict] = {}
    for i, seed in enumerate(seeds):
        seed_root = root / f"seed_{seed}"
        done_path, key = seed_root / SEED_DONE, seed_key(options, seed)
        done = load_json(done_path) if done_path.is_file() else None
        if done is not None and done.get("key") == key and (seed_root / done["benchmark"] / BENCHMARK_JSON).is_file():
            log(f"seed {seed} ({i + 1}/{len(seeds)}): finished earlier, skipped ({seed_root})")
        else:
            log(f"seed {seed} ({i + 1}/{len(seeds)}): {seed_root}")
            seed_options = dataclasses.replace(
                options, base_config=dataclasses.replace(options.base_config, seed=seed),
                command=f"{options.command} [seed {seed}]" if options.command else "")
            out = Path(run(seed_options, raw=folders.raw, preprocessed=folders.preprocessed, results=seed_root,
                           echo=echo))
            done = {"key": key, "benchmark": str(out.relative_to(seed_root)),
                    "finished": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
            atomic_write_json(done_path, done)  # after benchmark.json: its presence marks the seed finished
        benchmarks[seed] = load_json(seed_root / done["benchmark"] / BENCHMARK_JSON)
        paths = write_seeds_report(aggregate_seeds(benchmarks, seeds, command=options.command), root)
    log(f"report over {len(seeds)} seeds written to {paths['md']}")
    return root
