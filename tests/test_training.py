"""Trainer: exact resume, splits, learning-rate schedule, pseudo Dice, CLI errors, DDP with gloo."""
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from training_cache_helpers import LIVER, SPLEEN, make_plans, two_dataset_cases
from textnnunet.cli.train import main as train_main
from textnnunet.training.config import TrainingConfig
from textnnunet.training.splits import cases_for_fold, load_or_create_splits, make_splits, parse_fold
from textnnunet.training.trainer import CHECKPOINT_LATEST, Trainer, poly_lr, pseudo_dice_counts

ARCH = {"conv_dims": 3, "n_stages": 3, "features_per_stage": [4, 8, 16], "kernel_sizes": [[3, 3, 3]] * 3,
        "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]], "n_conv_per_stage": [1, 1, 1], "n_conv_per_stage_decoder": [1, 1]}


def tiny_plans() -> dict:
    plans = make_plans(patch_3d=(8, 16, 16), batch_size=2)
    plans["channel_names"] = {"0": "CT"}
    plans["configurations"]["3d_fullres"]["architecture"] = ARCH
    plans["configurations"]["3d_fullres"]["spacing"] = [1.0, 1.0, 1.0]
    del plans["configurations"]["2d"]
    return plans


@pytest.fixture
def preprocessed(tmp_path) -> Path:
    """preprocessed/<plan>/plans.json + 3d_fullres caches for two datasets (3 cases each)."""
    root = tmp_path / "preprocessed"
    plan_folder = root / "TextPlans_001_002"
    two_dataset_cases(plan_folder / "3d_fullres", n_liver=3, n_spleen=3)
    for dataset in (LIVER, SPLEEN):  # what the preprocessor leaves beside the cases: not a case
        (plan_folder / "3d_fullres" / dataset / "preprocessing_signature.json").write_text("{}")
    (plan_folder / "plans.json").write_text(json.dumps(tiny_plans()))
    return root


def _trainer(preprocessed: Path, out: Path, epochs: int, **config_fields) -> Trainer:
    plans = tiny_plans()
    config = TrainingConfig(epochs=epochs, iters_per_epoch=2, val_iters_per_epoch=1, device="cpu", seed=3,
                            **config_fields)
    train = {LIVER: ["liver_000", "liver_001"], SPLEEN: ["spleen_000", "spleen_001"]}
    val = {LIVER: ["liver_002"], SPLEEN: ["spleen_002"]}
    embeddings = np.random.default_rng(0).normal(size=(3, 12)).astype(np.float32)
    return Trainer(plans, "3d_fullres", 0, preprocessed / "TextPlans_001_002" / "3d_fullres", train, val, out,
                   config, embeddings, echo=False)


def test_resume_ends_where_an_uninterrupted_run_ends(preprocessed, tmp_path):
    straight = _trainer(preprocessed, tmp_path / "straight", epochs=3)
    straight.run()

    interrupted = _trainer(preprocessed, tmp_path / "resumed", epochs=3)
    interrupted.run_epoch(0)
    interrupted._end_of_epoch(0)
    interrupted.close()  # the "crash" after epoch 0's checkpoint
    resumed = _trainer(preprocessed, tmp_path / "resumed", epochs=3)
    resumed.load_checkpoint(tmp_path / "resumed" / CHECKPOINT_LATEST)
    assert resumed.start_epoch == 1
    resumed.run()

    a, b = straight.raw_network.state_dict(), resumed.raw_network.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert straight.history.train_loss == resumed.history.train_loss
    for name in ("checkpoint_final.pth", "checkpoint_latest.pth", "progress.png", "log.txt"):
        assert (tmp_path / "resumed" / name).is_file()


def test_training_reduces_the_loss_on_a_learnable_task(preprocessed, tmp_path):
    trainer = _trainer(preprocessed, tmp_path / "learn", epochs=3)
    # Heads start at p = 0.5 here, not at the foreground prior, so that a few steps have a clear loss to remove
    # (the tiny cases hold 2-24 foreground voxels per patch: Dice needs far more steps than this test can afford).
    trainer.raw_network.heads.initialize_output_bias(0.0)
    trainer.config.iters_per_epoch = 8
    trainer.config.augmentation = "none"
    trainer.train_iter, trainer.val_iter = trainer._build_iterators()
    trainer.run()
    losses = trainer.history.train_loss
    assert losses[-1] < losses[0] - 0.05, losses
    waits, epochs = trainer.history.data_wait_seconds, trainer.history.epoch_seconds
    assert len(waits) == len(epochs) == 3 and all(0 < w < e for w, e in zip(waits, epochs))


def test_splits_are_seeded_disjoint_and_cover_every_case(tmp_path):
    ids = [f"c{i}" for i in range(12)]
    splits = make_splits(ids)
    assert splits == make_splits(ids)
    assert sorted(c for f in splits for c in f["val"]) == sorted(ids)
    for fold in splits:
        assert not set(fold["train"]) & set(fold["val"])
    few = make_splits(["a", "b"])
    assert len(few) == 5 and all(f["val"] for f in few)
    path = tmp_path / "splits_final.json"
    first = load_or_create_splits(path, {"A": ids})
    assert load_or_create_splits(path, {"A": ids + ["new"], "B": ["x", "y", "z"]})["A"] == first["A"]
    train, val = cases_for_fold(load_or_create_splits(path, {}), "all", ["A", "B"])
    assert val == {"A": [], "B": []} and len(train["A"]) == 12


def test_poly_lr_and_fold_parsing():
    assert poly_lr(0, 10, 0.01) == pytest.approx(0.01)
    assert poly_lr(5, 10, 0.01) == pytest.approx(0.01 * 0.5**0.9)
    assert parse_fold("all") == "all" and parse_fold("3") == 3
    with pytest.raises(Exception, match="fold 'x'"):
        parse_fold("x")


def test_pseudo_dice_counts_only_annotated_items():
    logits = torch.tensor([[[[5.0, 5.0]], [[5.0, -5.0]]], [[[5.0, 5.0]], [[5.0, 5.0]]]]).unsqueeze(-1)  # (2,2,1,2,1)
    target = torch.tensor([[[[1.0, 0.0]], [[1.0, 1.0]]], [[[0.0, 0.0]], [[0.0, 0.0]]]]).unsqueeze(-1)
    annotated = torch.tensor([[True, True], [False, True]])
    tp, fp, fn = pseudo_dice_counts(logits, target, annotated)
    assert tp.tolist() == [1, 1] and fp.tolist() == [1, 2] and fn.tolist() == [0, 1]


def _cli(argv, capsys):
    with pytest.raises(SystemExit) as e:
        train_main(argv)
    return e.value.code, capsys.readouterr().err


def test_cli_errors_are_one_line(preprocessed, tmp_path, capsys):
    common = ["--preprocessed", str(preprocessed), "--results", str(tmp_path / "results"), "--encoder", "onehot",
              "--device", "cpu", "--epochs", "1", "--iters_per_epoch", "1", "--val_iters_per_epoch", "1",
              "--skip_validation", "--quiet"]
    code, err = _cli(["3d_lowres", "0", *common], capsys)
    assert code == 2 and "configuration '3d_lowres' is not in" in err and err.count("\n") == 1
    code, err = _cli(["3d_fullres", "first", *common], capsys)
    assert code == 2 and "fold 'first'" in err
    code, err = _cli(["3d_fullres", "0", "--c", *common], capsys)
    assert code == 2 and "nothing to resume" in err
    code, err = _cli(["3d_fullres", "0", "--preprocessed", str(tmp_path / "empty"), *common[2:]], capsys)
    assert code == 2 and "textnnunet_plan_and_preprocess" in err

    code, _ = _cli(["3d_fullres", "0", *common], capsys)
    assert code == 0
    fold = tmp_path / "results" / "TextPlans_001_002" / "3d_fullres__onehot" / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file()
    code, err = _cli(["3d_fullres", "0", *common], capsys)
    assert code == 2 and "already holds checkpoints" in err
    # --c continues the same training: other settings would make it another one under the same folder
    code, err = _cli(["3d_fullres", "0", "--c", *common, "--epochs", "3", "--augmentation", "nnunet"], capsys)
    assert code == 2 and err.count("\n") == 1 and "trained with other settings" in err
    assert "epochs: 1 -> 3" in err and "augmentation: 'nnunet_regions' -> 'nnunet'" in err
    code, err = _cli(["3d_fullres", "0", "--c", *common, "--case_val_every", "1", "--num_workers", "0"], capsys)
    assert code == 0, err  # where it runs and what it reports may change
    code, err = _cli(["3d_fullres", "1", "--val", *common], capsys)  # validation alone needs a finished fold
    assert code == 2 and "checkpoint_final.pth: not found" in err and err.count("\n") == 1

    plans = copy.deepcopy(tiny_plans())  # make_plans shares its label space between calls
    plans["label_space"]["datasets"][SPLEEN] = {}
    plans_file = preprocessed / "TextPlans_001_002" / "plans.json"
    original = plans_file.read_text()
    plans_file.write_text(json.dumps(plans))
    code, err = _cli(["3d_fullres", "1", *common], capsys)
    assert code == 2 and f"dataset {SPLEEN} labels none of the plan's classes" in err
    plans_file.write_text(original)

    cases = preprocessed / "TextPlans_001_002" / "3d_fullres" / SPLEEN
    for f in cases.iterdir():
        f.unlink()
    code, err = _cli(["3d_fullres", "1", *common], capsys)
    assert code == 2 and "textnnunet_preprocess" in err and SPLEEN in err


@pytest.mark.parametrize("extra", [[], ["--no_deep_supervision"]], ids=["deep_supervision", "no_deep_supervision"])
def test_ddp_two_gloo_processes_run_an_epoch(preprocessed, tmp_path, extra):
    """Two steps, so DDP would fail on the second if a parameter had gone without a gradient in the first."""
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "textnnunet.cli.train", "3d_fullres", "0", "--preprocessed", str(preprocessed),
           "--results", str(results), "--encoder", "onehot", "--device", "cpu", "--epochs", "1",
           "--iters_per_epoch", "2", "--val_iters_per_epoch", "1", "--skip_validation", "--quiet", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, "\n".join(l for l in proc.stderr.splitlines() if "error" in l.lower())[-3000:]
    [final] = (results / "TextPlans_001_002").glob("3d_fullres__*onehot/fold_0/checkpoint_final.pth")
    ckpt = torch.load(final, weights_only=False)
    assert ckpt["world_size"] == 2 and ckpt["epochs_done"] == 1


@pytest.mark.parametrize("conditioning", ["controller", "film"])
def test_under_ddp_weights_every_parameter_gets_a_gradient_each_step(preprocessed, tmp_path, conditioning):
    """DDP runs without find_unused_parameters: the lowest deep-supervision output keeps nnU-Net's 1e-6 under DDP,
    so each step's backward reaches every parameter (with the single-process weight 0 its head is left out)."""
    from textnnunet.network.deep_supervision import DDP_LOWEST_WEIGHT, deep_supervision_weights
    from textnnunet.training.loss import DeepSupervisionLoss

    trainer = _trainer(preprocessed, tmp_path, epochs=1, conditioning=conditioning)
    n_scales = len(trainer.cfg_plan.architecture["strides"]) - 1
    batch = next(trainer.train_iter)
    without_grad = {}
    for lowest in (0.0, DDP_LOWEST_WEIGHT):
        trainer.loss = DeepSupervisionLoss(trainer.step.loss, deep_supervision_weights(n_scales, lowest))
        trainer.train_step(batch)
        without_grad[lowest] = [n for n, p in trainer.network.named_parameters() if p.grad is None]
    assert without_grad[0.0] and not without_grad[DDP_LOWEST_WEIGHT]


def test_whole_case_validation_is_recorded_and_leaves_training_unchanged(preprocessed, tmp_path):
    plain = _trainer(preprocessed, tmp_path / "plain", epochs=2)
    plain.run()
    checked = _trainer(preprocessed, tmp_path / "checked", epochs=2)
    checked.config.case_val_every = 1
    checked.run()
    assert plain.history.train_loss == checked.history.train_loss  # no random numbers drawn, no state changed
    assert [c["epoch"] for c in checked.history.whole_case] == [0, 1]
    scores = checked.history.whole_case[-1]["scores"]
    annotated = {c for ds in (LIVER, SPLEEN) for c in tiny_plans()["label_space"]["datasets"][ds]}
    assert set(scores) == annotated and {"liver", "spleen"} <= annotated  # each case judged on its dataset's classes
    assert all({"Dice", "FP", "FN"} <= set(v) for v in scores.values())
    assert not plain.history.whole_case
    assert "whole-case validation" in (tmp_path / "checked" / "log.txt").read_text()


def test_label_exclusion_is_the_default_and_older_configs_keep_their_meaning():
    from textnnunet.training.config import TrainingConfig

    assert TrainingConfig().label_exclusion and TrainingConfig().model_tag("minilm") in ("", "minilm")
    assert "noexclusion" in TrainingConfig(label_exclusion=False).model_tag("minilm")
    old = TrainingConfig.from_json({"epochs": 3})  # a training_config.json written before exclusion existed
    assert old.label_exclusion is False
    assert TrainingConfig.from_json(TrainingConfig().to_json()).label_exclusion is True


def test_no_mirroring_is_the_default_and_older_configs_keep_their_axes():
    from textnnunet.training.config import TrainingConfig

    assert TrainingConfig().resolved_mirror_axes(3) == []
    assert TrainingConfig.from_json(TrainingConfig().to_json()).resolved_mirror_axes(3) == []
    # Configs written up to session 5 say "mirror_axes": null (every axis but left-right); older ones lack the key.
    assert TrainingConfig.from_json({"epochs": 3, "mirror_axes": None}).resolved_mirror_axes(3) == [0, 1]
    assert TrainingConfig.from_json({"epochs": 3}).resolved_mirror_axes(3) == [0, 1]
    assert TrainingConfig(mirror_axes=[0, 1, 2]).resolved_mirror_axes(3) == [0, 1, 2]


def test_training_from_unpacked_caches_is_the_same_training(preprocessed, tmp_path):
    """--unpack yes: the trainer unpacks the fold's cases beside their npz and trains on exactly the same batches."""
    losses = {}
    for unpack in ("no", "yes"):
        trainer = _trainer(preprocessed, tmp_path / unpack, epochs=2)
        trainer.config.unpack = unpack
        trainer.train_iter, trainer.val_iter = trainer._build_iterators()
        trainer.run()
        losses[unpack] = trainer.history.train_loss
    assert losses["yes"] == losses["no"]
    cases = preprocessed / "TextPlans_001_002" / "3d_fullres" / LIVER
    assert (cases / "liver_000.data.npy").is_file() and (cases / "liver_002.seg.npy").is_file()


def test_training_with_a_background_worker_unpacks_and_builds_targets_in_the_worker(preprocessed, tmp_path):
    """num_workers > 0: unpack "auto" unpacks the cases, and the worker builds the class targets after its spatial
    transform (deferred targets) - an epoch runs and learns from real targets."""
    trainer = _trainer(preprocessed, tmp_path / "worker", epochs=1)
    trainer.config.num_workers = 1
    trainer.train_iter, trainer.val_iter = trainer._build_iterators()
    try:
        batch = next(trainer.train_iter)
        assert batch["target"].shape[1] == 3 and batch["target"].max() == 1.0
        trainer.run()
    finally:
        trainer.close()
    assert np.isfinite(trainer.history.train_loss).all()
    assert (preprocessed / "TextPlans_001_002" / "3d_fullres" / LIVER / "liver_000.data.npy").is_file()


def test_dice_weight_reaches_the_loss_and_names_the_model_folder():
    import torch

    from textnnunet.cli.train import build_parser, universal_config_from_args
    from textnnunet.errors import UserError
    from textnnunet.training.loss import masked_bce_dice_loss
    from textnnunet.training.step import UniversalStep

    config = universal_config_from_args(build_parser().parse_args(["3d_fullres", "0", "--dice_weight", "0"]))
    assert config.dice_weight == 0.0 and config.model_tag("auto") == "dice0"
    assert TrainingConfig().model_tag("auto") == ""
    with pytest.raises(UserError, match="--dice_weight -1.0: must be >= 0"):
        universal_config_from_args(build_parser().parse_args(["3d_fullres", "0", "--dice_weight", "-1"]))
    step = UniversalStep(np.zeros((2, 4), np.float32))
    step.config = config
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 4, 4, 4, generator=gen)
    target = (torch.rand(2, 2, 4, 4, 4, generator=gen) > 0.7).float()
    annotated = torch.tensor([[True, False], [True, True]])
    bce_only = masked_bce_dice_loss(logits, target, annotated, dice_weight=0.0)
    assert torch.allclose(step.loss(logits, target, annotated), bce_only)
    assert not torch.allclose(bce_only, masked_bce_dice_loss(logits, target, annotated))
