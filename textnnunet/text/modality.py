"""Prompts that name the image's modality ("liver on T1-weighted MRI"), for models trained with
`TrainingConfig.prompt_modality`: one text vector per (intensity group, class) instead of one per class.

The intensity groups are the plan's (the joined channel names of the datasets normalised alike: CT, T1, T2, ...);
each dataset's images are prompted with its group's phrase in training, and a new image with the group it is
predicted as (`--modality`, or the plan's only group).
"""
from __future__ import annotations

from textnnunet.errors import UserError

# Channel names as nnU-Net's dataset.json writes them -> the words a radiologist would put in a request.
_PHRASES = {
    "ct": "CT",
    "mr": "MRI", "mri": "MRI",
    "t1": "T1-weighted MRI", "t1w": "T1-weighted MRI", "t1c": "contrast-enhanced T1-weighted MRI",
    "t1ce": "contrast-enhanced T1-weighted MRI", "t1gd": "contrast-enhanced T1-weighted MRI",
    "t2": "T2-weighted MRI", "t2w": "T2-weighted MRI", "flair": "FLAIR MRI",
    "adc": "ADC map", "dwi": "diffusion-weighted MRI", "pet": "PET",
}


def modality_phrase(group: str) -> str:
    """'T1' -> 'T1-weighted MRI'; a group of several channels ('T2+ADC') names each; unknown names pass through."""
    if not group or not group.strip():
        raise UserError("modality prompts: an intensity group without a name")
    parts = [p for p in group.split("+") if p.strip()]
    return " and ".join(_PHRASES.get(p.strip().lower(), p.strip()) for p in parts)


def modality_prompt(class_name: str, phrase: str) -> str:
    """The text embedded for a class on images of one modality."""
    return f"{class_name} on {phrase}"
