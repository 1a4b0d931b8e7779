"""textnnunet_ensemble, ensemble_model_folders and textnnunet_predict --postprocessing on tiny random models (and
hand-written prediction folders where no network is needed)."""
import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from textnnunet.cli.ensemble import main as ensemble_main
from textnnunet.cli.predict import main as predict_main
from textnnunet.errors import UserError
from textnnunet.imageio.sitk_io import ImageGeometry
from textnnunet.inference.ensemble import ensemble_model_folders
from textnnunet.inference.export import OutputFolder
from textnnunet.inference.predictor import PredictionSettings
from textnnunet.postprocessing import keep_largest_component

from test_prediction import _run, _same_geometry, make_model_folder, write_ct

PROMPTS = ["liver", "spleen", "kidney"]


def _predict(capsys, model, image, out, *extra):
    code, stdout, err = _run(predict_main, ["-i", str(image), "-o", str(out), "-m", str(model), "--device", "cpu",
                                            "--disable_tta", "--quiet", *extra], capsys)
    assert code == 0, err
    return stdout


def _mask(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _probabilities(path):
    with np.load(path) as f:
        return f["probabilities"].astype(np.float32), list(f["prompts"])


def test_ensemble_of_two_folders_thresholds_the_mean_and_keeps_geometry(tmp_path, capsys):
    model = make_model_folder(tmp_path / "results", folds=(0, 1), seeds=(0, 1))
    img = write_ct(tmp_path / "c_0000.nii.gz", direction=(0, 1, 0, -1, 0, 0, 0, 0, 1))
    for fold in ("0", "1"):
        _predict(capsys, model, tmp_path / "c_0000.nii.gz", tmp_path / f"f{fold}", "-f", fold, "-p", *PROMPTS,
                 "--save_probabilities")
    code, _, err = _run(ensemble_main, ["-i", str(tmp_path / "f0"), str(tmp_path / "f1"), "-o", str(tmp_path / "ens"),
                                        "--quiet"], capsys)
    assert code == 0, err
    p0, prompts = _probabilities(tmp_path / "f0" / "c_probabilities.npz")
    p1, _ = _probabilities(tmp_path / "f1" / "c_probabilities.npz")
    assert prompts == PROMPTS
    differs = False
    for k, prompt in enumerate(PROMPTS):
        mask_img = sitk.ReadImage(str(tmp_path / "ens" / f"c_{prompt}.nii.gz"))
        assert _same_geometry(mask_img, img)
        ensembled = sitk.GetArrayFromImage(mask_img)
        np.testing.assert_array_equal(ensembled, ((p0[k] + p1[k]) / 2 > 0.5).astype(np.uint8))
        differs |= not np.array_equal(ensembled, _mask(tmp_path / "f0" / f"c_{prompt}.nii.gz"))
    assert differs  # the folds really disagree, so the mean is not just one of them
    manifest = json.loads((tmp_path / "ens" / "predictions.json").read_text())
    assert manifest["cases"]["c"]["prompts"] == {p: p for p in PROMPTS}


def test_mismatched_prompts_and_missing_probabilities_are_one_line_errors(tmp_path, capsys):
    model = make_model_folder(tmp_path / "results")
    write_ct(tmp_path / "c_0000.nii.gz")
    image = tmp_path / "c_0000.nii.gz"
    _predict(capsys, model, image, tmp_path / "a", "-p", "liver", "kidney", "--save_probabilities")
    _predict(capsys, model, image, tmp_path / "b", "-p", "kidney", "liver", "--save_probabilities")
    _predict(capsys, model, image, tmp_path / "c", "-p", "liver", "kidney")
    base = ["-o", str(tmp_path / "o"), "--quiet"]
    code, _, err = _run(ensemble_main, ["-i", str(tmp_path / "a"), str(tmp_path / "b"), *base], capsys)
    assert code == 2 and "same prompts in the same order" in err and err.count("\n") == 1
    code, _, err = _run(ensemble_main, ["-i", str(tmp_path / "a"), str(tmp_path / "c"), *base], capsys)
    assert code == 2 and "--save_probabilities" in err and err.count("\n") == 1
    code, _, err = _run(ensemble_main, ["-i", str(tmp_path / "a"), str(tmp_path), *base], capsys)
    assert code == 2 and "predictions.json" in err


def test_ensemble_model_folders_matches_ensembling_their_prediction_folders(tmp_path, capsys):
    models = [make_model_folder(tmp_path / f"results{seed}", seeds=(seed,)) for seed in (0, 1)]
    write_ct(tmp_path / "c_0000.nii.gz")
    for i, model in enumerate(models):
        _predict(capsys, model, tmp_path / "c_0000.nii.gz", tmp_path / f"m{i}", "-p", "liver", "--save_probabilities")
    settings = PredictionSettings(device="cpu", use_mirroring=False)
    failures = ensemble_model_folders(models, [tmp_path / "c_0000.nii.gz"], tmp_path / "direct", ["liver"],
                                      settings=settings, save_probabilities=True, verbose=False)
    assert failures == 0
    direct, _ = _probabilities(tmp_path / "direct" / "c_probabilities.npz")
    via_folders = (_probabilities(tmp_path / "m0" / "c_probabilities.npz")[0]
                   + _probabilities(tmp_path / "m1" / "c_probabilities.npz")[0]) / 2
    np.testing.assert_allclose(direct, via_folders, atol=2e-3)  # the files hold float16
    mask = _mask(tmp_path / "direct" / "c_liver.nii.gz")
    assert np.mean(mask == (via_folders[0] > 0.5)) > 0.99
    with pytest.raises(UserError, match="at least two"):
        ensemble_model_folders(models[:1], [tmp_path / "c_0000.nii.gz"], tmp_path / "x", ["liver"])


def _probed_model(tmp_path, capsys):
    """A tiny random model, one CT, and the model's probabilities for PROMPTS on it (predicted into probe/)."""
    model = make_model_folder(tmp_path / "results")
    write_ct(tmp_path / "c_0000.nii.gz")
    image = tmp_path / "c_0000.nii.gz"
    _predict(capsys, model, image, tmp_path / "probe", "-p", *PROMPTS, "--save_probabilities")
    return model, image, _probabilities(tmp_path / "probe" / "c_probabilities.npz")[0]


def test_predict_applies_postprocessing_rules(tmp_path, capsys):
    model, image, probs = _probed_model(tmp_path, capsys)
    # a random net's probabilities sit near 0.5: pick a threshold that leaves the spleen in many pieces
    threshold = float(np.quantile(probs[1], 0.7))
    # constrain to the spleen whichever other class has the most voxels above that threshold
    inner = max(("liver", "kidney"), key=lambda p: int((probs[PROMPTS.index(p)] > threshold).sum()))
    other = "kidney" if inner == "liver" else "liver"
    _predict(capsys, model, image, tmp_path / "raw", "-p", *PROMPTS, "--threshold", str(threshold))
    rules = tmp_path / "postprocessing.json"
    rules.write_text(json.dumps({"largest_component": ["spleen"], "constrain_to_organ": {inner: "spleen"}}))
    _predict(capsys, model, image, tmp_path / "pp", "-p", *PROMPTS, "--threshold", str(threshold),
             "--postprocessing", str(rules))
    raw = {p: _mask(tmp_path / "raw" / f"c_{p}.nii.gz").astype(bool) for p in PROMPTS}
    pp = {p: _mask(tmp_path / "pp" / f"c_{p}.nii.gz").astype(bool) for p in PROMPTS}
    assert ndimage.label(raw["spleen"], np.ones((3, 3, 3)))[1] > 1  # pieces to remove
    np.testing.assert_array_equal(pp["spleen"], keep_largest_component(raw["spleen"]))
    assert (raw[inner] & ~pp["spleen"]).any()  # the constraint has something to cut
    np.testing.assert_array_equal(pp[inner], raw[inner] & pp["spleen"])  # cut with the cleaned "organ"
    np.testing.assert_array_equal(pp[other], raw[other])
    rules.write_text(json.dumps({"largest_component": ["spleen"], "constrain_to_organ": {"liver": "spleen"}}))
    # the organ is not predicted: said once, the rest still applies
    out = _run(predict_main, ["-i", str(image), "-o", str(tmp_path / "alone"), "-m", str(model), "--device", "cpu",
                              "--disable_tta", "-p", "liver", "--postprocessing", str(rules)], capsys)[1]
    assert "postprocessing: 'liver' is constrained to 'spleen', which was not predicted" in out
    rules.write_text(json.dumps({"largest": ["liver"]}))
    code, _, err = _run(predict_main, ["-i", str(image), "-o", str(tmp_path / "bad"), "-m", str(model),
                                       "-p", "liver", "--postprocessing", str(rules)], capsys)
    assert code == 2 and "postprocessing.json: unknown key(s) largest" in err


def test_predict_applies_the_class_thresholds_of_a_postprocessing_file(tmp_path, capsys):
    model, image, probs = _probed_model(tmp_path, capsys)
    # a random net's probabilities sit near 0.5: a liver threshold above most of them changes its mask
    threshold = round(float(np.quantile(probs[0], 0.8)), 4)
    rules = tmp_path / "postprocessing.json"
    rules.write_text(json.dumps({"threshold": {"liver": threshold}}))
    for folder, extra in (("pp", ()), ("pp_probabilities", ("--save_probabilities",))):  # both export paths
        _predict(capsys, model, image, tmp_path / folder, "-p", *PROMPTS, "--postprocessing", str(rules), *extra)
        liver = _mask(tmp_path / folder / "c_liver.nii.gz")
        assert np.mean(liver == (probs[0] > threshold)) > 0.99  # the saved probabilities are float16
        assert liver.sum() < 0.5 * _mask(tmp_path / "probe" / "c_liver.nii.gz").sum()
    for prompt in ("spleen", "kidney"):  # no threshold of their own: the default, mask for mask
        np.testing.assert_array_equal(_mask(tmp_path / "pp_probabilities" / f"c_{prompt}.nii.gz"),
                                      _mask(tmp_path / "probe" / f"c_{prompt}.nii.gz"))
    np.testing.assert_array_equal(_probabilities(tmp_path / "pp_probabilities" / "c_probabilities.npz")[0], probs)


def _prediction_folder(folder, probabilities, prompts):
    """A folder as textnnunet_predict --save_probabilities writes it (same writer), from given probabilities."""
    geometry = ImageGeometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), probabilities.shape[1:])
    OutputFolder(folder).write("c", [(p > 0.5).astype(np.uint8) for p in probabilities], prompts, prompts, geometry,
                               False, ".nii.gz", probabilities)


def test_ensemble_applies_the_class_thresholds_of_a_postprocessing_file(tmp_path, capsys):
    values = np.array([0.9, 0.75, 0.6, 0.3], np.float32)  # the mean of both folders, voxel by voxel
    mean = np.stack([np.resize(values, (4, 4, 4))] * 2)  # liver, spleen
    _prediction_folder(tmp_path / "a", mean + 0.05, ["liver", "spleen"])
    _prediction_folder(tmp_path / "b", mean - 0.05, ["liver", "spleen"])
    rules = tmp_path / "postprocessing.json"
    rules.write_text(json.dumps({"threshold": {"liver": 0.7}, "largest_component": [], "constrain_to_organ": {}}))
    code, _, err = _run(ensemble_main, ["-i", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "ens"),
                                        "--postprocessing", str(rules), "--quiet"], capsys)
    assert code == 0, err
    np.testing.assert_array_equal(_mask(tmp_path / "ens" / "c_liver.nii.gz"), mean[0] > 0.7)
    np.testing.assert_array_equal(_mask(tmp_path / "ens" / "c_spleen.nii.gz"), mean[1] > 0.5)


def test_ensemble_thresholds_a_derived_side_by_its_class_as_predict_does(tmp_path, capsys):
    # "left kidney" shows a side derived from the trained class "kidney": postprocessing.json names the class
    values = np.array([0.9, 0.75, 0.6, 0.3], np.float32)
    mean = np.resize(values, (4, 4, 4))[None]
    geometry = ImageGeometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), mean.shape[1:])
    resolutions = {"left kidney": {"class": "kidney", "structure": "left kidney"}}
    for name, shift in (("a", 0.05), ("b", -0.05)):
        OutputFolder(tmp_path / name, resolutions=resolutions).write(
            "c", [(mean[0] + shift > 0.5).astype(np.uint8)], ["left kidney"], ["left kidney"], geometry, False,
            ".nii.gz", mean + shift)
    rules = tmp_path / "postprocessing.json"
    rules.write_text(json.dumps({"threshold": {"kidney": 0.7}, "largest_component": [], "constrain_to_organ": {}}))
    code, _, err = _run(ensemble_main, ["-i", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "ens"),
                                        "--postprocessing", str(rules), "--quiet"], capsys)
    assert code == 0, err
    np.testing.assert_array_equal(_mask(tmp_path / "ens" / "c_left_kidney.nii.gz"), mean[0] > 0.7)
