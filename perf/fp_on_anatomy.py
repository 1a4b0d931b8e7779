"""Where a matrix row's false positives lie: each test case's FP voxels per organ, counted by the structure the
phantom generator painted there (the full anatomy map, regenerated from the variant and seed).

Writes <out>/<variant>_fp_on_anatomy.json (command, versions, per case and organ: FP, FN and the FP voxels per
anatomy structure, largest first).

    .venv/bin/python perf/fp_on_anatomy.py --work /work/mx -v partial_fov --out documentation/measurements/generalization_matrix/FOLDER
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generalization_matrix import ORGAN_VALUES, ORGANS, SEEDS, _versions  # noqa: E402



def fp_on_anatomy(work: Path, variant: str, cases: int) -> dict:
    import SimpleITK as sitk

    from textnnunet.demo.phantoms import ANATOMY_CODES, dataset_specs, generate_case

    spec = next(s for s in dataset_specs(variant if variant != "demo" else "") if s.dataset_id == 4)
    names = {v: k for k, v in ANATOMY_CODES.items()}
    predictions = work / variant / "predictions_Dataset004"
    result = {}
    for index in range(cases):
        case = generate_case(spec, index, size="full" if variant != "demo" else "default", seed=SEEDS[variant])
        per_organ = {}
        for organ in ORGANS:
            path = predictions / f"{spec.case_id(index)}_{organ}.nii.gz"
            pred = sitk.GetArrayFromImage(sitk.ReadImage(str(path))) > 0
            ref = np.isin(case.labels, ORGAN_VALUES[organ])
            if pred.shape != ref.shape:
                raise SystemExit(f"{path}: shape {pred.shape} differs from the regenerated case's {ref.shape}")
            fp = pred & ~ref
            codes, counts = np.unique(case.anatomy[fp], return_counts=True)
            order = np.argsort(counts)[::-1]
            per_organ[organ] = {"FP": int(fp.sum()), "FN": int((ref & ~pred).sum()),
                                "FP_on": {names.get(int(codes[i]), str(codes[i])): int(counts[i]) for i in order}}
        result[spec.case_id(index)] = per_organ
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True, help="the matrix work folder the row was run in")
    p.add_argument("-v", "--variant", required=True)
    p.add_argument("--cases", type=int, default=3)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    record = {"variant": args.variant, "seed": SEEDS[args.variant],
              "cases": fp_on_anatomy(args.work, args.variant, args.cases),
              "command": " ".join([sys.executable, *sys.argv]), "versions": _versions()}
    target = args.out / f"{args.variant}_fp_on_anatomy.json"
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(target)
    for case, organs in record["cases"].items():
        for organ, r in organs.items():
            top = ", ".join(f"{k} {v}" for k, v in list(r["FP_on"].items())[:4])
            print(f"{case} {organ}: FP {r['FP']} FN {r['FN']} on {top}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
