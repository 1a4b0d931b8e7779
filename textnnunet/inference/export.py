"""Finding input cases and writing prediction files safely (a manifest records what we wrote)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from textnnunet.errors import UserError
from textnnunet.imageio.sitk_io import ImageGeometry, write_image
from textnnunet.utils.files import atomic_savez_compressed, atomic_write_json, load_json

IMAGE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
MANIFEST = "predictions.json"


@dataclass
class InputCase:
    case_id: str
    files: list[Path]
    problem: str | None = None  # a one-line reason this case cannot be predicted


def split_ending(name: str) -> tuple[str, str]:
    for ending in IMAGE_ENDINGS:
        if name.endswith(ending):
            return name[: -len(ending)], ending
    return name, ""


def find_input_cases(inputs: list[Path], num_channels: int) -> list[InputCase]:
    """Cases from a folder (<case>_<cccc><ending>) or from single files (one file = one single-channel case)."""
    if len(inputs) == 1 and inputs[0].is_dir():
        return _cases_in_folder(inputs[0], num_channels)
    cases = []
    for path in inputs:
        if not path.is_file():
            raise UserError(f"{path}: input file not found")
        stem, ending = split_ending(path.name)
        if not ending:
            raise UserError(f"{path}: not an image file ({', '.join(IMAGE_ENDINGS)})")
        if num_channels != 1:
            raise UserError(f"{path}: the model needs {num_channels} channels; give a folder of <case>_<cccc> files")
        cases.append(InputCase(re.sub(r"_0000$", "", stem), [path]))
    return cases


def _cases_in_folder(folder: Path, num_channels: int) -> list[InputCase]:
    pattern = re.compile(r"(.+)_(\d{4})$")
    found: dict[str, dict[int, Path]] = {}
    for p in sorted(folder.iterdir()):
        stem, ending = split_ending(p.name)
        m = pattern.match(stem) if ending else None
        if m:
            found.setdefault(m.group(1), {})[int(m.group(2))] = p
    if not found:
        raise UserError(f"{folder}: no images named <case>_0000<ending> ({', '.join(IMAGE_ENDINGS)})")
    cases = []
    for case_id, channels in sorted(found.items()):
        missing = [c for c in range(num_channels) if c not in channels]
        problem = None
        if missing:
            problem = f"{folder / case_id}_{missing[0]:04d}: channel file missing (the model needs {num_channels})"
        cases.append(InputCase(case_id, [channels[c] for c in range(num_channels) if c in channels], problem))
    return cases


def prompt_file_part(prompt: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", prompt.strip()).strip("_").lower()


class OutputFolder:
    """Writes predictions; refuses to overwrite files it did not write unless `overwrite`."""

    def __init__(self, folder: Path, overwrite: bool = False, resolutions: dict[str, dict] | None = None):
        """`resolutions`: how each prompt was resolved (Resolution.to_json), recorded in the manifest."""
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.overwrite = overwrite
        self.manifest = load_json(self.folder / MANIFEST) if (self.folder / MANIFEST).is_file() else {"cases": {}}
        if resolutions:
            self.manifest.setdefault("resolutions", {}).update(resolutions)

    def outputs_for(self, case_id: str, prompts: list[str], combined: bool, ending: str) -> list[Path]:
        if combined:
            return [self.folder / f"{case_id}{ending}"]
        return [self.folder / f"{case_id}_{prompt_file_part(p)}{ending}" for p in prompts]

    def finished(self, case_id: str, outputs: list[Path]) -> bool:
        return case_id in self.manifest["cases"] and all(p.is_file() for p in outputs)

    def check_writable(self, outputs: list[Path]) -> str | None:
        ours = {name for entry in self.manifest["cases"].values() for name in entry["files"]}
        for p in outputs:
            if p.exists() and p.name not in ours and not self.overwrite:
                return f"{p}: exists and was not written by textnnunet_predict (pass --overwrite to replace it)"
        return None

    def write(self, case_id: str, masks: list[np.ndarray], prompts: list[str], resolved: list[str | None],
              geometry: ImageGeometry, combined: bool, ending: str, probabilities: np.ndarray | None) -> list[Path]:
        """`resolved`: the structure each prompt's mask shows (a class, or a side derived from one)."""
        outputs = self.outputs_for(case_id, prompts, combined, ending)
        if combined:
            label_map = np.zeros(geometry.shape, dtype=np.uint8)
            for value, mask in enumerate(masks, start=1):  # later prompts win where masks overlap
                label_map[mask > 0] = value
            write_image(label_map, geometry, outputs[0])
        else:
            for mask, path in zip(masks, outputs):
                write_image(mask.astype(np.uint8, copy=False), geometry, path)
        if probabilities is not None:
            prob_file = self.folder / f"{case_id}_probabilities.npz"
            atomic_savez_compressed(prob_file, probabilities=probabilities.astype(np.float16),
                                    prompts=np.array(prompts))
            outputs = outputs + [prob_file]
        self.manifest["cases"][case_id] = {
            "files": [p.name for p in outputs],
            "prompts": {p: r for p, r in zip(prompts, resolved)},
        }
        atomic_write_json(self.folder / MANIFEST, self.manifest)
        return outputs

    def write_legend(self, prompts: list[str], resolved: list[str | None]) -> None:
        atomic_write_json(self.folder / "legend.json",
                          {"labels": {str(i): p for i, p in enumerate(prompts, start=1)},
                           "resolved_classes": {p: r for p, r in zip(prompts, resolved)}})
