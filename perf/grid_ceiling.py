"""What the plan's grid and the export allow: the test references sent to the network grid and back.

Issues 10 and 13 ask for Dice >= 0.85 on organs that are small against the grid a CPU plan trains on (a kidney of
2,000-3,000 voxels on 7.5 mm MR slices, a 6 x 4.2 x 4.2 mm network voxel). This separates what the label grid and
the export cost from what the network gets wrong. For each labelled test case and class, the reference goes through
the same preprocessing as a training case (canonical orientation, crop, resampling of the label map to the plan's
spacing: the training target) and back through the same export as a prediction (`restore_to_original`, linear,
threshold 0.5), then is scored against itself at the test image's resolution: what a network that reproduced its
hard (0/1) training targets exactly, voxel for voxel, would score. It is not an upper bound: a network outputs soft
probabilities (its targets are sampled after spatial augmentation) and can place a boundary between grid voxels, so
it can score more on thin structures; nor does it model what the coarse image hides from the network.

No training and no network: the figures are what the plan's spacing and the export allow, per case and as means
per class.

    .venv/bin/python perf/grid_ceiling.py --plans PRE/TextPlans_001_002_003_011_012/plans.json --raw RAW \\
        -d 4 13 14 --out documentation/measurements/grid_ceiling/ct_mr_grid_ceiling.json
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _artefact import git_state, machine, package_versions  # noqa: E402

from textnnunet.benchmark.run import image_type_of_test_set  # noqa: E402
from textnnunet.dataset.description import load_dataset, test_cases  # noqa: E402
from textnnunet.experiment_planning.planner import intensity_group_name  # noqa: E402
from textnnunet.imageio.sitk_io import read_label  # noqa: E402
from textnnunet.preprocessing.preprocessor import preprocess_case, restore_to_original  # noqa: E402
from textnnunet.utils.files import atomic_write_json  # noqa: E402
from textnnunet.utils.plans import Plans  # noqa: E402


def overlap(reference: np.ndarray, predicted: np.ndarray) -> dict:
    """Dice, FP and FN voxels of one binary mask against another (Dice 1 when both are empty)."""
    tp = int(np.count_nonzero(reference & predicted))
    fp = int(np.count_nonzero(predicted & ~reference))
    fn = int(np.count_nonzero(reference & ~predicted))
    return {"Dice": 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn), "FP": fp, "FN": fn,
            "reference_voxels": tp + fn}


def case_ceilings(image_files: list[Path], label_file: Path, plans: Plans, configuration: str,
                  classes: dict[str, tuple[int, ...]], modality: str | None) -> dict:
    """Per class: the round trip's overlap with the reference."""
    _, seg, properties = preprocess_case(image_files, label_file, plans, configuration, modality=modality)
    label_map, _ = read_label(label_file)
    out = {}
    for name, values in classes.items():
        reference = np.isin(label_map, values)
        target = np.isin(seg[0], values).astype(np.float32)
        out[name] = overlap(reference, restore_to_original(target[None], properties)[0] > 0.5)
    return {"spacing_mm": properties["spacing_original"], "network_spacing_mm": properties["spacing_target"],
            "classes": out}


def test_set_ceilings(raw: Path, dataset_id: int, plans: Plans, configuration: str) -> dict:
    desc = load_dataset(raw, dataset_id)
    group, why_not = image_type_of_test_set(plans, desc)  # as the benchmark predicts a test set
    if why_not:
        raise SystemExit(f"{desc.name}: {why_not}")
    cases = {}
    for case in test_cases(desc):
        if case.label_file is not None:
            cases[case.case_id] = case_ceilings(case.image_files, case.label_file, plans, configuration,
                                                desc.classes, group)
    means = {name: {key: statistics.mean(c["classes"][name][key] for c in cases.values())
                    for key in ("Dice", "FP", "FN", "reference_voxels")}
             for name in desc.classes}
    return {"dataset": desc.name, "image_type": intensity_group_name(desc), "cases": cases, "mean": means}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--plans", type=Path, required=True, help="plans.json of the plan whose grid to test")
    p.add_argument("-c", "--configuration", default="3d_fullres")
    p.add_argument("--raw", type=Path, required=True, help="raw folder holding the test datasets")
    p.add_argument("-d", "--datasets", type=int, nargs="+", required=True, help="labelled test datasets")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    plans = Plans.load(args.plans)
    started = time.time()
    tests = {}
    for dataset_id in args.datasets:
        result = test_set_ceilings(args.raw, dataset_id, plans, args.configuration)
        tests[result.pop("dataset")] = result
        for name, v in result["mean"].items():
            print(f"{dataset_id} {name}: Dice {v['Dice']:.3f}, FP {v['FP']:.0f}, FN {v['FN']:.0f} "
                  f"(of {v['reference_voxels']:.0f} reference voxels per case)")
    configuration = plans.configuration(args.configuration)
    atomic_write_json(args.out, {
        "what": "Dice, FP and FN (voxels per case) of each test reference sent to the plan's network grid as a "
                "(hard) training target and back as a prediction is exported, against itself: what the label grid and "
                "the export allow; not an upper bound for a network, whose soft outputs can place a boundary "
                "between grid voxels",
        "plans": str(args.plans), "configuration": args.configuration,
        "network_spacing_mm": list(configuration.data["spacing"]), "patch_size": list(configuration.patch_size),
        "tests": tests, "seconds": round(time.time() - started, 1),
        "command": " ".join([sys.executable, *sys.argv]), "versions": package_versions(), "machine": machine(),
        "git": git_state()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
