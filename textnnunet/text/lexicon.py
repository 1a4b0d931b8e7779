"""The anatomy lexicon shipped with the package: canonical structure names, their synonyms, and how they relate.

`anatomy_lexicon.json` (next to this file, versioned) lists the structures of the public label lists users pool
(TotalSegmentator CT v2, the ten MSD tasks, KiTS23, AMOS22, BTCV, WORD, FLARE22; documentation/prompts.md says
how names were chosen). Each entry has
    name      canonical name: lower case words, side first ("left kidney"), tumours as "<organ> tumor", US spelling
    synonyms  other names and abbreviations (the normalised public label names are among them)
    parent    the structure it belongs to, with relation "side" (a left/right half of the parent) or "part"
              (lies inside the parent), or null
    side      "left"/"right" for side children
    sources   {source list: label name in that list}

Lookups take any spelling: `AnatomyLexicon.normalise` lower-cases, drops punctuation and leading articles and
maps British spellings (a word list in the file) to US ones. The file also lists lesion words (a prompt that names
a lesion must not land on an organ, and vice versa) and filler words ('segmentation', 'normal', ...) that do not
change which structure a prompt means.
"""
from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from textnnunet.errors import UserError

LEXICON_FILE = Path(__file__).with_name("anatomy_lexicon.json")
RELATIONS = ("side", "part")
SIDES = ("left", "right")
_ARTICLES = ("the", "a", "an")


@dataclass(frozen=True)
class LexiconEntry:
    name: str
    synonyms: tuple[str, ...] = ()
    parent: str | None = None
    relation: str | None = None
    side: str | None = None
    sources: dict[str, str] = field(default_factory=dict, compare=False)
    note: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """The canonical name followed by the synonyms."""
        return (self.name, *self.synonyms)


class AnatomyLexicon:
    def __init__(self, entries: list[LexiconEntry], version: str, spelling_variants: dict[str, str],
                 side_words: dict[str, str], sources: dict[str, Any], where: str = "lexicon",
                 lesion_words: list[str] | None = None, filler_words: list[str] | None = None) -> None:
        self.version = version
        self.lesion_words = frozenset(lesion_words or ())
        self.filler_words = frozenset(filler_words or ())
        self.sources = sources
        self._spelling = dict(spelling_variants)
        self._side_words = dict(side_words)
        self.entries: dict[str, LexiconEntry] = {}
        for entry in entries:
            if entry.name in self.entries:
                raise UserError(f"{where}: entry '{entry.name}' appears twice")
            self.entries[entry.name] = entry
        self._lookup = self._build_lookup(where)
        self._check_parents(where)
        self._children: dict[str, list[str]] = {}
        for entry in self.entries.values():
            if entry.parent is not None:
                self._children.setdefault(entry.parent, []).append(entry.name)

    # -- construction ---------------------------------------------------------------------------

    def _build_lookup(self, where: str) -> dict[str, str]:
        lookup: dict[str, str] = {}
        for entry in self.entries.values():
            for word in entry.names:
                key = self.normalise(word)
                if lookup.get(key, entry.name) != entry.name:
                    raise UserError(f"{where}: '{word}' names both '{lookup[key]}' and '{entry.name}'")
                lookup[key] = entry.name
        return lookup

    def _check_parents(self, where: str) -> None:
        for entry in self.entries.values():
            if entry.parent is None:
                continue
            if entry.parent not in self.entries:
                raise UserError(f"{where}: '{entry.name}' has parent '{entry.parent}', which is not an entry")
            if entry.relation not in RELATIONS:
                raise UserError(f"{where}: '{entry.name}' has relation {entry.relation!r} (expected side or part)")
            if (entry.relation == "side") != (entry.side in SIDES):
                raise UserError(f"{where}: '{entry.name}': a side child needs side left/right, and only it")

    # -- names ----------------------------------------------------------------------------------

    def normalise(self, text: str) -> str:
        """Lower case, punctuation and leading articles dropped, British spellings mapped to US ones."""
        words = re.sub(r"[^a-z0-9]+", " ", str(text).lower()).split()
        while len(words) > 1 and words[0] in _ARTICLES:
            words = words[1:]
        return " ".join(self._spelling.get(w, w) for w in words)

    def lookup(self, text: str) -> LexiconEntry | None:
        """The entry whose name or synonym `text` is (in any spelling), or None."""
        name = self._lookup.get(self.normalise(text))
        return None if name is None else self.entries[name]

    def canonical_name(self, label: str) -> str | None:
        """Canonical name of a dataset label ('kidney_left' -> 'left kidney'), None if the lexicon lacks it."""
        entry = self.lookup(label)
        return None if entry is None else entry.name

    def split_side(self, text: str) -> tuple[str, str] | None:
        """('right', 'tumor of kidney') for 'left kidney tumor', 'kidney tumor, left', 'tumour of the right kidney':
        a side word first (abbreviations too: 'lt', 'r') or 'left'/'right' anywhere; None without one."""
        words = self.normalise(text).split()
        if len(words) < 2:
            return None
        if words[0] in self._side_words:
            rest = words[2:] if words[1] in ("sided", "side") and len(words) > 2 else words[1:]
            return self._side_words[words[0]], " ".join(rest)
        for i, word in enumerate(words):
            if word in SIDES:
                skip = 2 if i + 1 < len(words) and words[i + 1] in ("sided", "side") else 1
                return word, " ".join(words[:i] + words[i + skip:])
        return None

    def without_fillers(self, text: str) -> str:
        """The words that name a structure: 'normal kidney segmentation' -> 'kidney' ('' if nothing is left)."""
        return " ".join(w for w in self.normalise(text).split() if w not in self.filler_words)

    def is_lesion(self, text: str) -> bool:
        """Whether `text` names a lesion (tumour, mass, cyst, stone, ...) rather than an anatomical structure."""
        return any(word in self.lesion_words for word in self.normalise(text).split())

    def surface_forms(self) -> Iterator[tuple[str, str]]:
        """(name or synonym, entry name) for every way the lexicon names a structure."""
        for entry in self.entries.values():
            for word in entry.names:
                yield word, entry.name

    # -- relations ------------------------------------------------------------------------------

    def children(self, name: str, relation: str | None = None) -> list[str]:
        return [c for c in self._children.get(name, []) if relation is None or self.entries[c].relation == relation]

    def side_child(self, name: str, side: str) -> str | None:
        """'left kidney' for ('kidney', 'left'); None when the lexicon has no such side."""
        for child in self.children(name, "side"):
            if self.entries[child].side == side:
                return child
        return None

    def ancestors(self, name: str) -> list[str]:
        """Parent, grandparent, ... of an entry (nearest first)."""
        chain, entry = [], self.entries.get(name)
        while entry is not None and entry.parent is not None and entry.parent not in chain:
            chain.append(entry.parent)
            entry = self.entries[entry.parent]
        return chain

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __len__(self) -> int:
        return len(self.entries)


def _entry_from_json(raw: Any, where: str) -> LexiconEntry:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise UserError(f"{where}: every entry needs a 'name' string, got {raw!r}")
    return LexiconEntry(name=raw["name"], synonyms=tuple(raw.get("synonyms") or ()), parent=raw.get("parent"),
                        relation=raw.get("relation"), side=raw.get("side"), sources=dict(raw.get("sources") or {}),
                        note=raw.get("note"))


def read_lexicon(path: str | Path) -> AnatomyLexicon:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read the anatomy lexicon ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        raise UserError(f"{path}: not an anatomy lexicon (needs an 'entries' list)")
    entries = [_entry_from_json(raw, str(path)) for raw in data["entries"]]
    return AnatomyLexicon(entries, str(data.get("version", "?")), data.get("spelling_variants") or {},
                          data.get("side_words") or {}, data.get("sources") or {}, where=str(path),
                          lesion_words=data.get("lesion_words") or [], filler_words=data.get("filler_words") or [])


@functools.lru_cache(maxsize=1)
def load_lexicon() -> AnatomyLexicon:
    """The lexicon shipped with the package (read once per process)."""
    return read_lexicon(LEXICON_FILE)


def edit_distance(a: str, b: str, limit: int = 3) -> int:
    """Damerau-Levenshtein distance (adjacent transpositions count 1); anything above `limit` is `limit + 1`."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, start=1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], previous2[j - 2] + 1)
        if min(current) > limit:
            return limit + 1
        previous2, previous = previous, current
    return min(previous[-1], limit + 1)


def typo_allowance(word: str) -> int:
    """How many typing errors a word of this length may carry and still be recognised: 0 below 3 characters,
    1 up to 7, 2 from 8 (shorter words are too close to each other: 'l1', 'l2')."""
    return 0 if len(word) < 3 else 1 if len(word) < 8 else 2
