"""Intensity normalisation schemes (nnU-Net's CT, z-score and none), chosen per channel by the plan."""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from textnnunet.errors import UserError
from textnnunet.preprocessing.cropping import create_nonzero_mask

_EPS = 1e-8
CT_PROPERTY_KEYS = ("mean", "std", "percentile_00_5", "percentile_99_5")


class ImageNormalization(ABC):
    """Normalises one channel (z, y, x); returns float32."""

    def __init__(self, use_mask_for_norm: bool = False, intensity_properties: dict | None = None):
        self.use_mask_for_norm = bool(use_mask_for_norm)
        self.intensity_properties = intensity_properties or {}

    @abstractmethod
    def run(self, image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray: ...


class CTNormalization(ImageNormalization):
    """Clip to the dataset's foreground 0.5/99.5 percentiles, then standardise with the foreground mean/std.

    The statistics are global (from the fingerprint), so Hounsfield units keep one meaning across cases.
    """

    def run(self, image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        props = self.intensity_properties
        missing = [k for k in CT_PROPERTY_KEYS if k not in props]
        if missing:
            raise UserError(f"plans foreground_intensity_properties_per_channel: missing {', '.join(missing)}")
        out = np.clip(image.astype(np.float32), props["percentile_00_5"], props["percentile_99_5"])
        out -= np.float32(props["mean"])
        out /= np.float32(max(float(props["std"]), _EPS))
        return out


class ZScoreNormalization(ImageNormalization):
    """Subtract the image's own mean, divide by its std; within `mask` only when `use_mask_for_norm`.

    With the mask, voxels outside it are left as they are (zero after cropping to the nonzero region), as in
    nnU-Net for skull-stripped MRI where the surround carries no information.
    """

    def run(self, image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        out = image.astype(np.float32)
        if self.use_mask_for_norm and mask is not None:
            if mask.shape != image.shape:
                raise ValueError(f"mask shape {mask.shape} does not match image shape {image.shape}")
            if not mask.any():
                return out
            values = out[mask]
            out[mask] = (values - values.mean()) / max(float(values.std()), _EPS)
            return out
        out -= out.mean()
        out /= max(float(out.std()), _EPS)
        return out


class NoNormalization(ImageNormalization):
    def run(self, image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        return image.astype(np.float32)


SCHEMES: dict[str, type[ImageNormalization]] = {
    "CTNormalization": CTNormalization,
    "ZScoreNormalization": ZScoreNormalization,
    "NoNormalization": NoNormalization,
}


def normalize(data: np.ndarray, plans: dict, configuration: dict, mask: np.ndarray | None = None) -> np.ndarray:
    """Normalise each channel of `data` (c, z, y, x) with the scheme the configuration names for it.

    `mask` (z, y, x) is the region used by masked z-scoring; when it is needed but not given, the filled
    nonzero region of the data is used.
    """
    schemes = list(configuration.get("normalization_schemes", []))
    use_mask = list(configuration.get("use_mask_for_norm", [False] * len(schemes)))
    if len(schemes) != data.shape[0] or len(use_mask) != data.shape[0]:
        raise UserError(
            f"plans configuration: {len(schemes)} normalization_schemes / {len(use_mask)} use_mask_for_norm "
            f"entries for {data.shape[0]} image channel(s)"
        )
    props_all = plans.get("foreground_intensity_properties_per_channel", {})
    if mask is None and any(use_mask):
        mask = create_nonzero_mask(data)
    out = np.empty(data.shape, dtype=np.float32)
    for c, (scheme, masked) in enumerate(zip(schemes, use_mask)):
        cls = SCHEMES.get(scheme)
        if cls is None:
            known = ", ".join(SCHEMES)
            raise UserError(f"plans configuration: unknown normalization scheme '{scheme}' (known: {known})")
        normaliser = cls(use_mask_for_norm=masked, intensity_properties=props_all.get(str(c)))
        out[c] = normaliser.run(data[c], mask)
    return out
