"""textnnunet_benchmark -d 1 2 3 -c 3d_fullres -f 0: one universal model against one nnU-Net per dataset."""
from __future__ import annotations

import argparse
import shlex
import sys

from textnnunet.cli.common import add_folder_args, user_errors_exit
from textnnunet.cli.training_args import add_training_args, config_from_args
from textnnunet.text.encoders import encoder_kinds


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Train what is missing (universal model, per-dataset baselines, ablations), score every model on "
                    "each dataset's held-out cases and on a fully labelled test set, and write benchmark.json, "
                    "benchmark.md and plots to results/benchmark_<plan>_<configuration>_fold<k>/. Budgets are "
                    "equal by default: --epochs/--iters_per_epoch are each baseline's; the universal model trains "
                    "the same epochs with iters_per_epoch x (number of datasets).")
    p.add_argument("-d", "--dataset_ids", nargs="+", type=int, required=True, help="datasets of the joint plan")
    p.add_argument("-c", "--configuration", default="3d_fullres")
    p.add_argument("-f", "--fold", default="0")
    add_training_args(p)
    p.add_argument("--unequal_budget", action="store_true",
                   help="give the universal model the iterations of ONE baseline instead of all of them together")
    p.add_argument("--no_train", action="store_true", help="only evaluate models that are already trained")
    p.add_argument("--ablations", nargs="*", default=[], choices=("encoder", "conditioning", "masking"),
                   help="also train and score: other text encoders (clip/minilm/onehot), FiLM conditioning, the naive "
                        "union without partial-label masking")
    p.add_argument("--test_dataset", nargs="+", default=None, metavar="ID",
                   help="fully labelled test set(s) (imagesTs + labelsTs), e.g. 4, or 4 10 for the development test "
                        "set and the sealed one (textnnunet_generate_phantoms --sealed); each gets its own table")
    p.add_argument("--seeds", nargs="+", type=int, default=None, metavar="SEED",
                   help="repeat the whole comparison once per training seed (the split stays fixed), each in "
                        "results/benchmark_seeds_<plan>_<configuration>_fold<k>/seed_<s>/, and report mean ± sd over "
                        "seeds with differences inside 2 sd marked as ties (benchmark_seeds.json/.md there); "
                        "resumable: finished seeds and models are skipped. Replaces --seed")
    p.add_argument("--encoder", choices=encoder_kinds(), default="auto",
                   help="text encoder of the main universal model")
    p.add_argument("--disable_tta", action="store_true",
                   help="no test-time mirroring when predicting the test set (faster on CPU)")
    p.add_argument("-np", "--num_processes", type=int, default=2, help="preprocessing workers for baseline caches")
    p.add_argument("--nnunet_model", nargs=2, action="append", default=[], metavar=("DATASET_ID", "MODEL_FOLDER"),
                   help="put a genuine nnU-Net v2 next to ours (repeatable, one per dataset; needs --raw): "
                        "MODEL_FOLDER is <nnUNet_results>/DatasetXXX_Name/<Trainer>__<Plans>__<configuration>. Its "
                        "fold_<k>/validation predictions are scored on our held-out cases of that dataset (nnU-Net "
                        "must have trained with our splits) and, with --test_dataset, its test-set predictions")
    p.add_argument("--nnunet_test_predictions", nargs="+", action="append", default=[],
                   metavar="DATASET_ID FOLDER [TEST_DATASET_ID]",
                   help="that nnU-Net model's predictions of a test set's imagesTs (<case><file_ending> label maps), "
                        "read instead of running nnUNetv2_predict_from_modelfolder; of the first --test_dataset "
                        "unless TEST_DATASET_ID names another (repeatable)")
    p.add_argument("--nnunet_predict_exe", default=None, metavar="PATH",
                   help="nnUNetv2_predict_from_modelfolder to run on the test set (default: the one on PATH; "
                        "without either, an imported model is scored on validation only)")
    add_folder_args(p)
    return p


@user_errors_exit
def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    from textnnunet.benchmark.run import BenchmarkOptions, run_benchmark

    options = BenchmarkOptions(
        dataset_ids=args.dataset_ids, configuration=args.configuration, fold=args.fold, epochs=args.epochs,
        iters_per_epoch=args.iters_per_epoch, val_iters_per_epoch=args.val_iters_per_epoch,
        equal_budget=not args.unequal_budget, train=not args.no_train, ablations=list(args.ablations),
        test_dataset=args.test_dataset[0] if args.test_dataset else None,
        more_test_datasets=list(args.test_dataset[1:]) if args.test_dataset else [], encoder=args.encoder,
        device=args.device, num_processes=args.num_processes,
        use_mirroring=not args.disable_tta, nnunet_models=[tuple(m) for m in args.nnunet_model],
        nnunet_test_predictions=[tuple(m) for m in args.nnunet_test_predictions],
        nnunet_predict_exe=args.nnunet_predict_exe,
        base_config=config_from_args(args), command="textnnunet_benchmark " + shlex.join(argv))
    if args.seeds is not None:
        from textnnunet.benchmark.seeds import run_seeds

        run_seeds(options, args.seeds, raw=args.raw, preprocessed=args.preprocessed, results=args.results)
        return 0
    run_benchmark(options, raw=args.raw, preprocessed=args.preprocessed, results=args.results)
    return 0


if __name__ == "__main__":
    main()
