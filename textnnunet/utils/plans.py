"""Typed owners of a plans.json (nnU-Net's PlansManager, small): `Plans`, `ConfigurationPlan` and `LabelSpace`.

They are thin, frozen views over the JSON dict (documentation/contracts.md): nothing is copied or renamed, unknown
keys are kept, and `to_json` gives back exactly what was read. `Plans.load` validates a file once; `Plans.of` wraps
a dict already in memory (or passes a `Plans` through), so functions accept either. This module is the only place
that indexes the plan's JSON by key.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from textnnunet.errors import UserError
from textnnunet.utils.files import atomic_write_json


def image_type_key(name: str) -> str:
    """What identifies an image type among intensity-group names (channel names, "CT", "T2+ADC"): case and spaces
    ignored."""
    return name.strip().lower()


def same_image_type(a: str, b: str) -> bool:
    """Whether two intensity-group names are one image type (image_type_key)."""
    return image_type_key(a) == image_type_key(b)


@dataclass(frozen=True)
class LabelSpace:
    """`label_space`: the union of classes, what each dataset annotates, and the optional hierarchy."""

    data: Mapping[str, Any]

    @property
    def is_complete(self) -> bool:
        """Both `classes` and `datasets` are there (what training needs)."""
        return isinstance(self.data, Mapping) and "classes" in self.data and "datasets" in self.data

    @property
    def classes(self) -> list[dict]:
        """[{"name", "synonyms"}] in vocabulary order."""
        return self.data["classes"]

    @property
    def class_names(self) -> list[str]:
        return [c["name"] for c in self.classes]

    @property
    def datasets(self) -> dict[str, dict[str, list[int]]]:
        """Per dataset {annotated class: label values} ({} when the label space has none)."""
        return self.data.get("datasets", {})

    def annotated(self, dataset: str) -> dict[str, list[int]]:
        return self.datasets[dataset]

    @property
    def has_hierarchy(self) -> bool:
        """Plans made with the lexicon carry a hierarchy (possibly empty); older ones have none."""
        return "hierarchy" in self.data

    @property
    def hierarchy(self) -> dict[str, dict]:
        return self.data.get("hierarchy") or {}


@dataclass(frozen=True)
class ConfigurationPlan:
    """One entry of `configurations` ("2d", "3d_fullres", ...) with the values derived from it."""

    name: str
    data: Mapping[str, Any]

    @property
    def data_identifier(self) -> str:
        return self.data.get("data_identifier", self.name)

    @property
    def patch_size(self) -> list[int]:
        return self.data["patch_size"]

    @property
    def dims(self) -> int:
        """2 or 3: the length of the patch size."""
        return len(self.patch_size)

    @property
    def batch_size(self) -> int:
        return self.data["batch_size"]

    @property
    def architecture(self) -> dict:
        return self.data["architecture"]

    def to_json(self) -> dict:
        return self.data  # type: ignore[return-value]


@dataclass(frozen=True)
class Plans:
    """A plans.json (joint or per-dataset) as a typed view. `data` is the JSON dict itself."""

    data: Mapping[str, Any]

    @classmethod
    def of(cls, plans: "Plans | Mapping[str, Any]") -> "Plans":
        """`plans` itself if it is a Plans, else a view of the dict (not validated: the caller built it)."""
        return plans if isinstance(plans, Plans) else cls(plans)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Plans":
        """The plans of a plans.json file, validated once: a missing file, bad JSON or a missing key is one
        UserError naming the file."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: plans not found; run textnnunet_plan_and_preprocess for these datasets first")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        return cls.validated(data, str(path))

    @classmethod
    def validated(cls, data: Any, source: str) -> "Plans":
        if not isinstance(data, dict) or "configurations" not in data:
            raise UserError(f"{source}: not a textnnunet plans file (no 'configurations')")
        if not isinstance(data["configurations"], dict):
            raise UserError(f"{source}: 'configurations' is not an object")
        for name, configuration in data["configurations"].items():
            if not isinstance(configuration, dict):
                raise UserError(f"{source}: configuration '{name}' is not an object")
        return cls(data)

    def to_json(self) -> dict:
        """The JSON as read (extra keys included): saving it writes the same file."""
        return self.data  # type: ignore[return-value]

    def save(self, path: str | os.PathLike) -> Path:
        """Write the plan as the planner does (atomic, indented)."""
        atomic_write_json(path, self.to_json())
        return Path(path)

    # ------------------------------------------------------------------------------------------ identity
    @property
    def plans_name(self) -> str:
        return self.data["plans_name"]

    @property
    def display_name(self) -> str:
        """The plan's name for messages ('?' for a plan without one)."""
        return str(self.data.get("plans_name", "?"))

    @property
    def datasets(self) -> list[str]:
        return list(self.data.get("datasets") or [])

    @property
    def channel_names(self) -> dict[str, str]:
        return self.data["channel_names"]

    @property
    def num_channels(self) -> int:
        """Network input channels."""
        return len(self.channel_names)

    @property
    def label_space(self) -> LabelSpace:
        label_space = self.data.get("label_space")
        return LabelSpace(label_space if isinstance(label_space, Mapping) else {})

    # ------------------------------------------------------------------------------------ configurations
    @property
    def configuration_names(self) -> list[str]:
        return list(self.data.get("configurations") or {})

    def has_configuration(self, name: str) -> bool:
        return name in (self.data.get("configurations") or {})

    def configuration(self, name: str) -> ConfigurationPlan:
        if not self.has_configuration(name):
            raise UserError(f"plans '{self.display_name}': configuration '{name}' not in the plan "
                            f"(available: {', '.join(self.configuration_names) or 'none'})")
        return ConfigurationPlan(name, self.data["configurations"][name])

    # ----------------------------------------------------------------------------------------- intensity
    @property
    def foreground_intensity_properties(self) -> dict | None:
        """Pooled per-channel statistics (the first intensity group's); None when the plan has none."""
        return self.data.get("foreground_intensity_properties_per_channel")

    @property
    def intensity_groups(self) -> dict[str, dict]:
        """{group: {channel_names, datasets, normalization_schemes, use_mask_for_norm, ...}}; {} in older plans."""
        return self.data.get("intensity_groups") or {}

    @property
    def dataset_intensity_group(self) -> dict[str, str]:
        return self.data.get("dataset_intensity_group") or {}

    @property
    def label_margins(self) -> dict[str, dict[str, dict]]:
        """{class: {dataset: {inferior_mm, superior_mm, cases}}}: image shown beyond each class; {} in older plans."""
        return self.data.get("label_margins_mm") or {}
