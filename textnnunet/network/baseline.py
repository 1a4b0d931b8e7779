"""The plain nnU-Net network (softmax over a fixed integer label space) for per-dataset baselines."""
from __future__ import annotations

from typing import Any

from torch import nn

from textnnunet.network.backbone import build_library_unet, initialize_like_nnunet
from textnnunet.network.deep_supervision import deep_supervision_weights  # noqa: F401  (re-export)


def build_softmax_unet(
    architecture: dict[str, Any],
    in_channels: int,
    num_classes: int,
    deep_supervision: bool = True,
    backbone: str = "PlainConvUNet",
) -> nn.Module:
    """Library PlainConvUNet/ResidualEncoderUNet with its own seg layers, initialised like nnU-Net.

    `num_classes` includes background. With deep supervision it returns n_stages - 1 logit maps,
    highest resolution first; set `net.decoder.deep_supervision = False` for inference.
    """
    if num_classes < 2:
        raise ValueError(f"a softmax U-Net needs background plus at least one class, got num_classes={num_classes}")
    net = build_library_unet(architecture, in_channels, num_classes, deep_supervision, backbone)
    initialize_like_nnunet(net, residual=backbone == "ResidualEncoderUNet")
    return net
