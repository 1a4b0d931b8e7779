"""benchmark.json, benchmark.md and the plots, written from the benchmark dict alone (no models needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from textnnunet.benchmark.aggregate import (
    UNIVERSAL,
    baseline_name,
    finite,
    is_ablation,
    is_baseline,
    is_nnunet,
    nnunet_name,
)
from textnnunet.evaluation.metrics import benchmark_metrics
from textnnunet.utils.files import atomic_path, atomic_write_json, atomic_write_text

BENCHMARK_JSON = "benchmark.json"
BENCHMARK_MD = "benchmark.md"
DICE_PLOT = "dice_per_class.png"
COST_PLOT = "cost.png"
# The benchmark metric (evaluation.metrics.METRICS) of the ablation and test tables and the plot: the first one.
PRIMARY, PRIMARY_KEY = benchmark_metrics()[0]


def _f(value, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if finite(value) else "n/a"


def _pm(stats: Mapping | None, key: str) -> str:
    if stats is None:
        return "—"
    return f"{_f(stats[key + '_mean'])} ± {_f(stats[key + '_std'])}"


def _signed(value) -> str:
    return f"{value:+.4f}" if finite(value) else "n/a"


def _seconds(value) -> str:
    return f"{value:.1f}" if finite(value) else "n/a"


def _count(value) -> str:
    return "n/a" if value is None else f"{value:,}"


def _iterations(t: Mapping) -> str:
    if t["iterations"] is None:  # an imported nnU-Net whose files do not tell
        return "n/a" if t.get("epochs") is None else f"n/a ({t['epochs']} epochs)"
    return f"{t['iterations']} ({t['epochs']} x {t['iters_per_epoch']})"


def _ablation_models(benchmark: Mapping) -> list[str]:
    return [m for m in benchmark["models"] if is_ablation(m)]


def _has_nnunet(benchmark: Mapping) -> bool:
    return any(is_nnunet(m) for m in benchmark["models"])


def models_table(benchmark: Mapping) -> list[str]:
    lines = ["| model | kind | iterations trained | batch | training wall time (s) | parameters | "
             "inference s/case | classes |", "|---|---|---|---|---|---|---|---|"]
    for name, m in benchmark["models"].items():
        t = m["training"]
        lines.append(f"| {name} | {m['kind']} | {_iterations(t)} | "
                     f"{t['batch_size'] if t['batch_size'] is not None else 'n/a'} | {_seconds(t['wall_seconds'])} | "
                     f"{_count(m['parameters'])} | "
                     f"{_speed(m)} | {', '.join(m['classes'])} |")
    return lines


def _speed(model: Mapping) -> str:
    """The first test set's seconds per case; a model not scored there shows another test set's, named (not the
    same images as the others')."""
    if model.get("inference_seconds_per_case") is not None:
        return _seconds(model["inference_seconds_per_case"])
    elsewhere = model.get("inference_seconds_by_test_set") or {}
    return "; ".join(f"{_seconds(s)} (on {name})" for name, s in elsewhere.items()) or _seconds(None)


def validation_section(benchmark: Mapping) -> list[str]:
    ablations = _ablation_models(benchmark)
    intro = "Each dataset's held-out cases, judged on the classes that dataset labels. Δ = universal − baseline."
    if _has_nnunet(benchmark):
        intro += (" nnU-Net v2: the genuine nnU-Net v2 imported for that dataset (its validation predictions of the "
                  "same cases, same evaluation); Δ vs nnU-Net v2 = universal − nnU-Net v2.")
    lines = ["## Validation: held-out cases of each dataset (fold "
             f"{benchmark['settings']['fold']})", "", intro, ""]
    for ds, classes in benchmark["validation"].items():
        base, nnunet = baseline_name(ds), nnunet_name(ds)
        with_nnunet = any(nnunet in models for models in classes.values())
        metrics = benchmark_metrics()
        primary_name, primary = metrics[0]
        nnunet_head = ("".join(f" nnU-Net v2 {name} |" for name, _ in metrics)
                       + f" Δ {primary_name} vs nnU-Net v2 |") if with_nnunet else ""
        extra = nnunet_head + "".join(f" {a} {primary_name} |" for a in ablations)
        compared = " | ".join(f"universal {name} | baseline {name} | Δ {name}" for name, _ in metrics)
        n_extra = len(ablations) + (len(metrics) + 1) * int(with_nnunet)
        lines += [f"### {ds}", "", f"| class | {compared} | n |{extra}",
                  "|---|" + "---|" * (3 * len(metrics) + 1) + "---|" * n_extra]
        for cls, models in classes.items():
            diff = benchmark["validation_differences"][ds][cls]
            n = max((s["n_cases"] for s in models.values()), default=0)
            cells = ""
            if with_nnunet:
                nn_diff = benchmark["validation_differences_nnunet_v2"][ds][cls]
                cells += "".join(f" {_pm(models.get(nnunet), key)} |" for _, key in metrics)
                cells += f" {_signed(nn_diff[primary])} |"
            cells += "".join(f" {_pm(models.get(a), primary)} |" for a in ablations)
            values = " | ".join(f"{_pm(models.get(UNIVERSAL), key)} | {_pm(models.get(base), key)} | "
                                f"{_signed(diff[key])}" for _, key in metrics)
            lines.append(f"| {cls} | {values} | {n} |{cells}")
        lines.append("")
    return lines


ABLATION_MEANING = {
    "naiveunion": "the naive union: each dataset's unlabelled classes trained as background (no partial-label "
                  "masking)",
    "film": "FiLM conditioning instead of the controller",
}


def _ablation_meaning(model: str) -> str:
    tag = model.split("__", 1)[-1]
    return ABLATION_MEANING.get(tag, f"the {tag} text encoder")


def ablation_rows(benchmark: Mapping, ablation: str) -> list[tuple[str, float, float]]:
    """(where and class, universal Dice, ablation Dice) on every validation class and test-set class both cover."""
    rows = []
    for ds, classes in benchmark["validation"].items():
        for cls, models in classes.items():
            if UNIVERSAL in models and ablation in models:
                rows.append((f"{ds} validation: {cls}", models[UNIVERSAL][PRIMARY_KEY + "_mean"],
                             models[ablation][PRIMARY_KEY + "_mean"]))
    for test in test_blocks(benchmark):
        for cls in test.get("classes", []):
            models = test["table"].get(cls, {})
            if UNIVERSAL in models and ablation in models:
                rows.append((f"{test['dataset']} test: {cls}", models[UNIVERSAL][PRIMARY_KEY + "_mean"],
                             models[ablation][PRIMARY_KEY + "_mean"]))
    return rows


def test_blocks(benchmark: Mapping) -> list[Mapping]:
    """benchmark["test"] (the first test set) and any further ones (benchmark["more_tests"])."""
    return ([benchmark["test"]] if benchmark.get("test") else []) + list(benchmark.get("more_tests") or [])


SEALED_NOTE = ("**The sealed test set** (documentation/benchmarks.md): made after every default was chosen, with a "
               "generator seed and a contrast phase no tuning decision has seen. Report it once per change of "
               "default; never tune on it.")


def ablation_section(benchmark: Mapping) -> list[str]:
    """One table per ablation: the universal model against the same model with one thing changed."""
    lines = []
    for ablation in _ablation_models(benchmark):
        rows = ablation_rows(benchmark, ablation)
        better = sum(1 for _, u, a in rows if finite(u) and finite(a) and u > a)
        lines += [f"## Ablation: {ablation}", "",
                  f"The universal model against {_ablation_meaning(ablation)}, same budget and everything else equal. "
                  f"Δ = universal − ablation; the universal model is better on {better} of {len(rows)} rows.", "",
                  f"| where: class | universal {PRIMARY} | ablation {PRIMARY} | Δ {PRIMARY} |", "|---|---|---|---|"]
        lines += [f"| {where} | {_f(u)} | {_f(a)} | {_signed(u - a)} |" for where, u, a in rows]
        lines.append("")
    return lines


def test_section(benchmark: Mapping) -> list[str]:
    return [line for test in test_blocks(benchmark) for line in _test_set_section(benchmark, test)]


def _test_set_section(benchmark: Mapping, test: Mapping) -> list[str]:
    models = [m for m in benchmark["models"]]
    nnunet = "differences_nnunet_v2" in test
    intro = (f"{PRIMARY} mean ± std per class; — = the model cannot segment this class. Δ = universal − the baseline "
             "that covers the class.")
    if nnunet:
        intro += " Δ vs nnU-Net v2 = universal − the imported nnU-Net v2 that covers the class."
    if test.get("sealed"):
        intro = SEALED_NOTE + " " + intro
    images = f"{test['image_type']} images, " if test.get("image_type") else ""
    lines = [f"## Test set: {test['dataset']} ({images}{test['num_cases']} fully labelled cases, never trained on)", "",
             intro, "",
             "| class | " + " | ".join(models) + f" | Δ {PRIMARY} |" + (f" Δ {PRIMARY} vs nnU-Net v2 |" if nnunet else ""),
             "|---|" + "---|" * (len(models) + 1 + int(nnunet))]
    for cls in test["classes"]:
        row = test["table"].get(cls, {})
        diff = test["differences"].get(cls, {}).get(PRIMARY_KEY, float("nan"))
        cells = (f" {_signed(test['differences_nnunet_v2'].get(cls, {}).get(PRIMARY_KEY, float('nan')))} |"
                 if nnunet else "")
        lines.append(f"| {cls} | " + " | ".join(_pm(row.get(m), PRIMARY_KEY) for m in models)
                     + f" | {_signed(diff)} |" + cells)
    lines.append("")
    return lines


def coverage_section(benchmark: Mapping) -> list[str]:
    cov, cost = benchmark["coverage"], benchmark["cost"]
    lines = ["## Which classes each model can segment", "",
             "On the image types in brackets: those it was trained on (it is scored on no others).", "",
             "| class | models |", "|---|---|"]

    def named(model: str) -> str:
        types = benchmark["models"].get(model, {}).get("image_types")
        return f"{model} ({', '.join(types)})" if types else model

    for cls, models in cov.items():
        lines.append(f"| {cls} | {', '.join(map(named, models)) if models else '**none**'} |")
    lines += ["", "## Cost to cover every class", "", "| approach | models | parameters | covered | missing |",
              "|---|---|---|---|---|"]
    for group, c in cost.items():
        lines.append(f"| {group} | {c['models']} | {_count(c['parameters'])} | "
                     f"{', '.join(c['classes_covered']) or '—'} | "
                     f"{', '.join(c['classes_missing']) or '—'} |")
    return lines + [""]


def benchmark_markdown(benchmark: Mapping) -> str:
    s, env, budget = benchmark["settings"], benchmark["environment"], benchmark["budget"]
    check = benchmark["budget_check"]
    lines = [f"# Benchmark: {s['plans_name']} {s['configuration']} fold {s['fold']}", "",
             f"- date: {benchmark['date']}", f"- command: `{s.get('command', '')}`",
             f"- device: {env['device']}; " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
             f"- budget asked: {budget['description']}",
             f"- budget trained (from the checkpoints): universal {check['universal_iterations']} iterations, "
             f"baselines {check['baselines_total_iterations']} together: "
             + ("equal." if check["equal"] else "**not equal** (models trained earlier with other settings were reused)."),
             ""]
    if benchmark.get("skipped"):
        lines += ["Skipped: " + "; ".join(f"{k} ({v})" for k, v in benchmark["skipped"].items()), ""]
    lines += ["## Models", "", *models_table(benchmark), ""]
    lines += validation_section(benchmark) + test_section(benchmark) + ablation_section(benchmark)
    lines += coverage_section(benchmark)
    lines += [f"Plots: `{DICE_PLOT}` (Dice per class, side by side), `{COST_PLOT}` (models and parameters needed to "
              "cover every class)."]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ plots
def _grouped_bars(ax, labels: list[str], series: dict[str, list[float]], title: str) -> None:
    x = np.arange(len(labels))
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, np.nan_to_num(values, nan=0.0), width, label=name)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel(PRIMARY)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)


def plot_dice(benchmark: Mapping, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ablations = _ablation_models(benchmark)
    nnunet = ["nnU-Net v2"] if _has_nnunet(benchmark) else []
    val_labels, val_series = [], {"universal": [], "baseline": [], **{a: [] for a in nnunet + ablations}}
    for ds, classes in benchmark["validation"].items():
        for cls, models in classes.items():
            val_labels.append(f"{ds.split('_', 1)[-1]}: {cls}")
            val_series["universal"].append(models.get(UNIVERSAL, {}).get(PRIMARY_KEY + "_mean", float("nan")))
            val_series["baseline"].append(models.get(baseline_name(ds), {}).get(PRIMARY_KEY + "_mean", float("nan")))
            for a in nnunet:
                val_series[a].append(models.get(nnunet_name(ds), {}).get(PRIMARY_KEY + "_mean", float("nan")))
            for a in ablations:
                val_series[a].append(models.get(a, {}).get(PRIMARY_KEY + "_mean", float("nan")))
    test = benchmark.get("test")
    panels = 2 if test else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels + 2, 4.5), squeeze=False)
    _grouped_bars(axes[0][0], val_labels, val_series, "validation (each dataset's held-out cases)")
    if test:
        classes = list(test["classes"])
        series = {m: [test["table"].get(c, {}).get(m, {}).get(PRIMARY_KEY + "_mean", float("nan")) for c in classes]
                  for m in benchmark["models"]}
        _grouped_bars(axes[0][1], classes, series, f"test set {test['dataset']} (missing bar: cannot segment)")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def cost_label(cost: Mapping) -> str:
    """'N model(s)' and how many of the wanted classes (or class-on-image-type pairs) a group covers."""
    wanted = len(cost["classes_covered"]) + len(cost["classes_missing"])
    return f"{cost['models']} model(s)\n{len(cost['classes_covered'])}/{wanted} covered"


def plot_cost(benchmark: Mapping, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cost, models = benchmark["cost"], benchmark["models"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(0, cost["universal"]["parameters"], 0.6, label=UNIVERSAL)
    bottom = 0
    for name, m in models.items():
        if is_baseline(name):
            ax.bar(1, m["parameters"], 0.6, bottom=bottom, label=name)
            bottom += m["parameters"]
    for x, group in enumerate(("universal", "baselines")):
        c = cost[group]
        ax.text(x, c["parameters"], cost_label(c),
                ha="center", va="bottom", fontsize=8)
    ax.set_xticks([0, 1])
    ax.set_xticklabels(["one universal model", "one baseline per dataset"])
    ax.set_ylabel("parameters")
    ax.set_title("cost to cover every class", fontsize=10)
    ax.legend(fontsize=7)
    ax.margins(y=0.25)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def write_benchmark(benchmark: Mapping, folder: Path) -> dict[str, Path]:
    """Write benchmark.json, benchmark.md and both plots into `folder`; returns their paths."""
    folder = Path(folder)
    paths = {"json": folder / BENCHMARK_JSON, "md": folder / BENCHMARK_MD, "dice_plot": folder / DICE_PLOT,
             "cost_plot": folder / COST_PLOT}
    atomic_write_json(paths["json"], benchmark)
    atomic_write_text(paths["md"], benchmark_markdown(benchmark))
    plot_dice(benchmark, paths["dice_plot"])
    plot_cost(benchmark, paths["cost_plot"])
    return paths
