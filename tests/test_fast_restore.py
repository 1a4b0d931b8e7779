"""The fast resampling/export path equals the skimage/SimpleITK one it replaced (issue 14, item 3).

- resizing axis by axis with skimage's own 1D maps equals skimage's `resize` up to float rounding;
- `restore_masks` (resample + threshold slab by slab, uint8) gives the masks of the old path (skimage resize of
  all K maps, uncrop, SimpleITK reorientation, threshold): identical here, Dice >= 0.999 required;
- numpy reorientation equals `sitk.DICOMOrient` voxel for voxel, with the same geometry.
"""
import itertools

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter

from textnnunet.imageio.sitk_io import ImageGeometry, _reorient, array_to_sitk, geometry_of, orientation_code
from textnnunet.preprocessing import resampling
from textnnunet.preprocessing.preprocessor import restore_masks, restore_to_original
from textnnunet.preprocessing.resampling import (
    _resample_volume,
    _resize_image,
    resample_and_threshold,
    resample_volume,
    separate_z_axis,
)


def _legacy_restore(probs, props):
    """The path before issue 14: skimage per channel, uncrop, SimpleITK DICOMOrient per channel, float32."""
    axis = separate_z_axis(props["spacing_target"], props["spacing_original"])
    cropped = np.stack([_resample_volume(p.astype(np.float32), props["shape_after_crop"], axis, 1, 0, _resize_image)
                        for p in probs]).astype(np.float32)
    full = np.zeros((len(probs), *props["shape_original"]), np.float32)
    full[(slice(None), *[slice(lo, hi) for lo, hi in props["bbox_crop"]])] = cropped
    canonical = ImageGeometry(tuple(props["spacing_original"]), tuple(props["origin"]), tuple(props["direction"]),
                              tuple(props["shape_original"]))
    original = ImageGeometry.from_json(props["original_geometry"])
    code = orientation_code(original.direction)
    if code == orientation_code(canonical.direction):
        return full
    return np.stack([sitk.GetArrayFromImage(sitk.DICOMOrient(array_to_sitk(c, canonical), code)) for c in full])


def _dice(a, b):
    a, b = a > 0, b > 0
    return 1.0 if a.sum() + b.sum() == 0 else 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def _smooth_probs(rng, k, shape):
    probs = np.stack([gaussian_filter(rng.random(shape), 1.5) for _ in range(k)])
    lo, hi = probs.min(axis=(1, 2, 3), keepdims=True), probs.max(axis=(1, 2, 3), keepdims=True)
    return ((probs - lo) / (hi - lo)).astype(np.float32)


@pytest.mark.parametrize("order", [0, 1, 3])
def test_axis_by_axis_resize_equals_skimage(order):
    rng = np.random.default_rng(order)
    for trial in range(12):
        shape = tuple(int(s) for s in rng.integers(3, 14, 3))
        new = tuple(int(s) for s in rng.integers(2, 24, 3))
        axis = [None, 0, 1, 2][trial % 4]
        vol = rng.normal(size=shape).astype(np.float32)
        expected = _resample_volume(vol, new, axis, order, trial % 2, _resize_image).astype(np.float32)
        got = resample_volume(vol, new, axis, order, trial % 2)
        assert got.shape == new and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, atol=2e-6, rtol=0)


def test_resample_and_threshold_in_slabs_equals_thresholded_resize(monkeypatch):
    monkeypatch.setattr(resampling, "CHUNK_VOXELS", 300)  # many slabs, including ragged last ones
    rng = np.random.default_rng(3)
    for old_spacing in ([1.0, 1.0, 1.0], [5.0, 1.0, 1.0], [1.0, 0.8, 6.0]):
        prob = _smooth_probs(rng, 1, (6, 9, 11))[0]
        new_shape = (17, 20, 13)
        new_spacing = [o * s / n for o, s, n in zip(old_spacing, prob.shape, new_shape)]
        axis = separate_z_axis(old_spacing, new_spacing)
        expected = _resample_volume(prob, new_shape, axis, 1, 0, _resize_image) > 0.5
        got = resample_and_threshold(prob, new_shape, old_spacing, new_spacing, 0.5)
        assert got.dtype == np.uint8
        assert _dice(got, expected) >= 0.999 and np.sum(got != expected) <= 2


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), (-1, 0, 0, 0, -1, 0, 0, 0, 1),
                                       (0, 0, 1, 1, 0, 0, 0, -1, 0)])
@pytest.mark.parametrize("spacing_original", [(1.5, 0.8, 0.8), (5.0, 0.7, 0.7)])
def test_restore_masks_equal_the_old_path(direction, spacing_original):
    rng = np.random.default_rng(7)
    shape_original = (20, 26, 24)  # canonical grid
    bbox = [[1, 19], [2, 25], [0, 22]]
    shape_after_crop = [hi - lo for lo, hi in bbox]
    spacing_target = [4.5, 4.6, 4.6]
    shape_after_resample = [max(1, round(s * o / t)) for s, o, t in zip(shape_after_crop, spacing_original,
                                                                         spacing_target)]
    canonical = ImageGeometry(tuple(spacing_original), (10.0, -5.0, 3.0), (1, 0, 0, 0, 1, 0, 0, 0, 1),
                              shape_original)
    # The original geometry is the canonical one reoriented to the input's own direction.
    code = orientation_code(direction)
    _, original = _reorient(np.zeros((1, *shape_original), np.uint8), canonical, code)
    props = {"shape_after_resample": shape_after_resample, "shape_after_crop": shape_after_crop,
             "spacing_target": spacing_target, "spacing_original": list(spacing_original), "bbox_crop": bbox,
             "shape_original": list(shape_original), "origin": list(canonical.origin),
             "direction": list(canonical.direction), "original_geometry": original.to_json()}
    probs = _smooth_probs(rng, 3, shape_after_resample)
    old = _legacy_restore(probs, props)
    masks = restore_masks(probs, props, 0.5)
    assert len(masks) == 3
    for mask, reference in zip(masks, old):
        assert mask.dtype == np.uint8 and mask.shape == tuple(original.shape)
        assert _dice(mask, reference > 0.5) >= 0.999
        assert np.sum(mask != (reference > 0.5)) <= 2
    np.testing.assert_allclose(restore_to_original(probs, props), old, atol=2e-6)


def _signed_permutations():
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            d = np.zeros((3, 3))
            for col, (row, sign) in enumerate(zip(perm, signs)):
                d[row, col] = sign
            yield d


def test_numpy_reorientation_equals_dicomorient():
    rng = np.random.default_rng(0)
    angle = np.deg2rad(12)
    oblique = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    for d in [*_signed_permutations(), oblique @ np.diag([1, -1, 1])]:
        geometry = ImageGeometry((2.0, 1.5, 0.7), (10.0, -3.0, 5.5), tuple(d.reshape(-1)), (3, 4, 5))
        array = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
        for code in ("LPS", "RAS", "SAL"):
            got, got_geometry = _reorient(array, geometry, code)
            images = [sitk.DICOMOrient(array_to_sitk(np.ascontiguousarray(c), geometry), code) for c in array]
            np.testing.assert_array_equal(got, np.stack([sitk.GetArrayFromImage(i) for i in images]))
            expected = geometry_of(images[0])
            assert got_geometry.shape == expected.shape
            assert got_geometry.matches(expected, tol=1e-9)


def test_restore_masks_takes_one_threshold_per_class():
    """postprocessing.json's per-class thresholds reach the export: channel k is cut at thresholds[k]."""
    props = {"shape_after_resample": [6, 8, 8], "shape_after_crop": [9, 12, 10],
             "bbox_crop": [[1, 10], [0, 12], [2, 12]], "shape_original": [10, 12, 14],
             "spacing_target": [3.0, 3.0, 3.0], "spacing_original": [2.0, 2.0, 2.4]}
    probs = _smooth_probs(np.random.default_rng(3), 2, (6, 8, 8))
    masks = restore_masks(probs, props, [0.3, 0.7])
    for k, threshold in enumerate((0.3, 0.7)):
        np.testing.assert_array_equal(masks[k], restore_masks(probs[k:k + 1], props, threshold)[0])
        assert not np.array_equal(masks[k], restore_masks(probs[k:k + 1], props, 0.5)[0])
    with pytest.raises(ValueError, match="2 probability channels but 3 thresholds"):
        restore_masks(probs, props, [0.5] * 3)
