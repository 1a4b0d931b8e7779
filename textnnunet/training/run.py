"""`train_fold`: the Python API behind textnnunet_train (same arguments as the CLI)."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from textnnunet.errors import UserError
from textnnunet.paths import FoldFolder, ModelFolder, PlanFolder, resolve_folders
from textnnunet.preprocessing.preprocessor import finished_case_ids
from textnnunet.training.config import TrainingConfig
from textnnunet.training.splits import cases_for_fold, load_or_create_splits, parse_fold
from textnnunet.training.trainer import DistributedContext, Trainer, find_resume_checkpoint
from textnnunet.training.step import TrainingStep, UniversalStep
from textnnunet.utils.files import as_read_back_from_json, atomic_write_json, load_json
from textnnunet.utils.plans import Plans


def find_joint_plan(preprocessed: Path, plans_name: str | None, dataset_ids: list[int] | None) -> Path:
    """The joint plan's plans.json (PlanFolder.find)."""
    return PlanFolder.find(preprocessed, plans_name, dataset_ids).plans_file


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
    """results/<plans_name>/<configuration>[__<tag>] (ModelFolder.find)."""
    return ModelFolder.find(results, plans=plans_name, configuration=configuration, tag=tag).path


def write_or_check(path: Path, content: dict, what: str) -> None:
    """Files a model folder's folds share must agree: a second fold with another encoder would be silently wrong."""
    if path.is_file():
        if load_json(path) != as_read_back_from_json(content):
            raise UserError(f"{path}: differs from this run's {what}; use another --model_tag or results folder")
        return
    atomic_write_json(path, content)


def prepare_output_folder(fold_folder: Path, resume: bool, overwrite: bool) -> None:
    has_ckpt = FoldFolder(fold_folder).has_checkpoint()
    if resume:
        return
    if has_ckpt and not overwrite:
        raise UserError(f"{fold_folder}: already holds checkpoints; pass --c to continue or --overwrite to start over")
    if has_ckpt and overwrite:
        shutil.rmtree(fold_folder)
    fold_folder.mkdir(parents=True, exist_ok=True)


def check_resumed_config(path: Path, config: TrainingConfig) -> None:
    """--c continues the training the fold started: refuse settings that would make it another one."""
    changed = config.differences_that_change_training(TrainingConfig.from_json(load_json(path)))
    if changed:
        raise UserError(f"{path}: this fold was trained with other settings ({'; '.join(changed)}); resume with the "
                        f"same ones, or use --overwrite or another --model_tag")


@dataclass(frozen=True)
class FoldData:
    """A plan's configuration and one fold's cases, ready to train: what train_fold and train_baseline share."""

    plans: Plans
    plans_path: Path
    configuration: str
    fold: int | str
    cases_folder: Path
    splits: dict  # {dataset: [{"train", "val"} x 5]} of the plan's datasets
    train_cases: dict[str, list[str]]
    val_cases: dict[str, list[str]]

    @property
    def patch_dims(self) -> int:
        return self.plans.configuration(self.configuration).dims


def load_fold_data(plans_path: Path, plans: Plans | dict, configuration: str, fold: str | int, dataset_ids_hint: str,
                   splits_path: Path | None = None) -> FoldData:
    """The plan (`plans`, loaded from `plans_path`), its preprocessed cases of `configuration` and the fold's
    train/val cases.

    dataset_ids_hint: the ids the error messages suggest to preprocess. splits_path: the splits_final.json to take
    the folds from (created with the seeded rule where a dataset has none; default: the plan folder's).
    """
    plans = Plans.of(plans)
    if not plans.has_configuration(configuration):
        raise UserError(f"configuration '{configuration}' is not in {plans_path} "
                        f"(available: {', '.join(plans.configuration_names)})")
    datasets = plans.datasets
    plan_folder = PlanFolder.of_plans_file(plans_path)
    cases_folder = plan_folder.cases(plans.configuration(configuration).data_identifier)
    case_ids = preprocessed_case_ids(cases_folder, datasets, configuration, dataset_ids_hint)
    splits_path = splits_path or plan_folder.splits_file
    all_splits = load_or_create_splits(splits_path, case_ids)
    splits = {name: folds for name, folds in all_splits.items() if name in datasets}
    train_cases, val_cases = cases_for_fold(splits, parse_fold(fold), datasets)
    for name in datasets:
        missing = sorted(set(train_cases[name] + val_cases[name]) - set(case_ids[name]))
        if missing:
            raise UserError(f"{splits_path}: cases {', '.join(missing[:5])} of {name} are not preprocessed in "
                            f"{cases_folder}")
    return FoldData(plans, plans_path, configuration, parse_fold(fold), cases_folder, splits, train_cases, val_cases)


def start_fold_folder(data: FoldData, model_folder_path: Path, config: TrainingConfig, resume: bool,
                      overwrite: bool, shared_files: dict[str, tuple[dict, str]] | None = None) -> Path:
    """fold_<k>/ ready for training (resume, or empty), with the model folder's shared files: plans.json and each of
    `shared_files` (name -> (content, what)) written or checked against this run's, splits_final.json and the
    fold's training_config.json written. Returns the fold folder."""
    model = ModelFolder(Path(model_folder_path))
    fold = model.fold(data.fold)
    prepare_output_folder(fold.path, resume, overwrite)
    if resume and fold.training_config_file.is_file():
        check_resumed_config(fold.training_config_file, config)
    write_or_check(model.plans_file, data.plans.to_json(), "plan")
    for path, (content, what) in (shared_files or {}).items():
        write_or_check(model.path / path, content, what)
    atomic_write_json(model.splits_file, data.splits)
    atomic_write_json(fold.training_config_file, config.to_json())
    return fold.path


def run_fold(data: FoldData, fold_folder: Path, config: TrainingConfig, step: TrainingStep, *, resume: bool,
             validate: Callable[[Trainer], None] | None, dist: DistributedContext, echo: bool) -> Trainer:
    """Train (or resume) one fold of `step`'s model, then `validate(trainer)` on the main process."""
    if dist.enabled:
        init_process_group(dist, config)
    trainer = Trainer(data.plans, data.configuration, data.fold, data.cases_folder, data.train_cases,
                      data.val_cases, fold_folder, config, step, dist=dist, echo=echo)
    if resume:
        trainer.load_checkpoint(find_resume_checkpoint(fold_folder))
    trainer.run()
    if validate is not None and dist.is_main and any(data.val_cases.values()):
        validate(trainer)
    if dist.enabled:
        import torch.distributed as tdist

        tdist.destroy_process_group()
    return trainer


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
    from textnnunet.network.conditioning import require_per_item_text
    from textnnunet.text.embedding import class_embeddings_for_plans

    config = config or TrainingConfig()
    folders = resolve_folders(raw, preprocessed, results, required=("preprocessed", "results"))
    plans_path = PlanFolder.find(folders.preprocessed, plans_name, dataset_ids).plans_file
    data = _joint_fold_data(plans_path, configuration, fold)
    tag = model_tag if model_tag is not None else config.model_tag(encoder)
    model = ModelFolder.find(folders.results, plans=data.plans.plans_name, configuration=configuration, tag=tag)
    out = model.path
    if validation_only:
        return _validate_finished_fold(data, model.fold(data.fold).path, config, folders.raw, save_probabilities,
                                       echo)
    if config.prompt_modality:
        require_per_item_text(config.conditioning)
    _, vocabulary = class_embeddings_for_plans(
        data.plans, encoder=encoder, text_model=text_model, template=template,
        cache_folder=folders.preprocessed / "text_embedding_cache", prompt_modality=config.prompt_modality)
    fold_folder = model.fold(data.fold).path
    if dist.is_main:
        start_fold_folder(data, out, config, resume, overwrite,
                          {model.vocabulary_file.name: (vocabulary.to_dict(), "vocabulary / text encoder")})
    step = UniversalStep.from_vocabulary(data.plans, vocabulary)
    run_fold(data, fold_folder, config, step, resume=resume,
             validate=(lambda t: _validate(t, data, config, folders.raw, save_probabilities)) if validate else None,
             dist=dist, echo=echo)
    return fold_folder


def _joint_fold_data(plans_path: Path, configuration: str, fold: str | int) -> FoldData:
    plans = Plans.load(plans_path)
    for dataset in plans.datasets:
        if not plans.label_space.datasets.get(dataset):
            raise UserError(f"{plans_path}: dataset {dataset} labels none of the plan's classes "
                            f"({', '.join(plans.label_space.class_names)}); re-plan without it")
    ids_hint = " ".join(str(int(n[7:10])) for n in plans.datasets if n[7:10].isdigit())
    return load_fold_data(plans_path, plans, configuration, fold, ids_hint)


def _validate_finished_fold(data: FoldData, fold_folder: Path, config: TrainingConfig, raw_root: Path | None,
                            save_probabilities: bool, echo: bool) -> Path:
    """Validation of a trained fold with the settings and prompt vectors it was trained with (nnU-Net's --val)."""
    from dataclasses import replace

    from textnnunet.text.vocabulary import Vocabulary

    fold = FoldFolder(fold_folder)
    final = fold.final_checkpoint
    if not final.is_file():
        raise UserError(f"{final}: not found (train the fold to the end before validating it alone)")
    config_file = fold.training_config_file
    trained = TrainingConfig.from_json(load_json(config_file)) if config_file.is_file() else config
    trained = replace(trained, device=config.device)
    if not any(data.val_cases.values()):
        raise UserError(f"fold {data.fold}: no validation cases (fold 'all' trains on everything)")
    vocabulary_file = ModelFolder(fold_folder.parent).vocabulary_file
    if not vocabulary_file.is_file():
        raise UserError(f"{vocabulary_file}: not found (the model folder is incomplete)")
    step = UniversalStep.from_vocabulary(data.plans, Vocabulary.load(vocabulary_file))
    trainer = Trainer(data.plans, data.configuration, data.fold, data.cases_folder, data.train_cases,
                      data.val_cases, fold_folder, trained, step, echo=echo)
    trainer.load_network_weights(final)
    _validate(trainer, data, trained, raw_root, save_probabilities)
    return fold_folder


def _validate(trainer: Trainer, data: FoldData, config: TrainingConfig, raw_root: Path | None,
              save_probabilities: bool) -> None:
    """The sliding-window validation of the trainer's network, mirrored on the axes it was trained with."""
    from textnnunet.training.validation import validate_fold

    validate_fold(trainer.raw_network, data.plans, data.configuration, data.cases_folder, data.val_cases,
                  trainer.output_folder, trainer.step.prompt_tables, trainer.class_names, device=trainer.device,
                  raw_root=raw_root, mirror_axes=config.resolved_mirror_axes(data.patch_dims),
                  save_probabilities=save_probabilities)


def init_process_group(dist: DistributedContext, config: TrainingConfig) -> None:
    import torch
    import torch.distributed as tdist

    backend = "nccl" if (config.device != "cpu" and torch.cuda.is_available()) else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(dist.local_rank)
    if not tdist.is_initialized():
        tdist.init_process_group(backend=backend, rank=dist.rank, world_size=dist.world_size)
