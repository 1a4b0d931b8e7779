"""What the trainer trains: a model + loss step, given to `Trainer` as a component.

The trainer owns the loop, the schedule, augmentation, checkpoints, logs and DDP; a step owns everything that
depends on what the network predicts: its sampler (what a batch's target is), the network, how a batch goes
through it, the loss per output, the pseudo Dice counts and what a checkpoint records besides the weights.
`UniversalStep` is the text-prompted model (one sigmoid per prompt, loss masked to annotated pairs); the per-dataset
softmax baseline is a second implementation (`textnnunet.benchmark.baseline.SoftmaxStep`).
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from textnnunet.network.conditioning import require_per_item_text
from textnnunet.network.universal import TextPromptedUNet
from textnnunet.training.config import TrainingConfig
from textnnunet.training.loss import annotated_pairs, batch_annotation, fully_annotated, masked_bce_dice_loss
from textnnunet.training.sampling import CaseRef, PatchSampler
from textnnunet.utils.plans import Plans


class TrainingStep(Protocol):
    """The model-specific part of training. `setup` is called once, before any other method."""

    def setup(self, plans: Plans, configuration: str, config: TrainingConfig, class_names: list[str],
              device: torch.device) -> None: ...

    def sampler(self, refs: list[CaseRef], plans: Plans, configuration: str, **kwargs) -> PatchSampler:
        """The patch sampler (kwargs: PatchSampler's batch, patch, oversampling and rng arguments)."""

    def build_network(self, architecture: dict, in_channels: int) -> nn.Module:
        """The network, on the CPU, in training mode (deep supervision as the config says)."""

    def annotation(self, batch: dict) -> Any:
        """What the loss and the pseudo Dice know about the batch's targets, on the device."""

    def outputs(self, network: nn.Module, data: torch.Tensor, annotation: Any,
                batch: dict | None = None) -> list[torch.Tensor] | torch.Tensor:
        """The network's outputs for `data` (a list, highest resolution first, with deep supervision); `batch` is
        the batch `data` came from (its `keys`: each item's (dataset, case)), for steps that condition on it."""

    def loss(self, logits: torch.Tensor, target: torch.Tensor, annotation: Any) -> torch.Tensor:
        """The loss of one output resolution."""

    def pseudo_dice_counts(self, logits: torch.Tensor, target: torch.Tensor,
                           annotation: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """TP, FP, FN per class (3, K) of the highest-resolution output, and which classes were judged (K,)."""

    def whole_case_scores(self, network: nn.Module, cases: list[tuple[str, np.ndarray, np.ndarray]]
                          ) -> dict[str, dict[str, float]]:
        """Dice, FP, FN per class over whole preprocessed cases (dataset, data, seg) by sliding window."""

    def checkpoint_entries(self) -> dict:
        """What a checkpoint records besides the trainer's own entries."""


def pseudo_dice_counts(logits: torch.Tensor, target: torch.Tensor, annotated: torch.Tensor) -> torch.Tensor:
    """TP, FP, FN per class (3, K) over the annotated items of a batch, thresholding sigmoid at 0.5."""
    pred = (logits > 0).float()
    mask = annotated.float().view(*annotated.shape, *([1] * (logits.ndim - 2)))
    axes = [0] + list(range(2, logits.ndim))
    tp = (pred * target * mask).sum(axes)
    fp = (pred * (1 - target) * mask).sum(axes)
    fn = ((1 - pred) * target * mask).sum(axes)
    return torch.stack([tp, fp, fn])


class UniversalStep:
    """The text-prompted universal model: one sigmoid per class of the label space, generated from `class_embeddings`
    (K, E), masked BCE + Dice over the (case, class) pairs a case's dataset annotates.

    dataset_tables: per dataset, the (K, E) vectors its images are prompted with instead (prompts naming the
    dataset's modality, `text.embedding.dataset_prompt_tables`); each batch item then gets its own dataset's."""

    def __init__(self, class_embeddings: np.ndarray, dataset_tables: dict[str, np.ndarray] | None = None):
        self.class_embeddings = np.asarray(class_embeddings, dtype=np.float32)
        self.dataset_tables = ({d: np.asarray(t, dtype=np.float32) for d, t in dataset_tables.items()}
                               if dataset_tables else None)

    @classmethod
    def from_vocabulary(cls, plans: Plans, vocabulary) -> "UniversalStep":
        """The step conditioned on an embedded vocabulary (textnnunet.text.vocabulary.Vocabulary): its class vectors,
        and its modality prompts per dataset when it has them."""
        from textnnunet.text.embedding import dataset_prompt_tables

        return cls(np.asarray(vocabulary.class_embeddings, dtype=np.float32),
                   dataset_prompt_tables(plans, vocabulary))

    def setup(self, plans: Plans, configuration: str, config: TrainingConfig, class_names: list[str],
              device: torch.device) -> None:
        tables = [self.class_embeddings, *(self.dataset_tables or {}).values()]
        if any(t.shape != (len(class_names), self.class_embeddings.shape[1]) for t in tables):
            raise ValueError("one embedding per class of the label space is needed")
        missing = sorted(set(plans.datasets) - set(self.dataset_tables or plans.datasets))
        if missing:
            raise ValueError(f"no prompt table for dataset(s) {', '.join(missing)}")
        self.plans, self.configuration, self.config = plans, configuration, config
        self.class_names, self.device = class_names, device
        self.embeddings = torch.from_numpy(self.class_embeddings).to(device)
        self.tables = ({d: torch.from_numpy(t).to(device) for d, t in self.dataset_tables.items()}
                       if self.dataset_tables else None)

    @property
    def prompt_tables(self):
        """What validation conditions each case on: the shared (K, E) table, or one per dataset."""
        return self.tables if self.tables is not None else self.embeddings

    def batch_text(self, batch: dict | None) -> torch.Tensor:
        """(K, E) for the whole batch, or (B, K, E) with each item's dataset's prompts."""
        if self.tables is None:
            return self.embeddings
        if batch is None or "keys" not in batch:
            raise ValueError("modality prompts need the batch's keys (each item's dataset)")
        return torch.stack([self.tables[dataset] for dataset, _ in batch["keys"]])

    def sampler(self, refs: list[CaseRef], plans: Plans, configuration: str, **kwargs) -> PatchSampler:
        return PatchSampler(refs, plans, configuration, use_hierarchy=self.config.label_hierarchy,
                            use_exclusion=self.config.label_exclusion,
                            max_excluded_classes=self.config.max_excluded_classes, **kwargs)

    def build_network(self, architecture: dict, in_channels: int) -> nn.Module:
        net = TextPromptedUNet(architecture, in_channels=in_channels, embed_dim=self.class_embeddings.shape[1],
                               conditioning=self.config.conditioning, deep_supervision=self.config.deep_supervision,
                               backbone=self.config.backbone)
        if self.tables is not None:
            require_per_item_text(self.config.conditioning)
        # With modality prompts: fitted on each distinct prompt once (datasets of one modality share a table).
        net.set_text_normalization(self.embeddings if self.tables is None
                                   else torch.unique(torch.cat(list(self.tables.values())), dim=0))
        return net

    def annotation(self, batch: dict) -> Any:
        if not self.config.mask_unannotated:  # naive union: unlabelled classes are background
            return torch.ones_like(batch["annotated"], device=self.device)
        return batch_annotation(batch, self.device)  # with the label hierarchy: voxel-wise knowledge too

    def outputs(self, network: nn.Module, data: torch.Tensor, annotation: Any,
                batch: dict | None = None) -> list[torch.Tensor] | torch.Tensor:
        # With partial-label masking the loss (and the pseudo Dice) read only annotated pairs: compute only those.
        pairs = annotated_pairs(annotation) if self.config.mask_unannotated else None
        return network(data, self.batch_text(batch), pairs)

    def loss(self, logits: torch.Tensor, target: torch.Tensor, annotation: Any) -> torch.Tensor:
        return masked_bce_dice_loss(logits, target, annotation, batch_dice=self.config.batch_dice,
                                    dice_weight=self.config.dice_weight)

    def pseudo_dice_counts(self, logits: torch.Tensor, target: torch.Tensor,
                           annotation: Any) -> tuple[torch.Tensor, torch.Tensor]:
        annotated = fully_annotated(annotation)
        return pseudo_dice_counts(logits, target, annotated), annotated.any(0)

    def whole_case_scores(self, network: nn.Module, cases: list[tuple[str, np.ndarray, np.ndarray]]
                          ) -> dict[str, dict[str, float]]:
        from textnnunet.training.validation import whole_case_scores

        return whole_case_scores(network, self.plans, self.configuration, cases, self.prompt_tables,
                                 self.class_names, self.device)

    def checkpoint_entries(self) -> dict:
        return {}


def class_names_of(plans: Plans | dict) -> list[str]:
    return Plans.of(plans).label_space.class_names


def as_step(step: TrainingStep | np.ndarray) -> TrainingStep:
    """`step` itself, or, given the class embeddings (K, E), the universal model's step."""
    return UniversalStep(step) if isinstance(step, np.ndarray) else step
