"""FLARE22 (MICCAI 2022 Fast and Low-resource semi-supervised Abdominal oRgan sEgmentation), labelled cases.

Layout (the 50 labelled training cases, zenodo.org/records/7860267): FLARE22Train/images/FLARE22_Tr_0001_0000.nii.gz
and FLARE22Train/labels/FLARE22_Tr_0001.nii.gz (the challenge download names the folder
Training/FLARE22_LabeledCase50). SRC may be that folder or one above it. The 2000 unlabelled cases and the
validation/test images are not converted: they carry no public labels.
"""
from __future__ import annotations

from pathlib import Path

from textnnunet.dataset.converters.base import (
    DatasetConverter,
    LabelMapping,
    SourceCase,
    files_matching,
    first_existing_folder,
)
from textnnunet.errors import UserError

FLARE22_CLASSES = {
    "liver": 1, "right kidney": 2, "spleen": 3, "pancreas": 4, "aorta": 5, "inferior vena cava": 6,
    "right adrenal gland": 7, "left adrenal gland": 8, "gallbladder": 9, "esophagus": 10, "stomach": 11,
    "duodenum": 12, "left kidney": 13,
}


class FLARE22Converter(DatasetConverter):
    name = "flare22"
    title = "FLARE22 (labelled training cases)"
    default_dataset_name = "FLARE22"
    reference = "Ma et al., Unleashing the strengths of unlabelled data in deep learning-assisted pan-cancer " \
                "abdominal organ quantification: the FLARE22 challenge, Lancet Digit Health (2024)"
    licence = "see flare22.grand-challenge.org (CT images and pancreas from MSD, other organs from AbdomenCT-1K)"

    def find_layout(self, src: Path) -> Path:
        candidates = [src, src / "FLARE22Train", src / "Training" / "FLARE22_LabeledCase50",
                      src / "FLARE22_LabeledCase50"]
        return first_existing_folder([c / "images" for c in candidates], "images folder of FLARE22Train", src).parent

    def label_mapping(self, layout: Path) -> LabelMapping:
        return LabelMapping.identity(FLARE22_CLASSES)

    def cases(self, layout: Path) -> list[SourceCase]:
        cases = []
        for match, image in files_matching(layout / "images", r"(FLARE22_Tr_\d{4})_0000\.nii\.gz"):
            label = layout / "labels" / f"{match.group(1)}.nii.gz"
            if not label.is_file():
                raise UserError(f"{label}: missing (the label of {image.name})")
            cases.append(SourceCase(match.group(1), (image,), label))
        if not cases:
            raise UserError(f"{layout / 'images'}: no FLARE22_Tr_XXXX_0000.nii.gz files")
        return cases
