"""Where a matrix row's errors lie: each organ's FP and FN voxels on the test set by distance to the reference organ.

Issue 10's FP rule (FP < 2x FN) cannot tell a one-voxel rim around a correct organ from a gross error (the liver
prompt marking the stomach wall, or tissue beyond the liver dataset's field of view). This splits them, from the
predictions and references a `perf/generalization_matrix.py` run left in its work folder:
- FP by their physical distance (3D Euclidean, mm, on the test image's grid) to the nearest reference voxel of the
  organ, in units of the network's voxel (the largest spacing of the plan's 3d_fullres grid, where the network
  predicts before the probabilities are resampled to the test image; the test image's largest spacing where that is
  coarser): within one such voxel (the rim: a boundary off by one voxel), within 1-3 (near), beyond 3 (gross);
- FN likewise by their distance to the nearest predicted voxel (beyond 3: a missed piece);
- the FP/FN ratio with and without the rim, and the voxel counts per case.

    .venv/bin/python perf/matrix_error_distances.py --work /work/m7/s1 -v demo clinical \
        --out documentation/measurements/generalization_matrix/session6_nomirror_seed1/error_distances.json

A test set of a pooled run (perf/pooled_run.py) instead, its classes by name (network voxel: that run's plan):

    .venv/bin/python perf/matrix_error_distances.py --pooled_run /work/p7/eight_datasets --dataset 14 \
        --organs kidney spleen liver --out documentation/measurements/pooled_runs/session6/eight_datasets_error_distances.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _artefact import git_state, machine, package_versions  # noqa: E402
from generalization_matrix import ORGANS, PLAN_ROWS  # noqa: E402

from textnnunet.utils.files import atomic_write_json  # noqa: E402

BANDS = {"rim_1": (0.0, 1.0), "near_1_3": (1.0, 3.0), "gross_over_3": (3.0, np.inf)}  # network voxels


def distance_bands(errors: np.ndarray, target: np.ndarray, spacing=(1.0, 1.0, 1.0), unit: float = 1.0
                   ) -> dict[str, int]:
    """Count `errors` voxels by their distance (mm, grid `spacing`) to the nearest `target` voxel, in units of `unit`
    mm (all gross if there is no target)."""
    if not errors.any():
        return {band: 0 for band in BANDS}
    if not target.any():
        return {**{band: 0 for band in BANDS}, "gross_over_3": int(errors.sum())}
    distance = ndimage.distance_transform_edt(~target, sampling=spacing)[errors] / unit
    return {band: int(((distance > lo) & (distance <= hi)).sum()) for band, (lo, hi) in BANDS.items()}


def case_errors(reference: np.ndarray, predicted: np.ndarray, spacing=(1.0, 1.0, 1.0), unit: float = 1.0) -> dict:
    """FP bands (distance to the reference organ) and FN bands (distance to the prediction) of one organ."""
    fp, fn = predicted & ~reference, reference & ~predicted
    return {"FP": int(fp.sum()), "FN": int(fn.sum()), "FP_bands": distance_bands(fp, reference, spacing, unit),
            "FN_bands": distance_bands(fn, predicted, spacing, unit)}


def _organ_values(dataset_json: dict, organ: str) -> list[int]:
    value = dataset_json["labels"][organ]
    return value if isinstance(value, list) else [value]


def variant_errors(work: Path, variant: str) -> dict:
    raw = work / PLAN_ROWS.get(variant, (variant, []))[0] / "raw" / "Dataset004_Abdomen"
    plans = json.loads((work / variant / "preprocessed" / "TextPlans_001_002_003" / "plans.json").read_text())
    return test_set_errors(raw, work / variant / "predictions_Dataset004", plans, ORGANS)


def pooled_errors(run_folder: Path, dataset_id: int, organs: list[str]) -> dict:
    """The same for one test set of a pooled run (its joint plan is the only plan in its preprocessed folder)."""
    from textnnunet.demo.phantoms import phantom_spec

    from pooled_run import data_folder_of

    name = phantom_spec(dataset_id).name
    data_folder = data_folder_of(run_folder)
    plans_files = sorted((data_folder / "preprocessed").glob("TextPlans_*/plans.json"))
    if not plans_files:
        raise SystemExit(f"{data_folder}: no preprocessed/TextPlans_*/plans.json")
    plans = json.loads(plans_files[0].read_text())
    return test_set_errors(data_folder / "raw" / name, run_folder / f"predictions_{name}", plans, organs)


def test_set_errors(raw: Path, predictions: Path, plans: dict, organs: list[str]) -> dict:
    from textnnunet.imageio.sitk_io import read_label

    meta = json.loads((raw / "dataset.json").read_text())
    unit = float(max(plans["configurations"]["3d_fullres"]["spacing"]))
    cases = sorted(p.name[: -len(".nii.gz")] for p in (raw / "labelsTs").glob("*.nii.gz"))
    if not cases or not predictions.is_dir():
        raise SystemExit(f"{predictions}: no test predictions or references (run the matrix or pooled run first)")
    per_case: dict[str, dict] = {organ: {} for organ in organs}
    for case in cases:
        labels, geometry = read_label(raw / "labelsTs" / f"{case}.nii.gz")
        for organ in organs:
            reference = np.isin(labels, _organ_values(meta, organ))
            predicted = read_label(predictions / f"{case}_{organ}.nii.gz")[0] > 0
            per_case[organ][case] = {**case_errors(reference, predicted, geometry.spacing,
                                                    max(unit, float(max(geometry.spacing)))),
                                     "reference_voxels": int(reference.sum()),
                                     "spacing_mm": [round(float(x), 3) for x in geometry.spacing]}
    return {"network_voxel_mm": unit, **{organ: summarise(c) for organ, c in per_case.items()}}


def summarise(cases: dict[str, dict]) -> dict:
    """Means over cases (as the matrix's FP/FN), the share of FP in each band and the FP/FN ratio without the rim."""
    mean = lambda key, band=None: float(np.mean([c[key] if band is None else c[key][band]  # noqa: E731
                                                 for c in cases.values()]))
    fp, fn = mean("FP"), mean("FN")
    fp_bands = {band: mean("FP_bands", band) for band in BANDS}
    fn_bands = {band: mean("FN_bands", band) for band in BANDS}
    return {"FP": fp, "FN": fn, "FP_over_FN": fp / max(fn, 1.0),
            "FP_bands": fp_bands, "FN_bands": fn_bands,
            "FP_share": {band: (v / fp if fp else 0.0) for band, v in fp_bands.items()},
            "FP_beyond_rim_over_FN": (fp - fp_bands["rim_1"]) / max(fn, 1.0),
            # > 1: the boundary errs outwards (the organ drawn too large by up to a network voxel), < 1 inwards
            "FP_rim_over_FN_rim": fp_bands["rim_1"] / max(fn_bands["rim_1"], 1.0),
            "cases": cases}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, help="the matrix run's work folder (its --work)")
    p.add_argument("-v", "--variants", nargs="+")
    p.add_argument("--pooled_run", type=Path, help="a pooled run's folder (perf/pooled_run.py's --work / run name)")
    p.add_argument("--dataset", type=int, help="with --pooled_run: the test set's dataset id")
    p.add_argument("--organs", nargs="+", help="with --pooled_run: the classes (names in the test set's dataset.json)")
    p.add_argument("--out", type=Path, required=True, help="JSON artefact to write (updated row by row)")
    args = p.parse_args()
    if args.pooled_run is not None:
        if args.dataset is None or not args.organs:
            p.error("--pooled_run needs --dataset and --organs")
        rows_to_run = {f"{args.pooled_run.name}/Dataset{args.dataset:03d}":
                       (lambda: pooled_errors(args.pooled_run.resolve(), args.dataset, args.organs), args.organs)}
        what = "pooled-run test set"
    else:
        if args.work is None or not args.variants:
            p.error("a matrix run needs --work and -v (or use --pooled_run)")
        rows_to_run = {v: (lambda v=v: variant_errors(args.work.resolve(), v), ORGANS) for v in args.variants}
        what = "test Dataset004"
    record = json.loads(args.out.read_text()) if args.out.is_file() else {"variants": {}}
    for name, (compute, organs) in rows_to_run.items():
        record["variants"][name] = rows = compute()
        print(name, {o: f"FP/FN {rows[o]['FP_over_FN']:.2f}, rim share {rows[o]['FP_share']['rim_1']:.2f}, "
                        f"beyond rim/FN {rows[o]['FP_beyond_rim_over_FN']:.2f}" for o in organs})
    record.update({"what": f"{what} errors per organ by distance to the reference organ (FP) or the prediction (FN), "
                           "in network voxels (network_voxel_mm: the plan's largest spacing); means over cases",
                   "bands": {k: [lo, None if hi == np.inf else hi] for k, (lo, hi) in BANDS.items()},
                   "command": " ".join([sys.executable, *sys.argv]), "versions": package_versions(),
                   "machine": machine(), "git": git_state()})
    atomic_write_json(args.out, record, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
