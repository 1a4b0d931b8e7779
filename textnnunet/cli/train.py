"""textnnunet_train CONFIGURATION FOLD: train one fold of the text-prompted universal model."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

from textnnunet.cli.common import add_folder_args, user_errors_exit
from textnnunet.training.config import TrainingConfig


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train one fold of the text-prompted universal model on every dataset "
                                            "of a joint plan.")
    p.add_argument("configuration", help="2d, 3d_fullres or 3d_lowres (as in the plan)")
    p.add_argument("fold", help="0-4 or 'all'")
    p.add_argument("-p", "--plans", default=None,
                   help="plan name (e.g. TextPlans_001_002_003); default: the only joint plan in the preprocessed folder")
    p.add_argument("-d", "--dataset_ids", nargs="+", type=int, default=None, help="pick the joint plan of these datasets")
    d = TrainingConfig()
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--iters_per_epoch", type=int, default=d.iters_per_epoch)
    p.add_argument("--val_iters_per_epoch", type=int, default=d.val_iters_per_epoch)
    p.add_argument("--batch_size", type=int, default=None, help="global batch size (default: the plan's)")
    p.add_argument("--initial_lr", type=float, default=d.initial_lr)
    p.add_argument("--conditioning", choices=("controller", "film"), default=d.conditioning)
    p.add_argument("--backbone", choices=("PlainConvUNet", "ResidualEncoderUNet"), default=d.backbone)
    p.add_argument("--encoder", choices=("auto", "clip", "minilm", "onehot"), default="auto",
                   help="text encoder (auto: CLIP if its weights are available locally, else MiniLM)")
    p.add_argument("--text_model", default=None, help="CLIP model id or local folder (with --encoder clip/auto)")
    p.add_argument("--template", default=None, help="prompt template, e.g. 'A computerized tomography of a {}.'")
    p.add_argument("--dataset_weighting", choices=("uniform", "sqrt", "proportional"), default=d.dataset_weighting)
    p.add_argument("--no_partial_label_masking", action="store_true",
                   help="ablation: treat classes a dataset does not label as background (naive union)")
    p.add_argument("--batch_dice", action="store_true")
    p.add_argument("--no_augmentation", action="store_true")
    p.add_argument("--mirror_axes", type=int, nargs="*", default=None,
                   help="patch axes to mirror in training and TTA (default: all but left-right, the last axis; "
                        "nnU-Net mirrors all: --mirror_axes 0 1 2)")
    p.add_argument("--no_deep_supervision", action="store_true")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--no_amp", action="store_true", help="disable mixed precision on CUDA")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (CUDA)")
    p.add_argument("--num_workers", type=int, default=d.num_workers,
                   help="background augmentation worker processes (0: in-process, exactly resumable)")
    p.add_argument("--num_gpus", type=int, default=1, help="processes for DDP (re-launches itself with torchrun)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--c", "--continue", dest="resume", action="store_true", help="resume from the latest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start over although this fold already has checkpoints")
    p.add_argument("--model_tag", default=None, help="suffix of the model folder (default: derived from the ablation flags)")
    p.add_argument("--skip_validation", action="store_true", help="skip the sliding-window validation after training")
    p.add_argument("--quiet", action="store_true")
    add_folder_args(p)
    return p


def config_from_args(args) -> TrainingConfig:
    return TrainingConfig(
        epochs=args.epochs, iters_per_epoch=args.iters_per_epoch, val_iters_per_epoch=args.val_iters_per_epoch,
        batch_size=args.batch_size, initial_lr=args.initial_lr, conditioning=args.conditioning,
        backbone=args.backbone, dataset_weighting=args.dataset_weighting,
        mask_unannotated=not args.no_partial_label_masking, batch_dice=args.batch_dice,
        augmentation="none" if args.no_augmentation else "nnunet", mirror_axes=args.mirror_axes,
        deep_supervision=not args.no_deep_supervision,
        device=args.device, amp=not args.no_amp, compile=args.compile, num_workers=args.num_workers, seed=args.seed)


def _relaunch_with_torchrun(num_gpus: int, argv: list[str]) -> int:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={num_gpus}",
           "-m", "textnnunet.cli.train", *[a for a in argv]]
    return subprocess.call(cmd)


def _distributed_context():
    """torchrun's variables are read here, at the edge, and passed down explicitly."""
    from textnnunet.training.trainer import DistributedContext

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return DistributedContext()
    return DistributedContext(rank=int(os.environ["RANK"]), world_size=world,
                              local_rank=int(os.environ.get("LOCAL_RANK", "0")))


@user_errors_exit
def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.num_gpus > 1 and "WORLD_SIZE" not in os.environ:
        filtered = [a for i, a in enumerate(argv) if a != "--num_gpus" and (i == 0 or argv[i - 1] != "--num_gpus")]
        return _relaunch_with_torchrun(args.num_gpus, filtered)
    from textnnunet.training.run import train_fold

    dist = _distributed_context()
    train_fold(
        configuration=args.configuration, fold=args.fold, config=config_from_args(args),
        raw=args.raw, preprocessed=args.preprocessed, results=args.results, plans_name=args.plans,
        dataset_ids=args.dataset_ids, encoder=args.encoder, text_model=args.text_model, template=args.template,
        resume=args.resume, overwrite=args.overwrite, model_tag=args.model_tag,
        validate=not args.skip_validation, dist=dist, echo=not args.quiet)
    return 0


if __name__ == "__main__":
    main()
