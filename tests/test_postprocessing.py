"""Postprocessing rules and textnnunet_find_best_configuration on a hand-made results folder."""
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from textnnunet.cli.find_best_configuration import main as find_best_main
from textnnunet.errors import UserError
from textnnunet.evaluation.best_configuration import THRESHOLD_GRID, find_best_configuration
from textnnunet.evaluation.metrics import compute_case_metrics, label_map_to_masks
from textnnunet.evaluation.summary import summarize, write_summary
from textnnunet.postprocessing import (
    apply_postprocessing,
    class_thresholds,
    constrain_to,
    keep_largest_component,
    load_postprocessing,
    organ_pairs,
    postprocess_masks,
    save_postprocessing,
    threshold_probabilities,
)


def _run(main, argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


# ------------------------------------------------------------------------------------------------ operations
def test_keep_largest_component_counts_diagonal_neighbours_and_keeps_dtype():
    mask = np.zeros((6, 6, 6), np.uint8)
    mask[0:2, 0:2, 0:2] = 1  # 8 voxels
    mask[2, 2, 2] = 1  # touches the cube only at a corner: same component with full connectivity
    mask[4:6, 4:6, 3:6] = 1  # 12 voxels: larger than cube + corner (9)
    out = keep_largest_component(mask)
    assert out.dtype == np.uint8
    assert out.sum() == 12 and out[4:6, 4:6, 3:6].all() and not out[0:3, 0:3, 0:3].any()
    mask[3, 3, 3] = 1  # corner to corner: now one component
    assert keep_largest_component(mask).sum() == mask.sum()
    empty = np.zeros((3, 3, 3), bool)
    assert not keep_largest_component(empty).any()


def test_constrain_to_removes_lesion_outside_its_organ():
    organ = np.zeros((4, 4, 4), bool)
    organ[:2] = True
    lesion = np.zeros((4, 4, 4), np.uint8)
    lesion[1:3, 0, 0] = 1
    out = constrain_to(lesion, organ)
    assert out.dtype == np.uint8 and out[1, 0, 0] == 1 and out[2, 0, 0] == 0
    with pytest.raises(ValueError):
        constrain_to(lesion, organ[:3])


def test_organ_pairs_by_name():
    classes = ["liver", "Liver_Tumor", "kidney", "kidney cyst", "pancreas lesion", "left kidney", "left kidney tumour"]
    assert organ_pairs(classes) == {"liver tumor": "liver", "kidney cyst": "kidney",
                                    "left kidney tumour": "left kidney"}  # no pancreas in the vocabulary


def test_lesion_is_cut_with_the_cleaned_organ_before_its_own_largest_component():
    liver = np.zeros((10, 10, 10), np.uint8)
    liver[0:5, 0:5, 0:5] = 1
    liver[7:10, 7:10, 7:10] = 1  # a spurious liver island (27 voxels)
    tumor = np.zeros_like(liver)
    tumor[1:3, 1:3, 1:3] = 1  # 8 voxels inside the liver
    tumor[7:10, 7:10, 6:10] = 1  # 36 voxels, 27 of them in the island
    rules = {"largest_component": ["liver", "liver tumor"], "constrain_to_organ": {"Liver_Tumor": "liver"}}
    out = apply_postprocessing({"liver tumor": tumor, "liver": liver}, rules)
    assert out["liver"].sum() == 125
    # cut with the cleaned liver first, then the largest: the true tumour remains (the raw liver would keep 27
    # false voxels, largest-then-cut would keep nothing)
    assert out["liver tumor"].sum() == 8 and out["liver tumor"][1:3, 1:3, 1:3].all()
    # a prompt without a class (zero-shot) is left alone; a missing organ is reported, not guessed
    masks, notes = postprocess_masks([tumor, tumor], ["liver tumor", None], rules)
    assert masks[0].sum() == 36 and np.array_equal(masks[1], tumor)
    assert notes == ["'liver tumor' is constrained to 'liver', which was not predicted: constraint skipped"]


def test_rules_round_trip_and_bad_rules(tmp_path):
    path = tmp_path / "postprocessing.json"
    save_postprocessing(path, {"largest_component": ["Liver"], "constrain_to_organ": {"Liver_Tumor": "liver"}})
    assert load_postprocessing(path) == {"largest_component": ["liver"], "constrain_to_organ": {"liver tumor": "liver"}}
    for bad, message in [({"largest": ["liver"]}, "unknown key"), ({"largest_component": "liver"}, "list"),
                         ({"constrain_to_organ": {"liver": "liver"}}, "itself"),
                         ({"constrain_to_organ": {"a": "b", "b": "a"}}, "cycle")]:
        path.write_text(json.dumps(bad))
        with pytest.raises(UserError, match=message) as e:
            load_postprocessing(path)
        assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_threshold_rule_is_validated_and_optional(tmp_path):
    path = tmp_path / "postprocessing.json"
    save_postprocessing(path, {"threshold": {"Liver": 0.7, "spleen": 0.35}, "largest_component": ["liver"]})
    assert load_postprocessing(path)["threshold"] == {"liver": 0.7, "spleen": 0.35}
    # a file written before the key existed loads as it did (no key added), and thresholds nothing differently
    path.write_text(json.dumps({"largest_component": ["liver"], "constrain_to_organ": {}}))
    old = load_postprocessing(path)
    assert old == {"largest_component": ["liver"], "constrain_to_organ": {}}
    assert class_thresholds(old, ["liver", None], 0.5) == [0.5, 0.5]
    for bad in [0, 1, 1.5, -0.2, "0.7", None, True, [0.7]]:
        path.write_text(json.dumps({"threshold": {"liver": bad}}))
        with pytest.raises(UserError, match="threshold of 'liver' must be a number strictly between 0 and 1") as e:
            load_postprocessing(path)
        assert str(path) in str(e.value) and "\n" not in str(e.value)
    for bad, message in [({"threshold": [["liver", 0.7]]}, "must map class names"),
                         ({"threshold": {"Liver": 0.7, "liver": 0.8}}, "two values")]:
        path.write_text(json.dumps(bad))
        with pytest.raises(UserError, match=message) as e:
            load_postprocessing(path)
        assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_class_thresholds_make_the_masks():
    rules = {"threshold": {"Liver": 0.7}, "largest_component": [], "constrain_to_organ": {}}
    # a synonym's class, a class without a threshold, a zero-shot prompt (None)
    assert class_thresholds(rules, ["liver", "spleen", None], 0.4) == [0.7, 0.4, 0.4]
    assert class_thresholds(None, ["liver"], 0.5) == [0.5]
    probs = np.array([[[[0.95, 0.75, 0.65, 0.45]]], [[[0.95, 0.75, 0.65, 0.45]]]], np.float32)  # (2, 1, 1, 4)
    masks = threshold_probabilities(probs, class_thresholds(rules, ["liver", "spleen"], 0.5))
    assert masks[0].dtype == np.uint8
    assert masks[0].ravel().tolist() == [1, 1, 0, 0] and masks[1].ravel().tolist() == [1, 1, 1, 0]
    with pytest.raises(ValueError, match="2 probability channels but 1 thresholds"):
        threshold_probabilities(probs, [0.5])


# --------------------------------------------------------------------------------- find_best_configuration
PLAN = "TextPlans_001_002"
SHAPE = (10, 10, 10)
CLASSES = ["liver", "liver tumor", "spleen"]
ANNOTATED = {"Dataset001_A": {"liver": [1, 2], "liver tumor": [2]}, "Dataset002_B": {"spleen": [1]}}
FOLD_CASES = {"0": [("Dataset001_A", "a0"), ("Dataset002_B", "b0")],
              "1": [("Dataset001_A", "a1"), ("Dataset002_B", "b1")]}


def _block(*slices) -> np.ndarray:
    m = np.zeros(SHAPE, bool)
    m[slices] = True
    return m


def _write_raw(raw: Path, liver_has_second_piece: bool) -> None:
    specs = {"Dataset001_A": {"background": 0, "liver": [1, 2], "liver_tumor": 2},
             "Dataset002_B": {"background": 0, "spleen": 1}}
    for dataset, labels in specs.items():
        (raw / dataset / "labelsTr").mkdir(parents=True)
        (raw / dataset / "dataset.json").write_text(json.dumps(
            {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": 2, "file_ending": ".nii.gz"}))
    for case in ("a0", "a1"):
        label = np.zeros(SHAPE, np.uint8)
        label[2:6, 2:6, 2:6] = 1
        label[3:5, 3:5, 3:5] = 2
        if liver_has_second_piece:
            label[7:9, 7:9, 7:9] = 1
        sitk.WriteImage(sitk.GetImageFromArray(label), str(raw / "Dataset001_A" / "labelsTr" / f"{case}.nii.gz"))
    for case in ("b0", "b1"):
        label = _block(slice(1, 5), slice(1, 5), slice(1, 5)).astype(np.uint8)
        sitk.WriteImage(sitk.GetImageFromArray(label), str(raw / "Dataset002_B" / "labelsTr" / f"{case}.nii.gz"))


def _probabilities(configuration: str) -> dict[str, np.ndarray]:
    """Per-class probabilities of a case. 3d_fullres: right liver + a small island (8 voxels), tumour with a
    false positive outside the liver. 2d: liver shifted by one slice, right tumour."""
    liver = _block(slice(2, 6), slice(2, 6), slice(2, 6)).astype(np.float32) * 0.9
    tumor = _block(slice(3, 5), slice(3, 5), slice(3, 5)).astype(np.float32) * 0.9
    if configuration == "3d_fullres":
        liver[7:9, 7:9, 7:9] = 0.6  # an island: a true positive only if the reference has it
        tumor[0, 0, 0:2] = 0.6  # outside the liver
        liver[0, 9, 9] = 0.2
    else:
        liver = np.roll(liver, 1, axis=0)
        liver[0, 9, 9] = 0.9  # the ensemble keeps this voxel: (0.9 + 0.2) / 2 > 0.5
    spleen = _block(slice(1, 5), slice(1, 5), slice(1, 5)).astype(np.float32) * 0.9
    return {"liver": liver, "liver tumor": tumor, "spleen": spleen}


def _write_results(results: Path, raw: Path, with_probabilities: bool, probabilities=_probabilities) -> None:
    plans = {"plans_name": PLAN, "datasets": list(ANNOTATED),
             "label_space": {"classes": [{"name": c, "synonyms": []} for c in CLASSES], "datasets": ANNOTATED},
             "configurations": {"3d_fullres": {"data_identifier": "3d_fullres"}, "2d": {"data_identifier": "2d"}}}
    for configuration in ("3d_fullres", "2d"):
        folder = results / PLAN / configuration
        folder.mkdir(parents=True)
        (folder / "plans.json").write_text(json.dumps(plans))
        probs = np.stack([probabilities(configuration)[c] for c in CLASSES])
        for fold, cases in FOLD_CASES.items():
            validation = folder / f"fold_{fold}" / "validation"
            per_case = []
            for dataset, case_id in cases:
                (validation / dataset).mkdir(parents=True, exist_ok=True)
                masks = (probs > 0.5).astype(np.uint8)
                np.savez_compressed(validation / dataset / f"{case_id}.npz", masks=masks, classes=np.array(CLASSES))
                if with_probabilities:
                    np.savez_compressed(validation / dataset / f"{case_id}_probabilities.npz", probabilities=probs,
                                        classes=np.array(CLASSES))
                label = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / dataset / "labelsTr" / f"{case_id}.nii.gz")))
                reference = label_map_to_masks(label, ANNOTATED[dataset])
                predicted = {c: masks[CLASSES.index(c)] for c in reference}
                per_case.append({"case_id": case_id, "dataset": dataset,
                                 "metrics": compute_case_metrics(reference, predicted, (1.0, 1.0, 1.0))})
            write_summary(summarize(per_case), validation)  # what training's validation writes


@pytest.mark.parametrize("liver_has_second_piece", [False, True])
def test_largest_component_is_kept_only_where_it_helps(tmp_path, liver_has_second_piece):
    raw, results = tmp_path / "raw", tmp_path / "results"
    _write_raw(raw, liver_has_second_piece)
    _write_results(results, raw, with_probabilities=False)
    result = find_best_configuration(results, PLAN, ["3d_fullres", "2d"], folds=[0, 1], raw_root=raw)
    assert result["best"]["name"] == "3d_fullres"
    pp = result["postprocessing"]
    assert pp["determined"]
    near = 2 * 64 / (64 + 72)  # a 64-voxel liver against 72 voxels (one side has the 8-voxel island)
    if liver_has_second_piece:  # the island is real liver: dropping it would hurt
        assert "liver" not in pp["rules"]["largest_component"]
        assert pp["dice_per_class_before"]["liver"] == pytest.approx(1.0)
        assert pp["decisions"]["liver"]["largest_component"]["dice_after"] == pytest.approx(near)
    else:
        assert "liver" in pp["rules"]["largest_component"]
        assert pp["dice_per_class_before"]["liver"] == pytest.approx(near)
        assert pp["dice_per_class_after"]["liver"] == pytest.approx(1.0)
    # the tumour's false positive lies outside the liver: the constraint helps, its largest component adds nothing
    assert pp["rules"]["constrain_to_organ"] == {"liver tumor": "liver"}
    assert "liver tumor" not in pp["rules"]["largest_component"]
    assert pp["dice_per_class_before"]["liver tumor"] == pytest.approx(16 / 18)
    assert pp["dice_per_class_after"]["liver tumor"] == pytest.approx(1.0)
    assert "spleen" not in pp["rules"]["largest_component"]  # no change is no improvement
    # written where predict and the instructions point
    written = json.loads((results / PLAN / "3d_fullres" / "postprocessing.json").read_text())
    assert written == pp["rules"]
    assert json.loads((results / PLAN / "best_configuration.json").read_text())["best"]["name"] == "3d_fullres"
    instructions = (results / PLAN / "inference_instructions.md").read_text()
    assert f"-m {results / PLAN / '3d_fullres'}" in instructions and "--postprocessing" in instructions
    assert "not scored" in instructions and "--val --npz" in instructions
    assert result["ensembles"][0]["scored"] is False


def test_ensemble_is_scored_from_validation_probabilities_and_can_win(tmp_path):
    raw, results = tmp_path / "raw", tmp_path / "results"
    _write_raw(raw, liver_has_second_piece=False)
    _write_results(results, raw, with_probabilities=True)
    result = find_best_configuration(results, PLAN, ["3d_fullres", "2d"], folds=[0, 1], raw_root=raw)
    ensemble = result["ensembles"][0]
    assert ensemble["scored"] and ensemble["members"] == ["3d_fullres", "2d"]
    # liver of the mean probability: 3d's island and each one's extra slice drop out, one false voxel stays
    liver = (_probabilities("3d_fullres")["liver"] + _probabilities("2d")["liver"]) / 2 > 0.5
    reference = _block(slice(2, 6), slice(2, 6), slice(2, 6))
    expected = 2 * (liver & reference).sum() / (liver.sum() + reference.sum())
    assert ensemble["dice_per_class"]["liver"] == pytest.approx(expected)
    assert expected > result["configurations"]["2d"]["dice_per_class"]["liver"]
    # foreground means: ensemble (96/113 + 1 + 1) / 3 beats 3d_fullres (128/136 + 16/18 + 1) / 3
    assert result["best"]["name"] == "3d_fullres+2d"
    assert result["best"]["foreground_mean_dice"] == pytest.approx((96 / 113 + 2) / 3)
    assert (results / PLAN / "ensembles" / "3d_fullres+2d" / "postprocessing.json").is_file()
    assert "textnnunet_ensemble -i" in (results / PLAN / "inference_instructions.md").read_text()


def test_without_references_summaries_rank_and_postprocessing_is_not_guessed(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TEXTNNUNET_raw", raising=False)
    monkeypatch.delenv("TEXTNNUNET_preprocessed", raising=False)
    raw, results = tmp_path / "raw", tmp_path / "results"
    _write_raw(raw, liver_has_second_piece=False)
    _write_results(results, raw, with_probabilities=True)
    code, out, _ = _run(find_best_main, ["-p", PLAN, "-c", "3d_fullres", "2d", "-f", "0", "1",
                                         "--results", str(results)], capsys)
    assert code == 0 and "Postprocessing was not determined" in out
    result = json.loads((results / PLAN / "best_configuration.json").read_text())
    assert result["configurations"]["3d_fullres"]["scored_from"] == "the folds' validation/summary.json"
    assert result["ensembles"][0]["scored"] is False and "no reference labels" in result["ensembles"][0]["reason"]
    assert not (results / PLAN / "3d_fullres" / "postprocessing.json").exists()
    # a fold that has not validated is named in one line
    code, _, err = _run(find_best_main, ["-p", PLAN, "-c", "3d_fullres", "-f", "0", "2", "--results", str(results)],
                        capsys)
    assert code == 2 and "fold_2/validation/summary.json: not found" in err and err.count("\n") == 1
    code, _, err = _run(find_best_main, ["-p", PLAN, "-c", "3d_lowres", "-f", "0", "--results", str(results)], capsys)
    assert code == 2 and "3d_lowres: model folder not found" in err


def _outward_probabilities(configuration: str) -> dict[str, np.ndarray]:
    """A liver one voxel too large, confidently (its shell at 0.61-0.79: 0.8 and 0.9 are exact, 0.8 is nearer 0.5);
    a spleen best at 0.5 (a shell at 0.45 outside, a half at 0.55 inside); an exact tumour (every threshold ties)."""
    liver = _block(slice(2, 6), slice(2, 6), slice(2, 6))
    shell = ndimage.binary_dilation(liver, np.ones((3, 3, 3), bool)) & ~liver
    liver_p = liver.astype(np.float32) * 0.95
    liver_p[shell] = np.linspace(0.61, 0.79, int(shell.sum()), dtype=np.float32)
    spleen = _block(slice(1, 5), slice(1, 5), slice(1, 5))
    spleen_p = spleen.astype(np.float32) * 0.95
    spleen_p[1:3][spleen[1:3]] = 0.55
    spleen_p[ndimage.binary_dilation(spleen, np.ones((3, 3, 3), bool)) & ~spleen] = 0.45
    tumor = _block(slice(3, 5), slice(3, 5), slice(3, 5)).astype(np.float32) * 0.95
    return {"liver": liver_p, "liver tumor": tumor, "spleen": spleen_p}


def test_thresholds_are_adopted_only_where_they_raise_the_cv_dice(tmp_path):
    raw, results = tmp_path / "raw", tmp_path / "results"
    _write_raw(raw, liver_has_second_piece=False)
    _write_results(results, raw, with_probabilities=True, probabilities=_outward_probabilities)
    result = find_best_configuration(results, PLAN, ["3d_fullres"], folds=[0, 1], raw_root=raw)
    pp = result["postprocessing"]
    thresholds = pp["thresholds"]
    assert thresholds["decided"] and thresholds["grid"] == list(THRESHOLD_GRID)
    liver = thresholds["dice_per_threshold"]["liver"]
    outward = 2 * 64 / (64 + 216)  # the 64-voxel liver against itself and its 152-voxel shell
    assert liver["0.5"] == pytest.approx(outward) and liver["0.8"] == liver["0.9"] == pytest.approx(1.0)
    assert liver["0.3"] == liver["0.6"] == pytest.approx(outward) and outward < liver["0.7"] < 1.0
    spleen = thresholds["dice_per_threshold"]["spleen"]
    assert spleen["0.5"] == pytest.approx(1.0) and spleen["0.4"] < 1.0 and spleen["0.6"] < 1.0
    # liver: 0.8 (of the equally good 0.8 and 0.9, the nearer to 0.5); spleen best at 0.5, tumour tied: no entry
    assert pp["rules"]["threshold"] == {"liver": 0.8}
    # the mask rules are decided on the masks at 0.8, and the numbers before are those at 0.5
    assert pp["decisions"]["liver"]["largest_component"]["dice_before"] == pytest.approx(1.0)
    assert pp["dice_per_class_before"]["liver"] == pytest.approx(outward)
    assert pp["dice_per_class_after"]["liver"] == pytest.approx(1.0)
    assert pp["dice_per_class_after"]["spleen"] == pytest.approx(1.0)
    written = json.loads((results / PLAN / "3d_fullres" / "postprocessing.json").read_text())
    assert written["threshold"] == {"liver": 0.8}
    assert load_postprocessing(results / PLAN / "3d_fullres" / "postprocessing.json") == pp["rules"]
    saved = json.loads((results / PLAN / "best_configuration.json").read_text())
    assert saved["postprocessing"]["thresholds"]["dice_per_threshold"]["liver"]["0.8"] == pytest.approx(1.0)
    gain = saved["postprocessing"]["thresholds"]["gain_per_threshold"]["liver"]["0.8"]  # why 0.8 was adopted
    assert gain["gain"] == pytest.approx(1.0 - outward) and gain["standard_error"] == 0.0 and gain["cases"] == 2
    assert "0.5" not in saved["postprocessing"]["thresholds"]["gain_per_threshold"]["liver"]
    instructions = (results / PLAN / "inference_instructions.md").read_text()
    assert "thresholds: liver 0.8;" in instructions and "| liver | 0.4571 |" in instructions


def test_thresholds_are_not_decided_without_probabilities_or_when_switched_off(tmp_path, capsys):
    raw, results = tmp_path / "raw", tmp_path / "results"
    _write_raw(raw, liver_has_second_piece=False)
    _write_results(results, raw, with_probabilities=False, probabilities=_outward_probabilities)
    result = find_best_configuration(results, PLAN, ["3d_fullres"], folds=[0, 1], raw_root=raw)
    pp = result["postprocessing"]
    assert pp["determined"] and not pp["thresholds"]["decided"]
    assert "no validation probabilities for 3d_fullres" in pp["thresholds"]["reason"]
    assert "--npz" in pp["thresholds"]["reason"] and "--val --npz" in pp["thresholds"]["reason"]
    assert "threshold" not in pp["rules"]  # the file reads as one written before thresholds existed
    assert "threshold" not in json.loads((results / PLAN / "3d_fullres" / "postprocessing.json").read_text())
    assert pp["dice_per_class_before"]["liver"] == pytest.approx(2 * 64 / (64 + 216))
    assert "Per-class thresholds were not decided: no validation probabilities" in (
        results / PLAN / "inference_instructions.md").read_text()
    # with probabilities, the command line can switch the decision off
    _write_results(tmp_path / "with_npz", raw, with_probabilities=True, probabilities=_outward_probabilities)
    code, out, err = _run(find_best_main, ["-p", PLAN, "-c", "3d_fullres", "-f", "0", "1", "--no_thresholds",
                                           "--results", str(tmp_path / "with_npz"), "--raw", str(raw)], capsys)
    assert code == 0, err
    assert "Per-class thresholds were not decided: switched off (--no_thresholds)" in out
    assert "threshold" not in json.loads((tmp_path / "with_npz" / PLAN / "3d_fullres" / "postprocessing.json"
                                          ).read_text())


def test_a_threshold_moves_only_for_a_gain_beyond_the_cases_noise():
    from textnnunet.evaluation.best_configuration import _best_threshold

    base = [0.90, 0.92, 0.94]
    # a mean gain of 0.001 that the cases disagree on (+0.01, -0.008, +0.001): noise, stays at 0.5
    noisy = {0.5: base, 0.4: [0.91, 0.912, 0.941], 0.6: [0.89, 0.91, 0.93]}
    assert _best_threshold(noisy) == 0.5
    # every case gains about a point at 0.7, more at 0.8 but with one case losing: 0.7
    consistent = {0.5: base, 0.7: [0.91, 0.931, 0.949], 0.8: [0.95, 0.90, 0.96]}
    assert _best_threshold(consistent) == 0.7
    # one case cannot show a gain beyond its noise; a case with no Dice (NaN) does not count
    assert _best_threshold({0.5: [0.90], 0.7: [0.95]}) == 0.5
    assert _best_threshold({0.5: [0.90, float("nan")], 0.7: [0.95, 0.99]}) == 0.5
    # the bar is a parameter: at 0 any gain of the mean moves it (0.4's noisy 0.001; 0.8's larger mean gain)
    assert _best_threshold(noisy, min_gain_in_se=0.0) == 0.4
    assert _best_threshold(consistent, min_gain_in_se=0.0) == 0.8


def test_the_threshold_bar_is_a_command_line_option(tmp_path, capsys):
    raw, results = tmp_path / "raw", tmp_path / "results"
    _write_raw(raw, liver_has_second_piece=False)
    _write_results(results, raw, with_probabilities=True, probabilities=_outward_probabilities)
    argv = ["-p", PLAN, "-c", "3d_fullres", "-f", "0", "1", "--results", str(results), "--raw", str(raw)]
    code, out, _ = _run(find_best_main, argv + ["--threshold_min_gain_se", "0.5"], capsys)
    assert code == 0 and "at least 0.5 standard errors" in out
    saved = json.loads((results / PLAN / "best_configuration.json").read_text())
    assert saved["postprocessing"]["thresholds"]["min_gain_in_se"] == 0.5
    code, _, err = _run(find_best_main, argv + ["--threshold_min_gain_se", "-1"], capsys)
    assert code == 2 and "--threshold_min_gain_se -1.0: must be a number >= 0" in err
    code, _, err = _run(find_best_main, argv + ["--threshold_min_gain_se", "nan"], capsys)
    assert code == 2 and "--threshold_min_gain_se nan: must be a number >= 0" in err


def test_an_empty_reference_penalises_a_threshold_that_fills_it():
    from textnnunet.evaluation.best_configuration import _agreement, _best_threshold

    empty = np.zeros((2, 2, 2), bool)
    some = empty.copy()
    some[0, 0, 0] = True
    assert _agreement(empty, empty) == 1.0 and _agreement(empty, some) == 0.0 and _agreement(some, some) == 1.0
    # two cases gain at 0.3, three cases without the class get false positives there: 0.5 stays
    per_case = {0.5: [0.8, 0.8, 1.0, 1.0, 1.0], 0.3: [0.82, 0.83, 0.0, 0.0, 0.0]}
    assert _best_threshold(per_case) == 0.5
