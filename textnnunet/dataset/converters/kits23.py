"""KiTS23 (2023 Kidney and Kidney Tumor Segmentation Challenge), as laid out by the neheller/kits23 repository.

Layout: kits23/dataset/case_XXXXX/imaging.nii.gz (fetched by the repository's download script) and
segmentation.nii.gz; labels 1 kidney, 2 tumor, 3 cyst. The kidney class covers its tumours and cysts (region syntax
"kidney": [1, 2, 3], KiTS23's own evaluation region "kidney and masses"). The test set's labels are not
public: every case with a segmentation is a training case; a case folder with an image but no segmentation goes
to imagesTs.
"""
from __future__ import annotations

import re
from pathlib import Path

from textnnunet.dataset.converters.base import DatasetConverter, LabelMapping, SourceCase
from textnnunet.errors import UserError

CASE_FOLDER = re.compile(r"case_\d{5}")
KITS23_CLASSES = {"kidney": (1, 2, 3), "kidney tumor": 2, "kidney cyst": 3}


class KiTS23Converter(DatasetConverter):
    name = "kits23"
    title = "KiTS23"
    default_dataset_name = "KiTS23"
    reference = "Heller et al., The KiTS21 Challenge, arXiv:2307.01984; https://kits-challenge.org/kits23/"
    licence = "see github.com/neheller/kits23"

    def find_layout(self, src: Path) -> Path:
        for folder in (src / "dataset", src):
            if folder.is_dir() and any(CASE_FOLDER.fullmatch(p.name) for p in folder.iterdir() if p.is_dir()):
                return folder
        raise UserError(f"{src}: no case_XXXXX folders here or in {src / 'dataset'} (expected the kits23 repository "
                        f"or its dataset folder)")

    def label_mapping(self, layout: Path) -> LabelMapping:
        return LabelMapping.identity(KITS23_CLASSES)

    def cases(self, layout: Path) -> list[SourceCase]:
        cases = []
        for folder in sorted(p for p in layout.iterdir() if p.is_dir() and CASE_FOLDER.fullmatch(p.name)):
            image, label = folder / "imaging.nii.gz", folder / "segmentation.nii.gz"
            if not image.is_file():
                raise UserError(f"{image}: missing (the kits23 repository fetches the images with "
                                f"kits23_download_data)")
            has_label = label.is_file()
            cases.append(SourceCase(folder.name, (image,), label if has_label else None, test=not has_label))
        return cases
