"""Demo-size runs that pool other phantom datasets than the demo's: CT + MR, left/right kidney labels, many datasets.

One named run = which phantom datasets train together, which test sets are predicted (with which --modality),
which prompts. Generates the data, plans and preprocesses (cpu preset), trains 3d_fullres fold 0 at the demo's budget,
predicts and evaluates every test set, and writes a JSON artefact (plan, validation and test Dice/FP/FN per class,
timings, command, versions, machine) to documentation/measurements/pooled_runs/<run>.json. Resumable: every step
resumes, and a run whose JSON exists is skipped.

    .venv/bin/python perf/pooled_run.py --work /tmp/pooled_work -r ct_mr
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generalization_matrix import _call, _class_table, _versions  # noqa: E402  (one set of helpers for both)

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "documentation" / "measurements" / "pooled_runs"


@dataclass(frozen=True)
class TestSet:
    dataset_id: int
    prompts: tuple[str, ...]
    modality: str | None = None
    folder: str = "imagesTs"


@dataclass(frozen=True)
class PooledRun:
    name: str
    description: str
    train_ids: tuple[int, ...]
    tests: tuple[TestSet, ...]
    extra_train_args: dict = field(default_factory=dict)
    epochs_factor: int = 1  # times the budget's epochs


RUNS = {r.name: r for r in (
    PooledRun("ct_mr", "three CT datasets (liver, spleen, kidney) + T1 MR (liver) + T2 MR (spleen, kidney)",
              (1, 2, 3, 11, 12),
              (TestSet(4, ("liver", "spleen", "kidney"), "CT"), TestSet(13, ("liver", "spleen", "kidney"), "T1"),
               TestSet(14, ("liver", "spleen", "kidney"), "T2"))),
    PooledRun("ct_mr_long", "ct_mr at twice the demo's budget (100 x 25 iterations): five datasets share the batches",
              (1, 2, 3, 11, 12),
              (TestSet(4, ("liver", "spleen", "kidney"), "CT"), TestSet(13, ("liver", "spleen", "kidney"), "T1"),
               TestSet(14, ("liver", "spleen", "kidney"), "T2")), epochs_factor=2),
    PooledRun("kidney_sides", "the demo's three CT datasets + a CT dataset labelling left and right kidney",
              (1, 2, 3, 5),
              (TestSet(4, ("liver", "spleen", "kidney")), TestSet(5, ("kidney", "left kidney", "right kidney")))),
    PooledRun("kidney_sides_nohierarchy", "kidney_sides without the label hierarchy in the loss (the ablation)",
              (1, 2, 3, 5),
              (TestSet(4, ("liver", "spleen", "kidney")), TestSet(5, ("kidney", "left kidney", "right kidney"))),
              {"label_hierarchy": False}),
)}


def run(spec: PooledRun, work: Path, epochs: int, iters: int) -> dict:
    from textnnunet.cli.evaluate import main as evaluate_main
    from textnnunet.cli.plan_and_preprocess import plan_and_preprocess_entry
    from textnnunet.cli.predict import main as predict_main
    from textnnunet.demo.phantoms import generate_phantom_datasets, phantom_spec
    from textnnunet.paths import joint_plans_name
    from textnnunet.training.config import TrainingConfig
    from textnnunet.training.run import train_fold

    root = work / spec.name
    raw, pre, res = root / "raw", root / "preprocessed", root / "results"
    ids = sorted(set(spec.train_ids) | {t.dataset_id for t in spec.tests})
    timings = {}
    t = time.time()
    missing = [i for i in ids if not (raw / phantom_spec(i).name / "dataset.json").is_file()]
    if missing:
        generate_phantom_datasets(raw, size="default", seed=0, num_processes=1, datasets=missing, progress=True)
    timings["generate_s"] = time.time() - t
    t = time.time()
    _call(plan_and_preprocess_entry, ["-d", *map(str, spec.train_ids), "-np", "1", "-c", "3d_fullres",
                                      "--raw", str(raw), "--preprocessed", str(pre), "--no_baselines"])
    timings["plan_and_preprocess_s"] = time.time() - t
    t = time.time()
    config = TrainingConfig(epochs=epochs, iters_per_epoch=iters, val_iters_per_epoch=5, case_val_every=10,
                            **spec.extra_train_args)
    plans_name = joint_plans_name(list(spec.train_ids))
    tag = config.model_tag("auto")
    fold = res / plans_name / ("3d_fullres" + (f"__{tag}" if tag else "")) / "fold_0"
    if not (fold / "checkpoint_final.pth").is_file():
        train_fold("3d_fullres", 0, config, raw=raw, preprocessed=pre, results=res, dataset_ids=list(spec.train_ids),
                   resume=(fold / "checkpoint_latest.pth").is_file())
    timings["train_and_validate_s"] = time.time() - t
    tests = {}
    for test in spec.tests:
        name = phantom_spec(test.dataset_id).name
        out = root / f"predictions_{name}"
        t = time.time()
        argv = ["-i", str(raw / name / test.folder), "-o", str(out), "-p", *test.prompts, "-m", str(fold.parent),
                "-f", "0", "--continue"]
        _call(predict_main, argv + (["--modality", test.modality] if test.modality else []))
        timings[f"predict_{name}_s"] = time.time() - t
        _call(evaluate_main, ["-ref", str(raw / name / "labelsTs"), "-pred", str(out), "-djfile",
                              str(raw / name / "dataset.json"), "--partial"])
        tests[name] = {"modality": test.modality, "prompts": list(test.prompts),
                       "classes": _class_table(json.loads((out / "summary.json").read_text()))}
    import torch

    plans = json.loads((pre / plans_name / "plans.json").read_text())
    history = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)["history"]
    cfg = plans["configurations"]["3d_fullres"]
    return {
        "run": spec.name, "description": spec.description, "command": " ".join([sys.executable, *sys.argv]),
        "train_datasets": plans["datasets"],
        "intensity_groups": {k: v["datasets"] for k, v in plans.get("intensity_groups", {}).items()},
        "label_space": plans["label_space"],
        "plan_3d_fullres": {k: cfg.get(k) for k in ("spacing", "patch_size", "batch_size",
                                                     "patch_coverage_of_median_image", "context")},
        "training": {"epochs": epochs, "iters_per_epoch": iters, "seconds": float(sum(history["epoch_seconds"])),
                     "whole_case_checks": history.get("whole_case", [])},
        "validation_fold0": _class_table(json.loads((fold / "validation" / "summary.json").read_text())),
        "tests": tests,
        "timings": {k: round(v, 1) for k, v in timings.items()},
        "versions": _versions(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("-r", "--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--iters_per_epoch", type=int, default=25)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.runs:
        target = args.out / f"{name}.json"
        if target.is_file():
            print(f"{name}: {target} exists, skipped")
            continue
        record = run(RUNS[name], args.work.resolve(), args.epochs * RUNS[name].epochs_factor, args.iters_per_epoch)
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(target)
        print(f"== {name}: " + json.dumps({ds: {c: round(v["Dice"], 3) for c, v in t["classes"].items()}
                                           for ds, t in record["tests"].items()}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
