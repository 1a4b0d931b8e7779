"""`run_benchmark`: the Python API behind textnnunet_benchmark.

Trains what is missing (the universal model, one baseline per dataset, ablations), reads each model's
validation summary (held-out cases of the same fold), predicts the fully labelled test set with every model,
and writes benchmark.json / benchmark.md / plots into results/benchmark_<plan>_<config>_fold<k>/. Genuine
nnU-Net v2 models given with --nnunet_model are scored next to them (`nnunet_import`).
"""
from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from textnnunet.benchmark import aggregate
from textnnunet.benchmark.budget import Budget, plan_budget
from textnnunet.benchmark.nnunet_import import (
    NnUNetModel,
    check_validation_cases,
    find_predict_executable,
    open_nnunet_model,
    score_test_set,
    score_validation,
)
from textnnunet.benchmark.nnunet_import import model_info as nnunet_model_info
from textnnunet.benchmark.report import write_benchmark
from textnnunet.benchmark.train_baseline import baseline_model_folder, train_baseline
from textnnunet.dataset.description import DatasetDescription, find_dataset_folder, load_dataset
from textnnunet.errors import UserError
from textnnunet.experiment_planning.planner import intensity_group_name
from textnnunet.inference.predictor import PredictionSettings, resolve_inference_device
from textnnunet.paths import CHECKPOINT_FINAL, ModelFolder, PlanFolder, resolve_folders
from textnnunet.preprocessing.normalization import matching_intensity_group
from textnnunet.training.config import TrainingConfig
from textnnunet.training.splits import cases_for_fold, parse_fold
from textnnunet.utils.files import load_json
from textnnunet.utils.plans import Plans, same_image_type

ABLATIONS = ("encoder", "conditioning", "masking")
ENCODERS = ("clip", "minilm", "onehot")


@dataclass
class BenchmarkOptions:
    dataset_ids: list[int]
    configuration: str = "3d_fullres"
    fold: int | str = 0
    epochs: int = TrainingConfig.epochs
    iters_per_epoch: int = TrainingConfig.iters_per_epoch  # per baseline; the universal model gets the sum
    val_iters_per_epoch: int = TrainingConfig.val_iters_per_epoch
    equal_budget: bool = True
    train: bool = True
    ablations: list[str] = field(default_factory=list)
    test_dataset: int | str | None = None
    # Further fully labelled test sets, each scored like the first (e.g. the sealed test set, Dataset010)
    more_test_datasets: list = field(default_factory=list)
    encoder: str = "auto"
    device: str = "auto"
    num_processes: int = 2
    use_mirroring: bool = True  # test-time mirroring for the predictions the benchmark itself makes
    base_config: TrainingConfig = field(default_factory=TrainingConfig)  # other hyper-parameters, shared by all
    command: str = ""
    # genuine nnU-Net v2 models: (dataset id or name, <nnUNet_results>/DatasetXXX_Name/<Trainer>__<Plans>__<config>)
    nnunet_models: list[tuple[str, str]] = field(default_factory=list)
    # (dataset, folder of label maps[, test dataset]): without the test dataset, the first test set
    nnunet_test_predictions: list[tuple[str, ...]] = field(default_factory=list)
    nnunet_predict_exe: str | None = None  # nnUNetv2_predict_from_modelfolder (default: the one on PATH)


@dataclass(frozen=True)
class ModelSpec:
    """One model of the benchmark: its name in the tables, where it lives, how to train it."""

    name: str
    kind: str  # universal | baseline
    folder: Path
    dataset: str | None = None
    encoder: str = "auto"
    tag: str = ""
    config_changes: tuple = ()


def environment() -> dict:
    """Device and library versions, recorded so a number can be traced to where it was measured."""
    import numpy
    import SimpleITK
    import torch

    import textnnunet

    if torch.cuda.is_available():
        device = f"CUDA {torch.cuda.get_device_name(0)}"
    else:
        device = f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    versions = {"textnnunet": getattr(textnnunet, "__version__", "0.1.0"), "python": sys.version.split()[0],
                "torch": torch.__version__, "numpy": numpy.__version__, "SimpleITK": getattr(SimpleITK, "__version__", "?")}
    try:
        from importlib.metadata import version

        versions["dynamic-network-architectures"] = version("dynamic-network-architectures")
    except Exception:  # noqa: BLE001 - a version string is informative, not essential
        pass
    return {"device": device, "platform": platform.platform(), "versions": versions}


def _default_encoder_kind(universal_folder: Path, requested: str) -> str | None:
    """The encoder the main universal model uses ('auto' resolves to clip or minilm)."""
    vocab = ModelFolder(universal_folder).vocabulary_file
    if vocab.is_file():
        return (load_json(vocab).get("encoder") or {}).get("kind")
    if requested != "auto":
        return requested
    from textnnunet.text.encoders import clip_weights_available

    return "clip" if clip_weights_available() else "minilm"


def model_specs(options: BenchmarkOptions, results: Path, plans_name: str, datasets: list[str],
                skipped: dict[str, str]) -> list[ModelSpec]:
    """Universal, one baseline per dataset, then the requested ablations (unavailable ones go to `skipped`)."""
    config = options.configuration
    main_tag = options.base_config.model_tag(options.encoder)
    universal = ModelSpec(aggregate.UNIVERSAL, "universal",
                          ModelFolder.find(results, plans=plans_name, configuration=config, tag=main_tag).path,
                          encoder=options.encoder, tag=main_tag)
    specs = [universal]
    specs += [ModelSpec(aggregate.baseline_name(ds), "baseline", baseline_model_folder(results, ds, config), dataset=ds)
              for ds in datasets]
    for ablation in options.ablations:
        if ablation not in ABLATIONS:
            raise UserError(f"--ablations {ablation}: unknown (choose from {', '.join(ABLATIONS)})")
    if "encoder" in options.ablations:
        default_kind = _default_encoder_kind(universal.folder, options.encoder)
        for kind in ENCODERS:
            if kind == default_kind:
                continue
            if kind == "clip":
                from textnnunet.text.encoders import clip_weights_available

                if not clip_weights_available():
                    skipped["universal__clip"] = "CLIP weights are not available locally"
                    continue
            specs.append(_ablation(options, results, plans_name, kind, encoder=kind))
    if "conditioning" in options.ablations:
        specs.append(_ablation(options, results, plans_name, "film", conditioning="film"))
    if "masking" in options.ablations:
        specs.append(_ablation(options, results, plans_name, "naiveunion", mask_unannotated=False))
    return specs


def _ablation(options: BenchmarkOptions, results: Path, plans_name: str, tag: str, encoder: str | None = None,
              **changes) -> ModelSpec:
    return ModelSpec(f"{aggregate.UNIVERSAL}__{tag}", "universal",
                     ModelFolder.find(results, plans=plans_name, configuration=options.configuration, tag=tag).path,
                     encoder=encoder or options.encoder, tag=tag, config_changes=tuple(sorted(changes.items())))


def training_config(options: BenchmarkOptions, budget: Budget, spec: ModelSpec) -> TrainingConfig:
    iters = budget.universal_iters_per_epoch if spec.kind == "universal" else budget.baseline_iters_per_epoch
    return dataclasses.replace(options.base_config, epochs=budget.epochs, iters_per_epoch=iters,
                               val_iters_per_epoch=options.val_iters_per_epoch, device=options.device,
                               **dict(spec.config_changes))


def ensure_baseline_cache(preprocessed: Path, raw: Path | None, dataset: str, options: BenchmarkOptions,
                          log: Callable[[str], None]) -> None:
    """Preprocess a dataset with its own plan where its cache is missing, incomplete or stale: plan_and_preprocess
    leaves the per-dataset caches out unless given --baselines (ensure_preprocessed)."""
    from textnnunet.preprocessing.preprocessor import ensure_preprocessed

    plans_path = PlanFolder.find_dataset(preprocessed, dataset).plans_file
    if not Plans.load(plans_path).has_configuration(options.configuration):
        raise UserError(f"{plans_path}: configuration '{options.configuration}' is not in the per-dataset plan")
    ensure_preprocessed(plans_path, options.configuration, raw, num_processes=options.num_processes, log=log)


def baseline_needs_cache(spec: ModelSpec, options: BenchmarkOptions) -> bool:
    """A baseline reads its cache to train (when training is on) or to validate a trained fold without a summary."""
    fold = ModelFolder(spec.folder).fold(options.fold)
    if not fold.final_checkpoint.is_file():
        return options.train
    return not (fold.validation / "summary.json").is_file()


def train_missing(spec: ModelSpec, options: BenchmarkOptions, budget: Budget, folders, plans_name: str,
                  log: Callable[[str], None]) -> bool:
    """Train (or resume) a model without a final checkpoint; False when it is missing and training is off."""
    fold_folder = ModelFolder(spec.folder).fold(options.fold)
    if fold_folder.final_checkpoint.is_file():
        return True
    if not options.train:
        return False
    config = training_config(options, budget, spec)
    resume = fold_folder.latest_checkpoint.is_file()
    log(f"training {spec.name}: {config.epochs} epochs x {config.iters_per_epoch} iterations"
        + (" (resuming)" if resume else ""))
    if spec.kind == "baseline":
        train_baseline(spec.dataset, options.configuration, options.fold, config, raw=folders.raw,
                       preprocessed=folders.preprocessed, results=folders.results,
                       splits_file=PlanFolder(folders.preprocessed / plans_name).splits_file, resume=resume,
                       num_processes=options.num_processes)
    else:
        from textnnunet.training.run import train_fold

        train_fold(options.configuration, options.fold, config, raw=folders.raw, preprocessed=folders.preprocessed,
                   results=folders.results, plans_name=plans_name, encoder=spec.encoder, resume=resume,
                   model_tag=spec.tag)
    return True


def load_model(spec: ModelSpec, fold, settings: PredictionSettings):
    from textnnunet.benchmark.models import BaselineModel, UniversalModel

    cls = BaselineModel if spec.kind == "baseline" else UniversalModel
    return cls(spec.folder, fold, settings)


def labelled_test_cases(raw: Path | None, test_dataset: int | str):
    from textnnunet.dataset.description import load_dataset, test_cases

    if raw is None:
        raise UserError("--test_dataset needs the raw folder (--raw or TEXTNNUNET_raw)")
    desc = load_dataset(raw, test_dataset)
    cases = [c for c in test_cases(desc) if c.label_file is not None]
    if not cases:
        raise UserError(f"{desc.folder}: no labelled test cases (imagesTs with labelsTs)")
    return desc, cases


def open_nnunet_imports(options: BenchmarkOptions, raw: Path | None,
                        datasets: list[str]) -> list[tuple[NnUNetModel, DatasetDescription]]:
    """The --nnunet_model folders with their raw datasets, each checked (before anything is trained)."""
    if not options.nnunet_models:
        for flag, given in (("--nnunet_test_predictions", options.nnunet_test_predictions),
                            ("--nnunet_predict_exe", options.nnunet_predict_exe)):
            if given:
                raise UserError(f"{flag}: needs --nnunet_model")
        return []
    if raw is None:
        raise UserError("--nnunet_model needs the raw folder (--raw or TEXTNNUNET_raw): nnU-Net's predictions are "
                        "scored against the raw labels")
    imports: dict[str, tuple[NnUNetModel, DatasetDescription]] = {}
    for identifier, folder in options.nnunet_models:
        desc = load_dataset(raw, identifier)
        if desc.name not in datasets:
            raise UserError(f"--nnunet_model {identifier}: {desc.name} is not one of the benchmark's datasets "
                            f"({', '.join(datasets)})")
        if desc.name in imports:
            raise UserError(f"--nnunet_model {identifier}: given twice for {desc.name}")
        imports[desc.name] = (open_nnunet_model(folder, options.fold, desc), desc)
    return list(imports.values())


def nnunet_test_prediction_folders(options: BenchmarkOptions, raw: Path | None,
                                   imported: list[str]) -> dict[tuple[str, str], Path]:
    """(model's dataset name, test set name) -> the folder of nnU-Net predictions of that test set the user gave.

    Each entry is (DATASET_ID, FOLDER) for the first test set or (DATASET_ID, FOLDER, TEST_DATASET_ID)."""
    entries = options.nnunet_test_predictions
    if entries and options.test_dataset is None:
        raise UserError("--nnunet_test_predictions: needs --test_dataset")
    test_names = [find_dataset_folder(raw, i).name for i in test_dataset_ids(options)] if entries else []
    folders = {}
    for entry in entries:
        if len(entry) not in (2, 3):
            raise UserError(f"--nnunet_test_predictions {' '.join(map(str, entry))}: give DATASET_ID FOLDER "
                            "[TEST_DATASET_ID]")
        identifier, folder = entry[0], entry[1]
        name = find_dataset_folder(raw, identifier).name
        if name not in imported:
            raise UserError(f"--nnunet_test_predictions {identifier}: no --nnunet_model given for {name}")
        test_name = find_dataset_folder(raw, entry[2]).name if len(entry) == 3 else test_names[0]
        if test_name not in test_names:
            raise UserError(f"--nnunet_test_predictions {' '.join(map(str, entry))}: {test_name} is not one of the "
                            f"test sets (--test_dataset {' '.join(map(str, test_dataset_ids(options)))})")
        if (name, test_name) in folders:
            raise UserError(f"--nnunet_test_predictions: given twice for {name} on {test_name}")
        folders[(name, test_name)] = Path(folder)
    return folders


def is_sealed_test_set(desc: DatasetDescription) -> bool:
    """A sealed test set (report it, never tune on it) says so in its dataset.json: "textnnunet_phantom": {"sealed":
    true} (textnnunet_generate_phantoms --sealed)."""
    return bool((desc.raw.get("textnnunet_phantom") or {}).get("sealed"))


def _record_speed(info: dict, index: int, test_set: str, seconds: float | None) -> None:
    """Seconds per case on each test set a model predicted (None: predictions read, not made); the speed column is
    the first test set's, where the models scored there predict the same images (equal work)."""
    if seconds is None:
        return
    info["inference_seconds_by_test_set"][test_set] = seconds
    if index == 0:
        info["inference_seconds_per_case"] = seconds


def test_dataset_ids(options: BenchmarkOptions) -> list:
    """The test sets to score: --test_dataset's first id, then the others (none without --test_dataset)."""
    if options.test_dataset is None:
        if options.more_test_datasets:
            raise UserError("more test sets given without a first one (--test_dataset)")
        return []
    ids = [options.test_dataset, *options.more_test_datasets]
    if len({str(i).lstrip("0") for i in ids}) != len(ids):
        raise UserError(f"--test_dataset {' '.join(map(str, ids))}: a test set is given twice")
    return ids


def benchmark_folder(results: Path, plans_name: str, configuration: str, fold) -> Path:
    return Path(results) / f"benchmark_{plans_name}_{configuration}_fold{fold}"


def run_benchmark(options: BenchmarkOptions, *, raw=None, preprocessed=None, results=None,
                  echo: bool = True) -> Path:
    """Run the whole comparison; returns the benchmark folder."""
    log = print if echo else (lambda *_: None)
    folders = resolve_folders(raw, preprocessed, results, required=("preprocessed", "results"))
    options.fold = parse_fold(options.fold)
    plan_folder = PlanFolder.find(folders.preprocessed, dataset_ids=options.dataset_ids)
    plans_name = plan_folder.name
    plans = Plans.load(plan_folder.plans_file)
    datasets = plans.datasets
    budget = plan_budget(options.epochs, options.iters_per_epoch, len(datasets), options.equal_budget)
    log(budget.describe())
    skipped: dict[str, str] = {}
    specs = model_specs(options, folders.results, plans_name, datasets, skipped)
    imports = open_nnunet_imports(options, folders.raw, datasets)
    nnunet_predictions = nnunet_test_prediction_folders(options, folders.raw, [m.dataset for m, _ in imports])
    nnunet_executable = find_predict_executable(options.nnunet_predict_exe) if imports else None

    # Baselines need their own caches; the joint plan's splits file decides both models' folds.
    from textnnunet.training.run import preprocessed_case_ids
    from textnnunet.training.splits import load_or_create_splits

    joint_cases = plan_folder.cases(plans.configuration(options.configuration).data_identifier)
    case_ids = preprocessed_case_ids(joint_cases, datasets, options.configuration, " ".join(map(str, options.dataset_ids)))
    splits_path = plan_folder.splits_file
    held_out = cases_for_fold(load_or_create_splits(splits_path, case_ids), options.fold, datasets)[1]
    for model, _ in imports:
        if held_out[model.dataset]:
            check_validation_cases(model, held_out[model.dataset], splits_path)  # fail before training
    for spec in specs:  # before anything trains, so a missing raw folder fails early
        if spec.kind == "baseline" and baseline_needs_cache(spec, options):
            ensure_baseline_cache(folders.preprocessed, folders.raw, spec.dataset, options, log)

    available = []
    for spec in specs:
        if train_missing(spec, options, budget, folders, plans_name, log):
            available.append(spec)
        else:
            fold_folder = ModelFolder(spec.folder).fold(options.fold).path
            skipped[spec.name] = f"not trained ({fold_folder} has no {CHECKPOINT_FINAL})"
    if not any(s.name == aggregate.UNIVERSAL for s in available):
        raise UserError(f"{specs[0].folder}: the universal model is not trained; run without --no_train")

    out = benchmark_folder(folders.results, plans_name, options.configuration, options.fold)
    settings = PredictionSettings(device=options.device, use_mirroring=options.use_mirroring)
    models_info, validation = {}, {}
    # Every test set: (description, labelled cases, {model: summary}); the first one is benchmark["test"].
    test_sets = [(*labelled_test_cases(folders.raw, t), {}) for t in test_dataset_ids(options)]
    for spec in available:
        log(f"evaluating {spec.name}")
        model = load_model(spec, options.fold, settings)
        info = {**model.info(), "image_types": list(model.plans.intensity_groups)}
        validation[spec.name] = model.ensure_validation(folders.preprocessed, folders.raw)
        info["inference_seconds_per_case"], info["inference_seconds_by_test_set"] = None, {}
        for i, (test_desc, test_cases_, test_summaries) in enumerate(test_sets):
            from textnnunet.benchmark.models import evaluate_on_test_set

            if any(c in model.classes for c in test_desc.classes):
                modality, why_not = image_type_of_test_set(model.plans, test_desc)
                if why_not:
                    skipped[f"{spec.name} on {test_desc.name}"] = why_not
                    continue
                summary, seconds = evaluate_on_test_set(model, test_cases_, dict(test_desc.classes), test_desc.name,
                                                        out / f"test_{test_desc.name}" / spec.name.replace(" ", "_"),
                                                        modality=modality)
                test_summaries[spec.name] = summary
                _record_speed(info, i, test_desc.name, seconds)
        models_info[spec.name] = info
    for model, desc in imports:
        log(f"evaluating {model.name} ({model.folder})")
        info = {**nnunet_model_info(model), "inference_seconds_per_case": None, "inference_seconds_by_test_set": {},
                "image_types": [intensity_group_name(desc)]}
        folder_name = model.name.replace(" ", "_")
        if held_out[model.dataset]:
            validation[model.name] = score_validation(model, desc, held_out[model.dataset], splits_path,
                                                      out / f"validation_{model.dataset}" / folder_name)
        for i, (test_desc, test_cases_, test_summaries) in enumerate(test_sets):
            if not any(c in model.regions for c in test_desc.classes):
                continue
            predictions = nnunet_predictions.get((model.dataset, test_desc.name))
            trained_on, images = intensity_group_name(desc), intensity_group_name(test_desc)
            if predictions is None and not same_image_type(trained_on, images):
                # predictions the user gave for this test set are scored whatever the images are; none are made here
                why = f"trained on {trained_on} images, the test set's are {images}"
                skipped[f"{model.name} on {test_desc.name}"] = why
                continue
            if predictions is None and nnunet_executable is None:
                skipped[f"{model.name} on {test_desc.name}"] = (
                    f"no predictions: pass --nnunet_test_predictions {model.dataset} FOLDER"
                    f"{'' if i == 0 else ' ' + test_desc.name}, or make "
                    "nnUNetv2_predict_from_modelfolder available (PATH or --nnunet_predict_exe)")
            else:
                log(f"{model.name} on {test_desc.name}: " + (f"reading {predictions}" if predictions else
                                                            f"running {nnunet_executable}"))
                summary, seconds = score_test_set(
                    model, test_desc, test_cases_, out / f"test_{test_desc.name}" / folder_name,
                    predictions=predictions, executable=nnunet_executable,
                    device=resolve_inference_device(options.device).type, use_mirroring=options.use_mirroring)
                test_summaries[model.name] = summary
                _record_speed(info, i, test_desc.name, seconds)
        models_info[model.name] = info

    first = test_sets[0] if test_sets else (None, [], {})
    more = [{"summaries": summaries, "dataset": desc.name, "classes": list(desc.classes), "num_cases": len(cases)}
            for desc, cases, summaries in test_sets[1:]]
    image_types = {desc.name: intensity_group_name(desc) for desc, _, _ in test_sets}
    benchmark = build_benchmark(options, plans_name, budget, models_info, validation, first[2],
                                first[0].name if first[0] else None, list(first[0].classes) if first[0] else None,
                                len(first[1]), skipped, more_tests=more,
                                sealed=[desc.name for desc, _, _ in test_sets if is_sealed_test_set(desc)],
                                image_types=image_types)
    paths = write_benchmark(benchmark, out)
    log(f"benchmark written to {paths['md']}")
    return out


def _asked_pairs(test_dataset: str | None, test_classes: list[str], more_tests: list[dict] | None,
                 image_types: dict[str, str] | None) -> list[tuple[str, str]]:
    """(class, image type) for every class a test set scores, on that test set's image type (none without types)."""
    image_types = image_types or {}
    sets = ([(test_dataset, test_classes)] if test_dataset else []) + [(t["dataset"], list(t["classes"]))
                                                                        for t in more_tests or []]
    return [(c, image_types[name]) for name, classes in sets if image_types.get(name) for c in classes]


def build_benchmark(options: BenchmarkOptions, plans_name: str, budget: Budget, models: dict, validation: dict,
                    test_summaries: dict, test_dataset: str | None, test_classes: list[str] | None, n_test_cases: int,
                    skipped: dict | None = None, env: dict | None = None, date: str | None = None,
                    more_tests: list[dict] | None = None, sealed: list[str] | tuple = (),
                    image_types: dict[str, str] | None = None) -> dict:
    """The benchmark dict (benchmark.json) from per-model info and summaries: pure, no files or models.

    `more_tests`: further test sets, each {"summaries", "dataset", "classes", "num_cases"}; they go to
    benchmark["more_tests"] (a list of blocks like benchmark["test"]), present only when there are any. `sealed`: the
    test sets that are sealed (their blocks get "sealed": true; the report says so). `image_types`: test set ->
    its images' channel names ("CT", "T2"), written to its block as "image_type".
    """
    val_table = aggregate.validation_table(validation)
    model_classes = {name: m["classes"] for name, m in models.items()}
    imported = any(aggregate.is_nnunet(name) for name in models)
    wanted = list(test_classes) if test_classes else sorted({c for classes in model_classes.values() for c in classes})
    benchmark = {
        "date": date or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "settings": {"plans_name": plans_name, "configuration": options.configuration, "fold": options.fold,
                     "datasets": list(val_table), "epochs": options.epochs, "iters_per_epoch": options.iters_per_epoch,
                     "ablations": list(options.ablations), "test_dataset": test_dataset, "command": options.command},
        "environment": env or environment(),
        "budget": {**budget.to_json(), "description": budget.describe()},
        "budget_check": aggregate.budget_check(models),
        "models": models,
        "validation": val_table,
        "validation_differences": aggregate.validation_differences(val_table),
        **({"validation_differences_nnunet_v2": aggregate.validation_differences(
            val_table, reference=aggregate.nnunet_name)} if imported else {}),
        "coverage": aggregate.coverage(model_classes, wanted),
        "cost": aggregate.cost_summary(models, wanted, _asked_pairs(test_dataset, wanted, more_tests, image_types)),
        "skipped": dict(skipped or {}),
    }
    if test_dataset is not None:
        benchmark["test"] = _test_block(test_summaries, test_dataset, wanted, n_test_cases, imported)
        if test_dataset in sealed:
            benchmark["test"]["sealed"] = True
    if more_tests:
        benchmark["settings"]["more_test_datasets"] = [t["dataset"] for t in more_tests]
        benchmark["more_tests"] = [_test_block(t["summaries"], t["dataset"], list(t["classes"]), t["num_cases"],
                                               imported) for t in more_tests]
        for block in benchmark["more_tests"]:
            if block["dataset"] in sealed:
                block["sealed"] = True
    for block in ([benchmark["test"]] if "test" in benchmark else []) + benchmark.get("more_tests", []):
        if (image_types or {}).get(block["dataset"]):
            block["image_type"] = image_types[block["dataset"]]
    return benchmark


def image_type_of_test_set(plans: Plans, test_desc: DatasetDescription) -> tuple[str | None, str | None]:
    """(the intensity group a model predicts a test set's images as, or why it is not scored on them).

    A model is scored only on images of a type its plan was made for (a CT baseline is not judged on T2 images);
    a plan of several types (CT and MR pooled) is told which one the test images are, as textnnunet_predict is with
    --modality. Plans of one type predict as they always did (None)."""
    groups = plans.intensity_groups
    if not groups:  # plans written before intensity groups were recorded
        return None, None
    image_type = intensity_group_name(test_desc)
    match = matching_intensity_group(plans, image_type)
    if match is None:
        return None, f"trained on {', '.join(groups)} images, the test set's are {image_type}"
    return (match if len(groups) > 1 else None), None


def _test_block(summaries: dict, dataset: str, classes: list[str], n_cases: int, imported: bool) -> dict:
    table = aggregate.test_table(summaries)
    block = {"dataset": dataset, "num_cases": n_cases, "classes": classes, "table": table,
             "differences": aggregate.test_differences(table)}
    if imported:
        block["differences_nnunet_v2"] = aggregate.test_differences(table, is_reference=aggregate.is_nnunet)
    return block
