"""Score a prediction folder against reference label maps, matching classes by name."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from textnnunet.dataset.description import normalise_class_name
from textnnunet.errors import UserError
from textnnunet.evaluation.metrics import compute_case_metrics, label_map_to_masks
from textnnunet.evaluation.summary import summarize, write_summary
from textnnunet.imageio.sitk_io import read_label
from textnnunet.inference.export import MANIFEST, prompt_file_part, split_ending
from textnnunet.utils.files import load_json


def prediction_masks_for_case(pred_folder: Path, case_id: str, ending: str, manifest: dict | None,
                              reference_classes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """{class name: mask} from textnnunet_predict outputs (per prompt or combined) or from an integer label map."""
    if manifest is None:  # e.g. nnU-Net's integer predictions with the same label values as the reference
        path = pred_folder / f"{case_id}{ending}"
        return label_map_to_masks(read_label(path)[0], reference_classes)
    entry = manifest["cases"].get(case_id)
    if entry is None:
        raise UserError(f"{pred_folder}: no prediction for case {case_id}")
    prompts = list(entry["prompts"])
    masks = {}
    combined = pred_folder / f"{case_id}{ending}"
    if combined.name in entry["files"]:
        label_map = read_label(combined)[0]
        per_prompt = {p: label_map == i for i, p in enumerate(prompts, start=1)}
    else:
        per_prompt = {p: read_label(pred_folder / f"{case_id}_{prompt_file_part(p)}{ending}")[0] > 0 for p in prompts}
    for prompt, mask in per_prompt.items():
        cls = entry["prompts"][prompt] or normalise_class_name(prompt)
        masks.setdefault(cls, mask)  # the first prompt naming a class is the one scored
    return _under_reference_names(masks, reference_classes)


def _under_reference_names(masks: dict[str, np.ndarray], reference_classes) -> dict[str, np.ndarray]:
    """Also file each mask under the reference's own name of its structure ('kidney left' for 'left kidney'):
    predictions carry canonical lexicon names, references whatever their dataset.json says."""
    from textnnunet.text.lexicon import load_lexicon

    lexicon = load_lexicon()
    for name in reference_classes:
        canonical = lexicon.canonical_name(name)
        if name not in masks and canonical in masks:
            masks[name] = masks[canonical]
    return masks


def evaluate_folders(reference_folder: Path, prediction_folder: Path, classes: dict[str, tuple[int, ...]],
                     dataset_name: str = "", nsd_tolerance_mm: float = 2.0, output_folder: Path | None = None,
                     strict: bool = True) -> dict:
    """Per-case and per-class Dice/IoU/NSD/volumes for every reference case; writes summary.json and summary.md.

    `classes`: the reference's class name -> label values (regions). Classes a prediction does not cover are
    left out of that case (a baseline only covers its own dataset's classes) unless `strict`.
    """
    reference_folder, prediction_folder = Path(reference_folder), Path(prediction_folder)
    if not reference_folder.is_dir():
        raise UserError(f"{reference_folder}: reference folder not found")
    if not prediction_folder.is_dir():
        raise UserError(f"{prediction_folder}: prediction folder not found")
    manifest = load_json(prediction_folder / MANIFEST) if (prediction_folder / MANIFEST).is_file() else None
    refs = sorted(p for p in reference_folder.iterdir() if split_ending(p.name)[1])
    if not refs:
        raise UserError(f"{reference_folder}: no reference label files")
    per_case = []
    for ref_path in tqdm(refs, desc="evaluating", leave=False):
        case_id, ending = split_ending(ref_path.name)
        label_map, geometry = read_label(ref_path)
        predicted = prediction_masks_for_case(prediction_folder, case_id, ending, manifest, classes)
        judged = {name: values for name, values in classes.items() if name in predicted}
        if not judged:
            raise UserError(f"{prediction_folder}: case {case_id} predicts none of the reference classes "
                            f"({', '.join(classes)}); predicted: {', '.join(predicted) or 'nothing'}")
        missing = sorted(set(classes) - set(judged))
        if strict and missing:
            raise UserError(f"{prediction_folder}: case {case_id} has no prediction for {', '.join(missing)}")
        reference = label_map_to_masks(label_map, judged)
        for name, mask in predicted.items():
            if name in judged and mask.shape != label_map.shape:
                raise UserError(f"{prediction_folder}: {case_id} prediction shape {mask.shape} != reference "
                                f"{label_map.shape}")
        metrics = compute_case_metrics(reference, {n: predicted[n] for n in judged}, geometry.spacing,
                                       nsd_tolerance_mm=nsd_tolerance_mm, case_id=case_id)
        per_case.append({"case_id": case_id, "dataset": dataset_name, "metrics": metrics})
    summary = summarize(per_case, nsd_tolerance_mm=nsd_tolerance_mm)
    write_summary(summary, output_folder or prediction_folder)
    return summary
