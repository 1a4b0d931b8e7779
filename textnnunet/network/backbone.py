"""Build nnU-Net's U-Net from a plan's "architecture" dict and expose its decoder features.

The networks come from dynamic-network-architectures unchanged. The text-prompted model reuses the
library's encoder and decoder stages but not its segmentation layers: `UNetFeatureExtractor` runs
encoder -> decoder and returns the decoder feature maps (highest resolution first) plus the bottleneck,
so a prompt-conditioned head can turn them into one logit map per prompt.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from dynamic_network_architectures.initialization.weight_init import (
    InitWeights_He,
    init_last_bn_before_add_to_0,
)
from torch import nn

from textnnunet.errors import UserError

BACKBONES = ("PlainConvUNet", "ResidualEncoderUNet")
ARCHITECTURE_KEYS = (
    "conv_dims",
    "n_stages",
    "features_per_stage",
    "kernel_sizes",
    "strides",
    "n_conv_per_stage",
    "n_conv_per_stage_decoder",
)


def validate_architecture(architecture: dict[str, Any]) -> None:
    """Raise UserError (one line) if the plan's architecture dict is incomplete or inconsistent."""
    missing = [k for k in ARCHITECTURE_KEYS if k not in architecture]
    if missing:
        raise UserError(f"plans architecture: missing keys {missing}")
    dims, n = architecture["conv_dims"], architecture["n_stages"]
    if dims not in (2, 3):
        raise UserError(f"plans architecture: conv_dims must be 2 or 3, got {dims!r}")
    if not isinstance(n, int) or n < 2:
        raise UserError(f"plans architecture: n_stages must be an integer >= 2, got {n!r}")
    for key, length in (
        ("features_per_stage", n),
        ("kernel_sizes", n),
        ("strides", n),
        ("n_conv_per_stage", n),
        ("n_conv_per_stage_decoder", n - 1),
    ):
        if len(architecture[key]) != length:
            raise UserError(f"plans architecture: {key} needs {length} entries, got {len(architecture[key])}")
    for key in ("kernel_sizes", "strides"):
        for entry in architecture[key]:
            if len(entry) != dims:
                raise UserError(f"plans architecture: every {key} entry needs {dims} values, got {entry}")


def nnunet_conv_kwargs(conv_dims: int) -> dict[str, Any]:
    """nnU-Net v2's standard layer choices: conv bias, affine InstanceNorm (eps 1e-5), LeakyReLU, no dropout."""
    return {
        "conv_op": nn.Conv3d if conv_dims == 3 else nn.Conv2d,
        "conv_bias": True,
        "norm_op": nn.InstanceNorm3d if conv_dims == 3 else nn.InstanceNorm2d,
        "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": nn.LeakyReLU,
        "nonlin_kwargs": {"inplace": True},
    }


def build_library_unet(
    architecture: dict[str, Any],
    in_channels: int,
    num_classes: int,
    deep_supervision: bool,
    backbone: str = "PlainConvUNet",
) -> PlainConvUNet | ResidualEncoderUNet:
    """The library network for `architecture` (not yet initialised; see `initialize_like_nnunet`).

    For ResidualEncoderUNet, `n_conv_per_stage` is read as residual blocks per stage.
    """
    validate_architecture(architecture)
    if backbone not in BACKBONES:
        raise UserError(f"backbone: unknown {backbone!r}, expected one of {list(BACKBONES)}")
    common = dict(
        input_channels=in_channels,
        n_stages=architecture["n_stages"],
        features_per_stage=list(architecture["features_per_stage"]),
        kernel_sizes=[list(k) for k in architecture["kernel_sizes"]],
        strides=[list(s) for s in architecture["strides"]],
        num_classes=num_classes,
        n_conv_per_stage_decoder=list(architecture["n_conv_per_stage_decoder"]),
        deep_supervision=deep_supervision,
        **nnunet_conv_kwargs(architecture["conv_dims"]),
    )
    if backbone == "PlainConvUNet":
        return PlainConvUNet(n_conv_per_stage=list(architecture["n_conv_per_stage"]), **common)
    return ResidualEncoderUNet(n_blocks_per_stage=list(architecture["n_conv_per_stage"]), **common)


def initialize_like_nnunet(module: nn.Module, residual: bool = False) -> None:
    """Kaiming-normal (a=1e-2) convs with zero bias; residual blocks start as identity (as nnU-Net)."""
    module.apply(InitWeights_He(1e-2))
    if residual:
        module.apply(init_last_bn_before_add_to_0)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (shared parameters counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


class BackboneFeatures(NamedTuple):
    """Decoder feature maps, highest resolution first (n_stages - 1 of them), and the bottleneck."""

    decoder: list[torch.Tensor]
    bottleneck: torch.Tensor


class UNetFeatureExtractor(nn.Module):
    """Encoder and decoder stages of the library U-Net, without its segmentation layers."""

    def __init__(self, architecture: dict[str, Any], in_channels: int, backbone: str = "PlainConvUNet"):
        super().__init__()
        # Build the library network once and keep only the parts we need; its seg layers are dropped.
        net = build_library_unet(architecture, in_channels, num_classes=1, deep_supervision=True, backbone=backbone)
        self.encoder = net.encoder
        self.transpconvs = net.decoder.transpconvs
        self.stages = net.decoder.stages
        self.conv_dims: int = architecture["conv_dims"]
        features = list(architecture["features_per_stage"])
        # decoder stage s outputs the channels of the skip it merges with; highest resolution first
        self.decoder_channels: list[int] = features[:-1]
        self.bottleneck_channels: int = features[-1]
        self.total_stride: list[int] = _cumulative_stride(architecture["strides"])

    def check_input_shape(self, x: torch.Tensor) -> None:
        spatial = tuple(x.shape[2:])
        if x.dim() != self.conv_dims + 2 or any(s % t for s, t in zip(spatial, self.total_stride)):
            raise ValueError(
                f"input of shape {tuple(x.shape)}: expected (B, C, *patch) with {self.conv_dims} spatial axes "
                f"divisible by the network's total stride {self.total_stride}"
            )

    def forward(self, x: torch.Tensor) -> BackboneFeatures:
        self.check_input_shape(x)
        skips = self.encoder(x)
        lower = skips[-1]
        decoded = []
        for s, (up, stage) in enumerate(zip(self.transpconvs, self.stages)):
            lower = stage(torch.cat((up(lower), skips[-(s + 2)]), dim=1))
            decoded.append(lower)
        return BackboneFeatures(decoder=decoded[::-1], bottleneck=skips[-1])


def _cumulative_stride(strides: Sequence[Sequence[int]]) -> list[int]:
    total = [1] * len(strides[0])
    for stride in strides:
        total = [t * s for t, s in zip(total, stride)]
    return total
