"""Matrix rows judged the way an nnU-Net user finishes a model: postprocessing decided on cross-validation.

For each row of a generalization-matrix work folder (trained by perf/generalization_matrix.py, fold 0 only):
1. the fold's validation is re-run with its probabilities (`textnnunet_train 3d_fullres 0 --val --npz`; skipped when
   they exist; the masks and summary it writes are those of the training's own validation, the model being fixed);
2. `textnnunet_find_best_configuration -c 3d_fullres -f 0` decides the postprocessing on those validation cases
   (per-class probability thresholds, each moved only for a Dice gain beyond the cases' noise; largest component
   and a tumour inside its organ, each adopted only where it raises the class's mean validation Dice);
3. the test set is predicted again with that postprocessing.json (`textnnunet_predict --postprocessing`, the row's
   own prompts and mirroring) and evaluated.
Writes `<out>/<row>_postprocessing.json`: the decided rules, the validation Dice behind them (best_configuration.json),
the test Dice/FP/FN per class with the postprocessing and, from the row's matrix JSON, without it; command, versions,
machine. The test set plays no part in any decision.

    OMP_NUM_THREADS=1 .venv/bin/python perf/matrix_postprocessing.py --work /work/m11/s12345 -v clinical \
        --matrix_json documentation/measurements/generalization_matrix/session11_150ep \
        --out documentation/measurements/generalization_matrix/session11_150ep

Validation probabilities are about 0.2 GB per clinical-size case; --drop_probabilities deletes them afterwards.
The decision is written into the model folder (postprocessing.json, best_configuration.json) as
find_best_configuration writes it; a run with another --threshold_min_gain_se replaces it there (each output JSON
keeps the rules it used).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _artefact import git_state, machine, package_versions  # noqa: E402
from generalization_matrix import ORGANS, PLAN_ROWS, PROMPTS, _call, _class_table  # noqa: E402

from textnnunet.utils.files import atomic_write_json  # noqa: E402

PLANS_NAME = "TextPlans_001_002_003"
TRAIN_IDS = ["1", "2", "3"]


def validation_probabilities_complete(fold: Path) -> bool:
    """Every validation case of the fold has its `<case>_probabilities.npz` beside its masks."""
    from textnnunet.evaluation.best_configuration import collect_validation

    return collect_validation(fold.parent, [fold.name.removeprefix("fold_")]).has_probabilities()


def checkpoint_identity(fold: Path, recorded_training: dict) -> dict:
    """The fold's final checkpoint (path, epochs, summed epoch seconds), refused unless its training seconds are
    those the compared JSON recorded: the numbers with and without postprocessing must come from one model."""
    import torch

    history = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)["history"]
    seconds = float(sum(history["epoch_seconds"]))
    if abs(seconds - float(recorded_training["seconds"])) > 1e-6:
        raise SystemExit(f"{fold}: its checkpoint trained {seconds:.1f} s, the compared JSON records "
                         f"{recorded_training['seconds']:.1f} s: not the same model")
    return {"path": str(fold / "checkpoint_final.pth"), "epochs": len(history["epoch_seconds"]),
            "training_seconds": seconds}


def run_row(row: str, work: Path, matrix_json: Path, out: Path, drop_probabilities: bool,
            threshold_min_gain_se: float | None = None, suffix: str = "") -> dict:
    from textnnunet.cli.evaluate import main as evaluate_main
    from textnnunet.cli.find_best_configuration import main as best_main
    from textnnunet.cli.predict import main as predict_main
    from textnnunet.cli.train import main as train_main

    data_name = PLAN_ROWS.get(row, (row, []))[0]
    raw, pre, res = work / data_name / "raw", work / row / "preprocessed", work / row / "results"
    model = res / PLANS_NAME / "3d_fullres"
    fold = model / "fold_0"
    folders = ["--raw", str(raw), "--preprocessed", str(pre), "--results", str(res)]
    timings = {}
    t = time.time()
    if not validation_probabilities_complete(fold):
        _call(train_main, ["3d_fullres", "0", "-d", *TRAIN_IDS, "--val", "--npz", "--quiet", *folders])
    timings["validation_with_probabilities_s"] = time.time() - t

    t = time.time()
    bar = [] if threshold_min_gain_se is None else ["--threshold_min_gain_se", str(threshold_min_gain_se)]
    _call(best_main, ["-d", *TRAIN_IDS, "-c", "3d_fullres", "-f", "0", "--disable_ensembling", *bar, *folders])
    timings["find_best_configuration_s"] = time.time() - t
    best = json.loads((res / PLANS_NAME / "best_configuration.json").read_text())
    rules_file = model / "postprocessing.json"
    rules = json.loads(rules_file.read_text())

    matrix = json.loads((matrix_json / f"{row}.json").read_text())
    checkpoint = checkpoint_identity(fold, matrix["training"])
    t = time.time()
    predictions = work / row / f"predictions_Dataset004_postprocessed{suffix}"
    if predictions.is_dir():  # this script's own output, made with rules that may since have changed
        shutil.rmtree(predictions)
    _call(predict_main, ["-i", str(raw / "Dataset004_Abdomen" / "imagesTs"), "-o", str(predictions), "-p", *PROMPTS,
                         "-m", str(model), "-f", "0", "--postprocessing", str(rules_file),
                         *([] if matrix.get("test_time_augmentation", True) else ["--disable_tta"])])
    timings["predict_s"] = time.time() - t
    _call(evaluate_main, ["-ref", str(raw / "Dataset004_Abdomen" / "labelsTs"), "-pred", str(predictions),
                          "-djfile", str(raw / "Dataset004_Abdomen" / "dataset.json"), "--partial"])
    test = _class_table(json.loads((predictions / "summary.json").read_text()))
    if drop_probabilities:
        for p in (fold / "validation").glob("*/*_probabilities.npz"):
            p.unlink()
    return {
        "what": f"matrix row {row}: postprocessing decided by textnnunet_find_best_configuration on the fold-0 "
                "validation cases, applied to the test set; the test set decides nothing",
        "row": row, "work": str(work), "matrix_json": str(matrix_json / f"{row}.json"), "checkpoint": checkpoint,
        "postprocessing": rules, "best_configuration": best,
        "test_Dataset004_postprocessed": test,
        "test_Dataset004_raw": matrix["test_Dataset004"],
        "liver_spleen_kidney": {c: {"Dice_raw": matrix["test_Dataset004"][c]["Dice"], "Dice_postprocessed": test[c]["Dice"],
                                    "FP_over_FN_raw": matrix["test_Dataset004"][c]["FP"] / max(matrix["test_Dataset004"][c]["FN"], 1),
                                    "FP_over_FN_postprocessed": test[c]["FP"] / max(test[c]["FN"], 1)}
                                for c in ORGANS},
        "timings": {k: round(v, 1) for k, v in timings.items()},
        "command": " ".join([sys.executable, *sys.argv]), "versions": package_versions(), "machine": machine(),
        "git": git_state(),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True, help="the matrix work folder (WORK/<row>/...)")
    p.add_argument("-v", "--rows", nargs="+", required=True)
    p.add_argument("--matrix_json", type=Path, required=True, help="the folder of the rows' matrix JSON (no postprocessing)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--force", action="store_true", help="redo rows whose output exists")
    p.add_argument("--drop_probabilities", action="store_true", help="delete the validation probabilities afterwards")
    p.add_argument("--threshold_min_gain_se", type=float, default=None,
                   help="find_best_configuration's bar for moving a threshold (default: its own)")
    p.add_argument("--suffix", default="", help="output <row>_postprocessing<suffix>.json (another bar, say)")
    args = p.parse_args()
    postprocess_rows(args.rows, args.work.resolve(), args.matrix_json, args.out, args.force, args.drop_probabilities,
                     args.threshold_min_gain_se, args.suffix)
    return 0


def postprocess_rows(rows: list[str], work: Path, matrix_json: Path, out: Path, force: bool = False,
                     drop_probabilities: bool = False, threshold_min_gain_se: float | None = None, suffix: str = "",
                     redo: set[str] = frozenset()) -> None:
    """`run_row` for each row into <out>/<row>_postprocessing<suffix>.json; a row whose output exists is skipped
    unless `force` or the row is in `redo` (its matrix JSON was just rewritten)."""
    for row in rows:
        target = out / f"{row}_postprocessing{suffix}.json"
        if target.is_file() and not force and row not in redo:
            print(f"{row}: {target} exists, skipped")
            continue
        record = run_row(row, work, matrix_json, out, drop_probabilities, threshold_min_gain_se, suffix)
        atomic_write_json(target, record, indent=1)
        print(row, record["postprocessing"], {c: {k: round(v, 3) for k, v in x.items()}
                                              for c, x in record["liver_spleen_kidney"].items()}, flush=True)


if __name__ == "__main__":
    sys.exit(main())
