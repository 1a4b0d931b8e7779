"""textnnunet_convert_dataset on miniature fakes of each public dataset's layout: every converted voxel, label value
and geometry checked against the source, the converted datasets pass the integrity check, their class names are the
lexicon's, and bad input gives one-line errors."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from converter_fakes import (
    Geometry,
    make_all_fakes,
    make_btcv,
    make_kits23,
    make_msd,
    random_image,
    write_volume,
)
from textnnunet.cli.convert_dataset import main as convert_main
from textnnunet.dataset.converters import CONVERTERS, LabelMapping, convert_dataset, get_converter
from textnnunet.dataset.converters.totalsegmentator import canonical_structure_name
from textnnunet.dataset.converters.writer import IN_PROGRESS_MARKER
from textnnunet.dataset.description import load_dataset_folder, normalise_class_name
from textnnunet.dataset.integrity import verify_dataset_integrity
from textnnunet.errors import UserError

ENDING = ".nii.gz"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Every fake converted once: [(fake, dataset folder)]."""
    root = tmp_path_factory.mktemp("sources")
    raw = tmp_path_factory.mktemp("raw")
    results = []
    for dataset_id, fake in enumerate(make_all_fakes(root), start=101):
        result = convert_dataset(get_converter(fake.source, fake.modality), fake.src, raw, dataset_id)
        results.append((fake, result))
    return raw, results


def _fake_ids(results):
    return [f"{fake.source}-{fake.dataset_name}" for fake, _ in results]


def _read(path: Path) -> tuple[np.ndarray, sitk.Image]:
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), image


def _assert_geometry(image: sitk.Image, geometry: Geometry, path: Path) -> None:
    assert image.GetDimension() == 3, path
    np.testing.assert_allclose(image.GetSpacing(), geometry.spacing, atol=1e-6, err_msg=str(path))
    np.testing.assert_allclose(image.GetOrigin(), geometry.origin, atol=1e-5, err_msg=str(path))
    np.testing.assert_allclose(image.GetDirection(), geometry.direction, atol=1e-6, err_msg=str(path))


# ----------------------------------------------------------------------------------------------- registry
def test_registry_offers_every_source_of_the_issue():
    assert list(CONVERTERS) == ["msd", "kits23", "btcv", "amos22", "word", "flare22", "totalsegmentator"]
    parser_choices = next(a.choices for a in __import__("textnnunet.cli.convert_dataset", fromlist=["x"])
                          .build_parser()._actions if a.dest == "source")
    assert list(parser_choices) == list(CONVERTERS)


# ----------------------------------------------------------------------------------------------- content
def test_every_fake_is_converted_value_by_value_with_its_geometry(converted):
    _, results = converted
    for fake, result in results:
        folder = result.folder
        assert folder.name.endswith("_" + fake.dataset_name), folder
        for case in fake.cases:
            split = "Ts" if case.test else "Tr"
            for channel, expected in enumerate(case.channels):
                path = folder / f"images{split}" / f"{case.case_id}_{channel:04d}{ENDING}"
                array, image = _read(path)
                np.testing.assert_array_equal(array, expected, err_msg=str(path))
                assert array.dtype == expected.dtype, path
                _assert_geometry(image, case.geometry, path)
            assert not (folder / f"images{split}" / f"{case.case_id}_{len(case.channels):04d}{ENDING}").exists()
            label_path = folder / f"labels{split}" / f"{case.case_id}{ENDING}"
            if case.label is None:
                assert not label_path.exists(), label_path
                continue
            array, image = _read(label_path)
            np.testing.assert_array_equal(array, case.label, err_msg=str(label_path))
            assert np.issubdtype(array.dtype, np.integer)
            _assert_geometry(image, case.geometry, label_path)
        written = sorted(p.name for sub in ("imagesTr", "imagesTs") if (folder / sub).is_dir()
                         for p in (folder / sub).iterdir())
        expected = sorted(f"{c.case_id}_{i:04d}{ENDING}" for c in fake.cases for i in range(len(c.channels)))
        assert written == expected, fake.dataset_name  # nothing else (e.g. MSD's '._' files) came along


def test_dataset_json_declares_canonical_classes_channels_and_counts(converted):
    _, results = converted
    for fake, result in results:
        meta = json.loads((result.folder / "dataset.json").read_text())
        assert meta["channel_names"] == fake.channel_names
        assert meta["file_ending"] == ENDING
        assert meta["numTraining"] == sum(not c.test for c in fake.cases)
        assert meta["numTraining"] == result.num_training
        assert result.num_test == sum(c.test for c in fake.cases)
        labels = {k: tuple(v) if isinstance(v, list) else (v,) for k, v in meta["labels"].items()}
        assert labels.pop("background") == (0,)
        assert labels == fake.classes, fake.dataset_name
        for name in labels:  # lower-case words separated by spaces: the normalised form is the name itself
            assert normalise_class_name(name) == name
        assert not (result.folder / IN_PROGRESS_MARKER).exists()


def test_multichannel_msd_tasks_are_split_with_their_channel_names(converted):
    _, results = converted
    by_name = {fake.dataset_name: (fake, result) for fake, result in results}
    brain, result = by_name["BrainTumour"]
    assert json.loads((result.folder / "dataset.json").read_text())["channel_names"] == {
        "0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}
    assert len(brain.cases[0].channels) == 4
    assert (result.folder / "imagesTr" / f"{brain.cases[0].case_id}_0003{ENDING}").is_file()
    prostate, result = by_name["Prostate"]
    assert (result.folder / "imagesTs" / f"{prostate.cases[-1].case_id}_0001{ENDING}").is_file()


def test_region_syntax_where_a_class_contains_another(converted):
    _, results = converted
    meta = {fake.dataset_name: json.loads((r.folder / "dataset.json").read_text()) for fake, r in results}
    assert meta["KiTS23"]["labels"]["kidney"] == [1, 2, 3]
    assert meta["KiTS23"]["labels"]["kidney tumor"] == 2 and meta["KiTS23"]["labels"]["kidney cyst"] == 3
    assert meta["Liver"]["labels"]["liver"] == [1, 2]
    assert meta["TotalSegmentator"]["labels"]["left kidney"] == [3, 23]
    assert meta["TotalSegmentator"]["labels"]["left kidney cyst"] == 23
    assert "regions_class_order" not in meta["BTCV"]


def test_regions_class_order_turns_the_class_masks_back_into_the_label_map(converted):
    """nnU-Net paints each class's mask with its regions_class_order value, later ones on top: for every
    converter this must give back the label map the classes were cut from."""
    _, results = converted
    for fake, result in results:
        meta = json.loads((result.folder / "dataset.json").read_text())
        order = meta.get("regions_class_order")
        if order is None:
            continue
        classes = [(name, v if isinstance(v, list) else [v]) for name, v in meta["labels"].items()
                   if name != "background"]
        label_map = next(c.label for c in fake.cases if c.label is not None)
        painted = np.zeros_like(label_map)
        for (name, values), value in zip(classes, order):
            painted[np.isin(label_map, values)] = value
        np.testing.assert_array_equal(painted, label_map, err_msg=fake.dataset_name)


def test_label_mapping_refuses_written_values_without_a_class():
    with pytest.raises(ValueError):
        LabelMapping({"liver": (1,)}, {0: 0, 1: 1, 2: 2})
    mapping = LabelMapping({"liver": (1, 2), "liver tumor": (2,)}, {0: 0, 5: 1, 7: 2})
    assert mapping.lookup_table()[[0, 5, 7]].tolist() == [0, 1, 2]
    assert mapping.regions_class_order() == [1, 2]


def test_test_labels_are_written_where_the_source_has_them(converted):
    _, results = converted
    by_name = {fake.dataset_name: result for fake, result in results}
    assert by_name["WORD"].num_test_labels == 1 and (by_name["WORD"].folder / "labelsTs").is_dir()
    assert by_name["TotalSegmentator"].num_test_labels == 1
    for name in ("Liver", "KiTS23", "BTCV", "AMOS22CT", "AMOS22MR"):
        assert by_name[name].num_test >= 1 and by_name[name].num_test_labels == 0
        assert not (by_name[name].folder / "labelsTs").exists()


def test_amos22_modalities_go_to_separate_datasets(converted):
    _, results = converted
    by_name = {fake.dataset_name: result for fake, result in results}
    ct = {p.name for p in (by_name["AMOS22CT"].folder / "imagesTr").iterdir()}
    mr = {p.name for p in (by_name["AMOS22MR"].folder / "imagesTr").iterdir()}
    assert ct == {"amos_0001_0000.nii.gz", "amos_0008_0000.nii.gz", "amos_0500_0000.nii.gz"}  # 500 is still CT
    assert mr == {"amos_0507_0000.nii.gz", "amos_0540_0000.nii.gz"}
    assert json.loads((by_name["AMOS22MR"].folder / "dataset.json").read_text())["channel_names"] == {"0": "MR"}


def test_totalsegmentator_overlaps_are_reported(converted):
    _, results = converted
    result = next(r for fake, r in results if fake.source == "totalsegmentator")
    assert sorted(result.notes) == sorted([
        "s0000: 1 voxel(s) in both 'left kidney' and 'left kidney cyst' (kept 'left kidney cyst')",
        "s0000: 1 voxel(s) in both 'spleen' and 'costal cartilages' (kept 'costal cartilages')",
    ])
    report = json.loads((result.folder / "conversion_report.json").read_text())
    assert report["notes"] == result.notes


@pytest.mark.parametrize("structure, name", [
    ("kidney_left", "left kidney"), ("adrenal_gland_left", "left adrenal gland"),
    ("iliac_artery_right", "right iliac artery"), ("vertebrae_L1", "vertebra l1"), ("vertebrae_S1", "vertebra s1"),
    ("rib_left_1", "left rib 1"), ("rib_right_12", "right rib 12"), ("clavicula_left", "left clavicle"),
    ("iliac_vena_right", "right iliac vein"), ("portal_vein_and_splenic_vein", "portal vein and splenic vein"),
    ("lung_upper_lobe_left", "left lung upper lobe"), ("atrial_appendage_left", "left atrial appendage"),
])
def test_totalsegmentator_names_become_canonical(structure, name):
    assert canonical_structure_name(structure) == name


def test_converted_datasets_pass_the_integrity_check(converted):
    _, results = converted
    for fake, result in results:
        desc = load_dataset_folder(result.folder)
        assert verify_dataset_integrity(desc) == [], fake.dataset_name


def test_every_class_name_written_is_a_canonical_lexicon_name(converted):
    from textnnunet.text.lexicon import load_lexicon

    lexicon = load_lexicon()
    _, results = converted
    written = set()
    for _, result in results:
        written |= set(json.loads((result.folder / "dataset.json").read_text())["labels"]) - {"background"}
    assert len(written) > 117  # TotalSegmentator's and the others
    not_canonical = sorted(name for name in written if name not in lexicon)
    assert not_canonical == []


def test_every_msd_task_uses_canonical_lexicon_names():
    from textnnunet.dataset.converters.msd import MSD_TASKS
    from textnnunet.text.lexicon import load_lexicon

    lexicon = load_lexicon()
    names = {name for task in MSD_TASKS.values() for name in task.classes}
    assert len(MSD_TASKS) == 10
    assert sorted(name for name in names if name not in lexicon) == []


# ----------------------------------------------------------------------------------------------- bad input
def test_missing_source_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(UserError, match="source folder not found"):
        convert_dataset(get_converter("kits23"), tmp_path / "nowhere", tmp_path / "raw", 1)


def test_wrong_layout_names_what_was_expected(tmp_path):
    fake = make_btcv(tmp_path)
    with pytest.raises(UserError, match="case_XXXXX"):
        convert_dataset(get_converter("kits23"), fake.src, tmp_path / "raw", 1)
    with pytest.raises(UserError, match="not an MSD task folder"):
        convert_dataset(get_converter("msd"), fake.src, tmp_path / "raw", 1)
    with pytest.raises(UserError, match="no sXXXX/segmentations"):
        convert_dataset(get_converter("totalsegmentator"), fake.src, tmp_path / "raw", 1)
    assert not (tmp_path / "raw").exists() or not any((tmp_path / "raw").iterdir())


def test_msd_task_with_other_labels_is_refused(tmp_path):
    fake = make_msd(tmp_path, "Task09_Spleen", {"0": "CT"}, seed=4)
    meta = json.loads((fake.src / "dataset.json").read_text())
    meta["labels"]["2"] = "cancer"
    (fake.src / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match=r"labels \[1, 2\] do not match MSD Task Spleen"):
        convert_dataset(get_converter("msd"), fake.src, tmp_path / "raw", 9)


def test_msd_file_listed_but_missing_is_named(tmp_path):
    fake = make_msd(tmp_path, "Task09_Spleen", {"0": "CT"}, seed=4)
    (fake.src / "labelsTr" / "spleen_3.nii.gz").unlink()
    with pytest.raises(UserError, match=r"labelsTr/spleen_3.nii.gz: listed in .*dataset.json but missing"):
        convert_dataset(get_converter("msd"), fake.src, tmp_path / "raw", 9)


def test_label_value_outside_the_label_list_is_named(tmp_path):
    fake = make_kits23(tmp_path)
    label = fake.cases[1].label.copy()
    label[0, 0, 0] = 7
    path = fake.src / "dataset" / "case_00001" / "segmentation.nii.gz"
    write_volume(path, label, fake.cases[1].geometry)
    with pytest.raises(UserError, match=r"segmentation.nii.gz: label value\(s\) 7 are not in"):
        convert_dataset(get_converter("kits23"), fake.src, tmp_path / "raw", 5)


def test_label_on_another_grid_is_refused(tmp_path):
    fake = make_kits23(tmp_path)
    path = fake.src / "dataset" / "case_00000" / "segmentation.nii.gz"
    write_volume(path, fake.cases[0].label, Geometry(spacing=(0.8, 0.8, 2.5), origin=(0.0, 0.0, 0.0)))
    with pytest.raises(UserError, match="segmentation.nii.gz: geometry differs from its image imaging.nii.gz"):
        convert_dataset(get_converter("kits23"), fake.src, tmp_path / "raw", 5)


def test_unreadable_file_stops_the_cli_with_one_line_and_resumes_after_the_fix(tmp_path, capsys):
    fake = make_kits23(tmp_path)
    broken = fake.src / "dataset" / "case_00001" / "imaging.nii.gz"
    good = broken.read_bytes()
    broken.write_bytes(b"not an image at all")
    raw = tmp_path / "raw"
    argv = ["--from", "kits23", str(fake.src), "-d", "5", "-o", str(raw)]
    with pytest.raises(SystemExit) as exit_info:
        convert_main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and str(broken) in err and "cannot be read as an image" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    folder = raw / "Dataset005_KiTS23"
    assert (folder / IN_PROGRESS_MARKER).is_file() and not (folder / "dataset.json").exists()
    done = folder / "imagesTr" / "case_00000_0000.nii.gz"
    assert done.is_file() and not (folder / "imagesTr" / "case_00001_0000.nii.gz").exists()
    os.utime(done, (1_000_000, 1_000_000))

    broken.write_bytes(good)
    with pytest.raises(SystemExit) as exit_info:
        convert_main(argv)
    assert exit_info.value.code == 0
    assert done.stat().st_mtime == 1_000_000  # the finished case was not converted again
    assert (folder / "dataset.json").is_file() and not (folder / IN_PROGRESS_MARKER).exists()
    assert "Dataset005_KiTS23: 2 training case(s), 1 test case(s)" in capsys.readouterr().out


def test_unfinished_conversion_with_other_settings_is_not_resumed(tmp_path):
    fake = make_kits23(tmp_path)
    raw = tmp_path / "raw"
    folder = raw / "Dataset005_KiTS23"
    folder.mkdir(parents=True)
    (folder / IN_PROGRESS_MARKER).write_text(json.dumps({"converter": "kits23", "source": "/elsewhere"}))
    with pytest.raises(UserError, match="unfinished conversion with other settings"):
        convert_dataset(get_converter("kits23"), fake.src, raw, 5)


def test_existing_dataset_is_kept_unless_overwrite(tmp_path):
    fake = make_kits23(tmp_path)
    raw = tmp_path / "raw"
    result = convert_dataset(get_converter("kits23"), fake.src, raw, 5)
    (result.folder / "imagesTr" / "stray.txt").write_text("mine")
    with pytest.raises(UserError, match="dataset already exists"):
        convert_dataset(get_converter("kits23"), fake.src, raw, 5)
    assert (result.folder / "imagesTr" / "stray.txt").exists()
    convert_dataset(get_converter("kits23"), fake.src, raw, 5, overwrite=True)
    assert not (result.folder / "imagesTr" / "stray.txt").exists()
    assert verify_dataset_integrity(load_dataset_folder(result.folder)) == []


def test_foreign_folder_and_taken_dataset_id_are_refused(tmp_path):
    fake = make_kits23(tmp_path)
    raw = tmp_path / "raw"
    (raw / "Dataset005_KiTS23").mkdir(parents=True)
    (raw / "Dataset005_KiTS23" / "notes.txt").write_text("someone's files")
    with pytest.raises(UserError, match="was not made by textnnunet_convert_dataset"):
        convert_dataset(get_converter("kits23"), fake.src, raw, 5)
    shutil.rmtree(raw / "Dataset005_KiTS23")
    (raw / "Dataset005_Liver").mkdir()
    with pytest.raises(UserError, match="dataset id 5 is already used"):
        convert_dataset(get_converter("kits23"), fake.src, raw, 5)


def test_modality_is_only_chosen_where_the_source_has_several():
    assert get_converter("amos22").modality == "CT"
    assert get_converter("amos22", "mr").modality == "MR"
    with pytest.raises(UserError, match="--modality MR: not available for --from kits23"):
        get_converter("kits23", "MR")
    with pytest.raises(UserError, match="takes the channels from the source"):
        get_converter("msd", "CT")


def test_multichannel_file_with_the_wrong_channel_count_is_named(tmp_path):
    fake = make_msd(tmp_path, "Task05_Prostate", {"0": "T2", "1": "ADC"}, seed=5)
    path = fake.src / "imagesTr" / "prostate_3.nii.gz"
    write_volume(path, np.stack(random_image(np.random.default_rng(0), 3)), Geometry())
    with pytest.raises(UserError, match=r"prostate_3.nii.gz: 3 channel\(s\) found, the dataset declares 2"):
        convert_dataset(get_converter("msd"), fake.src, tmp_path / "raw", 5)


def test_cli_needs_a_raw_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TEXTNNUNET_raw", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        convert_main(["--from", "kits23", str(tmp_path), "-d", "5"])
    assert exit_info.value.code == 2
    assert "TEXTNNUNET_raw is not set" in capsys.readouterr().err


def test_label_values_are_remapped_through_the_mapping_with_the_source_geometry(tmp_path):
    from textnnunet.dataset.converters.base import remap_label_image

    source = np.array([0, 5, 7, 5, 0, 7], dtype=np.int16).reshape(1, 2, 3)
    image = sitk.GetImageFromArray(source)
    image.SetSpacing((0.5, 0.7, 2.0))
    image.SetOrigin((1.0, -2.0, 3.0))
    image.SetDirection((0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    mapping = LabelMapping({"liver": (1, 2), "liver tumor": (2,)}, {0: 0, 5: 1, 7: 2})
    written = remap_label_image(image, mapping, tmp_path / "label.nii.gz")
    assert sitk.GetArrayFromImage(written).tolist() == [[[0, 1, 2], [1, 0, 2]]]
    assert sitk.GetArrayFromImage(written).dtype == np.uint8
    assert (written.GetSpacing(), written.GetOrigin(), written.GetDirection()) == (
        image.GetSpacing(), image.GetOrigin(), image.GetDirection())


def test_documentation_lists_every_class_each_converter_writes():
    """documentation/datasets.md is the user's label mapping: it must not drift from the converters' tables."""
    from textnnunet.dataset.converters import amos22, btcv, flare22, kits23, word
    from textnnunet.dataset.converters.msd import MSD_TASKS
    from textnnunet.dataset.converters.totalsegmentator import TOTALSEGMENTATOR_V2_STRUCTURES

    text = (Path(__file__).resolve().parents[1] / "documentation" / "datasets.md").read_text()
    tables = [task.classes for task in MSD_TASKS.values()] + [
        kits23.KITS23_CLASSES, btcv.BTCV_CLASSES, amos22.AMOS22_CLASSES, word.WORD_CLASSES, flare22.FLARE22_CLASSES]
    missing = sorted({name for table in tables for name in table if f"`{name}`" not in text})
    missing += [s for s, v in TOTALSEGMENTATOR_V2_STRUCTURES.items()
                if f"{v} `{s}` → {canonical_structure_name(s)} |" not in text]
    assert missing == []
    for name in CONVERTERS:
        assert f"`--from {name}" in text


def test_worker_processes_write_the_same_dataset_and_name_is_used(tmp_path):
    fake = make_kits23(tmp_path)
    one = convert_dataset(get_converter("kits23"), fake.src, tmp_path / "raw1", 5)
    two = convert_dataset(get_converter("kits23"), fake.src, tmp_path / "raw2", 5, name="Kidneys", num_processes=2)
    assert two.folder.name == "Dataset005_Kidneys"
    assert json.loads((two.folder / "dataset.json").read_text())["name"] == "Kidneys"
    for path in sorted(one.folder.rglob("*.nii.gz")):
        twin = two.folder / path.relative_to(one.folder)
        np.testing.assert_array_equal(_read(path)[0], _read(twin)[0])


def test_converted_ct_datasets_plan_together_after_the_integrity_check(converted, tmp_path, capsys):
    """textnnunet_plan_and_preprocess --verify_dataset_integrity on every converted CT dataset at once (datasets
    with other channels are planned on their own until CT and MR plan jointly)."""
    from textnnunet.cli.plan_and_preprocess import plan_and_preprocess_entry

    raw, results = converted
    ct_ids = [str(101 + i) for i, (fake, _) in enumerate(results) if fake.channel_names == {"0": "CT"}]
    others = [str(101 + i) for i, (fake, _) in enumerate(results) if fake.channel_names != {"0": "CT"}]
    assert len(ct_ids) == 7 and len(others) == 3
    for ids in [ct_ids] + [[i] for i in others]:
        with pytest.raises(SystemExit) as exit_info:
            plan_and_preprocess_entry(["-d", *ids, "--verify_dataset_integrity", "--no_preprocessing", "-np", "1",
                                       "--preset", "cpu", "--raw", str(raw), "--preprocessed", str(tmp_path / "pre")])
        output = capsys.readouterr()
        assert exit_info.value.code == 0, output.err
        assert output.out.count("integrity check passed") == len(ids)


def test_dataset_name_and_raw_folder_are_checked(tmp_path):
    fake = make_kits23(tmp_path)
    with pytest.raises(UserError, match="dataset name 'my kidneys'"):
        convert_dataset(get_converter("kits23"), fake.src, tmp_path / "raw", 5, name="my kidneys")
    (tmp_path / "raw_file").write_text("")
    with pytest.raises(UserError, match="raw data folder is a file"):
        convert_dataset(get_converter("kits23"), fake.src, tmp_path / "raw_file", 5)
    with pytest.raises(UserError, match="dataset id 1000: must be between 1 and 999"):
        convert_dataset(get_converter("kits23"), fake.src, tmp_path / "raw", 1000)


def test_totalsegmentator_v1_or_incomplete_cases_are_named(tmp_path):
    from converter_fakes import make_totalsegmentator

    fake = make_totalsegmentator(tmp_path)
    segmentations = fake.src / "s0001" / "segmentations"
    shutil.copy(segmentations / "heart.nii.gz", segmentations / "heart_myocardium.nii.gz")
    with pytest.raises(UserError, match=r"s0001/segmentations/heart_myocardium.nii.gz: not a TotalSegmentator v2 "
                                        r"structure \(1 unknown file\(s\); is this the v1 dataset\?\)"):
        convert_dataset(get_converter("totalsegmentator"), fake.src, tmp_path / "raw", 5, overwrite=True)
    (segmentations / "heart_myocardium.nii.gz").unlink()
    (segmentations / "sternum.nii.gz").unlink()
    with pytest.raises(UserError, match=r"s0001/segmentations/sternum.nii.gz: missing \(1 of the 117"):
        convert_dataset(get_converter("totalsegmentator"), fake.src, tmp_path / "raw", 5, overwrite=True)


def test_training_image_without_its_label_is_named(tmp_path):
    from converter_fakes import make_flare22, make_word

    fake = make_btcv(tmp_path)
    (fake.src / "RawData" / "Training" / "label" / "label0002.nii.gz").unlink()
    with pytest.raises(UserError, match=r"label0002.nii.gz: missing \(the label of img0002.nii.gz\)"):
        convert_dataset(get_converter("btcv"), fake.src, tmp_path / "raw", 5)
    fake = make_flare22(tmp_path)
    (fake.src / "FLARE22Train" / "labels" / "FLARE22_Tr_0001.nii.gz").unlink()
    with pytest.raises(UserError, match=r"FLARE22_Tr_0001.nii.gz: missing"):
        convert_dataset(get_converter("flare22"), fake.src, tmp_path / "raw", 6)
    fake = make_word(tmp_path)
    (fake.src / "labelsVal" / "word_0101.nii.gz").unlink()
    with pytest.raises(UserError, match=r"labelsVal/word_0101.nii.gz: missing"):
        convert_dataset(get_converter("word"), fake.src, tmp_path / "raw", 7)
