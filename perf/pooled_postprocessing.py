"""A pooled run (perf/pooled_run.py) finished as the demo finishes: postprocessing decided on cross-validation.

The pooled-run counterpart of perf/matrix_postprocessing.py: fold 0's validation re-run with its probabilities
(skipped when they exist), `textnnunet_find_best_configuration -c <model> -f 0` on those validation cases (per-class
thresholds, each moved only for a Dice gain beyond the cases' noise; largest component and a tumour inside its organ,
each adopted only where it raises the class's validation Dice), then every test set of the run predicted again with that postprocessing.json (the run's prompts and
--modality) and evaluated. Writes `<out>/<name>_postprocessing.json`: the rules, the validation Dice behind them, each
test set's Dice/FP/FN per class with the postprocessing and, from the run's own JSON, without it. The test sets
decide nothing.

    OMP_NUM_THREADS=1 .venv/bin/python perf/pooled_postprocessing.py --run_folder /work/s10/ct_mr_4x_s1/ct_mr_4x \
        --run_json documentation/measurements/pooled_runs/session11/ct_mr_4x_seed1.json \
        --out documentation/measurements/pooled_runs/session12 --name ct_mr_4x_seed1
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
from generalization_matrix import _call, _class_table  # noqa: E402
from matrix_postprocessing import checkpoint_identity, validation_probabilities_complete  # noqa: E402
from pooled_run import RUNS, data_folder_of  # noqa: E402

from textnnunet.utils.files import atomic_write_json  # noqa: E402


def model_folder_of(run_folder: Path) -> Path:
    """The run's only 3d_fullres model folder (its name carries the run's tag, if any)."""
    found = sorted(p for plan in (run_folder / "results").iterdir() if plan.is_dir()
                   for p in plan.glob("3d_fullres*") if (p / "fold_0" / "checkpoint_final.pth").is_file())
    if len(found) != 1:
        raise SystemExit(f"{run_folder}: expected one trained 3d_fullres fold 0, found {[str(p) for p in found]}")
    return found[0]


def run_pooled(run_folder: Path, run_json: Path, drop_probabilities: bool) -> dict:
    from textnnunet.cli.evaluate import main as evaluate_main
    from textnnunet.cli.find_best_configuration import main as best_main
    from textnnunet.cli.predict import main as predict_main
    from textnnunet.cli.train import main as train_main
    from textnnunet.demo.phantoms import phantom_spec

    spec = RUNS[run_folder.name]
    data = data_folder_of(run_folder)
    raw, pre, res = data / "raw", data / "preprocessed", run_folder / "results"
    model = model_folder_of(run_folder)
    fold = model / "fold_0"
    ids = [str(i) for i in spec.train_ids]
    folders = ["--raw", str(raw), "--preprocessed", str(pre), "--results", str(res)]
    timings = {}
    t = time.time()
    if not validation_probabilities_complete(fold):
        _call(train_main, ["3d_fullres", "0", "-d", *ids, "--val", "--npz", "--quiet", *folders,
                           *(["--model_tag", model.name.split("__", 1)[1]] if "__" in model.name else [])])
    timings["validation_with_probabilities_s"] = time.time() - t
    t = time.time()
    _call(best_main, ["-d", *ids, "-c", model.name, "-f", "0", "--disable_ensembling", *folders])
    timings["find_best_configuration_s"] = time.time() - t
    best = json.loads((model.parent / "best_configuration.json").read_text())
    rules_file = model / "postprocessing.json"
    recorded = json.loads(run_json.read_text())
    checkpoint = checkpoint_identity(fold, recorded["training"])
    before = recorded["tests"]
    tests = {}
    for test in spec.tests:
        name = phantom_spec(test.dataset_id).name
        out = run_folder / f"predictions_{name}_postprocessed"
        if out.is_dir():  # this script's own output, made with rules that may since have changed
            shutil.rmtree(out)
        t = time.time()
        _call(predict_main, ["-i", str(raw / name / test.folder), "-o", str(out), "-p", *test.prompts, "-m",
                             str(model), "-f", "0", "--postprocessing", str(rules_file),
                             *(["--modality", test.modality] if test.modality else [])])
        timings[f"predict_{name}_s"] = time.time() - t
        _call(evaluate_main, ["-ref", str(raw / name / "labelsTs"), "-pred", str(out), "-djfile",
                              str(raw / name / "dataset.json"), "--partial"])
        after = _class_table(json.loads((out / "summary.json").read_text()))
        tests[name] = {"modality": test.modality, "classes_postprocessed": after,
                       "classes_raw": before[name]["classes"]}
    if drop_probabilities:
        for p in (fold / "validation").glob("*/*_probabilities.npz"):
            p.unlink()
    return {"what": f"pooled run {spec.name}: postprocessing decided by textnnunet_find_best_configuration on the "
                    "fold-0 validation cases, applied to every test set; the test sets decide nothing",
            "run_folder": str(run_folder), "run_json": str(run_json), "checkpoint": checkpoint, "postprocessing": json.loads(
                rules_file.read_text()), "best_configuration": best, "tests": tests,
            "timings": {k: round(v, 1) for k, v in timings.items()},
            "command": " ".join([sys.executable, *sys.argv]), "versions": package_versions(), "machine": machine(),
            "git": git_state()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run_folder", type=Path, required=True, help="WORK/<run> of perf/pooled_run.py")
    p.add_argument("--run_json", type=Path, required=True, help="the run's JSON (its test results without postprocessing)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--name", required=True, help="output name: <out>/<name>_postprocessing.json")
    p.add_argument("--force", action="store_true")
    p.add_argument("--drop_probabilities", action="store_true", help="delete the validation probabilities afterwards")
    args = p.parse_args()
    target = args.out / f"{args.name}_postprocessing.json"
    if target.is_file() and not args.force:
        print(f"{target} exists, skipped")
        return 0
    record = run_pooled(args.run_folder.resolve(), args.run_json, args.drop_probabilities)
    atomic_write_json(target, record, indent=1)
    for name, test in record["tests"].items():
        print(name, {c: (round(test["classes_raw"][c]["Dice"], 3), round(x["Dice"], 3))
                     for c, x in test["classes_postprocessed"].items() if c in test["classes_raw"]})
    print(record["postprocessing"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
