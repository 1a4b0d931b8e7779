"""`train_fold`: the Python API behind textnnunet_train (same arguments as the CLI)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from textnnunet.errors import UserError
from textnnunet.experiment_planning.planner import load_plans
from textnnunet.paths import joint_plans_name, resolve_folders
from textnnunet.preprocessing.preprocessor import finished_case_ids
from textnnunet.training.config import TrainingConfig
from textnnunet.training.splits import cases_for_fold, load_or_create_splits, parse_fold
from textnnunet.training.trainer import (
    CHECKPOINT_BEST,
    CHECKPOINT_FINAL,
    CHECKPOINT_LATEST,
    DistributedContext,
    Trainer,
    find_resume_checkpoint,
)
from textnnunet.utils.files import as_read_back_from_json, atomic_write_json, load_json


def find_joint_plan(preprocessed: Path, plans_name: str | None, dataset_ids: list[int] | None) -> Path:
    if plans_name is None and dataset_ids:
        plans_name = joint_plans_name(dataset_ids)
    if plans_name is not None:
        path = preprocessed / plans_name / "plans.json"
        if not path.is_file():
            raise UserError(f"{path}: plan not found (run textnnunet_plan_and_preprocess -d <ids> first)")
        return path
    candidates = sorted(preprocessed.glob("TextPlans_*/plans.json")) if preprocessed.is_dir() else []
    if not candidates:
        raise UserError(f"{preprocessed}: no joint plan found (run textnnunet_plan_and_preprocess -d <ids> first)")
    if len(candidates) > 1:
        names = ", ".join(c.parent.name for c in candidates)
        raise UserError(f"{preprocessed}: several joint plans ({names}); choose one with -p or -d")
    return candidates[0]


def preprocessed_case_ids(cases_folder: Path, datasets: list[str], configuration: str, dataset_ids_hint: str) -> dict:
    ids = {}
    for dataset in datasets:
        folder = cases_folder / dataset
        found = finished_case_ids(folder)
        if not found:
            raise UserError(f"{folder}: no preprocessed cases for configuration {configuration} "
                            f"(run textnnunet_preprocess -d {dataset_ids_hint} -c {configuration})")
        ids[dataset] = found
    return ids


def model_folder(results: Path, plans_name: str, configuration: str, tag: str) -> Path:
    return results / plans_name / (configuration + (f"__{tag}" if tag else ""))


def _write_or_check(path: Path, content: dict, what: str) -> None:
    """Files a model folder's folds share must agree: a second fold with another encoder would be silently wrong."""
    if path.is_file():
        if load_json(path) != as_read_back_from_json(content):
            raise UserError(f"{path}: differs from this run's {what}; use another --model_tag or results folder")
        return
    atomic_write_json(path, content)


def prepare_output_folder(fold_folder: Path, resume: bool, overwrite: bool) -> None:
    has_ckpt = any((fold_folder / n).is_file() for n in (CHECKPOINT_LATEST, CHECKPOINT_FINAL, CHECKPOINT_BEST))
    if resume:
        return
    if has_ckpt and not overwrite:
        raise UserError(f"{fold_folder}: already holds checkpoints; pass --c to continue or --overwrite to start over")
    if has_ckpt and overwrite:
        shutil.rmtree(fold_folder)
    fold_folder.mkdir(parents=True, exist_ok=True)


def train_fold(configuration: str, fold: str | int, config: TrainingConfig | None = None, *,
               raw=None, preprocessed=None, results=None, plans_name: str | None = None,
               dataset_ids: list[int] | None = None, encoder: str = "auto", text_model: str | None = None,
               template: str | None = None, resume: bool = False, overwrite: bool = False,
               model_tag: str | None = None, validate: bool = True, validation_only: bool = False,
               save_probabilities: bool = False,
               dist: DistributedContext = DistributedContext(), echo: bool = True) -> Path:
    """Train (or resume) one fold; returns the fold's results folder.

    validation_only: re-run the validation of a finished fold (its checkpoint_final.pth, its own training_config.json;
    `config` then only contributes the device), e.g. with save_probabilities to score ensembles later.
    """
    from textnnunet.text.embedding import class_embeddings_for_plans

    config = config or TrainingConfig()
    folders = resolve_folders(raw, preprocessed, results, required=("preprocessed", "results"))
    fold = parse_fold(fold)
    plans_path = find_joint_plan(folders.preprocessed, plans_name, dataset_ids)
    plans = load_plans(plans_path)
    if configuration not in plans["configurations"]:
        raise UserError(f"configuration '{configuration}' is not in {plans_path} "
                        f"(available: {', '.join(plans['configurations'])})")
    cfg_plan = plans["configurations"][configuration]
    for dataset in plans["datasets"]:
        if not plans["label_space"]["datasets"].get(dataset):
            raise UserError(f"{plans_path}: dataset {dataset} labels none of the plan's classes "
                            f"({', '.join(c['name'] for c in plans['label_space']['classes'])}); re-plan without it")
    cases_folder = plans_path.parent / cfg_plan["data_identifier"]
    ids_hint = " ".join(str(int(n[7:10])) for n in plans["datasets"] if n[7:10].isdigit())
    case_ids = preprocessed_case_ids(cases_folder, plans["datasets"], configuration, ids_hint)
    splits = load_or_create_splits(plans_path.parent / "splits_final.json", case_ids)
    train_cases, val_cases = cases_for_fold(splits, fold, plans["datasets"])

    tag = model_tag if model_tag is not None else config.model_tag(encoder)
    out = model_folder(folders.results, plans["plans_name"], configuration, tag)
    fold_folder = out / f"fold_{fold}"
    if validation_only:
        return _validate_finished_fold(plans, configuration, fold, cases_folder, train_cases, val_cases, fold_folder,
                                       config, folders.raw, save_probabilities, echo)
    embeddings, vocabulary = class_embeddings_for_plans(
        plans, encoder=encoder, text_model=text_model, template=template,
        cache_folder=folders.preprocessed / "text_embedding_cache")
    if dist.is_main:
        prepare_output_folder(fold_folder, resume, overwrite)
        _write_or_check(out / "plans.json", plans, "plan")
        _write_or_check(out / "vocabulary.json", vocabulary.to_dict(), "vocabulary / text encoder")
        atomic_write_json(out / "splits_final.json", splits)
        atomic_write_json(fold_folder / "training_config.json", config.to_json())
    if dist.enabled:
        _init_process_group(dist, config)

    trainer = Trainer(plans, configuration, fold, cases_folder, train_cases, val_cases, fold_folder, config,
                      np.asarray(embeddings, dtype=np.float32), dist=dist, echo=echo)
    if resume:
        trainer.load_checkpoint(find_resume_checkpoint(fold_folder))
    trainer.run()
    if validate and dist.is_main and any(val_cases.values()):
        _validate(trainer, config, cases_folder, val_cases, folders.raw, save_probabilities)
    if dist.enabled:
        import torch.distributed as tdist

        tdist.destroy_process_group()
    return fold_folder


def _validate_finished_fold(plans: dict, configuration: str, fold: str, cases_folder: Path, train_cases: dict,
                            val_cases: dict, fold_folder: Path, config: TrainingConfig,
                            raw_root: Path | None, save_probabilities: bool, echo: bool) -> Path:
    """Validation of a trained fold with the settings and prompt vectors it was trained with (nnU-Net's --val)."""
    from dataclasses import replace

    from textnnunet.text.vocabulary import Vocabulary

    final = fold_folder / CHECKPOINT_FINAL
    if not final.is_file():
        raise UserError(f"{final}: not found (train the fold to the end before validating it alone)")
    config_file = fold_folder / "training_config.json"
    trained = TrainingConfig.from_json(load_json(config_file)) if config_file.is_file() else config
    trained = replace(trained, device=config.device)
    if not any(val_cases.values()):
        raise UserError(f"fold {fold}: no validation cases (fold 'all' trains on everything)")
    vocabulary_file = fold_folder.parent / "vocabulary.json"
    if not vocabulary_file.is_file():
        raise UserError(f"{vocabulary_file}: not found (the model folder is incomplete)")
    embeddings = np.asarray(Vocabulary.load(vocabulary_file).class_embeddings, dtype=np.float32)
    trainer = Trainer(plans, configuration, fold, cases_folder, train_cases, val_cases, fold_folder, trained,
                      embeddings, echo=echo)
    trainer.load_network_weights(final)
    _validate(trainer, trained, cases_folder, val_cases, raw_root, save_probabilities)
    return fold_folder


def _validate(trainer: Trainer, config: TrainingConfig, cases_folder: Path, val_cases: dict,
              raw_root: Path | None, save_probabilities: bool) -> None:
    """The sliding-window validation of the trainer's network, mirrored on the axes it was trained with."""
    from textnnunet.training.validation import validate_fold

    validate_fold(trainer.raw_network, trainer.plans, trainer.configuration_name, cases_folder, val_cases,
                  trainer.output_folder, trainer.embeddings, trainer.class_names, device=trainer.device,
                  raw_root=raw_root, mirror_axes=config.resolved_mirror_axes(len(trainer.cfg_plan["patch_size"])),
                  save_probabilities=save_probabilities)


def _init_process_group(dist: DistributedContext, config: TrainingConfig) -> None:
    import torch
    import torch.distributed as tdist

    backend = "nccl" if (config.device != "cpu" and torch.cuda.is_available()) else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(dist.local_rank)
    if not tdist.is_initialized():
        tdist.init_process_group(backend=backend, rank=dist.rank, world_size=dist.world_size)
