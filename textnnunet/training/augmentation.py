"""nnU-Net's training augmentation, built from batchgenerators transforms.

Batches are dicts with "data" (B, C, *patch) and "seg" (B, K, *patch): the K binary class targets
travel as batchgenerators' segmentation key, so spatial transforms resample them with order 0 and
they stay binary. The sampler draws a larger "initial" patch (`AugmentationConfig.initial_patch_size`)
so that rotation and scaling do not pull in empty borders; the spatial transform crops it back.

Hyper-parameters live in `AugmentationConfig`; `augmentation_preset(name, patch_size)` builds a preset of the
registry `AUGMENTATION_PRESETS` (name -> function of the patch size): the nnU-Net defaults ("nnunet"), those plus
local intensity changes ("nnunet_intensity", the intensity part of nnU-Net's DA5 variant), those plus an intensity
offset per labelled structure ("nnunet_regions", the training default), or an identity pipeline
("none", for quick tests and ablations). A new preset is one function and one entry there; `--augmentation` offers
every entry.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np
from batchgenerators.augmentations.utils import rotate_coords_2d, rotate_coords_3d
from batchgenerators.transforms.abstract_transforms import AbstractTransform, Compose
from batchgenerators.transforms.color_transforms import (
    BrightnessMultiplicativeTransform,
    BrightnessTransform,
    ContrastAugmentationTransform,
    GammaTransform,
)
from batchgenerators.transforms.local_transforms import BrightnessGradientAdditiveTransform, LocalGammaTransform
from batchgenerators.transforms.noise_transforms import GaussianBlurTransform, GaussianNoiseTransform
from batchgenerators.transforms.resample_transforms import SimulateLowResolutionTransform
from batchgenerators.transforms.spatial_transforms import MirrorTransform, SpatialTransform

from textnnunet.errors import UserError


def _deg(angle: float) -> float:
    return angle / 360.0 * 2.0 * np.pi


@dataclass(frozen=True)
class AugmentationConfig:
    """All augmentation hyper-parameters. Angles in radians; probabilities are per sample."""

    name: str = "nnunet"
    rotation: tuple[float, float] = (_deg(-30.0), _deg(30.0))
    p_rotation: float = 0.2
    scaling: tuple[float, float] = (0.7, 1.4)
    p_scaling: float = 0.2
    p_elastic: float = 0.0
    elastic_alpha: tuple[float, float] = (0.0, 900.0)
    elastic_sigma: tuple[float, float] = (9.0, 13.0)
    p_noise: float = 0.1
    noise_variance: tuple[float, float] = (0.0, 0.1)
    p_blur: float = 0.2
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    blur_p_per_channel: float = 0.5
    p_brightness: float = 0.15
    brightness_range: tuple[float, float] = (0.75, 1.25)
    p_contrast: float = 0.15
    contrast_range: tuple[float, float] = (0.75, 1.25)
    p_low_resolution: float = 0.25
    low_resolution_zoom: tuple[float, float] = (0.5, 1.0)
    low_resolution_p_per_channel: float = 0.5
    p_gamma_inverted: float = 0.1
    p_gamma: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)
    # Local intensity changes (0 = off in nnU-Net's default). Datasets from other contrast phases shift an organ's
    # HU against its neighbours, which a global multiplicative brightness cannot mimic. Units: normalised intensity.
    p_additive_brightness: float = 0.0
    additive_brightness_sigma: float = 0.5
    p_brightness_gradient: float = 0.0
    brightness_gradient_strength: tuple[float, float] = (1.0, 5.0)  # |peak| of the added smooth field, either sign
    p_local_gamma: float = 0.0
    local_gamma_dark: tuple[float, float] = (0.01, 0.8)  # half of the local gammas from here, half from the bright range
    local_gamma_bright: tuple[float, float] = (1.5, 4.0)
    # Labelled-region shifts (0 = off): each labelled structure of a patch gets its own additive intensity offset, so
    # that a prompt cannot tell organs apart by absolute intensity alone (datasets differ by scanner calibration and
    # contrast timing by more than unenhanced spleen and kidney differ). Units: normalised intensity (sd of a shift).
    p_region_shift: float = 0.0
    region_shift_sigma: float = 0.3
    mirror_axes: tuple[int, ...] = (0, 1, 2)
    # 3D patches much thinner in z than in-plane are augmented slice-wise in 2D (nnU-Net's "dummy 2D").
    dummy_2d: bool = False
    # nnU-Net computes the initial patch with this scale range (not `scaling`); kept for parity.
    initial_patch_scale: tuple[float, float] = (0.85, 1.25)

    def initial_patch_size(self, final_patch: Sequence[int]) -> tuple[int, ...]:
        """Patch the sampler must draw so the spatial transform can crop `final_patch` back out."""
        if self.p_rotation <= 0 and self.p_scaling <= 0 and self.p_elastic <= 0:
            return tuple(int(p) for p in final_patch)
        if self.dummy_2d and len(final_patch) == 3:
            in_plane = initial_patch_size(final_patch[1:], self.rotation, self.initial_patch_scale)
            return (int(final_patch[0]), *in_plane)
        return initial_patch_size(final_patch, self.rotation, self.initial_patch_scale)

    def as_dict(self) -> dict:
        """Plain JSON-able form (for logs and checkpoints)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def initial_patch_size(
    final_patch: Sequence[int], rotation: tuple[float, float] | float, scale: tuple[float, float]
) -> tuple[int, ...]:
    """nnU-Net's get_patch_size rule.

    The patch-size vector is rotated by the largest rotation magnitude (capped at 90 degrees) about
    each axis in turn (3D) or in-plane (2D); the element-wise largest extent is kept and divided by
    the smallest scale factor.
    """
    coords = np.asarray(final_patch, dtype=float)
    if coords.ndim != 1 or len(coords) not in (2, 3):
        raise ValueError(f"patch size must have 2 or 3 entries, got {list(final_patch)}")
    angle = float(np.max(np.abs(rotation))) if isinstance(rotation, (tuple, list)) else abs(float(rotation))
    angle = min(angle, _deg(90.0))
    extent = coords.copy()
    if len(coords) == 3:
        for rot in ((angle, 0, 0), (0, angle, 0), (0, 0, angle)):
            extent = np.maximum(extent, np.abs(rotate_coords_3d(coords, *rot)))
    else:
        extent = np.maximum(extent, np.abs(rotate_coords_2d(coords, angle)))
    extent /= min(scale)
    return tuple(int(v) for v in extent)


def nnunet_augmentation(patch_size: Sequence[int]) -> AugmentationConfig:
    """nnU-Net's defaults: rotation and dummy-2D choice from the patch shape, mirroring on all axes."""
    dim = len(patch_size)
    if dim == 2:
        # elongated 2D patches get a small rotation so the long side stays long
        limit = 15.0 if max(patch_size) / min(patch_size) > 1.5 else 180.0
        return AugmentationConfig(name="nnunet", rotation=(_deg(-limit), _deg(limit)), mirror_axes=(0, 1))
    if dim == 3:
        dummy_2d = max(patch_size) / patch_size[0] > 3
        limit = 180.0 if dummy_2d else 30.0
        return AugmentationConfig(
            name="nnunet", rotation=(_deg(-limit), _deg(limit)), mirror_axes=(0, 1, 2), dummy_2d=dummy_2d
        )
    raise ValueError(f"patch size must have 2 or 3 entries, got {list(patch_size)}")


def nnunet_intensity_augmentation(patch_size: Sequence[int]) -> AugmentationConfig:
    """nnU-Net's defaults plus the local intensity transforms of its DA5 variant, with DA5's probabilities."""
    return replace(
        nnunet_augmentation(patch_size), name="nnunet_intensity",
        p_additive_brightness=0.1, p_brightness_gradient=0.3, p_local_gamma=0.3,
    )


def nnunet_regions_augmentation(patch_size: Sequence[int]) -> AugmentationConfig:
    """nnunet_intensity plus an intensity offset per labelled structure (LabelledRegionShiftTransform)."""
    return replace(nnunet_intensity_augmentation(patch_size), name="nnunet_regions", p_region_shift=0.5)


def no_augmentation(patch_size: Sequence[int]) -> AugmentationConfig:
    """Identity pipeline: every probability 0, no mirroring; the spatial step only crops (a no-op here)."""
    base = nnunet_augmentation(patch_size)
    return replace(
        base,
        name="none",
        rotation=(0.0, 0.0),
        p_rotation=0.0,
        scaling=(1.0, 1.0),
        p_scaling=0.0,
        p_elastic=0.0,
        p_noise=0.0,
        p_blur=0.0,
        p_brightness=0.0,
        p_contrast=0.0,
        p_low_resolution=0.0,
        p_gamma_inverted=0.0,
        p_gamma=0.0,
        p_additive_brightness=0.0,
        p_brightness_gradient=0.0,
        p_local_gamma=0.0,
        mirror_axes=(),
        dummy_2d=False,
    )


AugmentationPreset = Callable[[Sequence[int]], AugmentationConfig]

AUGMENTATION_PRESETS: dict[str, AugmentationPreset] = {
    "nnunet": nnunet_augmentation,
    "nnunet_intensity": nnunet_intensity_augmentation,
    "nnunet_regions": nnunet_regions_augmentation,
    "none": no_augmentation,
}


def augmentation_preset_names() -> tuple[str, ...]:
    return tuple(AUGMENTATION_PRESETS)


def augmentation_preset(name: str, patch_size: Sequence[int], region_shift_sigma: float | None = None
                        ) -> AugmentationConfig:
    """The preset `name` for `patch_size`; `region_shift_sigma` (not None) replaces its per-structure offset's sd."""
    if name not in AUGMENTATION_PRESETS:
        raise UserError(f"augmentation preset '{name}': unknown (choose from {', '.join(AUGMENTATION_PRESETS)})")
    config = AUGMENTATION_PRESETS[name](patch_size)
    if region_shift_sigma is not None:
        if region_shift_sigma < 0:
            raise UserError(f"--region_shift_sigma {region_shift_sigma}: must be >= 0")
        config = replace(config, region_shift_sigma=float(region_shift_sigma))
    return config


class Convert3DTo2D(AbstractTransform):
    """(B, C, Z, Y, X) -> (B, C*Z, Y, X) for data and seg, remembering the shapes for `Convert2DTo3D`."""

    def __call__(self, **batch):
        for key in ("data", "seg"):
            arr = batch.get(key)
            if arr is None:
                continue
            if arr.ndim != 5:
                raise ValueError(f"dummy 2D needs 5D '{key}', got shape {arr.shape}")
            batch[f"_orig_shape_{key}"] = arr.shape
            batch[key] = arr.reshape(arr.shape[0], arr.shape[1] * arr.shape[2], *arr.shape[3:])
        return batch


class Convert2DTo3D(AbstractTransform):
    """Inverse of `Convert3DTo2D`; the in-plane size may have changed (spatial crop)."""

    def __call__(self, **batch):
        for key in ("data", "seg"):
            shape = batch.pop(f"_orig_shape_{key}", None)
            if shape is None:
                continue
            arr = batch[key]
            batch[key] = arr.reshape(shape[0], shape[1], shape[2], *arr.shape[2:])
        return batch


def _spatial_transform(patch_size: Sequence[int], cfg: AugmentationConfig) -> SpatialTransform:
    rotation = tuple(cfg.rotation)
    return SpatialTransform(
        list(patch_size),
        patch_center_dist_from_border=None,
        do_elastic_deform=cfg.p_elastic > 0,
        alpha=cfg.elastic_alpha,
        sigma=cfg.elastic_sigma,
        do_rotation=cfg.p_rotation > 0,
        angle_x=rotation,
        angle_y=rotation,
        angle_z=rotation,
        p_rot_per_axis=1,
        do_scale=cfg.p_scaling > 0,
        scale=tuple(cfg.scaling),
        border_mode_data="constant",
        border_cval_data=0,
        order_data=3,
        border_mode_seg="constant",
        border_cval_seg=0,
        order_seg=0,  # binary class maps: nearest keeps them binary
        random_crop=False,  # the sampler already chose the location; crop the centre back out
        p_el_per_sample=cfg.p_elastic,
        p_scale_per_sample=cfg.p_scaling,
        p_rot_per_sample=cfg.p_rotation,
        independent_scale_for_each_axis=False,
    )


def get_training_transforms(patch_size: Sequence[int], config: AugmentationConfig,
                            targets_from_labels: Callable | None = None) -> Compose:
    """nnU-Net's training pipeline for final patch `patch_size` ((z, y, x) or (y, x)).

    targets_from_labels: the sampler's `targets_for` when its batches carry the label map as "seg" (one channel,
    `defer_targets`) instead of one target channel per class: the spatial transform then moves one channel
    whatever the number of classes, and the class targets are built right after it (the same targets as building
    them first: nearest-neighbour picks the same source voxel for every channel)."""
    patch_size = [int(p) for p in patch_size]
    dim = len(patch_size)
    if dim not in (2, 3):
        raise ValueError(f"patch size must have 2 or 3 entries, got {patch_size}")
    if any(a >= dim for a in config.mirror_axes):
        raise UserError(f"augmentation mirror_axes {list(config.mirror_axes)}: axis out of range for {dim}D patches")
    dummy_2d = config.dummy_2d and dim == 3
    transforms: list[AbstractTransform] = []
    if dummy_2d:
        transforms.append(Convert3DTo2D())
        transforms.append(_spatial_transform(patch_size[1:], config))
        transforms.append(Convert2DTo3D())
    else:
        transforms.append(_spatial_transform(patch_size, config))
    if targets_from_labels is not None:
        transforms.append(TargetsFromLabelMap(targets_from_labels))

    # intensity transforms only touch "data"; each is skipped when its probability is 0
    if config.p_region_shift > 0:
        transforms.append(LabelledRegionShiftTransform(config.region_shift_sigma, config.p_region_shift))
    if config.p_noise > 0:
        transforms.append(GaussianNoiseTransform(noise_variance=config.noise_variance, p_per_sample=config.p_noise))
    if config.p_blur > 0:
        transforms.append(
            GaussianBlurTransform(
                config.blur_sigma,
                different_sigma_per_channel=True,
                p_per_sample=config.p_blur,
                p_per_channel=config.blur_p_per_channel,
            )
        )
    if config.p_brightness > 0:
        transforms.append(
            BrightnessMultiplicativeTransform(multiplier_range=config.brightness_range, p_per_sample=config.p_brightness)
        )
    if config.p_contrast > 0:
        transforms.append(
            ContrastAugmentationTransform(contrast_range=config.contrast_range, p_per_sample=config.p_contrast)
        )
    if config.p_low_resolution > 0:
        transforms.append(
            SimulateLowResolutionTransform(
                zoom_range=config.low_resolution_zoom,
                per_channel=True,
                p_per_channel=config.low_resolution_p_per_channel,
                order_downsample=0,
                order_upsample=3,
                p_per_sample=config.p_low_resolution,
                ignore_axes=(0,) if dummy_2d else None,  # do not blur across the thick z axis
            )
        )
    if config.p_gamma_inverted > 0:
        transforms.append(
            GammaTransform(
                config.gamma_range, invert_image=True, per_channel=True, retain_stats=True,
                p_per_sample=config.p_gamma_inverted,
            )
        )
    if config.p_gamma > 0:
        transforms.append(
            GammaTransform(
                config.gamma_range, invert_image=False, per_channel=True, retain_stats=True,
                p_per_sample=config.p_gamma,
            )
        )
    if config.p_additive_brightness > 0:
        transforms.append(
            BrightnessTransform(0.0, config.additive_brightness_sigma, per_channel=True,
                                p_per_sample=config.p_additive_brightness, p_per_channel=0.5)
        )
    if len(config.mirror_axes) > 0:
        transforms.append(MirrorTransform(tuple(config.mirror_axes)))
    transforms.extend(_local_intensity_transforms(config))
    return Compose(transforms)


class TargetsFromLabelMap(AbstractTransform):
    """Replace the batch's label map "seg" (B, 1, ...) by the class targets (B, K, ...) that `build(datasets, seg)`
    makes; the batch's "datasets" name each item's dataset."""

    def __init__(self, build: Callable):
        self.build = build

    def __call__(self, **batch):
        batch["seg"] = self.build(batch["datasets"], batch["seg"])
        return batch


class LabelledRegionShiftTransform(AbstractTransform):
    """With probability `p_per_sample`, add N(0, sigma) to the data inside each class target of the item (a nested
    structure, such as a tumour inside its organ, adds its own offset to its parent's). Reads the targets, never
    changes them."""

    def __init__(self, sigma: float, p_per_sample: float):
        self.sigma, self.p_per_sample = float(sigma), float(p_per_sample)

    def __call__(self, **batch):
        data, seg = batch["data"], batch["seg"]
        for b in range(data.shape[0]):
            if np.random.uniform() >= self.p_per_sample:
                continue
            for k in range(seg.shape[1]):
                region = seg[b, k] > 0
                if region.any():
                    data[b][:, region] += np.float32(np.random.normal(0.0, self.sigma))
        return batch


def _kernel_scale(image_shape: Sequence[int], axis: int) -> float:
    """Width (voxels) of a local intensity change along `axis`: log-uniform from 1/6 of the patch to all of it."""
    size = float(image_shape[axis])
    return float(np.exp(np.random.uniform(np.log(max(size // 6, 1.0)), np.log(size))))


class _SignedStrength:
    """Peak of an additive brightness field: uniform in `magnitude`, positive or negative with equal odds."""

    def __init__(self, magnitude: tuple[float, float]):
        self.magnitude = magnitude

    def __call__(self, *_unused) -> float:
        value = np.random.uniform(*self.magnitude)
        return value if np.random.uniform() < 0.5 else -value


class _LocalGamma:
    """A local gamma that darkens or brightens with equal odds."""

    def __init__(self, dark: tuple[float, float], bright: tuple[float, float]):
        self.dark, self.bright = dark, bright

    def __call__(self, *_unused) -> float:
        return np.random.uniform(*(self.dark if np.random.uniform() < 0.5 else self.bright))


def _local_intensity_transforms(config: AugmentationConfig) -> list[AbstractTransform]:
    transforms: list[AbstractTransform] = []
    if config.p_brightness_gradient > 0:
        transforms.append(BrightnessGradientAdditiveTransform(
            _kernel_scale, (-0.5, 1.5), max_strength=_SignedStrength(config.brightness_gradient_strength),
            mean_centered=False, same_for_all_channels=False, p_per_sample=config.p_brightness_gradient,
            p_per_channel=0.5,
        ))
    if config.p_local_gamma > 0:
        transforms.append(LocalGammaTransform(
            _kernel_scale, (-0.5, 1.5), _LocalGamma(config.local_gamma_dark, config.local_gamma_bright),
            same_for_all_channels=False, p_per_sample=config.p_local_gamma, p_per_channel=0.5,
        ))
    return transforms


def get_validation_transforms() -> Compose:
    """Validation patches are drawn at the final size and left untouched."""
    return Compose([])
