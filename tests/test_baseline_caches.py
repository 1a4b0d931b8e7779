"""Per-dataset (baseline) caches: plan_and_preprocess writes the plans but not the caches unless asked (--baselines);
textnnunet_train_baseline and textnnunet_benchmark make them when they need them, once, with the same arrays."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from _planning_data import blob_case, make_dataset
from textnnunet.cli.plan_and_preprocess import plan_and_preprocess_entry, preprocess_entry
from textnnunet.errors import UserError
from textnnunet.preprocessing.preprocessor import ensure_preprocessed, finished_case_ids, load_case

torch.set_num_threads(1)

LIVER, SPLEEN = "Dataset001_Liver", "Dataset002_Spleen"
JOINT = "TextPlans_001_002"
PLAN_ARGS = ["-d", "1", "2", "-np", "1", "-c", "3d_fullres", "--preset", "cpu"]


def _raw(raw: Path) -> Path:
    make_dataset(raw, LIVER, {"0": "CT"}, {"background": 0, "liver": [1, 2], "liver_tumor": 2},
                 {f"l{i}": blob_case(seed=i, label_value=1 + i % 2) for i in range(3)})
    make_dataset(raw, SPLEEN, {"0": "CT"}, {"background": 0, "spleen": 1},
                 {f"s{i}": blob_case(seed=10 + i, spacing=(2.5, 1.0, 1.0), value=50.0) for i in range(3)})
    return raw


def _run(entry, argv, capsys=None) -> str:
    with pytest.raises(SystemExit) as e:
        entry(argv)
    out = capsys.readouterr() if capsys is not None else None
    assert e.value.code == 0, out.err if out else argv
    return out.out if out else ""


def _plan(tmp_path: Path, *flags: str, capsys=None) -> tuple[Path, Path, str]:
    raw, pre = _raw(tmp_path / "raw"), tmp_path / "pre"
    out = _run(plan_and_preprocess_entry, [*PLAN_ARGS, "--raw", str(raw), "--preprocessed", str(pre), *flags], capsys)
    return raw, pre, out


def _cache(pre: Path, dataset: str) -> Path:
    return pre / dataset / "3d_fullres" / dataset


def _stamps(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.iterdir())}


def test_default_writes_the_baseline_plans_but_not_their_caches(tmp_path, capsys):
    _, pre, out = _plan(tmp_path, capsys=capsys)
    assert sorted(finished_case_ids(pre / JOINT / "3d_fullres" / LIVER)) == ["l0", "l1", "l2"]
    for dataset in (LIVER, SPLEEN):
        assert json.loads((pre / dataset / "plans.json").read_text())["datasets"] == [dataset]  # inspectable
        assert not (pre / dataset / "3d_fullres").exists()
    assert "--baselines" in out
    # blob_case labels slices 2-4 of a body on slices 1-6 (2 mm): 2 mm of body below the liver, 4 above
    margins = json.loads((pre / JOINT / "plans.json").read_text())["label_margins_mm"]
    assert margins["liver"][LIVER] == {"inferior_mm": 2.0, "superior_mm": 4.0, "cases": 3}
    assert "field of view: the images labelling 'liver' show at most a median 2.0 mm below it" in out
    assert "not measured" not in out
    # a fingerprint from before the margins is reused as it is, and the plan says what it lacks
    fingerprint = pre / LIVER / "dataset_fingerprint.json"
    fingerprint.write_text(json.dumps({k: v for k, v in json.loads(fingerprint.read_text()).items()
                                       if k != "label_margins_mm"}))
    out = _run(plan_and_preprocess_entry, [*PLAN_ARGS, "--raw", str(tmp_path / "raw"), "--preprocessed", str(pre),
                                           "--no_baselines"], capsys)
    assert f"field of view: not measured for {LIVER} (" in out and "labelling 'spleen'" in out
    assert "labelling 'liver'" not in out


def test_baselines_flag_preprocesses_them_now_and_lazy_caches_hold_the_same_arrays(tmp_path):
    raw, pre, _ = _plan(tmp_path, "--baselines")
    eager = {c: load_case(_cache(pre, LIVER), c) for c in ("l0", "l1", "l2")}
    assert finished_case_ids(_cache(pre, SPLEEN)) == ["s0", "s1", "s2"]
    shutil.rmtree(pre / LIVER / "3d_fullres")
    assert ensure_preprocessed(pre / LIVER / "plans.json", "3d_fullres", raw, log=lambda *_: None) == [LIVER]
    for case_id, (data, seg, props) in eager.items():
        lazy = load_case(_cache(pre, LIVER), case_id)
        np.testing.assert_array_equal(lazy[0], data)
        np.testing.assert_array_equal(lazy[1], seg)
        assert lazy[2] == props


def test_no_baselines_still_works_and_preprocess_takes_the_flags(tmp_path, capsys):
    raw, pre, _ = _plan(tmp_path, "--no_baselines")
    assert (pre / LIVER / "plans.json").is_file() and not (pre / LIVER / "3d_fullres").exists()
    assert finished_case_ids(pre / JOINT / "3d_fullres" / SPLEEN) == ["s0", "s1", "s2"]
    common = ["-d", "1", "2", "-np", "1", "-c", "3d_fullres", "--raw", str(raw), "--preprocessed", str(pre)]
    _run(preprocess_entry, common)
    assert not (pre / LIVER / "3d_fullres").exists()  # textnnunet_preprocess: the joint plan by default too
    _run(preprocess_entry, common + ["--baselines"])
    assert finished_case_ids(_cache(pre, LIVER)) == ["l0", "l1", "l2"]
    with pytest.raises(SystemExit) as e:
        preprocess_entry(common + ["--baselines", "--no_baselines"])
    assert e.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_ensure_preprocessed_makes_missing_caches_once_and_redoes_stale_ones(tmp_path):
    raw, pre, _ = _plan(tmp_path)
    plans_path = pre / SPLEEN / "plans.json"
    with pytest.raises(UserError, match="not preprocessed; pass --raw"):
        ensure_preprocessed(plans_path, "3d_fullres", None)
    other_raw = tmp_path / "other_raw"  # a raw folder without the dataset (e.g. only the test sets)
    other_raw.mkdir()
    with pytest.raises(UserError, match=f"not preprocessed; {other_raw} has no {SPLEEN}"):
        ensure_preprocessed(plans_path, "3d_fullres", other_raw)
    logged = []
    assert ensure_preprocessed(plans_path, "3d_fullres", raw, log=logged.append) == [SPLEEN]
    assert logged == [f"preprocessing {SPLEEN} with plan {SPLEEN} (3d_fullres): 3 of 3 cases"]
    stamps = _stamps(_cache(pre, SPLEEN))
    assert ensure_preprocessed(plans_path, "3d_fullres", raw, log=logged.append) == []  # present: nothing redone
    assert ensure_preprocessed(plans_path, "3d_fullres", None) == []  # nor without raw
    assert ensure_preprocessed(plans_path, "3d_fullres", other_raw) == []
    assert _stamps(_cache(pre, SPLEEN)) == stamps and len(logged) == 1
    # one case lost: only it is made again
    (_cache(pre, SPLEEN) / "s1.json").unlink()
    ensure_preprocessed(plans_path, "3d_fullres", raw, log=logged.append)
    assert logged[-1].endswith("1 of 3 cases")
    after = _stamps(_cache(pre, SPLEEN))
    assert after["s0.npz"] == stamps["s0.npz"] and after["s1.npz"] != stamps["s1.npz"]
    # re-planned spacing: the whole cache is stale (the preprocessor's signature), redone with raw, refused without
    plans = json.loads(plans_path.read_text())
    plans["configurations"]["3d_fullres"]["spacing"] = [s * 2 for s in plans["configurations"]["3d_fullres"]["spacing"]]
    plans_path.write_text(json.dumps(plans))
    with pytest.raises(UserError, match="made with other plan settings; pass --raw"):
        ensure_preprocessed(plans_path, "3d_fullres", None)
    ensure_preprocessed(plans_path, "3d_fullres", raw, log=logged.append)
    assert "made with other plan settings" in logged[-1]
    assert all(t != after[name] for name, t in _stamps(_cache(pre, SPLEEN)).items() if name.endswith(".npz"))


def test_train_baseline_makes_its_cache_when_it_needs_it_then_reuses_it(tmp_path, capsys):
    from textnnunet.cli.train_baseline import main as train_baseline_main

    raw, pre, _ = _plan(tmp_path)
    argv = ["1", "3d_fullres", "0", "--raw", str(raw), "--preprocessed", str(pre), "--results", str(tmp_path / "res"),
            "--device", "cpu", "--epochs", "1", "--iters_per_epoch", "1", "--val_iters_per_epoch", "1", "-np", "1",
            "--skip_validation"]
    out = _run(train_baseline_main, argv, capsys)
    assert f"preprocessing {LIVER} with plan {LIVER} (3d_fullres): 3 of 3 cases" in out
    assert finished_case_ids(_cache(pre, LIVER)) == ["l0", "l1", "l2"]
    assert not (pre / SPLEEN / "3d_fullres").exists()  # only the dataset being trained
    stamps = _stamps(_cache(pre, LIVER))
    out = _run(train_baseline_main, argv + ["--overwrite"], capsys)
    assert "preprocessing" not in out and _stamps(_cache(pre, LIVER)) == stamps


def test_benchmark_makes_the_baseline_caches_it_trains_on_once(tmp_path, capsys):
    from textnnunet.cli.benchmark import main as benchmark_main

    raw, pre, _ = _plan(tmp_path)
    argv = ["-d", "1", "2", "--epochs", "1", "--iters_per_epoch", "1", "--val_iters_per_epoch", "1", "-np", "1",
            "--device", "cpu", "--encoder", "onehot", "--disable_tta", "--raw", str(raw), "--preprocessed", str(pre),
            "--results", str(tmp_path / "res")]
    out = _run(benchmark_main, argv, capsys)
    stamps = {}
    for dataset in (LIVER, SPLEEN):
        assert f"preprocessing {dataset} with plan {dataset} (3d_fullres)" in out
        assert len(finished_case_ids(_cache(pre, dataset))) == 3
        stamps[dataset] = _stamps(_cache(pre, dataset))
    out = _run(benchmark_main, argv, capsys)  # everything trained: nothing preprocessed again
    assert "preprocessing" not in out
    assert {d: _stamps(_cache(pre, d)) for d in (LIVER, SPLEEN)} == stamps
