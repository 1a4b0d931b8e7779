"""Trained models behind one face for the benchmark: image files in, {class name: mask} out, plus their costs."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from textnnunet.benchmark.baseline import (
    build_baseline_network,
    predict_softmax,
    probabilities_to_class_masks,
    validate_baseline_fold,
)
from textnnunet.benchmark.budget import trained_iterations
from textnnunet.dataset.description import Case
from textnnunet.errors import UserError
from textnnunet.evaluation.metrics import compute_case_metrics, label_map_to_masks
from textnnunet.evaluation.summary import summarize, write_summary
from textnnunet.imageio.sitk_io import read_label
from textnnunet.inference.predictor import PredictionSettings, TextPredictor, resolve_inference_device
from textnnunet.network.backbone import count_parameters
from textnnunet.preprocessing.preprocessor import preprocess_case, restore_to_original
from textnnunet.paths import CHECKPOINT_FINAL, ModelFolder, PlanFolder
from textnnunet.training.splits import cases_for_fold
from textnnunet.utils.files import load_json
from textnnunet.utils.plans import Plans


def training_record(checkpoint: dict, plans: Plans | dict, configuration: str) -> dict:
    """What a checkpoint actually trained: epochs, iterations, batch size, wall time (sum of its epochs)."""
    config = checkpoint["training_config"]
    history = checkpoint.get("history", {})
    return {"epochs": int(checkpoint["epochs_done"]), "iters_per_epoch": int(config["iters_per_epoch"]),
            "iterations": trained_iterations(config, checkpoint["epochs_done"]),
            "batch_size": int(config.get("batch_size") or Plans.of(plans).configuration(configuration).batch_size),
            "wall_seconds": float(sum(history.get("epoch_seconds", []))),
            "device": config.get("device")}


class BenchmarkModel:
    """Base: subclasses set `classes`, `network`, `record` and implement `predict_masks`."""

    kind = "model"
    classes: list[str]
    network: torch.nn.Module
    record: dict

    def __init__(self, folder: Path, fold: int | str):
        self.model = ModelFolder(Path(folder))
        self.folder, self.fold = self.model.path, fold
        self.fold_folder = self.model.fold(fold).path
        path = self.model.fold(fold).final_checkpoint
        if not path.is_file():
            raise UserError(f"{path}: not trained (no {CHECKPOINT_FINAL})")
        self.checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        self.plans = Plans.load(self.model.plans_file)
        self.configuration = self.model.configuration

    @property
    def parameters(self) -> int:
        return count_parameters(self.network)

    def predict_masks(self, image_files: Sequence[Path], classes: Sequence[str],
                      modality: str | None = None) -> dict[str, np.ndarray]:
        """Masks of `classes` in the input's geometry; `modality`: the plan's intensity group the images are (a plan
        of several, CT and MR, is told which; None for a plan of one)."""
        raise NotImplementedError

    def cases_folder(self, preprocessed: Path) -> Path:
        identifier = self.plans.configuration(self.configuration).data_identifier
        return PlanFolder(Path(preprocessed) / self.plans.plans_name).cases(identifier)

    def validation_cases(self) -> dict[str, list[str]]:
        splits = load_json(self.model.splits_file)
        return cases_for_fold(splits, self.fold, self.plans.datasets)[1]

    def info(self) -> dict:
        return {"kind": self.kind, "folder": str(self.folder), "classes": list(self.classes),
                "parameters": self.parameters,
                "training": training_record(self.checkpoint, self.plans, self.configuration)}


class UniversalModel(BenchmarkModel):
    kind = "universal"

    def __init__(self, folder: Path, fold: int | str, settings: PredictionSettings):
        super().__init__(folder, fold)
        self.predictor = TextPredictor.from_folder(self.folder, folds=[fold], settings=settings)
        self.network = self.predictor.networks[0]
        self.classes = list(self.predictor.vocabulary.classes)

    def predict_masks(self, image_files, classes, modality=None):
        settings = self.predictor.settings
        self.predictor.settings = dataclasses.replace(settings, modality=modality or settings.modality)
        try:
            masks, _, _ = self.predictor.predict(list(image_files), list(classes))
        finally:
            self.predictor.settings = settings
        return masks

    def ensure_validation(self, preprocessed: Path, raw_root: Path | None) -> dict:
        """The validation summary training wrote, or a fresh validation when it is missing."""
        path = self.model.fold(self.fold).validation / "summary.json"
        if path.is_file():
            return load_json(path)
        from textnnunet.training.validation import validate_fold

        from textnnunet.text.embedding import dataset_prompt_tables

        vocab = self.predictor.vocabulary
        tables = dataset_prompt_tables(self.plans, vocab)
        embeddings = ({d: torch.from_numpy(t) for d, t in tables.items()} if tables is not None
                      else torch.from_numpy(np.asarray(vocab.class_embeddings, dtype=np.float32)))
        return validate_fold(self.network, self.plans, self.configuration, self.cases_folder(preprocessed),
                             self.validation_cases(), self.fold_folder, embeddings, list(vocab.classes),
                             self.predictor.device, raw_root=raw_root, settings=self.predictor.settings)


class BaselineModel(BenchmarkModel):
    kind = "baseline"

    def __init__(self, folder: Path, fold: int | str, settings: PredictionSettings):
        super().__init__(folder, fold)
        if self.checkpoint.get("kind") != "baseline":
            raise UserError(f"{self.fold_folder}: not a baseline checkpoint")
        self.settings = settings
        self.device = resolve_inference_device(settings.device)
        self.network = build_baseline_network(self.plans, self.configuration, self.checkpoint)
        self.label_values = list(self.checkpoint["label_values"])
        self.regions = dict(self.checkpoint["regions"])
        self.classes = list(self.regions)

    def predict_masks(self, image_files, classes, modality=None):
        data, _, properties = preprocess_case([Path(f) for f in image_files], None, self.plans, self.configuration,
                                              modality=modality)
        probs = predict_softmax(self.network, data, self.plans.configuration(self.configuration).patch_size,
                                len(self.label_values), self.settings, self.device)
        masks = probabilities_to_class_masks(restore_to_original(probs, properties), self.label_values, self.regions)
        return {c: masks[c] for c in classes if c in masks}

    def ensure_validation(self, preprocessed: Path, raw_root: Path | None) -> dict:
        path = self.model.fold(self.fold).validation / "summary.json"
        if path.is_file():
            return load_json(path)
        return validate_baseline_fold(self.network, self.plans, self.configuration,
                                      self.cases_folder(preprocessed), self.validation_cases(),
                                      self.fold_folder, self.device, raw_root=raw_root, settings=self.settings)


def evaluate_on_test_set(model: BenchmarkModel, cases: Sequence[Case], test_classes: dict[str, Sequence[int]],
                         dataset_name: str, output_folder: Path, nsd_tolerance_mm: float = 2.0,
                         modality: str | None = None) -> tuple[dict, float]:
    """Predict every labelled test case with `model` on the classes it covers; (summary, seconds per case).

    Seconds per case cover what a user waits for: preprocessing, sliding window, restoring the input's grid.
    `modality`: the model plan's intensity group of the test images (see BenchmarkModel.predict_masks).
    """
    judged = classes_to_judge(test_classes, model.classes, dataset_name, model.folder)
    return score_cases(cases, lambda case, classes: model.predict_masks(case.image_files, classes, modality), judged,
                       dataset_name, output_folder, nsd_tolerance_mm)


def classes_to_judge(test_classes: Mapping[str, Sequence[int]], model_classes: Iterable[str], dataset_name: str,
                     model_folder: Path) -> dict[str, Sequence[int]]:
    """The test set's classes (name -> label values) a model covers, matched by name; a clear error if none."""
    covered = set(model_classes)
    judged = {name: values for name, values in test_classes.items() if name in covered}
    if not judged:
        raise UserError(f"{dataset_name}: {model_folder} segments none of the test set's classes")
    return judged


def score_cases(cases: Sequence[Case], predict: Callable[[Case, list[str]], dict[str, np.ndarray]],
                judged: dict[str, Sequence[int]], dataset_name: str, output_folder: Path,
                nsd_tolerance_mm: float = 2.0) -> tuple[dict, float]:
    """The benchmark's evaluation: `predict(case, class names)` against each case's label file; (summary, seconds).

    `judged`: class name -> the reference's label values (regions) for the classes to score. Writes summary.json
    and summary.md into `output_folder`; seconds are the mean time `predict` took per case.
    """
    per_case, seconds = [], []
    for case in cases:
        start = time.perf_counter()
        predicted = predict(case, list(judged))
        seconds.append(time.perf_counter() - start)
        label_map, geometry = read_label(case.label_file)
        reference = label_map_to_masks(label_map, judged)
        metrics = compute_case_metrics(reference, {n: predicted[n] for n in judged if n in predicted},
                                       geometry.spacing, nsd_tolerance_mm=nsd_tolerance_mm, case_id=case.case_id)
        per_case.append({"case_id": case.case_id, "dataset": dataset_name, "metrics": metrics})
    summary = summarize(per_case, nsd_tolerance_mm=nsd_tolerance_mm)
    write_summary(summary, output_folder)
    return summary, float(np.mean(seconds)) if seconds else float("nan")
