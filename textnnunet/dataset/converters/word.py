"""WORD (Whole abdominal ORgan Dataset), as released by HiLab (WORD-V0.1.0).

Layout: imagesTr, labelsTr (100 cases), imagesVal, labelsVal (20), imagesTs, labelsTs (30), named
word_XXXX.nii.gz. The validation cases join the training cases (cross-validation replaces the single split); the
test cases keep their labels (labelsTs). WORD labels both adrenal glands with one value ("adrenal gland") and the
small intestine as "intestine" ("small bowel").
"""
from __future__ import annotations

from pathlib import Path

from textnnunet.dataset.converters.base import DatasetConverter, LabelMapping, SourceCase, paired_folder_cases
from textnnunet.errors import UserError

WORD_CLASSES = {
    "liver": 1, "spleen": 2, "left kidney": 3, "right kidney": 4, "stomach": 5, "gallbladder": 6, "esophagus": 7,
    "pancreas": 8, "duodenum": 9, "colon": 10, "small bowel": 11, "adrenal gland": 12, "rectum": 13,
    "urinary bladder": 14, "left femoral head": 15, "right femoral head": 16,
}
SPLITS = (("imagesTr", "labelsTr", False), ("imagesVal", "labelsVal", False), ("imagesTs", "labelsTs", True))


class WORDConverter(DatasetConverter):
    name = "word"
    title = "WORD"
    default_dataset_name = "WORD"
    reference = "Luo et al., WORD: A large scale dataset, benchmark and clinical applicable study for abdominal " \
                "organ segmentation from CT image, Medical Image Analysis 82 (2022)"
    licence = "academic research use only, not clinical or commercial (see github.com/HiLab-git/WORD)"

    def find_layout(self, src: Path) -> Path:
        for folder in [src] + sorted(p for p in src.glob("WORD*") if p.is_dir()):
            if (folder / "imagesTr").is_dir():
                return folder
        raise UserError(f"{src}: no imagesTr folder here or in a WORD* subfolder (expected WORD-V0.1.0)")

    def label_mapping(self, layout: Path) -> LabelMapping:
        return LabelMapping.identity(WORD_CLASSES)

    def cases(self, layout: Path) -> list[SourceCase]:
        cases = []
        for images, labels, test in SPLITS:
            cases += paired_folder_cases(layout, images, labels, r"word_(\d{4})\.nii\.gz", "word_{}", test)
        return cases
