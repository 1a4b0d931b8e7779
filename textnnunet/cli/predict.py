"""textnnunet_predict -i INPUT -o OUTPUT -p PROMPT [PROMPT ...]: segment structures named in words."""
from __future__ import annotations

import argparse
from pathlib import Path

from textnnunet.cli.common import USER_ERROR_EXIT_CODE, add_folder_args, user_errors_exit
from textnnunet.errors import UserError
from textnnunet.paths import CHECKPOINT_FINAL


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Predict masks for text prompts with a trained universal model.")
    p.add_argument("-i", "--input", nargs="+", required=True,
                   help="a folder of <case>_0000<ending> images, or image files (NIfTI, NRRD, MHA)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("-p", "--prompts", nargs="+", action="extend", default=[],
                   help='what to segment, e.g. -p liver spleen "kidney tumor" (repeatable)')
    p.add_argument("--all", action="store_true", help="every class of the trained vocabulary")
    p.add_argument("-m", "--model", default=None,
                   help="model folder (results/<plan>/<configuration>); default: from -c/--plans under the results folder")
    p.add_argument("-c", "--configuration", default="3d_fullres")
    p.add_argument("--plans", default=None, help="plan name (default: the only one in the results folder)")
    p.add_argument("--model_tag", default="", help="model folder suffix of an ablation (e.g. film)")
    p.add_argument("-f", "--folds", nargs="+", default=None, help="folds to ensemble (default: every trained fold)")
    p.add_argument("-chk", "--checkpoint", default=CHECKPOINT_FINAL)
    p.add_argument("--combined", action="store_true", help="one label map per case (values in prompt order) + legend")
    p.add_argument("--save_probabilities", action="store_true")
    p.add_argument("--postprocessing", default=None, metavar="JSON",
                   help="postprocessing.json (from textnnunet_find_best_configuration): its per-class thresholds "
                        "replace --threshold for those classes, then its rules apply to the masks")
    p.add_argument("--disable_tta", action="store_true", help="no mirroring test-time augmentation")
    p.add_argument("--step_size", type=float, default=0.5)
    p.add_argument("--threshold", type=float, default=0.5,
                   help="probability threshold (classes with a threshold in --postprocessing use that one)")
    p.add_argument("--similarity_threshold", type=float, default=None,
                   help="minimum cosine similarity between a prompt and a trained class (default: the encoder's)")
    p.add_argument("--allow_unknown_prompts", action="store_true",
                   help="predict prompts below the similarity threshold with their own embedding (zero-shot)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--modality", default=None, metavar="NAME",
                   help="image type of the inputs (a channel name such as CT or T2), needed only for models trained "
                        "on several (their plans.json lists them under intensity_groups)")
    p.add_argument("-npp", type=int, default=1, help="background threads reading and preprocessing inputs")
    p.add_argument("-nps", type=int, default=1, help="background threads exporting outputs")
    p.add_argument("--continue", dest="resume", action="store_true", help="skip cases whose outputs exist")
    p.add_argument("--overwrite", action="store_true", help="replace existing files not written by this command")
    p.add_argument("--quiet", action="store_true")
    add_folder_args(p, ("results",))
    return p


def find_model_folder(args) -> Path:
    if args.model:
        return Path(args.model)
    from textnnunet.paths import ModelFolder, resolve_folder

    results = resolve_folder("results", args.results)
    return ModelFolder.find(results, plans=args.plans, configuration=args.configuration, tag=args.model_tag).path


@user_errors_exit
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from textnnunet.inference.predictor import PredictionSettings, TextPredictor
    from textnnunet.inference.run import predict_cases

    rules = None
    if args.postprocessing:  # checked before the checkpoints load: a typo should fail fast
        from textnnunet.postprocessing import load_postprocessing

        rules = load_postprocessing(args.postprocessing)
    settings = PredictionSettings(step_size=args.step_size, use_mirroring=not args.disable_tta, device=args.device,
                                  threshold=args.threshold, allow_unknown_prompts=args.allow_unknown_prompts,
                                  progress=False, modality=args.modality)
    predictor = TextPredictor.from_folder(find_model_folder(args), folds=args.folds, checkpoint=args.checkpoint,
                                          settings=settings)
    if args.similarity_threshold is not None:
        predictor.settings.similarity_threshold = args.similarity_threshold
    else:
        predictor.settings.similarity_threshold = predictor.default_similarity_threshold()
    prompts = list(predictor.vocabulary.classes) if args.all else args.prompts
    if not prompts:
        raise UserError("no prompts: give -p PROMPT [PROMPT ...] or --all; trained vocabulary: "
                        + predictor.vocabulary.describe())
    failures = predict_cases(predictor, [Path(i) for i in args.input], Path(args.output), prompts,
                             combined=args.combined, save_probabilities=args.save_probabilities,
                             resume=args.resume, overwrite=args.overwrite, num_preprocess=args.npp,
                             num_export=args.nps, verbose=not args.quiet, postprocessing=rules)
    return USER_ERROR_EXIT_CODE if failures else 0


if __name__ == "__main__":
    main()
