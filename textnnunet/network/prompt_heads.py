"""The interface every conditioning head implements: prompts -> one logit map per prompt at each decoder scale.

A head turns the text embeddings (and, if it wants, the bottleneck) into per-prompt parameters once per batch
(`prompt_parameters`), then reads the decoder features of each scale with them (`scale_logits`). The loop over
scales and the handling of `pairs` live here, once, for every head.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn


@dataclass(frozen=True)
class HeadShape:
    """What the backbone offers a head: channels per decoder scale (highest resolution first), the bottleneck's
    channels, the text embedding width and 2 or 3 spatial dimensions."""

    decoder_channels: tuple[int, ...]
    bottleneck_channels: int
    embed_dim: int
    conv_dims: int


class PromptHeads(nn.Module):
    """Base class of the conditioning heads; subclasses implement the three methods below."""

    # True for heads that take one prompt table per batch item, text (B, K, E) (prompts naming each image's
    # modality); every head takes one table shared by the batch, (K, E).
    per_item_text: bool = False

    def initialize_output_bias(self, logit: float) -> None:
        """Start every prompt's output at this logit (the foreground prior)."""
        raise NotImplementedError

    def prompt_parameters(self, bottleneck: torch.Tensor, text_embeddings: torch.Tensor) -> Any:
        """Whatever the head derives from the prompts (and the image) once per batch."""
        raise NotImplementedError

    def scale_logits(self, scale: int, features: torch.Tensor, parameters: Any,
                     pairs: torch.Tensor | None) -> torch.Tensor:
        """(B, C_s, *S) decoder features of one scale -> (B, K, *S) logits. `pairs` (B, K) bool or None: the only
        (image, prompt) pairs needed; a head may compute the others anyway or leave them 0."""
        raise NotImplementedError

    def forward(self, decoder_features: Sequence[torch.Tensor], bottleneck: torch.Tensor,
                text_embeddings: torch.Tensor, n_scales: int, pairs: torch.Tensor | None = None
                ) -> list[torch.Tensor]:
        """Logits per scale, highest resolution first, for the first `n_scales` decoder outputs."""
        parameters = self.prompt_parameters(bottleneck, text_embeddings)
        if pairs is not None:
            pairs = None if bool(pairs.all()) else pairs.to(bottleneck.device)
        return [self.scale_logits(s, decoder_features[s], parameters, pairs) for s in range(n_scales)]
