"""Cropping, normalisation and the npz/json cache writer (resume, overwrite, inverse for inference)."""
import json
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from textnnunet.dataset.description import load_dataset
from textnnunet.errors import UserError
from textnnunet.preprocessing.cropping import create_nonzero_mask, crop_to_nonzero, uncrop
from textnnunet.preprocessing.normalization import CTNormalization, ZScoreNormalization, normalize
from textnnunet.preprocessing.preprocessor import (
    is_case_done,
    load_case,
    preprocess_case,
    preprocess_dataset,
    restore_to_original,
    run_preprocessing,
)

DATASET = "Dataset001_Tiny"
SHAPE = (8, 20, 22)  # (z, y, x)
SPACING = (2.0, 0.8, 0.8)  # (z, y, x)
CLASSES = {"liver": [1, 2], "liver tumor": [2]}
PROPS = {"mean": 50.0, "median": 50.0, "std": 25.0, "min": -80.0, "max": 300.0,
         "percentile_00_5": -20.0, "percentile_99_5": 150.0}


# ----------------------------------------------------------------------------------------- fixtures
def _write(array, path, spacing=SPACING, origin=(10.0, -5.0, 3.0)):
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(tuple(float(s) for s in spacing[::-1]))
    img.SetOrigin(origin)
    sitk.WriteImage(img, str(path))


def _make_case(rng, shape=SHAPE):
    """A body box (nonzero) in a zero surround, a liver blob (1) with a tumour (2) inside."""
    img = np.zeros(shape, dtype=np.float32)
    body = (slice(1, shape[0] - 1), slice(3, shape[1] - 2), slice(2, shape[2] - 4))
    img[body] = rng.normal(40, 10, size=img[body].shape)
    seg = np.zeros(shape, dtype=np.uint8)
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    r = np.sqrt(((zz - 4) * 2.0) ** 2 + ((yy - 10) * 0.8) ** 2 + ((xx - 10) * 0.8) ** 2)
    seg[r < 5] = 1
    seg[r < 2.2] = 2
    img[seg == 1] += 60
    img[seg == 2] += 120
    return img, seg


@pytest.fixture()
def raw_root(tmp_path):
    root = tmp_path / "raw"
    ds = root / DATASET
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (ds / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        img, seg = _make_case(rng)
        _write(img, ds / "imagesTr" / f"case{i}_0000.nii.gz")
        _write(seg, ds / "labelsTr" / f"case{i}.nii.gz")
    img, _ = _make_case(rng)
    _write(img, ds / "imagesTs" / "test0_0000.nii.gz")
    meta = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": [1, 2], "liver_tumor": 2},
            "numTraining": 3, "file_ending": ".nii.gz"}
    (ds / "dataset.json").write_text(json.dumps(meta))
    return root


def _plans(scheme="CTNormalization"):
    arch = {"conv_dims": 3, "n_stages": 2, "features_per_stage": [4, 8], "kernel_sizes": [[3, 3, 3]] * 2,
            "strides": [[1, 1, 1], [2, 2, 2]], "n_conv_per_stage": [1, 1], "n_conv_per_stage_decoder": [1]}
    common = {"batch_size": 2, "normalization_schemes": [scheme], "use_mask_for_norm": [False],
              "resampling": {"image_order": 3, "label_order": 1, "order_z": 0,
                             "separate_z_anisotropy_threshold": 3.0}}
    return {
        "plans_name": DATASET, "datasets": [DATASET], "channel_names": {"0": "CT"}, "file_ending": ".nii.gz",
        "label_space": {"classes": [{"name": n, "synonyms": []} for n in CLASSES],
                        "datasets": {DATASET: CLASSES}},
        "foreground_intensity_properties_per_channel": {"0": dict(PROPS)},
        "memory_target_gb": 1.0, "planner": "test",
        "configurations": {
            "3d_fullres": {**common, "data_identifier": "3d_fullres", "spacing": [1.0, 1.6, 1.6],
                           "patch_size": [8, 8, 8], "median_image_size_in_voxels": [12, 9, 9],
                           "architecture": arch},
            "2d": {**common, "data_identifier": "2d", "spacing": [1.6, 1.6], "patch_size": [8, 8],
                   "median_image_size_in_voxels": [9, 9], "architecture": {**arch, "conv_dims": 2}},
        },
    }


# ----------------------------------------------------------------------------------------- cropping
def test_crop_uncrop_round_trip_and_hole_filling():
    data = np.zeros((2, 6, 7, 8), dtype=np.float32)
    data[0, 1:4, 2:6, 3:7] = 5.0
    data[1, 2:5, 2:5, 2:4] = -1.0  # the second channel widens the box
    data[0, 2, 3, 4] = 0.0  # enclosed hole: must stay inside the mask
    seg = (data[0] > 0).astype(np.int16)
    mask = create_nonzero_mask(data)
    assert mask[2, 3, 4]
    cropped, cseg, bbox = crop_to_nonzero(data, seg)
    assert bbox == [[1, 5], [2, 6], [2, 7]]
    assert cropped.shape == (2, 4, 4, 5) and cseg.shape == (4, 4, 5)
    np.testing.assert_array_equal(uncrop(cropped, bbox, data.shape[1:]), data)
    np.testing.assert_array_equal(uncrop(cseg[None], bbox, seg.shape)[0], seg)
    filled = uncrop(np.ones((1, 4, 4, 5)), bbox, data.shape[1:], fill=-3)
    assert filled[0, 0, 0, 0] == -3 and filled[0, 1, 2, 2] == 1


def test_crop_all_zero_keeps_full_extent():
    data = np.zeros((1, 3, 4, 5), dtype=np.float32)
    cropped, seg, bbox = crop_to_nonzero(data)
    assert seg is None and cropped.shape == data.shape and bbox == [[0, 3], [0, 4], [0, 5]]


# ----------------------------------------------------------------------------------------- normalisation
def test_ct_normalization_clips_and_standardises():
    img = np.array([[[-1000.0, -20.0, 0.0, 50.0, 150.0, 3000.0]]], dtype=np.float32)
    out = CTNormalization(intensity_properties=PROPS).run(img)
    expected = (np.array([-20.0, -20.0, 0.0, 50.0, 150.0, 150.0]) - 50.0) / 25.0
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-6)
    assert out.dtype == np.float32
    zero_std = CTNormalization(intensity_properties={**PROPS, "std": 0.0}).run(img)
    assert np.all(np.isfinite(zero_std))


def test_zscore_with_and_without_mask():
    rng = np.random.default_rng(1)
    img = np.zeros((4, 6, 6), dtype=np.float32)
    mask = np.zeros(img.shape, dtype=bool)
    mask[1:3, 1:5, 1:5] = True
    img[mask] = rng.normal(100, 7, size=mask.sum())
    masked = ZScoreNormalization(use_mask_for_norm=True).run(img, mask)
    assert abs(masked[mask].mean()) < 1e-4 and abs(masked[mask].std() - 1) < 1e-4
    assert np.all(masked[~mask] == 0)  # outside stays untouched
    plain = ZScoreNormalization(use_mask_for_norm=False).run(img, mask)
    assert abs(plain.mean()) < 1e-4 and abs(plain.std() - 1) < 1e-4
    assert np.all(plain[~mask] != 0)


def test_normalize_dispatches_per_channel_and_rejects_bad_plans():
    data = np.stack([np.full((2, 3, 3), 400.0), np.arange(18, dtype=np.float32).reshape(2, 3, 3)])
    plans = {"foreground_intensity_properties_per_channel": {"0": PROPS, "1": PROPS}}
    conf = {"normalization_schemes": ["CTNormalization", "NoNormalization"], "use_mask_for_norm": [False, False]}
    out = normalize(data, plans, conf)
    np.testing.assert_allclose(out[0], (150.0 - 50.0) / 25.0)
    np.testing.assert_array_equal(out[1], data[1])
    with pytest.raises(UserError, match="unknown normalization scheme 'Foo'"):
        normalize(data, plans, {**conf, "normalization_schemes": ["Foo", "NoNormalization"]})
    with pytest.raises(UserError, match="2 image channel"):
        normalize(data, plans, {"normalization_schemes": ["CTNormalization"], "use_mask_for_norm": [False]})


# ----------------------------------------------------------------------------------------- cache writer
def test_preprocess_dataset_cache_contents(raw_root, tmp_path):
    plans = _plans()
    desc = load_dataset(raw_root, DATASET)
    out = tmp_path / "pp" / "3d_fullres" / DATASET
    counts = preprocess_dataset(plans, "3d_fullres", desc, out)
    assert counts == {"done": 3, "skipped": 0}
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"case{i}.{ext}" for i in range(3) for ext in ("npz", "json")] + ["preprocessing_signature.json"])

    with np.load(out / "case0.npz") as f:
        assert sorted(f.files) == ["data", "seg"]
        data, seg = f["data"], f["seg"]
    props = json.loads((out / "case0.json").read_text())
    assert data.dtype == np.float32 and seg.dtype == np.int16
    assert set(props) == {"case_id", "dataset", "spacing_original", "origin", "direction", "shape_original",
                          "bbox_crop", "shape_after_crop", "spacing_target", "shape_after_resample",
                          "class_locations", "original_geometry"}
    assert props["case_id"] == "case0" and props["dataset"] == DATASET
    np.testing.assert_allclose(props["spacing_original"], SPACING)
    np.testing.assert_allclose(props["origin"], (10.0, -5.0, 3.0))
    assert props["shape_original"] == list(SHAPE)
    assert props["bbox_crop"] == [[1, 7], [3, 18], [2, 18]]
    assert props["shape_after_crop"] == [6, 15, 16]
    assert props["spacing_target"] == [1.0, 1.6, 1.6]
    # 6 slices of 2 mm -> 12 of 1 mm; 15 and 16 voxels of 0.8 mm -> 8 of 1.6 mm.
    assert props["shape_after_resample"] == [12, 8, 8]
    assert data.shape == (1, 12, 8, 8) and seg.shape == (1, 12, 8, 8)
    assert set(np.unique(seg)) == {0, 1, 2}
    # CT normalisation: clipped to [-20, 150] before standardising.
    assert data.min() >= (-20 - 50) / 25 - 0.2 and data.max() <= (150 - 50) / 25 + 0.2

    locs = props["class_locations"]
    assert set(locs) == set(CLASSES)
    for name, values in CLASSES.items():
        pts = np.array(locs[name])
        assert 0 < len(pts) <= 2000
        assert np.all(np.isin(seg[0][tuple(pts.T)], values))
    liver = {tuple(p) for p in locs["liver"]}
    assert any(tuple(p) in liver for p in locs["liver tumor"])  # the liver region covers the tumour too

    data2, seg2, props2 = load_case(out, "case0")
    np.testing.assert_array_equal(data2, data)
    np.testing.assert_array_equal(seg2, seg)
    assert props2 == props


def test_class_locations_capped_and_reproducible(raw_root):
    plans = _plans()
    plans["configurations"]["3d_fullres"]["spacing"] = [0.5, 0.4, 0.4]  # upsample: many liver voxels
    files = [raw_root / DATASET / "imagesTr" / "case0_0000.nii.gz"]
    label = raw_root / DATASET / "labelsTr" / "case0.nii.gz"
    _, seg, props = preprocess_case(files, label, plans, "3d_fullres", CLASSES)
    assert (np.isin(seg, [1, 2])).sum() > 2000
    assert len(props["class_locations"]["liver"]) == 2000
    _, _, again = preprocess_case(files, label, plans, "3d_fullres", CLASSES)
    assert again["class_locations"] == props["class_locations"]
    assert props["case_id"] == "case0"


def test_2d_configuration_keeps_slice_spacing(raw_root):
    files = [raw_root / DATASET / "imagesTr" / "case1_0000.nii.gz"]
    data, seg, props = preprocess_case(files, None, _plans(), "2d", None)
    assert seg is None and props["class_locations"] == {}
    assert props["spacing_target"] == [2.0, 1.6, 1.6]
    assert data.shape == (1, 6, 8, 8)


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.name.startswith("case")}


def test_resume_after_interruption_redoes_only_unfinished(raw_root, tmp_path):
    plans, desc = _plans(), load_dataset(raw_root, DATASET)
    out = tmp_path / "pp" / DATASET
    preprocess_dataset(plans, "3d_fullres", desc, out)
    (out / "case1.json").unlink()  # interrupted before case1's json was written
    stale = out / ".case1.npz.abc123.npz"
    stale.write_bytes(b"half written")
    (out / "case2.json").write_text("{ not json")  # torn json counts as unfinished too
    before = _mtimes(out)
    time.sleep(0.02)

    counts = preprocess_dataset(plans, "3d_fullres", desc, out)
    assert counts == {"done": 2, "skipped": 1}
    after = _mtimes(out)
    assert not stale.exists()
    assert is_case_done(out, "case1") and is_case_done(out, "case2")
    for name in ("case0.npz", "case0.json"):
        assert after[name] == before[name]
    assert after["case1.npz"] != before["case1.npz"] and after["case2.json"] != before["case2.json"]
    assert sorted(after) == sorted(f"case{i}.{e}" for i in range(3) for e in ("npz", "json"))

    assert preprocess_dataset(plans, "3d_fullres", desc, out) == {"done": 0, "skipped": 3}
    assert _mtimes(out) == after


def test_overwrite_redoes_all(raw_root, tmp_path):
    plans, desc = _plans(), load_dataset(raw_root, DATASET)
    out = tmp_path / "pp" / DATASET
    preprocess_dataset(plans, "3d_fullres", desc, out)
    before = _mtimes(out)
    time.sleep(0.02)
    assert preprocess_dataset(plans, "3d_fullres", desc, out, overwrite=True) == {"done": 3, "skipped": 0}
    after = _mtimes(out)
    assert all(after[k] != before[k] for k in before)


def test_replanned_spacing_invalidates_the_cache(raw_root, tmp_path):
    plans, desc = _plans(), load_dataset(raw_root, DATASET)
    out = tmp_path / "pp" / DATASET
    preprocess_dataset(plans, "3d_fullres", desc, out)
    assert preprocess_dataset(plans, "3d_fullres", desc, out) == {"done": 0, "skipped": 3}
    plans["configurations"]["3d_fullres"]["patch_size"] = [4, 4, 4]  # not a preprocessing setting
    assert preprocess_dataset(plans, "3d_fullres", desc, out) == {"done": 0, "skipped": 3}
    plans["configurations"]["3d_fullres"]["spacing"] = [2.0, 2.0, 2.0]
    assert preprocess_dataset(plans, "3d_fullres", desc, out) == {"done": 3, "skipped": 0}
    assert load_case(out, "case0")[2]["spacing_target"] == [2.0, 2.0, 2.0]


def test_include_test_writes_imagesTs_without_seg(raw_root, tmp_path):
    plans, desc = _plans("ZScoreNormalization"), load_dataset(raw_root, DATASET)
    out = tmp_path / "pp" / DATASET
    counts = preprocess_dataset(plans, "3d_fullres", desc, out, include_test=True)
    assert counts == {"done": 4, "skipped": 0}
    data, seg, props = load_case(out / "imagesTs", "test0")
    assert seg is None and props["class_locations"] == {}
    assert abs(float(data.mean())) < 0.2  # z-scored
    assert not (out / "test0.npz").exists()


def test_run_preprocessing_folders_and_bad_configuration(raw_root, tmp_path):
    plans_path = tmp_path / "pp" / DATASET / "plans.json"
    plans_path.parent.mkdir(parents=True)
    plans_path.write_text(json.dumps(_plans()))
    with pytest.raises(UserError, match="configuration '3d_lowres' not in the plan"):
        run_preprocessing(plans_path, ["3d_fullres", "3d_lowres"], raw_root)
    assert not (plans_path.parent / "3d_fullres").exists()  # nothing started
    counts = run_preprocessing(plans_path, ["2d"], raw_root)
    assert counts == {"2d": {DATASET: {"done": 3, "skipped": 0}}}
    assert is_case_done(plans_path.parent / "2d" / DATASET, "case2")


def test_load_case_missing_is_user_error(tmp_path):
    with pytest.raises(UserError, match="preprocessed case not found"):
        load_case(tmp_path, "nope")


# ----------------------------------------------------------------------------------------- inverse
def test_restore_to_original_puts_blob_back(raw_root):
    files = [raw_root / DATASET / "imagesTr" / "case0_0000.nii.gz"]
    label = raw_root / DATASET / "labelsTr" / "case0.nii.gz"
    _, seg, props = preprocess_case(files, label, _plans(), "3d_fullres", CLASSES)
    # A "perfect prediction" in preprocessed space: probability 1 on the resampled liver.
    probs = np.stack([np.isin(seg[0], [1, 2]), seg[0] == 2]).astype(np.float32)
    restored = restore_to_original(probs, props)
    assert restored.shape == (2, *SHAPE) and restored.dtype == np.float32
    original = sitk.GetArrayFromImage(sitk.ReadImage(str(label)))
    liver = restored[0] > 0.5
    truth = original > 0
    dice = 2 * (liver & truth).sum() / (liver.sum() + truth.sum())
    assert dice > 0.85
    bbox = props["bbox_crop"]
    outside = np.ones(SHAPE, dtype=bool)
    outside[tuple(slice(lo, hi) for lo, hi in bbox)] = False
    assert np.all(restored[:, outside] == 0)
    with pytest.raises(ValueError):
        restore_to_original(probs[:, :-1], props)


@pytest.mark.parametrize("direction", [(-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0), (0, 1.0, 0, 1.0, 0, 0, 0, 0, 1.0)])
def test_non_canonical_orientation_round_trip(raw_root, tmp_path, direction):
    """Flipped or transposed inputs are preprocessed in LPS and predictions come back in the input's layout."""
    label = raw_root / DATASET / "labelsTr" / "case0.nii.gz"
    image = sitk.ReadImage(str(raw_root / DATASET / "imagesTr" / "case0_0000.nii.gz"))
    seg_img = sitk.ReadImage(str(label))
    for img in (image, seg_img):
        img.SetDirection(direction)
    sitk.WriteImage(image, str(tmp_path / "flip_0000.nii.gz"))
    sitk.WriteImage(seg_img, str(tmp_path / "flip.nii.gz"))
    _, seg, props = preprocess_case([tmp_path / "flip_0000.nii.gz"], tmp_path / "flip.nii.gz", _plans(),
                                    "3d_fullres", CLASSES)
    assert props["direction"] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    assert props["original_geometry"]["direction"] == list(direction)
    restored = restore_to_original(np.isin(seg[0], [1, 2])[None].astype(np.float32), props)
    truth = sitk.GetArrayFromImage(seg_img) > 0
    assert restored.shape[1:] == truth.shape
    liver = restored[0] > 0.5
    assert 2 * (liver & truth).sum() / (liver.sum() + truth.sum()) > 0.85


@pytest.mark.slow
def test_parallel_pool_matches_serial(raw_root, tmp_path):
    plans, desc = _plans(), load_dataset(raw_root, DATASET)
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    preprocess_dataset(plans, "3d_fullres", desc, serial)
    assert preprocess_dataset(plans, "3d_fullres", desc, parallel, num_processes=2) == {"done": 3, "skipped": 0}
    for i in range(3):
        a, b = load_case(serial, f"case{i}"), load_case(parallel, f"case{i}")
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        assert a[2] == b[2]
