"""textnnunet_convert_dataset: a downloaded public dataset -> an nnU-Net v2 raw folder with canonical class names."""
from __future__ import annotations

import argparse

from textnnunet.cli.common import user_errors_exit
from textnnunet.paths import resolve_folder


def build_parser() -> argparse.ArgumentParser:
    from textnnunet.dataset.converters import CONVERTERS

    sources = "; ".join(f"{name}: {cls.title}" for name, cls in CONVERTERS.items())
    parser = argparse.ArgumentParser(
        prog="textnnunet_convert_dataset",
        description="Convert a downloaded public dataset into nnU-Net v2's raw format (DatasetXXX_Name with "
                    "imagesTr, labelsTr, imagesTs, labelsTs where the source has test labels, dataset.json), keeping "
                    f"the original geometry. Sources: {sources}. Layouts: documentation/datasets.md.")
    parser.add_argument("--from", dest="source", required=True, choices=list(CONVERTERS), help="the source dataset")
    parser.add_argument("src", metavar="SRC", help="the downloaded dataset's folder")
    parser.add_argument("-d", "--dataset_id", type=int, required=True, metavar="ID", help="dataset id (1-999)")
    parser.add_argument("-o", "--raw", default=None, metavar="RAW", help="raw data folder (default: $TEXTNNUNET_raw)")
    parser.add_argument("--name", default=None, help="the Name of DatasetXXX_Name (default: the source's name)")
    parser.add_argument("--modality", default=None,
                        help="for sources with several modalities (amos22: CT, the default, or MR)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    parser.add_argument("-np", "--num_processes", type=int, default=1, help="worker processes (default: %(default)s)")
    return parser


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    from textnnunet.dataset.converters import convert_dataset, get_converter

    args = build_parser().parse_args(argv)
    raw = resolve_folder("raw", args.raw)
    converter = get_converter(args.source, args.modality)
    result = convert_dataset(converter, args.src, raw, args.dataset_id, name=args.name, overwrite=args.overwrite,
                             num_processes=args.num_processes)
    for line in result.notes:
        print(f"note: {line}")
    test = f", {result.num_test} test case(s)" if result.num_test else ""
    labelled = f" ({result.num_test_labels} with labels)" if result.num_test else ""
    print(f"{result.folder}: {result.num_training} training case(s){test}{labelled}")
    return 0


if __name__ == "__main__":
    main()
