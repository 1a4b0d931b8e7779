"""The generalization matrix (issue 10): the demo's commands on phantom data shaped otherwise than the demo's.

For each variant of textnnunet.demo.phantom_variants (and the demo data itself): generate the four datasets,
plan and preprocess datasets 1 2 3 with the default (cpu) preset, train 3d_fullres fold 0 at the demo's budget
(150 x 25 iterations),
predict the fully labelled Dataset004 test cases with five prompts and evaluate them. Writes one JSON artefact per
variant (plan, validation and test Dice/FP/FN per class, whole-case checks during training, timings, command,
versions, machine) and an FP/FN overlay PNG to documentation/measurements/generalization_matrix/; then, as the demo
does, decides postprocessing on fold 0's validation and predicts the test set with it (<variant>_postprocessing.json,
perf/matrix_postprocessing.py; --no_postprocessing skips it).

Resumable: a variant whose JSON exists is skipped (--force redoes the evaluation); every step resumes where it
stopped (generation, preprocessing and training all resume).

    .venv/bin/python perf/generalization_matrix.py --work /tmp/matrix_work            # every variant
    .venv/bin/python perf/generalization_matrix.py --work /tmp/matrix_work -v clinical

On a GPU machine, the same row with nnU-Net's GPU plan (`--preset gpu`), more processes and background augmentation
(records the device, its peak memory and the plan; use another --out):

    python perf/generalization_matrix.py --work /tmp/w -v clinical --preset gpu -np 16 --num_workers 12 \
        --epochs 4 --iters_per_epoch 50 --out gpu_out
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "perf"))
OUT = REPO / "documentation" / "measurements" / "generalization_matrix"
PROMPTS = ["liver", "spleen", "kidney", "liver tumor", "kidney tumor"]
ORGANS = ["liver", "spleen", "kidney"]
ORGAN_VALUES = {"liver": [1, 2], "spleen": [3], "kidney": [4, 5]}  # Dataset004's label values
# Seeds no default was tuned on: the matrix's data differ from the demo's (seed 0) in anatomy draws as well.
SEEDS = {"demo": 0, "clinical": 101, "partial_fov": 102, "orientation": 103, "noncontrast_noisy": 104,
         "noncontrast_uniform": 105}
# Rows that plan a variant's data otherwise: the "before" of the context-first rule (nnU-Net's rule at 80 MB).
# At the native 0.8 mm grid a keyhole patch needs ~1000 windows per test case: this row skips the whole-case checks
# and the fold validation (hours on 2 cores) and predicts the test set without mirroring.
PLAN_ROWS = {"clinical_keyhole": ("clinical", ["--min_context_fraction", "0"])}
CHEAP_ROWS = {"clinical_keyhole"}
SEEDS["clinical_keyhole"] = SEEDS["clinical"]


def _call(entry, argv: list[str]) -> None:
    try:
        entry(argv)
    except SystemExit as e:
        if e.code not in (0, None):
            raise RuntimeError(f"{entry.__module__} {' '.join(argv)} exited with {e.code}") from None


def run_variant(name: str, work: Path, epochs: int, iters: int, case_val_every: int,
                overrides: dict | None = None, preset: str = "cpu", num_processes: int = 2,
                encoder: str = "auto") -> dict:
    """One row; `overrides`: TrainingConfig fields other than the defaults (--no_label_exclusion, --augmentation,
    --seed, --device, --num_workers), recorded in the row's JSON; `preset`: the planning preset (the matrix's is the
    CPU one); `encoder`: the text encoder kind (auto = MiniLM here)."""
    from textnnunet.cli.evaluate import main as evaluate_main
    from textnnunet.cli.plan_and_preprocess import plan_and_preprocess_entry
    from textnnunet.cli.predict import main as predict_main
    from textnnunet.demo.phantoms import generate_phantom_datasets
    from textnnunet.training.config import TrainingConfig
    from textnnunet.training.run import train_fold

    data_name, plan_args = PLAN_ROWS.get(name, (name, []))
    raw, pre, res = work / data_name / "raw", work / name / "preprocessed", work / name / "results"
    timings = {}
    t = time.time()
    if not (raw / "Dataset004_Abdomen" / "dataset.json").is_file():
        variant = "" if data_name == "demo" else data_name
        generate_phantom_datasets(raw, size="default", seed=SEEDS[name], num_processes=num_processes, variant=variant,
                                  progress=True)
    timings["generate_s"] = time.time() - t

    t = time.time()
    _call(plan_and_preprocess_entry, ["-d", "1", "2", "3", "-np", str(num_processes), "-c", "3d_fullres",
                                      "--raw", str(raw), "--preprocessed", str(pre), "--no_baselines",
                                      "--preset", preset, *plan_args])
    timings["plan_and_preprocess_s"] = time.time() - t

    t = time.time()
    cheap = name in CHEAP_ROWS
    config = TrainingConfig(epochs=epochs, iters_per_epoch=iters, val_iters_per_epoch=5,
                            case_val_every=0 if cheap else case_val_every, **(overrides or {}))
    fold = res / "TextPlans_001_002_003" / "3d_fullres" / "fold_0"
    if not (fold / "checkpoint_final.pth").is_file():
        train_fold("3d_fullres", 0, config, raw=raw, preprocessed=pre, results=res, dataset_ids=[1, 2, 3],
                   resume=(fold / "checkpoint_latest.pth").is_file(), validate=not cheap, encoder=encoder,
                   model_tag="",  # one model per work folder: keep the default folder name whatever the options
                   save_probabilities=not cheap)  # --npz: the postprocessing step decides thresholds on them
    timings["train_and_validate_s"] = time.time() - t

    t = time.time()
    out = work / name / "predictions_Dataset004"
    _call(predict_main, ["-i", str(raw / "Dataset004_Abdomen" / "imagesTs"), "-o", str(out), "-p", *PROMPTS,
                         "-m", str(fold.parent), "-f", "0", "--continue", "-npp", str(max(1, num_processes // 2)),
                         "-nps", str(max(1, num_processes // 2)), "--device", config.device,
                         *(["--disable_tta"] if cheap else [])])
    timings["predict_s"] = time.time() - t
    _call(evaluate_main, ["-ref", str(raw / "Dataset004_Abdomen" / "labelsTs"), "-pred", str(out),
                          "-djfile", str(raw / "Dataset004_Abdomen" / "dataset.json"), "--partial"])
    record = _record(name, raw, pre, fold, out, timings, config)
    record["preset"], record["encoder"] = preset, encoder
    return record


def _class_table(summary: dict) -> dict:
    return {c: {k: summary["mean"][c].get(k) for k in ("Dice", "NSD", "FP", "FN")} for c in summary["mean"]}


def _record(name: str, raw: Path, pre: Path, fold: Path, out: Path, timings: dict, config) -> dict:
    import torch

    plans = json.loads((pre / "TextPlans_001_002_003" / "plans.json").read_text())
    cfg = plans["configurations"]["3d_fullres"]
    history = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)["history"]
    summary = fold / "validation" / "summary.json"
    validation = json.loads(summary.read_text()) if summary.is_file() else None
    test = json.loads((out / "summary.json").read_text())
    shapes = {}
    for ds in ("Dataset001_Liver", "Dataset002_Spleen", "Dataset003_Kidney", "Dataset004_Abdomen"):
        meta = json.loads((raw / ds / "dataset.json").read_text())
        fp = json.loads((pre / ds / "dataset_fingerprint.json").read_text()) if (pre / ds).is_dir() else None
        shapes[ds] = {"description": meta["description"],
                      "median_spacing": np.median(fp["spacings"], axis=0).round(3).tolist() if fp else None,
                      "median_shape": np.median(fp["shapes_after_crop"], axis=0).tolist() if fp else None}
    return {
        "variant": name,
        "data": PLAN_ROWS.get(name, (name, []))[0],
        "plan_arguments": PLAN_ROWS.get(name, (name, []))[1],
        "command": " ".join([sys.executable, *sys.argv]),
        "seed": SEEDS[name],
        "datasets": shapes,
        "plan_3d_fullres": {k: cfg.get(k) for k in ("spacing", "patch_size", "batch_size",
                                                     "median_image_size_in_voxels",
                                                     "patch_coverage_of_median_image", "context")},
        "training": {"epochs": config.epochs, "iters_per_epoch": config.iters_per_epoch,
                     "label_exclusion": config.label_exclusion, "augmentation": config.augmentation,
                     "training_seed": config.seed,
                     "region_shift_sigma": config.region_shift_sigma,
                     "dice_weight": config.dice_weight,
                     "mirror_axes": config.resolved_mirror_axes(len(cfg["patch_size"])),
                     "seconds": float(sum(history["epoch_seconds"])),
                     "median_epoch_seconds": float(np.median(history["epoch_seconds"])),
                     **({"median_seconds_waiting_for_batches": float(np.median(history["data_wait_seconds"]))}
                        if history.get("data_wait_seconds") else {}),
                     "device": config.device, "num_workers": config.num_workers,
                     "final_pseudo_dice": history["pseudo_dice"][-1], "whole_case_checks": history.get("whole_case", [])},
        "validation_fold0": _class_table(validation) if validation else "not run (CHEAP_ROWS)",
        "test_time_augmentation": name not in CHEAP_ROWS,
        "test_Dataset004": _class_table(test),
        "timings": {k: round(v, 1) for k, v in timings.items()},
        "versions": _versions(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), **_gpu()},
    }


def _gpu() -> dict:
    """The GPU and the peak memory PyTorch allocated on it in this process (training, validation, prediction)."""
    import torch

    if not torch.cuda.is_available():
        return {}
    return {"gpu": torch.cuda.get_device_name(0), "cuda": torch.version.cuda,
            "gpu_peak_allocated_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


_VERSIONS_AT_START: dict | None = None


def _versions() -> dict:
    """The versions and git state when the process started (first call; main() calls it first): a run that spans
    later commits records the code it ran, not the commit that happens to be checked out when it ends."""
    global _VERSIONS_AT_START
    if _VERSIONS_AT_START is None:
        _VERSIONS_AT_START = _read_versions()
    return _VERSIONS_AT_START


def _read_versions() -> dict:
    import SimpleITK
    import torch

    import textnnunet
    from _artefact import git_state

    state = git_state(("textnnunet",))
    return {"textnnunet": textnnunet.__version__, "git_commit": state["commit"],
            "uncommitted_changes": bool(state["dirty_files"]), "torch": torch.__version__, "numpy": np.__version__,
            "SimpleITK": SimpleITK.Version_VersionString(), "python": platform.python_version()}


def error_overlay(name: str, work: Path, path: Path) -> None:
    """FP (red) and FN (blue) of each organ on two axial slices of the first test case: where the organ is largest
    (top row) and where its false positives are most (bottom row; they may lie far from the organ)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from textnnunet.imageio.sitk_io import read_image, read_label, to_canonical

    raw = work / PLAN_ROWS.get(name, (name, []))[0] / "raw" / "Dataset004_Abdomen"
    out = work / name / "predictions_Dataset004"
    case = sorted(p.name[: -len("_0000.nii.gz")] for p in (raw / "imagesTs").glob("*_0000.nii.gz"))[0]
    image, geometry = read_image([raw / "imagesTs" / f"{case}_0000.nii.gz"])
    image = to_canonical(image, geometry)[0][0]
    labels = to_canonical(read_label(raw / "labelsTs" / f"{case}.nii.gz")[0][None], geometry)[0][0]
    meta = json.loads((raw / "dataset.json").read_text())["labels"]
    fig, axes = plt.subplots(2, len(ORGANS), figsize=(5 * len(ORGANS), 10))
    for col, organ in enumerate(ORGANS):
        values = meta[organ] if isinstance(meta[organ], list) else [meta[organ]]
        ref = np.isin(labels, values)
        pred = to_canonical(read_label(out / f"{case}_{organ}.nii.gz")[0][None].astype(np.uint8), geometry)[0][0] > 0
        fp, fn = pred & ~ref, ~pred & ref
        slices = {"organ largest": int(np.argmax(ref.sum(axis=(1, 2)))),
                  "most FP": int(np.argmax(fp.sum(axis=(1, 2))))}
        for row, (why, z) in enumerate(slices.items()):
            ax = axes[row, col]
            ax.imshow(np.clip(image[z], -200, 300), cmap="gray")
            rgba = np.zeros((*ref.shape[1:], 4))
            rgba[pred[z] & ref[z]] = (0, 1, 0, 0.25)
            rgba[fp[z]] = (1, 0, 0, 0.8)
            rgba[fn[z]] = (0, 0.3, 1, 0.8)
            ax.imshow(rgba)
            ax.set_title(f"{organ}: FP {int(fp.sum())} (red), FN {int(fn.sum())} (blue)\n"
                         f"slice {z} of {ref.shape[0]} ({why}; here FP {int(fp[z].sum())}, FN {int(fn[z].sum())})")
            ax.axis("off")
    fig.suptitle(f"{name}: {case} (green = TP), canonical LPS, axial")
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


def report(out: Path) -> str:
    """The matrix as Markdown from the JSON artefacts (what results.md quotes)."""
    rows = ["| variant | median spacing (mm) | plan spacing (mm) | patch | covers | test Dice liver / spleen / kidney "
            "| test FP/FN liver / spleen / kidney | val Dice liver / spleen / kidney | train min |",
            "|---|---|---|---|---|---|---|---|---|"]
    rows_of = [p for p in out.glob("*.json") if p.stem in SEEDS]  # not the analyses beside them (*_fp_on_anatomy)
    for path in sorted(rows_of, key=lambda p: list(SEEDS).index(p.stem)):
        r = json.loads(path.read_text())
        plan = r["plan_3d_fullres"]
        median = (plan.get("context") or {}).get("median_spacing", plan["spacing"])
        fmt = lambda v: " x ".join(f"{x:.2f}" for x in v)  # noqa: E731
        test, val = r["test_Dataset004"], r["validation_fold0"]
        val_dice = (" / ".join(f"{val[c]['Dice']:.3f}" for c in ORGANS) if isinstance(val, dict) else "not run")
        ratio = " / ".join(f"{test[c]['FP'] / max(test[c]['FN'], 1):.2f}" for c in ORGANS)
        rows.append(f"| {r['variant']} | {fmt(median)} | {fmt(plan['spacing'])} | "
                    f"{' x '.join(map(str, plan['patch_size']))} | "
                    f"{' / '.join(f'{c:.0%}' for c in plan['patch_coverage_of_median_image'])} | "
                    + " / ".join(f"{test[c]['Dice']:.3f}" for c in ORGANS) + f" | {ratio} | {val_dice}"
                    + f" | {r['training']['seconds'] / 60:.1f} |")
    return "\n".join(rows)


def _config_overrides(args: argparse.Namespace) -> dict:
    overrides = {"label_exclusion": False} if args.no_label_exclusion else {}
    if args.augmentation:
        overrides["augmentation"] = args.augmentation
    if args.region_shift_sigma is not None:
        overrides["region_shift_sigma"] = args.region_shift_sigma
    if args.dice_weight is not None:
        overrides["dice_weight"] = args.dice_weight
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.mirror_axes is not None:
        overrides["mirror_axes"] = args.mirror_axes
    if args.device != "auto":
        overrides["device"] = args.device
    if args.num_workers:
        overrides["num_workers"] = args.num_workers
    return overrides


def main() -> int:
    from textnnunet.demo.phantom_variants import VARIANTS

    _versions()  # the code this process runs
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=None, help="folder for the variants' raw/preprocessed/results")
    p.add_argument("-v", "--variants", nargs="+", default=[*VARIANTS, *PLAN_ROWS, "demo"])
    p.add_argument("--epochs", type=int, default=150,
                   help="the demo's budget (150 x 25 since session 12; the matrix's rows before it: 50)")
    p.add_argument("--iters_per_epoch", type=int, default=25)
    p.add_argument("--case_val_every", type=int, default=10)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--force", action="store_true", help="re-evaluate variants whose JSON exists")
    p.add_argument("--augmentation", default=None, help="an augmentation preset other than the default")
    p.add_argument("--dice_weight", type=float, default=None,
                   help="weight of the soft Dice term next to BCE (TrainingConfig.dice_weight; 0: BCE only)")
    p.add_argument("--region_shift_sigma", type=float, default=None,
                   help="sd of nnunet_regions' per-structure offset other than the preset's")
    p.add_argument("--seed", type=int, default=None, help="training seed (default: TrainingConfig's; use another --out)")
    p.add_argument("--mirror_axes", type=int, nargs="*", default=None,
                   help="patch axes mirrored in training and TTA (none given: no mirroring; default: the config's)")
    p.add_argument("--no_label_exclusion", action="store_true",
                   help="train with --no_label_exclusion (the default before session 5; use another --out)")
    p.add_argument("--preset", choices=("cpu", "gpu"), default="cpu",
                   help="planning preset (the matrix's: cpu; gpu = nnU-Net's budget; use another --out)")
    p.add_argument("-np", "--num_processes", type=int, default=2, help="generation, preprocessing and export processes")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--num_workers", type=int, default=0, help="background augmentation workers")
    p.add_argument("--encoder", default="auto", help="text encoder kind (auto: MiniLM without local CLIP weights)")
    p.add_argument("--no_postprocessing", action="store_true",
                   help="skip deciding postprocessing on fold 0's validation and predicting the test set with it")
    p.add_argument("--report", action="store_true", help="print the Markdown table of the existing artefacts, run nothing")
    args = p.parse_args()
    if args.report:
        print(report(args.out))
        return 0
    if args.work is None:
        p.error("--work is required to run variants")
    args.out.mkdir(parents=True, exist_ok=True)
    evaluated: set[str] = set()
    for name in args.variants:
        target = args.out / f"{name}.json"
        if target.is_file() and not args.force:
            print(f"{name}: {target} exists, skipped")
            continue
        record = run_variant(name, args.work.resolve(), args.epochs, args.iters_per_epoch, args.case_val_every,
                             _config_overrides(args), args.preset, args.num_processes, args.encoder)
        error_overlay(name, args.work.resolve(), args.out / f"{name}_errors.png")
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(target)
        evaluated.add(name)
        organs = {c: round(record["test_Dataset004"][c]["Dice"], 3) for c in ORGANS}
        print(f"== {name}: test Dice {organs}; plan spacing {record['plan_3d_fullres']['spacing']}", flush=True)
    if not args.no_postprocessing:  # each row finished as the demo finishes (perf/matrix_postprocessing.py)
        from matrix_postprocessing import postprocess_rows

        postprocess_rows([v for v in args.variants if v not in CHEAP_ROWS], args.work.resolve(), args.out, args.out,
                         args.force, redo=evaluated)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
