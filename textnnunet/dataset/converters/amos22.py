"""AMOS22 (Abdominal Multi-Organ Segmentation, MICCAI 2022), as released on Zenodo after the challenge.

Layout (amos22.zip): amos22/imagesTr, labelsTr (240 cases), imagesVa, labelsVa (120), imagesTs (no labels), all
named amos_XXXX.nii.gz; ids up to 500 are CT, above 500 MR. One dataset holds one modality (--modality CT, the
default, or MR), so that each gets its own intensity normalisation: convert twice for both. The validation cases join
the training cases (as nnU-Net's AMOS conversion does: its 5-fold cross-validation replaces the single split).
Labels 1-15 keep their values.
"""
from __future__ import annotations

from pathlib import Path

from textnnunet.dataset.converters.base import DatasetConverter, LabelMapping, SourceCase, paired_folder_cases
from textnnunet.errors import UserError

AMOS_LAST_CT_ID = 500
AMOS22_CLASSES = {
    "spleen": 1, "right kidney": 2, "left kidney": 3, "gallbladder": 4, "esophagus": 5, "liver": 6, "stomach": 7,
    "aorta": 8, "inferior vena cava": 9, "pancreas": 10, "right adrenal gland": 11, "left adrenal gland": 12,
    "duodenum": 13, "urinary bladder": 14, "prostate or uterus": 15,
}
SPLITS = (("imagesTr", "labelsTr", False), ("imagesVa", "labelsVa", False), ("imagesTs", "labelsTs", True))


class AMOS22Converter(DatasetConverter):
    name = "amos22"
    title = "AMOS22"
    default_dataset_name = "AMOS22"
    reference = "Ji et al., AMOS: A Large-Scale Abdominal Multi-Organ Benchmark, NeurIPS 2022; zenodo.org/record/7262581"
    licence = "see zenodo.org/record/7262581"
    modalities = ("CT", "MR")

    def find_layout(self, src: Path) -> Path:
        for folder in (src, src / "amos22"):
            if (folder / "imagesTr").is_dir():
                return folder
        raise UserError(f"{src}: no imagesTr folder here or in {src / 'amos22'} (expected the extracted amos22.zip)")

    def label_mapping(self, layout: Path) -> LabelMapping:
        return LabelMapping.identity(AMOS22_CLASSES)

    def cases(self, layout: Path) -> list[SourceCase]:
        cases = []
        for images, labels, test in SPLITS:
            cases += paired_folder_cases(layout, images, labels, r"amos_(\d{4})\.nii\.gz", "amos_{}", test,
                                         keep=self._has_modality)
        return cases

    def dataset_name(self, layout: Path) -> str:
        return f"{self.default_dataset_name}{self.modality}"

    def description(self, layout: Path) -> str:
        return f"AMOS22 {self.modality} cases (ids {'<=' if self.modality == 'CT' else '>'} {AMOS_LAST_CT_ID})"

    def _has_modality(self, match) -> bool:
        is_ct = int(match.group(1)) <= AMOS_LAST_CT_ID
        return is_ct == (self.modality == "CT")
