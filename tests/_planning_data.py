"""Tiny hand-made nnU-Net v2 raw datasets for the fingerprint and planning tests (written with SimpleITK)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk


def write_volume(array: np.ndarray, spacing_zyx, path: Path) -> None:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))


def make_dataset(raw_root: Path, folder_name: str, channel_names: dict, labels: dict,
                 cases: dict[str, tuple[list[np.ndarray], np.ndarray, tuple]], synonyms: dict | None = None) -> Path:
    """cases: case_id -> ([channel arrays (z, y, x)], label (z, y, x), spacing (z, y, x))."""
    folder = raw_root / folder_name
    for case_id, (channels, label, spacing) in cases.items():
        for c, arr in enumerate(channels):
            write_volume(arr.astype(np.float32), spacing, folder / "imagesTr" / f"{case_id}_{c:04d}.nii.gz")
        write_volume(label.astype(np.uint8), spacing, folder / "labelsTr" / f"{case_id}.nii.gz")
    meta = {"channel_names": channel_names, "labels": labels, "numTraining": len(cases), "file_ending": ".nii.gz"}
    if synonyms:
        meta["synonyms"] = synonyms
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder


def blob_case(shape=(8, 20, 20), spacing=(2.0, 1.0, 1.0), seed=0, value=100.0, label_value=1):
    """A nonzero body inside a zero border, with a labelled cube of known intensity `value`."""
    rng = np.random.default_rng(seed)
    image = np.zeros(shape, dtype=np.float32)
    image[1:-1, 2:-2, 2:-2] = rng.normal(10.0, 1.0, size=(shape[0] - 2, shape[1] - 4, shape[2] - 4))
    label = np.zeros(shape, dtype=np.uint8)
    label[2:5, 5:10, 5:10] = label_value
    image[label > 0] = value
    return [image], label, spacing
