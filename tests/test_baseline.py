"""Per-dataset softmax baseline: label mapping, Dice + CE, sampler targets, a tiny training run with validation."""
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark_helpers import SHAPE, label_map_of, plans_for, write_plan_with_cases
from training_cache_helpers import LIVER
from textnnunet.benchmark.baseline import (
    LabelMapSampler,
    baseline_label_values,
    baseline_regions,
    baseline_trainer,
    build_baseline_network,
    index_map_to_class_masks,
    predict_softmax,
    softmax_dice_ce_loss,
    values_to_indices,
)
from textnnunet.cli.train_baseline import main as train_baseline_main
from textnnunet.inference.predictor import PredictionSettings
from textnnunet.training.config import TrainingConfig
from textnnunet.training.sampling import list_case_refs
from textnnunet.utils.files import load_json

torch.set_num_threads(1)


def liver_plans() -> dict:
    """A per-dataset plan as the planner writes it: one dataset, regions (liver = tumour included)."""
    return plans_for(LIVER, [LIVER])


@pytest.fixture
def preprocessed(tmp_path) -> Path:
    root = tmp_path / "preprocessed"
    write_plan_with_cases(root, LIVER, [LIVER])
    return root


def test_label_values_regions_and_masks():
    plans = liver_plans()
    assert baseline_label_values(plans) == [0, 1, 2]
    assert baseline_regions(plans) == {"liver": [1, 2], "liver tumor": [2]}
    seg = np.array([0, 1, 2, 7, 2])
    index = values_to_indices(seg, [0, 1, 2])
    assert index.tolist() == [0, 1, 2, 0, 2]  # an unknown value (7) counts as background
    masks = index_map_to_class_masks(index, [0, 1, 2], baseline_regions(plans))
    assert masks["liver"].tolist() == [False, True, True, False, True]
    assert masks["liver tumor"].tolist() == [False, False, True, False, True]


def test_dice_ce_loss_is_low_for_the_right_answer_and_has_gradients():
    target = torch.zeros(2, 1, 4, 4, 4)
    target[:, :, 1:3, 1:3, 1:3] = 1
    target[0, :, 1, 1, 1] = 2
    onehot = torch.nn.functional.one_hot(target[:, 0].long(), 3).movedim(-1, 1).float()
    good = (onehot * 20 - 10).requires_grad_()
    loss_good = softmax_dice_ce_loss(good, target)
    loss_good.backward()
    assert float(loss_good.detach()) < 1e-2  # not 0: an absent class keeps nnU-Net's smoothing term
    bad = torch.zeros(2, 3, 4, 4, 4, requires_grad=True)
    loss_bad = softmax_dice_ce_loss(bad, target)
    loss_bad.backward()
    assert float(loss_bad.detach()) > 1.0 and torch.isfinite(bad.grad).all() and bad.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        softmax_dice_ce_loss(bad, target[:, :, :2])


def test_label_map_sampler_targets_are_channel_indices(preprocessed):
    refs = list_case_refs(preprocessed / LIVER / "3d_fullres" / LIVER)
    sampler = LabelMapSampler(refs, liver_plans(), "3d_fullres", batch_size=3, oversample_foreground_percent=1.0,
                              rng=np.random.default_rng(0))
    batch = sampler.next_batch()
    assert batch["target"].shape == (3, 1, 8, 16, 16) and batch["annotated"].shape == (3, 1)
    assert set(np.unique(batch["target"])) <= {0.0, 1.0, 2.0}
    assert (batch["target"] > 0).any(axis=(1, 2, 3, 4)).all()  # every item was centred on foreground


def test_baseline_trainer_smoke(preprocessed, tmp_path):
    plans = liver_plans()
    config = TrainingConfig(epochs=1, iters_per_epoch=2, val_iters_per_epoch=1, device="cpu", seed=1)
    cases = preprocessed / LIVER / "3d_fullres"
    trainer = baseline_trainer(plans, "3d_fullres", 0, cases, {LIVER: ["liver_000", "liver_001"]},
                               {LIVER: ["liver_002"]}, tmp_path / "fold_0", config, echo=False)
    final = trainer.run()
    ckpt = torch.load(final, weights_only=False)
    assert ckpt["kind"] == "baseline" and ckpt["label_values"] == [0, 1, 2] and ckpt["epochs_done"] == 1
    assert np.isfinite(trainer.history.train_loss).all() and np.isfinite(trainer.history.val_loss).all()
    assert set(trainer.history.pseudo_dice[-1]) == {"liver", "liver tumor"}
    net = build_baseline_network(plans, "3d_fullres", ckpt)
    x = torch.zeros(1, 1, 8, 16, 16)
    assert net(x).shape == (1, 3, 8, 16, 16)  # background + one channel per label value
    data = np.random.default_rng(0).normal(size=(1, *SHAPE)).astype(np.float32)
    probs = predict_softmax(net, data, [8, 16, 16], 3, PredictionSettings(use_mirroring=True), torch.device("cpu"))
    assert probs.shape == (3, *SHAPE) and np.allclose(probs.sum(0), 1.0, atol=1e-4)


def test_baseline_whole_case_validation_scores_class_regions(preprocessed, tmp_path):
    """--case_val_every works for the baseline too: its step scores the softmax argmax by class region."""
    config = TrainingConfig(epochs=1, iters_per_epoch=1, val_iters_per_epoch=1, device="cpu", seed=1,
                            case_val_every=1)
    trainer = baseline_trainer(liver_plans(), "3d_fullres", 0, preprocessed / LIVER / "3d_fullres",
                               {LIVER: ["liver_000", "liver_001"]}, {LIVER: ["liver_002"]}, tmp_path / "fold_0",
                               config, echo=False)
    trainer.run()
    scores = trainer.history.whole_case[0]["scores"]
    assert set(scores) == {"liver", "liver tumor"}
    liver_voxels = int((label_map_of(LIVER) > 0).sum())  # the liver region, its tumour included
    assert 0 <= scores["liver"]["FN"] <= liver_voxels and scores["liver"]["FP"] >= 0
    assert 0.0 <= scores["liver"]["Dice"] <= 1.0


def test_train_baseline_cli_writes_the_model_folder_and_validation(preprocessed, tmp_path, capsys):
    results = tmp_path / "results"
    common = ["--preprocessed", str(preprocessed), "--results", str(results), "--device", "cpu", "--epochs", "1",
              "--iters_per_epoch", "1", "--val_iters_per_epoch", "1", "--quiet"]
    with pytest.raises(SystemExit) as e:
        train_baseline_main(["1", "3d_fullres", "0", *common])
    assert e.value.code == 0, capsys.readouterr().err
    out = results / LIVER / "3d_fullres__baseline"
    splits = load_json(out / "splits_final.json")
    fold = out / "fold_0"
    for name in ("checkpoint_final.pth", "log.txt", "progress.png", "training_config.json",
                 "validation/summary.json", "validation/summary.md"):
        assert (fold / name).is_file(), name
    summary = load_json(fold / "validation" / "summary.json")
    assert set(summary["mean"]) == {"liver", "liver tumor"}
    assert summary["num_cases"] == len(splits[LIVER][0]["val"])
    # the same seeded rule as the joint plan's splits
    from textnnunet.training.splits import make_splits

    assert splits[LIVER] == make_splits(["liver_000", "liver_001", "liver_002"])
    with pytest.raises(SystemExit) as e:
        train_baseline_main(["9", "3d_fullres", "0", *common])
    assert e.value.code == 2 and "per-dataset plan not found" in capsys.readouterr().err
