"""The trained vocabulary: class names (= prompts) of the plan's label space, their synonyms, the
encoder that embedded them and the vectors themselves.

Saved as vocabulary.json next to a checkpoint, so prediction can condition the network on known
classes without loading the text encoder, and can map what a user types onto the trained classes:
exact name or synonym -> similarity 1.0, otherwise the nearest class by cosine similarity.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from textnnunet.dataset.description import normalise_class_name
from textnnunet.errors import UserError
from textnnunet.paths import VOCABULARY_FILE  # noqa: F401 - importable from here as before
from textnnunet.text.cache import EmbeddingCache
from textnnunet.text.encoders import DEFAULT_CLIP_TEMPLATE, TextEncoder, encoder_from_identity
from textnnunet.text.modality import modality_phrase, modality_prompt
from textnnunet.text.prompts import PromptResolver, Resolution, resolve_or_refuse
from textnnunet.utils.files import atomic_write_text, load_json
from textnnunet.utils.plans import Plans, same_image_type


def _cosine(query: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    q = query / max(float(np.linalg.norm(query)), 1e-12)
    m = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    return m @ q


def _as_matrix(value: Any, rows: int, what: str, where: str) -> np.ndarray:
    try:
        matrix = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise UserError(f"{where}: {what} are not numeric vectors") from None
    if matrix.ndim != 2 or matrix.shape[0] != rows:
        raise UserError(f"{where}: {what} have shape {matrix.shape}, expected ({rows}, dim)")
    return matrix


class Vocabulary:
    def __init__(self, classes: list[str], synonyms: dict[str, list[str]] | None = None,
                 encoder_identity: dict[str, Any] | None = None, class_embeddings: np.ndarray | None = None,
                 synonym_embeddings: dict[str, np.ndarray] | None = None, where: str = "vocabulary",
                 modality_embeddings: dict[str, np.ndarray] | None = None) -> None:
        self.classes = [normalise_class_name(c) for c in classes]
        if not self.classes:
            raise UserError(f"{where}: the vocabulary has no classes")
        duplicates = sorted({c for c in self.classes if self.classes.count(c) > 1})
        if duplicates:
            raise UserError(f"{where}: duplicate class names {', '.join(duplicates)}")
        self.synonyms = self._normalise_synonyms(synonyms or {}, where)
        self._lookup = self._build_lookup(where)
        self.encoder_identity = encoder_identity
        self.class_embeddings = class_embeddings
        self.synonym_embeddings = synonym_embeddings or {}
        # With modality prompts (TrainingConfig.prompt_modality): per intensity group ("CT", "T1", ...) the (K, E)
        # vectors of "<class> on <modality phrase>", what the network is conditioned on; class_embeddings stay the
        # plain names', what typed prompts are matched against.
        self.modality_embeddings = dict(modality_embeddings or {})
        self._encoder: TextEncoder | None = None
        self._embedded_copy: Vocabulary | None = None  # vectors computed on demand, kept for reuse

    # -- construction ---------------------------------------------------------------------------

    def _normalise_synonyms(self, synonyms: dict[str, list[str]], where: str) -> dict[str, list[str]]:
        result: dict[str, list[str]] = {}
        for name, words in synonyms.items():
            cls = normalise_class_name(name)
            if cls not in self.classes:
                raise UserError(f"{where}: synonyms given for '{name}', which is not a class")
            cleaned = [normalise_class_name(w) for w in words if normalise_class_name(w) and
                       normalise_class_name(w) != cls]
            if cleaned:
                result[cls] = list(dict.fromkeys(cleaned))
        return result

    def _build_lookup(self, where: str) -> dict[str, str]:
        """Normalised name or synonym -> class. A synonym may not point at two classes."""
        lookup = {c: c for c in self.classes}
        for cls, words in self.synonyms.items():
            for word in words:
                if lookup.get(word, cls) != cls:
                    raise UserError(f"{where}: '{word}' names both '{lookup[word]}' and '{cls}'")
                lookup[word] = cls
        return lookup

    @classmethod
    def from_plans(cls, plans: Plans | dict[str, Any]) -> "Vocabulary":
        """Classes and synonyms of the plan's label space (no vectors yet: see `embed`)."""
        where = f"plans '{Plans.of(plans).display_name}'" if isinstance(plans, (dict, Plans)) else "plans"
        try:
            entries = Plans.of(plans).label_space.classes
            names = [str(e["name"]) for e in entries]
            synonyms = {str(e["name"]): [str(s) for s in e.get("synonyms", [])] for e in entries}
        except (KeyError, TypeError, AttributeError):
            raise UserError(f"{where}: no label_space.classes with a 'name' per class") from None
        return cls(names, synonyms, where=where)

    def embed(self, encoder: TextEncoder, cache: EmbeddingCache | None = None) -> "Vocabulary":
        """A copy holding the vectors of every class (and synonym, for semantic encoders) by `encoder`."""
        encode = (lambda prompts: cache.get(encoder, prompts)) if cache is not None else encoder.encode
        class_vectors = encode(self.classes)
        synonym_vectors = {}
        if encoder.semantic:  # one-hot vectors exist only for the classes; synonyms match exactly anyway
            synonym_vectors = {c: encode(words) for c, words in self.synonyms.items()}
        result = Vocabulary(self.classes, self.synonyms, encoder.identity(), class_vectors, synonym_vectors)
        result._encoder = encoder
        return result

    def embed_modalities(self, groups: list[str], encoder: TextEncoder,
                         cache: EmbeddingCache | None = None) -> "Vocabulary":
        """A copy (of an embedded vocabulary) that also holds each class's vector per intensity group, embedded as
        "<class> on <modality phrase>" (textnnunet.text.modality)."""
        if self.class_embeddings is None:
            raise UserError("vocabulary: embed the classes before their modality prompts")
        if not encoder.semantic:
            raise UserError(f"modality prompts: the {encoder.name} text encoder cannot embed a class with its "
                            f"modality ('liver on T1-weighted MRI'); use a sentence encoder (minilm, clip)")
        if not groups:
            raise UserError("modality prompts: the plan records no intensity groups (re-plan with this version)")
        if encoder.template == DEFAULT_CLIP_TEMPLATE:
            raise UserError(f"modality prompts: the template '{encoder.template}' names CT for every image; give one "
                            f"that names no modality (e.g. --template 'A medical image of a {{}}.')")
        encode = (lambda prompts: cache.get(encoder, prompts)) if cache is not None else encoder.encode
        tables = {g: encode([modality_prompt(c, modality_phrase(g)) for c in self.classes]) for g in groups}
        result = Vocabulary(self.classes, self.synonyms, self.encoder_identity, self.class_embeddings,
                            self.synonym_embeddings, modality_embeddings=tables)
        result._encoder = self._encoder
        return result

    @property
    def modality_prompts(self) -> bool:
        return bool(self.modality_embeddings)

    def _modality_key(self, group: str | None) -> str:
        groups = list(self.modality_embeddings)
        if group is None:
            if len(groups) == 1:
                return groups[0]
            raise UserError(f"this model's prompts name the image's modality ({', '.join(groups)}); say which one "
                            f"the input is with --modality")
        matches = [g for g in groups if same_image_type(g, group)]
        if not matches:
            raise UserError(f"--modality {group}: not one of this model's image types ({', '.join(groups)})")
        return matches[0]

    def modality_name(self, group: str | None) -> str:
        """This model's name for the image type `group` (case and spaces ignored; an error when it has none)."""
        return self._modality_key(group)

    def knows_exactly(self, prompt: str) -> bool:
        """Whether the prompt, normalised, is a class or synonym name of this vocabulary."""
        return normalise_class_name(prompt) in self._lookup

    def prompt_table(self, group: str | None = None) -> np.ndarray:
        """(K, E) vectors the network is conditioned on for images of intensity group `group`: the modality
        prompts' when the model was trained with them (group None: the only one), else the class names'."""
        if self.class_embeddings is None:
            raise UserError("vocabulary: has no stored embeddings")
        if not self.modality_prompts:
            return np.asarray(self.class_embeddings, dtype=np.float32)
        return np.asarray(self.modality_embeddings[self._modality_key(group)], dtype=np.float32)

    def zero_shot_vector(self, text: str, group: str | None = None, encoder: TextEncoder | None = None,
                         cache: EmbeddingCache | None = None) -> np.ndarray:
        """An untrained prompt's vector, phrased as the trained ones were (with the modality when they had it)."""
        if self.modality_prompts:
            text = modality_prompt(text, modality_phrase(self._modality_key(group)))
        return self._embed_prompt(text, encoder, cache)

    def head_vectors(self, resolution: Resolution, group: str | None = None, encoder: TextEncoder | None = None,
                     cache: EmbeddingCache | None = None) -> list[tuple[str | None, np.ndarray]]:
        """(trained class or None, vector) per head a decided prompt runs: what the network is conditioned on, which
        is not the typed prompt's own vector. A trained class or synonym: the class's trained vector (the modality
        table's row for images of `group` when the prompts named the modality); a whole joined from its trained
        sides: one head per side; a zero-shot prompt: its own text, phrased as the trained prompts were."""
        if resolution.refused:
            raise UserError(f"prompt {resolution.prompt!r}: refused, it runs no head ({resolution.refusal})")
        trained = resolution.parts or ((resolution.class_name,) if resolution.class_name else ())
        if trained:
            table = self._embedded(encoder, cache).prompt_table(group)
            return [(cls, table[self.classes.index(cls)]) for cls in trained]
        if resolution.embedding is not None and not self.modality_prompts:
            return [(None, np.asarray(resolution.embedding, dtype=np.float32))]
        return [(None, np.asarray(self.zero_shot_vector(resolution.normalised, group, encoder, cache),
                                  dtype=np.float32))]

    # -- persistence ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        embeddings = None
        if self.class_embeddings is not None:
            embeddings = {"classes": np.asarray(self.class_embeddings, dtype=np.float32).tolist(),
                          "synonyms": {c: np.asarray(v, dtype=np.float32).tolist()
                                       for c, v in self.synonym_embeddings.items()}}
            if self.modality_embeddings:
                embeddings["modalities"] = {g: {"phrase": modality_phrase(g),
                                                "classes": np.asarray(v, dtype=np.float32).tolist()}
                                            for g, v in self.modality_embeddings.items()}
        return {"classes": self.classes, "synonyms": self.synonyms, "encoder": self.encoder_identity,
                "embeddings": embeddings}

    def save(self, path: str | os.PathLike) -> Path:
        """Write vocabulary.json (`path` may be the file or the folder to hold it)."""
        path = Path(path)
        if path.suffix != ".json":
            path = path / VOCABULARY_FILE
        text = json.dumps(self.to_dict(), indent=1)
        # One vector per line keeps the file readable (json.dumps would put each number on its own line).
        text = re.sub(r"\[([^\[\]{}\"]*)\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
        atomic_write_text(path, text + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocabulary":
        """Read vocabulary.json (`path` may be the file or the folder holding it)."""
        path = Path(path)
        if path.is_dir():
            path = path / VOCABULARY_FILE
        data = load_json(path)
        where = str(path)
        if not isinstance(data, dict) or not isinstance(data.get("classes"), list):
            raise UserError(f"{where}: not a vocabulary file (needs a 'classes' list)")
        classes, embeddings = data["classes"], data.get("embeddings")
        class_vectors, synonym_vectors = None, {}
        if embeddings is not None:
            class_vectors = _as_matrix(embeddings.get("classes"), len(classes), "class embeddings", where)
            for name, vectors in (embeddings.get("synonyms") or {}).items():
                count = len((data.get("synonyms") or {}).get(name, []))
                synonym_vectors[name] = _as_matrix(vectors, count, f"synonym embeddings of '{name}'", where)
        modality_vectors = {}
        for group, entry in ((embeddings or {}).get("modalities") or {}).items():
            vectors = entry.get("classes") if isinstance(entry, dict) else None
            modality_vectors[group] = _as_matrix(vectors, len(classes), f"modality '{group}' embeddings", where)
        return cls(classes, data.get("synonyms") or {}, data.get("encoder"), class_vectors, synonym_vectors,
                   where=where, modality_embeddings=modality_vectors)

    # -- lookup ---------------------------------------------------------------------------------

    def _resolve_encoder(self, encoder: TextEncoder | None) -> TextEncoder:
        if encoder is not None:
            if self.encoder_identity is not None and encoder.identity() != self.encoder_identity:
                raise UserError(f"text encoder {encoder.identity()}: differs from the one the vocabulary was "
                                f"embedded with ({self.encoder_identity}); their vectors are not comparable")
            return encoder
        if self._encoder is None:
            if self.encoder_identity is None:
                raise UserError("vocabulary: has no recorded encoder; pass one to compare prompts with classes")
            self._encoder = encoder_from_identity(self.encoder_identity, vocabulary=self.classes)
        return self._encoder

    def _embedded(self, encoder: TextEncoder | None, cache: EmbeddingCache | None) -> "Vocabulary":
        """Self when vectors are stored, else an embedded copy (needs an encoder)."""
        if self.class_embeddings is not None:
            return self
        if encoder is None:
            raise UserError("vocabulary: has no stored embeddings; pass an encoder to compare prompts with classes")
        if self._embedded_copy is None or self._embedded_copy.encoder_identity != encoder.identity():
            self._embedded_copy = self.embed(encoder, cache)
        return self._embedded_copy

    def _embed_prompt(self, text: str, encoder: TextEncoder | None, cache: EmbeddingCache | None) -> np.ndarray:
        enc = self._resolve_encoder(encoder)
        return (cache.get(enc, [text]) if cache is not None else enc.encode([text]))[0]

    def embed_prompt(self, prompt: str, encoder: TextEncoder | None = None,
                     cache: EmbeddingCache | None = None) -> np.ndarray:
        """The prompt's own vector (normalised text); for one-hot, a synonym takes its class's vector."""
        text = self._normalised_or_fail(prompt)
        enc = self._resolve_encoder(encoder)
        if not enc.semantic and text in self._lookup:
            text = self._lookup[text]
        return self._embed_prompt(text, enc, cache)

    def class_similarities(self, prompt: str, encoder: TextEncoder | None = None,
                           cache: EmbeddingCache | None = None) -> dict[str, float]:
        """Cosine similarity of the prompt to each class: best over the class name and its synonyms."""
        text = self._normalised_or_fail(prompt)
        vocab = self._embedded(encoder, cache)
        query = vocab._embed_prompt(text, encoder, cache)
        scores = {c: float(s) for c, s in zip(vocab.classes, _cosine(query, vocab.class_embeddings))}
        for cls, vectors in vocab.synonym_embeddings.items():
            if len(vectors):
                scores[cls] = max(scores[cls], float(_cosine(query, vectors).max()))
        return scores

    def nearest_classes(self, prompt: str, k: int = 3, encoder: TextEncoder | None = None,
                        cache: EmbeddingCache | None = None) -> list[tuple[str, float]]:
        """The k nearest trained classes as (class, cosine similarity), best first; exact matches score 1."""
        text = self._normalised_or_fail(prompt)
        exact = self._lookup.get(text)
        vocab = self._embedded(encoder, cache)
        if exact is not None and not vocab._resolve_encoder(encoder).semantic:
            # One-hot cannot embed synonyms: the exact class is all that can be said.
            return [(exact, 1.0)]
        scores = vocab.class_similarities(text, encoder, cache)
        if exact is not None:
            scores[exact] = 1.0
        return sorted(scores.items(), key=lambda item: (-item[1], vocab.classes.index(item[0])))[:k]

    def resolve_prompt(self, prompt: str, encoder: TextEncoder | None = None,
                       cache: EmbeddingCache | None = None) -> tuple[str, float]:
        """(class, similarity): exact class or synonym -> 1.0, else the nearest class by cosine."""
        text = self._normalised_or_fail(prompt)
        if encoder is not None:
            self._resolve_encoder(encoder)  # a mismatched encoder is an error even for exact matches
        if text in self._lookup:
            return self._lookup[text], 1.0
        return self.nearest_classes(text, 1, encoder, cache)[0]

    def resolve_prompts(self, prompts: list[str], threshold: float, allow_unknown: bool = False,
                        encoder: TextEncoder | None = None,
                        cache: EmbeddingCache | None = None) -> list[Resolution]:
        """Each prompt's decision (textnnunet.text.prompts); a refused prompt is an error unless `allow_unknown`."""
        return resolve_or_refuse(self.decide_prompts(prompts, threshold, allow_unknown, encoder, cache), self)

    def decide_prompts(self, prompts: list[str], threshold: float, allow_unknown: bool = False,
                       encoder: TextEncoder | None = None, cache: EmbeddingCache | None = None) -> list[Resolution]:
        """Each prompt's decision, refusals included (what textnnunet_embed_prompts shows)."""
        if not prompts:
            raise UserError(f"prompts: none given; trained vocabulary: {self.describe()}")
        if encoder is not None:
            self._resolve_encoder(encoder)
        vocab = self._embedded(encoder, cache)
        return PromptResolver(vocab, threshold, encoder, cache).resolve_all(list(prompts), allow_unknown)

    def _normalised_or_fail(self, prompt: str) -> str:
        text = normalise_class_name(prompt) if isinstance(prompt, str) else ""
        if not text:
            raise UserError(f"prompt {prompt!r}: empty prompt; trained vocabulary: {self.describe()}")
        return text

    def describe(self) -> str:
        """One line: classes with their synonyms in brackets."""
        parts = []
        for cls in self.classes:
            words = self.synonyms.get(cls)
            parts.append(f"{cls} ({', '.join(words)})" if words else cls)
        return ", ".join(parts)

    def __len__(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        kind = (self.encoder_identity or {}).get("kind")
        return f"Vocabulary({self.describe()}; encoder={kind}, embedded={self.class_embeddings is not None})"
