"""The interface every public-dataset converter implements, and the pieces they share.

A converter answers three questions about a downloaded dataset and nothing else:
  - layout discovery: is SRC this dataset, and where are its parts? (`find_layout`)
  - label mapping: which canonical class names do its label values become? (`label_mapping`)
  - case iteration: which cases are there, with which image, label and split? (`cases`)
Reading, remapping and writing the files is shared (`textnnunet.dataset.converters.writer`), so every converter
keeps the source geometry and writes the same nnU-Net v2 layout.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable

import numpy as np
import SimpleITK as sitk

from textnnunet.errors import UserError
from textnnunet.imageio.sitk_io import read_sitk

NIFTI_GZ = ".nii.gz"


@dataclass(frozen=True)
class SourceCase:
    """One case of the source dataset.

    `images` holds one file per channel, or a single 4D file whose last axis is the channel (MSD's multi-modal
    tasks). `label` is a label-map file, a folder of per-structure masks (TotalSegmentator), or None.
    """
    case_id: str
    images: tuple[Path, ...]
    label: Path | None
    test: bool = False


@dataclass(frozen=True)
class LabelMapping:
    """Canonical class names and how the source label values become the values written.

    `classes` maps each canonical name to the written values it covers (several values: nnU-Net's region syntax,
    e.g. "kidney": (1, 2, 3) in KiTS23). `source_to_target` maps every value allowed in a source label map,
    background included, to the value written.
    """
    classes: dict[str, tuple[int, ...]]
    source_to_target: dict[int, int]

    def __post_init__(self):
        written = set(self.source_to_target.values()) - {0}
        covered = set().union(*self.classes.values()) if self.classes else set()
        if written != covered:
            raise ValueError(f"written label values {sorted(written)} differ from the class values {sorted(covered)}")

    @classmethod
    def identity(cls, classes: dict[str, int | Iterable[int]]) -> "LabelMapping":
        """Classes whose values are written unchanged (the source's own numbering)."""
        as_tuples = {name: _values(v) for name, v in classes.items()}
        values = sorted(set().union(*as_tuples.values()))
        return cls(as_tuples, {0: 0, **{v: v for v in values}})

    @property
    def has_regions(self) -> bool:
        return any(len(values) > 1 for values in self.classes.values())

    def ordered_classes(self) -> list[tuple[str, tuple[int, ...]]]:
        """Regions before the classes they contain (larger regions first), else the converter's order."""
        return sorted(self.classes.items(), key=lambda item: -len(item[1]))

    def dataset_json_labels(self) -> dict[str, int | list[int]]:
        labels: dict[str, int | list[int]] = {"background": 0}
        for name, values in self.ordered_classes():
            labels[name] = values[0] if len(values) == 1 else list(values)
        return labels

    def regions_class_order(self) -> list[int] | None:
        """nnU-Net's regions_class_order: the value painted for each class, in label order, later ones on top.

        Regions come first and paint their smallest value; every value of a region is also a class of its own
        (checked by the tests), painted afterwards, so a label map survives the round trip.
        """
        if not self.has_regions:
            return None
        return [min(values) for _, values in self.ordered_classes()]

    def lookup_table(self) -> np.ndarray:
        lut = np.zeros(max(self.source_to_target) + 1, dtype=np.int64)
        for source, target in self.source_to_target.items():
            lut[source] = target
        return lut


def _values(v: int | Iterable[int]) -> tuple[int, ...]:
    return (int(v),) if isinstance(v, (int, np.integer)) else tuple(sorted(int(x) for x in v))


@dataclass(frozen=True)
class ConversionNotes:
    """What a case's conversion wants the user to know (e.g. overlapping TotalSegmentator masks)."""
    case_id: str
    lines: tuple[str, ...] = ()


class DatasetConverter:
    """Base class of the converters; subclasses set the class attributes and implement the three methods."""

    name: ClassVar[str]  # the --from choice
    title: ClassVar[str]  # human-readable dataset name
    default_dataset_name: ClassVar[str]  # the Name of DatasetXXX_Name unless the converter derives one
    reference: ClassVar[str] = ""
    licence: ClassVar[str] = ""
    # The first is the default; several: --modality chooses. Empty: the source declares it (MSD's dataset.json).
    modalities: ClassVar[tuple[str, ...]] = ("CT",)

    def __init__(self, modality: str | None = None):
        self.modality: str | None = self._chosen_modality(modality)

    def _chosen_modality(self, modality: str | None) -> str | None:
        if not self.modalities:
            if modality is not None:
                raise UserError(f"--modality {modality}: --from {self.name} takes the channels from the source")
            return None
        if modality is None:
            return self.modalities[0]
        chosen = [m for m in self.modalities if m.upper() == str(modality).upper()]
        if not chosen:
            raise UserError(f"--modality {modality}: not available for --from {self.name} "
                            f"(choose from {', '.join(self.modalities)})")
        return chosen[0]

    # -- the interface -------------------------------------------------------------------------------------------
    def find_layout(self, src: Path) -> Any:
        """Check that `src` has this dataset's layout; return whatever `label_mapping` and `cases` need."""
        raise NotImplementedError

    def label_mapping(self, layout: Any) -> LabelMapping:
        raise NotImplementedError

    def cases(self, layout: Any) -> list[SourceCase]:
        raise NotImplementedError

    # -- defaults a converter may override ----------------------------------------------------------------------
    def dataset_name(self, layout: Any) -> str:
        return self.default_dataset_name

    def channel_names(self, layout: Any) -> dict[str, str]:
        return {"0": str(self.modality)}

    def description(self, layout: Any) -> str:
        return f"{self.title}, converted by textnnunet_convert_dataset --from {self.name}"

    def read_label(self, case: SourceCase, mapping: LabelMapping) -> tuple[sitk.Image, ConversionNotes]:
        """The case's label map with the values to write (default: one file, remapped through `mapping`)."""
        image = read_sitk(case.label)
        return remap_label_image(image, mapping, case.label), ConversionNotes(case.case_id)


# ----------------------------------------------------------------------------------------------- shared helpers
def label_array(image: sitk.Image, path: Path) -> np.ndarray:
    """The voxels of a label map as integers; fractional or non-finite values are a UserError naming the file."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise UserError(f"{path}: a label map must have one value per voxel, found "
                        f"{image.GetNumberOfComponentsPerPixel()}")
    array = sitk.GetArrayFromImage(image)
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.int64, copy=False)
    if not np.all(np.isfinite(array)) or not np.all(np.mod(array, 1) == 0):
        raise UserError(f"{path}: label map holds non-integer values")
    return array.astype(np.int64)


def label_pixel_type(max_value: int) -> type:
    return np.uint8 if max_value < 256 else np.uint16


def label_image_like(array: np.ndarray, reference: sitk.Image, max_value: int) -> sitk.Image:
    """A label image from `array` with the geometry of `reference`."""
    image = sitk.GetImageFromArray(array.astype(label_pixel_type(max_value), copy=False))
    image.CopyInformation(reference)
    return image


def remap_label_image(image: sitk.Image, mapping: LabelMapping, path: Path) -> sitk.Image:
    """Source values -> written values; a value the source's label list does not have is a UserError."""
    array = label_array(image, path)
    found = np.unique(array)
    unknown = [int(v) for v in found if int(v) not in mapping.source_to_target]
    if unknown:
        allowed = ", ".join(str(v) for v in sorted(mapping.source_to_target))
        raise UserError(f"{path}: label value(s) {', '.join(map(str, unknown))} are not in this dataset's label "
                        f"list (allowed: {allowed})")
    written = mapping.lookup_table()[array]
    return label_image_like(written, image, max(mapping.source_to_target.values()))


def files_matching(folder: Path, pattern: str) -> list[tuple[re.Match, Path]]:
    """(match, path) of the files in `folder` whose whole name matches `pattern`, sorted by name; hidden files
    (macOS '._' copies in the MSD tarballs, unfinished downloads) are skipped."""
    regex = re.compile(pattern)
    found = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        match = regex.fullmatch(path.name)
        if match:
            found.append((match, path))
    return found


def first_existing_folder(candidates: Iterable[Path], what: str, src: Path) -> Path:
    """The first candidate folder that exists; none: a UserError listing where it was looked for."""
    candidates = list(candidates)
    for folder in candidates:
        if folder.is_dir():
            return folder
    looked = ", ".join(str(c) for c in candidates)
    raise UserError(f"{src}: {what} not found (looked for {looked})")


def paired_folder_cases(root: Path, images: str, labels: str, pattern: str, case_id: str, test: bool,
                        keep=lambda match: True) -> list[SourceCase]:
    """Cases of an images/labels folder pair whose files share one name (AMOS, WORD): images named by `pattern`,
    case ids `case_id`.format(*groups). Training cases need their label; test labels are taken where present."""
    image_folder, label_folder = root / images, root / labels
    if not image_folder.is_dir():
        return []
    cases = []
    for match, image in files_matching(image_folder, pattern):
        if not keep(match):
            continue
        label: Path | None = label_folder / image.name
        if not label.is_file():
            if not test:
                raise UserError(f"{label}: missing (the label of {image})")
            label = None
        cases.append(SourceCase(case_id.format(*match.groups()), (image,), label, test=test))
    return cases
