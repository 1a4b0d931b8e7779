"""Sliding-window inference with Gaussian importance weighting, mirroring TTA and fold ensembling.

Follows nnU-Net v2's scheme (windows overlapping by half a patch, Gaussian weights with
sigma = patch / 8, padding to at least one patch (with each channel's minimum, not zero: see
pad_with_channel_minimum), mirroring over all flips of the
allowed axes) with one deliberate difference: the model has one *sigmoid* per class (Universal
Model), so windows, mirrors and folds are averaged as sigmoid probabilities rather than as logits.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from acvl_utils.cropping_and_padding.padding import pad_nd_image
from tqdm import tqdm

PatchPredictor = Callable[[torch.Tensor], torch.Tensor]


def gaussian_importance_map(
    patch_size: Sequence[int],
    sigma_scale: float = 1.0 / 8,
    value_scaling_factor: float = 10.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Separable Gaussian centred in the patch, maximum `value_scaling_factor`, no zeros.

    Centred at (p - 1) / 2 so the map is exactly mirror-symmetric for even patch sizes too (nnU-Net
    centres at p // 2). Zeros (underflow in low precision) become the smallest nonzero value, as in
    nnU-Net, so every voxel covered by a window gets a positive weight.
    """
    if sigma_scale <= 0:
        raise ValueError(f"sigma_scale must be positive, got {sigma_scale}")
    if any(int(p) < 1 for p in patch_size):
        raise ValueError(f"patch_size must be positive, got {tuple(patch_size)}")
    gauss = np.ones((), dtype=np.float64)
    for p in patch_size:
        coords = np.arange(int(p), dtype=np.float64) - (int(p) - 1) / 2.0
        axis = np.exp(-0.5 * (coords / (int(p) * sigma_scale)) ** 2)
        gauss = np.multiply.outer(gauss, axis)
    gauss = gauss / gauss.max() * value_scaling_factor
    result = torch.from_numpy(gauss).to(dtype=dtype, device=device)
    zeros = result == 0
    if zeros.any():
        result[zeros] = result[~zeros].min()
    return result


def compute_steps(image_size: Sequence[int], patch_size: Sequence[int], step_size: float = 0.5) -> list[list[int]]:
    """Window start positions per axis (nnU-Net's rule).

    Per axis: n = ceil((image - patch) / (patch * step_size)) + 1 windows, spread evenly from 0 to
    image - patch (rounded), so the first window starts at 0 and the last one ends at the border.
    """
    if len(image_size) != len(patch_size):
        raise ValueError(f"image_size {tuple(image_size)} and patch_size {tuple(patch_size)} differ in length")
    if not 0 < step_size <= 1:
        raise ValueError(f"step_size must be in (0, 1], got {step_size}")
    steps = []
    for image, patch in zip(image_size, patch_size):
        if image < patch:
            raise ValueError(f"image size {tuple(image_size)} is smaller than patch size {tuple(patch_size)}")
        max_start = image - patch
        num_steps = math.ceil(max_start / (patch * step_size)) + 1
        stride = max_start / (num_steps - 1) if num_steps > 1 else 0.0
        steps.append([int(round(stride * i)) for i in range(num_steps)])
    return steps


def _mirror_combinations(mirror_axes: Sequence[int] | None, n_spatial: int) -> list[tuple[int, ...]]:
    """All subsets of the mirror axes (2^n of them, the empty one = no flip), as tensor dims."""
    axes = tuple(mirror_axes or ())
    if len(set(axes)) != len(axes) or any(not 0 <= a < n_spatial for a in axes):
        raise ValueError(f"mirror_axes {axes} must be distinct spatial axes of the patch, in [0, {n_spatial})")
    dims = [a + 2 for a in axes]  # (B, C, *spatial)
    return [combo for r in range(len(dims) + 1) for combo in itertools.combinations(dims, r)]


def _predict_probabilities(
    predict_patch: PatchPredictor, batch: torch.Tensor, mirror_dims: list[tuple[int, ...]], num_outputs: int
) -> torch.Tensor:
    """Sigmoid probabilities of one batch of windows, averaged over the mirror combinations."""
    total = None
    expected = (batch.shape[0], num_outputs, *batch.shape[2:])
    for dims in mirror_dims:
        x = torch.flip(batch, dims) if dims else batch
        logits = predict_patch(x)
        if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"predict_patch returned {got}, expected a tensor of shape {expected}")
        probs = torch.sigmoid(logits.float())
        if dims:
            probs = torch.flip(probs, dims)
        total = probs if total is None else total + probs
    return total / len(mirror_dims)


def _window_slicers(
    padded_spatial: Sequence[int], patch_size: Sequence[int], step_size: float, slice_mode: bool
) -> list[tuple[slice, ...]]:
    """Spatial slicers of all windows; in slice mode every z slice is a window row of thickness 1."""
    if slice_mode:
        steps = [list(range(padded_spatial[0]))] + compute_steps(padded_spatial[1:], patch_size, step_size)
        sizes = (1, *patch_size)
    else:
        steps = compute_steps(padded_spatial, patch_size, step_size)
        sizes = tuple(patch_size)
    return [tuple(slice(s, s + p) for s, p in zip(start, sizes)) for start in itertools.product(*steps)]


def _batched(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def pad_with_channel_minimum(image: torch.Tensor, patch_size: Sequence[int]) -> tuple[torch.Tensor, tuple]:
    """Pad the trailing axes to at least one patch, each channel with its minimum (what training pads with:
    training.sampling.crop_and_pad_channels); returns the padded image and the slicer that undoes it."""
    padded, slicer = pad_nd_image(image, patch_size, "constant", {"value": 0}, return_slicer=True)
    if tuple(padded.shape) == tuple(image.shape):
        return padded, slicer
    for c in range(image.shape[0]):
        padded[c] = float(image[c].min())
        padded[(c, *slicer[1:])] = image[c]
    return padded, slicer


def sliding_window_predict(
    predict_patch: PatchPredictor,
    image: torch.Tensor | np.ndarray,
    patch_size: Sequence[int],
    num_outputs: int,
    step_size: float = 0.5,
    use_gaussian: bool = True,
    mirror_axes: Sequence[int] | None = None,
    device: torch.device | str = "cpu",
    output_device: torch.device | str = "cpu",
    batch_windows: int = 1,
    progress: bool = False,
    patch_dims: int | None = None,
) -> torch.Tensor:
    """Sigmoid probabilities `(K, *spatial)` in [0, 1] for a whole normalised image `(C, *spatial)`.

    `predict_patch` maps a batch of windows `(B, C, *patch)` (B <= `batch_windows`, on `device`) to
    logits `(B, K, *patch)`; it is called under `torch.inference_mode`. Windows overlap by
    `1 - step_size` of a patch and are averaged with Gaussian (or flat) weights in float32 on
    `output_device`. `mirror_axes` are axes of the *patch* (0 = first spatial axis the network sees);
    every one of the 2^n flips is predicted and averaged. Images smaller than the patch are padded
    with 0 (centred, like nnU-Net) and the result cropped back.

    2D configurations: with a 2-axis `patch_size` (or `patch_dims=2`) and a `(C, z, y, x)` image,
    each z slice is tiled separately and the network sees `(B, C, y, x)`; the output is `(K, z, y, x)`.
    """
    image = torch.as_tensor(image)
    if not image.is_floating_point():
        image = image.float()
    patch_size = tuple(int(p) for p in patch_size)
    patch_dims = len(patch_size) if patch_dims is None else patch_dims
    if patch_dims != len(patch_size):
        raise ValueError(f"patch_dims={patch_dims} does not match patch_size {patch_size}")
    n_spatial = image.ndim - 1
    slice_mode = patch_dims == 2 and n_spatial == 3
    if not slice_mode and patch_dims != n_spatial:
        raise ValueError(f"image of shape {tuple(image.shape)} does not fit a {patch_dims}D patch {patch_size}")
    if num_outputs < 1 or batch_windows < 1:
        raise ValueError(f"num_outputs and batch_windows must be >= 1, got {num_outputs}, {batch_windows}")
    mirror_dims = _mirror_combinations(mirror_axes, patch_dims)

    # Padding only ever grows the trailing (patch) axes; the slicer undoes it afterwards.
    padded, pad_slicer = pad_with_channel_minimum(image, patch_size)
    padded_spatial = tuple(padded.shape[1:])
    slicers = _window_slicers(padded_spatial, patch_size, step_size, slice_mode)

    weight = (
        gaussian_importance_map(patch_size, device=output_device)
        if use_gaussian
        else torch.ones(patch_size, dtype=torch.float32, device=output_device)
    )
    if slice_mode:
        weight = weight[None]  # (1, y, x) to match a window of thickness 1 in z
    accumulated = torch.zeros((num_outputs, *padded_spatial), dtype=torch.float32, device=output_device)
    weight_sum = torch.zeros(padded_spatial, dtype=torch.float32, device=output_device)

    with torch.inference_mode(), tqdm(total=len(slicers), disable=not progress, desc="sliding window") as bar:
        for group in _batched(slicers, batch_windows):
            windows = [padded[(slice(None), *sl)] for sl in group]
            if slice_mode:
                windows = [w[:, 0] for w in windows]
            batch = torch.stack(windows).to(device)
            probs = _predict_probabilities(predict_patch, batch, mirror_dims, num_outputs).to(output_device)
            for sl, p in zip(group, probs):
                if slice_mode:
                    p = p[:, None]
                accumulated[(slice(None), *sl)] += p * weight
                weight_sum[sl] += weight
            bar.update(len(group))

    accumulated /= weight_sum
    result = accumulated[(slice(None), *pad_slicer[1:])]
    if torch.isnan(result).any():
        raise RuntimeError("sliding window produced NaN probabilities (the network returned NaN logits)")
    return result


def ensemble_probabilities(
    predictions: Sequence[torch.Tensor | np.ndarray], weights: Sequence[float] | None = None
) -> torch.Tensor | np.ndarray:
    """Weighted mean of per-fold probability maps `(K, *spatial)` (equal weights by default).

    Folds are ensembled in probability space (not logits) because each class is an independent
    sigmoid. Returns float32, a numpy array if the first input is one, else a tensor.
    """
    if len(predictions) == 0:
        raise ValueError("ensemble_probabilities needs at least one prediction")
    weights = [1.0] * len(predictions) if weights is None else [float(w) for w in weights]
    if len(weights) != len(predictions):
        raise ValueError(f"{len(weights)} weights for {len(predictions)} predictions")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {weights}")
    as_numpy = isinstance(predictions[0], np.ndarray)
    tensors = [torch.as_tensor(p) for p in predictions]
    shape = tuple(tensors[0].shape)
    if any(tuple(t.shape) != shape for t in tensors):
        raise ValueError(f"predictions differ in shape: {[tuple(t.shape) for t in tensors]}")
    total = torch.zeros(shape, dtype=torch.float32, device=tensors[0].device)
    for t, w in zip(tensors, weights):
        total += t.to(total.device, torch.float32) * w
    total /= sum(weights)
    return total.cpu().numpy() if as_numpy else total
