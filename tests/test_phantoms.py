"""The synthetic abdominal CT generator: partial labels, determinism, geometry, dataset.json validity."""
import time

import numpy as np
import pytest
import SimpleITK as sitk

from textnnunet.demo import phantoms
from textnnunet.dataset.description import load_dataset, training_cases
from textnnunet.dataset.description import test_cases as list_test_cases
from textnnunet.demo.phantoms import (
    ANATOMY_CODES,
    PHANTOM_DATASETS,
    case_geometry,
    case_rng,
    generate_case,
    generate_phantom_datasets,
    phantom_spec,
    structure_mask,
)
from textnnunet.errors import UserError
from textnnunet.imageio.sitk_io import read_image, read_label

A = ANATOMY_CODES


@pytest.fixture(scope="module")
def small_raw(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    start = time.perf_counter()
    generate_phantom_datasets(raw, size="small", seed=0)
    return raw, time.perf_counter() - start


def _label_values(desc, cases):
    return set().union(*(np.unique(read_label(c.label_file)[0]).tolist() for c in cases))


def test_small_datasets_are_quick_to_generate(small_raw):
    # The brief asks for < 5 s on an idle machine; leave room for a CPU shared with other test runs.
    assert small_raw[1] < 15.0


def test_dataset_json_is_valid_for_every_dataset(small_raw):
    raw, _ = small_raw
    expected_classes = {
        1: {"liver": (1, 2), "liver tumor": (2,)},
        2: {"spleen": (1,)},
        3: {"kidney": (1, 2), "kidney tumor": (2,)},
        4: {"liver": (1, 2), "liver tumor": (2,), "spleen": (3,), "kidney": (4, 5), "kidney tumor": (5,),
            "pancreas": (6,)},
    }
    for spec in PHANTOM_DATASETS:
        desc = load_dataset(raw, spec.dataset_id)
        assert desc.name == spec.name
        assert desc.channel_names == {"0": "CT"} and desc.is_ct
        assert desc.file_ending == ".nii.gz"
        assert desc.classes == expected_classes[spec.dataset_id]
        assert desc.num_training == spec.num_training["small"]
        assert set(desc.synonyms) <= set(desc.classes) and desc.synonyms
        if spec.dataset_id in (1, 3):
            assert desc.raw["regions_class_order"] == [1, 2]
        assert not (desc.folder / phantoms.IN_PROGRESS_MARKER).exists()


def test_each_dataset_holds_only_its_own_labels(small_raw):
    raw, _ = small_raw
    liver, spleen, kidney, abdomen = (load_dataset(raw, i) for i in (1, 2, 3, 4))
    assert _label_values(liver, training_cases(liver)) == {0, 1, 2}
    assert _label_values(spleen, training_cases(spleen)) == {0, 1}
    assert _label_values(kidney, training_cases(kidney)) == {0, 1, 2}
    assert len(training_cases(liver)) == 5 and len(list_test_cases(liver)) == 1
    assert all(c.label_file is None for c in list_test_cases(spleen))  # like the public challenges: no test labels


def test_dataset004_is_a_fully_labelled_test_set(small_raw):
    raw, _ = small_raw
    desc = load_dataset(raw, 4)
    assert desc.num_training == 0 and not (desc.folder / "imagesTr").exists()
    cases = list_test_cases(desc)
    assert len(cases) == 2 and all(c.label_file is not None for c in cases)
    assert _label_values(desc, cases) == {0, 1, 2, 3, 4, 5, 6}
    spec = phantom_spec(4)
    for index, case in enumerate(cases):
        labels, _ = read_label(case.label_file)
        anatomy = generate_case(spec, index, "small").anatomy
        for structure in ("liver", "spleen", "kidney", "pancreas"):
            np.testing.assert_array_equal(labels == spec.label_values[structure], structure_mask(anatomy, structure))


def test_unlabelled_organs_stay_in_the_image(small_raw):
    """Dataset002 labels only the spleen, but its images still show a liver and kidneys as background."""
    raw, _ = small_raw
    spec = phantom_spec(2)
    case = generate_case(spec, 0, "small")
    image, geometry = read_image([raw / spec.name / "imagesTr" / "spleen_000_0000.nii.gz"])
    labels, label_geometry = read_label(raw / spec.name / "labelsTr" / "spleen_000.nii.gz")
    np.testing.assert_array_equal(image[0], case.image)
    np.testing.assert_array_equal(labels, case.labels)
    assert geometry.matches(case.geometry) and label_geometry.matches(case.geometry)
    liver = case.anatomy == A["liver"]
    kidney = case.anatomy == A["kidney"]
    assert liver.sum() > 500 and kidney.sum() > 100
    assert not labels[liver].any() and not labels[kidney].any()
    np.testing.assert_array_equal(labels == 1, case.anatomy == A["spleen"])
    # The liver is really there in the pixels: soft tissue, not fat or air.
    assert 20 < image[0][liver].mean() < 90


def test_intensities_behave_like_contrast_ct():
    case = generate_case(phantom_spec(4), 0, "default")
    mean = {name: case.image[case.anatomy == code].mean() for name, code in A.items() if (case.anatomy == code).any()}
    assert abs(mean["liver"] - mean["spleen"]) < 30  # similar: told apart by position and shape
    assert mean["kidney"] > mean["liver"] + 60  # cortex enhancement
    assert 25 < mean["liver"] - mean["liver_tumor"] < 65  # hypodense lesions
    assert mean["kidney"] - mean["kidney_tumor"] > 30
    assert mean["air"] < -950 and mean["fat"] < -60 and mean["vertebrae"] > 250
    assert case.image.dtype == np.int16 and case.labels.dtype == np.uint8


def test_generation_is_deterministic_per_seed():
    spec = phantom_spec(1)
    a, b = generate_case(spec, 2, "small", seed=5), generate_case(spec, 2, "small", seed=5)
    assert a.image.tobytes() == b.image.tobytes() and a.anatomy.tobytes() == b.anatomy.tobytes()
    assert a.geometry == b.geometry
    other_seed = generate_case(spec, 2, "small", seed=6)
    other_case = generate_case(spec, 3, "small", seed=5)
    assert not np.array_equal(a.anatomy, other_seed.anatomy) or a.image.shape != other_seed.image.shape
    assert a.image.shape != other_case.image.shape or not np.array_equal(a.image, other_case.image)


def test_written_datasets_are_identical_for_the_same_seed(tmp_path):
    first = generate_phantom_datasets(tmp_path / "a", size="small", seed=3, datasets=[2])[0]
    second = generate_phantom_datasets(tmp_path / "b", size="small", seed=3, datasets=[2])[0]
    names = sorted(p.relative_to(first) for p in first.rglob("*.nii.gz"))
    assert names == sorted(p.relative_to(second) for p in second.rglob("*.nii.gz")) and len(names) == 9
    for name in names:
        a, b = sitk.ReadImage(str(first / name)), sitk.ReadImage(str(second / name))
        assert sitk.GetArrayFromImage(a).tobytes() == sitk.GetArrayFromImage(b).tobytes()
        assert a.GetOrigin() == b.GetOrigin() and a.GetSpacing() == b.GetSpacing()


def test_datasets_differ_in_spacing_field_of_view_and_orientation():
    geometries = {s.dataset_id: case_geometry(s, "full", case_rng(0, s, 0))[0] for s in PHANTOM_DATASETS}
    assert [round(geometries[i].spacing[0], 2) for i in (1, 2, 3)] == [3.0, 5.0, 2.5]
    demo = {s.dataset_id: case_geometry(s, "default", case_rng(0, s, 0))[0] for s in PHANTOM_DATASETS}
    assert [round(demo[i].spacing[0], 2) for i in (1, 2, 3)] == [4.5, 7.5, 3.75]  # coarser, same ratios
    assert len({round(g.spacing[2], 1) for g in geometries.values()}) >= 3
    for geometry in geometries.values():
        assert 35 <= geometry.shape[0] <= 80 and 80 <= geometry.shape[1] <= 125
    assert geometries[3].direction[0] == -1.0  # Dataset003 is stored with a flipped x axis
    assert all(geometries[i].direction == (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0) for i in (1, 2, 4))
    for spec in PHANTOM_DATASETS:
        small = case_geometry(spec, "small", case_rng(0, spec, 0))[0]
        assert 15 <= small.shape[0] <= 35 and 30 <= small.shape[1] <= 45


def test_liver_is_on_the_patient_right_whatever_the_stored_direction(small_raw):
    """Physical (LPS) x of the liver is below the spine's in both identity (001) and flipped-x (003) files."""
    raw, _ = small_raw
    for spec in (phantom_spec(1), phantom_spec(3)):
        image = sitk.ReadImage(str(raw / spec.name / "imagesTr" / f"{spec.case_prefix}_000_0000.nii.gz"))
        anatomy = generate_case(spec, 0, "small").anatomy

        def physical_x(code):
            z, y, x = np.argwhere(anatomy == code).mean(axis=0)
            return image.TransformContinuousIndexToPhysicalPoint((float(x), float(y), float(z)))[0]

        assert physical_x(A["liver"]) < physical_x(A["vertebrae"]) - 20  # LPS: +x is the patient's left
        assert physical_x(A["spleen"]) > physical_x(A["vertebrae"]) + 20


def test_sizes_show_the_same_anatomy_in_millimetres():
    spec = phantom_spec(2)
    small, default, full = (generate_case(spec, 1, size) for size in ("small", "default", "full"))

    def volume_ml(case, code):
        return (case.anatomy == code).sum() * np.prod(case.geometry.spacing) / 1000

    for code in (A["liver"], A["spleen"], A["kidney"]):
        assert volume_ml(small, code) == pytest.approx(volume_ml(full, code), rel=0.25)
        assert volume_ml(default, code) == pytest.approx(volume_ml(full, code), rel=0.25)
    assert np.prod(small.image.shape) * 3 < np.prod(default.image.shape)
    assert np.prod(default.image.shape) * 3 < np.prod(full.image.shape)


def test_tumours_are_present_in_the_first_case_and_not_everywhere():
    spec = phantom_spec(1)
    has_tumour = [(generate_case(spec, i, "small").labels == 2).any() for i in range(8)]
    assert has_tumour[0] and not all(has_tumour)


def test_existing_dataset_is_not_overwritten(tmp_path):
    generate_phantom_datasets(tmp_path, size="small", datasets=[2])
    image = tmp_path / "Dataset002_Spleen" / "imagesTr" / "spleen_000_0000.nii.gz"
    before = image.stat().st_mtime_ns
    # the same settings again: the finished dataset is kept as it is (a re-run resumes, nothing is redone)
    assert generate_phantom_datasets(tmp_path, size="small", datasets=[2]) == [tmp_path / "Dataset002_Spleen"]
    assert image.stat().st_mtime_ns == before
    with pytest.raises(UserError, match="Dataset002_Spleen: dataset already exists, generated with other settings"):
        generate_phantom_datasets(tmp_path, size="small", datasets=[2], seed=7)
    (tmp_path / "Dataset002_Spleen" / "imagesTr" / "spleen_000_0000.nii.gz").unlink()
    generate_phantom_datasets(tmp_path, size="small", datasets=[2], overwrite=True)
    assert (tmp_path / "Dataset002_Spleen" / "imagesTr" / "spleen_000_0000.nii.gz").is_file()
    (tmp_path / "Dataset001_Other").mkdir()
    with pytest.raises(UserError, match="Dataset001_Other: dataset id 1 is already used"):
        generate_phantom_datasets(tmp_path, size="small", datasets=[1])


def test_interrupted_generation_resumes_with_identical_result(tmp_path, monkeypatch):
    real_write, calls = phantoms._write_case, []

    def failing_write(job):
        if len(calls) == 2:
            raise RuntimeError("simulated crash")
        calls.append(job)
        return real_write(job)

    monkeypatch.setattr(phantoms, "_write_case", failing_write)
    with pytest.raises(RuntimeError):
        generate_phantom_datasets(tmp_path / "resumed", size="small", datasets=[2])
    folder = tmp_path / "resumed" / "Dataset002_Spleen"
    assert not (folder / "dataset.json").exists() and len(list((folder / "imagesTr").iterdir())) == 2
    with pytest.raises(UserError, match="other settings"):
        generate_phantom_datasets(tmp_path / "resumed", size="small", seed=1, datasets=[2])
    monkeypatch.setattr(phantoms, "_write_case", real_write)
    generate_phantom_datasets(tmp_path / "resumed", size="small", datasets=[2])
    fresh = generate_phantom_datasets(tmp_path / "fresh", size="small", datasets=[2])[0]
    for path in sorted(fresh.rglob("*.nii.gz")):
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / path.relative_to(fresh))))
        np.testing.assert_array_equal(a, b)


def test_bad_arguments_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="size 'huge'"):
        generate_phantom_datasets(tmp_path, size="huge")
    with pytest.raises(UserError, match="seed -1"):
        generate_phantom_datasets(tmp_path, seed=-1)
    with pytest.raises(UserError, match="phantom dataset 9"):
        generate_phantom_datasets(tmp_path, datasets=[9])


def test_cli_generates_and_refuses_to_overwrite(tmp_path, capsys):
    from textnnunet.demo.generate_phantoms import main

    with pytest.raises(SystemExit) as ok:
        main(["--raw", str(tmp_path), "--size", "small", "-d", "2", "--seed", "1"])
    assert ok.value.code == 0 and "Dataset002_Spleen" in capsys.readouterr().out
    assert load_dataset(tmp_path, 2).raw["textnnunet_phantom"]["seed"] == 1
    with pytest.raises(SystemExit) as refused:
        main(["--raw", str(tmp_path), "--size", "small", "-d", "2"])
    assert refused.value.code == 2 and "already exists" in capsys.readouterr().err


def test_sided_kidney_labels_split_at_the_patient_midline():
    spec = phantom_spec(5)
    case = generate_case(spec, 0, "small")
    left, right = case.labels == spec.label_values["kidney_left"], case.labels == spec.label_values["kidney_right"]
    kidney = np.isin(case.anatomy, [A["kidney"], A["kidney_tumor"]])
    assert left.sum() > 50 and right.sum() > 50
    np.testing.assert_array_equal(left | right, kidney)  # both sides together are the kidneys with their tumours
    _, grid = case_geometry(spec, "small", case_rng(0, spec, 0))
    x = np.broadcast_to(grid.x[None, None, :], case.labels.shape)
    assert (x[left] > 0).all() and (x[right] < 0).all()  # x points to the patient's left


def test_mr_phantoms_have_mr_contrast_and_channel_names(tmp_path):
    t1, t2 = generate_case(phantom_spec(13), 0, "small"), generate_case(phantom_spec(14), 0, "small")
    for case in (t1, t2):
        assert case.image.min() >= 0  # magnitude images: no negative values, air is dark
    mean = {w: {n: c.image[c.anatomy == A[n]].mean() for n in ("liver", "spleen", "fat")}
            for w, c in (("T1", t1), ("T2", t2))}
    assert mean["T1"]["liver"] > mean["T1"]["spleen"] and mean["T2"]["spleen"] > mean["T2"]["liver"]
    folder = generate_phantom_datasets(tmp_path, size="small", datasets=[12])[0]
    assert load_dataset(tmp_path, 12).channel_names == {"0": "T2"}
    assert folder.name == "Dataset012_SpleenKidneyT2"
    assert not (tmp_path / "Dataset001_Liver").exists()  # only what was asked for


def test_sealed_test_set_has_its_own_seed_and_phase_and_dataset004s_labels(tmp_path, capsys):
    from textnnunet.demo.generate_phantoms import main
    from textnnunet.demo.phantoms import SEALED_SEED, SEALED_TEST_DATASET

    sealed, dev = SEALED_TEST_DATASET, phantom_spec(4)
    assert phantom_spec(sealed.name) is sealed and sealed.phase == "delayed" and dev.phase == "portal_venous"
    others = phantoms.PHANTOM_DATASETS + phantoms.EXTRA_PHANTOM_DATASETS
    assert [s.name for s in others if s.phase == sealed.phase] == [sealed.name]  # a phase nothing else has
    assert sealed.labels == dev.labels and sealed.label_values == dev.label_values and sealed.labelled_test
    assert SEALED_SEED not in (0, 1, 101, 102, 103, 104, 105)  # the demo's, the tests' and the matrix's seeds
    # its own seed whatever the caller's: the same images for any --seed, and not Dataset004's
    a, b = generate_case(sealed, 0, "small", seed=0), generate_case(sealed, 0, "small", seed=7)
    assert a.image.tobytes() == b.image.tobytes() and a.labels.tobytes() == b.labels.tobytes()
    d4 = generate_case(dev, 0, "small", seed=0)
    assert a.image.shape != d4.image.shape or not np.array_equal(a.image, d4.image)
    # delayed phase: the renal medulla brighter than the cortex (contrast in the tubules), liver and spleen alike
    hu = phantoms._tissue_hu(sealed, np.random.default_rng(0))
    assert hu["kidney_medulla"] > hu["kidney_cortex"] + 30 and abs(hu["liver"] - hu["spleen"]) < 10
    mean = {n: a.image[a.anatomy == A[n]].mean() for n in ("liver", "spleen", "kidney")}
    assert abs(mean["spleen"] - mean["liver"]) < 25 and mean["kidney"] > mean["liver"] + 60

    with pytest.raises(SystemExit) as ok:
        main(["--raw", str(tmp_path / "x"), "--size", "small", "--sealed", "--seed", "3"])
    assert ok.value.code == 0 and sealed.name in capsys.readouterr().out
    with pytest.raises(SystemExit) as ok:
        main(["--raw", str(tmp_path / "y"), "--size", "small", "--sealed"])
    desc = load_dataset(tmp_path / "x", sealed.dataset_id)
    assert desc.raw["textnnunet_phantom"] == {"generator_version": phantoms.GENERATOR_VERSION, "size": "small",
                                              "seed": SEALED_SEED, "sealed": True, "phase": "delayed"}
    assert set(desc.classes) == set(load_dataset_classes_of_dataset004()) and desc.num_training == 0
    cases = list_test_cases(desc)
    assert len(cases) == 2 and all(c.label_file is not None for c in cases)
    for case in cases:  # deterministic: the two folders hold the same files
        other = tmp_path / "y" / sealed.name / "imagesTs" / case.image_files[0].name
        assert read_image([other])[0].tobytes() == read_image(case.image_files)[0].tobytes()
    assert not (tmp_path / "x" / "Dataset004_Abdomen").exists()  # only the sealed set


def load_dataset_classes_of_dataset004():
    return ["liver", "liver tumor", "spleen", "kidney", "kidney tumor", "pancreas"]


def test_the_matrix_sealed_test_set_is_dataset004_drawn_with_its_own_seed_in_each_rows_acquisition(monkeypatch,
                                                                                                 tmp_path):
    from textnnunet.demo import generate_phantoms
    from textnnunet.demo.phantom_variants import VARIANTS, variant_specs
    from textnnunet.demo.phantoms import MATRIX_SEALED_SEED, MATRIX_SEALED_TEST_DATASET, SEALED_SEED

    sealed = MATRIX_SEALED_TEST_DATASET
    assert phantom_spec(19) is sealed and sealed.labels == phantom_spec(4).labels and sealed.labelled_test
    assert MATRIX_SEALED_SEED not in (0, 1, 2, 101, 102, 103, 104, 105, 12345, SEALED_SEED)
    for name in VARIANTS:
        specs = {s.dataset_id: s for s in variant_specs(name)}
        test, kept = specs[4], specs[19]
        # the row's acquisition, Dataset004's anatomy, its own fixed seed
        for field in ("spacing", "fov_mm", "z_centre_mm", "orientation", "phase", "noise_std", "enhancement_hu",
                      "num_test", "labels", "label_values"):
            assert getattr(kept, field) == getattr(test, field), (name, field)
        assert kept.fixed_seed == MATRIX_SEALED_SEED and test.fixed_seed is None and kept.name != test.name
    # the same anatomy draw whatever the caller's seed, and not Dataset004's
    a, b = generate_case(sealed, 0, "small", seed=0), generate_case(sealed, 0, "small", seed=5)
    assert a.image.tobytes() == b.image.tobytes()
    assert not np.array_equal(a.anatomy, generate_case(phantom_spec(4), 0, "small", seed=0).anatomy)

    asked = []
    monkeypatch.setattr(generate_phantoms, "generate_phantom_datasets",
                        lambda raw, **kw: asked.append((kw["datasets"], kw["variant"])) or [])
    for argv in (["--sealed"], ["--sealed", "--variant", "partial_fov"]):
        with pytest.raises(SystemExit) as done:
            generate_phantoms.main(["--raw", str(tmp_path), *argv])
        assert done.value.code == 0
    assert asked == [([10], ""), ([19], "partial_fov")]
