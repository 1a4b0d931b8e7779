"""TotalSegmentator v2 CT dataset (Wasserthal et al.), as released on Zenodo (Totalsegmentator_dataset_v201).

Layout: sXXXX/ct.nii.gz and sXXXX/segmentations/<structure>.nii.gz, one binary mask per structure (117 in v2), and
meta.csv (';'-separated, columns image_id and split: train / val / test). The masks are merged into one label map
with TotalSegmentator's own numbering (its `total` class map); where masks overlap, the structure with the higher
value wins (as TotalSegmentator's combine_masks does) and the overlap is reported per case. train and val cases
become training cases, test cases go to imagesTs with their labels (labelsTs); without meta.csv every case is a
training case. Kidney cysts are labelled apart from their kidney, so "left kidney" is the region of the left kidney
and its cysts.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from textnnunet.dataset.converters.base import (
    ConversionNotes,
    DatasetConverter,
    LabelMapping,
    SourceCase,
    label_array,
    label_image_like,
)
from textnnunet.dataset.integrity import geometry_differences
from textnnunet.errors import UserError
from textnnunet.imageio.sitk_io import geometry_of, read_sitk

CASE_FOLDER = re.compile(r"s\d{4}")

# TotalSegmentator v2's `total` task: structure file name -> label value (totalsegmentator/map_to_binary.py).
TOTALSEGMENTATOR_V2_STRUCTURES: dict[str, int] = {name: value for value, name in enumerate((
    "spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "pancreas", "adrenal_gland_right",
    "adrenal_gland_left", "lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right",
    "lung_middle_lobe_right", "lung_lower_lobe_right", "esophagus", "trachea", "thyroid_gland", "small_bowel",
    "duodenum", "colon", "urinary_bladder", "prostate", "kidney_cyst_left", "kidney_cyst_right", "sacrum",
    "vertebrae_S1", "vertebrae_L5", "vertebrae_L4", "vertebrae_L3", "vertebrae_L2", "vertebrae_L1", "vertebrae_T12",
    "vertebrae_T11", "vertebrae_T10", "vertebrae_T9", "vertebrae_T8", "vertebrae_T7", "vertebrae_T6", "vertebrae_T5",
    "vertebrae_T4", "vertebrae_T3", "vertebrae_T2", "vertebrae_T1", "vertebrae_C7", "vertebrae_C6", "vertebrae_C5",
    "vertebrae_C4", "vertebrae_C3", "vertebrae_C2", "vertebrae_C1", "heart", "aorta", "pulmonary_vein",
    "brachiocephalic_trunk", "subclavian_artery_right", "subclavian_artery_left", "common_carotid_artery_right",
    "common_carotid_artery_left", "brachiocephalic_vein_left", "brachiocephalic_vein_right", "atrial_appendage_left",
    "superior_vena_cava", "inferior_vena_cava", "portal_vein_and_splenic_vein", "iliac_artery_left",
    "iliac_artery_right", "iliac_vena_left", "iliac_vena_right", "humerus_left", "humerus_right", "scapula_left",
    "scapula_right", "clavicula_left", "clavicula_right", "femur_left", "femur_right", "hip_left", "hip_right",
    "spinal_cord", "gluteus_maximus_left", "gluteus_maximus_right", "gluteus_medius_left", "gluteus_medius_right",
    "gluteus_minimus_left", "gluteus_minimus_right", "autochthon_left", "autochthon_right", "iliopsoas_left",
    "iliopsoas_right", "brain", "skull",
    *(f"rib_left_{i}" for i in range(1, 13)), *(f"rib_right_{i}" for i in range(1, 13)),
    "sternum", "costal_cartilages",
), start=1)}

# Words of TotalSegmentator's names that canonical names spell otherwise (Latin or shortened in the source).
RENAMED_WORDS = {"clavicula": "clavicle", "iliac_vena": "iliac vein"}
# Kidneys contain their cysts (as KiTS23's kidney region): the kidney class is the region of both values.
KIDNEY_CYSTS = {"kidney_left": "kidney_cyst_left", "kidney_right": "kidney_cyst_right"}


def canonical_structure_name(structure: str) -> str:
    """'kidney_left' -> 'left kidney', 'vertebrae_L1' -> 'vertebra l1', 'rib_left_1' -> 'left rib 1',
    'clavicula_right' -> 'right clavicle', 'lung_upper_lobe_left' -> 'left lung upper lobe'."""
    rib = re.fullmatch(r"rib_(left|right)_(\d+)", structure)
    if rib:
        return f"{rib.group(1)} rib {rib.group(2)}"
    vertebra = re.fullmatch(r"vertebrae_([CTLS]\d+)", structure)
    if vertebra:
        return f"vertebra {vertebra.group(1).lower()}"
    side = re.fullmatch(r"(.+)_(left|right)", structure)
    base, prefix = (side.group(1), side.group(2) + " ") if side else (structure, "")
    return prefix + RENAMED_WORDS.get(base, base).replace("_", " ")


def totalsegmentator_label_mapping() -> LabelMapping:
    classes: dict[str, tuple[int, ...]] = {}
    for structure, value in TOTALSEGMENTATOR_V2_STRUCTURES.items():
        cyst = KIDNEY_CYSTS.get(structure)
        values = (value, TOTALSEGMENTATOR_V2_STRUCTURES[cyst]) if cyst else (value,)
        classes[canonical_structure_name(structure)] = tuple(sorted(values))
    return LabelMapping(classes, {0: 0, **{v: v for v in TOTALSEGMENTATOR_V2_STRUCTURES.values()}})


class TotalSegmentatorConverter(DatasetConverter):
    name = "totalsegmentator"
    title = "TotalSegmentator v2 (CT)"
    default_dataset_name = "TotalSegmentator"
    reference = "Wasserthal et al., TotalSegmentator: robust segmentation of 104 anatomic structures in CT images, " \
                "Radiology: Artificial Intelligence (2023); doi.org/10.5281/zenodo.6802613"
    licence = "CC BY 4.0"

    def find_layout(self, src: Path) -> Path:
        for folder in [src] + sorted(p for p in src.iterdir() if p.is_dir()):
            if any(CASE_FOLDER.fullmatch(p.name) and (p / "segmentations").is_dir() for p in folder.iterdir()):
                return folder
        raise UserError(f"{src}: no sXXXX/segmentations folders here or one level down (expected the extracted "
                        f"Totalsegmentator_dataset_v201)")

    def label_mapping(self, layout: Path) -> LabelMapping:
        return totalsegmentator_label_mapping()

    def cases(self, layout: Path) -> list[SourceCase]:
        splits = read_splits(layout / "meta.csv")
        cases = []
        for folder in sorted(p for p in layout.iterdir() if p.is_dir() and CASE_FOLDER.fullmatch(p.name)):
            image = folder / "ct.nii.gz"
            if not image.is_file():
                raise UserError(f"{image}: missing (every sXXXX folder holds ct.nii.gz)")
            test = splits.get(folder.name) == "test"
            cases.append(SourceCase(folder.name, (image,), folder / "segmentations", test=test))
        return cases

    def read_label(self, case: SourceCase, mapping: LabelMapping) -> tuple[sitk.Image, ConversionNotes]:
        reference = read_sitk(case.images[0])
        label, overlaps = merge_structure_masks(case.label, reference)
        notes = tuple(overlap_note(first, second, count) for (first, second), count in sorted(overlaps.items()))
        return label, ConversionNotes(case.case_id, notes)


def read_splits(meta_csv: Path) -> dict[str, str]:
    """image_id -> split from meta.csv (';'-separated in v2; ',' accepted); no file: no splits."""
    if not meta_csv.is_file():
        return {}
    text = meta_csv.read_text()
    delimiter = ";" if text.splitlines()[0].count(";") > text.splitlines()[0].count(",") else ","
    rows = list(csv.DictReader(text.splitlines(), delimiter=delimiter))
    if not rows or "image_id" not in rows[0] or "split" not in rows[0]:
        raise UserError(f"{meta_csv}: expected columns image_id and split")
    return {row["image_id"].strip(): row["split"].strip().lower() for row in rows}


def structure_files(folder: Path) -> dict[str, Path]:
    """The folder's mask files by structure; a file that is not a v2 structure, or a missing one, is an error."""
    found = {p.name[: -len(".nii.gz")]: p for p in folder.iterdir() if p.name.endswith(".nii.gz")
             and not p.name.startswith(".")}
    unknown = sorted(set(found) - set(TOTALSEGMENTATOR_V2_STRUCTURES))
    if unknown:
        raise UserError(f"{folder / (unknown[0] + '.nii.gz')}: not a TotalSegmentator v2 structure "
                        f"({len(unknown)} unknown file(s); is this the v1 dataset?)")
    missing = [s for s in TOTALSEGMENTATOR_V2_STRUCTURES if s not in found]
    if missing:
        raise UserError(f"{folder / (missing[0] + '.nii.gz')}: missing ({len(missing)} of the 117 v2 structure "
                        f"masks missing in {folder})")
    return found


def merge_structure_masks(folder: Path, reference: sitk.Image) -> tuple[sitk.Image, dict[tuple[str, str], int]]:
    """One label map from the per-structure masks, on the reference image's grid, and the overlaps found:
    (structure overwritten, structure kept) -> voxels."""
    files = structure_files(folder)
    reference_geometry = geometry_of(reference, folder.parent / "ct.nii.gz")
    label = np.zeros(reference_geometry.shape, dtype=np.uint8)
    names = {value: name for name, value in TOTALSEGMENTATOR_V2_STRUCTURES.items()}
    overlaps: dict[tuple[str, str], int] = {}
    for structure, value in TOTALSEGMENTATOR_V2_STRUCTURES.items():
        path = files[structure]
        mask_image = read_sitk(path)
        differences = geometry_differences(reference_geometry, geometry_of(mask_image, path))
        if differences:
            raise UserError(f"{path}: geometry differs from ct.nii.gz: {'; '.join(differences)}")
        mask = label_array(mask_image, path) > 0
        for other in np.unique(label[mask]):
            if other:
                key = (names[int(other)], structure)
                overlaps[key] = int(np.count_nonzero(label[mask] == other))
        label[mask] = value
    return label_image_like(label, reference, max(TOTALSEGMENTATOR_V2_STRUCTURES.values())), overlaps


def overlap_note(overwritten: str, kept: str, voxels: int) -> str:
    return (f"{voxels} voxel(s) in both '{canonical_structure_name(overwritten)}' and "
            f"'{canonical_structure_name(kept)}' (kept '{canonical_structure_name(kept)}')")
