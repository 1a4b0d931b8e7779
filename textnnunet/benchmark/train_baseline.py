"""`train_baseline`: the Python API behind textnnunet_train_baseline (same arguments as the CLI)."""
from __future__ import annotations

from pathlib import Path

from textnnunet.benchmark.baseline import BASELINE_TAG, BaselineTrainer, single_dataset, validate_baseline_fold
from textnnunet.errors import UserError
from textnnunet.experiment_planning.planner import load_plans
from textnnunet.paths import resolve_folders
from textnnunet.training.config import TrainingConfig
from textnnunet.training.run import _write_or_check, model_folder, preprocessed_case_ids, prepare_output_folder
from textnnunet.training.splits import cases_for_fold, load_or_create_splits, parse_fold
from textnnunet.training.trainer import DistributedContext, find_resume_checkpoint
from textnnunet.utils.files import atomic_write_json


def find_dataset_plan(preprocessed: Path, dataset: int | str) -> Path:
    """preprocessed/DatasetXXX_Name/plans.json for a dataset id (1, "1", "001") or full name."""
    preprocessed = Path(preprocessed)
    text = str(dataset)
    if text.isdigit():
        matches = sorted(preprocessed.glob(f"Dataset{int(text):03d}_*/plans.json")) if preprocessed.is_dir() else []
        if len(matches) > 1:
            raise UserError(f"{preprocessed}: several folders for dataset {int(text):03d}: "
                            f"{', '.join(m.parent.name for m in matches)}")
        path = matches[0] if matches else preprocessed / f"Dataset{int(text):03d}_*" / "plans.json"
    else:
        path = preprocessed / text / "plans.json"
    if not path.is_file():
        raise UserError(f"{path}: per-dataset plan not found (run textnnunet_plan_and_preprocess -d {dataset})")
    return path


def baseline_model_folder(results: Path, dataset_name: str, configuration: str) -> Path:
    """results/DatasetXXX_Name/<configuration>__baseline."""
    return model_folder(Path(results), dataset_name, configuration, BASELINE_TAG)


def train_baseline(dataset: int | str, configuration: str, fold: int | str, config: TrainingConfig | None = None, *,
                   raw=None, preprocessed=None, results=None, splits_file: str | Path | None = None,
                   resume: bool = False, overwrite: bool = False, validate: bool = True,
                   dist: DistributedContext = DistributedContext(), echo: bool = True) -> Path:
    """Train (or resume) one fold of the per-dataset baseline; returns the fold's results folder.

    `splits_file`: a splits_final.json to take this dataset's folds from (the benchmark passes the joint plan's,
    so both models hold out the same cases); default preprocessed/DatasetXXX_Name/splits_final.json, created
    with the same seeded rule as the joint plan's (same cases, same folds).
    """
    config = config or TrainingConfig()
    folders = resolve_folders(raw, preprocessed, results, required=("preprocessed", "results"))
    fold = parse_fold(fold)
    plans_path = find_dataset_plan(folders.preprocessed, dataset)
    plans = load_plans(plans_path)
    name = single_dataset(plans)
    if configuration not in plans["configurations"]:
        raise UserError(f"configuration '{configuration}' is not in {plans_path} "
                        f"(available: {', '.join(plans['configurations'])})")
    cases_folder = plans_path.parent / plans["configurations"][configuration]["data_identifier"]
    case_ids = preprocessed_case_ids(cases_folder, [name], configuration, str(dataset))
    splits_path = Path(splits_file) if splits_file is not None else plans_path.parent / "splits_final.json"
    splits = load_or_create_splits(splits_path, case_ids)
    train_cases, val_cases = cases_for_fold({name: splits[name]}, fold, [name])
    missing = sorted(set(train_cases[name] + val_cases[name]) - set(case_ids[name]))
    if missing:
        raise UserError(f"{splits_path}: cases {', '.join(missing[:5])} of {name} are not preprocessed in {cases_folder}")

    out = baseline_model_folder(folders.results, name, configuration)
    fold_folder = out / f"fold_{fold}"
    if dist.is_main:
        prepare_output_folder(fold_folder, resume, overwrite)
        _write_or_check(out / "plans.json", plans, "plan")
        atomic_write_json(out / "splits_final.json", {name: splits[name]})
        atomic_write_json(fold_folder / "training_config.json", config.to_json())
    if dist.enabled:
        from textnnunet.training.run import _init_process_group

        _init_process_group(dist, config)
    trainer = BaselineTrainer(plans, configuration, fold, cases_folder, train_cases, val_cases, fold_folder, config,
                              dist=dist, echo=echo)
    if resume:
        trainer.load_checkpoint(find_resume_checkpoint(fold_folder))
    trainer.run()
    if validate and dist.is_main and val_cases[name]:
        validate_baseline_fold(trainer.raw_network, plans, configuration, cases_folder, val_cases, fold_folder,
                               trainer.device, raw_root=folders.raw,
                               mirror_axes=config.resolved_mirror_axes(len(plans["configurations"][configuration]["patch_size"])))
    if dist.enabled:
        import torch.distributed as tdist

        tdist.destroy_process_group()
    return fold_folder
