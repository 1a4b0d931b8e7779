"""BTCV, Multi-Atlas Labeling Beyond the Cranial Vault (MICCAI 2015), abdomen task, from Synapse.

Layout (RawData.zip): RawData/Training/img/img0001.nii.gz, RawData/Training/label/label0001.nii.gz (30 cases) and
RawData/Testing/img/img0061.nii.gz (20 cases, labels not public). SRC may be RawData, its parent, or Abdomen/.
Case ids keep the source number: img0001 -> btcv_0001.
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

BTCV_CLASSES = {
    "spleen": 1, "right kidney": 2, "left kidney": 3, "gallbladder": 4, "esophagus": 5, "liver": 6, "stomach": 7,
    "aorta": 8, "inferior vena cava": 9, "portal vein and splenic vein": 10, "pancreas": 11,
    "right adrenal gland": 12, "left adrenal gland": 13,
}


class BTCVConverter(DatasetConverter):
    name = "btcv"
    title = "BTCV abdomen (Multi-Atlas Labeling Beyond the Cranial Vault)"
    default_dataset_name = "BTCV"
    reference = "Landman et al., MICCAI Multi-Atlas Labeling Beyond the Cranial Vault, 2015 (Synapse syn3193805)"
    licence = "see Synapse syn3193805 (registration required)"

    def find_layout(self, src: Path) -> Path:
        candidates = [src, src / "RawData", src / "Abdomen" / "RawData"]
        root = first_existing_folder([c / "Training" / "img" for c in candidates], "Training/img", src)
        return root.parent.parent

    def label_mapping(self, layout: Path) -> LabelMapping:
        return LabelMapping.identity(BTCV_CLASSES)

    def cases(self, layout: Path) -> list[SourceCase]:
        cases = []
        for match, image in files_matching(layout / "Training" / "img", r"img(\d{4})\.nii\.gz"):
            label = layout / "Training" / "label" / f"label{match.group(1)}.nii.gz"
            if not label.is_file():
                raise UserError(f"{label}: missing (the label of {image.name})")
            cases.append(SourceCase(f"btcv_{match.group(1)}", (image,), label))
        testing = layout / "Testing" / "img"
        if testing.is_dir():
            for match, image in files_matching(testing, r"img(\d{4})\.nii\.gz"):
                cases.append(SourceCase(f"btcv_{match.group(1)}", (image,), None, test=True))
        if not cases:
            raise UserError(f"{layout / 'Training' / 'img'}: no imgNNNN.nii.gz files")
        return cases
