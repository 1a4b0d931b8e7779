"""What a typed prompt means for a trained model: one decision, shared by predict and embed_prompts.

Rules, in order (documentation/prompts.md):
  1. the class name or a dataset.json synonym -> the class;
  2. a name or synonym of an anatomy-lexicon entry (any spelling) -> that entry's trained class, the derived side
     of a trained class ('left kidney' on a `kidney` model), the union of its trained sides ('kidney' on a model
     of 'left kidney' and 'right kidney'), or a refusal naming the untrained structure;
  3. a side word ('lt kidney', 'kidney, right', 'tumour of the right kidney') -> the side of what the rest
     resolves to, for paired structures and what lies inside them;
  4. misspelt words, each within the typing errors its length allows, of exactly one structure's name -> as
     rule 2 (words the lexicon knows are never corrected);
  5. text similarity to every lexicon and vocabulary name: below the encoder's calibrated bar refused (near
     nothing), a lesion wording landing on an organ (or the reverse) refused, otherwise as rule 2.
Filler words ('normal', 'segmentation') are dropped before rules 3-5. `allow_unknown` turns refusals into
zero-shot predictions with the prompt's own vector, as before.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from textnnunet.errors import UserError
from textnnunet.text.cache import EmbeddingCache
from textnnunet.text.encoders import TextEncoder, identity_key
from textnnunet.text.lexicon import AnatomyLexicon, LexiconEntry, edit_distance, load_lexicon, typo_allowance

if TYPE_CHECKING:
    from textnnunet.text.vocabulary import Vocabulary

# Calibrated on the prompt set (textnnunet/text/prompt_set.json; `python -m textnnunet.text.prompt_set`): the middle
# of the range of cosine bars that route no prompt of the set to a wrong structure and refuse the fewest
# in-vocabulary prompts (minilm: 0.71-0.81; documentation/prompts.md). CLIP has no local weights here: its bar is
# a guess, flagged as such in the docs. One-hot vectors carry no similarity: only exact names resolve.
CALIBRATED_SIMILARITY_THRESHOLDS = {"minilm": 0.76, "clip": 0.85, "onehot": 1.0}

DERIVED_LATERALITY = "laterality"
DERIVED_UNION = "union"


@dataclass(frozen=True)
class Resolution:
    """What one typed prompt turned into.

    class_name  the trained class whose head is asked (None: refused, a union of parts, or zero-shot when unknown
                prompts are allowed)
    structure   what the output shows: the class, the side derived from it ('left kidney'), or the whole joined
                from its trained sides ('kidney'); None when refused
    relation    how: 'class', 'synonym', 'lexicon synonym', 'spelling', 'similar', 'laterality', 'zero-shot',
                'refused'
    side        'left'/'right' when only that side of the class is kept (derived: 'laterality')
    parts       the trained classes whose union is the output (derived: 'union': 'kidney' from its two sides)
    nearest     the name the prompt matched (or came closest to), similarity its cosine (1.0 for exact names)
    refusal     why the prompt was refused (None otherwise)
    """

    prompt: str
    normalised: str
    class_name: str | None
    nearest: str
    similarity: float
    exact: bool
    embedding: np.ndarray | None = field(default=None, repr=False, compare=False)
    relation: str = "class"
    structure: str | None = None
    side: str | None = None
    refusal: str | None = None
    parts: tuple[str, ...] = ()

    @property
    def derived(self) -> str | None:
        if self.side is not None:
            return DERIVED_LATERALITY
        return DERIVED_UNION if self.parts else None

    @property
    def refused(self) -> bool:
        return self.refusal is not None

    def to_json(self) -> dict:
        """The decision as predictions.json and embed_prompts --json record it."""
        record = {"class": self.class_name, "structure": self.structure, "relation": self.relation,
                  "matched": self.nearest, "similarity": round(float(self.similarity), 4)}
        if self.side is not None:
            record.update(derived=self.derived, side=self.side)
        if self.parts:
            record.update(derived=self.derived, parts=list(self.parts))
        if self.refusal:
            record["refusal"] = self.refusal
        return record


def describe_resolution(r: Resolution) -> str:
    """One line per prompt, worded the same in textnnunet_predict and textnnunet_embed_prompts."""
    head = f"prompt '{r.prompt}'"
    if r.refused:
        return f"{head}: refused: {r.refusal}"
    if r.parts:
        return (f"{head} -> '{r.structure}': derived: union (of the trained classes "
                f"{' and '.join(repr(p) for p in r.parts)})")
    if r.class_name is None:
        return f"{head}: zero-shot with its own vector (nearest name '{r.nearest}', cosine {r.similarity:.3f})"
    if r.side is not None:
        return (f"{head} -> '{r.structure}': derived: laterality (trained class '{r.class_name}', components on the "
                f"patient's {r.side} of the midline)")
    if r.relation == "class":
        return f"{head}: trained class '{r.class_name}'"
    if r.relation == "synonym":
        return f"{head}: synonym of trained class '{r.class_name}'"
    if r.relation == "lexicon synonym":
        return f"{head}: lexicon synonym of trained class '{r.class_name}'"
    if r.relation == "spelling":
        return f"{head} -> '{r.class_name}' (read as '{r.nearest}')"
    return f"{head} -> '{r.class_name}' (nearest name '{r.nearest}', cosine {r.similarity:.3f})"


# ------------------------------------------------------------------------------------------------
# Text similarity to every name the lexicon and the vocabulary know


_LEXICON_VECTORS: dict[tuple[str, int], tuple[list[str], list[str], np.ndarray]] = {}


def _lexicon_vectors(encoder: TextEncoder, lexicon: AnatomyLexicon) -> tuple[list[str], list[str], np.ndarray]:
    """(names, entry of each name, vectors) of the lexicon's names; encoded once per encoder and process."""
    key = (identity_key(encoder.identity()), id(lexicon))
    if key not in _LEXICON_VECTORS:
        forms = list(lexicon.surface_forms())
        _LEXICON_VECTORS[key] = ([f for f, _ in forms], [e for _, e in forms],
                                 encoder.encode([f for f, _ in forms]))
    return _LEXICON_VECTORS[key]


@dataclass
class _NameIndex:
    """Unit vectors of every known name and what each name stands for."""

    names: list[str]
    targets: list[tuple[str, str]]  # ('class', class name) or ('entry', lexicon entry name)
    vectors: np.ndarray

    def nearest(self, query: np.ndarray) -> tuple[str, tuple[str, str], float]:
        q = query / max(float(np.linalg.norm(query)), 1e-12)
        scores = self.vectors @ q
        best = int(np.argmax(scores))
        return self.names[best], self.targets[best], float(scores[best])


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def _name_index(vocab: "Vocabulary", encoder: TextEncoder, lexicon: AnatomyLexicon,
                cache: EmbeddingCache | None) -> _NameIndex:
    if cache is not None:
        forms = list(lexicon.surface_forms())
        form_names, entry_names = [f for f, _ in forms], [e for _, e in forms]
        form_vectors = cache.get(encoder, form_names)
    else:
        form_names, entry_names, form_vectors = _lexicon_vectors(encoder, lexicon)
    names = list(vocab.classes) + list(form_names)
    targets = [("class", c) for c in vocab.classes] + [("entry", e) for e in entry_names]
    blocks = [np.asarray(vocab.class_embeddings, dtype=np.float32), np.asarray(form_vectors, dtype=np.float32)]
    for cls, vectors in vocab.synonym_embeddings.items():
        if len(vectors):
            names += vocab.synonyms[cls]
            targets += [("class", cls)] * len(vocab.synonyms[cls])
            blocks.append(np.asarray(vectors, dtype=np.float32))
    return _NameIndex(names, targets, _unit_rows(np.concatenate(blocks, axis=0)))


# ------------------------------------------------------------------------------------------------
# The decision


class PromptResolver:
    """Resolves prompts against one embedded vocabulary, the lexicon and a similarity bar."""

    def __init__(self, vocab: "Vocabulary", threshold: float, encoder: TextEncoder | None = None,
                 cache: EmbeddingCache | None = None, lexicon: AnatomyLexicon | None = None) -> None:
        self.vocab = vocab
        self.threshold = float(threshold)
        self.encoder = encoder
        self.cache = cache
        self.lexicon = lexicon or load_lexicon()
        self.class_of_entry = self._classes_by_entry()
        self._index: _NameIndex | None = None
        self._words: set[str] | None = None

    def _classes_by_entry(self) -> dict[str, str]:
        """Lexicon entry -> trained class, through the class name or any of its synonyms (first class wins)."""
        mapping: dict[str, str] = {}
        for cls in self.vocab.classes:
            for word in [cls, *self.vocab.synonyms.get(cls, [])]:
                entry = self.lexicon.lookup(word)
                if entry is not None:
                    mapping.setdefault(entry.name, cls)
        return mapping

    # -- helpers --------------------------------------------------------------------------------

    def _class_vector(self, cls: str) -> np.ndarray:
        return np.asarray(self.vocab.class_embeddings[self.vocab.classes.index(cls)], dtype=np.float32)

    def _encoder(self) -> TextEncoder:
        return self.vocab._resolve_encoder(self.encoder)

    def _resolved(self, prompt: str, text: str, cls: str, relation: str, nearest: str, similarity: float,
                  side: str | None = None, structure: str | None = None) -> Resolution:
        return Resolution(prompt, text, cls, nearest, similarity, similarity >= 1.0, self._class_vector(cls),
                          relation, structure or cls, side)

    def _refused(self, prompt: str, text: str, reason: str, nearest: str, similarity: float) -> Resolution:
        return Resolution(prompt, text, None, nearest, similarity, False, None, "refused", None, None, reason)

    # -- rules ----------------------------------------------------------------------------------

    def resolve(self, prompt: str) -> Resolution:
        text = self.vocab._normalised_or_fail(prompt)
        exact = self._by_vocabulary(prompt, text) or self._by_lexicon(prompt, text)
        if exact is not None:
            return exact
        core = self.lexicon.without_fillers(text) or text  # 'normal kidney segmentation' -> 'kidney'
        if core != text:
            exact = self._by_vocabulary(prompt, core) or self._by_lexicon(prompt, core)
        return exact or self._by_side_word(prompt, core) or self._by_spelling(prompt, core) or \
            self._by_similarity(prompt, core)

    def _by_vocabulary(self, prompt: str, text: str) -> Resolution | None:
        cls = self.vocab._lookup.get(text) or self.vocab._lookup.get(self.lexicon.normalise(text))
        if cls is None:
            return None
        return self._resolved(prompt, text, cls, "class" if text == cls else "synonym", text, 1.0)

    def _by_lexicon(self, prompt: str, text: str) -> Resolution | None:
        entry = self.lexicon.lookup(text)
        if entry is None:
            return None
        return self._route_entry(prompt, text, entry, entry.name, 1.0, "lexicon synonym")

    def _by_side_word(self, prompt: str, text: str) -> Resolution | None:
        """'left kidney tumor', 'kidney, right': the side of whatever the rest of the prompt resolves to."""
        split = self.lexicon.split_side(text)
        if split is None:
            return None
        side, rest = split
        named = self.lexicon.lookup(rest)
        side_entry = self.lexicon.side_child(named.name, side) if named is not None else None
        if side_entry is not None:  # 'lt kidney' is 'left kidney', whatever the model trained
            return self._route_entry(prompt, text, self.lexicon.entries[side_entry], side_entry, 1.0,
                                     "lexicon synonym")
        inner = self.resolve(rest)
        if inner.parts:  # the rest is a whole trained only by sides, and no side of it matched above
            return self._refused(prompt, text, f"'{rest}' was trained only by sides ({', '.join(inner.parts)})",
                                 inner.nearest, inner.similarity)
        if inner.class_name is None:
            reason = inner.refusal or "not resolved"
            return self._refused(prompt, text, f"'{rest}' ({side} side): {reason}", inner.nearest, inner.similarity)
        if inner.side is not None and inner.side != side:
            return self._refused(prompt, text, f"names both sides ('{side}' and '{inner.structure}')",
                                 inner.nearest, inner.similarity)
        entry = self.lexicon.lookup(inner.class_name)
        side_entry = self.lexicon.side_child(entry.name, side) if entry is not None else None
        if side_entry is not None and side_entry in self.class_of_entry:
            return self._resolved(prompt, text, self.class_of_entry[side_entry], "lexicon synonym", side_entry,
                                  inner.similarity)
        if not self._has_sides(entry):
            return self._refused(prompt, text, f"'{inner.class_name}' has no left and right halves in the lexicon "
                                 f"(it is neither a paired structure nor inside one)", inner.nearest, inner.similarity)
        structure = side_entry or f"{side} {inner.class_name}"
        return self._resolved(prompt, text, inner.class_name, DERIVED_LATERALITY, inner.nearest, inner.similarity,
                              side=side, structure=structure)

    def _has_sides(self, entry: LexiconEntry | None) -> bool:
        """Whether the entry, or a structure it lies in, is paired (has left and right children): 'kidney tumor'."""
        if entry is None:
            return False
        return any(self.lexicon.children(name, "side") for name in [entry.name, *self.lexicon.ancestors(entry.name)])

    def _known_names(self) -> list[tuple[str, tuple[str, str]]]:
        """(name, ('class', class) or ('entry', lexicon entry)) for every name of the vocabulary and lexicon."""
        names = [(w, ("class", c)) for w, c in self.vocab._lookup.items()]
        return names + [(self.lexicon.normalise(w), ("entry", e)) for w, e in self.lexicon.surface_forms()]

    def _by_spelling(self, prompt: str, text: str) -> Resolution | None:
        """Misspelt words ('kidny', 'spleeen', 'livre tumor'): the one name whose words the typed words are, each
        within the typing errors its length allows. Words the lexicon or the vocabulary knows are never corrected
        ('adrenal mass' is not a misspelt 'renal mass')."""
        typed = self.lexicon.normalise(text).split()
        known_words = self._known_words()
        if all(word in known_words for word in typed):
            return None
        found: dict[tuple[str, str], tuple[int, str]] = {}
        for name, target in self._known_names():
            distance = _word_corrections(typed, name.split(), known_words)
            if distance is not None and distance < found.get(target, (99, ""))[0]:
                found[target] = (distance, name)
        if not found:
            return None
        best = min(d for d, _ in found.values())
        closest = [(target, name) for target, (d, name) in found.items() if d == best]
        if len({self._structure_of(t) for t, _ in closest}) != 1:
            return None  # two different structures are equally close: leave it to the text similarity
        (kind, target), name = closest[0]
        closeness = 1.0 - best / max(len(name), 1)
        if kind == "class":
            return self._resolved(prompt, text, target, "spelling", name, closeness)
        return self._route_entry(prompt, text, self.lexicon.entries[target], name, closeness, "spelling")

    def _known_words(self) -> set[str]:
        if self._words is None:
            self._words = {w for name, _ in self._known_names() for w in name.split()}
        return self._words

    def _structure_of(self, target: tuple[str, str]) -> str:
        """The lexicon entry a ('class' | 'entry', name) target stands for (classes outside it: their name)."""
        kind, name = target
        if kind == "entry":
            return name
        entry = self.lexicon.lookup(name)
        return entry.name if entry is not None else name

    def _by_similarity(self, prompt: str, text: str) -> Resolution:
        encoder = self._encoder()
        if not encoder.semantic:
            return self._refused(prompt, text, f"not a trained class, synonym or lexicon name (the {encoder.name} "
                                 f"encoder cannot compare other wordings)",
                                 text, 0.0)
        if self._index is None:
            self._index = _name_index(self.vocab, encoder, self.lexicon, self.cache)
        query = self.vocab._embed_prompt(text, self.encoder, self.cache)
        name, (kind, target), similarity = self._index.nearest(query)
        if similarity < self.threshold:
            return self._refused(prompt, text, f"near no structure the lexicon or the model knows (nearest "
                                 f"'{name}', cosine {similarity:.3f} < {self.threshold:g})", name, similarity)
        if self.lexicon.is_lesion(text) != self.lexicon.is_lesion(target):
            what = ("a lesion", "an anatomical structure") if self.lexicon.is_lesion(text) else \
                ("an anatomical structure", "a lesion")
            return self._refused(prompt, text, f"names {what[0]}, but its nearest name '{name}' (cosine "
                                 f"{similarity:.3f}) is {what[1]}", name, similarity)
        if kind == "class":
            return self._resolved(prompt, text, target, "similar", name, similarity)
        return self._route_entry(prompt, text, self.lexicon.entries[target], name, similarity, "similar")

    def _route_entry(self, prompt: str, text: str, entry: LexiconEntry, matched: str, similarity: float,
                     relation: str) -> Resolution:
        """A lexicon structure -> its trained class, the derived side of one, or a refusal naming it."""
        if entry.name in self.class_of_entry:
            cls = self.class_of_entry[entry.name]
            how = "class" if text == cls else relation
            return self._resolved(prompt, text, cls, how, matched, similarity)
        if entry.relation == "side" and entry.parent in self.class_of_entry:
            return self._resolved(prompt, text, self.class_of_entry[entry.parent], DERIVED_LATERALITY, matched,
                                  similarity, side=entry.side, structure=entry.name)
        sides = [self.class_of_entry.get(c) for c in self.lexicon.children(entry.name, "side")]
        if len(sides) >= 2 and all(sides):  # 'kidney' on a model that trained 'left kidney' and 'right kidney'
            return Resolution(prompt, text, None, matched, similarity, similarity >= 1.0, None, DERIVED_UNION,
                              entry.name, parts=tuple(sides))
        return self._refused(prompt, text, self._untrained_reason(entry), matched, similarity)

    def _untrained_reason(self, entry: LexiconEntry) -> str:
        related = [a for a in self.lexicon.ancestors(entry.name) if a in self.class_of_entry]
        detail = f" (it is part of '{related[0]}', a different structure)" if related else ""
        return f"means '{entry.name}', which this model did not train{detail}"

    def resolve_all(self, prompts: list[str], allow_unknown: bool = False) -> list[Resolution]:
        """Every prompt's decision; refusals stay in the list (see `resolve_or_refuse`)."""
        results = [self.resolve(p) for p in prompts]
        if not allow_unknown:
            return results
        return [self._zero_shot(r) if r.refused else r for r in results]

    def _zero_shot(self, refused: Resolution) -> Resolution:
        vector = self.vocab._embed_prompt(refused.normalised, self.encoder, self.cache)
        return Resolution(refused.prompt, refused.normalised, None, refused.nearest, refused.similarity, False,
                          vector, "zero-shot", refused.normalised)


def _word_corrections(typed: list[str], name: list[str], known_words: set[str]) -> int | None:
    """Total typing errors that turn the typed words into the name's words, word by word (None: not a typo of it).
    A typed word the vocabulary knows must stand as it is."""
    if len(typed) != len(name):
        return None
    total = 0
    for word, target in zip(typed, name):
        if word == target:
            continue
        allowed = 0 if word in known_words else typo_allowance(word)
        distance = edit_distance(word, target, limit=allowed)
        if distance > allowed:
            return None
        total += distance
    return total


def resolve_or_refuse(resolutions: list[Resolution], vocab: "Vocabulary") -> list[Resolution]:
    """The resolutions, or one UserError line naming every refused prompt, why, and the trained vocabulary."""
    refused = [r for r in resolutions if r.refused]
    if refused:
        raise UserError("; ".join(f"prompt '{r.prompt}' refused: {r.refusal}" for r in refused)
                        + f"; trained vocabulary: {vocab.describe()} (--allow_unknown_prompts predicts refused "
                          f"prompts zero-shot)")
    return resolutions
