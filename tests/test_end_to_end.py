"""The whole pipeline through its commands on small phantoms (slow: run with pytest -m slow)."""
import json

import numpy as np
import pytest
import SimpleITK as sitk

from textnnunet.cli.evaluate import main as evaluate_main
from textnnunet.cli.find_best_configuration import main as find_best_main
from textnnunet.demo.generate_phantoms import main as phantoms_main
from textnnunet.cli.plan_and_preprocess import plan_and_preprocess_entry
from textnnunet.cli.predict import main as predict_main
from textnnunet.cli.train import main as train_main


def _ok(entry, argv):
    with pytest.raises(SystemExit) as e:
        entry(argv)
    assert e.value.code == 0, argv


@pytest.mark.slow
def test_phantoms_to_evaluation_through_the_commands(tmp_path, monkeypatch):
    for kind in ("raw", "preprocessed", "results"):
        monkeypatch.setenv(f"TEXTNNUNET_{kind}", str(tmp_path / kind))
    _ok(phantoms_main, ["--size", "small"])
    _ok(plan_and_preprocess_entry, ["-d", "1", "2", "3", "-np", "1", "-c", "3d_fullres", "--preset", "cpu",
                                    "--verify_dataset_integrity"])
    plans = json.loads((tmp_path / "preprocessed" / "TextPlans_001_002_003" / "plans.json").read_text())
    assert [c["name"] for c in plans["label_space"]["classes"]] == ["liver", "liver tumor", "spleen", "kidney",
                                                                    "kidney tumor"]
    assert (tmp_path / "preprocessed" / "Dataset002_Spleen" / "plans.json").is_file()  # baseline plan
    _ok(train_main, ["3d_fullres", "0", "--epochs", "2", "--iters_per_epoch", "3", "--val_iters_per_epoch", "2",
                     "--device", "cpu", "--quiet"])
    fold = tmp_path / "results" / "TextPlans_001_002_003" / "3d_fullres" / "fold_0"
    for name in ("checkpoint_final.pth", "progress.png", "log.txt", "validation/summary.json"):
        assert (fold / name).is_file(), name
    test_images = tmp_path / "raw" / "Dataset004_Abdomen" / "imagesTs"
    out = tmp_path / "pred"
    _ok(predict_main, ["-i", str(test_images), "-o", str(out), "-p", "liver", "spleen", "kidneys", "--device", "cpu",
                       "--quiet"])
    image = sitk.ReadImage(str(next(test_images.glob("*_0000.nii.gz"))))
    case = next(test_images.glob("*_0000.nii.gz")).name.replace("_0000.nii.gz", "")
    mask = sitk.ReadImage(str(out / f"{case}_kidneys.nii.gz"))
    assert mask.GetSize() == image.GetSize() and mask.GetDirection() == image.GetDirection()
    _ok(evaluate_main, ["-ref", str(tmp_path / "raw" / "Dataset004_Abdomen" / "labelsTs"), "-pred", str(out),
                        "-d", "4", "--partial"])
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["mean"]) == {"liver", "spleen", "kidney"}  # "kidneys" resolved to the trained class
    # nnU-Net's --val --npz: validation alone, probabilities kept; with a second model an ensemble can be scored
    _ok(train_main, ["3d_fullres", "0", "--val", "--npz", "--device", "cpu", "--quiet"])
    npz = next((fold / "validation" / "Dataset002_Spleen").glob("*_probabilities.npz"))
    with np.load(npz) as probs, np.load(str(npz).replace("_probabilities", "")) as masks:
        assert probs["probabilities"].shape == masks["masks"].shape
        np.testing.assert_array_equal(probs["probabilities"].astype(np.float32) > 0.5, masks["masks"] > 0)
    _ok(train_main, ["3d_fullres", "0", "--epochs", "2", "--iters_per_epoch", "3", "--val_iters_per_epoch", "2",
                     "--conditioning", "film", "--npz", "--device", "cpu", "--quiet"])
    _ok(find_best_main, ["-p", "TextPlans_001_002_003", "-c", "3d_fullres", "3d_fullres__film", "-f", "0"])
    best = json.loads((tmp_path / "results" / "TextPlans_001_002_003" / "best_configuration.json").read_text())
    assert [e["scored"] for e in best["ensembles"]] == [True]


@pytest.mark.slow
def test_demo_runs_every_step_on_small_phantoms(tmp_path, monkeypatch, capsys):
    from textnnunet.demo.run import main as demo_main

    for kind in ("raw", "preprocessed", "results"):
        monkeypatch.delenv(f"TEXTNNUNET_{kind}", raising=False)
    work = tmp_path / "work"
    _ok(demo_main, ["--work", str(work), "--size", "small", "--epochs", "1", "--iters_per_epoch", "2",
                    "--encoder", "onehot", "--device", "cpu", "-np", "1"])
    model = work / "results" / "TextPlans_001_002_003" / "3d_fullres__onehot"  # named as textnnunet_train names it
    assert (model / "fold_0" / "checkpoint_final.pth").is_file() and (model / "postprocessing.json").is_file()
    summary = json.loads((work / "predictions_Dataset004" / "summary.json").read_text())
    assert set(summary["mean"]) == {"liver", "liver tumor", "spleen", "kidney", "kidney tumor"}
    assert (work / "results" / "TextPlans_001_002_003" / "inference_instructions.md").is_file()
    best = json.loads((work / "results" / "TextPlans_001_002_003" / "best_configuration.json").read_text())
    assert best["postprocessing"]["thresholds"]["decided"] is True  # the demo keeps its validation probabilities
    assert "step seconds" in capsys.readouterr().out

    # A fold trained without its validation probabilities (before the demo kept them) gets them on the next run.
    kept = sorted((model / "fold_0" / "validation").glob("*/*_probabilities.npz"))
    assert kept
    for path in kept:
        path.unlink()
    _ok(demo_main, ["--work", str(work), "--size", "small", "--epochs", "1", "--iters_per_epoch", "2",
                    "--encoder", "onehot", "--device", "cpu", "-np", "1"])
    assert sorted((model / "fold_0" / "validation").glob("*/*_probabilities.npz")) == kept
    assert "validation_with_probabilities" in capsys.readouterr().out
