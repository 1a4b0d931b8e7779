"""A genuine nnU-Net v2 next to ours: its label maps scored with the benchmark's evaluation, checks, the predictor."""
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmark_helpers import geometry_for, write_benchmark_inputs, write_nnunet_model, write_raw_dataset
from textnnunet.benchmark.nnunet_import import (
    PREDICT_EXECUTABLE,
    check_validation_cases,
    find_predict_executable,
    model_info,
    open_nnunet_model,
    score_test_set,
    score_validation,
)
from textnnunet.benchmark.run import labelled_test_cases
from textnnunet.dataset.description import load_dataset
from textnnunet.errors import UserError
from textnnunet.evaluation.metrics import compute_case_metrics, label_map_to_masks
from textnnunet.imageio.sitk_io import write_image

LIVER, ABDOMEN, SPLEEN = "Dataset001_Liver", "Dataset004_Abdomen", "Dataset002_Spleen"
LIVER_LABELS = {"background": 0, "liver": [1, 2], "liver_tumor": 2}  # region syntax: liver includes its tumour
SPACING = (2.0, 1.0, 1.0)
SHAPE = (4, 8, 8)
HELD_OUT = ["liver_001"]


def liver_label() -> np.ndarray:
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[1:3, 0:4, 0:4] = 1  # liver: 32 voxels, tumour included
    label[1:3, 1:2, 1:2] = 2  # tumour: 2 voxels
    return label


@pytest.fixture
def raw(tmp_path) -> Path:
    root = tmp_path / "raw"
    write_raw_dataset(root, LIVER, LIVER_LABELS, {f"liver_{i:03d}": liver_label() for i in range(3)}, SPACING)
    return root


def liver_model(tmp_path, predictions, **kwargs) -> Path:
    return write_nnunet_model(tmp_path / "nnUNet_results", LIVER, kwargs.pop("labels", LIVER_LABELS), predictions,
                              SPACING, **kwargs)


# ------------------------------------------------------------------------------------------ validation
def test_a_perfect_prediction_scores_dice_one(tmp_path, raw):
    desc = load_dataset(raw, 1)
    model = open_nnunet_model(liver_model(tmp_path, {"liver_001": liver_label()}), 0, desc)
    assert model.name == "nnU-Net v2 Dataset001_Liver" and model.classes == ["liver", "liver tumor"]
    summary = score_validation(model, desc, HELD_OUT, tmp_path / "splits_final.json", tmp_path / "out")
    block = summary["per_dataset"][LIVER]
    for cls in ("liver", "liver tumor"):
        assert block["mean"][cls]["Dice"] == pytest.approx(1.0) and block["mean"][cls]["NSD"] == pytest.approx(1.0)
    assert summary["num_cases"] == 1 and (tmp_path / "out" / "summary.json").is_file()


def test_a_perturbed_prediction_scores_as_the_direct_evaluation(tmp_path, raw):
    predicted = liver_label()
    predicted[:, 3, :] = 0  # a quarter of the liver missed, the tumour kept: liver Dice 2*24/(24+32) = 6/7
    desc = load_dataset(raw, 1)
    model = open_nnunet_model(liver_model(tmp_path, {"liver_001": predicted}), 0, desc)
    summary = score_validation(model, desc, HELD_OUT, tmp_path / "splits_final.json", tmp_path / "out")
    assert summary["mean"]["liver"]["Dice"] == pytest.approx(6 / 7)
    assert summary["mean"]["liver tumor"]["Dice"] == pytest.approx(1.0)
    direct = compute_case_metrics(label_map_to_masks(liver_label(), desc.classes),
                                  label_map_to_masks(predicted, desc.classes), SPACING)
    assert summary["metric_per_case"][0]["metrics"] == direct


def test_model_info_reads_the_checkpoint_and_debug_json(tmp_path, raw):
    model = open_nnunet_model(liver_model(tmp_path, {"liver_001": liver_label()}), 0, load_dataset(raw, 1))
    info = model_info(model)
    assert info["kind"] == "nnunet_v2" and info["parameters"] == 4 * 27 + 4  # running statistics not counted
    assert info["training"] == {"epochs": 3, "iters_per_epoch": 250, "iterations": 750, "batch_size": 2,
                                "wall_seconds": 15.0, "device": "cpu"}
    assert (info["trainer"], info["plans"], info["configuration"]) == ("nnUNetTrainer", "nnUNetPlans", "3d_fullres")


def test_a_model_of_another_dataset_or_with_other_labels_is_refused(tmp_path, raw):
    desc = load_dataset(raw, 1)
    other = liver_model(tmp_path / "a", {"liver_001": liver_label()}, dataset_name=SPLEEN)
    with pytest.raises(UserError, match=r"plans\.json: dataset_name is 'Dataset002_Spleen', not 'Dataset001_Liver'"):
        open_nnunet_model(other, 0, desc)
    relabelled = liver_model(tmp_path / "b", {"liver_001": liver_label()},
                             labels={"background": 0, "liver": 1, "liver_tumor": 2})
    with pytest.raises(UserError, match=r"b/nnUNet_results/.*/dataset\.json: labels \{liver: \[1\], .*differ"):
        open_nnunet_model(relabelled, 0, desc)
    with pytest.raises(UserError, match="model folder not found"):
        open_nnunet_model(tmp_path / "nowhere", 0, desc)
    with pytest.raises(UserError, match=r"fold_1/checkpoint_final\.pth: not found"):
        open_nnunet_model(liver_model(tmp_path / "c", {"liver_001": liver_label()}), 1, desc)


def test_missing_or_extra_validation_cases_are_named(tmp_path, raw):
    desc = load_dataset(raw, 1)
    model = open_nnunet_model(liver_model(tmp_path, {"liver_002": liver_label()}), 0, desc)
    with pytest.raises(UserError) as e:
        check_validation_cases(model, HELD_OUT, tmp_path / "splits_final.json")
    message = str(e.value)
    assert "missing liver_001.nii.gz" in message and "it held out liver_002" in message
    assert "splits_final.json" in message and str(model.validation_folder) in message
    shutil.rmtree(model.validation_folder)
    with pytest.raises(UserError, match=r"fold_0/validation: not found"):
        score_validation(model, desc, HELD_OUT, tmp_path / "splits_final.json", tmp_path / "out")


def test_a_prediction_on_another_grid_is_refused(tmp_path, raw):
    desc = load_dataset(raw, 1)
    folder = liver_model(tmp_path, {"liver_001": liver_label()})
    write_image(liver_label(), geometry_for(SHAPE, (1.0, 1.0, 1.0)),
                folder / "fold_0" / "validation" / "liver_001.nii.gz")
    with pytest.raises(UserError, match=r"liver_001\.nii\.gz: geometry .* differs from the reference"):
        score_validation(open_nnunet_model(folder, 0, desc), desc, HELD_OUT, tmp_path / "s.json", tmp_path / "out")


# ------------------------------------------------------------------------------------------ test set
def abdomen_label() -> np.ndarray:
    label = liver_label()
    label[1:3, 5:7, 5:7] = 3  # spleen: 8 voxels
    return label


def spleen_prediction() -> np.ndarray:
    """What a spleen model writes: its own label value 1 for the spleen (the test set's spleen is 3)."""
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[1:3, 5:7, 5:7] = 1
    return label


@pytest.fixture
def spleen_and_abdomen(tmp_path, raw):
    write_raw_dataset(raw, SPLEEN, {"background": 0, "spleen": 1}, {"spleen_000": spleen_prediction()}, SPACING)
    write_raw_dataset(raw, ABDOMEN, {"background": 0, "liver": [1, 2], "liver_tumor": 2, "spleen": 3},
                      {"abd_000": abdomen_label(), "abd_001": abdomen_label()}, SPACING, test=True)
    folder = write_nnunet_model(tmp_path / "nnUNet_results", SPLEEN, {"background": 0, "spleen": 1}, {}, SPACING)
    model = open_nnunet_model(folder, 0, load_dataset(raw, 2))
    test, cases = labelled_test_cases(raw, 4)
    return model, test, cases


def write_predictions(folder: Path, cases: list[str]) -> Path:
    for case_id in cases:
        write_image(spleen_prediction(), geometry_for(SHAPE, SPACING), folder / f"{case_id}.nii.gz")
    return folder


def test_test_set_predictions_from_a_folder_are_scored_on_the_classes_the_model_labels(tmp_path, spleen_and_abdomen):
    model, test, cases = spleen_and_abdomen
    predictions = write_predictions(tmp_path / "preds", ["abd_000", "abd_001"])
    summary, seconds = score_test_set(model, test, cases, tmp_path / "out", predictions=predictions)
    assert list(summary["mean"]) == ["spleen"] and summary["mean"]["spleen"]["Dice"] == pytest.approx(1.0)
    assert summary["per_dataset"][ABDOMEN]["num_cases"] == 2 and seconds is None
    (predictions / "abd_001.nii.gz").unlink()
    with pytest.raises(UserError, match=r"preds: no nnU-Net prediction for 1 labelled test case\(s\): "
                                        r"abd_001\.nii\.gz"):
        score_test_set(model, test, cases, tmp_path / "out", predictions=predictions)


def fake_predictor(folder: Path, canned: Path | None, exit_code: int = 0) -> Path:
    """Stands in for nnUNetv2_predict_from_modelfolder: records its arguments, copies canned label maps to -o."""
    script = folder / PREDICT_EXECUTABLE
    folder.mkdir(parents=True, exist_ok=True)
    script.write_text(f"""#!{sys.executable}
import json, shutil, sys
from pathlib import Path
args = sys.argv[1:]
Path({str(folder / 'args.json')!r}).write_text(json.dumps(args))
if {exit_code}:
    print("Traceback (most recent call last):", file=sys.stderr)
    print("RuntimeError: the fake predictor failed", file=sys.stderr)
    sys.exit({exit_code})
out = Path(args[args.index("-o") + 1])
out.mkdir(parents=True, exist_ok=True)
for p in Path({str(canned)!r}).iterdir():
    shutil.copy(p, out / p.name)
""")
    script.chmod(0o755)
    return script


def test_the_nnunet_predictor_is_run_on_imagesTs(tmp_path, spleen_and_abdomen, monkeypatch):
    model, test, cases = spleen_and_abdomen
    canned = write_predictions(tmp_path / "canned", ["abd_000", "abd_001"])
    bin_folder = tmp_path / "bin"
    fake_predictor(bin_folder, canned)
    monkeypatch.setenv("PATH", str(bin_folder) + os.pathsep + os.environ.get("PATH", ""))
    executable = find_predict_executable()
    assert executable == bin_folder / PREDICT_EXECUTABLE
    out = tmp_path / "out"
    summary, seconds = score_test_set(model, test, cases, out, executable=executable, device="cpu",
                                      use_mirroring=False)
    assert summary["mean"]["spleen"]["Dice"] == pytest.approx(1.0) and seconds > 0
    assert json.loads((bin_folder / "args.json").read_text()) == [
        "-i", str(test.folder / "imagesTs"), "-o", str(out / "predictions"), "-m", str(model.folder), "-f", "0",
        "-device", "cpu", "--disable_tta"]


def test_a_failing_or_missing_predictor_is_a_user_error(tmp_path, spleen_and_abdomen, monkeypatch):
    model, test, cases = spleen_and_abdomen
    failing = fake_predictor(tmp_path / "bin", None, exit_code=3)
    with pytest.raises(UserError, match=r"exited with code 3 \(log: .*nnunet_predict_log\.txt\); last line: "
                                        r"RuntimeError: the fake predictor failed"):
        score_test_set(model, test, cases, tmp_path / "out", executable=find_predict_executable(failing))
    not_executable = tmp_path / "predict.txt"
    not_executable.write_text("")
    with pytest.raises(UserError, match=r"predict\.txt: not an executable file \(--nnunet_predict_exe\)"):
        find_predict_executable(not_executable)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert find_predict_executable() is None


# ------------------------------------------------------------------------------------------ the command
def test_the_benchmark_command_refuses_a_bad_nnunet_model_with_exit_code_2(tmp_path, raw, capsys, monkeypatch):
    from textnnunet.cli.benchmark import main as benchmark_main

    monkeypatch.delenv("TEXTNNUNET_raw", raising=False)
    pre = write_benchmark_inputs(tmp_path / "preprocessed")
    wrong = liver_model(tmp_path, {"liver_001": liver_label()}, dataset_name=SPLEEN)
    base = ["-d", "1", "2", "--no_train", "--preprocessed", str(pre), "--results", str(tmp_path / "results")]
    for extra, expected in (
            (["--raw", str(raw), "--nnunet_model", "1", str(wrong)], f"{wrong / 'plans.json'}: dataset_name"),
            (["--nnunet_model", "1", str(wrong)], "--nnunet_model needs the raw folder"),
            (["--raw", str(raw), "--nnunet_predict_exe", "x"], "--nnunet_predict_exe: needs --nnunet_model")):
        with pytest.raises(SystemExit) as e:
            benchmark_main(base + extra)
        err = capsys.readouterr().err
        assert e.value.code == 2 and expected in err and "Traceback" not in err


def test_parameter_count_counts_the_shared_encoder_once(tmp_path):
    import torch

    from textnnunet.benchmark.nnunet_import import parameter_count

    # nnU-Net's decoder holds the encoder: its state dict lists every encoder tensor twice, one storage.
    net = torch.nn.Module()
    net.encoder = torch.nn.Conv3d(1, 4, 3)
    net.decoder = torch.nn.Module()
    net.decoder.encoder = net.encoder
    net.decoder.seg = torch.nn.Conv3d(4, 2, 1)
    torch.save({"network_weights": net.state_dict()}, tmp_path / "c.pth")
    checkpoint = torch.load(tmp_path / "c.pth", weights_only=False)
    assert len(checkpoint["network_weights"]) == 6
    assert parameter_count(checkpoint) == (4 * 27 + 4) + (2 * 4 + 2)


def test_test_set_predictions_are_given_per_test_set(tmp_path, raw):
    from textnnunet.benchmark.run import BenchmarkOptions, nnunet_test_prediction_folders

    labels = {"background": 0, "liver": [1, 2], "liver_tumor": 2}
    write_raw_dataset(raw, ABDOMEN, labels, {"abd_000": liver_label()}, SPACING, test=True)
    write_raw_dataset(raw, "Dataset010_AbdomenSealed", labels, {"sealed_000": liver_label()}, SPACING, test=True)

    def folders(*entries, test_dataset=4, more=(10,)):
        options = BenchmarkOptions(dataset_ids=[1], test_dataset=test_dataset, more_test_datasets=list(more),
                                   nnunet_test_predictions=list(entries))
        return nnunet_test_prediction_folders(options, raw, [LIVER])

    assert folders(("1", "p4"), ("1", "p10", "10")) == {(LIVER, ABDOMEN): Path("p4"),
                                                       (LIVER, "Dataset010_AbdomenSealed"): Path("p10")}
    assert folders(("1", "p4", "4")) == {(LIVER, ABDOMEN): Path("p4")}
    assert folders(("1", "p10", "Dataset010_AbdomenSealed")) == {(LIVER, "Dataset010_AbdomenSealed"): Path("p10")}
    for entries, message in (
            ([("1", "p", "10"), ("1", "q", "10")], "given twice for Dataset001_Liver on Dataset010_AbdomenSealed"),
            ([("1", "p", "1")], "Dataset001_Liver is not one of the test sets"),
            ([("1",)], "give DATASET_ID FOLDER"),
    ):
        with pytest.raises(UserError, match=message):
            folders(*entries)
    with pytest.raises(UserError, match="needs --test_dataset"):
        folders(("1", "p"), test_dataset=None, more=())
