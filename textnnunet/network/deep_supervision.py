"""Deep-supervision bookkeeping shared by the text-prompted network and the softmax baselines."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def deep_supervision_weights(n_scales: int, lowest: float = 0.0) -> np.ndarray:
    """nnU-Net's loss weights: 1/2^i per scale (highest resolution first), the lowest set to `lowest` (0), summing to 1.

    With a single scale there is nothing to drop, so its weight is 1. Under DDP nnU-Net gives the lowest output 1e-6
    instead of 0 (DDP_LOWEST_WEIGHT): its head then takes part in every backward pass, so DDP need not search the
    graph for unused parameters each step (find_unused_parameters) and a weight this small changes nothing else.
    """
    if n_scales < 1:
        raise ValueError(f"n_scales must be >= 1, got {n_scales}")
    weights = np.array([1 / (2**i) for i in range(n_scales)], dtype=np.float64)
    if n_scales > 1:
        weights[-1] = lowest
    return weights / weights.sum()


DDP_LOWEST_WEIGHT = 1e-6


def deep_supervision_scales(strides: Sequence[Sequence[int]]) -> list[list[float]]:
    """Size of each deep-supervision output relative to the patch, highest resolution first.

    One entry per decoder output (n_stages - 1), e.g. strides [[1,1,1],[2,2,2],[2,2,2]] ->
    [[1,1,1],[0.5,0.5,0.5]]; used to downsample targets to match the outputs.
    """
    cumulative = np.cumprod(np.asarray(strides, dtype=np.float64), axis=0)
    return [list(map(float, 1.0 / c)) for c in cumulative[:-1]]
