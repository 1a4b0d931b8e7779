import random
from dataclasses import replace

import numpy as np
import pytest
import torch

from textnnunet.errors import UserError
from textnnunet.training.augmentation import (
    augmentation_preset,
    get_training_transforms,
    get_validation_transforms,
    initial_patch_size,
    nnunet_augmentation,
    nnunet_intensity_augmentation,
    no_augmentation,
)
from textnnunet.training.dataloading import TrainingBatchIterator
from textnnunet.training.sampling import PatchSampler
from training_cache_helpers import make_plans, two_dataset_cases

torch.set_num_threads(1)


def _always(config):
    """Every random transform switched on, so the tests exercise all of them."""
    return replace(
        config, p_rotation=1.0, p_scaling=1.0, p_noise=1.0, p_blur=1.0, p_brightness=1.0, p_contrast=1.0,
        p_low_resolution=1.0, p_gamma_inverted=1.0, p_gamma=1.0,
    )


def _batch(shape_data, n_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.normal(size=shape_data).astype(np.float32)
    seg = (rng.random((shape_data[0], n_classes, *shape_data[2:])) > 0.7).astype(np.float32)
    return data, seg


def test_initial_patch_size_rule():
    # rotation 0 and scale 1: unchanged; a square rotated 45 degrees needs sqrt(2) of its side
    assert initial_patch_size((100, 100), (0.0, 0.0), (1.0, 1.0)) == (100, 100)
    assert sorted(initial_patch_size((100, 100), (-np.pi / 4, np.pi / 4), (1.0, 1.0))) == [100, 141]
    # the smallest scale enlarges the patch; angles beyond 90 degrees are capped
    assert initial_patch_size((100, 100), (0.0, 0.0), (0.5, 1.0)) == (200, 200)
    assert initial_patch_size((100, 50), np.pi, (1, 1)) == initial_patch_size((100, 50), np.pi / 2, (1, 1))
    big = initial_patch_size((32, 64, 64), (-np.pi / 6, np.pi / 6), (0.85, 1.25))
    assert all(b >= p for b, p in zip(big, (32, 64, 64))) and big != (32, 64, 64)


def test_presets():
    cfg3d = nnunet_augmentation((32, 64, 64))
    assert cfg3d.mirror_axes == (0, 1, 2) and not cfg3d.dummy_2d
    assert cfg3d.rotation[1] == pytest.approx(np.pi / 6)
    thin = nnunet_augmentation((8, 64, 64))  # anisotropic: nnU-Net's dummy 2D with in-plane +-180
    assert thin.dummy_2d and thin.rotation[1] == pytest.approx(np.pi)
    assert thin.initial_patch_size((8, 64, 64))[0] == 8
    cfg2d = nnunet_augmentation((64, 64))
    assert cfg2d.mirror_axes == (0, 1) and cfg2d.rotation[1] == pytest.approx(np.pi)
    none = augmentation_preset("none", (16, 16, 16))
    assert none.initial_patch_size((16, 16, 16)) == (16, 16, 16)
    assert none.as_dict()["name"] == "none"
    with pytest.raises(UserError, match="unknown"):
        augmentation_preset("heavy", (16, 16, 16))


@pytest.mark.parametrize(
    "patch, config_patch",
    [((8, 8, 8), (8, 8, 8)), ((12, 12), (12, 12)), ((2, 12, 12), (2, 12, 12))],
    ids=["3d", "2d", "dummy2d"],
)
def test_training_transforms_shapes_and_binary_targets(patch, config_patch):
    config = _always(nnunet_augmentation(config_patch))
    initial = config.initial_patch_size(patch)
    assert all(i >= p for i, p in zip(initial, patch))
    np.random.seed(0)
    data, seg = _batch((2, 2, *initial))
    out = get_training_transforms(patch, config)(data=data, seg=seg)
    assert out["data"].shape == (2, 2, *patch)
    assert out["seg"].shape == (2, 3, *patch)
    assert set(np.unique(out["seg"])) <= {0.0, 1.0}
    assert np.isfinite(out["data"]).all()


def test_none_preset_is_identity():
    data, seg = _batch((2, 1, 8, 8, 8))
    transforms = get_training_transforms((8, 8, 8), no_augmentation((8, 8, 8)))
    out = transforms(data=data.copy(), seg=seg.copy())
    np.testing.assert_array_equal(out["data"], data)
    np.testing.assert_array_equal(out["seg"], seg)
    out = get_validation_transforms()(data=data.copy(), seg=seg.copy())
    np.testing.assert_array_equal(out["data"], data)


def test_nnunet_transforms_change_the_data():
    data, seg = _batch((2, 1, 8, 8, 8))
    config = _always(nnunet_augmentation((8, 8, 8)))
    np.random.seed(1)
    out = get_training_transforms((8, 8, 8), config)(data=data.copy(), seg=seg.copy())
    assert not np.allclose(out["data"], data)


def test_intensity_preset_adds_local_intensity_changes_only():
    cfg = augmentation_preset("nnunet_intensity", (8, 16, 16))
    assert cfg.name == "nnunet_intensity" and cfg.p_brightness_gradient > 0 and cfg.p_local_gamma > 0
    assert cfg.p_additive_brightness > 0
    assert nnunet_augmentation((8, 16, 16)).p_brightness_gradient == 0  # nnU-Net's default stays as it is
    # only the new transforms on, always: the segmentation is untouched, the image changes smoothly and locally
    only_local = replace(no_augmentation((8, 16, 16)), p_additive_brightness=1.0, p_brightness_gradient=1.0,
                         p_local_gamma=1.0)
    data = np.abs(_batch((4, 1, 8, 16, 16))[0]) + 1.0  # positive: gamma needs a range to map
    seg = _batch((4, 1, 8, 16, 16))[1]
    np.random.seed(3)
    out = get_training_transforms((8, 16, 16), only_local)(data=data.copy(), seg=seg.copy())
    np.testing.assert_array_equal(out["seg"], seg)
    change = out["data"] - data
    assert np.isfinite(out["data"]).all() and np.abs(change).max() > 0.1
    # not a constant shift everywhere: the gradient and local gamma vary over the patch
    assert any(np.ptp(change[b]) > 1e-3 for b in range(4))
    # picklable, so background augmentation workers can use it
    import pickle
    pickle.loads(pickle.dumps(get_training_transforms((8, 16, 16), nnunet_intensity_augmentation((8, 16, 16)))))


def test_bad_mirror_axes():
    with pytest.raises(UserError, match="mirror_axes"):
        get_training_transforms((8, 8), replace(no_augmentation((8, 8)), mirror_axes=(2,)))


def _iterator(tmp_path, seed, num_workers=0, sampler_seed=0):
    plans = make_plans()
    config = _always(nnunet_augmentation((8, 8, 8)))
    sampler = PatchSampler(
        two_dataset_cases(tmp_path), plans, "3d_fullres", batch_size=2, rng=np.random.default_rng(sampler_seed),
        initial_patch_size=config.initial_patch_size((8, 8, 8)),
    )
    return TrainingBatchIterator(sampler, get_training_transforms((8, 8, 8), config), num_workers, seed=seed)


def _assert_batches_equal(a, b):
    assert torch.equal(a["data"], b["data"]) and torch.equal(a["target"], b["target"])
    assert torch.equal(a["annotated"], b["annotated"]) and a["keys"] == b["keys"]


def test_batch_iterator_in_process_is_deterministic_and_resumable(tmp_path):
    global_state = np.random.get_state()[1].copy()
    python_state = random.getstate()
    with _iterator(tmp_path, seed=5) as first, _iterator(tmp_path, seed=5) as second:
        batches = [next(first) for _ in range(3)]
        for want in batches:
            _assert_batches_equal(next(second), want)
        state = first.state()
        upcoming = next(first)
    assert np.array_equal(np.random.get_state()[1], global_state)  # global streams left alone
    assert random.getstate() == python_state

    b = batches[0]
    assert b["data"].dtype == torch.float32 and b["data"].shape == (2, 1, 8, 8, 8)
    assert b["target"].dtype == torch.float32 and b["target"].shape == (2, 3, 8, 8, 8)
    assert b["annotated"].dtype == torch.bool and b["annotated"].shape == (2, 3)
    assert set(b["target"].unique().tolist()) <= {0.0, 1.0}

    with _iterator(tmp_path, seed=5, sampler_seed=123) as resumed:
        resumed.set_state(state)
        _assert_batches_equal(next(resumed), upcoming)
    with _iterator(tmp_path, seed=6) as other:
        assert not torch.equal(next(other)["data"], batches[0]["data"])


def test_batch_iterator_with_a_worker_yields_and_closes(tmp_path):
    iterator = _iterator(tmp_path, seed=1, num_workers=1)
    try:
        batch = next(iterator)
        processes = list(iterator._augmenter._processes)
        assert batch["data"].shape == (2, 1, 8, 8, 8) and batch["target"].shape == (2, 3, 8, 8, 8)
        assert batch["annotated"].dtype == torch.bool and len(batch["keys"]) == 2
    finally:
        iterator.close()
    assert processes and not any(p.is_alive() for p in processes)
    iterator.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        next(iterator)


def test_augmentation_flag_reaches_the_training_config():
    import argparse

    from textnnunet.cli.training_args import add_training_args, config_from_args

    parser = argparse.ArgumentParser()
    add_training_args(parser)
    assert config_from_args(parser.parse_args([])).augmentation == "nnunet_regions"
    assert config_from_args(parser.parse_args(["--augmentation", "nnunet"])).augmentation == "nnunet"
    assert config_from_args(parser.parse_args(["--no_augmentation"])).augmentation == "none"
    assert config_from_args(parser.parse_args([])).region_shift_sigma is None
    assert config_from_args(parser.parse_args(["--region_shift_sigma", "0.15"])).region_shift_sigma == 0.15
    with pytest.raises(SystemExit):
        parser.parse_args(["--augmentation", "heavy"])


def test_labelled_region_shift_moves_each_labelled_structure_by_its_own_offset_and_nothing_else():
    from textnnunet.training.augmentation import LabelledRegionShiftTransform, augmentation_preset

    np.random.seed(0)
    data = np.zeros((1, 1, 4, 8, 8), np.float32)
    seg = np.zeros((1, 3, 4, 8, 8), np.float32)
    seg[0, 0, :, :4] = 1  # organ A
    seg[0, 1, :, 4:] = 1  # organ B
    seg[0, 2, :, 6:] = 1  # a part of B (its tumour)
    out = LabelledRegionShiftTransform(sigma=0.5, p_per_sample=1.0)(data=data.copy(), seg=seg.copy())
    shifted = out["data"][0, 0]
    a, b_only, part = shifted[:, :4], shifted[:, 4:6], shifted[:, 6:]
    assert np.ptp(a) == 0 and np.ptp(b_only) == 0 and np.ptp(part) == 0  # one offset per region
    assert a[0, 0, 0] != 0 and b_only[0, 0, 0] != a[0, 0, 0] and part[0, 0, 0] != b_only[0, 0, 0]
    assert np.array_equal(out["seg"], seg)
    untouched = LabelledRegionShiftTransform(sigma=0.5, p_per_sample=0.0)(data=data.copy(), seg=seg.copy())
    assert not untouched["data"].any()
    assert augmentation_preset("nnunet_regions", [8, 16, 16]).p_region_shift > 0
    assert augmentation_preset("nnunet_intensity", [8, 16, 16]).p_region_shift == 0


def test_region_shift_sigma_replaces_the_presets_offset_sd():
    from textnnunet.training.augmentation import augmentation_preset

    assert augmentation_preset("nnunet_regions", [8, 16, 16]).region_shift_sigma == 0.3
    smaller = augmentation_preset("nnunet_regions", [8, 16, 16], region_shift_sigma=0.15)
    assert smaller.region_shift_sigma == 0.15 and smaller.p_region_shift > 0
    with pytest.raises(UserError, match="region_shift_sigma"):
        augmentation_preset("nnunet_regions", [8, 16, 16], region_shift_sigma=-1.0)


@pytest.mark.parametrize("preset,dummy_2d", [("nnunet_regions", False), ("nnunet", False), ("nnunet_regions", True)])
def test_targets_built_after_the_spatial_transform_give_the_same_batches(tmp_path, preset, dummy_2d):
    """Deferred targets (the label map through the spatial transform, the class targets after it; what the trainer
    does) against the targets through the transform channel by channel: the same batches, hierarchy included."""
    from test_hierarchy import KIDNEY_DS, SIDES_DS, _case, _plans

    shape = (10, 14, 14)
    sides = np.zeros(shape, np.int16)
    sides[2:8, 3:9, 1:5], sides[2:8, 3:9, 8:12] = 2, 1
    liver_and_sides = [_case(tmp_path / "a", SIDES_DS, sides, {"left kidney": [1], "right kidney": [2]}),
                       _case(tmp_path / "b", KIDNEY_DS, (sides > 0).astype(np.int16), {"kidney": [1]})]
    patch = (6, 8, 8)
    config = replace(_always(augmentation_preset(preset, patch)), dummy_2d=dummy_2d)

    def batches(defer):
        sampler = PatchSampler(liver_and_sides, _plans(patch), "3d_fullres", batch_size=2,
                               rng=np.random.default_rng(3), initial_patch_size=config.initial_patch_size(patch))
        sampler.defer_targets = defer
        transforms = get_training_transforms(patch, config, targets_from_labels=sampler.targets_for if defer else None)
        with TrainingBatchIterator(sampler, transforms, num_workers=0, seed=11) as iterator:
            return [next(iterator) for _ in range(4)]

    for a, b in zip(batches(False), batches(True)):
        _assert_batches_equal(a, b)
        assert b["target"].shape == (2, 3, *patch)
        for key in ("known_outside_of", "known_where_positive", "known_excluded_by"):
            assert (key in a) == (key in b) and (key not in a or torch.equal(a[key], b[key]))
