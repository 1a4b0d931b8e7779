"""Record a finished `textnnunet_demo` run as a JSON artefact: what the README's main command produced.

Reads the demo's work folder after the run (the demo itself writes no artefact): the test set's Dice/FP/FN per class
(predictions_Dataset004/summary.json, with the postprocessing the demo decided), fold 0's validation, the
postprocessing and its thresholds entry (best_configuration.json), the training's epochs and seconds (the
checkpoint's history), plus versions, machine and the code's git state.

    .venv/bin/textnnunet_demo                        # in some folder: writes demo_work/
    .venv/bin/python perf/demo_record.py --work demo_work --out documentation/measurements/demo_run/session12.json

`--sealed` also reports THE sealed test set (Dataset010_AbdomenSealed, documentation/benchmarks.md): generated into
the work folder's raw data if missing, predicted with the demo's prompts, model and postprocessing as the demo
predicts Dataset004, evaluated. Its rule: report it once per change of default, never choose anything by it.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _artefact import git_state, machine, package_versions  # noqa: E402
from generalization_matrix import _call, _class_table  # noqa: E402

from textnnunet.utils.files import atomic_write_json  # noqa: E402

PLANS = "TextPlans_001_002_003"


def record(work: Path) -> dict:
    import torch

    plan_results = work / "results" / PLANS
    best = json.loads((plan_results / "best_configuration.json").read_text())
    model = Path(best["best"]["model_folders"][0])
    fold = model / "fold_0"
    history = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)["history"]
    config = json.loads((fold / "training_config.json").read_text())
    return {
        "what": "a finished textnnunet_demo run (the README's main command), recorded from its work folder",
        "work": str(work),
        "training": {"epochs": len(history["epoch_seconds"]), "iters_per_epoch": config["iters_per_epoch"],
                     "seconds": float(sum(history["epoch_seconds"])), "seed": config["seed"],
                     "final_pseudo_dice": history["pseudo_dice"][-1]},
        "validation_fold0": _class_table(json.loads((fold / "validation" / "summary.json").read_text())),
        "postprocessing": best["postprocessing"].get("rules"),
        "thresholds": best["postprocessing"].get("thresholds"),
        "test_Dataset004": _class_table(json.loads((work / "predictions_Dataset004" / "summary.json").read_text())),
        "versions": package_versions(), "machine": machine(), "git": git_state(),
        "command": " ".join([sys.executable, *sys.argv]),
    }


def sealed_report(work: Path, device: str = "cpu") -> dict:
    """THE sealed test set predicted and scored as the demo scores Dataset004 (same prompts, fold, postprocessing)."""
    from textnnunet.cli.evaluate import main as evaluate_main
    from textnnunet.cli.predict import main as predict_main
    from textnnunet.demo.phantoms import SEALED_TEST_DATASET, generate_phantom_datasets
    from textnnunet.demo.run import DEMO_PROMPTS
    from textnnunet.postprocessing import POSTPROCESSING_FILE

    raw, name = work / "raw", SEALED_TEST_DATASET.name
    generate_phantom_datasets(raw, size="default", seed=0, datasets=[SEALED_TEST_DATASET.dataset_id], progress=True)
    best = json.loads((work / "results" / PLANS / "best_configuration.json").read_text())
    model = Path(best["best"]["model_folders"][0])
    out = work / f"predictions_{name}"
    if out.is_dir():  # this script's own output, perhaps from another model or other rules
        shutil.rmtree(out)
    _call(predict_main, ["-i", str(raw / name / "imagesTs"), "-o", str(out), "-p", *DEMO_PROMPTS, "-m", str(model),
                         "-f", "0", "--device", device, "--postprocessing", str(model / POSTPROCESSING_FILE)])
    _call(evaluate_main, ["-ref", str(raw / name / "labelsTs"), "-pred", str(out), "-djfile",
                          str(raw / name / "dataset.json"), "--partial"])
    return _class_table(json.loads((out / "summary.json").read_text()))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("demo_work"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--sealed", action="store_true", help="also predict and score THE sealed test set (Dataset010)")
    args = p.parse_args()
    out = record(args.work.resolve())
    if args.sealed:
        out["test_Dataset010_sealed"] = sealed_report(args.work.resolve())
    atomic_write_json(args.out, out, indent=1)
    print({c: round(v["Dice"], 3) for c, v in out["test_Dataset004"].items()}, out["postprocessing"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
