"""Turn raw cases into the npz/json cache one configuration trains on, and undo it for inference.

Per case, as nnU-Net v2 does: read -> crop to the nonzero region -> normalise (before resampling, so the
nonzero mask still fits the image exactly) -> resample to the configuration's spacing -> sample voxel
locations per class for foreground oversampling.
"""
from __future__ import annotations

import json
import multiprocessing
import re
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from textnnunet.dataset.description import (
    Case,
    DatasetDescription,
    load_dataset,
    load_dataset_folder,
    test_cases,
    training_cases,
)
from textnnunet.errors import UserError
from textnnunet.imageio.sitk_io import ImageGeometry, from_canonical, read_image, read_label, to_canonical
from textnnunet.preprocessing.cropping import crop_to_nonzero_with_mask
from textnnunet.preprocessing.normalization import intensity_group_of, normalization_for, normalize
from textnnunet.preprocessing.resampling import (
    anti_alias,
    DEFAULT_SEPARATE_Z_THRESHOLD,
    compute_new_shape,
    resample_and_threshold,
    resample_image,
    resample_label_map,
    resample_volume,
    separate_z_axis,
)
from textnnunet.utils.files import as_read_back_from_json, atomic_savez_compressed, atomic_write_json, load_json
from textnnunet.utils.plans import Plans

MAX_LOCATIONS_PER_CLASS = 2000
LOCATION_SEED = 1234
TEST_SUBFOLDER = "imagesTs"
_INT16 = np.iinfo(np.int16)


# ----------------------------------------------------------------------------------------- plan access
def get_configuration(plans: Plans | dict, configuration_name: str) -> dict:
    """The configuration's JSON (a UserError naming the plan and the available ones when it has none such)."""
    return Plans.of(plans).configuration(configuration_name).to_json()


def is_2d(configuration: dict) -> bool:
    arch = configuration.get("architecture", {})
    if "conv_dims" in arch:
        return int(arch["conv_dims"]) == 2
    return len(configuration.get("patch_size", [0, 0, 0])) == 2


def target_spacing_for(configuration: dict, original_spacing: Sequence[float]) -> list[float]:
    """The (z, y, x) spacing a case is resampled to; 2d configurations keep the case's own slice spacing."""
    spacing = [float(s) for s in configuration["spacing"]]
    if is_2d(configuration):
        return [float(original_spacing[0]), *spacing[-2:]]
    if len(spacing) != 3:
        raise UserError(f"plans configuration: 3d spacing needs 3 values, got {spacing}")
    return spacing


def _resampling_settings(configuration: dict) -> dict:
    r = configuration.get("resampling", {})
    return {
        "image_order": int(r.get("image_order", 3)),
        "label_order": int(r.get("label_order", 1)),
        "order_z": int(r.get("order_z", 0)),
        "threshold": float(r.get("separate_z_anisotropy_threshold", DEFAULT_SEPARATE_Z_THRESHOLD)),
        "anti_aliasing": bool(r.get("anti_aliasing", False)),  # plans before it (and nnU-Net's rule): off
    }


def class_values_for(plans: Plans | dict, desc: DatasetDescription) -> dict[str, list[int]]:
    """Annotated class -> label values of one dataset, from the plan's label space (else its dataset.json)."""
    per_dataset = Plans.of(plans).label_space.datasets
    if desc.name in per_dataset:
        return {str(k): [int(v) for v in vals] for k, vals in per_dataset[desc.name].items()}
    return {k: list(v) for k, v in desc.classes.items()}


# ----------------------------------------------------------------------------------------- one case
def _case_id_from_file(image_file: Path) -> str:
    return re.sub(r"_\d{4}$", "", Path(image_file).name.split(".")[0])


def sample_class_locations(
    seg: np.ndarray, class_label_values: dict[str, Sequence[int]], seed: int = LOCATION_SEED,
    max_per_class: int = MAX_LOCATIONS_PER_CLASS,
) -> dict[str, list[list[int]]]:
    """Up to `max_per_class` (z, y, x) voxels per class where `seg` holds one of the class's label values.

    Regions count every listed value, so "liver" [1, 2] also samples the tumour. The seed is fixed so a
    re-run writes identical caches.
    """
    rng = np.random.default_rng(seed)
    locations: dict[str, list[list[int]]] = {}
    for name, values in class_label_values.items():
        coords = np.argwhere(np.isin(seg, list(values)))
        if len(coords) > max_per_class:
            coords = coords[np.sort(rng.choice(len(coords), max_per_class, replace=False))]
        locations[name] = coords.astype(int).tolist()
    return locations


def _read_seg(label_file: Path, image_shape: Sequence[int]) -> np.ndarray:
    seg, geometry = read_label(label_file)
    if tuple(geometry.shape) != tuple(image_shape):
        raise UserError(f"{label_file}: shape {geometry.shape} differs from its image's shape {tuple(image_shape)}")
    if seg.size and (seg.min() < _INT16.min or seg.max() > _INT16.max):
        raise UserError(f"{label_file}: label values outside the int16 range")
    return seg.astype(np.int16)


def preprocess_case(
    image_files: Sequence[Path],
    label_file: Path | None,
    plans: dict,
    configuration_name: str,
    class_label_values: dict[str, list[int]] | None = None,
    case_id: str | None = None,
    dataset_name: str = "",
    modality: str | None = None,
) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Preprocess one case: (data float32 (c,z,y,x), seg int16 (1,z,y,x) or None, properties).

    `modality`: the intensity group to normalise as (a plan of CT and MR datasets); by default the dataset's.
    """
    configuration = get_configuration(plans, configuration_name)
    group = intensity_group_of(plans, dataset_name, modality)
    settings = _resampling_settings(configuration)
    data, original_geometry = read_image(image_files)
    seg = _read_seg(Path(label_file), data.shape[1:]) if label_file is not None else None
    # Work in one canonical orientation so every dataset shows the network the same anatomy layout.
    data, geometry = to_canonical(data, original_geometry)
    if seg is not None:
        seg = to_canonical(seg[None], original_geometry)[0][0]

    data, seg, bbox, nonzero = crop_to_nonzero_with_mask(data, seg)
    shape_after_crop = data.shape[1:]
    # nnU-Net's masked z-score region: the nonzero body plus anything labelled.
    norm_mask = nonzero if seg is None else (nonzero | (seg > 0))
    data = normalize(data, plans, configuration, mask=norm_mask, group=group)

    spacing = list(geometry.spacing)
    target = target_spacing_for(configuration, spacing)
    new_shape = compute_new_shape(shape_after_crop, spacing, target)
    if settings["anti_aliasing"]:
        data = anti_alias(data, spacing, target)
    data = resample_image(data, spacing, target, new_shape, order=settings["image_order"],
                          order_z=settings["order_z"], separate_z_threshold=settings["threshold"])
    if seg is not None:
        seg = resample_label_map(seg, spacing, target, new_shape, order=settings["label_order"],
                                 order_z=settings["order_z"], separate_z_threshold=settings["threshold"])

    properties = {
        "case_id": case_id if case_id is not None else _case_id_from_file(image_files[0]),
        "dataset": dataset_name,
        "spacing_original": spacing,
        "origin": list(geometry.origin),
        "direction": list(geometry.direction),
        "shape_original": list(geometry.shape),
        "bbox_crop": bbox,
        "shape_after_crop": [int(s) for s in shape_after_crop],
        "spacing_target": target,
        "shape_after_resample": [int(s) for s in new_shape],
        "original_geometry": original_geometry.to_json(),
        "class_locations": sample_class_locations(seg, class_label_values or {}) if seg is not None else {},
    }
    return data.astype(np.float32, copy=False), (seg[None].astype(np.int16) if seg is not None else None), properties


# ----------------------------------------------------------------------------------------- cache files
def case_files(folder: Path, case_id: str) -> tuple[Path, Path]:
    return Path(folder) / f"{case_id}.npz", Path(folder) / f"{case_id}.json"


def is_case_done(folder: Path, case_id: str) -> bool:
    """Finished means both files exist and the json (written last) parses with the right case id."""
    npz, js = case_files(folder, case_id)
    if not (npz.is_file() and js.is_file()):
        return False
    try:
        with open(js) as f:
            props = json.load(f)
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(props, dict) and props.get("case_id") == case_id


def finished_case_ids(folder: Path) -> list[str]:
    """Ids of the finished cases in a cache folder (each has its .npz and, written last, its .json)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.npz") if not p.name.startswith(".") and is_case_done(folder, p.stem))


def _remove_stale_files(folder: Path, case_id: str) -> None:
    """Drop an unfinished case's leftovers: its json first (so it never pairs with a new npz) and temp files."""
    npz, js = case_files(folder, case_id)
    js.unlink(missing_ok=True)
    for target in (npz, js):
        # atomic_path names its temp files ".<target name>.<random><suffix>" beside the target.
        for tmp in Path(folder).glob(f".{target.name}.*"):
            tmp.unlink(missing_ok=True)


def save_case(folder: Path, data: np.ndarray, seg: np.ndarray | None, properties: dict) -> None:
    npz, js = case_files(folder, properties["case_id"])
    arrays = {"data": data} if seg is None else {"data": data, "seg": seg}
    atomic_savez_compressed(npz, **arrays)
    atomic_write_json(js, properties)  # last: its presence marks the case finished


def load_case(folder: Path, case_id: str) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Read one cached case: (data float32 (c,z,y,x), seg int16 (1,z,y,x) or None, properties)."""
    npz, js = case_files(folder, case_id)
    if not npz.is_file():
        raise UserError(f"{npz}: preprocessed case not found (run textnnunet_preprocess)")
    properties = load_json(js)
    with np.load(npz) as f:
        data = f["data"]
        seg = f["seg"] if "seg" in f.files else None
    return data, seg, properties


# ----------------------------------------------------------------------------------------- whole dataset
def _process_job(job: tuple) -> str:
    case, plans, configuration_name, class_values, folder, dataset_name, with_label = job
    label = case.label_file if with_label else None
    data, seg, props = preprocess_case(case.image_files, label, plans, configuration_name, class_values,
                                       case_id=case.case_id, dataset_name=dataset_name)
    save_case(folder, data, seg, props)
    return case.case_id


SIGNATURE_FILE = "preprocessing_signature.json"


def preprocessing_signature(plans: Plans | dict, configuration_name: str, class_values: dict,
                            dataset: str = "") -> dict:
    """Everything in a plan that changes the cached arrays (not patch size, batch size or topology)."""
    plans = Plans.of(plans)
    configuration = get_configuration(plans, configuration_name)
    keys = ("spacing", "normalization_schemes", "use_mask_for_norm", "resampling")
    signature = {
        "configuration": {k: configuration.get(k) for k in keys},
        "is_2d": is_2d(configuration),
        "intensity_properties": plans.foreground_intensity_properties,
        "class_values": {k: [int(v) for v in vals] for k, vals in class_values.items()},
    }
    if len(plans.intensity_groups) > 1:  # plans of one modality keep the signature they always had
        signature["intensity_group"] = normalization_for(plans, configuration, intensity_group_of(plans, dataset))
    return as_read_back_from_json(signature)


def cache_signature(folder: Path) -> dict | None:
    path = Path(folder) / SIGNATURE_FILE
    return load_json(path) if path.is_file() else None


def preprocess_dataset(
    plans: dict,
    configuration_name: str,
    desc: DatasetDescription,
    output_folder: Path,
    num_processes: int = 1,
    overwrite: bool = False,
    include_test: bool = False,
    class_label_values: dict[str, list[int]] | None = None,
) -> dict[str, int]:
    """Write `<output_folder>/<case>.npz|.json` for every training case (test cases to imagesTs/ if asked).

    Finished cases are skipped unless `overwrite`, so an interrupted run resumes where it stopped.
    Returns {"done": cases written, "skipped": cases already finished}.
    """
    get_configuration(plans, configuration_name)  # fail before any work on a bad name
    output_folder = Path(output_folder)
    values = class_label_values if class_label_values is not None else class_values_for(plans, desc)
    work: list[tuple[Case, Path, bool]] = [(c, output_folder, True) for c in training_cases(desc)]
    if include_test:
        work += [(c, output_folder / TEST_SUBFOLDER, False) for c in test_cases(desc)]

    # A cache made under other settings (re-planned spacing, normalisation, label values) is stale as a whole.
    signature = preprocessing_signature(plans, configuration_name, values, desc.name)
    recorded = cache_signature(output_folder)
    if recorded != signature:
        if recorded is not None and not overwrite:
            print(f"{output_folder}: made with other plan settings, preprocessing it again")
            overwrite = True
        output_folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(output_folder / SIGNATURE_FILE, signature)

    jobs, skipped = [], 0
    for case, folder, with_label in work:
        if with_label and case.label_file is None:
            raise UserError(f"{desc.folder / 'labelsTr'}: no label file for training case '{case.case_id}'")
        if not overwrite and is_case_done(folder, case.case_id):
            skipped += 1
            continue
        folder.mkdir(parents=True, exist_ok=True)
        _remove_stale_files(folder, case.case_id)
        jobs.append((case, plans, configuration_name, values, folder, desc.name, with_label))

    desc_text = f"{desc.name} {configuration_name}"
    if num_processes <= 1 or len(jobs) <= 1:
        for job in tqdm(jobs, desc=desc_text, disable=not jobs):
            _process_job(job)
    else:
        # spawn: workers start clean instead of inheriting the parent's threads (torch, BLAS) mid-state.
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(min(num_processes, len(jobs))) as pool:
            for _ in tqdm(pool.imap_unordered(_process_job, jobs), total=len(jobs), desc=desc_text):
                pass
    return {"done": len(jobs), "skipped": skipped}


def run_preprocessing(
    plans_path: Path,
    configurations: Sequence[str],
    raw_root: Path,
    num_processes: int = 1,
    overwrite: bool = False,
    include_test: bool = False,
) -> dict[str, dict[str, dict[str, int]]]:
    """Preprocess every dataset of a plan for each named configuration.

    Output: `<plans folder>/<data_identifier>/<DatasetName>/`. Returns counts per configuration and dataset.
    """
    plans_path = Path(plans_path)
    plans = Plans.load(plans_path)
    for name in configurations:
        if not plans.has_configuration(name):
            available = ", ".join(plans.configuration_names) or "none"
            raise UserError(f"{plans_path}: configuration '{name}' not in the plan (available: {available})")
    if not plans.datasets:
        raise UserError(f"{plans_path}: 'datasets' is missing or empty")
    per_dataset = plans.label_space.datasets
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for name in configurations:
        identifier = plans.configuration(name).data_identifier
        counts[name] = {}
        for dataset_name in plans.datasets:
            if dataset_name not in per_dataset:
                raise UserError(f"{plans_path}: label_space.datasets has no entry for '{dataset_name}'")
            desc = load_dataset(raw_root, dataset_name)
            values = {k: [int(v) for v in vals] for k, vals in per_dataset[dataset_name].items()}
            counts[name][dataset_name] = preprocess_dataset(
                plans, name, desc, plans_path.parent / identifier / dataset_name, num_processes=num_processes,
                overwrite=overwrite, include_test=include_test, class_label_values=values,
            )
    return counts


def ensure_preprocessed(
    plans_path: Path,
    configuration_name: str,
    raw_root: Path | None,
    num_processes: int = 1,
    log=print,
) -> list[str]:
    """Make a plan's cache of one configuration complete and current; preprocess only where it is not.

    The lazy path of the per-dataset (baseline) caches, which textnnunet_plan_and_preprocess leaves out unless
    asked (--baselines): each dataset whose cache lacks a training case or was made with other plan settings is
    preprocessed with `preprocess_dataset`, exactly as `run_preprocessing` does it (finished cases are kept, a
    stale cache is redone). Without `raw_root`, or for a dataset `raw_root` does not hold, the cache must already be
    there and match the plan. Returns the datasets it preprocessed.
    """
    plans_path = Path(plans_path)
    plans = Plans.load(plans_path)
    if not plans.has_configuration(configuration_name):
        available = ", ".join(plans.configuration_names) or "none"
        raise UserError(f"{plans_path}: configuration '{configuration_name}' not in the plan (available: {available})")
    if not plans.datasets:
        raise UserError(f"{plans_path}: 'datasets' is missing or empty")
    identifier = plans.configuration(configuration_name).data_identifier
    done = []
    for dataset_name in plans.datasets:
        values = plans.label_space.datasets.get(dataset_name)
        if values is None:
            raise UserError(f"{plans_path}: label_space.datasets has no entry for '{dataset_name}'")
        values = {k: [int(v) for v in vals] for k, vals in values.items()}
        folder = plans_path.parent / identifier / dataset_name
        recorded = cache_signature(folder)
        stale = recorded is not None and recorded != preprocessing_signature(plans, configuration_name, values,
                                                                              dataset_name)
        finished = set(finished_case_ids(folder))
        source = Path(raw_root) / dataset_name if raw_root is not None else None
        if source is None or not source.is_dir():  # nothing to make it from: what is there must do
            if stale or not finished:
                state = "made with other plan settings" if stale else "not preprocessed"
                where = f"{raw_root} has no {dataset_name}" if source is not None else \
                    "pass --raw (or set TEXTNNUNET_raw)"
                raise UserError(f"{folder}: {state}; {where} to preprocess it")
            continue
        desc = load_dataset_folder(source)
        cases = training_cases(desc)
        missing = [c.case_id for c in cases if c.case_id not in finished]
        if not stale and not missing:
            continue
        state = "made with other plan settings" if stale else f"{len(missing)} of {len(cases)} cases"
        log(f"preprocessing {dataset_name} with plan {plans.plans_name} ({configuration_name}): {state}")
        preprocess_dataset(plans, configuration_name, desc, folder, num_processes=num_processes,
                           class_label_values=values)
        done.append(dataset_name)
    return done


# ----------------------------------------------------------------------------------------- inverse
def _check_restorable(probabilities: np.ndarray, properties: dict) -> None:
    expected = tuple(properties["shape_after_resample"])
    if tuple(probabilities.shape[1:]) != expected:
        raise ValueError(f"probabilities shape {probabilities.shape[1:]} != shape_after_resample {expected}")


def _to_original_layout(canonical: np.ndarray, properties: dict) -> np.ndarray:
    """Undo the canonical reorientation of a (k, z, y, x) array on the canonical grid (a no-op if none)."""
    if "original_geometry" not in properties:
        return canonical
    canonical_geometry = ImageGeometry(tuple(properties["spacing_original"]), tuple(properties["origin"]),
                                       tuple(properties["direction"]), tuple(properties["shape_original"]))
    return from_canonical(canonical, canonical_geometry, ImageGeometry.from_json(properties["original_geometry"]))


def _crop_slicer(properties: dict) -> tuple[slice, ...]:
    bbox = [[int(lo), int(hi)] for lo, hi in properties["bbox_crop"]]
    box_shape = tuple(hi - lo for lo, hi in bbox)
    if box_shape != tuple(int(s) for s in properties["shape_after_crop"]):
        raise ValueError(f"bbox {bbox} does not fit shape_after_crop {properties['shape_after_crop']}")
    return tuple(slice(lo, hi) for lo, hi in bbox)


def restore_to_original(
    probabilities: np.ndarray,
    properties: dict,
    order: int = 1,
    order_z: int = 0,
    separate_z_threshold: float = DEFAULT_SEPARATE_Z_THRESHOLD,
) -> np.ndarray:
    """Map (k, z, y, x) probabilities from preprocessed space back onto the original image grid (float32).

    The original grid includes the input's own orientation: the canonical reorientation is undone last.

    Resample to the cropped shape at the original spacing, then paste into the original shape (0 outside
    the crop, where the image was empty). One class at a time, straight into the output array. For masks use
    `restore_masks`, which never holds the full-resolution float maps.
    """
    _check_restorable(probabilities, properties)
    slicer = _crop_slicer(properties)
    axis = separate_z_axis(properties["spacing_target"], properties["spacing_original"], separate_z_threshold)
    canonical = np.zeros((probabilities.shape[0], *[int(s) for s in properties["shape_original"]]), np.float32)
    for k, prob in enumerate(probabilities):
        canonical[(k, *slicer)] = resample_probability_channel(prob, properties["shape_after_crop"], axis, order,
                                                               order_z)
    return _to_original_layout(canonical, properties)


def resample_probability_channel(prob: np.ndarray, shape: Sequence[int], axis: int | None, order: int = 1,
                                 order_z: int = 0) -> np.ndarray:
    """One class's probabilities resampled to `shape` (float32); a hook the benchmarks time."""
    return resample_volume(prob, shape, axis, order, order_z)


def per_channel_thresholds(threshold: float | Sequence[float], channels: int,
                           what: str = "probability channels") -> list[float]:
    """One probability threshold per channel: a single one repeated, or one given per channel (checked; the error
    names the channels as `what`)."""
    thresholds = [float(threshold)] * channels if np.ndim(threshold) == 0 else [float(t) for t in threshold]
    if len(thresholds) != channels:
        raise ValueError(f"{channels} {what} but {len(thresholds)} thresholds")
    return thresholds


def restore_masks(
    probabilities: np.ndarray,
    properties: dict,
    threshold: float | Sequence[float] = 0.5,
    order: int = 1,
    order_z: int = 0,
    separate_z_threshold: float = DEFAULT_SEPARATE_Z_THRESHOLD,
) -> list[np.ndarray]:
    """Binary masks (uint8, the input's own layout) of `restore_to_original(probabilities, properties) > threshold`.

    `threshold`: one for every class, or one per class (postprocessing.json's per-class thresholds).
    Each class is resampled slab by slab and thresholded as it goes, pasted into its uint8 mask and
    reoriented: peak memory is a few slabs plus the masks, not K full-resolution float maps. Equal to
    thresholding `restore_to_original` up to float32 rounding at the threshold itself.
    """
    _check_restorable(probabilities, properties)
    thresholds = per_channel_thresholds(threshold, len(probabilities))
    slicer = _crop_slicer(properties)
    shape = tuple(int(s) for s in properties["shape_original"])
    masks = []
    for prob, channel_threshold in zip(probabilities, thresholds):
        full = np.zeros((1, *shape), dtype=np.uint8)
        threshold_channel(prob, full[(0, *slicer)], properties, channel_threshold, order, order_z,
                          separate_z_threshold)
        masks.append(_to_original_layout(full, properties)[0])
    return masks


def threshold_channel(prob: np.ndarray, out: np.ndarray, properties: dict, threshold: float, order: int = 1,
                      order_z: int = 0, separate_z_threshold: float = DEFAULT_SEPARATE_Z_THRESHOLD) -> np.ndarray:
    """One class: resampled to the cropped original grid and thresholded into `out` (uint8)."""
    return resample_and_threshold(prob, properties["shape_after_crop"], properties["spacing_target"],
                                  properties["spacing_original"], threshold, out=out, order=order, order_z=order_z,
                                  separate_z_threshold=separate_z_threshold)
