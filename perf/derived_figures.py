"""Figures the documentation prints that are computed from committed artefacts rather than stored in them.

Each derived file under documentation/measurements/derived/ is written by this script from the raw artefacts it
names (`sources`), with the formula in words; nothing in it is typed by hand. tests/test_docs_artefacts.py checks
that the committed files equal what this script computes from the artefacts now.

    .venv/bin/python perf/derived_figures.py           # (re)write every derived file
    .venv/bin/python perf/derived_figures.py --check   # exit 1 when a committed file differs
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MEASUREMENTS = REPO / "documentation" / "measurements"
DERIVED = MEASUREMENTS / "derived"
ORGANS = ["liver", "spleen", "kidney"]


def _rel(path: Path) -> str:
    return str(path.relative_to(MEASUREMENTS))


def matrix_fp_fn() -> dict:
    """Test-set FP/FN voxel ratios of the generalization matrix, as generalization_matrix.report() prints them."""
    values, sources = {}, []
    for folder in sorted((MEASUREMENTS / "generalization_matrix").iterdir()):
        for path in sorted(folder.glob("*.json")):
            test = json.loads(path.read_text())["test_Dataset004"]
            values.setdefault(folder.name, {})[path.stem] = {
                c: test[c]["FP"] / max(test[c]["FN"], 1) for c in ORGANS}
            sources.append(_rel(path))
    return {"what": "test Dataset004 false-positive over false-negative voxels per organ",
            "formula": "test_Dataset004[organ]['FP'] / max(test_Dataset004[organ]['FN'], 1)",
            "sources": sources, "values": values}


def matrix_train_minutes() -> dict:
    """Training wall minutes per row of the generalization matrix (the report's "train min" column)."""
    values, sources = {}, []
    for folder in sorted((MEASUREMENTS / "generalization_matrix").iterdir()):
        for path in sorted(folder.glob("*.json")):
            values.setdefault(folder.name, {})[path.stem] = json.loads(path.read_text())["training"]["seconds"] / 60
            sources.append(_rel(path))
    return {"what": "training wall time in minutes per variant (one torch thread, cores shared with other runs)",
            "formula": "training['seconds'] / 60", "sources": sources, "values": values}


DERIVED_FILES = {"generalization_matrix_fp_fn.json": matrix_fp_fn,
                 "generalization_matrix_train_minutes.json": matrix_train_minutes}


def compute() -> dict[str, dict]:
    return {name: make() for name, make in DERIVED_FILES.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="compare with the committed files, write nothing")
    args = p.parse_args()
    differ = []
    for name, record in compute().items():
        target = DERIVED / name
        text = json.dumps(record, indent=1) + "\n"
        if args.check:
            if not target.is_file() or target.read_text() != text:
                differ.append(name)
            continue
        DERIVED.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        print(f"wrote {target.relative_to(REPO)}")
    if differ:
        print(f"differ from the artefacts: {differ}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
