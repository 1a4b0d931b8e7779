"""Figures in the documentation trace to committed artefacts.

Citation syntax (invisible in the rendered Markdown): a line

    <!-- artefacts: generalization_matrix/first_pass/demo.json pooled_runs/first_pass/ct_mr*.json -->

declares the JSON artefacts that hold the figures of the text after it, up to the next heading or the next such
comment. `file.json#test_Dataset004/*/Dice` narrows an artefact to the parts a selector names (keys separated by
`/`, each a glob; `?` stands for a space in a key), so that a wrong figure cannot pass by equalling an unrelated
number of a large artefact. Paths are relative to documentation/measurements/, or to the repository root when they start with
`documentation/` (the benchmark's own outputs, documentation/benchmark_demo_cpu*/benchmark.json); a glob must
match at least one file.

Rules (checked for README.md, documentation/results.md and documentation/benchmarks.md):
- every declared artefact exists;
- every figure in a cited block (a decimal: 0.940, 13.2, 0.36x, 99.3%, -0.008; an integer with a unit of time,
  memory, percent or ratio: 28 minutes, 3 GB, 84%, 73x) equals a numeric leaf of one of the
  block's artefacts to its printed precision: |leaf - figure| <= half a unit of the last printed digit (plus a tiny
  epsilon). A figure printed with % may also equal 100 x a leaf (a fraction printed as a percentage); no other
  conversion is allowed (a leaf in seconds does not cite a figure in minutes: the script stores what is printed);
- a figure outside any cited block fails, with file:line and the figure;
- not figures: fenced code blocks, inline code (`...`: commands and configuration values), HTML comments, link
  targets, dotted version numbers (2.13.0), numbers glued to letters before them (v2, sm75), integers without such
  a unit (iterations, cases, epochs), and table
  rows equal to a row of `perf/generalization_matrix.py --report` (checked as whole rows below).
"""
from __future__ import annotations

import fnmatch
import glob
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MEASUREMENTS = REPO / "documentation" / "measurements"
DOCS = [REPO / "README.md", *sorted((REPO / "documentation").glob("*.md"))]
CHECKED_DOCS = ["README.md", "documentation/results.md", "documentation/benchmarks.md"]
MATRIX_FOLDERS = ["first_pass", "label_exclusion", "session5_exclusion_weighted", "session5_antialias", "session6_nomirror",
                  "session5_default", "session5_default_seed1"]
CITED = re.compile(r"(?:documentation/measurements/|measurements/|`)((?:generalization_matrix|pooled_runs)"
                   r"/[A-Za-z0-9_./*-]+|[A-Za-z0-9_-]+\.json)")

ARTEFACTS = re.compile(r"^\s*<!--\s*artefacts:\s*(.*?)\s*-->\s*$")
HEADING = re.compile(r"^#{1,6}\s")
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+).*?\1")
COMMENT = re.compile(r"<!--.*?-->")
LINK_TARGET = re.compile(r"\]\([^)]*\)")
# A figure: a decimal (0.940, 13.2, 0.36x), or an integer with a unit of time, memory, percent or ratio (28 minutes,
# 3 GB, 84%, 73x; also the first number of a range such as 75-88%). Not glued to a letter, digit, dot, comma or
# underscore before it (v2, sm75, 55,297), not followed by another dotted part (versions 2.13.0); an optional sign
# that does not follow a digit (in a range "0.70-0.93" the dash is no sign).
UNIT = r"(?:\s?(?:ms|s|sec|min|minutes?|h|hours?|days?|GB|GiB|MB|MiB|kB)\b|%|x\b)"
FIGURE = re.compile(r"(?<![\w.,])([+\-\u2212]?)(\d+\.\d+|\d+(?=(?:[-\u2013]\d+(?:\.\d+)?)?" + UNIT + r"))"
                    r"(?![\d])(?!\.\d)(%?)")
RANGE_END = re.compile(r"(?:[-\u2013]\d+(?:\.\d+)?)?(" + UNIT + ")?")


@dataclass(frozen=True)
class Figure:
    line: int
    text: str
    value: float
    decimals: int
    percent: bool


@dataclass
class Block:
    artefacts: list[str]
    start: int  # line of the comment (0 = no comment)
    figures: list[Figure]


def resolve(path: str, measurements: Path = MEASUREMENTS, repo: Path = REPO) -> list[Path]:
    path = path.split("#", 1)[0]
    base = repo if path.startswith("documentation/") else measurements
    return sorted(Path(p) for p in glob.glob(str(base / path)))


def select(obj, selector: str) -> list:
    """The parts of a JSON object a selector names: keys separated by /, each a glob (`*`, `?` for a space)."""
    nodes = [obj]
    for part in filter(None, selector.split("/")):
        chosen = []
        for node in nodes:
            items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
            chosen.extend(v for k, v in items if fnmatch.fnmatchcase(str(k), part))
        nodes = chosen
    return nodes


def _plain(line: str) -> str:
    return LINK_TARGET.sub("]", INLINE_CODE.sub(" ", COMMENT.sub(" ", line)))


def figures_in(line: str, lineno: int, next_line: str = "") -> list[Figure]:
    """The figures of one line; the start of the next line is read too, for a unit wrapped onto it."""
    own = _plain(line)
    text = own.rstrip() + " " + _plain(next_line).lstrip()[:12]
    found = []
    for m in FIGURE.finditer(text):
        if m.start() >= len(own.rstrip()):
            break
        sign, digits, percent = m.groups()
        start = m.start(1)
        if sign and start > 0 and (text[start - 1].isalnum() or text[start - 1] in "._"):
            sign = ""  # a range or a hyphenated word, not a sign
        if sign and start > 0 and text[start - 1] in "+-\u2212":
            sign = ""
        value = float(digits) * (-1 if sign in ("-", "\u2212") else 1)
        decimals = len(digits.split(".")[1]) if "." in digits else 0
        unit = RANGE_END.match(text, m.end())
        percent = percent or bool(unit and unit.group(1) == "%")  # "16-18%": both are percentages
        shown = (sign + text[m.start(2):m.end() + (unit.end() - m.end() if unit else 0)]).strip()
        found.append(Figure(lineno, shown, value, decimals, bool(percent)))
    return found


def parse_blocks(markdown: str, skip_rows: set[str] = frozenset()) -> list[Block]:
    """Split a document into blocks (a new block at every heading and every artefacts comment) with their figures."""
    blocks = [Block([], 0, [])]
    fenced = False
    lines = markdown.splitlines()
    for lineno, line in enumerate(lines, 1):
        following = lines[lineno] if lineno < len(lines) else ""
        if FENCE.match(following) or HEADING.match(following) or ARTEFACTS.match(following):
            following = ""
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            continue
        declared = ARTEFACTS.match(line)
        if declared:
            blocks.append(Block(declared.group(1).split(), lineno, []))
            continue
        if HEADING.match(line):
            blocks.append(Block([], lineno, []))
        if line.strip() in skip_rows:
            continue
        blocks[-1].figures.extend(figures_in(line, lineno, following))
    return blocks


def numeric_leaves(obj) -> list[float]:
    out = []
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, dict):
            stack.extend(o.values())
        elif isinstance(o, list):
            stack.extend(o)
        elif isinstance(o, (int, float)) and not isinstance(o, bool) and math.isfinite(o):
            out.append(float(o))
    return out


def matches(figure: Figure, leaves: list[float]) -> bool:
    tolerance = 0.5 * 10 ** -figure.decimals + 1e-9 * max(1.0, abs(figure.value))
    candidates = [figure.value, figure.value / 100] if figure.percent else [figure.value]
    for target in candidates:
        tol = tolerance if target == figure.value else tolerance / 100
        if any(abs(leaf - target) <= tol for leaf in leaves):
            return True
    return False


def check_document(path: Path, name: str, measurements: Path = MEASUREMENTS, repo: Path = REPO,
                   skip_rows: set[str] = frozenset()) -> list[str]:
    """Every problem as 'file:line: message'; empty when every figure traces to a declared artefact."""
    problems = []
    for block in parse_blocks(path.read_text(), skip_rows):
        leaves: list[float] = []
        for artefact in block.artefacts:
            files = resolve(artefact, measurements, repo)
            if not files:
                problems.append(f"{name}:{block.start}: declared artefact {artefact} does not exist")
            selector = artefact.split("#", 1)[1] if "#" in artefact else ""
            parts = [part for file in files if file.suffix == ".json"
                     for part in select(json.loads(file.read_text()), selector)]
            if files and not parts:
                problems.append(f"{name}:{block.start}: {artefact}: nothing in {files[0].name} matches")
            leaves.extend(numeric_leaves(parts))
        for figure in block.figures:
            if not block.artefacts:
                problems.append(f"{name}:{figure.line}: {figure.text} cites no artefact")
            elif not matches(figure, leaves):
                problems.append(f"{name}:{figure.line}: {figure.text} equals no number of the artefacts declared at "
                                f"line {block.start} (to {figure.decimals} decimals)")
    return problems


def _matrix_rows() -> set[str]:
    sys.path.insert(0, str(REPO / "perf"))
    from generalization_matrix import report

    rows = set()
    for folder in MATRIX_FOLDERS:
        out = MEASUREMENTS / "generalization_matrix" / folder
        if list(out.glob("*.json")):
            rows.update(report(out).splitlines()[2:])
    return rows


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


@pytest.mark.parametrize("folder", MATRIX_FOLDERS)
def test_matrix_tables_in_results_are_printed_from_the_artefacts(folder):
    sys.path.insert(0, str(REPO / "perf"))
    from generalization_matrix import report

    out = MEASUREMENTS / "generalization_matrix" / folder
    if not list(out.glob("*.json")):
        pytest.skip(f"no artefacts in {out}")
    results = (REPO / "documentation" / "results.md").read_text()
    rows = report(out).splitlines()[2:]
    assert rows and all(row in results for row in rows), "results.md differs from the artefacts' table"


@pytest.mark.parametrize("doc", CHECKED_DOCS)
def test_every_figure_traces_to_a_declared_artefact(doc):
    problems = check_document(REPO / doc, doc, skip_rows=_matrix_rows())
    assert not problems, ("figures without a matching artefact (cite it with <!-- artefacts: PATH --> before its "
                          "text, put a configuration value in backticks, or remove it):\n" + "\n".join(problems))


def test_derived_figures_are_what_the_script_computes_from_the_artefacts():
    sys.path.insert(0, str(REPO / "perf"))
    from derived_figures import DERIVED, compute

    for name, record in compute().items():
        committed = DERIVED / name
        assert committed.is_file(), f"{committed} missing: run perf/derived_figures.py"
        assert json.loads(committed.read_text()) == json.loads(json.dumps(record)), (
            f"{committed.name} differs from the artefacts: re-run perf/derived_figures.py")


# The checker itself, on a small synthetic document.

def _synthetic(tmp_path: Path, text: str) -> list[str]:
    measurements = tmp_path / "documentation" / "measurements"
    (measurements / "runs").mkdir(parents=True, exist_ok=True)
    (measurements / "runs" / "a.json").write_text(json.dumps(
        {"dice": {"liver": 0.93987, "spleen": 0.8681}, "seconds": [12.34, 13.26], "fraction": 0.9926,
         "delta": -0.0081, "ok": True, "name": "x 0.5"}))
    (tmp_path / "documentation" / "bench").mkdir(exist_ok=True)
    (tmp_path / "documentation" / "bench" / "benchmark.json").write_text(json.dumps({"ratio": 0.3649}))
    doc = tmp_path / "doc.md"
    doc.write_text(text)
    return check_document(doc, "doc.md", measurements, tmp_path)


GOOD = """# Title
Intro with an integer 1250 and a version 2.13.0 and `0.75` in code.

## Results
<!-- artefacts: runs/a.json documentation/bench/benchmark.json -->
Liver 0.940, spleen 0.868 (0.87), 13
s, 13.3 s or 12.3-13.3 s (12-13 s); 99.3% resolved; ratio **0.36x**; Δ -0.008.
```
python run.py --threshold 0.123
```
"""


def test_checker_passes_a_document_whose_figures_are_in_its_artefacts(tmp_path):
    assert _synthetic(tmp_path, GOOD) == []


@pytest.mark.parametrize("wrong, expected", [
    ("Liver 0.940", "Liver 0.941"),          # a wrong digit
    ("spleen 0.868", "spleen 0.8682"),       # more precision than the artefact holds
    ("Δ -0.008", "Δ 0.008"),                 # the sign counts
    ("ratio **0.36x**", "ratio **0.37x**"),
    ("99.3% resolved", "99.4% resolved"),
    ("(12-13 s)", "(12-15 s)"),               # an integer with a unit is a figure too
    ("(12-13 s)", "(11-13 s)"),               # so is the first number of a range
    ("(0.87), 13\ns,", "(0.87), 14\ns,"),      # and a unit wrapped onto the next line
])
def test_checker_fails_on_a_wrong_figure(tmp_path, wrong, expected):
    problems = _synthetic(tmp_path, GOOD.replace(wrong, expected))
    assert len(problems) == 1 and "doc.md:" in problems[0], problems


def test_checker_fails_on_an_uncited_figure_and_a_missing_artefact(tmp_path):
    text = GOOD.replace("Intro with", "Intro (0.5 s) with").replace("runs/a.json", "runs/a.json runs/b.json")
    problems = _synthetic(tmp_path, text)
    assert any(p.startswith("doc.md:2: 0.5 s cites no artefact") for p in problems), problems
    assert any("runs/b.json does not exist" in p for p in problems), problems
    # a heading ends the cited block: the same figure under a new heading is uncited
    problems = _synthetic(tmp_path, GOOD + "\n## Later\nAgain 0.940.\n")
    assert problems == ["doc.md:13: 0.940 cites no artefact"], problems


def test_checker_does_not_convert_units(tmp_path):
    # 12.34 s is 0.21 min: a leaf in seconds does not cite minutes
    problems = _synthetic(tmp_path, GOOD.replace("13.3 s or", "0.21 min or"))
    assert len(problems) == 1 and "0.21" in problems[0], problems


def test_checker_selectors_narrow_an_artefact(tmp_path):
    narrowed = GOOD.replace("runs/a.json ", "runs/a.json#dice/* runs/a.json#seconds runs/a.json#fraction "
                                            "runs/a.json#delta ")
    assert _synthetic(tmp_path, narrowed) == []
    # the spleen's 0.868 is in the file but not in the part cited
    problems = _synthetic(tmp_path, narrowed.replace("#dice/*", "#dice/liver"))
    assert len(problems) == 2 and all("0.868" in p or "0.87" in p for p in problems), problems
    problems = _synthetic(tmp_path, narrowed.replace("#dice/*", "#dice/pancreas"))
    assert any("runs/a.json#dice/pancreas: nothing in a.json matches" in p for p in problems), problems
