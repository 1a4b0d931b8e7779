"""Rule-based postprocessing: a probability threshold per class, then rules on the binary masks (keep the largest
component, keep a lesion inside its organ).

Rules live in `postprocessing.json` (written by textnnunet_find_best_configuration, read by textnnunet_predict
--postprocessing and textnnunet_ensemble --postprocessing):
```
{"threshold": {"liver": 0.7}, "largest_component": ["liver", "spleen"], "constrain_to_organ": {"liver tumor": "liver"}}
```
Class names are normalised prompts. `threshold` is optional (files written before it existed stay valid); a class
without one is thresholded at the command's `--threshold` (default 0.5). Order of application: the thresholds make the masks;
then a class is processed after the organ it is constrained to (so a tumour is cut with the already cleaned
organ), and within a class the organ constraint comes before the largest-component step (so an outside false
positive cannot win as "largest").
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from textnnunet.dataset.description import normalise_class_name
from textnnunet.errors import UserError
from textnnunet.preprocessing.preprocessor import per_channel_thresholds
from textnnunet.utils.files import atomic_write_json, load_json

POSTPROCESSING_FILE = "postprocessing.json"
RULE_KEYS = ("largest_component", "constrain_to_organ")
OPTIONAL_KEYS = ("threshold", "notes")  # notes: free text for people, ignored by the code
_LESION = re.compile(r"^(?P<organ>.+) (tumou?rs?|lesions?|cysts?)$")


# ------------------------------------------------------------------------------------------------ operations
def keep_largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of a binary mask (full connectivity, as nnU-Net); same dtype as the input.

    An empty mask stays empty; between equally large components the first in scan order is kept.
    """
    mask = np.asarray(mask)
    foreground = mask.astype(bool)
    labels, n = ndimage.label(foreground, structure=ndimage.generate_binary_structure(mask.ndim, mask.ndim))
    if n <= 1:
        return mask.copy()
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return (labels == int(np.argmax(sizes))).astype(mask.dtype)


def constrain_to(mask: np.ndarray, organ_mask: np.ndarray) -> np.ndarray:
    """The mask restricted to its organ (a liver tumour outside the liver is a false positive)."""
    mask = np.asarray(mask)
    if mask.shape != np.shape(organ_mask):
        raise ValueError(f"mask shape {mask.shape} != organ mask shape {np.shape(organ_mask)}")
    return (mask.astype(bool) & np.asarray(organ_mask, dtype=bool)).astype(mask.dtype)


def organ_of(class_name: str, vocabulary: Iterable[str]) -> str | None:
    """'liver tumor' -> 'liver' when 'liver' is a class too ('X tumor|tumour|lesion|cyst' belongs to 'X')."""
    m = _LESION.match(normalise_class_name(class_name))
    if m is None:
        return None
    organ = m.group("organ")
    return organ if organ in {normalise_class_name(c) for c in vocabulary} else None


def organ_pairs(classes: Iterable[str]) -> dict[str, str]:
    """{lesion class: organ class} for every lesion class whose organ is in `classes`."""
    classes = [normalise_class_name(c) for c in classes]
    return {c: organ for c in classes if (organ := organ_of(c, classes)) is not None}


# --------------------------------------------------------------------------------------------------- rules
def empty_rules() -> dict:
    return {"threshold": {}, "largest_component": [], "constrain_to_organ": {}}


def validate_rules(rules: object, source: str = POSTPROCESSING_FILE) -> dict:
    """Checked and normalised rules; a one-line UserError naming `source` otherwise."""
    if not isinstance(rules, Mapping):
        raise UserError(f"{source}: expected a JSON object with {', '.join(RULE_KEYS)}")
    unknown = sorted(set(rules) - set(RULE_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        raise UserError(f"{source}: unknown key(s) {', '.join(unknown)} "
                        f"(expected {', '.join(RULE_KEYS)}, optionally {', '.join(OPTIONAL_KEYS)})")
    largest = rules.get("largest_component", [])
    if not isinstance(largest, list) or not all(isinstance(c, str) for c in largest):
        raise UserError(f"{source}: 'largest_component' must be a list of class names")
    constrain = rules.get("constrain_to_organ", {})
    if not isinstance(constrain, Mapping) or not all(isinstance(v, str) for v in constrain.values()):
        raise UserError(f"{source}: 'constrain_to_organ' must map class names to organ class names")
    constrain = {normalise_class_name(k): normalise_class_name(v) for k, v in constrain.items()}
    for lesion, organ in constrain.items():
        if lesion == organ:
            raise UserError(f"{source}: class '{lesion}' is constrained to itself")
    _processing_order(constrain, set(constrain) | set(constrain.values()), source)  # rejects cycles
    out = {"largest_component": list(dict.fromkeys(normalise_class_name(c) for c in largest)),
           "constrain_to_organ": constrain}
    if "threshold" in rules:  # kept absent when absent: an older file loads as it always did
        out = {"threshold": _validate_thresholds(rules["threshold"], source), **out}
    if "notes" in rules:
        out["notes"] = rules["notes"]
    return out


def _validate_thresholds(thresholds: object, source: str) -> dict[str, float]:
    """{normalised class: threshold}, each strictly between 0 and 1 (0 or 1 would make a full or an empty mask)."""
    if not isinstance(thresholds, Mapping):
        raise UserError(f"{source}: 'threshold' must map class names to probability thresholds")
    out: dict[str, float] = {}
    for name, value in thresholds.items():
        # bool is an int in Python, and JSON's true must not read as a threshold of 1
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise UserError(f"{source}: threshold of '{name}' must be a number strictly between 0 and 1, "
                            f"got {value!r}")
        key = normalise_class_name(name)
        if key in out and out[key] != value:
            raise UserError(f"{source}: 'threshold' gives class '{key}' two values ({out[key]} and {value})")
        out[key] = float(value)
    return out


def load_postprocessing(path: str | Path) -> dict:
    return validate_rules(load_json(path), str(path))


def save_postprocessing(path: str | Path, rules: Mapping) -> None:
    atomic_write_json(path, validate_rules(rules, str(path)))


def _processing_order(constrain: Mapping[str, str], classes: Iterable[str], source: str = "rules") -> list[str]:
    """Classes ordered so each comes after the organ it is constrained to."""
    order: list[str] = []
    for name in classes:
        chain = [name]
        while chain[-1] in constrain and constrain[chain[-1]] not in order:
            nxt = constrain[chain[-1]]
            if nxt in chain:
                raise UserError(f"{source}: 'constrain_to_organ' has a cycle ({' -> '.join(chain + [nxt])})")
            chain.append(nxt)
        for c in reversed(chain):
            if c not in order:
                order.append(c)
    return order


# ------------------------------------------------------------------------------------------------- applying
def class_thresholds(rules: Mapping | None, classes: Sequence[str | None], default: float) -> list[float]:
    """The probability threshold of each of `classes` (None: a zero-shot prompt): its rule, else `default`."""
    own = validate_rules(rules).get("threshold", {}) if rules is not None else {}
    return [own.get(normalise_class_name(c), default) if c is not None else default for c in classes]


def threshold_probabilities(probabilities: Sequence[np.ndarray], thresholds: Sequence[float]) -> list[np.ndarray]:
    """uint8 masks `probability > threshold`, one threshold per channel."""
    thresholds = per_channel_thresholds(thresholds, len(probabilities))
    return [(np.asarray(p) > t).astype(np.uint8) for p, t in zip(probabilities, thresholds)]


def skipped_constraints(rules: Mapping, classes: Iterable[str | None]) -> list[str]:
    """One note per organ constraint of `rules` that cannot apply because its organ is not among `classes`."""
    names = {normalise_class_name(c) for c in classes if c is not None}
    return [f"'{lesion}' is constrained to '{organ}', which was not predicted: constraint skipped"
            for lesion, organ in validate_rules(rules)["constrain_to_organ"].items()
            if lesion in names and organ not in names]


def postprocess_masks(masks: Sequence[np.ndarray], classes: Sequence[str | None], rules: Mapping
                      ) -> tuple[list[np.ndarray], list[str]]:
    """Apply `rules` to masks given with their class names (None: a zero-shot prompt, left alone).

    Several masks may name the same class (a prompt and its synonym); an organ constraint uses the first mask of
    the organ. Returns the processed masks in input order and `skipped_constraints` (organ not among the masks).
    """
    rules = validate_rules(rules)
    largest, constrain = set(rules["largest_component"]), rules["constrain_to_organ"]
    names = [normalise_class_name(c) if c is not None else None for c in classes]
    out: list[np.ndarray | None] = [None] * len(masks)
    for name in _processing_order(constrain, [n for n in dict.fromkeys(names) if n is not None]):
        for i in (i for i, n in enumerate(names) if n == name):
            mask = np.asarray(masks[i])
            organ = constrain.get(name)
            if organ is not None and organ in names:
                mask = constrain_to(mask, out[names.index(organ)])
            out[i] = keep_largest_component(mask) if name in largest else mask
    processed = [np.asarray(masks[i]) if m is None else m for i, m in enumerate(out)]
    return processed, skipped_constraints(rules, names)


def apply_postprocessing(masks: Mapping[str, np.ndarray], rules: Mapping) -> dict[str, np.ndarray]:
    """{class: mask} -> {class: postprocessed mask}; constraints whose organ is absent are skipped."""
    processed, _ = postprocess_masks(list(masks.values()), list(masks), rules)
    return dict(zip(masks, processed))
