"""Aggregate per-case metrics into summary.json and a readable summary.md.

Naming follows nnU-Net's summary.json: `metric_per_case`, `mean` (per class, averaged over cases)
and `foreground_mean` (the per-class means averaged over classes). Averages ignore NaN (Dice/IoU
are NaN for cases where the class is absent from both reference and prediction). JSON keeps NaN
as `NaN`, like nnU-Net, which Python's json module reads back.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from textnnunet.evaluation.metrics import METRICS, summary_metrics
from textnnunet.utils.files import atomic_write_json, atomic_write_text

MetricTable = dict[str, dict[str, float]]


def _nan_stats(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, std, number of finite values) without numpy's all-NaN warnings."""
    finite = np.asarray([v for v in values if v is not None and not math.isnan(float(v))], dtype=np.float64)
    if finite.size == 0:
        return float("nan"), float("nan"), 0
    return float(finite.mean()), float(finite.std()), int(finite.size)


def _ordered_union(lists: Iterable[Iterable[str]]) -> list[str]:
    seen: dict[str, None] = {}
    for items in lists:
        for item in items:
            seen.setdefault(item, None)
    return list(seen)


def _aggregate(per_case: Sequence[Mapping]) -> dict:
    """mean/std/count per class and the foreground mean for one group of cases."""
    classes = _ordered_union(case["metrics"].keys() for case in per_case)
    mean: MetricTable = {}
    std: MetricTable = {}
    count: dict[str, dict[str, int]] = {}
    for name in classes:
        rows = [case["metrics"][name] for case in per_case if name in case["metrics"]]
        metric_names = _ordered_union(row.keys() for row in rows)
        mean[name], std[name] = {}, {}
        for metric in metric_names:
            m, s, _ = _nan_stats([row.get(metric, float("nan")) for row in rows])
            mean[name][metric], std[name][metric] = m, s
        count[name] = {"n_cases": len(rows), "n_dice_defined": _nan_stats([r.get("Dice") for r in rows])[2]}
    metric_names = _ordered_union(mean[name].keys() for name in classes)
    foreground_mean = {metric: _nan_stats([mean[c].get(metric) for c in classes])[0] for metric in metric_names}
    return {"mean": mean, "std": std, "count": count, "foreground_mean": foreground_mean}


def _dataset_block(cases: Sequence[Mapping]) -> dict:
    return {"num_cases": len(cases), **_aggregate(cases)}


def summarize(per_case: Sequence[Mapping], nsd_tolerance_mm: float | None = None) -> dict:
    """Summary of entries `{"case_id", "dataset", "metrics": {class: {metric: value}}}`.

    Returns `metric_per_case`, `mean`/`std`/`count` per class, `foreground_mean`, `num_cases`,
    the same block per dataset under `per_dataset` (a class can be judged on several datasets),
    and `nsd_tolerance_mm` when given.
    """
    for i, case in enumerate(per_case):
        missing = [k for k in ("case_id", "dataset", "metrics") if k not in case]
        if missing:
            raise ValueError(f"per_case[{i}] lacks key(s) {', '.join(missing)}")
    datasets = _ordered_union([[case["dataset"]] for case in per_case])
    summary = {
        "num_cases": len(per_case),
        **_aggregate(per_case),
        "per_dataset": {ds: _dataset_block([c for c in per_case if c["dataset"] == ds]) for ds in datasets},
        "metric_per_case": [dict(case) for case in per_case],
    }
    if nsd_tolerance_mm is not None:
        summary["nsd_tolerance_mm"] = float(nsd_tolerance_mm)
    return summary


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


def _count(value: float | None) -> str:
    """Mean voxel count per case (FP, FN): where the errors are is the first thing to look at."""
    return "n/a" if value is None or math.isnan(value) else f"{value:,.0f}"


def _score_header(name: str, first: bool, tolerance: float | None) -> str:
    header = METRICS[name].summary_column
    if METRICS[name].uses_tolerance and tolerance is not None:
        header += f" @ {tolerance:g} mm"
    return header + (" (mean ± std)" if first else "")


def _markdown_table(block: Mapping, tolerance: float | None) -> list[str]:
    """One row per class: the registry's score metrics (the first with ± std), n, its count metrics."""
    scores, counts = summary_metrics("score"), summary_metrics("count")
    headers = ([_score_header(m, i == 0, tolerance) for i, m in enumerate(scores)] + ["n"]
               + [METRICS[m].summary_column for m in counts])
    lines = ["| class | " + " | ".join(headers) + " |", "|---|" + "---|" * len(headers)]
    for name, means in block["mean"].items():
        cells = [_fmt(means.get(m)) for m in scores]
        cells[0] += f" ± {_fmt(block['std'][name].get(scores[0]))}"
        cells += [str(block["count"][name]["n_cases"])] + [_count(means.get(m)) for m in counts]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    fg = block["foreground_mean"]
    blanks = " |" * (1 + len(counts))
    lines.append("| **foreground mean** | " + " | ".join(_fmt(fg.get(m)) for m in scores) + " |" + blanks)
    return lines


def summary_markdown(summary: Mapping) -> str:
    """The summary as Markdown: one table over all cases, then one per dataset if there are several."""
    tol = summary.get("nsd_tolerance_mm")
    lines = [
        "# Evaluation summary",
        "",
        f"{summary['num_cases']} case(s). Means ignore cases where a metric is undefined "
        "(Dice/IoU when the class is absent from both reference and prediction); n = cases judged; FP/FN voxels "
        "are means per case.",
        "",
        *_markdown_table(summary, tol),
    ]
    per_dataset = summary.get("per_dataset", {})
    if len(per_dataset) > 1:
        for name, block in per_dataset.items():
            lines += ["", f"## {name} ({block['num_cases']} case(s))", "", *_markdown_table(block, tol)]
    return "\n".join(lines) + "\n"


def write_summary(summary: Mapping, folder: str | Path) -> tuple[Path, Path]:
    """Write `summary.json` and `summary.md` into `folder` (atomically); return both paths."""
    folder = Path(folder)
    json_path, md_path = folder / "summary.json", folder / "summary.md"
    atomic_write_json(json_path, summary)
    atomic_write_text(md_path, summary_markdown(summary))
    return json_path, md_path
