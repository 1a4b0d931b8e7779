"""textnnunet_train_baseline DATASET CONFIGURATION FOLD: the per-dataset nnU-Net baseline (softmax, Dice + CE)."""
from __future__ import annotations

import argparse

from textnnunet.cli.common import add_folder_args, user_errors_exit
from textnnunet.cli.training_args import add_training_args, config_from_args


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train one fold of the nnU-Net baseline of one dataset: its own "
                                            "per-dataset plan, a softmax over its label values, Dice + CE. Results "
                                            "go to results/DatasetXXX_Name/<configuration>__baseline/fold_k.")
    p.add_argument("dataset", help="dataset id (e.g. 1) or full name (Dataset001_Liver)")
    p.add_argument("configuration", help="2d, 3d_fullres or 3d_lowres (as in the dataset's plan)")
    p.add_argument("fold", help="0-4 or 'all'")
    add_training_args(p)
    p.add_argument("--splits_file", default=None,
                   help="splits_final.json to take the folds from (e.g. a joint plan's, so the universal model and "
                        "the baseline hold out the same cases); default: the dataset's own, made by the same rule")
    p.add_argument("--c", "--continue", dest="resume", action="store_true", help="resume from the latest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start over although this fold already has checkpoints")
    p.add_argument("--skip_validation", action="store_true")
    p.add_argument("-np", "--num_processes", type=int, default=2,
                   help="preprocessing workers, when the dataset's cache of this configuration is still to be made "
                        "(default 2)")
    p.add_argument("--quiet", action="store_true")
    add_folder_args(p)
    return p


@user_errors_exit
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from textnnunet.benchmark.train_baseline import train_baseline

    train_baseline(args.dataset, args.configuration, args.fold, config_from_args(args), raw=args.raw,
                   preprocessed=args.preprocessed, results=args.results, splits_file=args.splits_file,
                   resume=args.resume, overwrite=args.overwrite, validate=not args.skip_validation,
                   num_processes=args.num_processes, echo=not args.quiet)
    return 0


if __name__ == "__main__":
    main()
