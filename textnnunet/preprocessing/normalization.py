"""Intensity normalisation schemes (nnU-Net's CT, z-score and none), chosen per channel by the plan."""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from textnnunet.errors import UserError
from textnnunet.preprocessing.cropping import create_nonzero_mask
from textnnunet.utils.plans import Plans, same_image_type

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


def matching_intensity_group(plans: Plans | dict, name: str) -> str | None:
    """The plan's intensity group called `name` (see same_image_type: "t2" is "T2"), or None."""
    return next((g for g in Plans.of(plans).intensity_groups if same_image_type(g, name)), None)


def intensity_group_of(plans: Plans | dict, dataset: str = "", group: str | None = None) -> str | None:
    """The intensity group (modality) an image is normalised as: `group` if given, else its dataset's, else the
    plan's only one. A plan of several modalities needs to be told which one a new image is."""
    plans = Plans.of(plans)
    groups = plans.intensity_groups
    if group is not None:
        match = matching_intensity_group(plans, group)
        if groups and match is None:
            raise UserError(f"--modality {group}: not one of this model's image types ({', '.join(groups)})")
        return match
    if dataset and dataset in plans.dataset_intensity_group:
        return plans.dataset_intensity_group[dataset]
    if len(groups) > 1:
        raise UserError(f"this model was trained on several image types ({', '.join(groups)}); say which one the "
                        f"input is with --modality")
    return None


def normalization_for(plans: Plans | dict, configuration: dict, group: str | None = None) -> tuple[list, list, dict]:
    """(schemes, use_mask, intensity properties per channel) of `group`, or of the plan as a whole."""
    plans = Plans.of(plans)
    if group is not None:
        g = plans.intensity_groups[group]
        return (list(g["normalization_schemes"]), list(g["use_mask_for_norm"]),
                g.get("foreground_intensity_properties_per_channel", {}))
    schemes = list(configuration.get("normalization_schemes", []))
    use_mask = list(configuration.get("use_mask_for_norm", [False] * len(schemes)))
    pooled = plans.foreground_intensity_properties
    return schemes, use_mask, pooled if pooled is not None else {}


def normalize(data: np.ndarray, plans: Plans | dict, configuration: dict, mask: np.ndarray | None = None,
              group: str | None = None) -> np.ndarray:
    """Normalise each channel of `data` (c, z, y, x) with the scheme the configuration names for it, or with
    that of intensity group `group` (a plan pooling CT and MR normalises each dataset by its own modality).

    `mask` (z, y, x) is the region used by masked z-scoring; when it is needed but not given, the filled
    nonzero region of the data is used.
    """
    schemes, use_mask, props_all = normalization_for(plans, configuration, group)
    if len(schemes) != data.shape[0] or len(use_mask) != data.shape[0]:
        raise UserError(
            f"plans configuration: {len(schemes)} normalization_schemes / {len(use_mask)} use_mask_for_norm "
            f"entries for {data.shape[0]} image channel(s)"
        )
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
