"""How much anatomy a dataset shows beyond a labelled structure, along the body axis (issue 10, partial_fov).

A class is taught where it ends only by images of datasets that label it: the tissue those images show beyond the
structure is all its prompt ever sees called "not this class" (besides structures other datasets label, through
label exclusion). For each case: the millimetres of image below (inferior) and above (superior) it in the
patient frame, with textnnunet's fingerprint rule (`label_margins_mm`, which plans.json
summarises per class) on the whole label map: the fingerprint measures within the image's nonzero box, which for
CT (air -1024 HU, as in the phantoms) is the whole image. Per dataset the minimum, median and maximum of each.

    .venv/bin/python perf/label_margins.py --raw WORK/partial_fov/raw --dataset Dataset001_Liver:labelsTr \
        Dataset004_Abdomen:labelsTs --label liver --json OUT.json
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


def label_values(dataset_json: dict, name: str) -> tuple[int, ...]:
    """The label values that make up `name` (nnU-Net's region syntax: a list is the union)."""
    value = dataset_json["labels"][name]
    return tuple(value) if isinstance(value, list) else (int(value),)


def structure_margins(per_value: dict[str, list[float]], values: tuple[int, ...]) -> dict:
    """A structure's margins from the per-value ones, by the planner's rule (planner.region_margins); None where the
    case does not show it."""
    from textnnunet.experiment_planning.planner import region_margins

    margins = region_margins(per_value, values) or [None, None]
    return {"inferior_mm": margins[0], "superior_mm": margins[1]}


def _summary(values: list[float]) -> dict:
    return {"min": float(np.min(values)), "median": float(np.median(values)), "max": float(np.max(values))}


def dataset_margins(folder: Path, labels_sub: str, label: str) -> dict:
    from textnnunet.experiment_planning.fingerprint import label_margins_mm
    from textnnunet.imageio.sitk_io import read_label

    values = label_values(json.loads((folder / "dataset.json").read_text()), label)
    cases = {}
    for file in sorted((folder / labels_sub).glob("*.nii.gz")):
        cases[file.name[: -len(".nii.gz")]] = structure_margins(label_margins_mm(*read_label(file)), values)
    shown = [c for c in cases.values() if c["inferior_mm"] is not None]
    return {"labels": labels_sub, "values": list(values), "cases": cases,
            "summary": {key: _summary([c[key] for c in shown]) for key in ("inferior_mm", "superior_mm")}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--raw", type=Path, required=True)
    p.add_argument("--dataset", nargs="+", required=True, help="FOLDER:LABELS_SUBFOLDER, e.g. Dataset001_Liver:labelsTr")
    p.add_argument("--label", required=True, help="a label name of the datasets' dataset.json")
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args(argv)
    datasets = {}
    for item in args.dataset:
        name, _, sub = item.partition(":")
        datasets[name] = dataset_margins(args.raw / name, sub or "labelsTr", args.label)
        s = datasets[name]["summary"]
        print(f"{name}: {args.label} below {s['inferior_mm']['median']:.0f} mm, above {s['superior_mm']['median']:.0f} mm"
              " (median)")
    atomic_write_json(args.json, {"command": " ".join([sys.executable, *sys.argv]), "label": args.label,
                                  "raw": str(args.raw), "datasets": datasets, "versions": package_versions(),
                                  "machine": machine(), "git": git_state()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
