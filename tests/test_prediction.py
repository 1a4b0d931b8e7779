"""textnnunet_predict / TextPredictor / textnnunet_evaluate on a tiny randomly initialised model folder."""
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from textnnunet.cli.evaluate import main as evaluate_main
from textnnunet.cli.predict import main as predict_main
from textnnunet.inference.predictor import PredictionSettings, TextPredictor
from textnnunet.network.universal import TextPromptedUNet
from textnnunet.text.encoders import OneHotEncoder
from textnnunet.text.vocabulary import Vocabulary
from textnnunet.training.config import TrainingConfig

CLASSES = ["liver", "spleen", "kidney"]
ARCH = {"conv_dims": 3, "n_stages": 3, "features_per_stage": [4, 8, 16], "kernel_sizes": [[3, 3, 3]] * 3,
        "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]], "n_conv_per_stage": [1, 1, 1], "n_conv_per_stage_decoder": [1, 1]}


def _plans(channels: int) -> dict:
    return {
        "plans_name": "TextPlans_001_002", "datasets": ["Dataset001_A", "Dataset002_B"],
        "channel_names": {str(c): "CT" for c in range(channels)}, "file_ending": ".nii.gz",
        "label_space": {"classes": [{"name": c, "synonyms": ["hepatic parenchyma"] if c == "liver" else []}
                                    for c in CLASSES],
                        "datasets": {"Dataset001_A": {"liver": [1]}, "Dataset002_B": {"spleen": [1], "kidney": [2]}}},
        "foreground_intensity_properties_per_channel": {
            str(c): {"mean": 50.0, "std": 40.0, "percentile_00_5": -100.0, "percentile_99_5": 250.0}
            for c in range(channels)},
        "configurations": {"3d_fullres": {
            "data_identifier": "3d_fullres", "spacing": [6.0, 6.0, 6.0], "patch_size": [16, 32, 32], "batch_size": 2,
            "normalization_schemes": ["CTNormalization"] * channels, "use_mask_for_norm": [False] * channels,
            "resampling": {"image_order": 3, "label_order": 1, "order_z": 0, "separate_z_anisotropy_threshold": 3.0},
            "architecture": ARCH}},
    }


def make_model_folder(root: Path, channels: int = 1, folds=(0,), seeds=(0,)) -> Path:
    folder = root / "TextPlans_001_002" / "3d_fullres"
    folder.mkdir(parents=True)
    plans = _plans(channels)
    (folder / "plans.json").write_text(json.dumps(plans))
    vocab = Vocabulary.from_plans(plans).embed(OneHotEncoder(CLASSES))
    vocab.save(folder / "vocabulary.json")
    config = TrainingConfig(device="cpu")
    for fold, seed in zip(folds, seeds):
        torch.manual_seed(seed)
        net = TextPromptedUNet(ARCH, channels, len(CLASSES), deep_supervision=False)
        # Untrained heads whose outputs straddle 0.5 and vary in space, so masks are neither empty nor full.
        net.heads.initialize_output_bias(0.0)
        torch.nn.init.normal_(net.heads.controller.weight, std=0.1)
        (folder / f"fold_{fold}").mkdir()
        torch.save({"network": net.state_dict(), "training_config": config.to_json()},
                   folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder


def write_ct(path: Path, shape=(20, 24, 28), spacing=(5.0, 1.5, 2.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1),
             origin=(3.0, -7.0, 11.0), seed=0) -> sitk.Image:
    arr = np.random.default_rng(seed).normal(40, 30, size=shape).astype(np.int16)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(tuple(float(s) for s in spacing[::-1]))
    img.SetDirection(tuple(float(d) for d in direction))
    img.SetOrigin(origin)
    sitk.WriteImage(img, str(path))
    return img


def _run(main, argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def _same_geometry(a: sitk.Image, b: sitk.Image) -> bool:
    return (a.GetSize() == b.GetSize() and np.allclose(a.GetSpacing(), b.GetSpacing())
            and np.allclose(a.GetOrigin(), b.GetOrigin()) and np.allclose(a.GetDirection(), b.GetDirection()))


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), (-1, 0, 0, 0, -1, 0, 0, 0, 1),
                                       (0, 1, 0, -1, 0, 0, 0, 0, 1)])
def test_outputs_have_the_input_geometry(tmp_path, capsys, direction):
    model = make_model_folder(tmp_path / "results")
    (tmp_path / "in").mkdir()
    img = write_ct(tmp_path / "in" / "case_a_0000.nii.gz", direction=direction)
    code, out, _ = _run(predict_main, ["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(model),
                                       "-p", "liver", "kidney", "--device", "cpu", "--quiet"], capsys)
    assert code == 0
    for prompt in ("liver", "kidney"):
        mask = sitk.ReadImage(str(tmp_path / "out" / f"case_a_{prompt}.nii.gz"))
        assert _same_geometry(mask, img)
        assert set(np.unique(sitk.GetArrayFromImage(mask))) <= {0, 1}


def test_one_pass_serves_all_prompts_and_folds_average_probabilities(tmp_path):
    model = make_model_folder(tmp_path / "results", folds=(0, 1), seeds=(0, 1))
    write_ct(tmp_path / "x_0000.nii.gz")
    settings = PredictionSettings(device="cpu", use_mirroring=False)
    both = TextPredictor.from_folder(model, settings=settings)
    assert both.folds == ["0", "1"]
    resolutions = both.resolve_prompts(["liver", "spleen", "kidney"])
    probs_both, _ = both.predict_case_probabilities([tmp_path / "x_0000.nii.gz"], resolutions)
    singles = [TextPredictor.from_folder(model, folds=[f], settings=settings)
               .predict_case_probabilities([tmp_path / "x_0000.nii.gz"], resolutions)[0] for f in (0, 1)]
    np.testing.assert_allclose(probs_both, (singles[0] + singles[1]) / 2, atol=1e-5)
    assert not np.allclose(singles[0], singles[1])  # the folds really differ
    # a prompt's channel does not depend on which other prompts share the pass
    alone, _ = both.predict_case_probabilities([tmp_path / "x_0000.nii.gz"], resolutions[1:2])
    np.testing.assert_allclose(alone[0], probs_both[1], atol=1e-5)


def test_synonym_resolves_and_combined_map_has_a_legend(tmp_path, capsys):
    model = make_model_folder(tmp_path / "results")
    write_ct(tmp_path / "one.nii.gz")
    code, out, _ = _run(predict_main, ["-i", str(tmp_path / "one.nii.gz"), "-o", str(tmp_path / "out"), "-m",
                                       str(model), "-p", "Hepatic_Parenchyma", "-p", "spleen", "--combined",
                                       "--save_probabilities", "--device", "cpu"], capsys)
    assert code == 0 and "prompt 'Hepatic_Parenchyma': synonym of trained class 'liver'" in out
    legend = json.loads((tmp_path / "out" / "legend.json").read_text())
    assert legend["labels"] == {"1": "Hepatic_Parenchyma", "2": "spleen"}
    assert legend["resolved_classes"] == {"Hepatic_Parenchyma": "liver", "spleen": "spleen"}
    label_map = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "one.nii.gz")))
    assert set(np.unique(label_map)) <= {0, 1, 2}
    with np.load(tmp_path / "out" / "one_probabilities.npz") as f:
        assert f["probabilities"].shape == (2, 20, 24, 28)


def test_bad_inputs_are_reported_and_good_cases_still_written(tmp_path, capsys):
    model = make_model_folder(tmp_path / "results")
    inp = tmp_path / "in"
    inp.mkdir()
    write_ct(inp / "good_0000.nii.gz")
    (inp / "corrupt_0000.nii.gz").write_bytes(b"not an image at all")
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 9), np.int16)), str(inp / "flat_0000.nii.gz"))
    sitk.WriteImage(sitk.JoinSeries([sitk.GetImageFromArray(np.zeros((4, 5, 6), np.int16))] * 2),
                    str(inp / "fourd_0000.nii.gz"))
    code, _, err = _run(predict_main, ["-i", str(inp), "-o", str(tmp_path / "out"), "-m", str(model), "-p", "liver",
                                       "--device", "cpu", "--quiet"], capsys)
    assert code == 2
    assert (tmp_path / "out" / "good_liver.nii.gz").is_file()
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert any("corrupt_0000.nii.gz: cannot be read" in line for line in lines)
    assert any("flat_0000.nii.gz: expected a 3D image, found 2D" in line for line in lines)
    assert any("fourd_0000.nii.gz: expected a 3D image, found 4D" in line for line in lines)
    assert "Traceback" not in err


def test_missing_channel_unknown_and_empty_prompts_and_missing_checkpoints(tmp_path, capsys):
    model = make_model_folder(tmp_path / "results", channels=2)
    inp = tmp_path / "in"
    inp.mkdir()
    write_ct(inp / "full_0000.nii.gz")
    write_ct(inp / "full_0001.nii.gz", seed=1)
    write_ct(inp / "half_0000.nii.gz")
    base = ["-i", str(inp), "-o", str(tmp_path / "out"), "-m", str(model), "--device", "cpu", "--quiet"]
    code, _, err = _run(predict_main, base + ["-p", "liver"], capsys)
    assert code == 2 and "half_0001: channel file missing" in err
    assert (tmp_path / "out" / "full_liver.nii.gz").is_file()
    code, _, err = _run(predict_main, base + ["-p", "pancreas"], capsys)
    assert code == 2 and "prompt 'pancreas'" in err and "liver" in err and err.count("\n") == 1
    code, _, err = _run(predict_main, base + ["-p", " "], capsys)
    assert code == 2 and "empty prompt" in err
    empty = tmp_path / "results" / "TextPlans_001_002" / "3d_fullres"
    for f in empty.glob("fold_*/checkpoint_final.pth"):
        f.unlink()
    code, _, err = _run(predict_main, base + ["-p", "liver"], capsys)
    assert code == 2 and "no fold_*/checkpoint_final.pth" in err


def test_continue_and_never_overwrite_foreign_files(tmp_path, capsys):
    model = make_model_folder(tmp_path / "results")
    write_ct(tmp_path / "c_0000.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    (out / "c_liver.nii.gz").write_text("a file the user made")
    argv = ["-i", str(tmp_path / "c_0000.nii.gz"), "-o", str(out), "-m", str(model), "-p", "liver", "--device", "cpu",
            "--quiet"]
    code, _, err = _run(predict_main, argv, capsys)
    assert code == 2 and "not written by textnnunet_predict" in err
    assert (out / "c_liver.nii.gz").read_text() == "a file the user made"
    assert _run(predict_main, argv + ["--overwrite"], capsys)[0] == 0
    before = (out / "c_liver.nii.gz").stat().st_mtime_ns
    assert _run(predict_main, argv + ["--continue"], capsys)[0] == 0
    assert (out / "c_liver.nii.gz").stat().st_mtime_ns == before


def test_evaluate_scores_predictions_by_class_name(tmp_path, capsys):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir()
    pred.mkdir()
    label = np.zeros((6, 8, 8), np.uint8)
    label[1:4, 1:5, 1:5] = 1  # liver
    label[2:3, 2:4, 2:4] = 2  # liver tumour (region: liver = [1, 2])
    label[4:6, 6:8, 6:8] = 3  # spleen
    sitk.WriteImage(sitk.GetImageFromArray(label), str(ref / "k.nii.gz"))
    liver_pred = np.isin(label, [1, 2]).astype(np.uint8)
    liver_pred[1, 1, 1] = 0  # one false negative
    sitk.WriteImage(sitk.GetImageFromArray(liver_pred), str(pred / "k_liver.nii.gz"))
    (pred / "predictions.json").write_text(json.dumps(
        {"cases": {"k": {"files": ["k_liver.nii.gz"], "prompts": {"liver": "liver"}}}}))
    dataset = tmp_path / "Dataset009_X"
    dataset.mkdir()
    (dataset / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {
        "background": 0, "liver": [1, 2], "liver_tumor": 2, "spleen": 3}, "numTraining": 0, "file_ending": ".nii.gz"}))
    code, out, _ = _run(evaluate_main, ["-ref", str(ref), "-pred", str(pred), "-djfile",
                                        str(dataset / "dataset.json"), "--partial"], capsys)
    assert code == 0
    summary = json.loads((pred / "summary.json").read_text())
    n = int(np.isin(label, [1, 2]).sum())
    assert summary["mean"]["liver"]["Dice"] == pytest.approx(2 * (n - 1) / (2 * n - 1))
    assert set(summary["mean"]) == {"liver"}  # the baseline-style partial prediction is scored on what it covers
    code, _, err = _run(evaluate_main, ["-ref", str(ref), "-pred", str(pred), "-djfile",
                                        str(dataset / "dataset.json")], capsys)
    assert code == 2 and "no prediction for" in err


def test_real_ct_prediction_keeps_its_geometry(tmp_path, capsys, real_ct_folder):
    model = make_model_folder(tmp_path / "results")
    source = real_ct_folder / "ct_abdomen_small_3mm.nii.gz"
    code, _, _ = _run(predict_main, ["-i", str(source), "-o", str(tmp_path / "out"), "-m", str(model),
                                     "-p", "liver", "--device", "cpu", "--disable_tta", "--quiet"], capsys)
    assert code == 0
    mask = sitk.ReadImage(str(tmp_path / "out" / "ct_abdomen_small_3mm_liver.nii.gz"))
    assert _same_geometry(mask, sitk.ReadImage(str(source)))
