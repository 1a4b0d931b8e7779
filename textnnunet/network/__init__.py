"""Networks: nnU-Net backbone, text-conditioned heads (controller, FiLM), softmax baseline, deep supervision."""
from textnnunet.network.backbone import BackboneFeatures, UNetFeatureExtractor, count_parameters
from textnnunet.network.baseline import build_softmax_unet
from textnnunet.network.deep_supervision import deep_supervision_scales, deep_supervision_weights
from textnnunet.network.universal import TextPromptedUNet

__all__ = [
    "BackboneFeatures",
    "TextPromptedUNet",
    "UNetFeatureExtractor",
    "build_softmax_unet",
    "count_parameters",
    "deep_supervision_scales",
    "deep_supervision_weights",
]
