"""Training flags shared by textnnunet_train, textnnunet_train_baseline and textnnunet_benchmark."""
from __future__ import annotations

import argparse

from textnnunet.errors import UserError
from textnnunet.training.augmentation import augmentation_preset_names
from textnnunet.training.config import TrainingConfig


def add_training_args(p: argparse.ArgumentParser) -> None:
    """The budget and recipe flags every trainer takes, with TrainingConfig's defaults."""
    d = TrainingConfig()
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--iters_per_epoch", type=int, default=d.iters_per_epoch)
    p.add_argument("--val_iters_per_epoch", type=int, default=d.val_iters_per_epoch)
    p.add_argument("--batch_size", type=int, default=None, help="global batch size (default: the plan's)")
    p.add_argument("--initial_lr", type=float, default=d.initial_lr)
    p.add_argument("--backbone", choices=("PlainConvUNet", "ResidualEncoderUNet"), default=d.backbone)
    p.add_argument("--batch_dice", action="store_true")
    p.add_argument("--augmentation", choices=augmentation_preset_names(), default=d.augmentation,
                   help="nnunet: nnU-Net's defaults; nnunet_intensity: plus local brightness and gamma changes "
                        "(nnU-Net's DA5 intensity transforms), for datasets from several contrast phases; "
                        "nnunet_regions (default): plus an intensity offset per labelled structure; none: off")
    p.add_argument("--no_augmentation", action="store_true", help="same as --augmentation none")
    p.add_argument("--region_shift_sigma", type=float, default=d.region_shift_sigma, metavar="SD",
                   help="sd of the per-structure intensity offset of nnunet_regions, in normalised units "
                        "(default: the preset's, 0.3)")
    p.add_argument("--mirror_axes", type=int, nargs="*", default=d.mirror_axes,
                   help="patch axes to mirror in training and TTA (default: none; the axes are those of the LPS-"
                        "reoriented array, the last one left-right; nnU-Net mirrors all: --mirror_axes 0 1 2)")
    p.add_argument("--dice_weight", type=float, default=d.dice_weight,
                   help="weight of the soft Dice term next to BCE (default 1, as nnU-Net's Dice + CE; 0: BCE only)")
    p.add_argument("--no_deep_supervision", action="store_true")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--no_amp", action="store_true", help="disable mixed precision on CUDA")
    p.add_argument("--no_cudnn_benchmark", action="store_true",
                   help="CUDA: do not let cuDNN pick the fastest convolution algorithms (nnU-Net lets it)")
    p.add_argument("--memory_format", choices=("auto", "channels_first", "channels_last"), default=d.memory_format,
                   help="tensor layout (auto: channels-last on CPU, where 3D convolutions are faster)")
    p.add_argument("--num_workers", type=int, default=d.num_workers,
                   help="background augmentation worker processes (0: in-process, exactly resumable)")
    p.add_argument("--unpack", choices=("auto", "yes", "no"), default=d.unpack,
                   help="decompress the npz caches once into memory-mapped .npy beside them (auto: with --num_workers "
                        "> 0; costs the cases' uncompressed size on disk)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--case_val_every", type=int, default=d.case_val_every, metavar="N",
                   help="whole-case validation every N epochs (sliding window, Dice/FP/FN in the log and progress.png; "
                        "0: off)")
    p.add_argument("--case_val_cases", type=int, default=d.case_val_cases_per_dataset, metavar="K",
                   help="validation cases per dataset for --case_val_every (default %(default)s)")


def config_from_args(args) -> TrainingConfig:
    """TrainingConfig from the flags of `add_training_args`; everything else keeps its default."""
    if args.dice_weight < 0:
        raise UserError(f"--dice_weight {args.dice_weight}: must be >= 0")
    return TrainingConfig(
        epochs=args.epochs, iters_per_epoch=args.iters_per_epoch, val_iters_per_epoch=args.val_iters_per_epoch,
        batch_size=args.batch_size, initial_lr=args.initial_lr, backbone=args.backbone, batch_dice=args.batch_dice,
        augmentation="none" if args.no_augmentation else args.augmentation, mirror_axes=args.mirror_axes,
        region_shift_sigma=args.region_shift_sigma, dice_weight=args.dice_weight,
        deep_supervision=not args.no_deep_supervision, device=args.device, amp=not args.no_amp,
        cudnn_benchmark=not args.no_cudnn_benchmark,
        memory_format=args.memory_format, num_workers=args.num_workers, unpack=args.unpack, seed=args.seed,
        case_val_every=args.case_val_every, case_val_cases_per_dataset=args.case_val_cases)
