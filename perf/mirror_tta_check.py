"""Training mirroring or test-time mirroring? Re-predict matrix rows whose models were trained with mirroring,
without test-time mirroring (issue 10, session 6).

The matrix scores each model with the test-time augmentation it was trained with, so for the models trained with
head-foot / front-back mirroring the rows' figures mix two effects: what mirroring did to training, and the
averaging over mirrored passes at test time (which, where position tells two organs apart, could itself blend
them). Predicting the same test cases with `--disable_tta` separates them: if the organs still swap, the training
did it.

    .venv/bin/python perf/mirror_tta_check.py --json OUT.json \
        --row seed12345_noisy=/work/mx6:noncontrast_noisy --row ...     # LABEL=WORK:VARIANT
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _artefact import git_state, machine, package_versions  # noqa: E402
from generalization_matrix import ORGANS, _call  # noqa: E402
from textnnunet.utils.files import atomic_write_json  # noqa: E402


def predict_without_tta(work: Path, variant: str) -> dict:
    """Dataset004 test Dice/FP/FN per organ of the row's fold-0 model, predicted with --disable_tta."""
    from textnnunet.cli.evaluate import main as evaluate_main
    from textnnunet.cli.predict import main as predict_main

    raw = work / variant / "raw" / "Dataset004_Abdomen"
    model = work / variant / "results" / "TextPlans_001_002_003" / "3d_fullres"
    out = work / variant / "predictions_Dataset004_no_tta"
    _call(predict_main, ["-i", str(raw / "imagesTs"), "-o", str(out), "-p", *ORGANS, "-m", str(model), "-f", "0",
                         "--disable_tta", "--continue"])
    _call(evaluate_main, ["-ref", str(raw / "labelsTs"), "-pred", str(out), "-djfile", str(raw / "dataset.json"),
                          "--partial"])
    summary = json.loads((out / "summary.json").read_text())["mean"]
    trained = json.loads((model / "fold_0" / "training_config.json").read_text()).get("mirror_axes")
    return {"model": str(model), "trained_mirror_axes": trained,
            "test_Dataset004_no_tta": {c: {k: summary[c].get(k) for k in ("Dice", "FP", "FN")} for c in ORGANS}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--row", action="append", required=True, metavar="LABEL=WORK:VARIANT")
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args(argv)
    rows = {}
    for spec in args.row:
        label, rest = spec.split("=", 1)
        work, variant = rest.rsplit(":", 1)
        rows[label] = {"work": work, "variant": variant, **predict_without_tta(Path(work), variant)}
        print(label, {c: round(v["Dice"], 3) for c, v in rows[label]["test_Dataset004_no_tta"].items()}, flush=True)
    record = {"what": __doc__.split("\n\n")[0], "command": " ".join([sys.executable, *sys.argv]), "rows": rows,
              "git": git_state(), "versions": package_versions(), "machine": machine()}
    atomic_write_json(args.json, record, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
