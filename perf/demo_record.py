"""Record a finished `textnnunet_demo` run as a JSON artefact: what the README's main command produced.

Reads the demo's work folder after the run (the demo itself writes no artefact): the test set's Dice/FP/FN per class
(predictions_Dataset004/summary.json, with the postprocessing the demo decided), fold 0's validation, the
postprocessing and its thresholds entry (best_configuration.json), the training's epochs and seconds (the
checkpoint's history), plus versions, machine and the code's git state.

    .venv/bin/textnnunet_demo                        # in some folder: writes demo_work/
    .venv/bin/python perf/demo_record.py --work demo_work --out documentation/measurements/demo_run/session12.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _artefact import git_state, machine, package_versions  # noqa: E402
from generalization_matrix import _class_table  # noqa: E402

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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("demo_work"))
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    out = record(args.work.resolve())
    atomic_write_json(args.out, out, indent=1)
    print({c: round(v["Dice"], 3) for c, v in out["test_Dataset004"].items()}, out["postprocessing"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
