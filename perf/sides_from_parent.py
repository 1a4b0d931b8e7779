"""Left/right kidney from a model that never trained the sides (issue 12): predict "left kidney" and "right kidney"
with a model trained on `kidney` only (the demo's datasets 1 2 3), score against Dataset005_KidneySides' reference
sides, and write a JSON artefact (command, versions, Dice/FP/FN per side, how each prompt was decided).

    .venv/bin/python perf/sides_from_parent.py -m MODEL_FOLDER --raw RAW_WITH_DATASET005 --work /tmp/sides
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generalization_matrix import _call, _class_table, _versions  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "documentation" / "measurements" / "pooled_runs" / "sides_from_kidney_model.json"


def main() -> int:
    from textnnunet.cli.evaluate import main as evaluate_main
    from textnnunet.cli.predict import main as predict_main
    from textnnunet.demo.phantoms import generate_phantom_datasets

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", type=Path, required=True, help="model folder trained without the sides")
    p.add_argument("--raw", type=Path, required=True, help="raw folder holding (or to hold) Dataset005_KidneySides")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    dataset = args.raw / "Dataset005_KidneySides"
    if not (dataset / "dataset.json").is_file():
        generate_phantom_datasets(args.raw, size="default", seed=0, datasets=[5])
    out = args.work / "predictions_sides"
    _call(predict_main, ["-i", str(dataset / "imagesTs"), "-o", str(out), "-p", "left kidney", "right kidney",
                         "-m", str(args.model), "-f", "0", "--continue"])
    _call(evaluate_main, ["-ref", str(dataset / "labelsTs"), "-pred", str(out), "-djfile",
                          str(dataset / "dataset.json"), "--partial"])
    manifest = out / "predictions.json"
    record = {
        "what": "left/right kidney derived from a model trained on 'kidney' only, scored on Dataset005's sides",
        "command": " ".join([sys.executable, *sys.argv]), "model": str(args.model),
        "classes": _class_table(json.loads((out / "summary.json").read_text())),
        "decisions": json.loads(manifest.read_text()).get("resolutions") if manifest.is_file() else None,
        "versions": _versions(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    print(json.dumps(record["classes"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
