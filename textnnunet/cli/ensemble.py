"""textnnunet_ensemble -i FOLDER1 FOLDER2 [...] -o OUT: average textnnunet_predict --save_probabilities outputs."""
from __future__ import annotations

import argparse
from pathlib import Path

from textnnunet.cli.common import user_errors_exit


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Ensemble prediction folders written by textnnunet_predict "
                                            "--save_probabilities: mean probability, thresholded, same geometry.")
    p.add_argument("-i", "--input", nargs="+", required=True, help="two or more prediction folders")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="probability threshold of the averaged maps (classes with a threshold in --postprocessing "
                        "use that one)")
    p.add_argument("--postprocessing", default=None, metavar="JSON",
                   help="postprocessing.json (from textnnunet_find_best_configuration): its per-class thresholds "
                        "replace --threshold for those classes, then its rules apply to the masks")
    p.add_argument("--save_probabilities", action="store_true", help="also write the averaged probabilities")
    p.add_argument("--overwrite", action="store_true", help="replace existing files not written by textnnunet")
    p.add_argument("--quiet", action="store_true")
    return p


@user_errors_exit
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from textnnunet.postprocessing import load_postprocessing
    from textnnunet.inference.ensemble import ensemble_prediction_folders

    rules = load_postprocessing(args.postprocessing) if args.postprocessing else None
    ensemble_prediction_folders([Path(f) for f in args.input], Path(args.output), threshold=args.threshold,
                                postprocessing=rules, save_probabilities=args.save_probabilities,
                                overwrite=args.overwrite, verbose=not args.quiet)
    return 0


if __name__ == "__main__":
    main()
