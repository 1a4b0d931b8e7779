"""Where the liver prompt's false positives lie on a matrix row's test set, for the universal model and for an
nnU-Net-style baseline trained on the liver dataset alone (issue 10, partial_fov).

The question: are the false positives below the liver (slices without liver in the reference) a failure of pooling
partial labels, or of training on a liver dataset whose field of view never reaches those slices? A baseline that
sees only the liver dataset has the same field-of-view gap and no partial labels; if it makes the same errors, the
gap is in the data, not in the universal model.

For each test case: liver Dice, FP, FN, and the FP split into slices where the reference has liver ("at the liver")
and slices where it has none ("off the liver's slices"), per model. Axial slices of the canonical (LPS) arrays.

    .venv/bin/python perf/liver_fp_beyond_fov.py --raw WORK/partial_fov/raw \
        --universal_predictions WORK/partial_fov/predictions_Dataset004 \
        --baseline BASELINE_RESULTS/Dataset001_Liver/3d_fullres --json OUT.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _artefact import git_state, machine, package_versions  # noqa: E402
from textnnunet.utils.files import atomic_write_json  # noqa: E402

LIVER_VALUES = (1, 2)  # Dataset004: liver and its tumour


def liver_errors(pred: np.ndarray, ref: np.ndarray) -> dict:
    """Dice, FP, FN of a binary liver mask, FP split by whether the slice (axis 0) holds reference liver."""
    tp = int((pred & ref).sum())
    fp_mask, fn = pred & ~ref, int((~pred & ref).sum())
    liver_slices = ref.any(axis=(1, 2))
    fp_at = int(fp_mask[liver_slices].sum())
    fp = int(fp_mask.sum())
    return {"Dice": 2 * tp / max(2 * tp + fp + fn, 1), "FP": fp, "FN": fn,
            "FP_at_liver_slices": fp_at, "FP_off_liver_slices": fp - fp_at}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--raw", type=Path, required=True, help="the row's raw folder (Dataset004_Abdomen inside)")
    p.add_argument("--universal_predictions", type=Path, required=True, help="textnnunet_predict output (<case>_liver)")
    p.add_argument("--baseline", type=Path, required=True, help="baseline model folder (plans + fold_0)")
    p.add_argument("--fold", default="0")
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args(argv)

    from textnnunet.benchmark.models import BaselineModel
    from textnnunet.imageio.sitk_io import read_image, read_label, to_canonical
    from textnnunet.inference.predictor import PredictionSettings

    test = args.raw / "Dataset004_Abdomen"
    baseline = BaselineModel(args.baseline, args.fold, PredictionSettings(device="cpu"))
    cases = {}
    for image_file in sorted((test / "imagesTs").glob("*_0000.nii.gz")):
        case = image_file.name[: -len("_0000.nii.gz")]
        _, geometry = read_image([image_file])

        def canonical(mask):
            return to_canonical(mask[None].astype(np.uint8), geometry)[0][0] > 0

        ref = canonical(np.isin(read_label(test / "labelsTs" / f"{case}.nii.gz")[0], LIVER_VALUES))
        universal = canonical(read_label(args.universal_predictions / f"{case}_liver.nii.gz")[0] > 0)
        base = canonical(baseline.predict_masks([image_file], ["liver"])["liver"] > 0)
        cases[case] = {"universal": liver_errors(universal, ref), "baseline_liver_dataset_only": liver_errors(base, ref)}
        print(case, {m: {k: round(v, 3) if isinstance(v, float) else v for k, v in e.items()}
                     for m, e in cases[case].items()}, flush=True)
    totals = {m: {k: sum(c[m][k] for c in cases.values()) for k in ("FP", "FN", "FP_at_liver_slices",
                                                                         "FP_off_liver_slices")}
              for m in ("universal", "baseline_liver_dataset_only")}
    for m, t in totals.items():
        t["FP_over_FN"] = t["FP"] / max(t["FN"], 1)
        t["share_of_FP_off_liver_slices"] = t["FP_off_liver_slices"] / max(t["FP"], 1)
        t["mean_Dice"] = float(np.mean([c[m]["Dice"] for c in cases.values()]))
    record = {"what": __doc__.split("\n\n")[0], "command": " ".join([sys.executable, *sys.argv]),
              "raw": str(args.raw), "universal_predictions": str(args.universal_predictions),
              "baseline": str(args.baseline), "cases": cases, "totals": totals,
              "git": git_state(), "versions": package_versions(), "machine": machine()}
    atomic_write_json(args.json, record, indent=1)
    print(json.dumps(totals, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
