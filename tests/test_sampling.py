import numpy as np
import pytest

from textnnunet.errors import UserError
from textnnunet.training.sampling import CaseRef, PatchSampler, dataset_sampling_weights, list_case_refs
from training_cache_helpers import (
    CLASSES,
    LIVER,
    SPLEEN,
    liver_case,
    make_plans,
    spleen_case,
    two_dataset_cases,
    write_case,
)

LIVER_K, TUMOUR_K, SPLEEN_K = (CLASSES.index(n) for n in ("liver", "liver tumor", "spleen"))


def _sampler(cases, seed=0, configuration="3d_fullres", **kwargs):
    return PatchSampler(cases, make_plans(), configuration, rng=np.random.default_rng(seed), **kwargs)


def test_dataset_sampling_weights_modes():
    counts = {"A": 4, "B": 16}
    assert dataset_sampling_weights(counts, "uniform") == pytest.approx({"A": 0.5, "B": 0.5})
    assert dataset_sampling_weights(counts, "sqrt") == pytest.approx({"A": 2 / 6, "B": 4 / 6})
    assert dataset_sampling_weights(counts, "proportional") == pytest.approx({"A": 0.2, "B": 0.8})
    assert dataset_sampling_weights({"A": 0, "B": 3}, "uniform") == pytest.approx({"A": 0.0, "B": 1.0})
    with pytest.raises(UserError, match="dataset_weighting"):
        dataset_sampling_weights(counts, "inverse")



def test_dataset_weight_multipliers_by_name_or_number():
    counts = {"Dataset001_Liver": 4, "Dataset012_SpleenT2": 16}
    assert dataset_sampling_weights(counts, "uniform", {"12": 3}) == pytest.approx(
        {"Dataset001_Liver": 0.25, "Dataset012_SpleenT2": 0.75})
    assert dataset_sampling_weights(counts, "proportional", {"Dataset001_Liver": 4}) == pytest.approx(
        {"Dataset001_Liver": 0.5, "Dataset012_SpleenT2": 0.5})
    with pytest.raises(UserError, match="dataset weight '7': not a training dataset"):
        dataset_sampling_weights(counts, "uniform", {"7": 2})
    with pytest.raises(UserError, match="must be a positive number"):
        dataset_sampling_weights(counts, "uniform", {"1": 0})
    from textnnunet.cli.train import build_parser, universal_config_from_args

    args = build_parser().parse_args(["3d_fullres", "0", "--dataset_weights", "12=2", "Dataset001_Liver=0.5"])
    assert universal_config_from_args(args).dataset_weights == {"12": 2.0, "Dataset001_Liver": 0.5}
    with pytest.raises(UserError, match="--dataset_weights 12: expected DATASET=FACTOR"):
        universal_config_from_args(build_parser().parse_args(["3d_fullres", "0", "--dataset_weights", "12"]))


def test_dataset_choice_follows_weights(tmp_path):
    cases = [liver_case(tmp_path, "liver_000")] + [spleen_case(tmp_path, f"spleen_{i}") for i in range(3)]
    sampler = _sampler(cases, dataset_weighting="proportional")
    picks = [sampler._choose_case().dataset for _ in range(2000)]
    assert picks.count(SPLEEN) / len(picks) == pytest.approx(0.75, abs=0.04)
    sampler = _sampler(cases, dataset_weighting="uniform")
    picks = [sampler._choose_case().dataset for _ in range(2000)]
    assert picks.count(SPLEEN) / len(picks) == pytest.approx(0.5, abs=0.045)
    sampler = _sampler(cases, dataset_weighting="uniform", dataset_weights={SPLEEN: 3})
    picks = [sampler._choose_case().dataset for _ in range(2000)]
    assert picks.count(SPLEEN) / len(picks) == pytest.approx(0.75, abs=0.04)


def test_batch_contract_shapes_and_annotated_mask(tmp_path):
    batch = _sampler(two_dataset_cases(tmp_path), batch_size=6).next_batch()
    assert batch["data"].shape == (6, 1, 8, 8, 8) and batch["data"].dtype == np.float32
    assert batch["target"].shape == (6, 3, 8, 8, 8) and batch["target"].dtype == np.float32
    assert batch["annotated"].shape == (6, 3) and batch["annotated"].dtype == bool
    assert set(np.unique(batch["target"])) <= {0.0, 1.0}
    for (dataset, _), annotated in zip(batch["keys"], batch["annotated"]):
        expected = [True, True, False] if dataset == LIVER else [False, False, True]
        assert annotated.tolist() == expected
    # classes a dataset does not annotate are never judged, and their target is zero
    assert np.all(batch["target"][~batch["annotated"]] == 0)


def test_foreground_oversampling_hits_annotated_foreground(tmp_path):
    # the foreground is a small corner block; random 8^3 patches in 12x20x20 often miss it
    cases = two_dataset_cases(tmp_path)
    sampler = _sampler(cases, batch_size=3, oversample_foreground_percent=0.33)
    assert [sampler._is_forced_foreground(i) for i in range(3)] == [False, False, True]
    for _ in range(20):
        batch = sampler.next_batch()
        forced = batch["target"][2][batch["annotated"][2]]
        assert forced.sum() > 0
    # p = 1: every item forced
    sampler = _sampler(cases, batch_size=4, oversample_foreground_percent=1.0)
    batch = sampler.next_batch()
    for b in range(4):
        assert batch["target"][b][batch["annotated"][b]].sum() > 0


def test_random_patches_sometimes_miss_foreground(tmp_path):
    # guards the previous test: without oversampling, background-only patches must occur
    sampler = _sampler(two_dataset_cases(tmp_path), batch_size=4, oversample_foreground_percent=0.0)
    sums = [sampler.next_batch()["target"].sum(axis=(1, 2, 3, 4)) for _ in range(10)]
    assert (np.concatenate(sums) == 0).any()


def test_targets_follow_regions(tmp_path):
    # patch = whole image: the targets must equal the label map converted by region
    shape = (12, 20, 20)
    liver = liver_case(tmp_path, "liver_000", shape=shape)
    spleen = spleen_case(tmp_path, "spleen_000", shape=shape)
    sampler = _sampler([liver, spleen], patch_size=shape, batch_size=4)
    seen = set()
    for _ in range(5):
        batch = sampler.next_batch()
        for b, (dataset, case_id) in enumerate(batch["keys"]):
            seg = np.load(tmp_path / dataset / f"{case_id}.npz")["seg"][0]
            target = batch["target"][b]
            if dataset == LIVER:
                np.testing.assert_array_equal(target[LIVER_K], np.isin(seg, [1, 2]))
                np.testing.assert_array_equal(target[TUMOUR_K], seg == 2)
                assert target[LIVER_K][seg == 2].all()  # liver includes the tumour
                assert target[SPLEEN_K].sum() == 0
            else:
                np.testing.assert_array_equal(target[SPLEEN_K], seg == 1)
                assert target[LIVER_K].sum() == 0 and target[TUMOUR_K].sum() == 0
            np.testing.assert_array_equal(batch["data"][b], np.load(tmp_path / dataset / f"{case_id}.npz")["data"])
            seen.add(dataset)
    assert seen == {LIVER, SPLEEN}


def test_padding_where_patch_extends_outside(tmp_path):
    data = np.arange(64, dtype=np.float32).reshape(1, 4, 4, 4) + 1.0  # no zeros inside the image
    seg = np.ones((4, 4, 4), dtype=np.int16)
    case = write_case(tmp_path, SPLEEN, "small", data, seg)
    sampler = _sampler([case], patch_size=(6, 6, 6), batch_size=2)
    batch = sampler.next_batch()
    for b in range(2):
        # image smaller than the patch: it is centred with one voxel of padding on each side
        np.testing.assert_array_equal(batch["data"][b, :, 1:5, 1:5, 1:5], data)
        padded = np.ones((6, 6, 6), dtype=bool)
        padded[1:5, 1:5, 1:5] = False
        assert np.all(batch["data"][b, 0][padded] == data.min())  # the image's minimum, as the sliding window
        assert np.all(batch["target"][b, SPLEEN_K][padded] == 0)
        assert np.all(batch["target"][b, SPLEEN_K][~padded] == 1)


def test_initial_patch_margin_and_shapes(tmp_path):
    sampler = _sampler(two_dataset_cases(tmp_path), patch_size=(8, 8, 8), initial_patch_size=(10, 12, 12))
    batch = sampler.next_batch()
    assert batch["data"].shape == (3, 1, 10, 12, 12)
    assert batch["target"].shape == (3, 3, 10, 12, 12)
    with pytest.raises(UserError, match="initial patch size"):
        _sampler(two_dataset_cases(tmp_path), patch_size=(8, 8, 8), initial_patch_size=(6, 8, 8))


def test_deterministic_for_seed_and_exact_resume(tmp_path):
    cases = two_dataset_cases(tmp_path)
    a, b = _sampler(cases, seed=7), _sampler(cases, seed=7)
    for _ in range(3):
        ba, bb = a.next_batch(), b.next_batch()
        np.testing.assert_array_equal(ba["data"], bb["data"])
        np.testing.assert_array_equal(ba["target"], bb["target"])
        assert ba["keys"] == bb["keys"]
    different = _sampler(cases, seed=8)
    assert any(not np.array_equal(a.next_batch()["data"], different.next_batch()["data"]) for _ in range(3))

    run = _sampler(cases, seed=3, cache_size=1)
    run.next_batch()
    saved = run.state()
    expected = [run.next_batch() for _ in range(2)]
    resumed = _sampler(cases, seed=999)
    resumed.set_state(saved)
    for want in expected:
        got = resumed.next_batch()
        np.testing.assert_array_equal(got["data"], want["data"])
        np.testing.assert_array_equal(got["target"], want["target"])
        assert got["keys"] == want["keys"]


def test_lru_cache_is_bounded(tmp_path):
    sampler = _sampler(two_dataset_cases(tmp_path, 3, 3), cache_size=2, batch_size=6)
    for _ in range(3):
        sampler.next_batch()
        assert len(sampler._cache) <= 2
    uncached = _sampler(two_dataset_cases(tmp_path, 1, 1), cache_size=0)
    uncached.next_batch()
    assert len(uncached._cache) == 0


def test_2d_mode_shapes_and_foreground(tmp_path):
    sampler = _sampler(two_dataset_cases(tmp_path), configuration="2d", batch_size=3, oversample_foreground_percent=1.0)
    assert sampler.is_2d
    batch = sampler.next_batch()
    assert batch["data"].shape == (3, 1, 8, 8)
    assert batch["target"].shape == (3, 3, 8, 8)
    assert batch["annotated"].shape == (3, 3)
    for b in range(3):
        assert batch["target"][b][batch["annotated"][b]].sum() > 0


def test_bad_inputs_raise_user_errors(tmp_path):
    case = liver_case(tmp_path, "liver_000")
    with pytest.raises(UserError, match="not in the plans' label_space"):
        _sampler([CaseRef("Dataset009_Other", "x", case.npz_path, case.json_path)])
    with pytest.raises(UserError, match="no configuration"):
        PatchSampler([case], make_plans(), "3d_lowres")
    with pytest.raises(UserError, match="no training cases"):
        _sampler([])
    np.savez_compressed(tmp_path / "noseg.npz", data=np.zeros((1, 4, 4, 4), np.float32))
    with pytest.raises(UserError, match="no 'seg'"):
        _sampler([CaseRef(LIVER, "noseg", tmp_path / "noseg.npz", case.json_path)]).next_batch()


def test_list_case_refs(tmp_path):
    liver_case(tmp_path, "liver_000")
    liver_case(tmp_path, "liver_001")
    refs = list_case_refs(tmp_path / LIVER)
    assert [r.case_id for r in refs] == ["liver_000", "liver_001"]
    assert all(r.dataset == LIVER for r in refs)
    assert [r.case_id for r in list_case_refs(tmp_path / LIVER, ["liver_001"])] == ["liver_001"]
    with pytest.raises(UserError, match="liver_009"):
        list_case_refs(tmp_path / LIVER, ["liver_009"])


def test_patches_beyond_the_image_are_padded_with_the_channel_minimum():
    from textnnunet.training.sampling import crop_and_pad_channels

    data = np.stack([np.full((4, 4, 4), 2.0, np.float32), np.full((4, 4, 4), -3.0, np.float32)])
    data[0, 0, 0, 0], data[1, 1, 1, 1] = -1.5, -7.0
    patch = crop_and_pad_channels(data, [[-2, 6], [0, 4], [0, 4]], data.reshape(2, -1).min(axis=1))
    assert patch.shape == (2, 8, 4, 4)
    assert np.all(patch[0, :2] == -1.5) and np.all(patch[1, 6:] == -7.0)
    assert np.array_equal(patch[:, 2:6], data)
