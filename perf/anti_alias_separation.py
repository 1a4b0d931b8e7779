"""How far apart two organs' intensities are in the network's input, with and without anti-aliasing.

Preprocesses the first Dataset004 test case of a generalization-matrix work folder with its plan's 3d_fullres
configuration twice (resampling.anti_aliasing off / on) and reports, per organ pair, d' = difference of the mean
normalised intensities over the pooled standard deviation. Writes a JSON artefact (command, versions, case, every
organ's mean and sd) to documentation/measurements/anti_alias_separation_<variant>.json.

    .venv/bin/python perf/anti_alias_separation.py --work /work/mx_work2 -v noncontrast_noisy
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generalization_matrix import ORGAN_VALUES, _versions  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "documentation" / "measurements"
PAIRS = [("spleen", "kidney"), ("liver", "spleen"), ("liver", "kidney")]


def separation(work: Path, variant: str) -> dict:
    from textnnunet.preprocessing.preprocessor import preprocess_case

    root = work / variant
    plans = json.loads((root / "preprocessed" / "TextPlans_001_002_003" / "plans.json").read_text())
    raw = root / "raw" / "Dataset004_Abdomen"
    image = sorted((raw / "imagesTs").glob("*_0000.nii.gz"))[0]
    label = raw / "labelsTs" / image.name.replace("_0000.nii.gz", ".nii.gz")
    result = {"variant": variant, "case": image.name, "plan_spacing": plans["configurations"]["3d_fullres"]["spacing"]}
    for anti_aliasing in (False, True):
        variant_plans = copy.deepcopy(plans)
        variant_plans["configurations"]["3d_fullres"]["resampling"]["anti_aliasing"] = anti_aliasing
        data, seg, _ = preprocess_case([image], label, variant_plans, "3d_fullres", dict(ORGAN_VALUES),
                                       dataset_name="Dataset001_Liver")
        x, s = data[0], seg[0]
        organs = {o: {"mean": float(x[np.isin(s, v)].mean()), "sd": float(x[np.isin(s, v)].std())}
                  for o, v in ORGAN_VALUES.items()}
        d_prime = {f"{a}_vs_{b}": round((organs[a]["mean"] - organs[b]["mean"])
                                        / np.sqrt((organs[a]["sd"] ** 2 + organs[b]["sd"] ** 2) / 2), 2)
                   for a, b in PAIRS}
        result["anti_aliasing" if anti_aliasing else "point_sampled"] = {"organs": organs, "d_prime": d_prime}
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True, help="a generalization-matrix work folder")
    p.add_argument("-v", "--variant", default="noncontrast_noisy")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    record = separation(args.work, args.variant)
    record["command"] = " ".join([sys.executable, *sys.argv])
    record["versions"] = _versions()
    target = args.out / f"anti_alias_separation_{args.variant}.json"
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(target)
    for key in ("point_sampled", "anti_aliasing"):
        print(key, record[key]["d_prime"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
