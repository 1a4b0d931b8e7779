"""Deep-supervision bookkeeping shared by the text-prompted network and the softmax baselines."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def deep_supervision_weights(n_scales: int) -> np.ndarray:
    """nnU-Net's loss weights: 1/2^i per scale (highest resolution first), lowest set to 0, summing to 1.

    With a single scale there is nothing to drop, so its weight is 1.
    """
    if n_scales < 1:
        raise ValueError(f"n_scales must be >= 1, got {n_scales}")
    weights = np.array([1 / (2**i) for i in range(n_scales)], dtype=np.float64)
    if n_scales > 1:
        weights[-1] = 0.0
    return weights / weights.sum()


def deep_supervision_scales(strides: Sequence[Sequence[int]]) -> list[list[float]]:
    """Size of each deep-supervision output relative to the patch, highest resolution first.

    One entry per decoder output (n_stages - 1), e.g. strides [[1,1,1],[2,2,2],[2,2,2]] ->
    [[1,1,1],[0.5,0.5,0.5]]; used to downsample targets to match the outputs.
    """
    cumulative = np.cumprod(np.asarray(strides, dtype=np.float64), axis=0)
    return [list(map(float, 1.0 / c)) for c in cumulative[:-1]]
