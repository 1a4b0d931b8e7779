"""Topology rules, patch/batch search, joint and per-dataset plans, label space, plans files."""
import json
from pathlib import Path

import numpy as np
import pytest

from _planning_data import blob_case, make_dataset
from textnnunet.dataset.description import DatasetDescription
from textnnunet.errors import UserError
from textnnunet.experiment_planning import fingerprint as fingerprint_module
from textnnunet.experiment_planning.label_space import build_label_space
from textnnunet.experiment_planning.planner import (
    PRESETS, default_preset_name, load_plans, normalization_settings, plan_datasets, plan_experiment,
    plan_single_dataset, pooled_intensity_properties, save_plans,
)
from textnnunet.experiment_planning.topology import (
    estimated_memory_gb, feature_map_units, features_per_stage, plan_patch_and_batch, pool_and_conv_props,
    target_spacing,
)


# ------------------------------------------------------------------------------------------ target spacing

def test_target_spacing_is_the_median_per_axis():
    spacings = [(1.0, 0.5, 0.5), (2.0, 0.7, 0.7), (3.0, 0.9, 0.6)]
    assert target_spacing(spacings, [(100, 100, 100)] * 3).tolist() == [2.0, 0.7, 0.6]


def test_anisotropic_axis_with_few_voxels_takes_its_10th_percentile():
    spacings = [(z, 0.8, 0.8) for z in (1.5, 4.0, 5.0, 5.0, 6.0)]
    few_slices = [(30, 256, 256)] * 5
    assert target_spacing(spacings, few_slices) == pytest.approx([np.percentile([1.5, 4, 5, 5, 6], 10), 0.8, 0.8])
    # Enough slices (100 * 3 >= 256): the median stays.
    assert target_spacing(spacings, [(100, 256, 256)] * 5) == pytest.approx([5.0, 0.8, 0.8])
    # Not anisotropic enough in spacing (5 <= 3 * 2): the median stays.
    assert target_spacing([(5.0, 2.0, 2.0)] * 3, few_slices[:3]) == pytest.approx([5.0, 2.0, 2.0])


def test_anisotropic_axis_never_gets_finer_than_the_other_axes():
    spacings = [(z, 2.0, 2.0) for z in (0.5, 0.5, 7.0, 7.0, 7.0)]
    assert target_spacing(spacings, [(20, 200, 200)] * 5) == pytest.approx([2.0 + 1e-5, 2.0, 2.0])


# -------------------------------------------------------------------------------------------- topology

def test_pool_and_conv_props_isotropic():
    props = pool_and_conv_props((1.0, 1.0, 1.0), (128, 128, 128))
    assert props.strides == [[1, 1, 1]] + [[2, 2, 2]] * 5  # 128 -> 4 in five poolings
    assert props.kernel_sizes == [[3, 3, 3]] * 6
    assert props.patch_size == [128, 128, 128]


def test_pool_and_conv_props_anisotropic_pools_in_plane_first():
    props = pool_and_conv_props((5.0, 1.0, 1.0), (20, 160, 160))
    assert props.kernel_sizes[:2] == [[1, 3, 3], [1, 3, 3]]
    assert props.strides[:3] == [[1, 1, 1], [1, 2, 2], [1, 2, 2]]  # no z pooling until spacings meet
    assert props.strides[3] == [2, 2, 2] and props.kernel_sizes[-1] == [3, 3, 3]
    assert len(props.kernel_sizes) == len(props.strides)


def test_patch_is_padded_to_the_pooling_factor():
    props = pool_and_conv_props((1.0, 1.0, 1.0), (100, 100, 100))
    assert len(props.strides) == 5 and props.patch_size == [112, 112, 112]  # 4 poolings: multiple of 16


def test_feature_map_units_match_dynamic_network_architectures():
    torch = pytest.importorskip("torch")
    unet = pytest.importorskip("dynamic_network_architectures.architectures.unet")
    props = pool_and_conv_props((3.0, 0.8, 0.8), (24, 96, 80))
    feats = features_per_stage(len(props.strides), 16, 128)
    net = unet.PlainConvUNet(1, len(feats), feats, torch.nn.Conv3d, props.kernel_sizes, props.strides,
                             [2] * len(feats), 4, [2] * (len(feats) - 1), deep_supervision=True)
    assert feature_map_units(props.patch_size, props.strides, feats, 4) == net.compute_conv_feature_map_size(
        props.patch_size)


def test_features_double_and_cap():
    assert features_per_stage(6, 32, 320) == [32, 64, 128, 256, 320, 320]


def test_patch_shrinks_with_the_memory_target_and_batch_is_at_least_two():
    args = dict(spacing=(1.0, 1.0, 1.0), median_shape=(300, 300, 300), num_voxels_dataset=100 * 300 ** 3,
                num_classes=5, base_features=32, max_features=320)
    big = plan_patch_and_batch(memory_target_gb=8, **args)
    small = plan_patch_and_batch(memory_target_gb=2, **args)
    assert np.prod(small.patch_size) < np.prod(big.patch_size)
    for plan, target in ((big, 8), (small, 2)):
        assert plan.batch_size >= 2 and plan.estimated_memory_gb <= target * 1.25  # batch rounding
    assert big.patch_size == [128, 128, 128]  # nnU-Net's classic 8 GB plan for isotropic images
    # Plenty of memory for a small image: the patch is the image, the rest goes into the batch.
    roomy = plan_patch_and_batch(spacing=(1.0, 1.0, 1.0), median_shape=(32, 32, 32), num_voxels_dataset=1000 * 32 ** 3,
                                 memory_target_gb=8, num_classes=5, base_features=32, max_features=320)
    assert roomy.patch_size == [32, 32, 32] and roomy.batch_size > 2


def test_batch_covers_at_most_five_percent_of_the_dataset_but_never_below_two():
    capped = plan_patch_and_batch((1.0, 1.0, 1.0), (32, 32, 32), 100 * 32 ** 3, 8, 5, 32, 320)
    assert capped.batch_size == 5  # 5% of 100 images of the patch's size
    tiny = plan_patch_and_batch((1.0, 1.0, 1.0), (32, 32, 32), 3 * 32 ** 3, 8, 5, 32, 320)
    assert tiny.batch_size == 2


def test_memory_estimate_scales_with_batch_and_target_too_small_is_a_user_error():
    assert estimated_memory_gb(560_000_000, 2, 3) == pytest.approx(8.0)
    assert estimated_memory_gb(1000, 4, 3) == pytest.approx(2 * estimated_memory_gb(1000, 2, 3))
    with pytest.raises(UserError, match="memory_target_gb"):
        plan_patch_and_batch((1.0, 1.0, 1.0), (64, 64, 64), 1e7, 1e-9, 2, 32, 320)


def test_cpu_preset_gives_a_small_demo_patch():
    cpu = PRESETS["cpu"]
    plan = plan_patch_and_batch((1.0, 1.0, 1.0), (256, 256, 256), 50 * 256 ** 3, cpu.memory_target_gb, 4,
                                cpu.base_features, cpu.max_features_3d)
    # At most ~48^3 voxels with 8 base features: about 0.5-0.8 s per step on 2 CPU cores (documentation/).
    assert all(32 <= p <= 48 for p in plan.patch_size) and plan.batch_size == 2
    assert cpu.base_features == 8
    assert default_preset_name(False) == "cpu" and default_preset_name(True) == "gpu"


# ------------------------------------------------------------------------------- plans without any files

def _desc(name, classes, channels=None, synonyms=None, folder="/nowhere"):
    return DatasetDescription(folder=Path(folder) / name, name=name, dataset_id=int(name[7:10]),
                              channel_names=channels or {"0": "CT"}, file_ending=".nii.gz",
                              num_training=4, classes=classes, declared_label_values=(0, 1, 2),
                              synonyms=synonyms or {})


def _fingerprint(name, n, spacing=(1.0, 1.0, 1.0), shape=(64, 64, 64), value=100.0, relative=1.0):
    stats = {"0": {"mean": value, "median": value, "std": 0.0, "min": value, "max": value,
                   "percentile_00_5": value, "percentile_99_5": value}}
    fp = {"dataset": name, "spacings": [list(spacing)] * n, "shapes_after_crop": [list(shape)] * n,
          "relative_sizes_after_crop": [relative] * n, "median_relative_size_after_cropping": relative,
          "foreground_intensity_properties_per_channel": stats, "channel_names": {"0": "CT"}, "num_cases": n}
    return fp, np.full((1, 10 * n), value, dtype=np.float32)


def test_ct_and_mr_datasets_plan_together_each_with_its_own_normalisation():
    a = _desc("Dataset001_A", {"liver": (1,)}, {"0": "CT"})
    b = _desc("Dataset002_B", {"spleen": (1,)}, {"0": "T2"})
    fa, sa = _fingerprint(a.name, 2, value=60.0)
    fb, sb = _fingerprint(b.name, 2, value=400.0)
    plans = plan_experiment([a, b], [fa, fb], [sa, sb], "TextPlans_001_002", 8)
    groups = plans["intensity_groups"]
    assert list(groups) == ["CT", "T2"] and plans["dataset_intensity_group"] == {a.name: "CT", b.name: "T2"}
    assert groups["CT"]["normalization_schemes"] == ["CTNormalization"]
    assert groups["T2"]["normalization_schemes"] == ["ZScoreNormalization"]
    # CT percentiles pooled over the CT datasets only: the MR intensities do not leak into them.
    assert groups["CT"]["foreground_intensity_properties_per_channel"]["0"]["mean"] == 60.0
    assert len(plans["channel_names"]) == 1  # one network input channel


def test_multi_channel_mismatch_names_both_datasets():
    a = _desc("Dataset001_A", {"liver": (1,)}, {"0": "CT"})
    b = _desc("Dataset002_B", {"prostate": (1,)}, {"0": "T2", "1": "ADC"})
    fa, sa = _fingerprint(a.name, 2)
    fb, sb = _fingerprint(b.name, 2)
    with pytest.raises(UserError, match="Dataset002_B.*T2.*ADC.*Dataset001_A.*CT.*multi-channel"):
        plan_experiment([a, b], [fa, fb], [sa, sb], "TextPlans_001_002", 8)
    # Case-insensitive: "ct" and "CT" are one group.
    c = _desc("Dataset003_C", {"kidney": (1,)}, {"0": "ct"})
    fc, sc = _fingerprint(c.name, 2)
    plans = plan_experiment([a, c], [fa, fc], [sa, sc], "TextPlans_001_003", 8)
    assert plans["configurations"]["3d_fullres"]["normalization_schemes"] == ["CTNormalization"]
    assert list(plans["intensity_groups"]) == ["CT"]


def test_label_space_union_with_regions_and_synonyms():
    a = _desc("Dataset001_Liver", {"liver": (1, 2), "liver tumor": (2,)}, synonyms={"liver": ["hepatic parenchyma"]})
    b = _desc("Dataset002_Organs", {"spleen": (1,), "liver": (2,)}, synonyms={"spleen": ["lien"]})
    c = _desc("Dataset003_Hep", {"hepatic parenchyma": (1,), "kidney": (3,)})
    space = build_label_space([a, b, c])
    assert [k["name"] for k in space["classes"]] == ["liver", "liver tumor", "spleen", "kidney"]
    assert space["classes"][0]["synonyms"] == ["hepatic parenchyma"]
    assert space["classes"][2]["synonyms"] == ["lien"]
    assert space["datasets"] == {
        "Dataset001_Liver": {"liver": [1, 2], "liver tumor": [2]},
        "Dataset002_Organs": {"spleen": [1], "liver": [2]},
        "Dataset003_Hep": {"liver": [1], "kidney": [3]},
    }


def test_label_space_joins_a_class_whose_synonym_is_a_known_class_name():
    a = _desc("Dataset001_A", {"liver": (1,)})
    b = _desc("Dataset002_B", {"hepar": (4,)}, synonyms={"hepar": ["liver"]})
    space = build_label_space([a, b])
    assert space["classes"] == [{"name": "liver", "synonyms": ["hepar"]}]
    assert space["datasets"]["Dataset002_B"] == {"liver": [4]}


def test_label_space_rejects_one_prompt_for_two_classes():
    a = _desc("Dataset001_A", {"liver": (1,)}, synonyms={"liver": ["organ"]})
    b = _desc("Dataset002_B", {"spleen": (1,)}, synonyms={"spleen": ["organ"]})
    with pytest.raises(UserError, match="'organ'.*Dataset001_A"):
        build_label_space([a, b])
    c = _desc("Dataset003_C", {"liver": (1,), "hepar": (2,)}, synonyms={"hepar": ["liver"]})
    with pytest.raises(UserError, match="Dataset003_C.*'hepar'"):
        build_label_space([c])


def test_normalisation_rules():
    assert normalization_settings({"0": "CT"}, 0.5) == (["CTNormalization"], [False])
    assert normalization_settings({"0": "T1", "1": "noNorm"}, 0.5) == (
        ["ZScoreNormalization", "NoNormalization"], [True, False])
    assert normalization_settings({"0": "T1"}, 0.9) == (["ZScoreNormalization"], [False])


def test_pooled_intensities_weight_every_case_equally():
    fa, sa = _fingerprint("Dataset001_A", 4, value=100.0)
    fb, sb = _fingerprint("Dataset002_B", 1, value=200.0)
    sb = np.full((1, 1000), 200.0, dtype=np.float32)  # a bigger saved sample must not outweigh its one case
    pooled = pooled_intensity_properties([fa, fb], [sa, sb])["0"]
    assert pooled["mean"] == pytest.approx((4 * 100 + 200) / 5)
    assert pooled["min"] == 100.0 and pooled["max"] == 200.0


def test_joint_plan_pools_spacings_and_has_every_configuration_key():
    a = _desc("Dataset001_A", {"liver": (1,)})
    b = _desc("Dataset002_B", {"spleen": (1,)})
    fa, sa = _fingerprint(a.name, 3, spacing=(1.0, 1.0, 1.0))
    fb, sb = _fingerprint(b.name, 2, spacing=(3.0, 1.0, 1.0))
    plans = plan_experiment([a, b], [fa, fb], [sa, sb], "TextPlans_001_002", 8)
    assert plans["datasets"] == [a.name, b.name] and plans["num_training_cases"] == {a.name: 3, b.name: 2}
    full = plans["configurations"]["3d_fullres"]
    assert full["spacing"] == [1.0, 1.0, 1.0]  # median over the 5 pooled cases
    assert full["median_image_size_in_voxels"] == [64, 64, 64]
    arch = full["architecture"]
    assert arch["n_stages"] == len(arch["strides"]) == len(arch["kernel_sizes"]) == len(arch["features_per_stage"])
    assert len(arch["n_conv_per_stage_decoder"]) == arch["n_stages"] - 1 and arch["conv_dims"] == 3
    assert plans["configurations"]["2d"]["architecture"]["conv_dims"] == 2
    assert len(plans["configurations"]["2d"]["patch_size"]) == 2
    assert "3d_lowres" not in plans["configurations"]  # the patch already covers the small images
    assert full["resampling"]["separate_z_anisotropy_threshold"] == 3.0


def test_lowres_is_made_for_large_images_and_covers_enough():
    a = _desc("Dataset001_Big", {"liver": (1,)})
    fa, sa = _fingerprint(a.name, 10, spacing=(1.0, 1.0, 1.0), shape=(400, 400, 400))
    plans = plan_single_dataset(a, fa, sa, memory_target_gb=8)
    full, low = plans["configurations"]["3d_fullres"], plans["configurations"]["3d_lowres"]
    assert plans["plans_name"] == a.name
    assert all(ls > fs for ls, fs in zip(low["spacing"], full["spacing"]))
    assert np.prod(low["patch_size"]) / np.prod(low["median_image_size_in_voxels"]) >= 0.25 - 0.01
    assert np.prod(low["median_image_size_in_voxels"]) * 2 <= np.prod(full["median_image_size_in_voxels"])


def test_plans_round_trip_and_missing_plans(tmp_path):
    a = _desc("Dataset001_A", {"liver": (1, 2), "liver tumor": (2,)})
    fa, sa = _fingerprint(a.name, 2)
    plans = plan_single_dataset(a, fa, sa, memory_target_gb=PRESETS["cpu"].memory_target_gb, base_features=16,
                                max_features_3d=192, max_features_2d=256)
    assert plans["configurations"]["3d_fullres"]["architecture"]["features_per_stage"][0] == 16
    path = save_plans(plans, tmp_path / "Dataset001_A" / "plans.json")
    assert load_plans(path) == json.loads(json.dumps(plans)) == load_plans(path.parent)
    with pytest.raises(UserError, match="textnnunet_plan_and_preprocess"):
        load_plans(tmp_path / "Dataset009_Missing")


# ---------------------------------------------------------------------------------- from raw files to plans

def _two_raw_datasets(raw):
    make_dataset(raw, "Dataset001_Liver", {"0": "CT"}, {"background": 0, "liver": [1, 2], "liver_tumor": 2},
                 {f"l{i}": blob_case(seed=i, label_value=1 + i % 2) for i in range(2)})
    make_dataset(raw, "Dataset002_Spleen", {"0": "ct"}, {"background": 0, "spleen": 1},
                 {f"s{i}": blob_case(seed=10 + i, spacing=(2.5, 1.0, 1.0), value=50.0) for i in range(3)})


def test_plan_datasets_writes_joint_and_single_plans_and_reuses_fingerprints(tmp_path, monkeypatch):
    raw, pre = tmp_path / "raw", tmp_path / "pre"
    _two_raw_datasets(raw)
    joint_path, single = plan_datasets(raw, pre, [1, 2], memory_target_gb=0.5, base_features=16,
                                       max_features_3d=192, max_features_2d=256, progress=False)
    assert joint_path == pre / "TextPlans_001_002" / "plans.json"
    assert single == [pre / "Dataset001_Liver" / "plans.json", pre / "Dataset002_Spleen" / "plans.json"]
    joint = load_plans(joint_path)
    assert [c["name"] for c in joint["label_space"]["classes"]] == ["liver", "liver tumor", "spleen"]
    assert joint["label_space"]["datasets"]["Dataset002_Spleen"] == {"spleen": [1]}
    assert joint["configurations"]["3d_fullres"]["normalization_schemes"] == ["CTNormalization"]
    props = joint["foreground_intensity_properties_per_channel"]["0"]
    assert props["min"] == 50.0 and props["max"] == 100.0
    assert props["mean"] == pytest.approx((2 * 100 + 3 * 50) / 5)  # every case weighs the same
    assert load_plans(single[1])["label_space"]["classes"] == [{"name": "spleen", "synonyms": []}]
    assert (pre / "Dataset001_Liver" / "dataset_fingerprint.json").is_file()

    # A second run re-uses the fingerprints; a changed case list forces a new one.
    def refuse(*a, **k):
        raise AssertionError("fingerprint extracted again")
    monkeypatch.setattr("textnnunet.experiment_planning.planner.extract_fingerprint", refuse)
    plan_datasets(raw, pre, [1, 2], memory_target_gb=0.5, progress=False)
    monkeypatch.setattr("textnnunet.experiment_planning.planner.extract_fingerprint",
                        fingerprint_module.extract_fingerprint)
    make_dataset(raw, "Dataset002_Spleen", {"0": "ct"}, {"background": 0, "spleen": 1},
                 {"s9": blob_case(seed=9, spacing=(2.5, 1.0, 1.0))})
    plan_datasets(raw, pre, [2], memory_target_gb=0.5, progress=False)
    assert json.loads((pre / "Dataset002_Spleen" / "dataset_fingerprint.json").read_text())["num_cases"] == 4


def test_plan_datasets_without_extraction_names_the_command(tmp_path):
    _two_raw_datasets(tmp_path / "raw")
    with pytest.raises(UserError, match="textnnunet_extract_fingerprint"):
        plan_datasets(tmp_path / "raw", tmp_path / "pre", [1], 8, extract=False, progress=False)


# ------------------------------------------------------------------------------- context-first (cpu preset)

def _cpu_plan(spacing, shape, n=10, context=PRESETS["cpu"].min_context_fraction):
    a = _desc("Dataset001_A", {"liver": (1,)})
    fa, sa = _fingerprint(a.name, n, spacing=spacing, shape=shape)
    cpu = PRESETS["cpu"]
    return plan_experiment([a], [fa], [sa], a.name, cpu.memory_target_gb, cpu.base_features, cpu.max_features_3d,
                           cpu.max_features_2d, min_context_fraction=context)


def test_cpu_preset_trades_resolution_for_context_on_clinical_spacing():
    # A clinical abdominal CT: 0.8 mm in-plane, 2.5 mm slices, 450 x 450 x 80 voxels.
    keyhole = _cpu_plan((2.5, 0.8, 0.8), (80, 450, 450), context=None)["configurations"]["3d_fullres"]
    assert keyhole["spacing"] == [2.5, 0.8, 0.8]
    assert max(keyhole["patch_coverage_of_median_image"]) < 0.5  # nnU-Net's rule at 80 MB: a keyhole
    plans = _cpu_plan((2.5, 0.8, 0.8), (80, 450, 450))
    full = plans["configurations"]["3d_fullres"]
    assert min(full["patch_coverage_of_median_image"]) >= 0.75
    assert full["context"]["satisfied"] and full["context"]["median_spacing"] == [2.5, 0.8, 0.8]
    # In-plane is coarsened first, towards isotropy; the extent in mm is what it was.
    assert full["spacing"][1] > 0.8 * 3 and full["spacing"][1] == full["spacing"][2]
    assert full["spacing"][0] >= 2.5 and full["spacing"][0] <= full["spacing"][1] * 1.06
    extent = np.asarray(full["spacing"]) * full["median_image_size_in_voxels"]
    assert np.allclose(extent, [200, 360, 360], rtol=0.02)
    assert "3d_lowres" not in plans["configurations"]
    assert min(plans["configurations"]["2d"]["patch_coverage_of_median_image"]) >= 0.75
    assert full["resampling"]["anti_aliasing"] is True and "anti_aliasing" not in keyhole["resampling"]


def test_cpu_preset_keeps_the_median_spacing_when_the_patch_already_sees_enough():
    full = _cpu_plan((4.5, 4.6, 4.6), (40, 60, 60))["configurations"]["3d_fullres"]  # the demo's data
    assert full["spacing"] == [4.5, 4.6, 4.6] and min(full["patch_coverage_of_median_image"]) >= 0.75


def test_context_coarsening_stops_at_the_spacing_cap():
    # A whole-body scan: even at the cap the patch cannot see 75% of 1.8 m.
    full = _cpu_plan((1.5, 0.8, 0.8), (1200, 512, 512), n=2)["configurations"]["3d_fullres"]
    assert full["context"]["satisfied"] is False
    assert max(full["spacing"]) <= PRESETS["cpu"].max_context_spacing_mm + 1e-9


def test_coarser_spacing_moves_the_finest_axes_first():
    from textnnunet.experiment_planning.planner import _coarser_spacing

    assert np.allclose(_coarser_spacing(np.array([2.5, 0.8, 0.8]), 8.0), [2.5, 0.84, 0.84])
    assert np.allclose(_coarser_spacing(np.array([2.0, 2.0, 2.0]), 8.0), [2.1, 2.1, 2.1])
    assert np.allclose(_coarser_spacing(np.array([9.0, 7.9, 7.9]), 8.0), [9.0, 8.0, 8.0])


def test_gpu_preset_keeps_nnunet_rules():
    assert PRESETS["gpu"].min_context_fraction is None


def test_ct_and_mr_datasets_are_preprocessed_each_with_its_own_normalisation(tmp_path):
    from textnnunet.preprocessing.normalization import intensity_group_of
    from textnnunet.preprocessing.preprocessor import load_case, run_preprocessing

    raw, pre = tmp_path / "raw", tmp_path / "pre"
    make_dataset(raw, "Dataset001_Liver", {"0": "CT"}, {"background": 0, "liver": 1},
                 {f"l{i}": blob_case(seed=i, value=60.0) for i in range(2)})
    make_dataset(raw, "Dataset002_SpleenT2", {"0": "T2"}, {"background": 0, "spleen": 1},
                 {f"s{i}": blob_case(seed=10 + i, value=900.0) for i in range(2)})
    joint, _ = plan_datasets(raw, pre, [1, 2], memory_target_gb=0.08, base_features=8, progress=False)
    run_preprocessing(joint, ["3d_fullres"], raw)
    plans = json.loads(joint.read_text())
    assert plans["dataset_intensity_group"] == {"Dataset001_Liver": "CT", "Dataset002_SpleenT2": "T2"}
    folder = joint.parent / "3d_fullres"
    ct, _, _ = load_case(folder / "Dataset001_Liver", "l0")
    t2, _, _ = load_case(folder / "Dataset002_SpleenT2", "s0")
    # z-scored per image (T2) vs clipped to the CT percentiles and standardised with the CT statistics.
    assert abs(float(t2.mean())) < 0.05 and abs(float(t2.std()) - 1.0) < 0.05
    # The CT foreground is the constant 60 HU here: clipped to its own percentiles, the CT image is flat.
    assert plans["intensity_groups"]["CT"]["foreground_intensity_properties_per_channel"]["0"]["mean"] == 60.0
    assert float(np.abs(ct).max()) < 1e-3
    # A new image for a model of two modalities: the user must say which one it is.
    with pytest.raises(UserError, match="CT, T2.*--modality"):
        intensity_group_of(plans)
    assert intensity_group_of(plans, group="t2") == "T2"
    with pytest.raises(UserError, match="--modality PET"):
        intensity_group_of(plans, group="PET")


def test_per_dataset_baseline_plans_get_the_same_context_rule(tmp_path):
    raw, pre = tmp_path / "raw", tmp_path / "pre"
    # 0.5 mm in-plane, 40 x 96 x 96: at a tiny budget nnU-Net's rule would leave a keyhole.
    make_dataset(raw, "Dataset001_Liver", {"0": "CT"}, {"background": 0, "liver": 1},
                 {f"l{i}": blob_case(shape=(40, 96, 96), spacing=(1.0, 0.5, 0.5), seed=i) for i in range(2)})
    joint, singles = plan_datasets(raw, pre, [1], memory_target_gb=0.005, base_features=4, progress=False,
                                   min_context_fraction=0.75)
    for path in (joint, *singles):
        full = json.loads(path.read_text())["configurations"]["3d_fullres"]
        assert full["context"]["rule"] == "context_first" and min(full["patch_coverage_of_median_image"]) >= 0.75
        assert full["spacing"][1] > 0.5
