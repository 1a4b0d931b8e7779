"""nnU-Net-style resampling of images, label maps and probability maps (skimage based).

Rules (nnU-Net v2's default resampling):
- images: spline order 3; label maps: each label's indicator resampled with order 1, then per-voxel argmax;
  probabilities (inference export): order 1 per channel.
- anisotropic data (max/min spacing > threshold, with one unique coarse axis, judged on the old spacing
  first, else the new one): resample each slice in-plane with the order above, then along the coarse axis
  with `order_z` (0 = nearest), so thick slices are not smeared into each other by a cubic spline.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from batchgenerators.augmentations.utils import resize_segmentation
from skimage.transform import resize

DEFAULT_SEPARATE_Z_THRESHOLD = 3.0


def compute_new_shape(
    old_shape: Sequence[int], old_spacing: Sequence[float], new_spacing: Sequence[float]
) -> tuple[int, ...]:
    """Shape after resampling from `old_spacing` to `new_spacing`; the physical extent is kept (at least 1 voxel)."""
    if not len(old_shape) == len(old_spacing) == len(new_spacing):
        raise ValueError(f"shape {old_shape}, spacing {old_spacing} and new spacing {new_spacing} differ in length")
    return tuple(max(1, int(round(s * o / n))) for s, o, n in zip(old_shape, old_spacing, new_spacing))


def _coarse_axis(spacing: Sequence[float], threshold: float) -> int | None:
    """The single axis whose spacing is coarser than the others by more than `threshold`, else None."""
    spacing = np.asarray(spacing, dtype=float)
    if np.max(spacing) / np.min(spacing) <= threshold:
        return None
    candidates = np.flatnonzero(spacing == spacing.max())
    # Two equally coarse axes (e.g. (0.24, 1.25, 1.25)) have no single slice direction: resample jointly.
    return int(candidates[0]) if len(candidates) == 1 else None


def separate_z_axis(
    old_spacing: Sequence[float], new_spacing: Sequence[float], threshold: float = DEFAULT_SEPARATE_Z_THRESHOLD
) -> int | None:
    """The axis to resample on its own, or None. The old spacing decides first (it is what the data looks like)."""
    axis = _coarse_axis(old_spacing, threshold)
    return axis if axis is not None else _coarse_axis(new_spacing, threshold)


def _resize_image(vol: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    return resize(vol, tuple(shape), order=order, mode="edge", anti_aliasing=False)


def _resize_labels(vol: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    # batchgenerators resamples each label's indicator and takes the argmax, so no in-between label appears.
    return resize_segmentation(vol, tuple(shape), order=order)


def _resample_volume(
    vol: np.ndarray,
    new_shape: Sequence[int],
    axis: int | None,
    order: int,
    order_z: int,
    resize_fn: Callable[[np.ndarray, Sequence[int], int], np.ndarray],
) -> np.ndarray:
    """Resample one 3D volume, separately along `axis` when it is not None."""
    new_shape = tuple(int(s) for s in new_shape)
    if tuple(vol.shape) == new_shape:
        return vol
    if axis is None:
        return resize_fn(vol, new_shape, order)
    moved = np.moveaxis(vol, axis, 0)
    target = (new_shape[axis], *[s for i, s in enumerate(new_shape) if i != axis])
    in_plane = np.stack([resize_fn(slc, target[1:], order) for slc in moved])
    if in_plane.shape[0] != target[0]:
        # Only the coarse axis changes here, so the other coordinates land on grid points and stay exact.
        in_plane = resize_fn(in_plane, target, order_z)
    return np.moveaxis(in_plane, 0, axis)


def _target_shape(
    spatial_shape: Sequence[int], old_spacing: Sequence[float], new_spacing: Sequence[float],
    new_shape: Sequence[int] | None,
) -> tuple[int, ...]:
    if new_shape is None:
        return compute_new_shape(spatial_shape, old_spacing, new_spacing)
    if len(new_shape) != len(spatial_shape):
        raise ValueError(f"new shape {new_shape} does not match the dimensionality of {spatial_shape}")
    return tuple(int(s) for s in new_shape)


def resample_image(
    data: np.ndarray,
    old_spacing: Sequence[float],
    new_spacing: Sequence[float],
    new_shape: Sequence[int] | None = None,
    order: int = 3,
    order_z: int = 0,
    separate_z_threshold: float = DEFAULT_SEPARATE_Z_THRESHOLD,
) -> np.ndarray:
    """Resample an image (c, z, y, x) to `new_spacing` (or exactly to `new_shape` if given); float32 out."""
    if data.ndim != 4:
        raise ValueError(f"data must be (c, z, y, x), got shape {data.shape}")
    shape = _target_shape(data.shape[1:], old_spacing, new_spacing, new_shape)
    axis = separate_z_axis(old_spacing, new_spacing, separate_z_threshold)
    out = [
        _resample_volume(c.astype(np.float32, copy=False), shape, axis, order, order_z, _resize_image) for c in data
    ]
    return np.stack(out).astype(np.float32, copy=False)


def resample_label_map(
    seg: np.ndarray,
    old_spacing: Sequence[float],
    new_spacing: Sequence[float],
    new_shape: Sequence[int] | None = None,
    order: int = 1,
    order_z: int = 0,
    separate_z_threshold: float = DEFAULT_SEPARATE_Z_THRESHOLD,
) -> np.ndarray:
    """Resample an integer label map (z, y, x); only label values present in `seg` can appear. Dtype kept."""
    if seg.ndim != 3:
        raise ValueError(f"seg must be (z, y, x), got shape {seg.shape}")
    shape = _target_shape(seg.shape, old_spacing, new_spacing, new_shape)
    axis = separate_z_axis(old_spacing, new_spacing, separate_z_threshold)
    return _resample_volume(seg, shape, axis, order, order_z, _resize_labels).astype(seg.dtype, copy=False)


def resample_probabilities(
    probs: np.ndarray,
    new_shape: Sequence[int],
    old_spacing: Sequence[float],
    new_spacing: Sequence[float],
    order: int = 1,
    order_z: int = 0,
    separate_z_threshold: float = DEFAULT_SEPARATE_Z_THRESHOLD,
) -> np.ndarray:
    """Resample per-class probability maps (k, z, y, x) to `new_shape` (inference export); float32 out.

    The spacings only decide whether the coarse axis is handled separately; the shape is given exactly
    because it must match the cropped original image voxel for voxel.
    """
    return resample_image(probs, old_spacing, new_spacing, new_shape, order, order_z, separate_z_threshold)
