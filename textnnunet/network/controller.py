"""Text-conditioned dynamic segmentation heads (the CLIP-Driven Universal Model's controller).

For every image b and prompt k, a controller maps [global image feature_b, text feature_k] to the weights
and biases of a tiny per-pixel MLP (three 1x1 convolutions, 8 -> 8 -> 8 -> 1 channels, leaky ReLU between).
That MLP reads the decoder features after a shared reduction to 8 channels and returns one logit per
pixel. All B*K heads of a batch run together as batched matmuls (no loop over prompts); K is an input.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from textnnunet.network.prompt_heads import PromptHeads

HEAD_CHANNELS = 8  # channels the decoder features are reduced to before the dynamic heads
HEAD_LAYERS = (8, 8, 1)  # output channels of the three dynamic 1x1 convolutions
COND_DIM = 256  # width of the image and text embeddings fed to the controller
# The Universal Model uses ReLU between the dynamic layers. A generated head whose hidden units all go negative
# then outputs a constant and passes no gradient back to the controller, for good. A leaky slope rules that out.
# (It was added when the spleen and kidney heads collapsed on the CPU demo; that collapse came from too large text
# features and recurred with the leaky slope until those were scaled down, see TEXT_RMS.)
HEAD_NEGATIVE_SLOPE = 0.01


def group_count(channels: int, max_groups: int = 16) -> int:
    """Largest divisor of `channels` not above `max_groups` (the Universal Model uses 16 groups)."""
    return max(g for g in range(1, min(channels, max_groups) + 1) if channels % g == 0)


def dynamic_param_count(in_channels: int = HEAD_CHANNELS, layers: Sequence[int] = HEAD_LAYERS) -> int:
    """Weights plus biases of the dynamic head (153 for 8 -> 8 -> 8 -> 1)."""
    count, fan_in = 0, in_channels
    for out in layers:
        count += fan_in * out + out
        fan_in = out
    return count


def split_dynamic_params(
    params: torch.Tensor, in_channels: int = HEAD_CHANNELS, layers: Sequence[int] = HEAD_LAYERS
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Cut (N, P) controller outputs into per-layer weights (N, out, in) and biases (N, out).

    Layout of one parameter vector: all layers' weights (row-major out x in), then all layers' biases.
    """
    n = params.shape[0]
    shapes = []
    fan_in = in_channels
    for out in layers:
        shapes.append((out, fan_in))
        fan_in = out
    sizes = [o * i for o, i in shapes] + [o for o, _ in shapes]
    chunks = torch.split(params, sizes, dim=1)
    weights = [c.reshape(n, o, i) for c, (o, i) in zip(chunks[: len(shapes)], shapes)]
    biases = [c.reshape(n, o) for c, (o, _) in zip(chunks[len(shapes) :], shapes)]
    return weights, biases


def _block_diagonal(w: torch.Tensor) -> torch.Tensor:
    """(N, G, out, in) per-prompt weights -> (N, G*out, G*in) block-diagonal matrices for W @ x."""
    n, g, out, fan_in = w.shape
    eye = torch.eye(g, dtype=w.dtype, device=w.device)
    return torch.einsum("gh,ngoi->ngohi", eye, w).reshape(n, g * out, g * fan_in)


class ControllerHeads(PromptHeads):
    """Universal-Model heads over decoder features at `n_scales` resolutions (highest first)."""

    per_item_text = True  # the controller generates each (image, prompt) pair's parameters anyway

    def __init__(
        self, decoder_channels: Sequence[int], bottleneck_channels: int, embed_dim: int, conv_dims: int
    ):
        super().__init__()
        self.conv_dims = conv_dims
        # prompts per block-diagonal matmul (None: 16 on GPU, 1 on CPU); any value gives the same result
        self.prompts_per_block: int | None = None
        conv = nn.Conv3d if conv_dims == 3 else nn.Conv2d
        # text embedding -> "organ embedding" (Linear + ReLU as in the Universal Model)
        self.text_proj = nn.Sequential(nn.Linear(embed_dim, COND_DIM), nn.ReLU(inplace=True))
        # No bias at the start: the text feature of a prompt is then a function of its direction alone, so
        # different prompts start with different features however small the embeddings are.
        nn.init.zeros_(self.text_proj[0].bias)
        # bottleneck -> global image feature (GroupNorm, ReLU, global average pool, linear)
        self.image_norm = nn.Sequential(
            nn.GroupNorm(group_count(bottleneck_channels), bottleneck_channels), nn.ReLU(inplace=True)
        )
        self.image_proj = nn.Linear(bottleneck_channels, COND_DIM)
        self.controller = nn.Linear(2 * COND_DIM, dynamic_param_count())
        # One 8-channel reduction per decoder resolution; the dynamic heads themselves are shared. A plain 1x1
        # conv, like nnU-Net's seg layer: the decoder stage already ends in InstanceNorm + LeakyReLU, so the
        # Universal Model's extra GroupNorm + ReLU here only cost a full-resolution pass (2x step time at 128^3).
        self.reductions = nn.ModuleList(conv(c, HEAD_CHANNELS, 1) for c in decoder_channels)

    def initialize_output_bias(self, logit: float) -> None:
        """Start every generated head with this output bias (the last entry of a parameter vector)."""
        with torch.no_grad():
            self.controller.bias[-1] = logit

    def image_features(self, bottleneck: torch.Tensor) -> torch.Tensor:
        pooled = self.image_norm(bottleneck).mean(dim=tuple(range(2, bottleneck.dim())))
        return self.image_proj(pooled)  # (B, 256)

    def dynamic_params(self, bottleneck: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        """(B, K, P) head parameters, one vector per (image, prompt) pair; text (K, E) shared by the batch or
        (B, K, E) per image."""
        image = self.image_features(bottleneck)
        text = self.text_proj(text_embeddings.to(self.controller.weight.dtype))
        b, k = image.shape[0], text.shape[-2]
        text = text.expand(b, k, -1) if text.dim() == 3 else text[None].expand(b, k, -1)
        pairs = torch.cat((image[:, None].expand(b, k, -1), text), dim=2)
        return self.controller(pairs)

    def apply_heads(self, head_inputs: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Run the B*K dynamic heads on (B, 8, *S) inputs; returns (B, K, *S) logits.

        Same maths as the Universal Model's grouped 1x1 convolutions (groups=B*K), done as batched matmuls
        in channels-first layout, W (out x in) @ x (in x voxels). Layer 1 reads the shared input once for all
        prompts: one (K*8 x 8) @ (8 x voxels) product per image, so the input is never copied per prompt.
        Later layers read only their own prompt's channels; prompts are packed `prompts_per_block` at a time
        (zero-padded) into block-diagonal weights, so many 8x8 products become a few larger ones on a GPU,
        where cuBLAS runs those at memory speed; on a CPU the plain per-prompt products are faster (block 1).
        (The channels-last variant, x @ W, fell onto a slow kernel on an H100: 49 ms of a 160 ms step.)
        """
        b, c, *spatial = head_inputs.shape
        k = params.shape[1]
        g = min(k, self.prompts_per_block or (16 if head_inputs.is_cuda else 1))
        nb = -(-k // g)  # blocks per image
        if nb * g != k:
            params = F.pad(params, (0, 0, 0, nb * g - k))
        weights, biases = split_dynamic_params(params.reshape(b * nb * g, -1), c)
        x = head_inputs.reshape(b, c, -1)  # (B, C, S); a view unless the input is channels-last
        for layer, (w, bias) in enumerate(zip(weights, biases)):
            out, fan_in = w.shape[1:]
            if layer == 0:
                # all prompts of an image at once: (B, nb*g*out, C) @ (B, C, S)
                x = torch.baddbmm(bias.reshape(b, -1, 1), w.reshape(b, nb * g * out, fan_in), x)
                continue
            # in place is safe: baddbmm keeps its inputs, not its output, for backward
            x = F.leaky_relu_(x, HEAD_NEGATIVE_SLOPE)
            x = x.reshape(b * nb, g * fan_in, -1)  # a view: prompt blocks are contiguous channel ranges
            block = _block_diagonal(w.reshape(b * nb, g, out, fan_in)) if g > 1 else w
            x = torch.baddbmm(bias.reshape(b * nb, g * out, 1), block, x)
        logits = x.reshape(b, nb * g, -1)[:, :k]  # last layer has one channel per prompt, in prompt order
        return logits.reshape(b, k, *spatial)

    def apply_heads_to_pairs(self, head_inputs: torch.Tensor, params: torch.Tensor,
                             pairs: torch.Tensor) -> torch.Tensor:
        """apply_heads for the (image, prompt) pairs marked in `pairs` (B, K) only; the other logits are 0.

        Training needs no more: the partial-label loss reads only the pairs a case's dataset annotates (about a
        third of them on the demo data), so the per-prompt hidden maps of the others need not exist.
        """
        b, k = params.shape[:2]
        logits = head_inputs.new_zeros((b, k, *head_inputs.shape[2:]))
        for i in range(b):
            chosen = pairs[i].nonzero(as_tuple=True)[0]
            if chosen.numel():
                chosen_logits = self.apply_heads(head_inputs[i : i + 1], params[i : i + 1, chosen])[0]
                logits[i, chosen] = chosen_logits.to(logits.dtype)
        return logits

    def prompt_parameters(self, bottleneck: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        return self.dynamic_params(bottleneck, text_embeddings)

    def scale_logits(self, scale: int, features: torch.Tensor, parameters: torch.Tensor,
                     pairs: torch.Tensor | None) -> torch.Tensor:
        """The shared dynamic heads on this scale's 8-channel reduction; only `pairs` are computed if given."""
        head_inputs = self.reductions[scale](features)
        if pairs is None:
            return self.apply_heads(head_inputs, parameters)
        return self.apply_heads_to_pairs(head_inputs, parameters, pairs)
