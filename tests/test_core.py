"""Core helpers: folders from env vars, dataset.json parsing, image IO geometry, atomic writes."""
import json

import numpy as np
import pytest
import SimpleITK as sitk

from textnnunet.dataset.description import (
    find_dataset_folder,
    load_dataset,
    normalise_class_name,
    training_cases,
)
from textnnunet.errors import UserError
from textnnunet.imageio.sitk_io import ImageGeometry, read_geometry, read_image, read_label, write_image
from textnnunet.paths import joint_plans_name, resolve_folder, resolve_folders
from textnnunet.utils.files import atomic_write_json, load_json


def test_missing_env_var_names_the_variable(monkeypatch):
    monkeypatch.delenv("TEXTNNUNET_raw", raising=False)
    with pytest.raises(UserError, match="TEXTNNUNET_raw is not set"):
        resolve_folder("raw")


def test_cli_override_wins_over_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TEXTNNUNET_results", str(tmp_path / "env"))
    assert resolve_folder("results", tmp_path / "flag") == (tmp_path / "flag").resolve()
    folders = resolve_folders(raw=tmp_path, required=("raw",))
    assert folders.preprocessed is None or folders.preprocessed.is_absolute()


def test_joint_plans_name_sorted_and_padded():
    assert joint_plans_name([3, 1, 2, 2]) == "TextPlans_001_002_003"


@pytest.mark.parametrize("raw,expected", [("Liver_Tumor", "liver tumor"), ("  left-Kidney ", "left kidney"),
                                           ("kidney__cyst", "kidney cyst")])
def test_normalise_class_name(raw, expected):
    assert normalise_class_name(raw) == expected


def _write_dataset(root, labels, name="Dataset007_Test", n=2, channels=("CT",)):
    folder = root / name
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    for i in range(n):
        for c in range(len(channels)):
            sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 6), np.int16)),
                            str(folder / "imagesTr" / f"case_{i:03d}_{c:04d}.nii.gz"))
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 6), np.uint8)), str(folder / "labelsTr" / f"case_{i:03d}.nii.gz"))
    meta = {"channel_names": {str(i): c for i, c in enumerate(channels)}, "labels": labels, "numTraining": n,
            "file_ending": ".nii.gz"}
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder


def test_dataset_json_regions_and_cases(tmp_path):
    _write_dataset(tmp_path, {"background": 0, "Liver": [1, 2], "liver_tumor": 2})
    desc = load_dataset(tmp_path, 7)
    assert desc.classes == {"liver": (1, 2), "liver tumor": (2,)}
    assert desc.declared_label_values == (0, 1, 2)
    cases = training_cases(desc)
    assert [c.case_id for c in cases] == ["case_000", "case_001"]
    assert cases[0].label_file.name == "case_000.nii.gz"
    assert load_dataset(tmp_path, "Dataset007_Test").name == "Dataset007_Test"


def test_dataset_errors_name_the_problem(tmp_path):
    with pytest.raises(UserError, match="no folder Dataset009"):
        find_dataset_folder(tmp_path, 9)
    folder = _write_dataset(tmp_path, {"background": 0, "a": 1})
    (folder / "dataset.json").write_text("{not json")
    with pytest.raises(UserError, match="dataset.json: not valid JSON"):
        load_dataset(tmp_path, 7)
    (folder / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "a": 1}}))
    with pytest.raises(UserError, match="missing key"):
        load_dataset(tmp_path, 7)


def test_image_round_trip_keeps_geometry(tmp_path):
    arr = np.random.default_rng(0).normal(size=(5, 6, 7)).astype(np.float32)
    geo = ImageGeometry(spacing=(5.0, 0.8, 0.7), origin=(10.0, -20.0, 3.5),
                        direction=(-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0), shape=(5, 6, 7))
    write_image(arr, geo, tmp_path / "x.nii.gz")
    data, geo2 = read_image([tmp_path / "x.nii.gz"])
    assert data.shape == (1, 5, 6, 7)
    np.testing.assert_allclose(data[0], arr, rtol=1e-6)
    assert geo2.matches(geo)
    assert read_geometry(tmp_path / "x.nii.gz") == geo2  # the header alone gives the same geometry
    assert not list(tmp_path.glob(".x.nii.gz*")), "temporary file left behind"


def test_read_errors_are_user_errors(tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"definitely not nifti")
    with pytest.raises(UserError, match="bad.nii.gz: cannot be read"):
        read_image([bad])
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5), np.float32)), str(tmp_path / "flat.nii.gz"))
    with pytest.raises(UserError, match="expected a 3D image, found 2D"):
        read_label(tmp_path / "flat.nii.gz")
    with pytest.raises(UserError, match="expected a 3D image, found 2D"):
        read_geometry(tmp_path / "flat.nii.gz")
    with pytest.raises(UserError, match="bad.nii.gz: cannot be read"):
        read_geometry(bad)
    with pytest.raises(UserError, match="file not found"):
        read_image([tmp_path / "missing.nii.gz"])


def test_atomic_json_round_trip(tmp_path):
    atomic_write_json(tmp_path / "a" / "b.json", {"x": np.float32(1.5), "y": np.arange(3)})
    assert load_json(tmp_path / "a" / "b.json") == {"x": 1.5, "y": [0, 1, 2]}
