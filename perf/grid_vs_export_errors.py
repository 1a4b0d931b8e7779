"""Where an organ's boundary errors arise on a matrix row: on the network grid, or in the export to the image's grid.

For each fold-0 validation case of one training dataset, the trained fold predicts the preprocessed case (the
cached network-grid image, no mirroring, as the whole-case checks during training do) and the organ's FP and FN are
counted twice: on the network grid against the cached (resampled) reference, and in original geometry after
`restore_to_original` (linear, threshold 0.5) against the raw label file, as validation and prediction score them.
The reference's own round trip (the network-grid reference exported the same way) is counted too: what the export
does to a prediction that equals the training target. With `--thresholds`, the network-grid overlap is also counted
at other probability thresholds, and the probabilities of the network-grid FP voxels (at 0.5) are summarised: is an
outward boundary a band of uncertain voxels (a threshold on validation cases would move it) or a confident one.

    .venv/bin/python perf/grid_vs_export_errors.py --work /work/m11/s12345/clinical --dataset Dataset001_Liver \
        --organ liver --out documentation/measurements/generalization_matrix/session11_150ep/clinical_grid_vs_export.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _artefact import git_state, machine, package_versions  # noqa: E402
from grid_ceiling import overlap  # noqa: E402

from textnnunet.utils.files import atomic_write_json  # noqa: E402

PLANS_NAME = "TextPlans_001_002_003"


def case_errors(predictor, cases_folder: Path, raw: Path, dataset: str, case: str, organ: str,
                values: list[int], thresholds: tuple[float, ...] = ()) -> dict:
    from textnnunet.evaluation.references import reference_label_map
    from textnnunet.preprocessing.preprocessor import load_case, restore_to_original

    vectors, _ = predictor.heads_for(predictor.resolve_prompts([organ]))
    data, seg, properties = load_case(cases_folder / dataset, case)
    probabilities = predictor.predict_preprocessed(data, vectors)
    reference_grid = np.isin(seg[0], values)
    reference = np.isin(reference_label_map(raw, dataset, case, seg, properties), values)
    exported = restore_to_original(probabilities, properties)[0] > 0.5
    round_trip = restore_to_original(reference_grid[None].astype(np.float32), properties)[0] > 0.5
    fp_probabilities = probabilities[0][(probabilities[0] > 0.5) & ~reference_grid]
    return {"network_grid": overlap(reference_grid, probabilities[0] > 0.5), "original": overlap(reference, exported),
            "reference_round_trip": overlap(reference, round_trip),
            "network_grid_by_threshold": {f"{t:g}": overlap(reference_grid, probabilities[0] > t) for t in thresholds},
            "network_grid_FP_probability_quantiles": {
                f"{q:g}": float(np.quantile(fp_probabilities, q)) if fp_probabilities.size else None
                for q in (0.1, 0.25, 0.5, 0.75, 0.9)},
            "network_spacing_mm": [float(s) for s in properties["spacing_target"]],
            "original_spacing_mm": [float(s) for s in properties["spacing_original"]]}


def totals(cases: dict) -> dict:
    out = {}
    for key in ("network_grid", "original", "reference_round_trip"):
        fp, fn = sum(c[key]["FP"] for c in cases.values()), sum(c[key]["FN"] for c in cases.values())
        out[key] = {"FP": fp, "FN": fn, "FP_over_FN": fp / max(fn, 1)}
    by_threshold = {}
    for case in cases.values():
        for t, o in case.get("network_grid_by_threshold", {}).items():
            acc = by_threshold.setdefault(t, {"FP": 0, "FN": 0, "Dice_mean": 0.0})
            acc["FP"] += o["FP"]
            acc["FN"] += o["FN"]
            acc["Dice_mean"] += o["Dice"] / len(cases)
    for acc in by_threshold.values():
        acc["FP_over_FN"] = acc["FP"] / max(acc["FN"], 1)
    if by_threshold:
        out["network_grid_by_threshold"] = by_threshold
    return out


def main() -> int:
    import torch

    from textnnunet.inference.predictor import PredictionSettings, TextPredictor

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True, help="a matrix row's folder (WORK/<variant>, with raw/)")
    p.add_argument("--dataset", required=True, help="the training dataset whose fold-0 validation cases to use")
    p.add_argument("--organ", required=True)
    p.add_argument("--values", type=int, nargs="+", default=None,
                   help="the organ's label values in that dataset (default: its dataset.json entry)")
    p.add_argument("--thresholds", type=float, nargs="*", default=[],
                   help="other probability thresholds at which to count the network-grid FP and FN")
    p.add_argument("--split", choices=("val", "train"), default="val",
                   help="the fold-0 cases to predict (train: does the model reproduce its own training targets)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    work = args.work.resolve()
    model = work / "results" / PLANS_NAME / "3d_fullres"
    cases_folder = work / "preprocessed" / PLANS_NAME / "3d_fullres"
    values = args.values
    if values is None:
        label = json.loads((work / "raw" / args.dataset / "dataset.json").read_text())["labels"][args.organ]
        values = label if isinstance(label, list) else [label]
    ids = json.loads((model / "splits_final.json").read_text())[args.dataset][0][args.split]
    predictor = TextPredictor.from_folder(model, folds=[0], settings=PredictionSettings(device="cpu",
                                                                                        use_mirroring=False))
    cases = {}
    for case in ids:
        cases[case] = case_errors(predictor, cases_folder, work / "raw", args.dataset, case, args.organ, values,
                                   tuple(args.thresholds))
        print(case, {k: v for k, v in cases[case].items() if "spacing" not in k and "threshold" not in k},
              flush=True)
    record = {"what": f"{args.organ}: FP and FN of the fold-0 model on {args.dataset}'s fold-0 {args.split} cases, on the "
                      "network grid and in original geometry (restore_to_original, threshold 0.5), and the network-"
                      "grid reference's own round trip",
              "work": str(work), "dataset": args.dataset, "split": args.split, "organ": args.organ, "label_values": values,
              "cases": cases, "totals": totals(cases), "command": " ".join([sys.executable, *sys.argv]),
              "versions": package_versions(), "machine": machine(), "git": git_state()}
    atomic_write_json(args.out, record, indent=1)
    print(record["totals"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
