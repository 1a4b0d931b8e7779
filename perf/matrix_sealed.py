"""THE MATRIX'S SEALED TEST SET: each generalization-matrix row's finished model on a test set no decision has seen.

Each row's Dataset004 chose the demo's budget (session 12), so those test sets are development sets. This scores a
row's model (fold 0, with the postprocessing.json perf/matrix_postprocessing.py decided on its validation cases, as
the demo finishes) on Dataset019_MatrixSealed: Dataset004's anatomy and labels drawn with their own fixed seed
(textnnunet.demo.phantoms.MATRIX_SEALED_SEED), stored with the row's acquisition (`textnnunet_generate_phantoms
--variant ROW --sealed`; generated into the row's raw folder if missing). Issue 10's bar per organ (Dice >= 0.85, FP
< 2x FN) is recorded next to the figures.

**Rule: run it once, when issue 10 is judged; never choose anything by its numbers.** `--dataset 4` scores the
row's development test set through the same path instead (it must reproduce matrix_postprocessing.py's figures: the
check that this script is right, which looks at nothing sealed).

    OMP_NUM_THREADS=1 .venv/bin/python perf/matrix_sealed.py --work /work/m11/s12345 -v clinical \
        --postprocessing_json documentation/measurements/generalization_matrix/session11_150ep \
        --out documentation/measurements/generalization_matrix/sealed
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
from derived_figures import DICE_BAR, FP_OVER_FN_BAR  # noqa: E402  (issue 10's bar, defined once)
from generalization_matrix import ORGANS, PLAN_ROWS, PROMPTS, SEEDS, _call, _class_table  # noqa: E402
from matrix_postprocessing import PLANS_NAME, checkpoint_identity  # noqa: E402

from textnnunet.utils.files import atomic_write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def organ_bar(classes: dict) -> dict:
    """Per organ: Dice, FP/FN and whether issue 10's bar holds (Dice >= 0.85 and FP < 2x FN)."""
    out = {}
    for organ in ORGANS:
        c = classes[organ]
        ratio = c["FP"] / max(c["FN"], 1)
        out[organ] = {"Dice": c["Dice"], "FP_over_FN": ratio, "passes": bool(c["Dice"] >= DICE_BAR
                                                                           and ratio < FP_OVER_FN_BAR)}
    return out


def score_row(row: str, work: Path, postprocessing_json: Path, dataset_id: int) -> dict:
    from textnnunet.cli.evaluate import main as evaluate_main
    from textnnunet.cli.predict import main as predict_main
    from textnnunet.demo.phantoms import generate_phantom_datasets, phantom_spec

    data_name = PLAN_ROWS.get(row, (row, []))[0]
    raw, model = work / data_name / "raw", work / row / "results" / PLANS_NAME / "3d_fullres"
    decided = json.loads((postprocessing_json / f"{row}_postprocessing.json").read_text())
    row_json = json.loads((REPO / decided["matrix_json"]).read_text())  # the row as trained (its TTA setting)
    checkpoint = checkpoint_identity(model / "fold_0", {"seconds": decided["checkpoint"]["training_seconds"]})
    # the rules the artefact recorded (the model folder's postprocessing.json may since hold another run's)
    rules = work / row / "postprocessing_as_recorded.json"
    atomic_write_json(rules, decided["postprocessing"])
    variant = "" if data_name == "demo" else data_name
    generate_phantom_datasets(raw, size="default", seed=SEEDS[data_name], datasets=[dataset_id], variant=variant,
                              progress=True)
    name = phantom_spec(dataset_id).name
    predictions = work / row / f"predictions_{name}_postprocessed"
    if predictions.is_dir():  # this script's own output, perhaps from other rules or another checkpoint
        shutil.rmtree(predictions)
    t = time.time()
    _call(predict_main, ["-i", str(raw / name / "imagesTs"), "-o", str(predictions), "-p", *PROMPTS, "-m", str(model),
                         "-f", "0", "--postprocessing", str(rules),
                         *([] if row_json.get("test_time_augmentation", True) else ["--disable_tta"])])
    seconds = time.time() - t
    _call(evaluate_main, ["-ref", str(raw / name / "labelsTs"), "-pred", str(predictions), "-djfile",
                          str(raw / name / "dataset.json"), "--partial"])
    classes = _class_table(json.loads((predictions / "summary.json").read_text()))
    return {"row": row, "test_set": name, "sealed": dataset_id == 19, "checkpoint": checkpoint,
            "postprocessing": decided["postprocessing"], "classes": classes, "organs": organ_bar(classes),
            "predict_s": round(seconds, 1), "command": " ".join([sys.executable, *sys.argv]),
            "versions": package_versions(), "machine": machine(), "git": git_state()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True, help="the matrix run's work folder")
    p.add_argument("-v", "--rows", nargs="+", required=True)
    p.add_argument("--postprocessing_json", type=Path, required=True,
                   help="folder of the rows' <row>_postprocessing.json (perf/matrix_postprocessing.py)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--dataset", type=int, choices=(19, 4), default=19,
                   help="19: the sealed set (once, when issue 10 is judged); 4: the development set, as a check")
    args = p.parse_args()
    for row in args.rows:
        record = score_row(row, args.work.resolve(), args.postprocessing_json, args.dataset)
        suffix = "sealed" if args.dataset == 19 else "dataset004_check"
        atomic_write_json(args.out / f"{row}_{suffix}.json", record, indent=1)
        print(row, {o: (round(v["Dice"], 3), round(v["FP_over_FN"], 2), v["passes"]) for o, v in record["organs"].items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
