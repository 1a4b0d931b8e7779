"""Pure aggregation of evaluation summaries into the benchmark's tables (no files, no models: testable by hand).

Inputs are summaries as `textnnunet.evaluation.summary.summarize` writes them (validation/summary.json, or a
test-set summary). Model names: "universal", "universal__<tag>" for ablations, "baseline <DatasetName>", and
"nnU-Net v2 <DatasetName>" for a genuine nnU-Net v2 model imported from its nnUNet_results folder.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

from textnnunet.evaluation.metrics import benchmark_metrics
from textnnunet.utils.plans import image_type_key, same_image_type

UNIVERSAL = "universal"
BASELINE_PREFIX = "baseline "
NNUNET_PREFIX = "nnU-Net v2 "


def baseline_name(dataset: str) -> str:
    return BASELINE_PREFIX + dataset


def is_baseline(model: str) -> bool:
    return model.startswith(BASELINE_PREFIX)


def nnunet_name(dataset: str) -> str:
    """The name of the genuine nnU-Net v2 model imported for `dataset`."""
    return NNUNET_PREFIX + dataset


def is_nnunet(model: str) -> bool:
    return model.startswith(NNUNET_PREFIX)


def is_ablation(model: str) -> bool:
    return model != UNIVERSAL and not is_baseline(model) and not is_nnunet(model)


def _num(value) -> float:
    return float("nan") if value is None else float(value)


def class_stats(block: Mapping, cls: str) -> dict:
    """Mean/std of each benchmark metric (`dice_mean`, `dice_std`, `nsd_mean`, ...) and the case count of one class
    in a summary block (a summary or per_dataset entry)."""
    mean, std = block["mean"].get(cls, {}), block["std"].get(cls, {})
    count = block.get("count", {}).get(cls, {})
    stats = {}
    for metric, key in benchmark_metrics():
        stats[f"{key}_mean"], stats[f"{key}_std"] = _num(mean.get(metric)), _num(std.get(metric))
    return {**stats, "n_cases": int(count.get("n_cases", 0))}


def per_dataset_stats(summary: Mapping) -> dict[str, dict[str, dict]]:
    """{dataset: {class: stats}} of one model's summary."""
    return {ds: {cls: class_stats(block, cls) for cls in block["mean"]}
            for ds, block in summary.get("per_dataset", {}).items()}


def validation_table(summaries: Mapping[str, Mapping]) -> dict[str, dict[str, dict[str, dict]]]:
    """{dataset: {class: {model: stats}}} from each model's validation summary.

    A model appears for the datasets and classes it was validated on: the universal model on every dataset of
    the plan, a baseline on its own dataset only.
    """
    table: dict[str, dict[str, dict[str, dict]]] = {}
    for model, summary in summaries.items():
        for ds, classes in per_dataset_stats(summary).items():
            for cls, stats in classes.items():
                table.setdefault(ds, {}).setdefault(cls, {})[model] = stats
    return table


def test_table(summaries: Mapping[str, Mapping]) -> dict[str, dict[str, dict]]:
    """{class: {model: stats}} on the test set (all its cases pooled; each model on the classes it covers)."""
    table: dict[str, dict[str, dict]] = {}
    for model, summary in summaries.items():
        for cls in summary["mean"]:
            table.setdefault(cls, {})[model] = class_stats(summary, cls)
    return table


def _diff(a: Mapping | None, b: Mapping | None, key: str) -> float:
    if a is None or b is None:
        return float("nan")
    return a[key] - b[key]


def metric_differences(ours: Mapping | None, theirs: Mapping | None) -> dict[str, float]:
    """{benchmark key: ours - theirs} for every benchmark metric (NaN where one side is missing)."""
    return {key: _diff(ours, theirs, f"{key}_mean") for _, key in benchmark_metrics()}


def validation_differences(table: Mapping, model: str = UNIVERSAL,
                           reference: Callable[[str], str] = baseline_name) -> dict[str, dict[str, dict]]:
    """`model` minus the dataset's reference model (its own baseline, or `reference(dataset)`), per dataset and
    class (every benchmark metric; NaN where one is missing)."""
    out: dict[str, dict[str, dict]] = {}
    for ds, classes in table.items():
        for cls, models in classes.items():
            ours, theirs = models.get(model), models.get(reference(ds))
            out.setdefault(ds, {})[cls] = metric_differences(ours, theirs)
    return out


def test_differences(table: Mapping, model: str = UNIVERSAL,
                     is_reference: Callable[[str], bool] = is_baseline) -> dict[str, dict]:
    """`model` minus the baseline (or other `is_reference` model) that covers each class (the first, if several
    do); NaN where none does. The key "baseline" names that reference model."""
    out = {}
    for cls, models in table.items():
        baselines = [m for m in models if is_reference(m)]
        theirs = models[baselines[0]] if baselines else None
        out[cls] = {"baseline": baselines[0] if baselines else None,
                    **metric_differences(models.get(model), theirs)}
    return out


def coverage(model_classes: Mapping[str, list[str]], wanted: list[str]) -> dict[str, list[str]]:
    """{class: [models that can segment it]} for every wanted class (an empty list: no model can)."""
    return {cls: [m for m, classes in model_classes.items() if cls in classes] for cls in wanted}


def cost_summary(models: Mapping[str, Mapping], wanted: list[str],
                 asked: Sequence[tuple[str, str]] = ()) -> dict[str, dict]:
    """What covering the wanted classes costs: one universal model vs one baseline per dataset.

    `models`: name -> {"classes": [...], "parameters": int, optionally "image_types": [...]}. Ablations are left out
    (they are variants of the universal model, not another way to cover the classes). Imported nnU-Net v2 models form
    a third group, "nnunet_v2", present only when there are any (parameters None where a checkpoint did not tell).
    `asked`: the (class, image type) pairs the test sets score; when they span more than one image type, what is
    covered is a class on an image type ("spleen (T2)"), by a model that has the class and was trained on that type
    (a CT baseline's spleen does not cover the T2 spleen); only pairs a test set scores are counted, so every one
    credited is measured in a test table.
    """
    groups = {"universal": [m for m in models if m == UNIVERSAL],
              "baselines": [m for m in models if is_baseline(m)]}
    if any(is_nnunet(m) for m in models):
        groups["nnunet_v2"] = [m for m in models if is_nnunet(m)]
    by_type = len({image_type_key(t) for _, t in asked}) > 1

    def covers(model: Mapping, item) -> bool:
        if not by_type:
            return item in model["classes"]
        cls, image_type = item
        return cls in model["classes"] and any(same_image_type(t, image_type) for t in model.get("image_types") or [])

    items = list(dict.fromkeys(asked)) if by_type else list(wanted)
    name = (lambda item: f"{item[0]} ({item[1]})") if by_type else (lambda item: item)
    out = {}
    for group, names in groups.items():
        covered = [i for i in items if any(covers(models[m], i) for m in names)]
        counts = [models[m]["parameters"] for m in names]
        out[group] = {"models": len(names), "parameters": None if None in counts else int(sum(counts)),
                      "classes_covered": [name(i) for i in covered],
                      "classes_missing": [name(i) for i in items if i not in covered]}
    return out


def budget_check(models: Mapping[str, Mapping]) -> dict:
    """Iterations each approach actually trained (read from the checkpoints) and whether they are equal."""
    universal = models.get(UNIVERSAL, {}).get("training", {}).get("iterations")
    baselines = [m["training"]["iterations"] for name, m in models.items() if is_baseline(name)]
    total = int(sum(baselines)) if baselines else None
    return {"universal_iterations": universal, "baselines_total_iterations": total,
            "equal": universal is not None and total is not None and int(universal) == total}


def finite(value: float) -> bool:
    return value is not None and not math.isnan(value)
