"""textnnunet_train_baseline DATASET CONFIGURATION FOLD: the per-dataset nnU-Net baseline (softmax, Dice + CE)."""
from __future__ import annotations

import argparse

from textnnunet.cli.common import add_folder_args, user_errors_exit
from textnnunet.training.config import TrainingConfig


def add_training_args(p: argparse.ArgumentParser) -> None:
    """The budget and recipe flags textnnunet_train has too, with the same defaults."""
    d = TrainingConfig()
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--iters_per_epoch", type=int, default=d.iters_per_epoch)
    p.add_argument("--val_iters_per_epoch", type=int, default=d.val_iters_per_epoch)
    p.add_argument("--batch_size", type=int, default=None, help="batch size (default: the plan's)")
    p.add_argument("--initial_lr", type=float, default=d.initial_lr)
    p.add_argument("--backbone", choices=("PlainConvUNet", "ResidualEncoderUNet"), default=d.backbone)
    p.add_argument("--batch_dice", action="store_true")
    p.add_argument("--no_augmentation", action="store_true")
    p.add_argument("--mirror_axes", type=int, nargs="*", default=None,
                   help="patch axes to mirror in training and TTA (default: all but left-right, the last axis)")
    p.add_argument("--no_deep_supervision", action="store_true")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--no_amp", action="store_true", help="disable mixed precision on CUDA")
    p.add_argument("--num_workers", type=int, default=d.num_workers)
    p.add_argument("--seed", type=int, default=d.seed)


def config_from_args(args) -> TrainingConfig:
    return TrainingConfig(
        epochs=args.epochs, iters_per_epoch=args.iters_per_epoch, val_iters_per_epoch=args.val_iters_per_epoch,
        batch_size=args.batch_size, initial_lr=args.initial_lr, backbone=args.backbone, batch_dice=args.batch_dice,
        augmentation="none" if args.no_augmentation else "nnunet", mirror_axes=args.mirror_axes,
        deep_supervision=not args.no_deep_supervision, device=args.device, amp=not args.no_amp,
        num_workers=args.num_workers, seed=args.seed)


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
                   echo=not args.quiet)
    return 0


if __name__ == "__main__":
    main()
