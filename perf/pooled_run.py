"""Demo-size runs that pool other phantom datasets than the demo's: CT + MR, left/right kidney labels, many datasets.

One named run = which phantom datasets train together, which test sets are predicted (with which --modality),
which prompts. Generates the data, plans and preprocesses (cpu preset), trains 3d_fullres fold 0 at the demo's budget,
predicts and evaluates every test set, and writes a JSON artefact (plan, validation and test Dice/FP/FN per class,
timings, command, versions, machine) to documentation/measurements/pooled_runs/<run>.json. Resumable: every step
resumes, and a run whose JSON exists is skipped. Runs that differ only in training (dataset sampling, an ablation)
share the data, plan and preprocessing of the run named by `data`.

The eight-dataset runs (issue 13, item 3; datasets in documentation/datasets.md, "Phantom datasets") also record the
number of classes K, each dataset's classes, the dataset sampling probabilities of fold 0, the training time per
iteration and the peak resident memory:

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python perf/pooled_run.py --work /tmp/pooled_work \
        -r eight_datasets eight_datasets_sqrt eight_datasets_proportional

    .venv/bin/python perf/pooled_run.py --work /tmp/pooled_work -r ct_mr
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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
    data: str = ""  # another run whose raw data, plan and preprocessing this one shares ("": its own)


# The eight-dataset pool (textnnunet.demo.phantoms.POOL_PHANTOM_DATASETS) and its test sets: every class is scored in
# the modality and contrast phase it is labelled in (prompts are the classes' canonical lexicon names).
EIGHT_TRAIN_IDS = (20, 21, 22, 23, 24, 25, 26, 27)
_MULTI_ORGAN = ("liver", "spleen", "left kidney", "right kidney", "pancreas", "stomach", "aorta", "inferior vena cava")
EIGHT_TESTS = (
    TestSet(28, ("liver", "liver tumor", "liver vessel", "spleen", "kidney", "kidney tumor", "pancreas", "stomach"),
            "CT"),
    TestSet(29, _MULTI_ORGAN, "CT"),
    TestSet(30, ("vertebral column", "ribs", "spinal cord", "left autochthon", "right autochthon", "left iliopsoas",
                 "right iliopsoas", "aorta", "inferior vena cava", "small bowel", "colon"), "CT"),
    TestSet(31, ("liver", "spleen", "left kidney", "right kidney"), "T1"),
    TestSet(14, ("liver", "spleen", "kidney"), "T2"),
)

# The CT+MR pool: three CT datasets (liver, spleen, kidney), a T1 liver and a T2 spleen + kidney dataset, and a test
# set per image type (every organ labelled).
CT_MR_TRAIN_IDS = (1, 2, 3, 11, 12)
CT_MR_TESTS = (TestSet(4, ("liver", "spleen", "kidney"), "CT"), TestSet(13, ("liver", "spleen", "kidney"), "T1"),
               TestSet(14, ("liver", "spleen", "kidney"), "T2"))

RUNS = {r.name: r for r in (
    PooledRun("ct_mr", "three CT datasets (liver, spleen, kidney) + T1 MR (liver) + T2 MR (spleen, kidney)",
              CT_MR_TRAIN_IDS, CT_MR_TESTS),
    PooledRun("ct_mr_modality", "ct_mr with prompts that name the image's modality (TrainingConfig.prompt_modality: "
              "'liver on CT', 'liver on T1-weighted MRI', ...; each test set predicted with its --modality)",
              CT_MR_TRAIN_IDS, CT_MR_TESTS, {"prompt_modality": True}, data="ct_mr"),
    PooledRun("ct_mr_mr2x", "ct_mr with the two MR datasets drawn twice as often as uniform sampling says "
              "(--dataset_weights 11=2 12=2): 2/7 of the batches each instead of 1/5",
              CT_MR_TRAIN_IDS, CT_MR_TESTS, {"dataset_weights": {"11": 2.0, "12": 2.0}},
              data="ct_mr"),
    PooledRun("ct_mr_dice05", "ct_mr with half the Dice term's weight in the loss (--dice_weight 0.5; issue 10's "
              "question whether the Dice term draws boundaries outwards, on the CT+MR pool)",
              CT_MR_TRAIN_IDS, CT_MR_TESTS, {"dice_weight": 0.5}, data="ct_mr"),
    PooledRun("ct_mr_no_region_shift", "ct_mr without the per-structure intensity offset (--augmentation "
              "nnunet_intensity): does the offset teach the T2 kidney's prompt that fat-bright voxels may be kidney",
              CT_MR_TRAIN_IDS, CT_MR_TESTS, {"augmentation": "nnunet_intensity"}, data="ct_mr"),
    PooledRun("ct_mr_dice05_4x", "ct_mr_dice05 at four times the demo's budget (200 x 25 iterations): does the T2 "
              "kidney's boundary move with budget (issue 13's bar)",
              CT_MR_TRAIN_IDS, CT_MR_TESTS, {"dice_weight": 0.5, "case_val_every": 50},
              epochs_factor=4, data="ct_mr"),
    PooledRun("ct_mr_4x", "ct_mr at four times the demo's budget (200 x 25 iterations), the default loss: issue 13's "
              "bar on the T2 organs with budget alone",
              CT_MR_TRAIN_IDS, CT_MR_TESTS, {"case_val_every": 50}, epochs_factor=4,
              data="ct_mr"),
    PooledRun("ct_mr_8x", "ct_mr at eight times the old demo's budget (400 x 25 iterations), the default loss: the T2 "
              "kidney rose from the demo's budget to 4x; does it reach issue 13's bar with budget alone",
              CT_MR_TRAIN_IDS, CT_MR_TESTS, {"case_val_every": 100}, epochs_factor=8,
              data="ct_mr"),
    PooledRun("ct_mr_long", "ct_mr at twice the demo's budget (100 x 25 iterations): five datasets share the batches",
              CT_MR_TRAIN_IDS, CT_MR_TESTS, epochs_factor=2),
    PooledRun("kidney_sides", "the demo's three CT datasets + a CT dataset labelling left and right kidney "
              "(without label exclusion, as measured before it became the default)",
              (1, 2, 3, 5),
              (TestSet(4, ("liver", "spleen", "kidney")), TestSet(5, ("kidney", "left kidney", "right kidney"))),
              {"label_exclusion": False}),
    PooledRun("kidney_sides_nohierarchy", "kidney_sides without the label hierarchy in the loss (the ablation)",
              (1, 2, 3, 5),
              (TestSet(4, ("liver", "spleen", "kidney")), TestSet(5, ("kidney", "left kidney", "right kidney"))),
              {"label_hierarchy": False}),
    PooledRun("kidney_sides_exclusion", "kidney_sides with label exclusion (the four-dataset check of its weighting)",
              (1, 2, 3, 5),
              (TestSet(4, ("liver", "spleen", "kidney")), TestSet(5, ("kidney", "left kidney", "right kidney"))),
              {"label_exclusion": True}),
    *(PooledRun(
        "eight_datasets" + ("" if weighting == "uniform" else f"_{weighting}"),
        f"eight partially labelled phantom datasets (Dataset020-027: CT portal-venous, arterial and non-contrast, T1 "
        f"and T2 MR; 5-40 cases; 21 classes), {weighting} dataset sampling, three times the demo's budget",
        # Whole-case checks every 25 epochs (6 in all): one check predicts 8 cases with 21 classes (~8 s each).
        EIGHT_TRAIN_IDS, EIGHT_TESTS, {"dataset_weighting": weighting, "case_val_every": 25}, epochs_factor=3,
        data="" if weighting == "uniform" else "eight_datasets")
      for weighting in ("uniform", "sqrt", "proportional")),
    PooledRun("eight_datasets_4x", "eight_datasets at four times its budget (600 x 25 iterations, 12x the old demo's): "
              "how far budget alone moves the small structures towards issue 13's bar",
              EIGHT_TRAIN_IDS, EIGHT_TESTS, {"dataset_weighting": "uniform", "case_val_every": 100}, epochs_factor=12,
              data="eight_datasets"),
)}


def data_folder_of(run_folder: Path) -> Path:
    """Where a pooled run's raw data and plan live: its own folder, or that of the run whose data it shares
    (PooledRun.data; both are subfolders of one --work). Its predictions stay in its own folder."""
    spec = RUNS.get(Path(run_folder).name)
    return Path(run_folder).parent / spec.data if spec is not None and spec.data else Path(run_folder)


def run(spec: PooledRun, work: Path, epochs: int, iters: int, seed: int | None = None) -> dict:
    from textnnunet.cli.evaluate import main as evaluate_main
    from textnnunet.cli.plan_and_preprocess import plan_and_preprocess_entry
    from textnnunet.cli.predict import main as predict_main
    from textnnunet.demo.phantoms import generate_phantom_datasets, phantom_spec
    from textnnunet.paths import joint_plans_name
    from textnnunet.training.config import TrainingConfig
    from textnnunet.training.run import train_fold

    root = work / spec.name
    data_root = work / (spec.data or spec.name)
    raw, pre, res = data_root / "raw", data_root / "preprocessed", root / "results"
    ids = sorted(set(spec.train_ids) | {t.dataset_id for t in spec.tests})
    timings = {}
    t = time.time()
    missing = [i for i in ids if not (raw / phantom_spec(i).name / "dataset.json").is_file()]
    if missing:
        generate_phantom_datasets(raw, size="default", seed=0, num_processes=1, datasets=missing, progress=True)
    timings["generate_s"] = time.time() - t
    t = time.time()
    _call(plan_and_preprocess_entry, ["-d", *map(str, spec.train_ids), "-np", "1", "-c", "3d_fullres",
                                      "--raw", str(raw), "--preprocessed", str(pre), "--no_baselines",
                                      "--verify_dataset_integrity"])
    timings["plan_and_preprocess_s"] = time.time() - t
    t = time.time()
    config = TrainingConfig(epochs=epochs, iters_per_epoch=iters,
                            **{"val_iters_per_epoch": 5, "case_val_every": 10, **spec.extra_train_args,
                               **({"seed": seed} if seed is not None else {})})
    plans_name = joint_plans_name(list(spec.train_ids))
    tag = config.model_tag("auto")
    fold = res / plans_name / ("3d_fullres" + (f"__{tag}" if tag else "")) / "fold_0"
    training_peak = None
    if not (fold / "checkpoint_final.pth").is_file():
        with PeakMemory() as peak:
            train_fold("3d_fullres", 0, config, raw=raw, preprocessed=pre, results=res,
                       dataset_ids=list(spec.train_ids), resume=(fold / "checkpoint_latest.pth").is_file())
        training_peak = peak.record()
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
    label_space = plans["label_space"]
    iterations = len(history["epoch_seconds"]) * iters
    return {
        "run": spec.name, "description": spec.description, "command": " ".join([sys.executable, *sys.argv]),
        "train_datasets": plans["datasets"],
        "intensity_groups": {k: v["datasets"] for k, v in plans.get("intensity_groups", {}).items()},
        "label_space": label_space,
        "num_classes": len(label_space["classes"]),
        "dataset_classes": {ds: list(classes) for ds, classes in label_space["datasets"].items()},
        "dataset_sampling": _sampling(pre / plans_name, config.dataset_weighting, config.dataset_weights),
        "plan_3d_fullres": {k: cfg.get(k) for k in ("spacing", "patch_size", "batch_size",
                                                     "patch_coverage_of_median_image", "context")},
        "training": {"epochs": epochs, "iters_per_epoch": iters, "seconds": float(sum(history["epoch_seconds"])),
                     # epoch time / training iterations: includes data loading and augmentation (in-process) and the
                     # epoch's val_iters_per_epoch (5) forward-only validation batches; not the whole-case checks.
                     "seconds_per_iteration": float(sum(history["epoch_seconds"])) / max(iterations, 1),
                     # the median epoch's: robust to a run that was paused or shared the cores for a while
                     "median_seconds_per_iteration": float(np.median(history["epoch_seconds"])) / max(iters, 1),
                     "peak_memory": training_peak,
                     # what the fold was trained with (mirroring, exclusion, augmentation, seed...), as saved with it
                     "config": json.loads((fold / "training_config.json").read_text()),
                     "whole_case_checks": history.get("whole_case", [])},
        "validation_fold0": _class_table(json.loads((fold / "validation" / "summary.json").read_text())),
        "tests": tests,
        "timings": {k: round(v, 1) for k, v in timings.items()},
        "versions": _versions(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        # Lifetime peak resident set of this process (getrusage; Linux reports KiB): generation, planning, training
        # with its validation, prediction, all in-process. training.peak_memory has the training's own peak.
        "peak_rss_mib_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


class PeakMemory:
    """Peak resident memory (this process + its children, e.g. data loader workers) sampled every 0.5 s while the
    block runs (here: training and its final validation of the fold's held-out cases)."""

    def __init__(self, interval_s: float = 0.5):
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _rss(self) -> int:
        import psutil

        me = psutil.Process()
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "PeakMemory":
        self.start_rss = self._rss()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def record(self) -> dict:
        mib = 1024 * 1024
        return {"peak_rss_mib": round(self.peak / mib, 1), "rss_before_mib": round(self.start_rss / mib, 1),
                "sampled_every_s": self.interval_s}


def _sampling(plan_folder: Path, weighting: str, multipliers: dict | None = None) -> dict:
    """Fold 0's training cases per dataset and the probability of drawing each dataset (TrainingConfig.dataset_weighting)."""
    from textnnunet.training.sampling import dataset_sampling_weights

    splits = json.loads((plan_folder / "splits_final.json").read_text())  # {dataset: [{"train", "val"} per fold]}
    counts = {dataset: len(folds[0]["train"]) for dataset, folds in splits.items()}
    weights = dataset_sampling_weights(counts, weighting, multipliers)
    return {"weighting": weighting, "multipliers": dict(multipliers or {}), "fold0_training_cases": counts,
            "probability": {ds: round(w, 4) for ds, w in weights.items()}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("-r", "--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    p.add_argument("--epochs", type=int, default=50,
                   help="the base the runs' epochs_factor multiplies: the demo's budget when they were defined (50 x 25; "
                        "the demo trains 150 since session 12, i.e. ct_mr_4x's 200 epochs are 4/3 of it)")
    p.add_argument("--iters_per_epoch", type=int, default=25)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--seed", type=int, default=None,
                   help="training seed (default: TrainingConfig's); give each seed its own --work and --out")
    args = p.parse_args()
    _versions()  # the code this process runs (recorded as at its start)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.runs:
        target = args.out / f"{name}.json"
        if target.is_file():
            print(f"{name}: {target} exists, skipped")
            continue
        record = run(RUNS[name], args.work.resolve(), args.epochs * RUNS[name].epochs_factor, args.iters_per_epoch,
                     args.seed)
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(target)
        print(f"== {name}: " + json.dumps({ds: {c: round(v["Dice"], 3) for c, v in t["classes"].items()}
                                           for ds, t in record["tests"].items()}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
