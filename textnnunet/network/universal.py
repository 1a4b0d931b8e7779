"""The text-prompted U-Net: nnU-Net's encoder/decoder plus prompt-conditioned heads, one logit map per prompt."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from textnnunet.errors import UserError
from textnnunet.network.backbone import BackboneFeatures, UNetFeatureExtractor, initialize_like_nnunet
from textnnunet.network.controller import ControllerHeads
from textnnunet.network.film import FiLMHeads

CONDITIONINGS = ("controller", "film")


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
        if conditioning not in CONDITIONINGS:
            raise UserError(f"conditioning: unknown {conditioning!r}, expected one of {list(CONDITIONINGS)}")
        self.init_kwargs = dict(
            architecture=architecture, in_channels=in_channels, embed_dim=embed_dim,
            conditioning=conditioning, deep_supervision=deep_supervision, backbone=backbone,
        )
        self.embed_dim = embed_dim
        self.deep_supervision = deep_supervision
        self.backbone = UNetFeatureExtractor(architecture, in_channels, backbone)
        conv_dims = architecture["conv_dims"]
        if conditioning == "controller":
            self.heads: nn.Module = ControllerHeads(
                self.backbone.decoder_channels, self.backbone.bottleneck_channels, embed_dim, conv_dims
            )
        else:
            self.heads = FiLMHeads(self.backbone.decoder_channels, embed_dim, conv_dims)
        initialize_like_nnunet(self, residual=backbone == "ResidualEncoderUNet")
        # Mean of the trained vocabulary's embeddings, subtracted from every prompt: sentence encoders give all
        # anatomy terms a large shared component (MiniLM: cosine 0.5 between "spleen" and "kidney"; -0.13 once
        # centred) that carries no class information but makes the controller start with near-identical heads.
        # A buffer, so checkpoints carry it and zero-shot prompts at inference are centred the same way.
        self.register_buffer("text_center", torch.zeros(embed_dim))

    def set_text_center(self, class_embeddings: torch.Tensor) -> None:
        """Centre prompts on these (training vocabulary) embeddings; call before training."""
        self.text_center.copy_(torch.as_tensor(class_embeddings, dtype=torch.float32).mean(dim=0))

    @property
    def n_scales(self) -> int:
        """Number of deep-supervision outputs (n_stages - 1, the bottleneck excluded)."""
        return len(self.backbone.decoder_channels)

    def encode(self, x: torch.Tensor) -> BackboneFeatures:
        """Run the backbone once; the result can be decoded with several prompt sets."""
        return self.backbone(x)

    def decode_heads(
        self, features: BackboneFeatures, text_embeddings: torch.Tensor
    ) -> list[torch.Tensor] | torch.Tensor:
        self._check_text(text_embeddings)
        text = text_embeddings.to(features.bottleneck.device) - self.text_center.to(text_embeddings.dtype)
        n = self.n_scales if self.deep_supervision else 1
        outputs = self.heads(features.decoder, features.bottleneck, text, n)
        return outputs if self.deep_supervision else outputs[0]

    def forward(self, x: torch.Tensor, text_embeddings: torch.Tensor) -> list[torch.Tensor] | torch.Tensor:
        return self.decode_heads(self.encode(x), text_embeddings)

    def _check_text(self, text_embeddings: torch.Tensor) -> None:
        if text_embeddings.dim() != 2 or text_embeddings.shape[0] < 1 or text_embeddings.shape[1] != self.embed_dim:
            raise ValueError(
                f"text_embeddings of shape {tuple(text_embeddings.shape)}: expected (K >= 1, {self.embed_dim})"
            )
