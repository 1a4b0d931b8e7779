"""Dataset fingerprint: cropping to nonzero, spacings, foreground intensity statistics, files."""
import numpy as np
import pytest

from _planning_data import blob_case, make_dataset
from textnnunet.dataset.description import load_dataset
from textnnunet.errors import UserError
from textnnunet.experiment_planning.fingerprint import (
    SAMPLE_FILE, extract_fingerprint, load_fingerprint, nonzero_bbox, sample_foreground, save_fingerprint,
)


def _known_case():
    """Body nonzero in [2:8, 3:9, 4:12] of a (10, 12, 14) volume; ten labelled voxels valued 1..10."""
    image = np.zeros((10, 12, 14), dtype=np.float32)
    image[2:8, 3:9, 4:12] = 50.0
    label = np.zeros(image.shape, dtype=np.uint8)
    idx = np.argwhere(image > 0)[:10]
    for k, (z, y, x) in enumerate(idx):
        label[z, y, x] = 1
        image[z, y, x] = k + 1
    return [image], label, (3.0, 0.5, 0.75)


def test_fingerprint_of_a_hand_made_volume(tmp_path):
    make_dataset(tmp_path, "Dataset001_Known", {"0": "MR"}, {"background": 0, "lesion": 1},
                 {"case_a": _known_case()})
    desc = load_dataset(tmp_path, 1)
    fp, sample = extract_fingerprint(desc, samples_per_case=1000, progress=False)

    assert fp["dataset"] == "Dataset001_Known" and fp["num_cases"] == 1 and fp["case_ids"] == ["case_a"]
    assert fp["spacings"] == [[3.0, 0.5, 0.75]]
    assert fp["shapes_after_crop"] == [[6, 6, 8]]
    assert fp["median_relative_size_after_cropping"] == pytest.approx(6 * 6 * 8 / (10 * 12 * 14))
    # 1000 samples of 10 voxels: every voxel exactly 100 times, so the statistics are those of 1..10.
    values = np.arange(1, 11, dtype=np.float64)
    stats = fp["foreground_intensity_properties_per_channel"]["0"]
    assert stats["mean"] == pytest.approx(5.5) and stats["min"] == 1.0 and stats["max"] == 10.0
    assert stats["std"] == pytest.approx(values.std())
    repeated = np.repeat(values, 100)
    assert stats["median"] == pytest.approx(np.percentile(repeated, 50)) == 5.5
    assert stats["percentile_00_5"] == pytest.approx(np.percentile(repeated, 0.5))
    assert stats["percentile_99_5"] == pytest.approx(np.percentile(repeated, 99.5))
    assert sample.dtype == np.float32 and sample.shape == (1, 1000)
    assert sorted(np.unique(sample)) == list(values)


def test_bbox_spans_all_channels_and_keeps_empty_images():
    image = np.zeros((2, 6, 7, 8), dtype=np.float32)
    image[0, 1, 2, 3] = 1
    image[1, 4, 5, 6] = -3  # negative values count as nonzero too
    assert nonzero_bbox(image) == [[1, 5], [2, 6], [3, 7]]
    assert nonzero_bbox(np.zeros((1, 3, 4, 5))) == [[0, 3], [0, 4], [0, 5]]


def test_sampling_is_bounded_equal_per_case_and_seeded():
    rng = lambda: np.random.default_rng(7)  # noqa: E731
    few = np.arange(3)[None]
    picked = sample_foreground(few, 8, rng())
    assert np.bincount(picked).tolist() in ([3, 3, 2], [3, 2, 3], [2, 3, 3])
    many = np.arange(1000)[None]
    a, b = sample_foreground(many, 50, rng()), sample_foreground(many, 50, rng())
    assert len(np.unique(a)) == 50 and np.array_equal(a, b)
    assert sample_foreground(np.zeros((1, 0)), 5, rng()).size == 0


def test_two_channels_several_cases_and_bounded_saved_sample(tmp_path):
    cases = {}
    for i in range(3):
        (img,), label, spacing = blob_case(spacing=(2.0 + i, 1.0, 1.0), seed=i, value=100.0 * (i + 1))
        cases[f"c{i}"] = ([img, 2 * img], label, spacing)
    make_dataset(tmp_path, "Dataset002_Two", {"0": "T1", "1": "T2"}, {"background": 0, "x": 1}, cases)
    desc = load_dataset(tmp_path, 2)
    fp, sample = extract_fingerprint(desc, samples_per_case=200, max_sample_per_channel=250, progress=False)
    assert [s[0] for s in fp["spacings"]] == [2.0, 3.0, 4.0]
    assert fp["shapes_after_crop"] == [[6, 16, 16]] * 3
    stats = fp["foreground_intensity_properties_per_channel"]
    # 200 samples per case from cubes of 100, 200, 300: statistics over all 600, channel 1 doubled.
    assert stats["0"]["mean"] == pytest.approx(200.0) and stats["1"]["mean"] == pytest.approx(400.0)
    assert stats["0"]["median"] == pytest.approx(200.0) and stats["0"]["max"] == 300.0
    assert sample.shape == (2, 250)
    assert np.allclose(sample[1], 2 * sample[0])  # the same voxels are sampled in every channel

    folder = tmp_path / "pre" / desc.name
    save_fingerprint(fp, sample, folder)
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temp files left over
    fp2, sample2 = load_fingerprint(folder)
    assert fp2 == fp and np.array_equal(sample2, sample)


def test_multiprocessing_gives_the_same_fingerprint(tmp_path):
    cases = {f"c{i}": blob_case(seed=i, value=10.0 * i + 5) for i in range(3)}
    make_dataset(tmp_path, "Dataset003_Mp", {"0": "CT"}, {"background": 0, "x": 1}, cases)
    desc = load_dataset(tmp_path, 3)
    serial = extract_fingerprint(desc, num_processes=1, samples_per_case=100, progress=False)
    parallel = extract_fingerprint(desc, num_processes=2, samples_per_case=100, progress=False)
    assert serial[0] == parallel[0] and np.array_equal(serial[1], parallel[1])


def test_user_errors(tmp_path):
    with pytest.raises(UserError, match="textnnunet_extract_fingerprint"):
        load_fingerprint(tmp_path / "nothing")
    (img,), label, spacing = blob_case()
    make_dataset(tmp_path, "Dataset004_Empty", {"0": "CT"}, {"background": 0, "x": 1},
                 {"c0": ([img], np.zeros_like(label), spacing)})
    with pytest.raises(UserError, match="no foreground voxels"):
        extract_fingerprint(load_dataset(tmp_path, 4), progress=False)
    make_dataset(tmp_path, "Dataset005_Shape", {"0": "CT"}, {"background": 0, "x": 1},
                 {"c0": ([img], label[:, :-1], spacing)})
    with pytest.raises(UserError, match="label shape"):
        extract_fingerprint(load_dataset(tmp_path, 5), progress=False)
    folder = tmp_path / "broken"
    save_fingerprint({"dataset": "x"}, np.zeros((1, 3)), folder)
    (folder / SAMPLE_FILE).write_text("not numpy")
    with pytest.raises(UserError, match="unreadable"):
        load_fingerprint(folder)


def test_real_ct_fingerprint(real_ct_folder, tmp_path):
    import json
    import os

    folder = tmp_path / "Dataset010_RealCT"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    for case, stem in (("big", "ct_abdomen_3mm"), ("slab", "ct_abdomen_small_3mm")):
        os.symlink(real_ct_folder / f"{stem}.nii.gz", folder / "imagesTr" / f"{case}_0000.nii.gz")
        os.symlink(real_ct_folder / f"{stem}_totalseg117_pred.nii.gz", folder / "labelsTr" / f"{case}.nii.gz")
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "spleen": 1, "liver": 5},
        "numTraining": 2, "file_ending": ".nii.gz"}))
    fp, sample = extract_fingerprint(load_dataset(tmp_path, 10), samples_per_case=2000, progress=False)
    assert fp["spacings"] == [[3.0, 3.0, 3.0]] * 2
    # Air is -1000 HU, not 0: cropping to nonzero keeps (almost) the whole CT.
    assert fp["median_relative_size_after_cropping"] > 0.9
    stats = fp["foreground_intensity_properties_per_channel"]["0"]
    assert -1100 <= stats["percentile_00_5"] < stats["median"] < stats["percentile_99_5"] <= 3100
    assert -200 < stats["median"] < 300  # labelled tissue is soft tissue and bone, in HU
    assert sample.shape == (1, 4000)


def _geometry(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), spacing=(2.5, 1.0, 1.0), shape=(10, 3, 4)):
    from textnnunet.imageio.sitk_io import ImageGeometry

    return ImageGeometry(spacing=spacing, origin=(0.0, 0.0, 0.0), direction=tuple(float(d) for d in direction),
                         shape=shape)


def test_label_margins_are_the_image_below_and_above_each_value_along_the_body_axis():
    from textnnunet.experiment_planning.fingerprint import label_margins_mm

    label = np.zeros((10, 3, 4), dtype=np.uint8)
    label[3:6, 1, 1] = 1  # slices 3-5 of 10 (LPS: index grows towards the head): 3 below, 4 above
    label[9, 0, 0] = 3  # at the top edge; value 2 absent
    assert label_margins_mm(label, _geometry()) == {"1": [7.5, 10.0], "3": [22.5, 0.0]}
    # The same anatomy stored feet-last (LPI: z flipped) gives the same margins: they are in the patient frame.
    flipped = _geometry(direction=(1, 0, 0, 0, 1, 0, 0, 0, -1))
    assert label_margins_mm(label[::-1].copy(), flipped) == {"1": [7.5, 10.0], "3": [22.5, 0.0]}
    assert label_margins_mm(np.zeros((4, 2, 2), np.uint8), _geometry(shape=(4, 2, 2))) == {}


def test_label_margins_follow_the_body_axis_whatever_the_storage():
    from textnnunet.experiment_planning.fingerprint import label_margins_mm

    lps = np.zeros((10, 3, 4), dtype=np.int16)
    lps[3:6, 1, 1] = 1
    # stored sagittally: array axes (x, z, y) of the LPS volume; file axes i = y (P), j = z (S), k = x (L)
    sagittal = np.ascontiguousarray(np.transpose(lps, (2, 0, 1)))
    direction = (0, 0, 1, 1, 0, 0, 0, 1, 0)  # columns: i -> +y, j -> +z, k -> +x
    assert label_margins_mm(sagittal, _geometry(direction=direction, spacing=(1.0, 2.5, 1.0), shape=(4, 10, 3))) \
        == {"1": [7.5, 10.0]}
    # slices tilted 30 degrees: the slice axis advances cos(30) of its spacing along the body axis
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    tilted = _geometry(direction=(1, 0, 0, 0, c, s, 0, -s, c))
    assert label_margins_mm(lps, tilted) == {"1": [pytest.approx(7.5 * c), pytest.approx(10.0 * c)]}
    # negative values are no class; a stray huge value does not cost memory in proportion to it
    odd = lps.copy()
    odd[0, 0, 0], odd[9, 2, 3] = -1, 30000
    assert label_margins_mm(odd, _geometry()) == {"1": [7.5, 10.0], "30000": [22.5, 0.0]}
    # one slice (2D data) has no body axis
    assert label_margins_mm(lps[4:5], _geometry(shape=(1, 3, 4))) == {}


def test_fingerprint_records_label_margins_per_case(tmp_path):
    make_dataset(tmp_path, "Dataset001_Known", {"0": "MR"}, {"background": 0, "lesion": 1},
                 {"case_a": _known_case()})
    fp, _ = extract_fingerprint(load_dataset(tmp_path, 1), samples_per_case=10, progress=False)
    # the ten labelled voxels lie on slice 2 of 10 (3 mm slices), the body (nonzero) on slices 2-7: margins are
    # measured on the body, as preprocessing crops it: 0 mm below, 15 mm above
    assert fp["label_margins_mm"] == [{"1": [0.0, 15.0]}]


def test_plan_reports_per_class_margins_and_notes_the_narrow_ones():
    from textnnunet.experiment_planning.planner import label_margins, narrow_label_margins

    label_space = {"datasets": {"A": {"liver": [1, 2], "spleen": [3]}, "B": {"liver": [1]}}}
    fingerprints = [
        {"dataset": "A", "label_margins_mm": [{"1": [30.0, 8.0], "2": [4.0, 20.0], "3": [50.0, 50.0]},
                                              {"1": [6.0, 2.0]}, {}]},
        {"dataset": "B", "label_margins_mm": [{"1": [60.0, 5.0]}]},
        {"dataset": "C"},  # a fingerprint from before the margins: left out
    ]
    margins = label_margins(label_space, fingerprints)
    # liver in A is the region {1, 2}: per case the smaller margin of its values on each side -> (4, 8) and (6, 2)
    assert margins["liver"]["A"] == {"inferior_mm": 5.0, "superior_mm": 5.0, "cases": 2}
    assert margins["liver"]["B"] == {"inferior_mm": 60.0, "superior_mm": 5.0, "cases": 1}
    assert margins["spleen"] == {"A": {"inferior_mm": 50.0, "superior_mm": 50.0, "cases": 1}}
    # a side is narrow only when no labelling dataset shows more: B shows the liver's underside, none its top
    assert narrow_label_margins(margins, 10.0) == [("liver", "above", 5.0)]
