"""textnnunet_train CONFIGURATION FOLD: train one fold of the text-prompted universal model."""
from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys

from textnnunet.cli.common import add_folder_args, user_errors_exit
from textnnunet.cli.training_args import add_training_args, config_from_args
from textnnunet.errors import UserError
from textnnunet.network.conditioning import conditioning_names
from textnnunet.text.encoders import encoder_kinds
from textnnunet.training.config import TrainingConfig


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train one fold of the text-prompted universal model on every dataset "
                                            "of a joint plan.")
    p.add_argument("configuration", help="2d, 3d_fullres or 3d_lowres (as in the plan)")
    p.add_argument("fold", help="0-4 or 'all'")
    p.add_argument("-p", "--plans", default=None,
                   help="plan name (e.g. TextPlans_001_002_003); default: the only joint plan in the preprocessed folder")
    p.add_argument("-d", "--dataset_ids", nargs="+", type=int, default=None, help="pick the joint plan of these datasets")
    add_training_args(p)
    d = TrainingConfig()
    p.add_argument("--conditioning", choices=conditioning_names(), default=d.conditioning,
                   help="conditioning heads (textnnunet/network/conditioning.py)")
    p.add_argument("--encoder", choices=encoder_kinds(), default="auto",
                   help="text encoder (auto: CLIP if its weights are available locally, else MiniLM)")
    p.add_argument("--text_model", default=None, help="CLIP model id or local folder (with --encoder clip/auto)")
    p.add_argument("--template", default=None, help="prompt template, e.g. 'A computerized tomography of a {}.'")
    p.add_argument("--prompt_modality", action="store_true",
                   help="prompts name the image's modality ('liver on T1-weighted MRI'): one text vector per class and "
                        "intensity group; prediction then uses the input's (--modality) (model tag 'modalityprompt')")
    p.add_argument("--dataset_weighting", choices=("uniform", "sqrt", "proportional"), default=d.dataset_weighting)
    p.add_argument("--dataset_weights", nargs="+", default=[], metavar="DATASET=FACTOR",
                   help="draw these datasets FACTOR times as often as --dataset_weighting says, e.g. 12=2 "
                        "(dataset number or name)")
    p.add_argument("--no_partial_label_masking", action="store_true",
                   help="ablation: treat classes a dataset does not label as background (naive union)")
    p.add_argument("--no_label_hierarchy", action="store_true",
                   help="ablation: ignore the plan's label hierarchy (related classes such as kidney and left kidney "
                        "are trained as unrelated)")
    p.add_argument("--no_label_exclusion", action="store_true",
                   help="ablation: voxels a dataset labels as one structure are no longer known negatives of the "
                        "unlabelled classes unrelated to it (model tag 'noexclusion')")
    p.add_argument("--label_exclusion", action="store_true", help=argparse.SUPPRESS)  # the default since session 5
    p.add_argument("--compile", action="store_true", help="torch.compile the network (CUDA)")
    p.add_argument("--num_gpus", type=int, default=1, help="processes for DDP (re-launches itself with torchrun)")
    p.add_argument("--c", "--continue", dest="resume", action="store_true", help="resume from the latest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start over although this fold already has checkpoints")
    p.add_argument("--model_tag", default=None, help="suffix of the model folder (default: derived from the ablation flags)")
    p.add_argument("--skip_validation", action="store_true", help="skip the sliding-window validation after training")
    p.add_argument("--val", dest="validation_only", action="store_true",
                   help="only run the validation of a finished fold (its checkpoint_final.pth and training settings)")
    p.add_argument("--npz", dest="save_probabilities", action="store_true",
                   help="also save the validation probabilities (needed by textnnunet_find_best_configuration "
                        "to score ensembles of configurations)")
    p.add_argument("--quiet", action="store_true")
    add_folder_args(p)
    return p


def parse_dataset_weights(items: list[str]) -> dict[str, float]:
    """["12=2", "Dataset011_LiverT1=1.5"] -> {"12": 2.0, ...}; a malformed item is a one-line error."""
    weights = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            weights[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not key.strip():
            raise UserError(f"--dataset_weights {item}: expected DATASET=FACTOR, e.g. 12=2")
    return weights


def universal_config_from_args(args) -> TrainingConfig:
    return dataclasses.replace(config_from_args(args), conditioning=args.conditioning,
                               dataset_weighting=args.dataset_weighting,
                               dataset_weights=parse_dataset_weights(args.dataset_weights),
                               mask_unannotated=not args.no_partial_label_masking, compile=args.compile,
                               label_hierarchy=not args.no_label_hierarchy,
                               label_exclusion=not args.no_label_exclusion, prompt_modality=args.prompt_modality)


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
        configuration=args.configuration, fold=args.fold, config=universal_config_from_args(args),
        raw=args.raw, preprocessed=args.preprocessed, results=args.results, plans_name=args.plans,
        dataset_ids=args.dataset_ids, encoder=args.encoder, text_model=args.text_model, template=args.template,
        resume=args.resume, overwrite=args.overwrite, model_tag=args.model_tag,
        validate=not args.skip_validation, validation_only=args.validation_only,
        save_probabilities=args.save_probabilities, dist=dist, echo=not args.quiet)
    return 0


if __name__ == "__main__":
    main()
