"""The joint label space: class names (= prompts) of several datasets, merged through their synonyms.

A class of a later dataset joins an earlier class when its name is that class's name or one of its
synonyms ("hepatic parenchyma" joins "liver" if a dataset declared it as a liver synonym), or when one
of its synonyms is that class's name; the first name seen stays the class name. A synonym that would
point at two classes is an error. Order is
stable: datasets in the given order, classes in their declared order.
"""
from __future__ import annotations

from textnnunet.dataset.description import DatasetDescription
from textnnunet.errors import UserError


def build_label_space(descs: list[DatasetDescription]) -> dict:
    """{"classes": [{"name", "synonyms"}], "datasets": {dataset: {class: [label values]}}}."""
    canonical: list[str] = []
    synonyms: dict[str, list[str]] = {}
    lookup: dict[str, tuple[str, str]] = {}  # any known name -> (canonical name, dataset that introduced it)
    per_dataset: dict[str, dict[str, list[int]]] = {}
    for desc in descs:
        annotated: dict[str, list[int]] = {}
        for name, values in desc.classes.items():
            words = [name, *desc.synonyms.get(name, [])]
            target = _resolve(name, words, lookup, synonyms)
            if target in annotated:
                raise UserError(f"{desc.folder / 'dataset.json'}: classes '{name}' and another class both mean "
                                f"'{target}' (through synonyms); merge them into one region")
            if target not in synonyms:
                canonical.append(target)
                synonyms[target] = []
                lookup[target] = (target, desc.name)
            for word in words:
                _register(word, target, desc, lookup, synonyms)
            annotated[target] = [int(v) for v in values]
        per_dataset[desc.name] = annotated
    return {"classes": [{"name": c, "synonyms": synonyms[c]} for c in canonical], "datasets": per_dataset}


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


def class_names(label_space: dict) -> list[str]:
    return [c["name"] for c in label_space["classes"]]
