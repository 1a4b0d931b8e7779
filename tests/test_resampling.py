"""Resampling geometry: shapes, round trips, label values, and the separate-z path for anisotropic data."""
import numpy as np
import pytest

from textnnunet.preprocessing.resampling import (
    compute_new_shape,
    resample_image,
    resample_label_map,
    resample_probabilities,
    separate_z_axis,
)


def _blob(shape, spacing=(1.0, 1.0, 1.0), sigma=5.0, center=None):
    grids = np.meshgrid(*[np.arange(s) * sp for s, sp in zip(shape, spacing)], indexing="ij")
    center = center or [s * sp / 2 for s, sp in zip(shape, spacing)]
    r2 = sum((g - c) ** 2 for g, c in zip(grids, center))
    return np.exp(-r2 / (2 * sigma**2)).astype(np.float32)


def _spheres(shape, spacing):
    grids = np.meshgrid(*[np.arange(s) * sp for s, sp in zip(shape, spacing)], indexing="ij")
    center = [s * sp / 2 for s, sp in zip(shape, spacing)]
    r = np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, center)))
    seg = np.zeros(shape, dtype=np.int16)
    seg[r < 9] = 1
    seg[r < 4.5] = 2
    return seg


def _dice(a, b):
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_compute_new_shape():
    assert compute_new_shape((10, 20, 30), (2.0, 1.0, 1.0), (1.0, 2.0, 0.5)) == (20, 10, 60)
    assert compute_new_shape((5, 7, 9), (1.0, 1.0, 1.0), (1.0, 1.0, 1.0)) == (5, 7, 9)
    assert compute_new_shape((3, 3, 3), (1.0, 1.0, 1.0), (10.0, 10.0, 10.0)) == (1, 1, 1)  # never 0
    with pytest.raises(ValueError):
        compute_new_shape((3, 3), (1.0, 1.0, 1.0), (1.0, 1.0, 1.0))


def test_separate_z_axis_rule():
    assert separate_z_axis((5.0, 1.0, 1.0), (1.0, 1.0, 1.0)) == 0
    assert separate_z_axis((1.0, 1.0, 1.0), (1.0, 1.0, 4.0)) == 2  # new spacing decides when old is isotropic
    assert separate_z_axis((2.0, 1.0, 1.0), (1.0, 1.0, 1.0)) is None  # ratio 2 <= 3
    assert separate_z_axis((0.24, 1.25, 1.25), (1.0, 1.0, 1.0)) is None  # two coarse axes: no single one
    assert separate_z_axis((3.0, 1.0, 1.0), (1.0, 1.0, 1.0)) is None  # threshold is strict (> 3)


def test_smooth_image_down_and_up_stays_close():
    img = _blob((20, 32, 32))[None]
    down = resample_image(img, (1.0, 1.0, 1.0), (2.0, 2.0, 2.0))
    assert down.shape == (1, 10, 16, 16) and down.dtype == np.float32
    up = resample_image(down, (2.0, 2.0, 2.0), (1.0, 1.0, 1.0), new_shape=(20, 32, 32))
    assert up.shape == img.shape
    assert np.abs(up - img).max() < 0.05
    assert abs(up.max() - 1.0) < 0.05  # peak survives


def test_multichannel_and_identity():
    img = np.stack([_blob((6, 8, 8)), 2 * _blob((6, 8, 8))])
    same = resample_image(img, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0))
    np.testing.assert_array_equal(same, img)
    half = resample_image(img, (1.0, 1.0, 1.0), (1.0, 2.0, 2.0))
    np.testing.assert_allclose(half[1], 2 * half[0], rtol=1e-4, atol=1e-5)


def test_anisotropic_uses_separate_z_with_nearest_along_z():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(1, 6, 20, 20)).astype(np.float32)
    out = resample_image(img, (5.0, 1.0, 1.0), (2.5, 0.5, 0.5))
    assert out.shape == (1, 12, 40, 40)
    # In-plane cubic only: each output slice is the in-plane resampling of exactly one input slice (order_z=0).
    in_plane = resample_image(img, (5.0, 1.0, 1.0), (5.0, 0.5, 0.5))
    assert in_plane.shape == (1, 6, 40, 40)
    for z in range(12):
        np.testing.assert_allclose(out[0, z], in_plane[0, z // 2], atol=1e-5)
    # With a threshold above the anisotropy, the joint cubic path mixes neighbouring slices instead.
    joint = resample_image(img, (5.0, 1.0, 1.0), (2.5, 0.5, 0.5), separate_z_threshold=10.0)
    assert joint.shape == out.shape
    assert not np.allclose(joint[0, 1], in_plane[0, 0], atol=1e-3)


def test_label_map_keeps_values_and_regions():
    seg = _spheres((24, 24, 24), (1.0, 1.0, 1.0))
    down = resample_label_map(seg, (1.0, 1.0, 1.0), (2.0, 2.0, 2.0))
    assert down.shape == (12, 12, 12) and down.dtype == np.int16
    assert set(np.unique(down)) == {0, 1, 2}
    back = resample_label_map(down, (2.0, 2.0, 2.0), (1.0, 1.0, 1.0), new_shape=seg.shape)
    assert set(np.unique(back)) <= {0, 1, 2}
    assert _dice(back == 1, seg == 1) > 0.8
    assert _dice(back == 2, seg == 2) > 0.7


def test_label_map_no_intermediate_values():
    # Linear interpolation of raw values between 0 and 2 would create 1s; the per-label argmax must not.
    seg = np.zeros((4, 8, 8), dtype=np.int16)
    seg[:, :, 4:] = 2
    out = resample_label_map(seg, (1.0, 1.0, 1.0), (1.0, 0.3, 0.3))
    assert set(np.unique(out)) == {0, 2}


def test_label_map_anisotropic_shape_and_values():
    seg = _spheres((6, 24, 24), (4.0, 1.0, 1.0))
    out = resample_label_map(seg, (4.0, 1.0, 1.0), (2.0, 2.0, 2.0))
    assert out.shape == (12, 12, 12)
    assert set(np.unique(out)) <= {0, 1, 2}
    # Nearest along z: every output slice matches the in-plane resampling of one input slice.
    in_plane = resample_label_map(seg, (4.0, 1.0, 1.0), (4.0, 2.0, 2.0))
    for z in range(12):
        np.testing.assert_array_equal(out[z], in_plane[z // 2])


def test_resample_probabilities_shape_dtype_range():
    probs = np.stack([_blob((10, 16, 16)), 1 - _blob((10, 16, 16))]).astype(np.float64)
    out = resample_probabilities(probs, (7, 25, 31), (1.0, 1.0, 1.0), (1.4, 0.64, 0.52))
    assert out.shape == (2, 7, 25, 31) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_allclose(out[0] + out[1], 1.0, atol=1e-5)  # order 1 is linear: sums are kept


def test_anti_alias_lowers_the_noise_a_coarser_grid_keeps_and_is_a_no_op_without_coarsening():
    from textnnunet.preprocessing.resampling import anti_alias, anti_alias_sigmas

    assert anti_alias_sigmas([1.0, 0.8, 0.8], [1.0, 4.0, 0.4]) == (0.0, 2.0, 0.0)
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 35.0, size=(1, 20, 100, 100)).astype(np.float32)
    assert anti_alias(noise, [2.0, 2.0, 2.0], [2.0, 2.0, 1.0]) is noise  # nothing coarsened: untouched
    old, new = [0.8, 0.8, 0.8], [4.0, 4.0, 4.0]
    shape = [int(round(s * o / n)) for s, o, n in zip(noise.shape[1:], old, new)]
    plain = resample_image(noise, old, new, shape)
    smoothed = resample_image(anti_alias(noise, old, new), old, new, shape)
    assert plain.std() > 25.0  # point-sampled: the coarse grid keeps the fine grid's noise
    assert smoothed.std() < 0.25 * plain.std()
    # A constant stays constant (no bias at the borders).
    flat = np.full((1, 10, 30, 30), 40.0, np.float32)
    assert np.allclose(anti_alias(flat, old, new), 40.0)


def test_preprocessing_anti_aliases_only_when_the_plan_says_so(tmp_path):
    from textnnunet.preprocessing.preprocessor import _resampling_settings

    assert _resampling_settings({"resampling": {"image_order": 3}})["anti_aliasing"] is False  # older plans
    assert _resampling_settings({"resampling": {"anti_aliasing": True}})["anti_aliasing"] is True


def test_export_of_ideal_probabilities_errs_inwards_not_outwards_on_a_convex_organ():
    """Issue 10's matrix: the liver's boundary errs outwards by up to a network voxel. The export is not the cause:
    a convex organ's exact partial-volume probabilities on a 4x coarser grid, resampled back (linear in-plane, as
    inference does) and thresholded at 0.5, lose voxels at the boundary rather than gain them."""
    from textnnunet.preprocessing.resampling import resample_and_threshold

    f, fine_shape = 4, (48, 160, 160)  # fine spacing (2, 1, 1) mm, coarse (8, 4, 4) mm
    z, y, x = (np.indices(fine_shape).astype(np.float32) + 0.5) * np.array([2.0, 1.0, 1.0])[:, None, None, None]
    for centre, radii in (((48, 80, 80), (36, 50, 40)), ((60, 70, 90), (40, 30, 55))):
        organ = sum(((c - m) / r) ** 2 for c, m, r in zip((z, y, x), centre, radii)) <= 1
        coarse = tuple(s // f for s in fine_shape)
        prob = organ.reshape(coarse[0], f, coarse[1], f, coarse[2], f).mean(axis=(1, 3, 5)).astype(np.float32)
        mask = resample_and_threshold(prob, fine_shape, (8.0, 4.0, 4.0), (2.0, 1.0, 1.0), 0.5) > 0
        fp, fn = int((mask & ~organ).sum()), int((~mask & organ).sum())
        assert fp < fn, (fp, fn)
        assert fp + fn < 0.05 * organ.sum()  # and the round trip is close
