"""Crop a case to the bounding box of its nonzero region, and put cropped arrays back (nnU-Net style).

Bounding boxes are half-open `[[z0, z1], [y0, y1], [x0, x1]]`, as in acvl-utils and nnU-Net v2.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from acvl_utils.cropping_and_padding.bounding_boxes import bounding_box_to_slice, get_bbox_from_mask
from scipy.ndimage import binary_fill_holes

BBox = list[list[int]]


def create_nonzero_mask(data: np.ndarray) -> np.ndarray:
    """True where any channel of `data` (c, z, y, x) is nonzero, with enclosed holes filled.

    Filling holes keeps zero-valued voxels inside the body (air in the bowel, say) in the mask, so only the
    empty surround is treated as outside.
    """
    if data.ndim != 4:
        raise ValueError(f"data must be (c, z, y, x), got shape {data.shape}")
    mask = np.any(data != 0, axis=0)
    return binary_fill_holes(mask)


def crop_to_nonzero_with_mask(
    data: np.ndarray, seg: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None, BBox, np.ndarray]:
    """Like `crop_to_nonzero`, also returning the cropped nonzero mask (z, y, x) for masked normalisation."""
    mask = create_nonzero_mask(data)
    # An all-zero image gives the full extent (acvl-utils' behaviour), so nothing is lost.
    bbox = [[int(lo), int(hi)] for lo, hi in get_bbox_from_mask(mask)]
    slicer = bounding_box_to_slice(bbox)
    cropped = data[(slice(None), *slicer)]
    cropped_seg = None
    if seg is not None:
        if tuple(seg.shape) != tuple(data.shape[1:]):
            raise ValueError(f"seg shape {seg.shape} does not match data shape {data.shape[1:]}")
        cropped_seg = seg[slicer]
    return cropped, cropped_seg, bbox, mask[slicer]


def crop_to_nonzero(data: np.ndarray, seg: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None, BBox]:
    """Crop `data` (c, z, y, x) and `seg` (z, y, x) to the bounding box of the nonzero region of all channels."""
    cropped, cropped_seg, bbox, _ = crop_to_nonzero_with_mask(data, seg)
    return cropped, cropped_seg, bbox


def uncrop(array: np.ndarray, bbox: Sequence[Sequence[int]], full_shape: Sequence[int], fill: float = 0) -> np.ndarray:
    """Place `array` (k, *cropped) back into a (k, *full_shape) array filled with `fill`: the inverse of cropping."""
    bbox = [[int(lo), int(hi)] for lo, hi in bbox]
    full_shape = tuple(int(s) for s in full_shape)
    box_shape = tuple(hi - lo for lo, hi in bbox)
    if len(bbox) != len(full_shape) or tuple(array.shape[1:]) != box_shape:
        raise ValueError(f"array shape {array.shape[1:]} does not fit bbox {bbox} (box shape {box_shape})")
    if any(lo < 0 or hi > s for (lo, hi), s in zip(bbox, full_shape)):
        raise ValueError(f"bbox {bbox} lies outside shape {full_shape}")
    out = np.full((array.shape[0], *full_shape), fill, dtype=array.dtype)
    out[(slice(None), *bounding_box_to_slice(bbox))] = array
    return out
