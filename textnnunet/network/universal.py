"""The text-prompted U-Net: nnU-Net's encoder/decoder plus prompt-conditioned heads, one logit map per prompt."""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from textnnunet.network.backbone import BackboneFeatures, UNetFeatureExtractor, initialize_like_nnunet
from textnnunet.network.conditioning import build_conditioning_heads
from textnnunet.network.prompt_heads import HeadShape

FOREGROUND_PRIOR = 0.05  # initial sigmoid output of every head
TEXT_RMS = 0.25  # RMS per component of the standardised prompt embeddings


class TextPromptedUNet(nn.Module):
    """forward(x (B, C, *patch), text_embeddings (K, E)) -> logits per prompt (sigmoid per class).

    With `deep_supervision` on, returns n_stages - 1 tensors (B, K, *scale), highest resolution first;
    otherwise one (B, K, *patch) tensor. `deep_supervision` can be switched after construction (inference
    turns it off; the parameters are the same either way). `init_kwargs` rebuilds the same network.
    """

    def __init__(
        self,
        architecture: dict[str, Any],
        in_channels: int,
        embed_dim: int,
        conditioning: str = "controller",
        deep_supervision: bool = True,
        backbone: str = "PlainConvUNet",
    ):
        super().__init__()
        self.init_kwargs = dict(
            architecture=architecture, in_channels=in_channels, embed_dim=embed_dim,
            conditioning=conditioning, deep_supervision=deep_supervision, backbone=backbone,
        )
        self.embed_dim = embed_dim
        self.deep_supervision = deep_supervision
        self.backbone = UNetFeatureExtractor(architecture, in_channels, backbone)
        self.heads = build_conditioning_heads(conditioning, HeadShape(
            tuple(self.backbone.decoder_channels), self.backbone.bottleneck_channels, embed_dim,
            architecture["conv_dims"]))
        initialize_like_nnunet(self, residual=backbone == "ResidualEncoderUNet")
        # Sigmoid outputs start at a small foreground probability instead of 0.5 (RetinaNet's prior): from 0.5
        # everywhere the first BCE steps only learn "background"; on the CPU demo the first non-zero pseudo Dice
        # came after about 100 iterations with the prior and about 200 without.
        self.heads.initialize_output_bias(math.log(FOREGROUND_PRIOR / (1 - FOREGROUND_PRIOR)))
        # Prompts are standardised on the trained vocabulary: its mean subtracted (sentence encoders give all
        # anatomy terms a large shared component: MiniLM cosine 0.5 between "spleen" and "kidney", -0.13 once
        # centred) and scaled to a fixed RMS per component. Unit-norm sentence embeddings, centred, have components
        # of about 0.03, so a fresh text projection returned mostly its bias: after 1300 CPU iterations the
        # controller's text-driven parameters for spleen and kidney still had cosine 0.92-0.98 and the spleen
        # prompt segmented the kidney. At RMS 1 the text outweighed the image feature in the controller and
        # training turned unstable (spleen and kidney heads collapsed to Dice 0 after 100-300 iterations);
        # TEXT_RMS keeps the text at about half the image feature's size. Buffers, so checkpoints carry them
        # and zero-shot prompts at inference are standardised the same way.
        self.register_buffer("text_center", torch.zeros(embed_dim))
        self.register_buffer("text_scale", torch.ones(()))

    def set_text_normalization(self, class_embeddings: torch.Tensor) -> None:
        """Standardise prompts on these (training vocabulary) embeddings, (K, E) or (..., K, E); call before
        training."""
        vocab = torch.as_tensor(class_embeddings, dtype=torch.float32).reshape(-1, self.embed_dim)
        center = vocab.mean(dim=0)
        rms = (vocab - center).pow(2).mean().sqrt()
        self.text_center.copy_(center)
        self.text_scale.fill_(TEXT_RMS / float(rms) if float(rms) > 0 else 1.0)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints written before prompts were scaled carry no text_scale: they were trained with 1.
        state_dict.setdefault(prefix + "text_scale", torch.ones(()))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def n_scales(self) -> int:
        """Number of deep-supervision outputs (n_stages - 1, the bottleneck excluded)."""
        return len(self.backbone.decoder_channels)

    def encode(self, x: torch.Tensor) -> BackboneFeatures:
        """Run the backbone once; the result can be decoded with several prompt sets."""
        return self.backbone(x)

    def decode_heads(
        self, features: BackboneFeatures, text_embeddings: torch.Tensor, pairs: torch.Tensor | None = None
    ) -> list[torch.Tensor] | torch.Tensor:
        """text_embeddings: (K, E), the same prompts for every image, or (B, K, E), each image's own (prompts that
        name its modality; heads with `per_item_text`). pairs: optional (B, K) bool; only those (image, prompt)
        logits are computed, the rest are 0 (training with the partial-label loss, which reads no other pair)."""
        batch = features.bottleneck.shape[0]
        self._check_text(text_embeddings, batch)
        k = text_embeddings.shape[-2]
        if pairs is not None and tuple(pairs.shape) != (batch, k):
            raise ValueError(f"pairs of shape {tuple(pairs.shape)}: expected (B, K) = {(batch, k)}")
        text = text_embeddings.to(features.bottleneck.device)
        text = (text - self.text_center.to(text.dtype)) * self.text_scale.to(text.dtype)
        n = self.n_scales if self.deep_supervision else 1
        outputs = self.heads(features.decoder, features.bottleneck, text, n, pairs)
        return outputs if self.deep_supervision else outputs[0]

    def forward(self, x: torch.Tensor, text_embeddings: torch.Tensor,
                pairs: torch.Tensor | None = None) -> list[torch.Tensor] | torch.Tensor:
        return self.decode_heads(self.encode(x), text_embeddings, pairs)

    def _check_text(self, text_embeddings: torch.Tensor, batch: int) -> None:
        shape = tuple(text_embeddings.shape)
        if text_embeddings.dim() == 3 and self.heads.per_item_text:
            if shape[0] != batch or shape[1] < 1 or shape[2] != self.embed_dim:
                raise ValueError(f"text_embeddings of shape {shape}: expected (B, K >= 1, E) = "
                                 f"({batch}, K, {self.embed_dim})")
            return
        if text_embeddings.dim() == 3:
            raise ValueError(f"text_embeddings of shape {shape}: the {type(self.heads).__name__} conditioning takes "
                             f"one prompt table for the batch, (K, {self.embed_dim})")
        if text_embeddings.dim() != 2 or shape[0] < 1 or shape[1] != self.embed_dim:
            raise ValueError(f"text_embeddings of shape {shape}: expected (K >= 1, {self.embed_dim})")
