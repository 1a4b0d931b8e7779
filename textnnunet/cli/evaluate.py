"""textnnunet_evaluate -ref LABELS -pred PREDICTIONS (-d DATASET | -djfile dataset.json)."""
from __future__ import annotations

import argparse
from pathlib import Path

from textnnunet.cli.common import add_folder_args, user_errors_exit


@user_errors_exit
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Dice, IoU, NSD and volumes per case and class; summary.json + .md")
    p.add_argument("-ref", "--reference", required=True, help="folder of reference label maps")
    p.add_argument("-pred", "--prediction", required=True, help="folder written by textnnunet_predict (or integer maps)")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("-d", "--dataset", help="raw dataset id or name whose dataset.json defines the classes")
    group.add_argument("-djfile", "--dataset_json", help="a dataset.json defining the classes")
    p.add_argument("-o", "--output", default=None, help="where summary.json/md go (default: the prediction folder)")
    p.add_argument("--nsd_tolerance_mm", type=float, default=2.0)
    p.add_argument("--partial", action="store_true", help="score only the classes the predictions cover")
    add_folder_args(p, ("raw",))
    args = p.parse_args(argv)
    from textnnunet.dataset.description import load_dataset, load_dataset_folder
    from textnnunet.evaluation.evaluate_folders import evaluate_folders
    from textnnunet.evaluation.summary import summary_markdown

    if args.dataset_json:
        desc = load_dataset_folder(Path(args.dataset_json).parent)
    else:
        from textnnunet.paths import resolve_folder

        desc = load_dataset(resolve_folder("raw", args.raw), args.dataset)
    summary = evaluate_folders(Path(args.reference), Path(args.prediction), desc.classes, desc.name,
                               nsd_tolerance_mm=args.nsd_tolerance_mm,
                               output_folder=Path(args.output) if args.output else None, strict=not args.partial)
    print(summary_markdown(summary))
    return 0


if __name__ == "__main__":
    main()
