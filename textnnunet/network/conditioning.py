"""The registry of conditioning heads: name (`TrainingConfig.conditioning`, `--conditioning`) -> builder.

Adding a head: subclass `PromptHeads` (network/prompt_heads.py) and add one entry here (or call
`register_conditioning` from your own code). `TextPromptedUNet` builds whatever the name gives.
"""
from __future__ import annotations

from typing import Callable

from textnnunet.errors import UserError
from textnnunet.network.controller import ControllerHeads
from textnnunet.network.film import FiLMHeads
from textnnunet.network.prompt_heads import HeadShape, PromptHeads

HeadBuilder = Callable[[HeadShape], PromptHeads]


def _controller(shape: HeadShape) -> PromptHeads:
    return ControllerHeads(shape.decoder_channels, shape.bottleneck_channels, shape.embed_dim, shape.conv_dims)


def _film(shape: HeadShape) -> PromptHeads:
    return FiLMHeads(shape.decoder_channels, shape.embed_dim, shape.conv_dims)


CONDITIONING_HEADS: dict[str, HeadBuilder] = {"controller": _controller, "film": _film}


def conditioning_names() -> tuple[str, ...]:
    return tuple(CONDITIONING_HEADS)


def register_conditioning(name: str, builder: HeadBuilder) -> None:
    if name in CONDITIONING_HEADS:
        raise ValueError(f"conditioning {name!r} is already registered")
    CONDITIONING_HEADS[name] = builder


def build_conditioning_heads(name: str, shape: HeadShape) -> PromptHeads:
    if name not in CONDITIONING_HEADS:
        raise UserError(f"conditioning: unknown {name!r}, expected one of {list(CONDITIONING_HEADS)}")
    return CONDITIONING_HEADS[name](shape)


def require_per_item_text(name: str) -> None:
    """A one-line error unless the registered heads take one prompt table per image (PromptHeads.per_item_text),
    as prompts that name each image's modality need; a small head is built to read it, so this can be asked before
    a model folder is written."""
    if not build_conditioning_heads(name, HeadShape((4, 4), 4, 4, 3)).per_item_text:
        raise UserError(f"prompts that name the modality need a conditioning that takes each image's own prompts "
                        f"(controller); '{name}' shares one table across the batch")
