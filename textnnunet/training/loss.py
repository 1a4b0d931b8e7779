"""Partial-label loss: sigmoid BCE + soft Dice, judged only on the classes a case's dataset annotates.

Every dataset labels only some structures. A class a dataset does not annotate is *unknown* there,
not background, so its (sample, class) entries must contribute nothing to the loss and receive
exactly zero gradient: the loss gathers only the annotated pairs, so the others are not even read.

The label hierarchy (label_space.hierarchy) makes some unannotated pairs known voxel by voxel
(`PartialAnnotation`): a dataset that labels only `kidney` says that `left kidney` is absent outside
the kidney (a known negative there, unknown inside), and one that labels `kidney tumor` but not
`kidney` says the kidney is present wherever the tumour is. The loss then counts those voxels only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from textnnunet.network.deep_supervision import deep_supervision_weights  # noqa: F401  (one implementation, re-exported)



@dataclass
class PartialAnnotation:
    """What a batch knows per (item, class), beyond "fully annotated" (the batch contract's `annotated`).

    annotated       (B, K) bool: the dataset labels the class; every voxel is known
    outside_of      (B, K) long: index of a labelled class that contains this one (its parent), or -1; voxels
                    outside that class's target are known negatives of this one
    where_positive  (B, K) bool: the target holds positives derived from labelled parts of this class (its
                    children); those voxels are known positives, the rest unknown unless outside_of says otherwise
    The known voxels are computed from the targets, so they follow augmentation and deep-supervision
    downsampling exactly as the targets do.
    """

    annotated: torch.Tensor
    outside_of: torch.Tensor
    where_positive: torch.Tensor
    excluded_by: torch.Tensor | None = None  # (B, K, K) bool: voxels of labelled class j are known negatives of k

    @property
    def labelled_or_related(self) -> torch.Tensor:
        """(B, K) bool: pairs known from their own label or a labelled relative (parent, parts)."""
        return self.annotated | (self.outside_of >= 0) | self.where_positive

    @property
    def exclusion_only(self) -> torch.Tensor | None:
        """(B, K) bool: pairs whose only known voxels are another labelled structure's (None without exclusion)."""
        if self.excluded_by is None:
            return None
        return self.excluded_by.any(dim=-1) & ~self.labelled_or_related

    @property
    def pairs(self) -> torch.Tensor:
        """(B, K) bool: the pairs with at least some known voxels (the heads worth computing)."""
        pairs = self.labelled_or_related
        return pairs if self.excluded_by is None else pairs | self.excluded_by.any(dim=-1)

    def to(self, device: torch.device | str) -> "PartialAnnotation":
        excluded = None if self.excluded_by is None else self.excluded_by.to(device)
        return PartialAnnotation(self.annotated.to(device), self.outside_of.to(device), self.where_positive.to(device),
                                 excluded)

    def known(self, target: torch.Tensor) -> torch.Tensor:
        """(B, K, *spatial) float in {0, 1}: the voxels whose target is known, for targets of any resolution."""
        expand = (Ellipsis,) + (None,) * (target.ndim - 2)
        target = target.float()
        known = self.annotated.to(target.dtype)[expand].expand_as(target)
        parent_index = self.outside_of.clamp_min(0)[expand].expand_as(target)
        outside_parent = (1.0 - torch.gather(target, 1, parent_index)) * (self.outside_of >= 0).to(target.dtype)[expand]
        derived_positive = target * self.where_positive.to(target.dtype)[expand]
        known = torch.maximum(known, torch.maximum(outside_parent, derived_positive))
        if self.excluded_by is not None and bool(self.excluded_by.any()):
            # Voxels of another labelled structure (not an ancestor or part): known negatives. K x K per voxel.
            excluded = torch.einsum("bkj,bj...->bk...", self.excluded_by.to(target.dtype), target).clamp_max(1.0)
            known = torch.maximum(known, excluded)
        return known


Annotation = Union[torch.Tensor, PartialAnnotation]


def batch_annotation(batch: dict, device: torch.device | str) -> Annotation:
    """The batch's `annotated` (B, K) on `device`, or a PartialAnnotation when the label hierarchy adds knowledge
    (the sampler's `known_outside_of` / `known_where_positive`)."""
    annotated = batch["annotated"].to(device)
    if "known_outside_of" not in batch:
        return annotated
    excluded = batch["known_excluded_by"].to(device) if "known_excluded_by" in batch else None
    return PartialAnnotation(annotated, batch["known_outside_of"].to(device), batch["known_where_positive"].to(device),
                             excluded)


def annotated_pairs(annotation: Annotation) -> torch.Tensor:
    """(B, K) bool: the pairs the loss reads (the heads a masked forward pass must compute)."""
    return annotation.pairs if isinstance(annotation, PartialAnnotation) else annotation


def fully_annotated(annotation: Annotation) -> torch.Tensor:
    """(B, K) bool: the pairs labelled everywhere (what the pseudo Dice scores)."""
    return annotation.annotated if isinstance(annotation, PartialAnnotation) else annotation
LossFn = Callable[[torch.Tensor, torch.Tensor, Annotation], torch.Tensor]


def _check_shapes(logits: torch.Tensor, target: torch.Tensor, annotated: torch.Tensor) -> None:
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape")
    if logits.ndim < 3:
        raise ValueError(f"expected (B, K, *spatial) logits, got {tuple(logits.shape)}")
    if tuple(annotated.shape) != tuple(logits.shape[:2]):
        raise ValueError(f"annotated {tuple(annotated.shape)} must be (B, K) = {tuple(logits.shape[:2])}")


def masked_bce_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    annotated: torch.Tensor,
    batch_dice: bool = False,
    smooth: float = 1e-5,
    bce_weight: float = 1.0,
    dice_weight: float = 1.0,
) -> torch.Tensor:
    """BCE-with-logits + (1 - soft Dice), averaged over the annotated (sample, class) pairs only.

    logits, target: (B, K, *spatial); target in {0, 1}. annotated: (B, K) bool.
    BCE is the voxel mean per annotated pair, then the mean over pairs. The Dice of a pair is
    computed over the whole patch (all spatial axes at once), not per slice.
    batch_dice=True: Dice per class with its sums pooled over the batch items that annotate it
    (nnU-Net's batch Dice, restricted to annotating items), averaged over those classes.
    Returns a scalar; if nothing is annotated, a zero still connected to `logits`'s graph.
    `annotated` may be a `PartialAnnotation`: then pairs known only in part are judged on their known voxels
    (`voxel_masked_bce_dice_loss`).
    """
    if isinstance(annotated, PartialAnnotation):
        _check_shapes(logits, target, annotated.annotated)
        annotation = annotated.to(logits.device)
        known = annotation.known(target.to(logits.device))
        return voxel_masked_bce_dice_loss(logits, target, known, batch_dice, smooth, bce_weight, dice_weight,
                                          dice_pairs=annotation.annotated | annotation.where_positive,
                                          background_pairs=annotation.exclusion_only)
    _check_shapes(logits, target, annotated)
    annotated = annotated.to(device=logits.device, dtype=torch.bool)
    if not bool(annotated.any()):
        return logits.sum() * 0.0

    # Only annotated pairs are gathered, so the others receive an exact zero gradient (even if
    # their logits are not finite). float32 because whole-patch sums lose precision in half.
    idx_b, idx_k = annotated.nonzero(as_tuple=True)
    sel_logits = logits[idx_b, idx_k].float()  # (N, *spatial)
    sel_target = target.to(logits.device)[idx_b, idx_k].float()
    spatial = tuple(range(1, sel_logits.ndim))

    bce = F.binary_cross_entropy_with_logits(sel_logits, sel_target, reduction="none").mean(dim=spatial)
    probs = torch.sigmoid(sel_logits)
    intersection = (probs * sel_target).sum(dim=spatial)  # (N,)
    denominator = probs.sum(dim=spatial) + sel_target.sum(dim=spatial)
    dice = _soft_dice(intersection, denominator, idx_b, idx_k, logits.shape[1], batch_dice, smooth)
    return bce_weight * bce.mean() + dice_weight * (1.0 - dice).mean()


def _soft_dice(intersection: torch.Tensor, denominator: torch.Tensor, idx_b: torch.Tensor, idx_k: torch.Tensor,
               n_classes: int, batch_dice: bool, smooth: float,
               dice_pairs: torch.Tensor | None = None) -> torch.Tensor | None:
    """Soft Dice per selected pair (idx_b, idx_k), or per class pooled over the batch (nnU-Net's batch Dice).
    dice_pairs (B, K) bool keeps only those pairs (classes, with batch Dice); None when nothing is left."""
    if batch_dice:
        intersection = intersection.new_zeros(n_classes).index_add(0, idx_k, intersection)
        denominator = denominator.new_zeros(n_classes).index_add(0, idx_k, denominator)
        present = torch.unique(idx_k)
        intersection, denominator = intersection[present], denominator[present]
        if dice_pairs is not None:
            keep = dice_pairs.to(intersection.device).any(dim=0)[present]
            intersection, denominator = intersection[keep], denominator[keep]
    elif dice_pairs is not None:
        keep = dice_pairs.to(intersection.device)[idx_b, idx_k]
        intersection, denominator = intersection[keep], denominator[keep]
    if intersection.numel() == 0:
        return None
    return (2.0 * intersection + smooth) / (denominator + smooth).clamp_min(1e-8)


def voxel_masked_bce_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    known: torch.Tensor,
    batch_dice: bool = False,
    smooth: float = 1e-5,
    bce_weight: float = 1.0,
    dice_weight: float = 1.0,
    dice_pairs: torch.Tensor | None = None,
    background_pairs: torch.Tensor | None = None,
) -> torch.Tensor:
    """BCE + (1 - soft Dice) over the known voxels only (`known` (B, K, *spatial) in {0, 1}).

    BCE of a pair is the mean over its known voxels; its Dice sums probabilities and targets over known voxels
    only. Pairs without a known voxel are left out (as unannotated pairs are), and unknown voxels receive exactly
    zero gradient. With every voxel of a pair known this is `masked_bce_dice_loss` of that pair.
    dice_pairs (B, K) bool: the pairs whose Dice is taken (default: all with a known voxel). Pairs known only to be
    negative somewhere (outside a labelled parent, on another labelled structure) should get BCE alone: their Dice,
    with no known positive, is 1 for any positive prediction in the known region, and with several such pairs per
    item it outweighed the labelled pairs and kept every head at zero for the first 300 iterations.
    background_pairs (B, K) bool: pairs whose known voxels are negatives on another structure only (exclusion).
    Their BCE is summed over those voxels and divided by the patch's voxel count, and they do not count in the mean
    over pairs: the excluded voxels weigh what they would as background of a fully labelled pair. Averaged over
    their few known voxels instead, each such pair weighed as much as a labelled one, concentrated on tissue that
    looks like the organ, and three of them per item kept the spleen at Dice 0 in a four-dataset run.
    """
    if logits.shape != target.shape or logits.shape != known.shape:
        raise ValueError(f"logits {tuple(logits.shape)}, target {tuple(target.shape)} and known "
                         f"{tuple(known.shape)} must have one shape")
    known = known.to(logits.device)
    spatial_all = tuple(range(2, logits.ndim))
    pairs = known.sum(dim=spatial_all) > 0
    if not bool(pairs.any()):
        return logits.sum() * 0.0
    idx_b, idx_k = pairs.nonzero(as_tuple=True)
    sel_logits = logits[idx_b, idx_k].float()
    sel_target = target.to(logits.device)[idx_b, idx_k].float()
    weight = known[idx_b, idx_k].float()
    spatial = tuple(range(1, sel_logits.ndim))

    bce_voxels = F.binary_cross_entropy_with_logits(sel_logits, sel_target, reduction="none")
    bce = _known_voxel_bce(bce_voxels, weight, None if background_pairs is None else background_pairs.to(
        logits.device)[idx_b, idx_k])
    probs = torch.sigmoid(sel_logits) * weight
    masked_target = sel_target * weight
    intersection = (probs * masked_target).sum(dim=spatial)
    denominator = probs.sum(dim=spatial) + masked_target.sum(dim=spatial)
    dice = _soft_dice(intersection, denominator, idx_b, idx_k, logits.shape[1], batch_dice, smooth, dice_pairs)
    if dice is None:
        return bce_weight * bce
    return bce_weight * bce + dice_weight * (1.0 - dice).mean()


def _known_voxel_bce(bce_voxels: torch.Tensor, weight: torch.Tensor, background: torch.Tensor | None) -> torch.Tensor:
    """Mean over pairs of each pair's BCE on its known voxels; `background` (N,) pairs are normalised by the patch
    size instead and left out of the pair count (voxel_masked_bce_dice_loss)."""
    spatial = tuple(range(1, bce_voxels.ndim))
    summed = (bce_voxels * weight).sum(dim=spatial)
    if background is None or not bool(background.any()):
        return (summed / weight.sum(dim=spatial)).mean()
    voxels = float(bce_voxels[0].numel())
    per_pair = torch.where(background, summed / voxels, summed / weight.sum(dim=spatial).clamp_min(1e-8))
    return per_pair.sum() / (~background).sum().clamp_min(1)


def naive_union_annotation(annotated: torch.Tensor) -> torch.Tensor:
    """All entries marked annotated: the ablation that treats a dataset's unlabelled classes as background."""
    return torch.ones_like(annotated, dtype=torch.bool)


def downsample_targets(target: torch.Tensor, shapes: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """Binary targets (B, K, *spatial) resampled to each spatial shape in `shapes` (highest resolution first).

    Uses nearest-neighbour sampling with pixel-centre alignment ("nearest-exact"), the same rule as
    the order-0 resize nnU-Net applies to segmentations for deep supervision. It keeps the maps
    binary and does not inflate small structures the way max-pooling would. A shape equal to the
    input returns the input itself. Entries of `shapes` may also be full (B, K, *spatial) shapes.
    """
    n_spatial = target.ndim - 2
    out: list[torch.Tensor] = []
    for shape in shapes:
        spatial = tuple(int(s) for s in tuple(shape)[-n_spatial:])
        if spatial == tuple(target.shape[2:]):
            out.append(target)
        else:
            out.append(F.interpolate(target.float(), size=spatial, mode="nearest-exact").to(target.dtype))
    return out


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of `base_loss` over several output resolutions (highest resolution first).

    `targets` may be a list matching `outputs`, or one full-resolution tensor that is downsampled
    to each output's shape with `downsample_targets`. Outputs with weight 0 are skipped.
    """

    def __init__(self, base_loss: LossFn, weights: Sequence[float]):
        super().__init__()
        if len(weights) == 0:
            raise ValueError("weights must not be empty")
        self.base_loss = base_loss
        self.weights = [float(w) for w in weights]

    def forward(
        self,
        outputs: Sequence[torch.Tensor] | torch.Tensor,
        targets: Sequence[torch.Tensor] | torch.Tensor,
        annotated: Annotation,
    ) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            outputs = [outputs]
        if isinstance(targets, torch.Tensor):
            targets = downsample_targets(targets, [o.shape for o in outputs])
        if len(outputs) != len(targets):
            raise ValueError(f"{len(outputs)} outputs but {len(targets)} targets")
        if len(outputs) > len(self.weights):
            raise ValueError(f"{len(outputs)} outputs but only {len(self.weights)} weights")
        total: torch.Tensor | None = None
        for weight, output, target in zip(self.weights, outputs, targets):
            if weight != 0.0:
                term = weight * self.base_loss(output, target, annotated)
                total = term if total is None else total + term
        return outputs[0].sum() * 0.0 if total is None else total
