"""Tiny plans and preprocessed caches (with the full case properties validation needs) for the benchmark tests."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from training_cache_helpers import LABEL_SPACE, LIVER, SPLEEN, class_locations

ARCH = {"conv_dims": 3, "n_stages": 3, "features_per_stage": [4, 8, 16], "kernel_sizes": [[3, 3, 3]] * 3,
        "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]], "n_conv_per_stage": [1, 1, 1], "n_conv_per_stage_decoder": [1, 1]}
SHAPE = (12, 20, 20)
CONFIG = {"data_identifier": "3d_fullres", "patch_size": [8, 16, 16], "batch_size": 2, "spacing": [1.0, 1.0, 1.0],
          "architecture": ARCH}


def plans_for(plans_name: str, datasets: list[str]) -> dict:
    """A joint plan (several datasets) or a per-dataset plan (one), as the planner writes their label spaces."""
    per_dataset = {ds: LABEL_SPACE["datasets"][ds] for ds in datasets}
    names = [n for ds in datasets for n in per_dataset[ds]]
    return {"plans_name": plans_name, "datasets": list(datasets), "channel_names": {"0": "CT"},
            "label_space": {"classes": [{"name": n, "synonyms": []} for n in names], "datasets": per_dataset},
            "configurations": {"3d_fullres": dict(CONFIG)}}


def write_case(folder: Path, dataset: str, case_id: str, seed: int) -> None:
    """A cached case with identity geometry and no crop; liver (1) + tumour (2), or spleen (1)."""
    rng = np.random.default_rng(seed)
    seg = np.zeros(SHAPE, dtype=np.int16)
    if dataset == LIVER:
        seg[1:5, 12:18, 12:18] = 1
        seg[2:4, 14:16, 14:16] = 2
    else:
        seg[7:11, 1:5, 1:5] = 1
    data = (rng.normal(size=(1, *SHAPE)) + 2.0 * (seg > 0)).astype(np.float32)
    folder = folder / dataset
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / f"{case_id}.npz", data=data, seg=seg[None])
    shape = list(SHAPE)
    props = {"case_id": case_id, "dataset": dataset, "spacing_original": [1.0, 1.0, 1.0], "origin": [0.0, 0.0, 0.0],
             "direction": [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0], "shape_original": shape,
             "bbox_crop": [[0, s] for s in shape], "shape_after_crop": shape, "spacing_target": [1.0, 1.0, 1.0],
             "shape_after_resample": shape, "class_locations": class_locations(seg, dataset)}
    (folder / f"{case_id}.json").write_text(json.dumps(props))


def write_plan_with_cases(root: Path, plans_name: str, datasets: list[str], n_cases: int = 3) -> Path:
    folder = root / plans_name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(plans_for(plans_name, datasets)))
    for ds in datasets:
        prefix = "liver" if ds == LIVER else "spleen"
        for i in range(n_cases):
            write_case(folder / "3d_fullres", ds, f"{prefix}_{i:03d}", seed=i + (0 if ds == LIVER else 100))
    return folder / "plans.json"


def write_benchmark_inputs(root: Path) -> Path:
    """preprocessed/ with the joint plan TextPlans_001_002 and both per-dataset plans, all cached."""
    write_plan_with_cases(root, "TextPlans_001_002", [LIVER, SPLEEN])
    for ds in (LIVER, SPLEEN):
        write_plan_with_cases(root, ds, [ds])
    return root
