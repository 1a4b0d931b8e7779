"""Figures in the documentation trace to committed artefacts: every cited artefact exists, and the tables printed
from the generalization matrix's JSON files appear in results.md exactly as the artefacts give them."""
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MEASUREMENTS = REPO / "documentation" / "measurements"
DOCS = [REPO / "README.md", *sorted((REPO / "documentation").glob("*.md"))]
CITED = re.compile(r"(?:documentation/measurements/|measurements/|`)((?:generalization_matrix|pooled_runs)"
                   r"/[A-Za-z0-9_./*-]+|[A-Za-z0-9_-]+\.json)")


def _cited_paths() -> set[str]:
    found = set()
    for doc in DOCS:
        for match in CITED.finditer(doc.read_text()):
            path = match.group(1).rstrip(".,)`")
            if "/" in path or (MEASUREMENTS / path).exists() or path.startswith(("predict_", "prompt_set")):
                found.add(path)
    return found


def test_every_cited_measurement_exists():
    missing = []
    for path in sorted(_cited_paths()):
        if path.endswith("_"):  # a family of files named in prose ("prompt_set_...")
            continue
        if "*" in path:
            if not list(MEASUREMENTS.glob(path)):
                missing.append(path)
        elif not (MEASUREMENTS / path).exists():
            missing.append(path)
    assert not missing, f"cited in the docs but not under documentation/measurements/: {missing}"


@pytest.mark.parametrize("folder", ["first_pass", "label_exclusion"])
def test_matrix_tables_in_results_are_printed_from_the_artefacts(folder):
    sys.path.insert(0, str(REPO / "perf"))
    from generalization_matrix import report

    out = MEASUREMENTS / "generalization_matrix" / folder
    if not list(out.glob("*.json")):
        pytest.skip(f"no artefacts in {out}")
    results = (REPO / "documentation" / "results.md").read_text()
    rows = report(out).splitlines()[2:]
    assert rows and all(row in results for row in rows), "results.md differs from the artefacts' table"
