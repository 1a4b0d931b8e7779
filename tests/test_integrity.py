"""verify_dataset_integrity: a clean phantom dataset passes; every kind of broken file is named."""
import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from textnnunet.dataset.description import load_dataset, load_dataset_folder
from textnnunet.dataset.integrity import assert_dataset_integrity, geometry_differences, verify_dataset_integrity
from textnnunet.demo.phantoms import generate_phantom_datasets
from textnnunet.errors import UserError
from textnnunet.imageio.sitk_io import ImageGeometry, read_image, read_label, write_image


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    generate_phantom_datasets(raw, size="small", seed=0)
    return raw


@pytest.fixture
def spleen(pristine, tmp_path):
    """A private copy of the small Dataset002_Spleen (4 training cases, 1 test case) to break."""
    folder = tmp_path / "Dataset002_Spleen"
    shutil.copytree(pristine / "Dataset002_Spleen", folder)
    return folder


def _problems(folder):
    return verify_dataset_integrity(load_dataset_folder(folder))


def _only_problem(folder, *fragments):
    problems = _problems(folder)
    assert len(problems) == 1, problems
    for fragment in fragments:
        assert fragment in problems[0], problems[0]
    return problems[0]


def test_clean_phantom_datasets_pass(pristine):
    for dataset_id in (1, 2, 3, 4):
        desc = load_dataset(pristine, dataset_id)
        assert verify_dataset_integrity(desc) == []
        assert_dataset_integrity(desc)


def test_parallel_check_finds_the_same_problems(spleen):
    (spleen / "labelsTr" / "spleen_001.nii.gz").unlink()
    desc = load_dataset_folder(spleen)
    assert verify_dataset_integrity(desc, num_processes=2) == verify_dataset_integrity(desc)


def test_corrupt_file_is_named(spleen):
    bad = spleen / "imagesTr" / "spleen_001_0000.nii.gz"
    bad.write_bytes(b"this is not a NIfTI file" * 10)
    _only_problem(spleen, str(bad), "cannot be read")


def test_label_geometry_mismatch_is_named(spleen):
    path = spleen / "labelsTr" / "spleen_002.nii.gz"
    labels, geometry = read_label(path)
    shifted = ImageGeometry(spacing=(geometry.spacing[0] * 1.5, *geometry.spacing[1:]),
                            origin=(geometry.origin[0] + 10, *geometry.origin[1:]),
                            direction=geometry.direction, shape=geometry.shape)
    write_image(labels.astype(np.uint8), shifted, path)
    problem = _only_problem(spleen, str(path), "geometry differs from its image", "spacing", "origin")
    assert "shape" not in problem and "direction" not in problem


def test_label_shape_mismatch_is_named(spleen):
    path = spleen / "labelsTr" / "spleen_000.nii.gz"
    labels, geometry = read_label(path)
    cropped = ImageGeometry(geometry.spacing, geometry.origin, geometry.direction, (geometry.shape[0] - 1,
                                                                                    *geometry.shape[1:]))
    write_image(labels[1:].astype(np.uint8), cropped, path)
    _only_problem(spleen, str(path), "shape (z,y,x)")


def test_undeclared_label_value_is_named(spleen):
    path = spleen / "labelsTr" / "spleen_003.nii.gz"
    labels, geometry = read_label(path)
    labels = labels.astype(np.uint8)
    labels[0, 0, :3] = 3
    write_image(labels, geometry, path)
    _only_problem(spleen, str(path), "label value(s) 3 not declared", "declared: 0, 1")


def test_missing_label_is_named(spleen):
    (spleen / "labelsTr" / "spleen_000.nii.gz").unlink()
    _only_problem(spleen, "spleen_000.nii.gz: missing", "has no label")


def test_numtraining_must_match_the_cases_found(spleen):
    (spleen / "imagesTr" / "spleen_003_0000.nii.gz").unlink()
    problems = _problems(spleen)
    assert any("numTraining is 4 but" in p and "holds 3 case(s)" in p for p in problems), problems
    assert any("spleen_003.nii.gz: label without an image" in p for p in problems), problems


def test_missing_channel_file_is_named(spleen):
    meta = json.loads((spleen / "dataset.json").read_text())
    meta["channel_names"] = {"0": "CT", "1": "CT"}
    (spleen / "dataset.json").write_text(json.dumps(meta))
    for folder in ("imagesTr", "imagesTs"):
        for first in sorted((spleen / folder).glob("*_0000.nii.gz")):
            if first.name != "spleen_002_0000.nii.gz":
                shutil.copy(first, first.with_name(first.name.replace("_0000", "_0001")))
    _only_problem(spleen, "spleen_002_0001.nii.gz: missing", "channel 1 of case 'spleen_002'")


def test_channels_with_different_geometry_are_named(spleen):
    meta = json.loads((spleen / "dataset.json").read_text())
    meta["channel_names"] = {"0": "CT", "1": "CT"}
    (spleen / "dataset.json").write_text(json.dumps(meta))
    for folder in ("imagesTr", "imagesTs"):
        for first in sorted((spleen / folder).glob("*_0000.nii.gz")):
            shutil.copy(first, first.with_name(first.name.replace("_0000", "_0001")))
    second = spleen / "imagesTr" / "spleen_001_0001.nii.gz"
    image = sitk.ReadImage(str(second))
    image.SetDirection((-1.0, 0, 0, 0, 1, 0, 0, 0, 1))
    sitk.WriteImage(image, str(second))
    _only_problem(spleen, str(second), "geometry differs from channel 0", "direction")


def test_nan_in_image_is_named(spleen):
    path = spleen / "imagesTr" / "spleen_002_0000.nii.gz"
    image, geometry = read_image([path])
    image = image[0].copy()
    image[1, 2, 3] = np.nan
    image[0, 0, 0] = np.inf
    write_image(image, geometry, path)
    _only_problem(spleen, str(path), "2 voxel(s) are NaN or Inf")


def test_test_images_are_checked_too(spleen):
    path = next((spleen / "imagesTs").glob("*.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((5, 6), np.int16)), str(path))
    _only_problem(spleen, str(path), "expected a 3D image")


def test_misnamed_and_foreign_files_are_named(spleen):
    (spleen / "imagesTr" / "spleen_009.nii.gz").write_bytes(b"")
    (spleen / "labelsTr" / "notes.txt").write_text("x")
    problems = _problems(spleen)
    assert any("spleen_009.nii.gz: image name is not <case>_<XXXX>.nii.gz" in p for p in problems), problems
    assert any("notes.txt: file ending is not '.nii.gz'" in p for p in problems), problems
    assert len(problems) == 2


def test_assert_lists_every_problem_and_counts_them(spleen):
    (spleen / "labelsTr" / "spleen_000.nii.gz").unlink()
    (spleen / "imagesTr" / "spleen_001_0000.nii.gz").write_bytes(b"garbage")
    with pytest.raises(UserError) as error:
        assert_dataset_integrity(load_dataset_folder(spleen))
    lines = str(error.value).splitlines()
    assert lines[0].endswith("Dataset002_Spleen: 2 integrity problem(s) found")
    assert len(lines) == 3 and "spleen_000.nii.gz" in lines[1] + lines[2] and "spleen_001_0000" in lines[1] + lines[2]


def test_geometry_differences_respect_the_tolerance():
    a = ImageGeometry((3.0, 2.5, 2.5), (0.0, 0.0, 0.0), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0), (10, 20, 20))
    nearly = ImageGeometry((3.0 + 1e-5, 2.5, 2.5), (1e-5, 0.0, 0.0), a.direction, a.shape)
    assert geometry_differences(a, nearly) == []
    off = ImageGeometry((3.0, 2.5, 2.5), (0.5, 0.0, 0.0), a.direction, a.shape)
    assert len(geometry_differences(a, off)) == 1 and geometry_differences(a, off)[0].startswith("origin")


def test_nan_is_found_in_formats_that_keep_it(tmp_path):
    folder = tmp_path / "Dataset009_Mha"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "a": 1},
                                                     "numTraining": 1, "file_ending": ".mha"}))
    image = np.zeros((4, 5, 6), np.float32)
    image[2, 2, 2] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(image), str(folder / "imagesTr" / "c_0000.mha"))
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((4, 5, 6), np.uint8)), str(folder / "labelsTr" / "c.mha"))
    _only_problem(folder, "c_0000.mha: 1 voxel(s) are NaN or Inf")
