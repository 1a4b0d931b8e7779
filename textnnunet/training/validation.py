"""Sliding-window validation of a trained fold on its held-out cases, scored in original geometry."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from textnnunet.evaluation.metrics import compute_case_metrics, label_map_to_masks
from textnnunet.evaluation.references import reference_label_map
from textnnunet.evaluation.summary import summarize, write_summary
from textnnunet.inference.predictor import PredictionSettings, geometry_from_properties, predict_probabilities
from textnnunet.preprocessing.preprocessor import load_case, restore_to_original
from textnnunet.paths import FoldFolder
from textnnunet.utils.files import atomic_savez_compressed
from textnnunet.utils.plans import Plans


# What the network is conditioned on: one (K, E) table for every case, or one per dataset (prompts that name the
# dataset's modality, TrainingConfig.prompt_modality).
PromptTables = torch.Tensor | Mapping[str, torch.Tensor]


def text_for_dataset(tables: PromptTables, dataset: str) -> torch.Tensor:
    return tables[dataset] if isinstance(tables, Mapping) else tables


def whole_case_scores(network: torch.nn.Module, plans: Plans | dict, configuration: str,
                      cases: list[tuple[str, np.ndarray, np.ndarray]], class_embeddings: PromptTables,
                      class_names: list[str], device: torch.device) -> dict[str, dict[str, float]]:
    """Dice, FP and FN voxels per class over whole preprocessed cases (dataset, data, seg), sliding window
    without mirroring: the cheap in-training check of what patch pseudo Dice cannot show (false positives far from
    the sampled foreground). Classes are judged on the cases whose dataset labels them; counts are summed."""
    plans = Plans.of(plans)
    patch = plans.configuration(configuration).patch_size
    settings = PredictionSettings(use_mirroring=False)
    was_ds, was_training = network.deep_supervision, network.training
    network.deep_supervision = False
    network.eval()
    counts: dict[str, np.ndarray] = {}
    try:
        for dataset, data, seg in cases:
            annotated = plans.label_space.annotated(dataset)
            probs = predict_probabilities([network], data, text_for_dataset(class_embeddings, dataset), patch,
                                          settings, device)
            for name, reference in label_map_to_masks(seg[0], annotated).items():
                pred = probs[class_names.index(name)] > settings.threshold
                tp, fp = np.count_nonzero(pred & reference), np.count_nonzero(pred & ~reference)
                counts.setdefault(name, np.zeros(3, np.int64))
                counts[name] += (tp, fp, np.count_nonzero(reference & ~pred))
    finally:
        network.deep_supervision = was_ds
        network.train(was_training)
    return {name: {"Dice": float(2 * tp / (2 * tp + fp + fn)) if (2 * tp + fp + fn) else float("nan"),
                   "FP": int(fp), "FN": int(fn)} for name, (tp, fp, fn) in counts.items()}


def validate_fold(network: torch.nn.Module, plans: Plans | dict, configuration: str, cases_folder: Path,
                  val_cases: dict[str, list[str]], fold_folder: Path, class_embeddings: PromptTables,
                  class_names: list[str], device: torch.device, raw_root: Path | None = None,
                  settings: PredictionSettings | None = None, nsd_tolerance_mm: float = 2.0,
                  mirror_axes: list[int] | None = None, save_probabilities: bool = False) -> dict:
    """Predict every validation case with all classes, score each on the classes its dataset labels.

    Writes validation/<dataset>/<case>.npz (binary masks per class, original grid) and validation/summary.json|md;
    with `save_probabilities` also <case>_probabilities.npz (float32 sigmoid probabilities, original grid), what
    textnnunet_find_best_configuration needs to score ensembles (nnU-Net's --npz).
    """
    settings = settings or PredictionSettings(use_mirroring=True)
    if mirror_axes is not None:
        network.mirror_axes = tuple(mirror_axes)
    was_ds = network.deep_supervision
    network.deep_supervision = False
    network.eval()
    plans = Plans.of(plans)
    patch = plans.configuration(configuration).patch_size
    out = FoldFolder(Path(fold_folder)).validation
    per_case = []
    try:
        for dataset, ids in val_cases.items():
            annotated = plans.label_space.annotated(dataset)
            for case_id in ids:
                data, seg, properties = load_case(cases_folder / dataset, case_id)
                probs = predict_probabilities([network], data, text_for_dataset(class_embeddings, dataset), patch,
                                              settings, device)
                restored = restore_to_original(probs, properties)
                masks = restored > settings.threshold
                atomic_savez_compressed(out / dataset / f"{case_id}.npz", masks=masks.astype(np.uint8),
                                        classes=np.array(class_names))
                if save_probabilities:
                    atomic_savez_compressed(out / dataset / f"{case_id}_probabilities.npz",
                                            probabilities=restored.astype(np.float32), classes=np.array(class_names))
                reference = label_map_to_masks(reference_label_map(raw_root, dataset, case_id, seg, properties),
                                               annotated)
                predicted = {name: masks[class_names.index(name)] for name in reference}
                metrics = compute_case_metrics(reference, predicted, geometry_from_properties(properties).spacing,
                                               nsd_tolerance_mm=nsd_tolerance_mm, case_id=case_id)
                per_case.append({"case_id": case_id, "dataset": dataset, "metrics": metrics})
    finally:
        network.deep_supervision = was_ds
    summary = summarize(per_case, nsd_tolerance_mm=nsd_tolerance_mm)
    write_summary(summary, out)
    return summary
