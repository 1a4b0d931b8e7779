"""Left/right from a model that trained only the whole: keep the components on one side of the patient's midline.

Preprocessed arrays are in the canonical LPS orientation (textnnunet.imageio.sitk_io.to_canonical), so the last
array axis runs along +x, towards the patient's LEFT. The midline is the centre of the body along that axis: the
body is the image's bright part (Otsu threshold of the first channel), which in CT is everything but the air.
Each connected component of the thresholded class probability is kept or dropped as a whole by which side of the
midline its centre lies on; dropped components (with a one-voxel rim) get probability 0, so the exported mask and
any saved probabilities agree.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from textnnunet.preprocessing.preprocessor import per_channel_thresholds

PATIENT_LEFT_IS_HIGHER_X = True  # LPS: x grows towards the patient's left


def otsu_threshold(values: np.ndarray, bins: int = 128) -> float:
    """The grey level that best separates `values` into two classes (Otsu's between-class variance)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return low
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    mean_low = np.cumsum(counts * centres) / np.maximum(weight_low, 1)
    mean_high = (np.sum(counts * centres) - np.cumsum(counts * centres)) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def body_midline(image: np.ndarray) -> float:
    """The x index (last axis) of the patient's midline in a canonical (c, z, y, x) or (z, y, x) image."""
    first = image[0] if image.ndim == 4 else image
    body = first > otsu_threshold(first)
    columns = np.flatnonzero(body.any(axis=tuple(range(body.ndim - 1))))
    if columns.size == 0:
        return (first.shape[-1] - 1) / 2.0
    return (float(columns[0]) + float(columns[-1])) / 2.0


def side_of(x_index: float, midline: float) -> str:
    on_higher_x = x_index > midline
    return "left" if on_higher_x == PATIENT_LEFT_IS_HIGHER_X else "right"


def keep_side(probabilities: np.ndarray, side: str, midline: float, threshold: float = 0.5) -> np.ndarray:
    """A copy of one class's (z, y, x) probabilities with the components on the other side of `midline` zeroed."""
    components, count = ndimage.label(probabilities > threshold)
    if count == 0:
        return probabilities.copy()
    centres = ndimage.center_of_mass(np.ones_like(components), components, index=range(1, count + 1))
    drop = [i + 1 for i, centre in enumerate(centres) if side_of(centre[-1], midline) != side]
    result = probabilities.copy()
    if drop:
        dropped = ndimage.binary_dilation(np.isin(components, drop), iterations=1)
        result[dropped & ~np.isin(components, [i for i in range(1, count + 1) if i not in drop])] = 0
    return result


def apply_laterality(probabilities: np.ndarray, image: np.ndarray, sides: Sequence[str | None],
                     threshold: float | Sequence[float] = 0.5) -> np.ndarray:
    """Per prompt channel of (K, z, y, x) canonical probabilities: channels with a side keep only that side.
    `threshold`: the one that will make the masks, for all channels or per channel (postprocessing.json's per-class
    thresholds), so the components judged here are those the masks will hold."""
    if not any(sides):
        return probabilities
    thresholds = per_channel_thresholds(threshold, len(sides), what="channels")
    midline = body_midline(image)
    result = np.array(probabilities, copy=True)
    for channel, (side, channel_threshold) in enumerate(zip(sides, thresholds)):
        if side is not None:
            result[channel] = keep_side(result[channel], side, midline, channel_threshold)
    return result
