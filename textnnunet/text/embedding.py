"""Class embeddings of a plan's label space with a chosen encoder, through the embedding cache."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from textnnunet.text.cache import EmbeddingCache
from textnnunet.text.encoders import build_encoder
from textnnunet.text.vocabulary import Vocabulary


def class_embeddings_for_plans(plans: dict, encoder: str = "auto", text_model: str | None = None,
                               template: str | None = None,
                               cache_folder: Path | None = None) -> tuple[np.ndarray, Vocabulary]:
    """(K, E) vectors in label-space order, and the embedded vocabulary that records the encoder used."""
    vocabulary = Vocabulary.from_plans(plans)
    text_encoder = build_encoder(encoder, model=text_model, template=template, vocabulary=vocabulary.classes)
    cache = EmbeddingCache(cache_folder) if cache_folder is not None else None
    embedded = vocabulary.embed(text_encoder, cache)
    return np.asarray(embedded.class_embeddings, dtype=np.float32), embedded
