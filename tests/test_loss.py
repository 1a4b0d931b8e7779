import math

import pytest
import torch

from textnnunet.training.loss import (
    DeepSupervisionLoss,
    deep_supervision_weights,
    downsample_targets,
    masked_bce_dice_loss,
    naive_union_annotation,
)

torch.set_num_threads(1)


def _random_problem(seed=0, shape=(2, 3, 4, 4, 4)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g)
    target = (torch.rand(shape, generator=g) > 0.6).float()
    annotated = torch.tensor([[True, False, True], [False, True, False]])
    return logits, target, annotated


def test_unannotated_entries_get_exactly_zero_gradient():
    logits, target, annotated = _random_problem()
    for batch_dice in (False, True):
        x = logits.clone().requires_grad_(True)
        masked_bce_dice_loss(x, target, annotated, batch_dice=batch_dice).backward()
        assert torch.all(x.grad[~annotated] == 0)
        for b, k in annotated.nonzero().tolist():
            assert x.grad[b, k].abs().sum() > 0


def test_unannotated_logits_change_nothing():
    logits, target, annotated = _random_problem()
    base = masked_bce_dice_loss(logits, target, annotated)
    changed = logits.clone()
    changed[~annotated] = torch.randn_like(changed[~annotated]) * 100
    assert torch.equal(masked_bce_dice_loss(changed, target, annotated), base)
    changed_target = target.clone()
    changed_target[~annotated] = 1 - changed_target[~annotated]
    assert torch.equal(masked_bce_dice_loss(logits, changed_target, annotated), base)
    # even non-finite logits there cannot leak into the value or the gradient
    changed[0, 1] = float("nan")
    changed[1, 0] = float("inf")
    x = changed.requires_grad_(True)
    loss = masked_bce_dice_loss(x, target, annotated)
    loss.backward()
    assert torch.equal(loss.detach(), base)
    assert torch.all(x.grad[~annotated] == 0)


def test_loss_matches_hand_computation():
    # one item, class 0 annotated with two voxels (logits 0 and 2, target 1 and 0); class 1 unannotated
    logits = torch.tensor([[[[[0.0, 2.0]]], [[[5.0, -5.0]]]]])  # (1, 2, 1, 1, 2)
    target = torch.tensor([[[[[1.0, 0.0]]], [[[0.0, 1.0]]]]])
    annotated = torch.tensor([[True, False]])
    smooth = 1e-5
    bce = (math.log(2.0) + math.log(1.0 + math.exp(2.0))) / 2
    p = [0.5, 1.0 / (1.0 + math.exp(-2.0))]
    dice = (2 * 0.5 + smooth) / (p[0] + p[1] + 1.0 + smooth)
    expected = bce + (1.0 - dice)
    assert masked_bce_dice_loss(logits, target, annotated).item() == pytest.approx(expected, rel=1e-6)
    weighted = masked_bce_dice_loss(logits, target, annotated, bce_weight=2.0, dice_weight=0.5)
    assert weighted.item() == pytest.approx(2 * bce + 0.5 * (1 - dice), rel=1e-6)


def test_dice_is_computed_over_the_whole_patch_not_per_slice():
    # two slices of 2x2; slice 0 holds 1 foreground voxel, slice 1 holds 3; every probability is 0.5
    target = torch.zeros(1, 1, 2, 2, 2)
    target[0, 0, 0, 0, 0] = 1
    target[0, 0, 1].view(-1)[:3] = 1
    logits = torch.zeros_like(target)
    annotated = torch.tensor([[True]])
    dice_only = masked_bce_dice_loss(logits, target, annotated, bce_weight=0.0, smooth=0.0)
    whole = 2 * (0.5 * 4) / (0.5 * 8 + 4)  # 0.5
    per_slice = (2 * 0.5 / (2 + 1) + 2 * 1.5 / (2 + 3)) / 2  # 0.4667
    assert dice_only.item() == pytest.approx(1 - whole, rel=1e-6)
    assert dice_only.item() != pytest.approx(1 - per_slice, rel=1e-3)


def test_batch_dice_pools_only_annotating_items():
    target = torch.zeros(3, 1, 1, 2, 2)
    target[0] = 1  # item 0 all foreground, item 1 empty, item 2 (unannotated) all foreground
    target[2] = 1
    logits = torch.zeros_like(target)
    annotated = torch.tensor([[True], [True], [False]])
    kwargs = dict(bce_weight=0.0, smooth=0.0)
    per_item = masked_bce_dice_loss(logits, target, annotated, batch_dice=False, **kwargs)
    pooled = masked_bce_dice_loss(logits, target, annotated, batch_dice=True, **kwargs)
    assert per_item.item() == pytest.approx(1 - (2 * 2 / (2 + 4) + 0.0) / 2, rel=1e-6)
    assert pooled.item() == pytest.approx(1 - 2 * 2 / (2 + 4 + 2), rel=1e-6)


def test_batch_dice_averages_over_annotated_classes():
    logits, target, annotated = _random_problem(seed=3)
    pooled = masked_bce_dice_loss(logits, target, annotated, batch_dice=True, bce_weight=0.0)
    dices = []
    for k in range(3):
        items = annotated[:, k]
        if items.any():
            p, t = torch.sigmoid(logits[items, k]), target[items, k]
            dices.append((2 * (p * t).sum() + 1e-5) / (p.sum() + t.sum() + 1e-5))
    assert pooled.item() == pytest.approx(1 - torch.stack(dices).mean().item(), rel=1e-5)


def test_nothing_annotated_gives_connected_zero():
    logits, target, _ = _random_problem()
    x = logits.clone().requires_grad_(True)
    loss = masked_bce_dice_loss(x, target, torch.zeros(2, 3, dtype=torch.bool))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.all(x.grad == 0)


def test_naive_union_treats_unlabelled_classes_as_background():
    logits, target, annotated = _random_problem()
    union = naive_union_annotation(annotated)
    assert union.dtype == torch.bool and union.all() and union.shape == annotated.shape
    x = logits.clone().requires_grad_(True)
    masked_bce_dice_loss(x, target, union).backward()
    assert torch.all(x.grad.abs().sum(dim=(2, 3, 4)) > 0)


def test_shape_mismatch_is_rejected():
    logits, target, annotated = _random_problem()
    with pytest.raises(ValueError):
        masked_bce_dice_loss(logits, target[:, :2], annotated)
    with pytest.raises(ValueError):
        masked_bce_dice_loss(logits, target, annotated[:, :2])


def test_downsample_targets_nearest_and_binary():
    target = torch.zeros(1, 2, 8, 8, 8)
    target[0, 0, 1, 3, 5] = 1  # odd indices survive stride-2 nearest sampling (pixel-centre aligned)
    target[0, 1, 0, 2, 4] = 1  # even indices do not
    outs = downsample_targets(target, [(8, 8, 8), (4, 4, 4), (2, 2, 2)])
    assert outs[0] is target
    assert [tuple(o.shape[2:]) for o in outs] == [(8, 8, 8), (4, 4, 4), (2, 2, 2)]
    assert outs[1][0, 0, 0, 1, 2] == 1 and outs[1][0, 0].sum() == 1
    assert outs[1][0, 1].sum() == 0
    for o in outs:
        assert set(o.unique().tolist()) <= {0.0, 1.0}
    # full (B, K, *spatial) shapes are accepted too
    assert downsample_targets(target, [torch.Size([1, 2, 4, 4, 4])])[0].shape == (1, 2, 4, 4, 4)


def test_deep_supervision_weights_and_loss():
    assert list(deep_supervision_weights(3)) == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert list(deep_supervision_weights(1)) == [1.0]
    g = torch.Generator().manual_seed(1)
    target = (torch.rand(2, 3, 8, 8, 8, generator=g) > 0.5).float()
    annotated = torch.tensor([[True, True, False], [False, False, True]])
    outputs = [torch.randn(2, 3, *s, generator=g) for s in ((8, 8, 8), (4, 4, 4), (2, 2, 2))]
    targets = downsample_targets(target, [o.shape for o in outputs])
    weights = [0.6, 0.3, 0.1]
    ds = DeepSupervisionLoss(masked_bce_dice_loss, weights)
    expected = sum(w * masked_bce_dice_loss(o, t, annotated) for w, o, t in zip(weights, outputs, targets))
    assert ds(outputs, targets, annotated).item() == pytest.approx(expected.item(), rel=1e-6)
    # a single full-resolution target is downsampled to every output
    assert ds(outputs, target, annotated).item() == pytest.approx(expected.item(), rel=1e-6)

    calls = []

    def recording_loss(o, t, a):
        calls.append(tuple(o.shape[2:]))
        return o.mean()

    DeepSupervisionLoss(recording_loss, [1.0, 0.5, 0.0])(outputs, targets, annotated)
    assert calls == [(8, 8, 8), (4, 4, 4)]  # zero-weight output skipped
    with pytest.raises(ValueError):
        ds(outputs[:2], targets, annotated)
