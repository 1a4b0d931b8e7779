"""The joint label space: class names (= prompts) of several datasets, in canonical lexicon names, with their hierarchy.

1. Canonical names. Each dataset's class name becomes its canonical name in the anatomy lexicon
   (textnnunet/text/anatomy_lexicon.json: `kidney_left` -> `left kidney`, `Liver_Tumour` -> `liver tumor`); the
   dataset's own name stays a synonym. A name the lexicon lacks stays as it is. A dataset may decide itself with
   `"canonical_names": {"<label name>": "<name to use>"}` in its dataset.json (that wins over the lexicon; give the
   label's own name to keep it). `label_space.canonical_names` records every dataset's mapping.
2. Merging. A class of a later dataset joins an earlier class when its name is that class's name or one of its
   synonyms, or when one of its synonyms is that class's name; the first name seen stays the class name. A synonym
   that would point at two classes is an error. Order is stable: datasets in the given order, classes in their
   declared order.
3. Hierarchy. `label_space.hierarchy` gives each class that lies inside another class of the union its parent:
   from the lexicon (`left kidney` is the left side of `kidney`, `kidney tumor` a part of it; the nearest ancestor
   that is a class) or, for names the lexicon lacks, from nnU-Net region syntax within a dataset (a class whose
   label values are a proper subset of another's lies inside it). Training turns it into voxel-wise knowledge
   (textnnunet.training.sampling, textnnunet.training.loss.PartialAnnotation).
"""
from __future__ import annotations

from textnnunet.dataset.description import DatasetDescription, normalise_class_name
from textnnunet.errors import UserError
from textnnunet.text.lexicon import AnatomyLexicon, load_lexicon

CANONICAL_NAMES_KEY = "canonical_names"


def build_label_space(descs: list[DatasetDescription], lexicon: AnatomyLexicon | None = None) -> dict:
    """{"classes": [{"name", "synonyms"}], "datasets": {dataset: {class: [label values]}},
    "canonical_names": {dataset: {label name: class}}, "hierarchy": {class: {"parent", "relation", "from"}},
    "lexicon_version": str}."""
    lexicon = lexicon or load_lexicon()
    canonical: list[str] = []
    synonyms: dict[str, list[str]] = {}
    lookup: dict[str, tuple[str, str]] = {}  # any known name -> (canonical name, dataset that introduced it)
    per_dataset: dict[str, dict[str, list[int]]] = {}
    mappings: dict[str, dict[str, str]] = {}
    for desc in descs:
        overrides = _canonical_overrides(desc)
        annotated: dict[str, list[int]] = {}
        mappings[desc.name] = {}
        for name, values in desc.classes.items():
            chosen = overrides.get(name) or lexicon.canonical_name(name) or name
            words = [chosen, *([name] if name != chosen else []), *desc.synonyms.get(name, [])]
            target = _resolve(chosen, words, lookup, synonyms)
            if target in annotated:
                raise UserError(f"{desc.folder / 'dataset.json'}: classes '{name}' and another class both mean "
                                f"'{target}' (through synonyms or the anatomy lexicon); merge them into one region")
            if target not in synonyms:
                canonical.append(target)
                synonyms[target] = []
                lookup[target] = (target, desc.name)
            for word in words:
                _register(word, target, desc, lookup, synonyms)
            annotated[target] = [int(v) for v in values]
            mappings[desc.name][name] = target
        per_dataset[desc.name] = annotated
    return {"classes": [{"name": c, "synonyms": synonyms[c]} for c in canonical], "datasets": per_dataset,
            "canonical_names": mappings, "hierarchy": class_hierarchy(canonical, per_dataset, lexicon),
            "lexicon_version": lexicon.version}


def _canonical_overrides(desc: DatasetDescription) -> dict[str, str]:
    raw = (desc.raw or {}).get(CANONICAL_NAMES_KEY) or {}
    where = desc.folder / "dataset.json"
    if not isinstance(raw, dict) or not all(isinstance(v, str) and v.strip() for v in raw.values()):
        raise UserError(f"{where}: '{CANONICAL_NAMES_KEY}' must map label names to non-empty names")
    overrides = {normalise_class_name(k): normalise_class_name(v) for k, v in raw.items()}
    unknown = sorted(set(overrides) - set(desc.classes))
    if unknown:
        raise UserError(f"{where}: '{CANONICAL_NAMES_KEY}' names unknown label(s) {', '.join(unknown)}")
    return overrides


def _resolve(name: str, words: list[str], lookup: dict[str, tuple[str, str]], synonyms: dict[str, list[str]]) -> str:
    """The class `name` joins: by its own name (a known class or synonym), else by a synonym that is a class name.

    Two classes that merely share a synonym are not merged; `_register` reports that clash instead.
    """
    if name in lookup:
        return lookup[name][0]
    named = [w for w in words if w in synonyms]
    return named[0] if named else name


def _register(word: str, target: str, desc: DatasetDescription, lookup: dict[str, tuple[str, str]],
              synonyms: dict[str, list[str]]) -> None:
    if word in lookup and lookup[word][0] != target:
        owner, source = lookup[word]
        raise UserError(f"{desc.folder / 'dataset.json'}: '{word}' names '{target}' here but '{owner}' in "
                        f"{source}; one prompt cannot mean two classes")
    lookup.setdefault(word, (target, desc.name))
    if word != target and word not in synonyms[target]:
        synonyms[target].append(word)


# ------------------------------------------------------------------------------------------------
# Hierarchy


def class_hierarchy(classes: list[str], per_dataset: dict[str, dict[str, list[int]]],
                    lexicon: AnatomyLexicon) -> dict[str, dict[str, str]]:
    """{class: {"parent": class, "relation": "side" | "part", "from": "lexicon" | "<dataset> regions"}}."""
    hierarchy: dict[str, dict[str, str]] = {}
    present = set(classes)
    for cls in classes:
        found = _lexicon_parent(cls, present, lexicon)
        if found is not None:
            hierarchy[cls] = {"parent": found[0], "relation": found[1], "from": "lexicon"}
    for dataset, annotated in per_dataset.items():
        for child, parent in _region_parents(annotated):
            hierarchy.setdefault(child, {"parent": parent, "relation": "part", "from": f"{dataset} regions"})
    return {cls: hierarchy[cls] for cls in classes if cls in hierarchy}


def _lexicon_parent(cls: str, present: set[str], lexicon: AnatomyLexicon) -> tuple[str, str] | None:
    """The nearest lexicon ancestor that is a class of the union, with the relation ('side' only for a direct side)."""
    entry = lexicon.entries.get(cls)
    if entry is None:
        return None
    for depth, ancestor in enumerate(lexicon.ancestors(cls)):
        if ancestor in present:
            return ancestor, entry.relation if depth == 0 else "part"
    return None


def _region_parents(annotated: dict[str, list[int]]) -> list[tuple[str, str]]:
    """(child, parent) where the child's label values are a proper subset of the parent's (the smallest such)."""
    found = []
    for child, values in annotated.items():
        containers = [(len(v), name) for name, v in annotated.items() if set(values) < set(v)]
        if containers:
            found.append((child, min(containers)[1]))
    return found


def class_names(label_space: dict) -> list[str]:
    return [c["name"] for c in label_space["classes"]]


def describe_label_space(label_space: dict) -> list[str]:
    """Lines for people: how each dataset's labels were named and the hierarchy (what plan_and_preprocess prints)."""
    lexicon = load_lexicon()
    lines = []
    for dataset, mapping in (label_space.get("canonical_names") or {}).items():
        parts = []
        for label, cls in mapping.items():
            if label != cls:
                parts.append(f"{label} -> {cls}")
            else:
                parts.append(label if cls in lexicon else f"{label} (not in the lexicon, kept)")
        lines.append(f"{dataset}: {', '.join(parts)}")
    for child, link in (label_space.get("hierarchy") or {}).items():
        kind = "the " + lexicon.entries[child].side + " side" if link["relation"] == "side" and child in lexicon \
            else "a part"
        lines.append(f"hierarchy: '{child}' is {kind} of '{link['parent']}' ({link['from']})")
    return lines
