"""Class embeddings of a plan's label space with a chosen encoder, through the embedding cache."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from textnnunet.errors import UserError
from textnnunet.text.cache import EmbeddingCache
from textnnunet.text.encoders import build_encoder
from textnnunet.text.vocabulary import Vocabulary
from textnnunet.utils.plans import Plans


def class_embeddings_for_plans(plans: dict, encoder: str = "auto", text_model: str | None = None,
                               template: str | None = None, cache_folder: Path | None = None,
                               prompt_modality: bool = False) -> tuple[np.ndarray, Vocabulary]:
    """(K, E) vectors in label-space order, and the embedded vocabulary that records the encoder used; with
    `prompt_modality`, the vocabulary also holds each class's vector per intensity group of the plan
    ("liver on T1-weighted MRI": Vocabulary.prompt_table)."""
    vocabulary = Vocabulary.from_plans(plans)
    text_encoder = build_encoder(encoder, model=text_model, template=template, vocabulary=vocabulary.classes)
    cache = EmbeddingCache(cache_folder) if cache_folder is not None else None
    embedded = vocabulary.embed(text_encoder, cache)
    if prompt_modality:
        embedded = embedded.embed_modalities(list(Plans.of(plans).intensity_groups), text_encoder, cache)
    return np.asarray(embedded.class_embeddings, dtype=np.float32), embedded


def dataset_prompt_tables(plans: Plans | dict, vocabulary: Vocabulary) -> dict[str, np.ndarray] | None:
    """Per training dataset, the (K, E) vectors its images are prompted with (its intensity group's modality
    prompts); None for a model without modality prompts (every image gets the class names' vectors)."""
    if not vocabulary.modality_prompts:
        return None
    plans = Plans.of(plans)
    missing = [d for d in plans.datasets if d not in plans.dataset_intensity_group]
    if missing:
        raise UserError(f"plans '{plans.display_name}': no intensity group recorded for {', '.join(missing)}; "
                        f"re-plan with this version to train with modality prompts")
    return {dataset: vocabulary.prompt_table(plans.dataset_intensity_group[dataset]) for dataset in plans.datasets}
