"""Medical Segmentation Decathlon (Task01-Task10), as downloaded from medicaldecathlon.com.

Layout: TaskNN_Name/dataset.json, imagesTr/<case>.nii.gz, labelsTr/<case>.nii.gz, imagesTs/<case>.nii.gz (no test
labels). dataset.json lists the training pairs ("training": [{"image": "./imagesTr/liver_0.nii.gz", "label": ...}])
and the test images ("test": ["./imagesTs/liver_132.nii.gz"]), declares "modality" (channel index -> name) and
"labels" (value -> name). BrainTumour and Prostate store their channels in one 4D file; they are split into
_0000.._000N files as nnU-Net does, with the channel names from "modality".
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from textnnunet.dataset.converters.base import NIFTI_GZ, DatasetConverter, LabelMapping, SourceCase
from textnnunet.errors import UserError
from textnnunet.utils.files import load_json


@dataclass(frozen=True)
class MSDTask:
    folder_name: str  # the Name of TaskNN_Name
    source_labels: dict[int, str]  # the labels of the task's dataset.json, background excluded
    classes: dict[str, int | tuple[int, ...]]  # canonical class -> label value(s)


MSD_TASKS: dict[str, MSDTask] = {task.folder_name: task for task in (
    MSDTask("BrainTumour", {1: "edema", 2: "non-enhancing tumor", 3: "enhancing tumour"},
            {"brain tumor": (2, 3), "brain tumor edema": 1, "non enhancing brain tumor": 2,
             "enhancing brain tumor": 3}),
    MSDTask("Heart", {1: "left atrium"}, {"left atrium": 1}),
    MSDTask("Liver", {1: "liver", 2: "cancer"}, {"liver": (1, 2), "liver tumor": 2}),
    MSDTask("Hippocampus", {1: "Anterior", 2: "Posterior"},
            {"hippocampus": (1, 2), "anterior hippocampus": 1, "posterior hippocampus": 2}),
    MSDTask("Prostate", {1: "PZ", 2: "TZ"},
            {"prostate": (1, 2), "prostate peripheral zone": 1, "prostate transition zone": 2}),
    MSDTask("Lung", {1: "cancer"}, {"lung tumor": 1}),
    MSDTask("Pancreas", {1: "pancreas", 2: "cancer"}, {"pancreas": (1, 2), "pancreas tumor": 2}),
    MSDTask("HepaticVessel", {1: "Vessel", 2: "Tumour"}, {"liver vessel": 1, "liver tumor": 2}),
    MSDTask("Spleen", {1: "spleen"}, {"spleen": 1}),
    MSDTask("Colon", {1: "colon cancer primaries"}, {"colon tumor": 1}),
)}


@dataclass(frozen=True)
class MSDLayout:
    root: Path
    task: MSDTask
    meta: dict


class MSDConverter(DatasetConverter):
    name = "msd"
    title = "Medical Segmentation Decathlon"
    default_dataset_name = "MSD"
    reference = "Antonelli et al., The Medical Segmentation Decathlon, Nat Commun 13, 4128 (2022)"
    licence = "CC-BY-SA 4.0"
    modalities = ()  # channel names come from the task's dataset.json

    def find_layout(self, src: Path) -> MSDLayout:
        match = re.fullmatch(r"Task\d{2}_(\w+)", src.name)
        if match is None or match.group(1) not in MSD_TASKS:
            known = ", ".join(f"Task{i + 1:02d}_{name}" for i, name in enumerate(MSD_TASKS))
            raise UserError(f"{src}: not an MSD task folder (expected one of {known})")
        task = MSD_TASKS[match.group(1)]
        meta = load_json(src / "dataset.json")
        for key in ("modality", "labels", "training"):
            if key not in meta:
                raise UserError(f"{src / 'dataset.json'}: missing key '{key}' (not an MSD dataset.json)")
        _check_source_labels(meta["labels"], task, src / "dataset.json")
        return MSDLayout(src, task, meta)

    def label_mapping(self, layout: MSDLayout) -> LabelMapping:
        return LabelMapping.identity(layout.task.classes)

    def cases(self, layout: MSDLayout) -> list[SourceCase]:
        json_path = layout.root / "dataset.json"
        cases = []
        for entry in layout.meta["training"]:
            if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
                raise UserError(f"{json_path}: training entry {entry!r} needs 'image' and 'label'")
            image = _listed_file(layout.root, entry["image"], json_path)
            cases.append(SourceCase(_case_id(image), (image,), _listed_file(layout.root, entry["label"], json_path)))
        for entry in layout.meta.get("test", []):
            image = _listed_file(layout.root, entry["image"] if isinstance(entry, dict) else entry, json_path)
            cases.append(SourceCase(_case_id(image), (image,), None, test=True))
        return cases

    def dataset_name(self, layout: MSDLayout) -> str:
        return layout.task.folder_name

    def channel_names(self, layout: MSDLayout) -> dict[str, str]:
        modality = layout.meta["modality"]
        return {str(k): str(modality[k]) for k in sorted(modality, key=int)}

    def description(self, layout: MSDLayout) -> str:
        return f"MSD {layout.root.name}: {layout.meta.get('description', '')}".strip()


def _check_source_labels(labels: dict, task: MSDTask, json_path: Path) -> None:
    """The task's dataset.json must declare the label values this converter maps (names are not compared: they
    differ in spelling between releases)."""
    try:
        found = sorted(int(k) for k in labels if int(k) != 0)
    except ValueError:
        raise UserError(f"{json_path}: 'labels' keys must be label values ('0', '1', ...)") from None
    expected = sorted(task.source_labels)
    if found != expected:
        raise UserError(f"{json_path}: labels {found} do not match MSD Task {task.folder_name} ({expected})")


def _listed_file(root: Path, relative: str, json_path: Path) -> Path:
    path = (root / str(relative)).resolve()
    if not path.is_file():
        raise UserError(f"{path}: listed in {json_path} but missing")
    if not path.name.endswith(NIFTI_GZ):
        raise UserError(f"{path}: expected a {NIFTI_GZ} file")
    return path


def _case_id(path: Path) -> str:
    return path.name[: -len(NIFTI_GZ)]
