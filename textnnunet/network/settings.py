"""The fields of a training configuration that define the network, and the tensor layout it runs in.

Training writes them (TrainingConfig, in every checkpoint's `training_config`); inference rebuilds the network from
them. They live here, below both, so that inference never imports training.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch


def memory_format_for(device_type: str, conv_dims: int, choice: str = "auto") -> torch.memory_format:
    """The tensor layout for `choice` (auto: channels-last on the CPU, channels-first elsewhere)."""
    if choice not in ("auto", "channels_first", "channels_last"):
        raise ValueError(f"memory_format: unknown {choice!r}")
    if choice == "channels_first" or (choice == "auto" and device_type != "cpu"):
        return torch.contiguous_format
    return torch.channels_last_3d if conv_dims == 3 else torch.channels_last


def resolve_mirror_axes(mirror_axes: list[int] | None, patch_dims: int) -> list[int]:
    """The patch axes mirrored in training and test-time augmentation; None: every axis except left-right (the last
    one after the canonical LPS orientation)."""
    if mirror_axes is not None:
        return [int(a) for a in mirror_axes]
    return list(range(patch_dims - 1))


@dataclass(frozen=True)
class NetworkSettings:
    """What a checkpoint's `training_config` says about the network (the defaults of checkpoints that lack a field)."""

    conditioning: str = "controller"
    backbone: str = "PlainConvUNet"
    deep_supervision: bool = True
    mirror_axes: list[int] | None = None
    memory_format: str = "auto"

    @classmethod
    def from_json(cls, training_config: dict) -> "NetworkSettings":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in training_config.items() if k in known})

    def resolved_mirror_axes(self, patch_dims: int) -> list[int]:
        return resolve_mirror_axes(self.mirror_axes, patch_dims)
