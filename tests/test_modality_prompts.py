"""Prompts that name the image's modality (TrainingConfig.prompt_modality): one text vector per (intensity
group, class); each training image is prompted with its dataset's group, a new image with the one it is predicted
as."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _planning_data import blob_case, make_dataset
from test_registries import ToyEncoder
from textnnunet.errors import UserError
from textnnunet.experiment_planning.planner import plan_datasets
from textnnunet.inference.predictor import PredictionSettings, TextPredictor
from textnnunet.preprocessing.preprocessor import run_preprocessing
from textnnunet.text import encoders
from textnnunet.text.encoders import OneHotEncoder
from textnnunet.text.modality import modality_phrase, modality_prompt
from textnnunet.text.vocabulary import Vocabulary
from textnnunet.training.config import TrainingConfig
from textnnunet.training.run import train_fold
from textnnunet.training.step import UniversalStep


def test_modality_phrases_name_what_a_radiologist_would_write():
    assert modality_phrase("CT") == "CT"
    assert modality_phrase("t1") == "T1-weighted MRI"
    assert modality_phrase("T2+ADC") == "T2-weighted MRI and ADC map"
    assert modality_phrase("Ultrasound") == "Ultrasound"  # unknown channel names pass through
    assert modality_prompt("liver", modality_phrase("T1")) == "liver on T1-weighted MRI"
    with pytest.raises(UserError, match="without a name"):
        modality_phrase(" ")


def test_vocabulary_keeps_one_table_per_modality_through_save_and_load(tmp_path):
    encoder = ToyEncoder()
    vocab = Vocabulary(["liver", "spleen"], {"liver": ["hepar"]}).embed(encoder).embed_modalities(["CT", "T1"], encoder)
    np.testing.assert_allclose(vocab.prompt_table("t1"), encoder.encode(["liver on T1-weighted MRI",
                                                                       "spleen on T1-weighted MRI"]))
    assert not np.allclose(vocab.prompt_table("CT"), vocab.prompt_table("T1"))
    loaded = Vocabulary.load(vocab.save(tmp_path))
    assert json.loads((tmp_path / "vocabulary.json").read_text())["embeddings"]["modalities"]["T1"]["phrase"] == \
        "T1-weighted MRI"
    for group in ("CT", "T1"):
        np.testing.assert_allclose(loaded.prompt_table(group), vocab.prompt_table(group), atol=1e-7)
    np.testing.assert_allclose(loaded.class_embeddings, vocab.class_embeddings, atol=1e-7)  # typed prompts match these
    with pytest.raises(UserError, match=r"modality \(CT, T1\).*--modality"):
        loaded.prompt_table()
    with pytest.raises(UserError, match="--modality PET: not one of this model's image types"):
        loaded.prompt_table("PET")
    # Without modality prompts every image gets the class names' vectors, whatever it is.
    plain = Vocabulary(["liver"]).embed(encoder)
    np.testing.assert_allclose(plain.prompt_table("T1"), plain.class_embeddings)


def test_one_hot_vectors_and_a_ct_template_cannot_carry_a_modality():
    encoder = OneHotEncoder(["liver"])
    with pytest.raises(UserError, match="onehot text encoder cannot embed a class with its modality"):
        Vocabulary(["liver"]).embed(encoder).embed_modalities(["CT"], encoder)
    ct_template = ToyEncoder("A computerized tomography of a {}.")
    with pytest.raises(UserError, match="names CT for every image"):
        Vocabulary(["liver"]).embed(ct_template).embed_modalities(["CT", "T1"], ct_template)


@pytest.fixture
def ct_and_t2(tmp_path):
    raw, pre = tmp_path / "raw", tmp_path / "pre"
    make_dataset(raw, "Dataset001_Liver", {"0": "CT"}, {"background": 0, "liver": 1},
                 {f"l{i}": blob_case(seed=i, value=60.0) for i in range(5)}, synonyms={"liver": ["hepar"]})
    make_dataset(raw, "Dataset002_SpleenT2", {"0": "T2"}, {"background": 0, "spleen": 1},
                 {f"s{i}": blob_case(seed=10 + i, value=900.0) for i in range(5)})
    joint, _ = plan_datasets(raw, pre, [1, 2], memory_target_gb=0.08, base_features=8, progress=False)
    run_preprocessing(joint, ["3d_fullres"], raw)
    return raw, pre


@pytest.fixture
def toy_encoder(monkeypatch):
    monkeypatch.setitem(encoders.ENCODERS, "toy", encoders.EncoderKind(
        lambda model, template, vocabulary: ToyEncoder(template),
        lambda identity, vocabulary: ToyEncoder(identity.get("template"))))


def test_training_prompts_each_image_with_its_datasets_modality_and_prediction_with_the_inputs(
        ct_and_t2, toy_encoder, tmp_path, monkeypatch):
    raw, pre = ct_and_t2
    seen = []
    original = UniversalStep.batch_text

    def spy(self, batch):
        text = original(self, batch)
        seen.append((text, [dataset for dataset, _ in batch["keys"]]))
        return text

    monkeypatch.setattr(UniversalStep, "batch_text", spy)
    config = TrainingConfig(epochs=1, iters_per_epoch=3, val_iters_per_epoch=1, device="cpu", seed=1,
                            prompt_modality=True)
    fold = train_fold("3d_fullres", 0, config, raw=raw, preprocessed=pre, results=tmp_path / "results",
                      dataset_ids=[1, 2], encoder="toy", echo=False)
    assert fold.parent.name == "3d_fullres__modalityprompt__toy"
    encoder = ToyEncoder()
    classes = ["liver", "spleen"]
    tables = {"Dataset001_Liver": encoder.encode([f"{c} on CT" for c in classes]),
              "Dataset002_SpleenT2": encoder.encode([f"{c} on T2-weighted MRI" for c in classes])}
    assert seen and {d for _, datasets in seen for d in datasets} == set(tables)
    for text, datasets in seen:
        assert tuple(text.shape) == (len(datasets), 2, encoder.dim)
        for item, dataset in enumerate(datasets):
            np.testing.assert_allclose(text[item].numpy(), tables[dataset], atol=1e-6)

    predictor = TextPredictor.from_folder(fold.parent, folds=[0], settings=PredictionSettings(device="cpu"))
    with pytest.raises(UserError, match="--modality"):
        predictor.heads_for(predictor.resolve_prompts(["spleen"]))
    predictor.settings.modality = "t2"
    vectors, groups = predictor.heads_for(predictor.resolve_prompts(["spleen", "liver"]))
    np.testing.assert_allclose(vectors.numpy(), tables["Dataset002_SpleenT2"][[1, 0]], atol=1e-6)
    # A synonym or a misspelling of a trained class asks that class's trained head, from the stored vectors.
    monkeypatch.setattr(Vocabulary, "zero_shot_vector", lambda *a, **k: pytest.fail("re-encoded a trained class"))
    resolutions = predictor.resolve_prompts(["hepar", "livr", "Spleen"])
    assert [r.class_name for r in resolutions] == ["liver", "liver", "spleen"]
    vectors, _ = predictor.heads_for(resolutions)
    np.testing.assert_allclose(vectors.numpy(), tables["Dataset002_SpleenT2"][[0, 0, 1]], atol=1e-6)
    image = raw / "Dataset002_SpleenT2" / "imagesTr" / "s0_0000.nii.gz"
    probabilities, _ = predictor.predict_case_probabilities([image], predictor.resolve_prompts(["spleen"]))
    assert probabilities.shape[0] == 1 and np.isfinite(probabilities).all()


def test_modality_prompts_need_a_conditioning_that_takes_each_images_own_prompts(ct_and_t2, toy_encoder, tmp_path):
    raw, pre = ct_and_t2
    config = TrainingConfig(epochs=1, iters_per_epoch=1, val_iters_per_epoch=1, device="cpu", prompt_modality=True,
                            conditioning="film")
    with pytest.raises(UserError, match="need a conditioning that takes each image's own prompts"):
        train_fold("3d_fullres", 0, config, raw=raw, preprocessed=pre, results=tmp_path / "results",
                   dataset_ids=[1, 2], encoder="toy", echo=False)
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("*.json"))  # nothing written


def _test_set(raw, folder_name, channel, labels, cases):
    """A test-only dataset (imagesTs + labelsTs), as the pooled phantoms' test sets are."""
    folder = make_dataset(raw, folder_name, {"0": channel}, labels, cases)
    (folder / "imagesTr").rename(folder / "imagesTs")
    (folder / "labelsTr").rename(folder / "labelsTs")
    meta = json.loads((folder / "dataset.json").read_text())
    (folder / "dataset.json").write_text(json.dumps({**meta, "numTraining": 0}))


def test_benchmark_of_a_ct_and_mr_pool_scores_each_model_on_the_image_types_it_was_trained_on(
        ct_and_t2, tmp_path, capsys):
    """The universal model of a CT + T2 plan predicts each test set as its image type (as predict --modality);
    a per-dataset baseline is scored only on test images of its own type, and the report says why not otherwise."""
    from textnnunet.benchmark import aggregate
    from textnnunet.cli.benchmark import main as benchmark_main

    raw, pre = ct_and_t2
    labels = {"background": 0, "liver": 1, "spleen": 2}
    _test_set(raw, "Dataset003_AbdomenT2", "T2", labels,
              {f"t{i}": blob_case(seed=20 + i, value=900.0, label_value=2) for i in range(2)})
    _test_set(raw, "Dataset004_AbdomenCT", "CT", labels,
              {f"c{i}": blob_case(seed=30 + i, value=60.0) for i in range(2)})
    torch.set_num_threads(1)
    argv = ["-d", "1", "2", "--test_dataset", "3", "4", "--epochs", "1", "--iters_per_epoch", "1",
            "--val_iters_per_epoch", "1", "--device", "cpu", "--encoder", "onehot", "--disable_tta", "-np", "1",
            "--raw", str(raw), "--preprocessed", str(pre), "--results", str(tmp_path / "results")]
    with pytest.raises(SystemExit) as e:
        benchmark_main(argv)
    assert e.value.code == 0, capsys.readouterr().err
    out = next((tmp_path / "results").glob("benchmark_TextPlans_001_002_*"))
    bench = json.loads((out / "benchmark.json").read_text())
    t2, ct = bench["test"], bench["more_tests"][0]
    assert (t2["image_type"], ct["image_type"]) == ("T2", "CT")
    ct_liver, t2_spleen = aggregate.baseline_name("Dataset001_Liver"), aggregate.baseline_name("Dataset002_SpleenT2")
    assert set(t2["table"]["spleen"]) == {"universal", t2_spleen} and "universal" in t2["table"]["liver"]
    assert set(ct["table"]["liver"]) == {"universal", ct_liver} and "universal" in ct["table"]["spleen"]
    assert bench["skipped"][f"{ct_liver} on Dataset003_AbdomenT2"] == "trained on CT images, the test set's are T2"
    assert bench["skipped"][f"{t2_spleen} on Dataset004_AbdomenCT"] == "trained on T2 images, the test set's are CT"
    report = (out / "benchmark.md").read_text()
    assert "## Test set: Dataset003_AbdomenT2 (T2 images, 2 fully labelled cases" in report
    assert bench["models"]["universal"]["image_types"] == ["CT", "T2"]
    assert bench["models"][ct_liver]["image_types"] == ["CT"]
    assert f"| liver | universal (CT, T2), {ct_liver} (CT) |" in report
