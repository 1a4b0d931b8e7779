"""Tiny preprocessed caches in the contract's format, for the sampling / augmentation / loading tests."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from textnnunet.training.sampling import CaseRef

LIVER = "Dataset001_Liver"
SPLEEN = "Dataset002_Spleen"
CLASSES = ["liver", "liver tumor", "spleen"]
LABEL_SPACE = {
    "classes": [{"name": n, "synonyms": []} for n in CLASSES],
    "datasets": {LIVER: {"liver": [1, 2], "liver tumor": [2]}, SPLEEN: {"spleen": [1]}},
}


def make_plans(patch_3d=(8, 8, 8), patch_2d=(8, 8), batch_size=3) -> dict:
    return {
        "plans_name": "TextPlans_001_002",
        "datasets": [LIVER, SPLEEN],
        "label_space": LABEL_SPACE,
        "configurations": {
            "3d_fullres": {"data_identifier": "3d_fullres", "patch_size": list(patch_3d), "batch_size": batch_size},
            "2d": {"data_identifier": "2d", "patch_size": list(patch_2d), "batch_size": batch_size},
        },
    }


def class_locations(seg: np.ndarray, dataset: str) -> dict[str, list[list[int]]]:
    """Every voxel of each annotated class (regions included), as the preprocessor stores them."""
    out = {}
    for name, values in LABEL_SPACE["datasets"][dataset].items():
        coords = np.argwhere(np.isin(seg, values))
        out[name] = coords.tolist()
    return out


def write_case(folder: Path, dataset: str, case_id: str, data: np.ndarray, seg: np.ndarray) -> CaseRef:
    """data (c,z,y,x) float32, seg (z,y,x) int label map."""
    ds_folder = folder / dataset
    ds_folder.mkdir(parents=True, exist_ok=True)
    npz, js = ds_folder / f"{case_id}.npz", ds_folder / f"{case_id}.json"
    np.savez_compressed(npz, data=data.astype(np.float32), seg=seg[None].astype(np.int16))
    props = {"case_id": case_id, "dataset": dataset, "class_locations": class_locations(seg, dataset)}
    js.write_text(json.dumps(props))
    return CaseRef(dataset, case_id, npz, js)


def liver_case(folder: Path, case_id: str, shape=(12, 20, 20), rng_seed=0) -> CaseRef:
    """Liver (1) block with a tumour (2) inside, in one corner of an otherwise empty volume."""
    rng = np.random.default_rng(rng_seed)
    data = rng.normal(size=(1, *shape)).astype(np.float32)
    seg = np.zeros(shape, dtype=np.int16)
    seg[1:4, 14:18, 14:18] = 1
    seg[2:3, 15:17, 15:17] = 2
    return write_case(folder, LIVER, case_id, data, seg)


def spleen_case(folder: Path, case_id: str, shape=(12, 20, 20), rng_seed=1) -> CaseRef:
    rng = np.random.default_rng(rng_seed)
    data = rng.normal(size=(1, *shape)).astype(np.float32)
    seg = np.zeros(shape, dtype=np.int16)
    seg[9:11, 1:3, 1:3] = 1
    return write_case(folder, SPLEEN, case_id, data, seg)


def two_dataset_cases(folder: Path, n_liver=2, n_spleen=2) -> list[CaseRef]:
    cases = [liver_case(folder, f"liver_{i:03d}", rng_seed=i) for i in range(n_liver)]
    cases += [spleen_case(folder, f"spleen_{i:03d}", rng_seed=100 + i) for i in range(n_spleen)]
    return cases
