"""nnU-Net-style resampling of images, label maps and probability maps (skimage's resize, computed axis by axis).

Rules (nnU-Net v2's default resampling):
- images: spline order 3; label maps: each label's indicator resampled with order 1, then per-voxel argmax;
  probabilities (inference export): order 1 per channel.
- anisotropic data (max/min spacing > threshold, with one unique coarse axis, judged on the old spacing
  first, else the new one): resample each slice in-plane with the order above, then along the coarse axis
  with `order_z` (0 = nearest), so thick slices are not smeared into each other by a cubic spline.

Images and probability maps are resampled axis by axis with the exact 1D maps that skimage's
`resize(order, mode="edge", anti_aliasing=False)` applies along each axis (scipy's zoom is a tensor product of
per-axis linear maps: edge padding, spline prefilter and interpolation weights all act per axis). The results
equal skimage's up to floating-point rounding, without its float64 copy of the padded input and its prefilter
over every input voxel: a clinical CT (458 x 379 x 224) goes to a 4.5 mm plan in a fraction of a second.
Probability maps go back to the original grid one class at a time, and `resample_and_threshold` writes a
class's mask slab by slab, so no full-resolution float map of all classes is ever held.
"""
from __future__ import annotations

import functools
import itertools
from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

# skimage and batchgenerators are imported where used: prediction rarely needs them and they cost start-up time.

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
    from skimage.transform import resize

    return resize(vol, tuple(shape), order=order, mode="edge", anti_aliasing=False)


def _resize_labels(vol: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    # batchgenerators resamples each label's indicator and takes the argmax, so no in-between label appears.
    from batchgenerators.augmentations.utils import resize_segmentation

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


# ------------------------------------------------------------------------------------- axis by axis
# A spline of order >= 2 has a dense 1D map (its prefilter reaches every input voxel of the line): applying it
# costs n_in multiply-adds per output voxel of the pass, as matrix products (BLAS). skimage instead prefilters
# the padded input (about 30 operations per voxel) and evaluates (order + 1)^3 taps per output voxel in scalar
# loops. Measured on 2 cores, the matrix products were 2-15x faster up to 16x skimage's operation count (every
# case tried, from 4.5 mm downsampling of a 458 x 379 x 224 CT to 3x upsampling); beyond it skimage is used.
DENSE_OPERATIONS_VS_SKIMAGE = 16
CHUNK_VOXELS = 1 << 22  # voxels per slab of the last pass (16 MB of float32)


@functools.lru_cache(maxsize=256)
def axis_operator(n_in: int, n_out: int, order: int) -> np.ndarray:
    """The (n_out, n_in) float64 map skimage's `resize(order, mode="edge", anti_aliasing=False)` applies along
    one axis: column j is the 1D resize of the j-th unit vector (scipy's zoom, grid_mode, 'nearest' boundary)."""
    if n_in < 1 or n_out < 1:
        raise ValueError(f"axis sizes must be positive, got {n_in} -> {n_out}")
    eye = np.eye(n_in)
    op = np.empty((n_out, n_in))
    for j in range(n_in):
        op[:, j] = ndimage.zoom(eye[j], n_out / n_in, order=order, mode="nearest", grid_mode=True)
    op.flags.writeable = False
    return op


@functools.lru_cache(maxsize=256)
def _band(n_in: int, n_out: int, order: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(columns (n_out, T), weights (n_out, T)) when each row of the axis map has its nonzeros within T <= 2
    neighbouring columns (orders 0 and 1), else None (dense)."""
    if order > 1:
        return None
    op = axis_operator(n_in, n_out, order)
    nonzero = op != 0
    first = np.argmax(nonzero, axis=1)
    last = n_in - 1 - np.argmax(nonzero[:, ::-1], axis=1)
    taps = int(np.max(last - first)) + 1
    if taps > 2:
        return None
    first = np.minimum(first, n_in - taps)
    columns = first[:, None] + np.arange(taps)
    weights = np.take_along_axis(op, columns, axis=1)
    columns.flags.writeable = weights.flags.writeable = False
    return columns, weights


def _taps(n_in: int, n_out: int, order: int) -> int:
    band = _band(n_in, n_out, order)
    return band[0].shape[1] if band is not None else n_in


def _apply_axis(vol: np.ndarray, axis: int, n_out: int, order: int, dtype, rows: slice = slice(None),
                store_dtype=None) -> np.ndarray:
    """`vol` resized along `axis` to `n_out` (output rows `rows` of that axis only), computed in `dtype` and, for
    dense maps, stored in `store_dtype` (default `dtype`)."""
    n_in = vol.shape[axis]
    band = _band(n_in, n_out, order)
    if band is not None:
        columns, weights = band[0][rows], band[1][rows].astype(dtype)
        shape = [1] * vol.ndim
        shape[axis] = len(columns)
        out = np.take(vol, columns[:, 0], axis=axis).astype(dtype, copy=False)
        if weights.shape[1] == 1 and np.all(weights == 1):
            return out
        out *= weights[:, 0].reshape(shape)
        for t in range(1, weights.shape[1]):
            term = np.take(vol, columns[:, t], axis=axis).astype(dtype, copy=False)
            term *= weights[:, t].reshape(shape)
            out += term
        return out
    op = axis_operator(n_in, n_out, order)[rows].astype(dtype)
    out_shape = list(vol.shape)
    out_shape[axis] = op.shape[0]
    out = np.empty(out_shape, dtype=store_dtype or dtype)
    # One matrix product per slab, with the resized axis first or last (plain GEMMs); the slabs keep the
    # converted copy of the input small.
    if axis == vol.ndim - 1:
        flat_in, flat_out = vol.reshape(-1, n_in), out.reshape(-1, op.shape[0])
        step = max(1, CHUNK_VOXELS // n_in)
        for start in range(0, flat_in.shape[0], step):
            flat_out[start : start + step] = flat_in[start : start + step].astype(dtype, copy=False) @ op.T
    elif axis == 0:
        flat_in, flat_out = vol.reshape(n_in, -1), out.reshape(op.shape[0], -1)
        step = max(1, CHUNK_VOXELS // n_in)
        for start in range(0, flat_in.shape[1], step):
            flat_out[:, start : start + step] = op @ flat_in[:, start : start + step].astype(dtype, copy=False)
    else:
        moved = np.moveaxis(vol, axis, -1)
        np.moveaxis(out, axis, -1)[...] = _apply_axis(np.ascontiguousarray(moved), moved.ndim - 1, n_out, order,
                                                      dtype, rows, store_dtype)
    return out


# Relative cost of a dense pass along a middle axis (a transposed copy of the input first).
_MIDDLE_AXIS_COST = 2


def _pass_order(shape: Sequence[int], new_shape: Sequence[int], orders: Sequence[int],
                first: Sequence[int] = ()) -> tuple[list[int], int]:
    """The changed axes in the cheapest order (axes in `first` before the rest) and its multiply-adds."""
    changed = [a for a in range(len(shape)) if shape[a] != new_shape[a]]
    best, best_cost = [], 0
    for seq in itertools.permutations(changed):
        if any(a not in first for a in seq[: len([f for f in first if f in changed])]):
            continue
        current, cost = list(shape), 0
        for a in seq:
            taps = _taps(int(shape[a]), int(new_shape[a]), int(orders[a]))
            current[a] = int(new_shape[a])
            middle = 0 < a < len(shape) - 1 and taps > 2
            cost += int(np.prod(current)) * taps * (_MIDDLE_AXIS_COST if middle else 1)
        if not best or cost < best_cost:
            best, best_cost = list(seq), cost
    return best, best_cost


def _resample_volume_by_axes(
    vol: np.ndarray,
    new_shape: Sequence[int],
    axis: int | None,
    order: int,
    order_z: int,
    dtype=np.float32,
    sink: Callable[[tuple, np.ndarray], None] | None = None,
) -> np.ndarray | bool | None:
    """`_resample_volume(..., _resize_image)` computed axis by axis (equal up to rounding), or None when the
    dense maps would cost more than skimage (the caller then uses skimage).

    With `sink`, the last pass is computed in slabs along its axis and each slab (clipped like skimage's output)
    is handed to `sink(index, slab)` instead of being assembled, and True is returned.
    """
    new_shape = tuple(int(s) for s in new_shape)
    orders = [order_z if a == axis else order for a in range(vol.ndim)]
    in_plane = [a for a in range(vol.ndim) if a != axis] if axis is not None else []
    sequence, cost = _pass_order(vol.shape, new_shape, orders, in_plane)
    skimage_cost = 30 * vol.size + (max(orders) + 1) ** 3 * int(np.prod(new_shape))
    if max(orders) > 1 and cost > DENSE_OPERATIONS_VS_SKIMAGE * skimage_cost:
        return None
    # skimage clips each resize call's output to its input's range: per slice for the in-plane step of the
    # separate path (one call per slice), else the whole volume. Only splines (order >= 2) can overshoot.
    low, high = vol.min(), vol.max()
    current = vol
    for i, a in enumerate(sequence):
        last = i == len(sequence) - 1
        if last and sink is not None:
            break
        # The last pass is stored in float32, the type of the result (intermediate passes keep `dtype`).
        current = _apply_axis(current, a, new_shape[a], orders[a], dtype, store_dtype=np.float32 if last else None)
        if axis is not None and order > 1 and (last or sequence[i + 1] == axis) and a != axis:
            others = tuple(b for b in range(vol.ndim) if b != axis)
            np.clip(current, vol.min(axis=others, keepdims=True), vol.max(axis=others, keepdims=True), out=current)
    if sink is None:
        if current is vol:
            return vol
        if max(orders) > 1:
            np.clip(current, low, high, out=current)
        return current
    if not sequence:
        sink(tuple(slice(None) for _ in new_shape), vol)
        return True
    a = sequence[-1]
    step = max(1, CHUNK_VOXELS // max(1, current.size // current.shape[a]))
    for start in range(0, new_shape[a], step):
        rows = slice(start, min(start + step, new_shape[a]))
        slab = _apply_axis(current, a, new_shape[a], orders[a], dtype, rows)
        if axis is not None and order > 1 and a != axis:
            others = tuple(b for b in range(vol.ndim) if b != axis)
            np.clip(slab, vol.min(axis=others, keepdims=True), vol.max(axis=others, keepdims=True), out=slab)
        if max(orders) > 1:
            np.clip(slab, low, high, out=slab)
        index = tuple(rows if b == a else slice(None) for b in range(vol.ndim))
        sink(index, slab)
    return True


def anti_alias_sigmas(old_spacing: Sequence[float], new_spacing: Sequence[float]) -> tuple[float, ...]:
    """Gaussian sigma (in voxels of the old grid) per axis before resampling to `new_spacing`: skimage's
    anti-aliasing rule, max(0, (factor - 1) / 2) with factor = new / old spacing; 0 where nothing is coarsened."""
    return tuple(max(0.0, (float(n) / float(o) - 1.0) / 2.0) for o, n in zip(old_spacing, new_spacing))


def anti_alias(data: np.ndarray, old_spacing: Sequence[float], new_spacing: Sequence[float]) -> np.ndarray:
    """Low-pass each channel of `data` (c, z, y, x) along the axes that `new_spacing` coarsens (float32 out).

    nnU-Net resamples without it because its target is the median spacing (factors near 1). A plan that trades
    resolution for context coarsens 0.8 mm images 4-5x: point-sampled, the coarse grid keeps the full voxel
    noise (a 10 HU organ difference under 35 HU of noise stays invisible) and aliases thin structures.
    """
    sigmas = anti_alias_sigmas(old_spacing, new_spacing)
    if not any(s > 0 for s in sigmas):
        return data
    out = np.empty(data.shape, dtype=np.float32)
    for i, channel in enumerate(data):
        ndimage.gaussian_filter(channel.astype(np.float32, copy=False), sigmas, output=out[i], mode="nearest",
                                truncate=3.0)
    return out


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
    out = np.empty((data.shape[0], *shape), dtype=np.float32)
    for i, channel in enumerate(data):
        out[i] = resample_volume(channel, shape, axis, order, order_z)
    return out


def resample_volume(vol: np.ndarray, new_shape: Sequence[int], axis: int | None, order: int, order_z: int,
                    dtype=None) -> np.ndarray:
    """One (z, y, x) volume resized like skimage (per-axis maps where cheaper; float32 out).

    `axis`: the axis resampled separately (see `separate_z_axis`), or None. Computed in float64 for splines
    (order >= 2, like scipy's prefilter) and float32 for orders 0 and 1 unless `dtype` says otherwise.
    """
    vol = vol.astype(np.float32, copy=False)
    dtype = dtype or (np.float64 if max(order, order_z) > 1 else np.float32)
    out = _resample_volume_by_axes(vol, new_shape, axis, order, order_z, dtype)
    if out is None:
        out = _resample_volume(vol, new_shape, axis, order, order_z, _resize_image)
    return out.astype(np.float32, copy=False)


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


def resample_and_threshold(
    prob: np.ndarray,
    new_shape: Sequence[int],
    old_spacing: Sequence[float],
    new_spacing: Sequence[float],
    threshold: float,
    out: np.ndarray | None = None,
    order: int = 1,
    order_z: int = 0,
    separate_z_threshold: float = DEFAULT_SEPARATE_Z_THRESHOLD,
) -> np.ndarray:
    """The mask `resample_probabilities(prob[None], ...)[0] > threshold` of one class (z, y, x), as uint8.

    Slab by slab: the full-resolution float map is never held. `out` (uint8, `new_shape`, may be a view into
    a larger array) receives the mask; it is returned.
    """
    if prob.ndim != 3:
        raise ValueError(f"prob must be (z, y, x), got shape {prob.shape}")
    new_shape = _target_shape(prob.shape, old_spacing, new_spacing, new_shape)
    out = np.zeros(new_shape, dtype=np.uint8) if out is None else out
    if tuple(out.shape) != tuple(new_shape) or out.dtype != np.uint8:
        raise ValueError(f"out must be uint8 of shape {tuple(new_shape)}, got {out.dtype} {tuple(out.shape)}")
    axis = separate_z_axis(old_spacing, new_spacing, separate_z_threshold)
    prob = prob.astype(np.float32, copy=False)
    threshold = np.float32(threshold)

    def sink(index, slab):
        np.greater(slab, threshold, out=out[index])

    dtype = np.float64 if max(order, order_z) > 1 else np.float32
    if _resample_volume_by_axes(prob, new_shape, axis, order, order_z, dtype, sink=sink) is None:
        resampled = _resample_volume(prob, new_shape, axis, order, order_z, _resize_image)
        np.greater(resampled.astype(np.float32, copy=False), threshold, out=out)
    return out

