"""Data flows one way: a folder of textnnunet imports only folders below it in LAYERS (parsed from the source, lazy
imports inside functions included). A new folder must be placed in LAYERS before it can be imported."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import textnnunet

PACKAGE = Path(textnnunet.__file__).parent
# Bottom first. training sits above inference and evaluation (it validates a fold with the predictor and the metrics,
# as nnU-Net's trainer does); post-processing below inference (textnnunet_predict applies it); the demo on top (it
# runs the commands as a user would).
LAYERS = ["errors", "utils", "paths", "imageio", "network", "dataset", "text", "experiment_planning", "preprocessing",
          "postprocessing", "inference", "evaluation", "training", "benchmark", "cli", "demo"]
RANK = {name: i for i, name in enumerate(LAYERS)}


def folder_of(path: Path) -> str:
    """The layer of a source file: its folder under textnnunet/, or its module name for top-level modules."""
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imported_folders(path: Path) -> set[str]:
    """The textnnunet folders (or top-level modules) a file imports, absolute or relative, at any depth."""
    package_parts = list(path.relative_to(PACKAGE).parent.parts)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                modules = [".".join(["textnnunet", *base, *([node.module] if node.module else [])])]
            else:
                modules = [node.module or ""]
        else:
            continue
        for module in modules:
            parts = module.split(".")
            if parts[0] == "textnnunet" and len(parts) > 1:
                found.add(parts[1])
    return found


def upward_imports() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = folder_of(path)
        if source == "__init__":
            continue
        for target in imported_folders(path) - {source}:
            relative = str(path.relative_to(PACKAGE))
            if source not in RANK or target not in RANK:
                problems.append(f"{relative}: {source} or {target} is not in LAYERS")
            elif RANK[target] > RANK[source]:
                problems.append(f"{relative} ({source}) imports {target}, which is above it")
    return problems


def test_no_folder_imports_a_higher_one():
    assert upward_imports() == []


def test_the_check_sees_upward_and_relative_imports(tmp_path, monkeypatch):
    fake = tmp_path / "textnnunet"
    (fake / "network").mkdir(parents=True)
    (fake / "network" / "a.py").write_text("def f():\n    from textnnunet.training import trainer\n")
    (fake / "network" / "b.py").write_text("from ..imageio import sitk_io\nfrom . import a\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert imported_folders(fake / "network" / "b.py") == {"imageio", "network"}
    assert upward_imports() == ["network/a.py (network) imports training, which is above it"]
