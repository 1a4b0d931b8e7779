"""Rule-based network topology, following the rules of nnU-Net v2's ExperimentPlanner.

Pure functions of spacings and shapes (no torch, no files), so every rule can be tested by hand:
- `target_spacing`: median spacing, with nnU-Net's exception for strongly anisotropic data.
- `pool_and_conv_props`: how often each axis is pooled and which conv kernels each stage gets.
- `feature_map_units` / `estimated_memory_gb`: nnU-Net's memory proxy, the summed size of all conv
  feature maps of a plain U-Net (encoder + decoder), scaled by batch size.
- `plan_patch_and_batch`: start from a large patch with the aspect of the spacing, shrink it until the
  estimate fits the memory target, then spend what is left on the batch size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

from textnnunet.errors import UserError

# nnU-Net v2's calibration: a plain U-Net (32 base features) whose summed conv feature maps hold this many
# values per sample trains with the reference batch size in about REFERENCE_GB of GPU memory.
REFERENCE_UNITS = {3: 560_000_000, 2: 85_000_000}
REFERENCE_BATCH = {3: 2, 2: 12}
REFERENCE_GB = 8.0
# Initial patch volume before shrinking: 256^3 voxels (3D) / 2048^2 pixels (2D), as nnU-Net.
INITIAL_PATCH_EDGE = {3: 256, 2: 2048}
MIN_FEATURE_MAP_SIZE = 4
MIN_BATCH_SIZE = 2
MAX_DATASET_COVERED = 0.05  # a batch may see at most 5% of the dataset's voxels (overfitting guard)
ANISOTROPY_THRESHOLD = 3.0


def target_spacing(spacings: Sequence[Sequence[float]], shapes: Sequence[Sequence[int]],
                   anisotropy_threshold: float = ANISOTROPY_THRESHOLD) -> np.ndarray:
    """Median spacing per axis; for a much coarser axis with few voxels use its 10th percentile instead.

    A median of e.g. 5 mm slices would make the thinner-sliced cases lose detail through interpolation,
    so when one axis is both anisotropic in spacing and short in voxels, nnU-Net picks a finer value,
    never finer than the other axes (plus a hair, so that axis stays the coarsest).
    """
    spacings = np.asarray(spacings, dtype=np.float64).reshape(-1, 3)
    shapes = np.asarray(shapes, dtype=np.float64).reshape(-1, 3)
    target = np.percentile(spacings, 50, axis=0)
    median_shape = np.percentile(shapes, 50, axis=0)
    worst = int(np.argmax(target))
    others = [i for i in range(3) if i != worst]
    other_spacings = target[others]
    other_sizes = median_shape[others]
    aniso_spacing = target[worst] > anisotropy_threshold * other_spacings.max()
    aniso_voxels = median_shape[worst] * anisotropy_threshold < other_sizes.min()
    if aniso_spacing and aniso_voxels:
        tenth = float(np.percentile(spacings[:, worst], 10))
        if tenth < other_spacings.max():
            tenth = float(other_spacings.max()) + 1e-5
        target[worst] = tenth
    return target


class PoolConvProps(NamedTuple):
    strides: list[list[int]]  # per stage; stage 0 is [1, 1(, 1)]
    kernel_sizes: list[list[int]]  # per stage, 3 or 1 per axis
    patch_size: list[int]  # padded up to a multiple of divisible_by(strides)


def divisible_by(strides: Sequence[Sequence[int]]) -> list[int]:
    """The factor each patch axis must be divisible by: the product of its strides."""
    return [int(v) for v in np.prod(np.asarray(strides, dtype=np.int64), axis=0)]


def pad_to_divisible(shape: Sequence[int], factors: Sequence[int]) -> list[int]:
    return [int(-(-int(s) // int(f)) * int(f)) for s, f in zip(shape, factors)]


def pool_and_conv_props(spacing: Sequence[float], patch_size: Sequence[int],
                        min_feature_map_size: int = MIN_FEATURE_MAP_SIZE,
                        max_numpool: int = 999) -> PoolConvProps:
    """nnU-Net's get_pool_and_conv_props rules.

    Each step pools (stride 2) every axis that (a) still has a feature map of at least twice the minimum
    size and (b) has a spacing within 2x of the finest spacing among those axes; a lone axis must be at
    least 3x the minimum. Kernels are 3 on axes whose spacing is within 2x of the finest spacing and 1
    otherwise (and stay 3 once 3): coarse axes first get pooled in-plane until the spacings meet.
    The bottleneck always uses 3s.
    """
    dim = len(spacing)
    current_spacing = [float(s) for s in spacing]
    current_size = [int(s) for s in patch_size]
    strides: list[list[int]] = [[1] * dim]
    kernel_sizes: list[list[int]] = []
    num_pool = [0] * dim
    kernel = [1] * dim
    while True:
        valid = [i for i in range(dim) if current_size[i] >= 2 * min_feature_map_size]
        if not valid:
            break
        finest_valid = min(current_spacing[i] for i in valid)
        valid = [i for i in valid if current_spacing[i] / finest_valid < 2 and num_pool[i] < max_numpool]
        if not valid or (len(valid) == 1 and current_size[valid[0]] < 3 * min_feature_map_size):
            break
        finest = min(current_spacing)
        kernel = [3 if kernel[d] == 3 or current_spacing[d] / finest < 2 else 1 for d in range(dim)]
        stride = [1] * dim
        for i in valid:
            stride[i] = 2
            num_pool[i] += 1
            current_spacing[i] *= 2
            current_size[i] = int(np.ceil(current_size[i] / 2))
        strides.append(stride)
        kernel_sizes.append(list(kernel))
    kernel_sizes.append([3] * dim)
    return PoolConvProps(strides, kernel_sizes, pad_to_divisible(patch_size, divisible_by(strides)))


def features_per_stage(n_stages: int, base_features: int, max_features: int) -> list[int]:
    """Features double per stage from `base_features`, capped at `max_features`."""
    return [int(min(max_features, base_features * 2 ** i)) for i in range(n_stages)]


def feature_map_units(patch_size: Sequence[int], strides: Sequence[Sequence[int]], features: Sequence[int],
                      num_classes: int, n_conv_encoder: int = 2, n_conv_decoder: int = 2,
                      deep_supervision: bool = True) -> int:
    """Summed size of all conv outputs of a plain U-Net for one sample (no batch), nnU-Net's memory proxy.

    Counts the same maps as dynamic-network-architectures' compute_conv_feature_map_size: each encoder
    conv, and per decoder level its convs, the transposed conv and (deep supervision) its 1x1 head.
    """
    size = np.asarray(patch_size, dtype=np.int64)
    level_voxels = []
    total = 0
    for s, stride in enumerate(strides):
        size = size // np.asarray(stride, dtype=np.int64)
        voxels = int(np.prod(size))
        level_voxels.append(voxels)
        total += n_conv_encoder * features[s] * voxels
    n_dec = len(strides) - 1
    for level in range(n_dec - 1, -1, -1):  # deepest decoder stage first, ending at full resolution
        voxels = level_voxels[level]
        total += (n_conv_decoder + 1) * features[level] * voxels
        if deep_supervision or level == 0:
            total += num_classes * voxels
    return int(total)


def estimated_memory_gb(units_per_sample: int, batch_size: int, dim: int) -> float:
    """Memory in nnU-Net's "GB" (calibrated on GPUs with mixed precision) for a batch of that many samples."""
    return float(units_per_sample) * batch_size / (REFERENCE_UNITS[dim] * REFERENCE_BATCH[dim]) * REFERENCE_GB


def initial_patch_size(spacing: Sequence[float], median_shape: Sequence[int]) -> list[int]:
    """A patch isotropic in millimetres with nnU-Net's starting volume, clipped to the median image."""
    dim = len(spacing)
    inv = 1.0 / np.asarray(spacing, dtype=np.float64)
    scale = (INITIAL_PATCH_EDGE[dim] ** dim / np.prod(inv)) ** (1.0 / dim)
    patch = [int(round(v)) for v in inv * scale]
    return [max(1, min(p, int(m))) for p, m in zip(patch, median_shape)]


@dataclass(frozen=True)
class PatchPlan:
    patch_size: list[int]
    batch_size: int
    strides: list[list[int]]
    kernel_sizes: list[list[int]]
    features_per_stage: list[int]
    units_per_sample: int
    estimated_memory_gb: float  # at the chosen batch size

    @property
    def n_stages(self) -> int:
        return len(self.strides)


def plan_patch_and_batch(spacing: Sequence[float], median_shape: Sequence[int], num_voxels_dataset: float,
                         memory_target_gb: float, num_classes: int, base_features: int, max_features: int,
                         n_conv_per_stage: int = 2, min_batch_size: int = MIN_BATCH_SIZE,
                         max_dataset_covered: float = MAX_DATASET_COVERED,
                         min_feature_map_size: int = MIN_FEATURE_MAP_SIZE) -> PatchPlan:
    """nnU-Net's patch size search for one configuration (2D or 3D, from len(spacing))."""
    if memory_target_gb <= 0:
        raise UserError(f"memory_target_gb: must be positive, got {memory_target_gb}")
    dim = len(spacing)
    median_shape = [int(round(m)) for m in median_shape]

    def evaluate(patch: Sequence[int]) -> tuple[PoolConvProps, list[int], int]:
        props = pool_and_conv_props(spacing, patch, min_feature_map_size)
        feats = features_per_stage(len(props.strides), base_features, max_features)
        units = feature_map_units(props.patch_size, props.strides, feats, num_classes,
                                  n_conv_per_stage, n_conv_per_stage)
        return props, feats, units

    props, feats, units = evaluate(initial_patch_size(spacing, median_shape))
    while estimated_memory_gb(units, min_batch_size, dim) > memory_target_gb:
        props, feats, units = evaluate(_shrunk_patch(props, spacing, median_shape, min_feature_map_size,
                                                     memory_target_gb))
    patch = props.patch_size
    batch = int(round(memory_target_gb / estimated_memory_gb(units, 1, dim)))
    # Cap so that one batch covers at most a few percent of the dataset, but never below the minimum.
    cap = int(round(num_voxels_dataset * max_dataset_covered / float(np.prod(patch, dtype=np.float64))))
    batch = max(min(batch, cap), min_batch_size)
    return PatchPlan(patch, batch, props.strides, props.kernel_sizes, feats, units,
                     estimated_memory_gb(units, batch, dim))


def _shrunk_patch(props: PoolConvProps, spacing: Sequence[float], median_shape: Sequence[int],
                  min_feature_map_size: int, memory_target_gb: float) -> list[int]:
    """Shrink the axis that is largest relative to the median image by one divisibility step.

    The step is recomputed after a trial shrink, because a smaller axis may pool less often and so
    allow sizes in between (e.g. 224 between 256 and 192).
    """
    patch = list(props.patch_size)
    factors = divisible_by(props.strides)
    order = np.argsort([p / m for p, m in zip(patch, median_shape)])[::-1]
    for axis in order:
        trial = list(patch)
        trial[axis] -= factors[axis]
        if trial[axis] < 1:
            continue
        step = divisible_by(pool_and_conv_props(spacing, trial, min_feature_map_size).strides)[axis]
        candidate = list(patch)
        candidate[axis] -= step
        # Padding to the candidate's own divisibility must not undo the shrink (it would loop forever).
        if pool_and_conv_props(spacing, candidate, min_feature_map_size).patch_size[axis] >= patch[axis]:
            candidate = trial
        return candidate
    raise UserError(f"memory_target_gb: {memory_target_gb} GB is too small for even the smallest patch "
                    f"{patch}; raise it")
