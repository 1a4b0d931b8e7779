"""`train_baseline`: the Python API behind textnnunet_train_baseline (same arguments as the CLI)."""
from __future__ import annotations

from pathlib import Path

from textnnunet.benchmark.baseline import BASELINE_TAG, SoftmaxStep, single_dataset, validate_baseline_fold
from textnnunet.paths import ModelFolder, PlanFolder, resolve_folders
from textnnunet.training.config import TrainingConfig
from textnnunet.training.run import load_fold_data, run_fold, start_fold_folder
from textnnunet.training.trainer import DistributedContext, Trainer
from textnnunet.utils.plans import Plans


def find_dataset_plan(preprocessed: Path, dataset: int | str) -> Path:
    """The per-dataset plan's plans.json for a dataset id (1, "1", "001") or full name (PlanFolder.find_dataset)."""
    return PlanFolder.find_dataset(preprocessed, dataset).plans_file


def baseline_model_folder(results: Path, dataset_name: str, configuration: str) -> Path:
    """results/DatasetXXX_Name/<configuration>__baseline."""
    return ModelFolder.find(results, plans=dataset_name, configuration=configuration, tag=BASELINE_TAG).path


def train_baseline(dataset: int | str, configuration: str, fold: int | str, config: TrainingConfig | None = None, *,
                   raw=None, preprocessed=None, results=None, splits_file: str | Path | None = None,
                   resume: bool = False, overwrite: bool = False, validate: bool = True, num_processes: int = 1,
                   dist: DistributedContext = DistributedContext(), echo: bool = True) -> Path:
    """Train (or resume) one fold of the per-dataset baseline; returns the fold's results folder.

    `splits_file`: a splits_final.json to take this dataset's folds from (the benchmark passes the joint plan's,
    so both models hold out the same cases); default preprocessed/DatasetXXX_Name/splits_final.json, created
    with the same seeded rule as the joint plan's (same cases, same folds).

    The dataset's cache of `configuration` is made here when it is missing or stale (textnnunet_plan_and_preprocess
    leaves it out unless given --baselines), with `num_processes` workers; that needs `raw`.
    """
    from textnnunet.preprocessing.preprocessor import ensure_preprocessed

    config = config or TrainingConfig()
    folders = resolve_folders(raw, preprocessed, results, required=("preprocessed", "results"))
    plans_path = PlanFolder.find_dataset(folders.preprocessed, dataset).plans_file
    plans = Plans.load(plans_path)
    name = single_dataset(plans)
    if dist.is_main:
        ensure_preprocessed(plans_path, configuration, folders.raw, num_processes=num_processes,
                            log=print if echo else (lambda *_: None))
    data = load_fold_data(plans_path, plans, configuration, fold, str(dataset),
                          Path(splits_file) if splits_file is not None else None)
    out = baseline_model_folder(folders.results, name, configuration)
    fold_folder = ModelFolder(out).fold(data.fold).path
    if dist.is_main:
        start_fold_folder(data, out, config, resume, overwrite)

    def validate_baseline(trainer: Trainer) -> None:
        validate_baseline_fold(trainer.raw_network, plans, configuration, data.cases_folder, data.val_cases,
                               fold_folder, trainer.device, raw_root=folders.raw,
                               mirror_axes=config.resolved_mirror_axes(data.patch_dims))

    run_fold(data, fold_folder, config, SoftmaxStep(plans), resume=resume,
             validate=validate_baseline if validate else None, dist=dist, echo=echo)
    return fold_folder
