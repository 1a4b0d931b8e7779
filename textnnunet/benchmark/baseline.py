"""The per-dataset nnU-Net baseline: one dataset, its own plan, a softmax over its integer labels, Dice + CE.

It is the trainer's second model + loss step (`SoftmaxStep`, beside training/step.py's `UniversalStep`): the same
loop, schedule, augmentation, checkpoints and logs; only what makes nnU-Net *nnU-Net* differs: the targets are the dataset's label
map (not per-class binary maps), the head is a softmax over the label values, the loss is soft Dice (without
background) + cross-entropy. Predictions are turned back into class names through the dataset's regions
("liver" = labels {1, 2}), so the evaluation by name judges both models the same way.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from textnnunet.errors import UserError
from textnnunet.evaluation.metrics import compute_case_metrics, label_map_to_masks
from textnnunet.evaluation.references import reference_label_map
from textnnunet.evaluation.summary import summarize, write_summary
from textnnunet.inference.predictor import PredictionSettings, geometry_from_properties, windows_per_batch
from textnnunet.inference.sliding_window import sliding_window_predict
from textnnunet.network.baseline import build_softmax_unet
from textnnunet.network.settings import memory_format_for
from textnnunet.preprocessing.preprocessor import load_case, restore_to_original
from textnnunet.training.config import TrainingConfig
from textnnunet.training.sampling import PatchSampler
from textnnunet.training.step import pseudo_dice_counts
from textnnunet.training.trainer import DistributedContext, Trainer
from textnnunet.paths import FoldFolder
from textnnunet.utils.files import atomic_savez_compressed
from textnnunet.utils.plans import Plans

BASELINE_TAG = "baseline"
# Softmax probabilities pass through the sigmoid sliding window as logit(p): sigmoid(logit(p)) = p.
_PROBABILITY_EPS = 1e-6


# ------------------------------------------------------------------------------------------ label space
def single_dataset(plans: Plans | dict) -> str:
    plans = Plans.of(plans)
    datasets = plans.datasets
    if len(datasets) != 1:
        raise UserError(f"plans '{plans.display_name}': a baseline needs a per-dataset plan "
                        f"(one dataset), this one has {len(datasets)}")
    return datasets[0]


def baseline_regions(plans: Plans | dict) -> dict[str, list[int]]:
    """Class name -> label values of the plan's only dataset (regions included: liver = [1, 2])."""
    plans = Plans.of(plans)
    return {name: [int(v) for v in values]
            for name, values in plans.label_space.annotated(single_dataset(plans)).items()}


def baseline_label_values(plans: Plans | dict) -> list[int]:
    """The softmax channels: background 0 and every label value the dataset's classes use, sorted."""
    return sorted({0} | {v for values in baseline_regions(plans).values() for v in values})


def values_to_indices(seg: np.ndarray, label_values: Sequence[int]) -> np.ndarray:
    """Label values -> softmax channel indices (values the plan does not know count as background)."""
    index = np.zeros(seg.shape, dtype=np.int16)
    for i, value in enumerate(label_values):
        if i:
            index[seg == value] = i
    return index


def region_membership(label_values: Sequence[int], regions: dict[str, Sequence[int]]) -> np.ndarray:
    """(K, C) bool: which softmax channels make up each class (a region spans several channels)."""
    return np.array([[v in set(values) for v in label_values] for values in regions.values()], dtype=bool)


def index_map_to_class_masks(index_map: np.ndarray, label_values: Sequence[int],
                             regions: dict[str, Sequence[int]]) -> dict[str, np.ndarray]:
    """Softmax argmax (channel indices) -> {class name: bool mask}."""
    membership = region_membership(label_values, regions)
    return {name: membership[k][index_map] for k, name in enumerate(regions)}


# ------------------------------------------------------------------------------------------ training parts
class LabelMapSampler(PatchSampler):
    """The universal sampler's patches (same foreground oversampling), with the label map as target.

    target: (1, *patch) float32 channel indices (augmentation resamples it with order 0 like any seg);
    annotated: (1,) True. The batch keeps the contract's keys, so the same iterator and transforms apply.
    """

    def __init__(self, cases, plans, configuration, **kwargs):
        super().__init__(cases, plans, configuration, **kwargs)
        self.label_values = baseline_label_values(plans)

    def _targets(self, case, seg_patch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return values_to_indices(seg_patch, self.label_values)[None].astype(np.float32), np.ones(1, dtype=bool)


def softmax_dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, batch_dice: bool = False,
                         smooth: float = 1e-5) -> torch.Tensor:
    """nnU-Net's DC_and_CE_loss: cross-entropy + (1 - soft Dice over the foreground channels).

    logits (B, C, *spatial); target (B, 1, *spatial) channel indices. Dice per sample and channel (or pooled
    over the batch with batch_dice), background excluded, averaged; an empty channel with an empty
    prediction scores 1 through the smoothing term, as in nnU-Net.
    """
    if target.ndim != logits.ndim or target.shape[1] != 1 or target.shape[2:] != logits.shape[2:]:
        raise ValueError(f"target {tuple(target.shape)} must be (B, 1, *spatial) for logits {tuple(logits.shape)}")
    logits = logits.float()
    index = target[:, 0].long()
    ce = F.cross_entropy(logits, index)
    probs = torch.softmax(logits, 1)[:, 1:]
    onehot = F.one_hot(index, logits.shape[1]).movedim(-1, 1)[:, 1:].float()
    axes = ([0] if batch_dice else []) + list(range(2, logits.ndim))
    intersection = (probs * onehot).sum(axes)
    denominator = probs.sum(axes) + onehot.sum(axes)
    dice = (2 * intersection + smooth) / (denominator + smooth).clamp_min(1e-8)
    return ce + (1 - dice.mean())


def softmax_pseudo_dice_counts(logits: torch.Tensor, target: torch.Tensor, membership: torch.Tensor) -> torch.Tensor:
    """TP, FP, FN (3, K) per class region from the argmax, the same counts the universal trainer logs."""
    pred = membership[:, logits.argmax(1)].movedim(0, 1).float()  # (B, K, *spatial)
    ref = membership[:, target[:, 0].long()].movedim(0, 1).float()
    everything = torch.ones(pred.shape[:2], dtype=torch.bool, device=pred.device)
    return pseudo_dice_counts(pred * 2 - 1, ref, everything)


class SoftmaxStep:
    """The trainer's step for nnU-Net's recipe on one dataset: label-map targets, a softmax U-Net over the label
    values, soft Dice + cross-entropy; the pseudo Dice is counted per class region of the argmax."""

    def __init__(self, plans: Plans | dict):
        self.dataset = single_dataset(plans)
        self.regions = baseline_regions(plans)
        self.label_values = baseline_label_values(plans)

    def setup(self, plans: Plans, configuration: str, config: TrainingConfig, class_names: list[str],
              device: torch.device) -> None:
        plans = Plans.of(plans)
        if list(self.regions) != class_names:
            raise UserError(f"plans '{plans.plans_name}': label_space classes and the dataset's classes differ")
        self.patch_size = list(plans.configuration(configuration).patch_size)
        self.config, self.device = config, device
        self.membership = torch.from_numpy(region_membership(self.label_values, self.regions)).to(device)

    def sampler(self, refs, plans: Plans, configuration: str, **kwargs) -> PatchSampler:
        return LabelMapSampler(refs, plans, configuration, use_hierarchy=self.config.label_hierarchy, **kwargs)

    def build_network(self, architecture: dict, in_channels: int) -> nn.Module:
        return build_softmax_unet(architecture, in_channels, len(self.label_values), self.config.deep_supervision,
                                  self.config.backbone)

    def annotation(self, batch: dict) -> None:
        return None  # every voxel of the label map is known

    def outputs(self, network: nn.Module, data: torch.Tensor, annotation: None, batch: dict | None = None):
        return network(data)

    def loss(self, logits: torch.Tensor, target: torch.Tensor, annotation: None) -> torch.Tensor:
        return softmax_dice_ce_loss(logits, target, batch_dice=self.config.batch_dice)

    def pseudo_dice_counts(self, logits: torch.Tensor, target: torch.Tensor,
                           annotation: None) -> tuple[torch.Tensor, torch.Tensor]:
        counts = softmax_pseudo_dice_counts(logits, target, self.membership)
        return counts, torch.ones(len(self.regions), dtype=torch.bool)

    def whole_case_scores(self, network: nn.Module, cases: list[tuple[str, np.ndarray, np.ndarray]]
                          ) -> dict[str, dict[str, float]]:
        """Dice, FP, FN per class region over whole preprocessed cases (argmax, no mirroring); counts summed."""
        settings = PredictionSettings(use_mirroring=False)
        was_ds, was_training = network.decoder.deep_supervision, network.training
        set_deep_supervision(network, False)
        network.eval()
        counts = {name: np.zeros(3, np.int64) for name in self.regions}
        try:
            for _, data, seg in cases:
                probs = predict_softmax(network, data, self.patch_size, len(self.label_values), settings, self.device)
                predicted = index_map_to_class_masks(np.argmax(probs, axis=0), self.label_values, self.regions)
                for name, reference in label_map_to_masks(seg[0], self.regions).items():
                    pred = predicted[name]
                    counts[name] += (np.count_nonzero(pred & reference), np.count_nonzero(pred & ~reference),
                                     np.count_nonzero(reference & ~pred))
        finally:
            set_deep_supervision(network, was_ds)
            network.train(was_training)
        return {name: {"Dice": float(2 * tp / (2 * tp + fp + fn)) if (2 * tp + fp + fn) else float("nan"),
                       "FP": int(fp), "FN": int(fn)} for name, (tp, fp, fn) in counts.items()}

    def checkpoint_entries(self) -> dict:
        return {"kind": BASELINE_TAG, "dataset": self.dataset, "label_values": self.label_values,
                "regions": self.regions}


def baseline_trainer(plans: Plans | dict, configuration: str, fold: int | str, cases_folder: Path,
                     train_cases: dict[str, list[str]], val_cases: dict[str, list[str]], output_folder: Path,
                     config: TrainingConfig, dist: DistributedContext = DistributedContext(),
                     echo: bool = True) -> Trainer:
    """The trainer with the softmax baseline's step: nnU-Net's recipe with the universal model's loop."""
    return Trainer(plans, configuration, fold, cases_folder, train_cases, val_cases, output_folder, config,
                   SoftmaxStep(plans), dist=dist, echo=echo)


# ------------------------------------------------------------------------------------------ inference
def build_baseline_network(plans: Plans | dict, configuration: str, ckpt: dict) -> nn.Module:
    """The trained softmax U-Net of a checkpoint, for inference (deep supervision off)."""
    plans = Plans.of(plans)
    config_plan = plans.configuration(configuration)
    config = TrainingConfig.from_json(ckpt["training_config"])
    net = build_softmax_unet(config_plan.architecture, plans.num_channels,
                             len(ckpt["label_values"]), deep_supervision=False, backbone=config.backbone)
    net.load_state_dict(ckpt["network"])
    net.mirror_axes = tuple(config.resolved_mirror_axes(config_plan.dims))
    return net.eval()


def set_deep_supervision(net: nn.Module, enabled: bool) -> None:
    net.decoder.deep_supervision = enabled


def predict_softmax(network: nn.Module, data: np.ndarray, patch_size: Sequence[int], num_classes: int,
                    settings: PredictionSettings, device: torch.device) -> np.ndarray:
    """Softmax probabilities (C, z, y, x) of one preprocessed image: sliding window, Gaussian, mirroring."""
    layout = memory_format_for(device.type, len(patch_size))  # channels-last on the CPU, as in training
    network.to(device, memory_format=layout)
    mirror = getattr(network, "mirror_axes", tuple(range(len(patch_size)))) if settings.use_mirroring else None

    def predict_patch(x):
        # The shared sliding window averages sigmoid(output); logit(softmax) makes that the softmax itself.
        logits = network(x.contiguous(memory_format=layout)).float()
        return torch.logit(torch.softmax(logits, 1), eps=_PROBABILITY_EPS)

    probs = sliding_window_predict(predict_patch, torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)), patch_size,
                                   num_outputs=num_classes, step_size=settings.step_size, mirror_axes=mirror,
                                   device=device, batch_windows=windows_per_batch(settings.batch_windows, patch_size))
    return probs.numpy()


def probabilities_to_class_masks(probs_original: np.ndarray, label_values: Sequence[int],
                                 regions: dict[str, Sequence[int]]) -> dict[str, np.ndarray]:
    """Softmax probabilities on the original grid -> argmax -> {class name: uint8 mask}."""
    masks = index_map_to_class_masks(np.argmax(probs_original, axis=0), label_values, regions)
    return {name: mask.astype(np.uint8) for name, mask in masks.items()}


def validate_baseline_fold(network: nn.Module, plans: Plans | dict, configuration: str, cases_folder: Path,
                           val_cases: dict[str, list[str]], fold_folder: Path, device: torch.device,
                           raw_root: Path | None = None, settings: PredictionSettings | None = None,
                           nsd_tolerance_mm: float = 2.0, mirror_axes: Sequence[int] | None = None) -> dict:
    """Predict the fold's validation cases and score them by class name, like the universal validation.

    Writes validation/<dataset>/<case>.npz (`masks` per class, original grid, `classes`) and summary.json|md.
    """
    settings = settings or PredictionSettings(use_mirroring=True)
    if mirror_axes is not None:
        network.mirror_axes = tuple(mirror_axes)
    plans = Plans.of(plans)
    regions, label_values = baseline_regions(plans), baseline_label_values(plans)
    patch = plans.configuration(configuration).patch_size
    out = FoldFolder(Path(fold_folder)).validation
    was_ds = network.decoder.deep_supervision
    set_deep_supervision(network, False)
    network.eval()
    per_case = []
    try:
        for dataset, ids in val_cases.items():
            for case_id in ids:
                data, seg, properties = load_case(cases_folder / dataset, case_id)
                probs = predict_softmax(network, data, patch, len(label_values), settings, device)
                masks = probabilities_to_class_masks(restore_to_original(probs, properties), label_values, regions)
                atomic_savez_compressed(out / dataset / f"{case_id}.npz", masks=np.stack(list(masks.values())),
                                        classes=np.array(list(masks)))
                reference = label_map_to_masks(reference_label_map(raw_root, dataset, case_id, seg, properties),
                                               regions)
                metrics = compute_case_metrics(reference, masks, geometry_from_properties(properties).spacing,
                                               nsd_tolerance_mm=nsd_tolerance_mm, case_id=case_id)
                per_case.append({"case_id": case_id, "dataset": dataset, "metrics": metrics})
    finally:
        set_deep_supervision(network, was_ds)
    summary = summarize(per_case, nsd_tolerance_mm=nsd_tolerance_mm)
    write_summary(summary, out)
    return summary
