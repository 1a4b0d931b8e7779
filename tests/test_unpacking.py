"""training/unpacking.py: npz caches unpacked once into memory-mapped .npy, and the sampler reading them."""
import os

import numpy as np
import pytest

from textnnunet.errors import UserError
from textnnunet.training.config import TrainingConfig
from textnnunet.training.sampling import PatchSampler, _load_case_arrays
from textnnunet.training.unpacking import is_unpacked, load_unpacked, unpack_case, unpack_cases, unpacked_paths
from training_cache_helpers import make_plans, two_dataset_cases


def test_unpacked_arrays_equal_the_npz_and_go_stale_when_the_npz_is_rewritten(tmp_path):
    case = two_dataset_cases(tmp_path)[0]
    assert not is_unpacked(case.npz_path) and load_unpacked(case.npz_path) is None
    unpack_case(case.npz_path)
    assert is_unpacked(case.npz_path)
    data, seg, pad_values = load_unpacked(case.npz_path)
    with np.load(case.npz_path) as npz:
        np.testing.assert_array_equal(data, npz["data"].astype(np.float32))
        np.testing.assert_array_equal(seg, npz["seg"])
        np.testing.assert_array_equal(pad_values, npz["data"].astype(np.float32).reshape(1, -1).min(axis=1))
    assert isinstance(data, np.memmap) and not data.flags.writeable  # read-only: a crop can never write back
    # an npz rewritten since (re-preprocessed, or copied in with an older time) makes the pair stale: not read,
    # re-made on the next unpack
    older = case.npz_path.stat().st_mtime_ns - 10**9
    os.utime(case.npz_path, ns=(older, older))
    assert not is_unpacked(case.npz_path) and load_unpacked(case.npz_path) is None
    assert all(p.is_file() for p in unpacked_paths(case.npz_path))  # the files are there, only stale
    unpack_cases([case.npz_path], num_processes=1, progress=False)
    assert is_unpacked(case.npz_path)


def test_the_sampler_draws_the_same_batches_from_unpacked_cases(tmp_path):
    cases = two_dataset_cases(tmp_path)
    unpack_cases([c.npz_path for c in cases], num_processes=2, progress=False)

    def batches(use_unpacked):
        sampler = PatchSampler(cases, make_plans(), "3d_fullres", batch_size=3, rng=np.random.default_rng(7),
                               cache_size=1, use_unpacked=use_unpacked)
        return [sampler.next_batch() for _ in range(6)]

    for a, b in zip(batches(False), batches(True)):
        assert a["keys"] == b["keys"]
        for key in ("data", "target", "annotated"):
            np.testing.assert_array_equal(a[key], b[key])
    arrays = _load_case_arrays(cases[0], use_unpacked=True)
    assert isinstance(arrays.data, np.memmap)


def test_a_case_not_unpacked_is_read_from_its_npz(tmp_path):
    case = two_dataset_cases(tmp_path)[0]
    arrays = _load_case_arrays(case, use_unpacked=True)
    assert not isinstance(arrays.data, np.memmap) and arrays.data.dtype == np.float32


def test_unpack_setting_resolves_with_the_workers():
    assert not TrainingConfig().resolved_unpack()  # in-process loading (the CPU demo): npz as before
    assert TrainingConfig(num_workers=4).resolved_unpack()
    assert not TrainingConfig(num_workers=4, unpack="no").resolved_unpack()
    assert TrainingConfig(unpack="yes").resolved_unpack()
    with pytest.raises(UserError, match="unpack"):
        TrainingConfig(unpack="sometimes").resolved_unpack()
