"""Writing a raw dataset folder so that an interrupted run resumes and nothing else is clobbered.

Shared by the phantom generator and the converters: each leaves a marker file with its settings in the folder while
it works and removes it after dataset.json is written, so a folder is either finished (dataset.json), unfinished by
this writer with these settings (resume), or someone else's (refuse).
"""
from __future__ import annotations

from pathlib import Path

from textnnunet.dataset.description import parse_dataset_name
from textnnunet.errors import UserError
from textnnunet.utils.files import load_json


def check_dataset_id_free(raw_root: Path, folder_name: str, dataset_id: int, advice: str) -> None:
    """Refuse when another folder of raw_root already uses this dataset id (nnU-Net finds datasets by id)."""
    for other in sorted(raw_root.iterdir()):
        if other.is_dir() and other.name != folder_name and parse_dataset_name(other.name) == dataset_id:
            raise UserError(f"{other}: dataset id {dataset_id} is already used by this folder; {advice}")


def check_resumable(folder: Path, marker_file: str, marker: dict, made_by: str, work: str) -> None:
    """Raise unless `folder` is absent, empty, or an unfinished `work` ("generation", "conversion") with `marker`."""
    if not folder.exists():
        return
    if (folder / "dataset.json").exists():
        raise UserError(f"{folder}: dataset already exists (pass --overwrite to replace it)")
    if (folder / marker_file).exists():
        found = load_json(folder / marker_file)
        if found != marker:
            raise UserError(f"{folder}: an unfinished {work} with other settings ({found}) is here; "
                            f"pass --overwrite to start again")
    elif any(folder.iterdir()):
        raise UserError(f"{folder}: folder exists without dataset.json and was not made by {made_by}; "
                        f"pass --overwrite to replace it")
