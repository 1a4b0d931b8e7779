"""textnnunet_generate_phantoms: write the synthetic abdominal CT datasets (Dataset001-004; --sealed: the sealed test
set Dataset010) into the raw folder."""
from __future__ import annotations

import argparse

from textnnunet.cli.common import user_errors_exit
from textnnunet.demo.phantom_variants import VARIANTS
from textnnunet.demo.phantoms import (
    MATRIX_SEALED_TEST_DATASET, PHANTOM_DATASETS, SEALED_TEST_DATASET, SIZES, generate_phantom_datasets,
)
from textnnunet.paths import resolve_folder


def build_parser() -> argparse.ArgumentParser:
    names = ", ".join(spec.name for spec in PHANTOM_DATASETS)
    parser = argparse.ArgumentParser(
        prog="textnnunet_generate_phantoms",
        description=f"Generate synthetic, partially labelled abdominal CT datasets in nnU-Net v2 format ({names}).",
    )
    parser.add_argument("--raw", default=None, metavar="PATH", help="raw data folder (default: $TEXTNNUNET_raw)")
    parser.add_argument("--size", choices=sorted(SIZES), default="default",
                        help="'default' is the demo data; 'small' is tiny data for tests (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same data (default: %(default)s)")
    parser.add_argument("-d", "--datasets", type=int, nargs="+", default=None, metavar="ID",
                        help="these dataset ids (default: the demo's four, 1-4; the others, e.g. the "
                             "eight-dataset pool 20-31: documentation/datasets.md, 'Phantom datasets')")
    parser.add_argument("--sealed", action="store_true",
                        help=f"only the sealed test set {SEALED_TEST_DATASET.name} ({SEALED_TEST_DATASET.phase} phase, its own "
                             f"fixed seed {SEALED_TEST_DATASET.fixed_seed}; --seed does not apply): report it once per change "
                             "of default, never tune on it (documentation/benchmarks.md); with --variant the matrix's "
                             f"sealed test set {MATRIX_SEALED_TEST_DATASET.name} (seed {MATRIX_SEALED_TEST_DATASET.fixed_seed}) "
                             "stored with that row's acquisition")
    parser.add_argument("--overwrite", action="store_true", help="replace existing phantom dataset folders")
    parser.add_argument("--variant", default="", metavar="NAME",
                        help="a row of the generalization matrix instead of the demo data: "
                             + ", ".join(f"'{n}' ({v.description})" for n, v in VARIANTS.items())
                             + "; its spacings are absolute, --size is ignored")
    parser.add_argument("-np", "--num_processes", type=int, default=1, help="worker processes (default: %(default)s)")
    return parser


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    raw = resolve_folder("raw", args.raw)
    datasets = args.datasets
    if args.sealed:  # with --variant: the matrix's sealed test set, stored with that row's acquisition
        sealed = MATRIX_SEALED_TEST_DATASET if args.variant else SEALED_TEST_DATASET
        datasets = sorted(set(datasets or []) | {sealed.dataset_id})
    folders = generate_phantom_datasets(raw, size=args.size, seed=args.seed, overwrite=args.overwrite,
                                        num_processes=args.num_processes, progress=True, datasets=datasets,
                                        variant=args.variant)
    for folder in folders:
        print(folder)
    return 0


if __name__ == "__main__":
    main()
