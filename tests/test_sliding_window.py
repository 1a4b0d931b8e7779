import itertools

import numpy as np
import pytest
import torch

from textnnunet.inference.sliding_window import (
    compute_steps,
    ensemble_probabilities,
    gaussian_importance_map,
    sliding_window_predict,
)

torch.set_num_threads(1)


def _net(conv: type[torch.nn.Module], c_in: int, k: int, kernel: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return conv(c_in, k, kernel, padding=kernel // 2).eval()


# ---------------------------------------------------------------- gaussian


@pytest.mark.parametrize("patch", [(8, 12, 10), (7, 9), (16,)])
def test_gaussian_max_symmetry_and_no_zeros(patch):
    g = gaussian_importance_map(patch, value_scaling_factor=10)
    assert tuple(g.shape) == patch and g.dtype == torch.float32
    assert g.max().item() == pytest.approx(10.0, rel=1e-6)
    assert (g > 0).all()
    for axis in range(len(patch)):
        assert torch.allclose(g, torch.flip(g, (axis,)))
    # the peak sits in the centre and values fall off towards the border
    centre = tuple(p // 2 for p in patch)
    assert g[centre] > g[(0,) * len(patch)]


def test_gaussian_sigma_matches_patch_fraction():
    g = gaussian_importance_map((33,), sigma_scale=1 / 8, value_scaling_factor=1.0, dtype=torch.float64)
    sigma = 33 / 8
    # sigma = patch / 8: four voxels from the centre the value is exp(-(4 / sigma)^2 / 2) of the peak
    assert g[16 + 4].item() == pytest.approx(np.exp(-0.5 * (4 / sigma) ** 2))


def test_gaussian_zero_underflow_replaced_by_smallest_nonzero():
    g = gaussian_importance_map((64, 64, 64), sigma_scale=1 / 32, dtype=torch.float16, value_scaling_factor=1)
    assert (g > 0).all()
    assert g[0, 0, 0] == g[g > 0].min()


# ---------------------------------------------------------------- steps


def test_compute_steps_hand_examples():
    assert compute_steps((100,), (64,), 0.5) == [[0, 18, 36]]
    assert compute_steps((64, 128), (64, 64), 0.5) == [[0], [0, 32, 64]]
    assert compute_steps((100, 70), (64, 64), 1.0) == [[0, 36], [0, 6]]


@pytest.mark.parametrize("image,patch,step", [(100, 64, 0.5), (257, 64, 0.5), (64, 64, 0.5), (91, 20, 0.33)])
def test_compute_steps_cover_image_with_bounded_stride(image, patch, step):
    (steps,) = compute_steps((image,), (patch,), step)
    assert steps[0] == 0 and steps[-1] == image - patch
    covered = np.zeros(image, bool)
    for s in steps:
        covered[s : s + patch] = True
    assert covered.all()
    # evenly spaced, then rounded to whole voxels
    assert all(0 < b - a <= patch * step + 1 for a, b in zip(steps, steps[1:]))


def test_compute_steps_rejects_image_smaller_than_patch():
    with pytest.raises(ValueError):
        compute_steps((10,), (16,), 0.5)


# ---------------------------------------------------------------- sliding window


def test_single_window_equals_single_forward():
    net = _net(torch.nn.Conv3d, 2, 3, 3)
    image = torch.randn(2, 8, 12, 16)
    result = sliding_window_predict(net, image, (8, 12, 16), num_outputs=3)
    expected = torch.sigmoid(net(image[None]))[0]
    assert result.shape == (3, 8, 12, 16)
    assert torch.allclose(result, expected, atol=1e-6)


@pytest.mark.parametrize("use_gaussian,batch_windows", [(True, 1), (False, 3)])
def test_pointwise_net_tiled_equals_whole_image(use_gaussian, batch_windows):
    net = _net(torch.nn.Conv3d, 1, 2, 1)  # 1x1x1 conv: a window sees everything it needs
    image = torch.randn(1, 20, 27, 33)
    calls = []

    def predict(x):
        calls.append(x.shape[0])
        return net(x)

    result = sliding_window_predict(
        predict, image, (8, 10, 12), num_outputs=2, use_gaussian=use_gaussian, batch_windows=batch_windows
    )
    expected = torch.sigmoid(net(image[None]))[0]
    assert torch.allclose(result, expected, atol=1e-5)
    n_windows = int(np.prod([len(s) for s in compute_steps((20, 27, 33), (8, 10, 12))]))
    assert sum(calls) == n_windows and max(calls) == batch_windows


def test_overlap_is_gaussian_weighted_average():
    # A "network" whose output depends on the window position: each window predicts a constant logit
    # equal to its own index, so the result is the weight-normalised mix of window values.
    image = torch.zeros(1, 24)
    counter = itertools.count()

    def predict(x):
        return torch.full((x.shape[0], 1, *x.shape[2:]), float(next(counter)))

    result = sliding_window_predict(predict, image, (16,), num_outputs=1, step_size=0.5)
    steps = compute_steps((24,), (16,))[0]
    g = gaussian_importance_map((16,))
    num = torch.zeros(24)
    den = torch.zeros(24)
    for idx, s in enumerate(steps):
        num[s : s + 16] += torch.sigmoid(torch.tensor(float(idx))) * g
        den[s : s + 16] += g
    assert torch.allclose(result[0], num / den, atol=1e-6)


def test_mirroring_with_symmetric_net_changes_nothing():
    conv = _net(torch.nn.Conv3d, 1, 2, 3)
    with torch.no_grad():  # make every kernel symmetric under all flips
        w = conv.weight
        conv.weight.copy_((w + w.flip(2) + w.flip(3) + w.flip(4) + w.flip(2, 3) + w.flip(2, 4) + w.flip(3, 4)
                           + w.flip(2, 3, 4)) / 8)
    image = torch.randn(1, 10, 12, 14)
    plain = sliding_window_predict(conv, image, (8, 8, 8), num_outputs=2)
    mirrored = sliding_window_predict(conv, image, (8, 8, 8), num_outputs=2, mirror_axes=(0, 1, 2))
    assert torch.allclose(plain, mirrored, atol=1e-5)


def test_mirroring_with_asymmetric_net_equals_manual_average():
    net = _net(torch.nn.Conv3d, 1, 2, 3, seed=3)
    image = torch.randn(1, 6, 8, 10)
    calls = []

    def predict(x):
        calls.append(1)
        return net(x)

    result = sliding_window_predict(predict, image, (6, 8, 10), num_outputs=2, mirror_axes=(1, 2))
    x = image[None]
    manual = sum(torch.sigmoid(net(x.flip(d)).flip(d)) if d else torch.sigmoid(net(x))
                 for d in [(), (3,), (4,), (3, 4)]) / 4
    plain = torch.sigmoid(net(x))
    assert len(calls) == 4
    assert torch.allclose(result, manual[0], atol=1e-5)
    assert not torch.allclose(result, plain[0], atol=1e-3)


def test_image_smaller_than_patch_is_padded_and_cropped_back():
    net = _net(torch.nn.Conv3d, 1, 1, 3)
    image = torch.randn(1, 5, 9, 16)
    seen = []

    def predict(x):
        seen.append(tuple(x.shape))
        return net(x)

    result = sliding_window_predict(predict, image, (8, 12, 16), num_outputs=1)
    assert seen == [(1, 1, 8, 12, 16)]
    assert result.shape == (1, 5, 9, 16)
    # padding centred like nnU-Net (1 below / 2 above in z, 1 below / 2 above in y), with the image minimum
    padded = torch.nn.functional.pad(image, (0, 0, 1, 2, 1, 2), value=float(image.min()))
    expected = torch.sigmoid(net(padded[None]))[0][:, 1:6, 1:10, :]
    assert torch.allclose(result, expected, atol=1e-6)


def test_2d_configuration_predicts_slice_by_slice():
    net = _net(torch.nn.Conv2d, 2, 3, 3)
    image = torch.randn(2, 4, 20, 9)  # x smaller than the patch -> padded
    seen = []

    def predict(x):
        seen.append(tuple(x.shape))
        return net(x)

    result = sliding_window_predict(predict, image, (20, 12), num_outputs=3, patch_dims=2, mirror_axes=(1,))
    assert result.shape == (3, 4, 20, 9)
    assert set(seen) == {(1, 2, 20, 12)} and len(seen) == 4 * 2  # 4 slices x 2 mirrors
    for z in range(4):
        padded = torch.stack([torch.nn.functional.pad(image[c, z], (1, 2), value=float(image[c].min()))
                              for c in range(2)])[None]
        expected = (torch.sigmoid(net(padded)) + torch.sigmoid(net(padded.flip(3))).flip(3)) / 2
        assert torch.allclose(result[:, z], expected[0, :, :, 1:10], atol=1e-5)


def test_wrong_network_output_shape_is_reported():
    with pytest.raises(ValueError, match="expected a tensor of shape"):
        sliding_window_predict(lambda x: x, torch.zeros(1, 8, 8), (8, 8), num_outputs=2)


def test_predict_patch_runs_in_inference_mode_and_output_is_usable():
    modes = []

    def predict(x):
        modes.append(torch.is_inference_mode_enabled())
        return x[:, :1]

    out = sliding_window_predict(predict, torch.zeros(1, 8, 8), (8, 8), num_outputs=1)
    assert modes == [True]
    assert torch.allclose(out * 2, torch.ones_like(out))  # ordinary tensor, sigmoid(0) = 0.5


# ---------------------------------------------------------------- ensembling


def test_ensemble_mean_and_weights():
    a, b = torch.full((2, 3), 0.2), torch.full((2, 3), 0.8)
    assert torch.allclose(ensemble_probabilities([a, b]), torch.full((2, 3), 0.5))
    assert torch.allclose(ensemble_probabilities([a, b], weights=[3, 1]), torch.full((2, 3), 0.35))
    out = ensemble_probabilities([a.numpy(), b.numpy().astype(np.float16)])
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, 0.5, atol=1e-3)


def test_ensemble_rejects_bad_input():
    with pytest.raises(ValueError):
        ensemble_probabilities([])
    with pytest.raises(ValueError):
        ensemble_probabilities([torch.zeros(2), torch.zeros(3)])
    with pytest.raises(ValueError):
        ensemble_probabilities([torch.zeros(2)], weights=[1, 2])


def test_padding_beyond_the_image_is_each_channels_minimum_not_zero():
    from textnnunet.inference.sliding_window import pad_with_channel_minimum

    image = torch.randn(2, 5, 6, 7)
    image[1] += 10.0
    padded, slicer = pad_with_channel_minimum(image, (8, 8, 8))
    assert tuple(padded.shape) == (2, 8, 8, 8) and torch.equal(padded[slicer], image)
    outside = torch.ones(padded.shape[1:], dtype=torch.bool)
    outside[slicer[1:]] = False
    for c in range(2):
        assert torch.all(padded[c][outside] == image[c].min())
    same, _ = pad_with_channel_minimum(image, (4, 4, 4))
    assert torch.equal(same, image)
