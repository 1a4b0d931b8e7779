"""textnnunet_extract_fingerprint / _plan_experiment / _preprocess / _plan_and_preprocess (nnU-Net's CLI style)."""
from __future__ import annotations

import argparse
from pathlib import Path

from textnnunet.cli.common import add_folder_args, user_errors_exit
from textnnunet.paths import PlanFolder, joint_plans_name, resolve_folders

DEFAULT_CONFIGURATIONS = ("2d", "3d_fullres", "3d_lowres")


def _default_preset() -> str:
    import torch

    from textnnunet.experiment_planning.planner import default_preset_name

    return default_preset_name(torch.cuda.is_available())


def _common(parser: argparse.ArgumentParser, kinds=("raw", "preprocessed")) -> None:
    parser.add_argument("-d", "--dataset_ids", nargs="+", type=int, required=True, help="dataset ids, e.g. -d 1 2 3")
    parser.add_argument("-np", "--num_processes", type=int, default=2, help="worker processes (default 2)")
    add_folder_args(parser, kinds)


def _plan_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=("cpu", "gpu"), default=None,
                        help="planning preset: 'gpu' = nnU-Net's defaults (8 GB, 32 base features); 'cpu' = small "
                             "patches and features that train in minutes on a few cores (default: gpu if CUDA is "
                             "available, else cpu)")
    parser.add_argument("--min_context_fraction", type=float, default=None,
                        help="coarsen the target spacing until the patch covers this fraction of the median image "
                             "along every axis (default: the preset's, 0.75 for cpu, off for gpu; 0 turns it off)")
    parser.add_argument("-gpu_memory_target", "--memory_target_gb", dest="memory_target_gb", type=float, default=None,
                        help="memory budget in GB that the patch and batch size are planned for (overrides the preset)")
    parser.add_argument("--verify_dataset_integrity", action="store_true",
                        help="check every file of the datasets before fingerprinting")
    parser.add_argument("--overwrite_fingerprint", action="store_true", help="re-extract existing fingerprints")


def _preprocess_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--configurations", nargs="+", default=None,
                        help="configurations to preprocess (default: every configuration in the plan)")
    parser.add_argument("--overwrite", action="store_true", help="redo cases that are already preprocessed")
    baselines = parser.add_mutually_exclusive_group()
    baselines.add_argument("--baselines", action="store_true",
                           help="also preprocess every dataset's own (baseline) plan now; by default its caches are "
                                "made when textnnunet_train_baseline or textnnunet_benchmark first needs them")
    baselines.add_argument("--no_baselines", action="store_true",
                           help="preprocess only the joint plan (the default; kept for older command lines)")


def _verify(raw: Path, dataset_ids: list[int], num_processes: int) -> None:
    from textnnunet.dataset.description import load_dataset
    from textnnunet.dataset.integrity import assert_dataset_integrity

    for i in dataset_ids:
        desc = load_dataset(raw, i)
        assert_dataset_integrity(desc, num_processes=num_processes)
        print(f"{desc.name}: integrity check passed")


def _plan(args, folders) -> tuple[Path, list[Path]]:
    from textnnunet.experiment_planning.planner import get_preset, plan_datasets

    if args.verify_dataset_integrity:
        _verify(folders.raw, args.dataset_ids, args.num_processes)
    preset = get_preset(args.preset or _default_preset())
    memory = args.memory_target_gb if args.memory_target_gb is not None else preset.memory_target_gb
    context = preset.min_context_fraction if args.min_context_fraction is None else (args.min_context_fraction or None)
    rule = (f"context-first (patch >= {context:g} of the median image per axis)" if context
            else "nnU-Net's (median spacing)")
    print(f"planning preset '{preset.name}': memory target {memory:g} GB, {preset.base_features} base features, "
          f"{rule} target spacing")
    joint, per_dataset = plan_datasets(folders.raw, folders.preprocessed, args.dataset_ids, memory_target_gb=memory,
                                       num_processes=args.num_processes, base_features=preset.base_features,
                                       max_features_3d=preset.max_features_3d, max_features_2d=preset.max_features_2d,
                                       overwrite=args.overwrite_fingerprint, min_context_fraction=context,
                                       max_context_spacing_mm=preset.max_context_spacing_mm)
    print(f"joint plan: {joint}")
    _print_label_space(joint)
    _print_configurations(joint)
    _print_narrow_label_margins(joint)
    for p in per_dataset:
        print(f"per-dataset plan: {p}")
    return joint, per_dataset


def _print_label_space(plans_path: Path) -> None:
    """Each dataset's labels as canonical lexicon names, and the hierarchy training will use."""
    from textnnunet.experiment_planning.label_space import describe_label_space
    from textnnunet.utils.plans import Plans

    for line in describe_label_space(Plans.load(plans_path).label_space.data):
        print(f"  labels {line}")


def _print_configurations(plans_path: Path) -> None:
    """Spacing, patch and how much of the median image the patch sees: what decides whether organs can be told apart."""
    from textnnunet.utils.plans import Plans

    plans = Plans.load(plans_path)
    for name in plans.configuration_names:
        cfg = plans.configuration(name).to_json()
        spacing = " x ".join(f"{v:.2f}" for v in cfg["spacing"])
        patch = " x ".join(str(v) for v in cfg["patch_size"])
        coverage = " x ".join(f"{v:.0%}" for v in cfg.get("patch_coverage_of_median_image", []))
        note = ""
        if "context" in cfg:
            median = " x ".join(f"{v:.2f}" for v in cfg["context"]["median_spacing"])
            note = f" (median spacing {median} mm)" if cfg["context"]["median_spacing"] != cfg["spacing"] else ""
        print(f"  {name}: spacing {spacing} mm{note}, patch {patch}, batch {cfg['batch_size']}, "
              f"patch covers {coverage} of the median image")


def _print_narrow_label_margins(plans_path: Path) -> None:
    """Classes whose labelled images show hardly any body beyond them on one side: no dataset teaches their prompt
    what lies there (design.md, "What partial labels cannot teach")."""
    from textnnunet.experiment_planning.planner import narrow_label_margins
    from textnnunet.utils.plans import Plans

    plans = Plans.load(plans_path)
    for name, side, mm in narrow_label_margins(plans.label_margins):
        print(f"  field of view: the images labelling '{name}' show at most a median {mm:.1f} mm {side} it; "
              f"further {side}, only structures other datasets label are taught as not '{name}'")
    measured = {dataset for per_dataset in plans.label_margins.values() for dataset in per_dataset}
    unmeasured = [d for d in plans.datasets if d not in measured]
    if unmeasured:
        print(f"  field of view: not measured for {', '.join(unmeasured)} (a fingerprint from an older version: "
              f"--overwrite_fingerprint measures it; 2D images have no body axis to measure along)")


def _preprocess(args, folders, plan_files: list[Path]) -> None:
    from textnnunet.preprocessing.preprocessor import run_preprocessing
    from textnnunet.utils.plans import Plans

    for plans_path in plan_files:
        plans = Plans.load(plans_path)
        configurations = args.configurations or plans.configuration_names
        print(f"preprocessing {plans.plans_name}: {', '.join(configurations)}")
        run_preprocessing(plans_path, configurations, folders.raw, num_processes=args.num_processes,
                          overwrite=args.overwrite)


def _existing_plan_files(folders, dataset_ids: list[int], include_baselines: bool) -> list[Path]:
    from textnnunet.dataset.description import load_dataset

    files = [PlanFolder(folders.preprocessed / joint_plans_name(dataset_ids)).plans_file]
    if include_baselines:
        files += [PlanFolder(folders.preprocessed / load_dataset(folders.raw, i).name).plans_file for i in dataset_ids]
    return files


@user_errors_exit
def extract_fingerprint_entry(argv=None) -> int:
    from textnnunet.dataset.description import load_dataset
    from textnnunet.experiment_planning.fingerprint import extract_fingerprint, save_fingerprint

    parser = argparse.ArgumentParser(description="Extract the dataset fingerprint of each dataset.")
    _common(parser)
    parser.add_argument("--verify_dataset_integrity", action="store_true")
    args = parser.parse_args(argv)
    folders = resolve_folders(args.raw, args.preprocessed, required=("raw", "preprocessed"))
    if args.verify_dataset_integrity:
        _verify(folders.raw, args.dataset_ids, args.num_processes)
    for i in args.dataset_ids:
        desc = load_dataset(folders.raw, i)
        fingerprint, sample = extract_fingerprint(desc, num_processes=args.num_processes)
        save_fingerprint(fingerprint, sample, folders.preprocessed / desc.name)
        print(f"{desc.name}: fingerprint written to {folders.preprocessed / desc.name}")
    return 0


@user_errors_exit
def plan_experiment_entry(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Plan the joint configuration and the per-dataset baselines.")
    _common(parser)
    _plan_args(parser)
    args = parser.parse_args(argv)
    _plan(args, resolve_folders(args.raw, args.preprocessed, required=("raw", "preprocessed")))
    return 0


@user_errors_exit
def preprocess_entry(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Write the npz caches of planned datasets.")
    _common(parser)
    _preprocess_args(parser)
    args = parser.parse_args(argv)
    folders = resolve_folders(args.raw, args.preprocessed, required=("raw", "preprocessed"))
    _preprocess(args, folders, _existing_plan_files(folders, args.dataset_ids, args.baselines))
    return 0


@user_errors_exit
def plan_and_preprocess_entry(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Fingerprint each dataset, plan one joint configuration (and one per dataset), write the joint "
                    "plan's npz caches (the per-dataset ones with --baselines).")
    _common(parser)
    _plan_args(parser)
    _preprocess_args(parser)
    parser.add_argument("--no_preprocessing", action="store_true", help="stop after planning")
    args = parser.parse_args(argv)
    folders = resolve_folders(args.raw, args.preprocessed, required=("raw", "preprocessed"))
    joint, per_dataset = _plan(args, folders)
    if not args.no_preprocessing:
        _preprocess(args, folders, [joint] + (per_dataset if args.baselines else []))
        if per_dataset and not args.baselines:
            print("per-dataset (baseline) plans are not preprocessed: textnnunet_train_baseline and "
                  "textnnunet_benchmark do it when they need them (--baselines does it now)")
    return 0


if __name__ == "__main__":
    plan_and_preprocess_entry()
