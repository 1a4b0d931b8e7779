"""Extension points are registries: a toy conditioning head, text encoder, augmentation preset and metric are added
by touching only their registry (no other module changes), and the whole pipeline picks them up (training, prediction, CLI
choices, summaries)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from benchmark_helpers import SHAPE, write_benchmark_inputs
from textnnunet.evaluation import metrics as metrics_module
from textnnunet.evaluation.metrics import Metric, binary_metrics
from textnnunet.evaluation.summary import summarize, summary_markdown
from textnnunet.inference.predictor import PredictionSettings, TextPredictor
from textnnunet.network import conditioning
from textnnunet.network.prompt_heads import HeadShape, PromptHeads
from textnnunet.text import encoders
from textnnunet.text.encoders import TextEncoder
from textnnunet.training import augmentation
from textnnunet.training.config import TrainingConfig
from textnnunet.training.run import train_fold

torch.set_num_threads(1)


class ToyHeads(PromptHeads):
    """One shared 1x1 conv per scale; each prompt adds its own bias (a linear map of its embedding)."""

    def __init__(self, shape: HeadShape):
        super().__init__()
        conv = nn.Conv3d if shape.conv_dims == 3 else nn.Conv2d
        self.convs = nn.ModuleList(conv(c, 1, 1) for c in shape.decoder_channels)
        self.text_bias = nn.Linear(shape.embed_dim, 1)

    def initialize_output_bias(self, logit: float) -> None:
        with torch.no_grad():
            self.text_bias.bias.fill_(logit)

    def prompt_parameters(self, bottleneck, text_embeddings):
        return self.text_bias(text_embeddings)[:, 0]  # (K,)

    def scale_logits(self, scale, features, parameters, pairs):
        bias = parameters.view(1, -1, *([1] * (features.ndim - 2)))
        return self.convs[scale](features) + bias


def test_a_toy_head_registered_alone_trains_and_predicts(tmp_path, monkeypatch):
    monkeypatch.setitem(conditioning.CONDITIONING_HEADS, "toy", ToyHeads)
    from textnnunet.cli.train import build_parser

    assert "toy" in build_parser().parse_args(["3d_fullres", "0", "--conditioning", "toy"]).conditioning
    preprocessed = write_benchmark_inputs(tmp_path / "preprocessed")
    config = TrainingConfig(epochs=1, iters_per_epoch=2, val_iters_per_epoch=1, device="cpu", seed=1,
                            conditioning="toy")
    fold = train_fold("3d_fullres", 0, config, preprocessed=preprocessed, results=tmp_path / "results",
                      plans_name="TextPlans_001_002", encoder="onehot", echo=False)
    assert fold.parent.name == "3d_fullres__toy__onehot" and (fold / "validation" / "summary.json").is_file()

    predictor = TextPredictor.from_folder(fold.parent, folds=[0], settings=PredictionSettings(device="cpu"))
    assert isinstance(predictor.networks[0].heads, ToyHeads)
    data = np.random.default_rng(0).normal(size=(1, *SHAPE)).astype(np.float32)
    embeddings = torch.as_tensor(np.asarray(predictor.vocabulary.class_embeddings, dtype=np.float32))
    probabilities = predictor.predict_preprocessed(data, embeddings)
    assert probabilities.shape == (3, *SHAPE) and np.isfinite(probabilities).all()


def test_an_unknown_head_is_refused_with_the_registered_names():
    from textnnunet.errors import UserError
    from textnnunet.network import TextPromptedUNet

    arch = {"conv_dims": 3, "n_stages": 2, "features_per_stage": [4, 8], "kernel_sizes": [[3, 3, 3]] * 2,
            "strides": [[1, 1, 1], [2, 2, 2]], "n_conv_per_stage": [1, 1], "n_conv_per_stage_decoder": [1]}
    with pytest.raises(UserError, match="'controller', 'film'"):
        TextPromptedUNet(arch, 1, 4, conditioning="nope")


def test_a_toy_augmentation_preset_is_offered_and_built(monkeypatch):
    def mirror_only(patch_size):
        return augmentation.AugmentationConfig(name="mirror_only", p_rotation=0.0, p_scaling=0.0, p_elastic=0.0,
                                               mirror_axes=(0,))

    monkeypatch.setitem(augmentation.AUGMENTATION_PRESETS, "mirror_only", mirror_only)
    from textnnunet.cli.train import build_parser

    args = build_parser().parse_args(["3d_fullres", "0", "--augmentation", "mirror_only"])
    assert augmentation.augmentation_preset(args.augmentation, [8, 8, 8]).mirror_axes == (0,)


def test_a_toy_metric_reaches_the_case_metrics_and_the_summary_table(monkeypatch):
    monkeypatch.setitem(metrics_module.METRICS, "Recall",
                        Metric(lambda m: m.counts["TP"] / max(1, m.counts["TP"] + m.counts["FN"]),
                               summary_column="Recall"))
    ref = np.zeros((4, 4), dtype=bool)
    ref[1:3, 1:3] = True
    pred = np.zeros_like(ref)
    pred[1:3, 1] = True
    values = binary_metrics(ref, pred, (1.0, 1.0))
    assert values["Recall"] == pytest.approx(0.5) and values["Dice"] == pytest.approx(2 / 3)
    summary = summarize([{"case_id": "a", "dataset": "D", "metrics": {"liver": values}}], nsd_tolerance_mm=2.0)
    header = summary_markdown(summary).splitlines()[4]
    assert header == "| class | Dice (mean ± std) | IoU | NSD @ 2 mm | Recall | n | FP voxels | FN voxels |"


class ToyEncoder(TextEncoder):
    """8 numbers per prompt from its letters: deterministic, semantic enough for a test."""

    name = "toy"

    def __init__(self, template: str | None = None):
        super().__init__(template or "{}")

    @property
    def dim(self) -> int:
        return 8

    def identity(self) -> dict:
        return {"kind": self.name, "model": None, "template": self.template, "dim": self.dim}

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for i, character in enumerate(text):
                vectors[row, i % self.dim] += ord(character) / 100.0
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_a_toy_encoder_registered_alone_trains_and_predicts(tmp_path, monkeypatch):
    monkeypatch.setitem(encoders.ENCODERS, "toy", encoders.EncoderKind(
        lambda model, template, vocabulary: ToyEncoder(template),
        lambda identity, vocabulary: ToyEncoder(identity.get("template"))))
    from textnnunet.cli.train import build_parser

    assert build_parser().parse_args(["3d_fullres", "0", "--encoder", "toy"]).encoder == "toy"
    preprocessed = write_benchmark_inputs(tmp_path / "preprocessed")
    config = TrainingConfig(epochs=1, iters_per_epoch=1, val_iters_per_epoch=1, device="cpu", seed=1)
    fold = train_fold("3d_fullres", 0, config, preprocessed=preprocessed, results=tmp_path / "results",
                      plans_name="TextPlans_001_002", encoder="toy", echo=False)
    assert fold.parent.name == "3d_fullres__toy"

    predictor = TextPredictor.from_folder(fold.parent, folds=[0], settings=PredictionSettings(device="cpu"))
    assert predictor.vocabulary.encoder_identity["kind"] == "toy"
    np.testing.assert_allclose(predictor.vocabulary.class_embeddings[0], ToyEncoder().encode(["liver"])[0], atol=1e-6)
    rebuilt = encoders.encoder_from_identity(predictor.vocabulary.encoder_identity)  # what zero-shot prompts use
    assert isinstance(rebuilt, ToyEncoder)
    data = np.random.default_rng(0).normal(size=(1, *SHAPE)).astype(np.float32)
    zero_shot = torch.as_tensor(rebuilt.encode(["hepatic parenchyma"]))
    probabilities = predictor.predict_preprocessed(data, zero_shot)
    assert probabilities.shape == (1, *SHAPE) and np.isfinite(probabilities).all()
