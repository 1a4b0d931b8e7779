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


def label_map_of(dataset: str) -> np.ndarray:
    """Every cached case's label map: liver (1) + tumour (2), or spleen (1)."""
    seg = np.zeros(SHAPE, dtype=np.int16)
    if dataset == LIVER:
        seg[1:5, 12:18, 12:18] = 1
        seg[2:4, 14:16, 14:16] = 2
    else:
        seg[7:11, 1:5, 1:5] = 1
    return seg


def write_case(folder: Path, dataset: str, case_id: str, seed: int) -> None:
    """A cached case with identity geometry and no crop; liver (1) + tumour (2), or spleen (1)."""
    rng = np.random.default_rng(seed)
    seg = label_map_of(dataset)
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


# ------------------------------------------------------------------------ raw data and a genuine-looking nnU-Net
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
NNUNET_MODEL = "nnUNetTrainer__nnUNetPlans__3d_fullres"


def geometry_for(shape, spacing=(1.0, 1.0, 1.0)):
    from textnnunet.imageio.sitk_io import ImageGeometry

    return ImageGeometry(tuple(float(s) for s in spacing), (0.0, 0.0, 0.0), IDENTITY, tuple(shape))


def dataset_json(labels: dict, num_training: int) -> dict:
    return {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": num_training, "file_ending": ".nii.gz"}


def write_raw_dataset(raw: Path, name: str, labels: dict, label_maps: dict, spacing=(1.0, 1.0, 1.0),
                      test: bool = False) -> Path:
    """A raw dataset with label maps (labelsTr, or imagesTs + labelsTs when `test`) in identity geometry."""
    from textnnunet.imageio.sitk_io import write_image

    folder = Path(raw) / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset.json").write_text(json.dumps(dataset_json(labels, 0 if test else len(label_maps))))
    for case_id, label in label_maps.items():
        geometry = geometry_for(label.shape, spacing)
        labels_folder = folder / ("labelsTs" if test else "labelsTr")
        write_image(label.astype(np.uint8), geometry, labels_folder / f"{case_id}.nii.gz")
        image = (label > 0).astype(np.float32) * 100.0
        write_image(image, geometry, folder / ("imagesTs" if test else "imagesTr") / f"{case_id}_0000.nii.gz")
    return folder


def write_nnunet_model(results: Path, dataset: str, labels: dict, predictions: dict, spacing=(1.0, 1.0, 1.0),
                       fold: int = 0, dataset_name: str | None = None) -> Path:
    """What nnUNetv2_train leaves behind: dataset.json, plans.json, fold_<k>/{checkpoint_final.pth, debug.json,
    validation/<case>.nii.gz + summary.json}; `predictions` are the validation label maps."""
    import torch

    from textnnunet.imageio.sitk_io import write_image

    folder = Path(results) / dataset / NNUNET_MODEL
    fold_folder = folder / f"fold_{fold}"
    (fold_folder / "validation").mkdir(parents=True, exist_ok=True)
    (folder / "dataset.json").write_text(json.dumps(dataset_json(labels, 3)))
    (folder / "plans.json").write_text(json.dumps({
        "dataset_name": dataset_name or dataset, "plans_name": "nnUNetPlans",
        "configurations": {"3d_fullres": {"batch_size": 2, "patch_size": [8, 16, 16]}}}))
    torch.save({"network_weights": {"conv.weight": torch.zeros(4, 1, 3, 3, 3), "conv.bias": torch.zeros(4),
                                    "norm.running_mean": torch.zeros(4)},
                "current_epoch": 3, "init_args": {"device": torch.device("cpu"), "fold": fold},
                "logging": {"epoch_start_timestamps": [0.0, 10.0, 20.0], "epoch_end_timestamps": [5.0, 15.0, 25.0]}},
               fold_folder / "checkpoint_final.pth")
    (fold_folder / "debug.json").write_text(json.dumps({"num_iterations_per_epoch": "250", "device": "cpu"}))
    (fold_folder / "validation" / "summary.json").write_text("{}")
    for case_id, label in predictions.items():
        write_image(label.astype(np.uint8), geometry_for(label.shape, spacing),
                    fold_folder / "validation" / f"{case_id}.nii.gz")
    return folder
