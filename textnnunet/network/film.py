"""FiLM conditioning: the text embedding scales and shifts the decoder features, a shared 1x1 conv reads them.

For prompt k and decoder resolution s: logits_k = conv_s(features_s * (1 + gamma_sk) + beta_sk), where
gamma/beta come from an MLP on the text embedding and conv_s (C_s -> 1) is shared by all prompts.
Because the modulation and the 1x1 conv are both linear per pixel, the K modulated copies never need to
exist: folding (1 + gamma_k) into the conv weights and beta_k into its bias gives one ordinary 1x1 conv
with K text-generated output channels. Decoder features are computed once per image, never per prompt.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from textnnunet.network.prompt_heads import PromptHeads

FILM_HIDDEN = 256  # width of the text MLP


class FiLMHeads(PromptHeads):
    """A `PromptHeads` that does not use the image feature (bottleneck)."""

    def __init__(self, decoder_channels: Sequence[int], embed_dim: int, conv_dims: int):
        super().__init__()
        self.conv_dims = conv_dims
        self.decoder_channels = list(decoder_channels)
        conv = nn.Conv3d if conv_dims == 3 else nn.Conv2d
        self.text_mlp = nn.Sequential(
            nn.Linear(embed_dim, FILM_HIDDEN),
            nn.ReLU(inplace=True),
            nn.Linear(FILM_HIDDEN, 2 * sum(self.decoder_channels)),
        )
        self.heads = nn.ModuleList(conv(c, 1, 1) for c in self.decoder_channels)
        nn.init.zeros_(self.text_mlp[0].bias)  # as the controller's text projection: prompts differ from the start

    def initialize_output_bias(self, logit: float) -> None:
        with torch.no_grad():
            for head in self.heads:
                head.bias.fill_(logit)

    def modulation(self, text_embeddings: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per decoder resolution (highest first): (gamma, beta), each (K, C_s)."""
        out = self.text_mlp(text_embeddings.to(self.text_mlp[0].weight.dtype))
        gammas_betas = torch.split(out, [c for c in self.decoder_channels for _ in range(2)], dim=1)
        return [(gammas_betas[2 * s], gammas_betas[2 * s + 1]) for s in range(len(self.decoder_channels))]

    def prompt_parameters(self, bottleneck: torch.Tensor,
                          text_embeddings: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self.modulation(text_embeddings)

    def scale_logits(self, scale: int, features: torch.Tensor, parameters: list[tuple[torch.Tensor, torch.Tensor]],
                     pairs: torch.Tensor | None) -> torch.Tensor:
        """(B, C, *S) features -> (B, K, *S) logits, exactly conv(features * (1 + gamma_k) + beta_k); all K pairs
        come from one convolution, so `pairs` is not needed."""
        gamma, beta = parameters[scale]
        head = self.heads[scale]
        w = head.weight.flatten(1)  # (1, C)
        weight = (w * (1 + gamma)).reshape(gamma.shape[0], -1, *head.weight.shape[2:])  # (K, C, 1, ...)
        bias = beta @ w[0] + head.bias  # (K,)
        conv = F.conv3d if self.conv_dims == 3 else F.conv2d
        return conv(features, weight, bias)
