"""textnnunet_find_best_configuration -p PLAN -c 3d_fullres 2d -f 0 1 2 3 4 (nnU-Net's naming)."""
from __future__ import annotations

import argparse
import math

from textnnunet.cli.common import add_folder_args, user_errors_exit
from textnnunet.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Choose the best configuration (or ensemble) from cross-validation, "
                                            "decide its postprocessing, write inference instructions.")
    p.add_argument("-p", "--plans", default=None,
                   help="plan name (default: from -d, else the only plan under the results folder)")
    p.add_argument("-d", "--datasets", nargs="+", type=int, default=None, help="dataset ids of the joint plan")
    p.add_argument("-c", "--configurations", nargs="+", default=["3d_fullres"],
                   help="model folders to compare: configuration[__tag], e.g. 3d_fullres 2d 3d_fullres__film")
    p.add_argument("-f", "--folds", nargs="+", default=["0", "1", "2", "3", "4"])
    p.add_argument("--disable_ensembling", action="store_true", help="compare single configurations only")
    p.add_argument("--no_thresholds", action="store_true",
                   help="keep the probability threshold at 0.5 for every class; by default each class's threshold "
                        "is chosen from 0.3-0.9 on the CV cases (kept only for a Dice gain beyond the cases' noise, "
                        "--threshold_min_gain_se), which needs every fold's validation probabilities "
                        "(textnnunet_train ... --npz, or --val --npz on a finished fold)")
    p.add_argument("--threshold_min_gain_se", type=float, default=None, metavar="K",
                   help="a class's threshold moves only when its mean per-case Dice gain over 0.5 is at least K "
                        "standard errors of the paired per-case differences (default 2; 0: any gain of the mean)")
    add_folder_args(p, ("results", "raw", "preprocessed"))
    return p


def find_plans_name(results, plans: str | None, datasets: list[int] | None) -> str:
    if plans:
        return plans
    from textnnunet.paths import joint_plans_name

    if datasets:
        return joint_plans_name(datasets)
    found = sorted(p.name for p in results.glob("TextPlans_*") if p.is_dir()) if results.is_dir() else []
    if len(found) != 1:
        raise UserError(f"{results}: need exactly one plan (found: {', '.join(found) or 'none'}); use -p or -d")
    return found[0]


@user_errors_exit
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from textnnunet.evaluation.best_configuration import (
        MIN_GAIN_IN_SE,
        find_best_configuration,
        inference_instructions,
    )

    min_gain = MIN_GAIN_IN_SE if args.threshold_min_gain_se is None else args.threshold_min_gain_se
    if not math.isfinite(min_gain) or min_gain < 0:
        raise UserError(f"--threshold_min_gain_se {min_gain}: must be a number >= 0")
    from textnnunet.paths import resolve_folders

    # references for postprocessing come from the raw labels or, without them, the preprocessed cache
    folders = resolve_folders(args.raw, args.preprocessed, args.results, required=("results",))
    result = find_best_configuration(folders.results, find_plans_name(folders.results, args.plans, args.datasets),
                                     args.configurations, args.folds, raw_root=folders.raw,
                                     preprocessed_root=folders.preprocessed,
                                     allow_ensembles=not args.disable_ensembling,
                                     decide_thresholds=not args.no_thresholds,
                                     threshold_min_gain_se=min_gain)
    print(inference_instructions(result))
    return 0


if __name__ == "__main__":
    main()
