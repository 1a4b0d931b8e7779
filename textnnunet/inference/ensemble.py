"""Ensembling configurations: average sigmoid probabilities, threshold, write masks in the inputs' geometry.

Two routes to the same result:
- `ensemble_prediction_folders`: folders written by `textnnunet_predict --save_probabilities` (nnU-Net's
  `nnUNetv2_ensemble`); every folder must hold the same cases with the same prompts in the same order.
- `ensemble_model_folders`: several trained model folders (e.g. 3d_fullres and 2d) predicted and averaged in
  memory, without writing per-model probabilities first.
"""
from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from textnnunet.errors import UserError
from textnnunet.imageio.sitk_io import ImageGeometry, read_label
from textnnunet.inference.export import MANIFEST, OutputFolder, find_input_cases, split_ending
from textnnunet.paths import CHECKPOINT_FINAL
from textnnunet.postprocessing import (
    class_thresholds,
    postprocess_masks,
    skipped_constraints,
    threshold_probabilities,
)
from textnnunet.utils.files import load_json

PROBABILITIES_SUFFIX = "_probabilities.npz"


@dataclass
class PredictedCase:
    """One case of a textnnunet_predict output folder, as its manifest describes it."""

    case_id: str
    folder: Path
    prompts: list[str]
    resolved: list[str | None]  # the structure each mask shows (a derived side: "left kidney")
    mask_files: list[Path]
    combined: bool
    classes: list[str | None]  # the trained class each prompt resolved to (postprocessing rules name these)

    @property
    def probabilities_file(self) -> Path:
        return self.folder / f"{self.case_id}{PROBABILITIES_SUFFIX}"

    @property
    def ending(self) -> str:
        return split_ending(self.mask_files[0].name)[1]


def read_prediction_folder(folder: Path) -> dict[str, PredictedCase]:
    """The cases a textnnunet_predict run wrote into `folder` (from its predictions.json manifest)."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise UserError(f"{folder}: no {MANIFEST} (not a folder written by textnnunet_predict)")
    cases = {}
    manifest = load_json(folder / MANIFEST)
    resolutions = manifest.get("resolutions", {})
    for case_id, entry in manifest.get("cases", {}).items():
        masks = [folder / name for name in entry["files"] if not name.endswith(".npz")]
        if not masks:
            raise UserError(f"{folder / MANIFEST}: case {case_id} lists no mask file")
        prompts = list(entry["prompts"])
        combined = masks[0].name == f"{case_id}{split_ending(masks[0].name)[1]}"
        structures = [entry["prompts"][p] for p in prompts]
        # manifests before resolutions were recorded: the structure stands for its class
        classes = [resolutions.get(p, {}).get("class", s) for p, s in zip(prompts, structures)]
        cases[case_id] = PredictedCase(case_id, folder, prompts, structures, masks, combined, classes)
    if not cases:
        raise UserError(f"{folder / MANIFEST}: lists no cases")
    return cases


def load_probabilities(path: Path) -> tuple[np.ndarray, list[str]]:
    """(probabilities float32 (K, z, y, x), prompts) from a `<case>_probabilities.npz`."""
    if not path.is_file():
        raise UserError(f"{path}: not found (predict with --save_probabilities to ensemble)")
    with np.load(path) as f:
        if "probabilities" not in f.files or "prompts" not in f.files:
            raise UserError(f"{path}: expected arrays 'probabilities' and 'prompts'")
        return f["probabilities"].astype(np.float32), [str(p) for p in f["prompts"]]


def average_probabilities(files: Sequence[Path]) -> tuple[np.ndarray, list[str]]:
    """Mean of several probability files; they must name the same prompts in the same order and agree in shape."""
    total, prompts = load_probabilities(files[0])
    for path in files[1:]:
        probs, other = load_probabilities(path)
        if other != prompts:
            raise UserError(f"{path}: prompts {other} differ from {files[0]}'s {prompts} "
                            "(ensembling needs the same prompts in the same order)")
        if probs.shape != total.shape:
            raise UserError(f"{path}: probabilities of shape {probs.shape} differ from {files[0]}'s {total.shape}")
        total += probs
    return total / len(files), prompts


def _matching_cases(folders: Sequence[Path]) -> list[list[PredictedCase]]:
    """Per case id, the case in every folder; the folders must hold the same cases."""
    listed = [read_prediction_folder(f) for f in folders]
    for folder, cases in zip(folders[1:], listed[1:]):
        missing = sorted(set(listed[0]) - set(cases)) or sorted(set(cases) - set(listed[0]))
        if missing:
            raise UserError(f"{folder}: holds other cases than {folders[0]} (e.g. {missing[0]}); "
                            "ensemble folders predicted from the same inputs")
    return [[cases[case_id] for cases in listed] for case_id in sorted(listed[0])]


def _report(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def ensemble_prediction_folders(folders: Sequence[str | Path], output: str | Path, threshold: float = 0.5,
                                postprocessing: Mapping | None = None, save_probabilities: bool = False,
                                overwrite: bool = False, verbose: bool = True) -> list[str]:
    """Average the probabilities of textnnunet_predict folders and write masks like the first folder's.

    Masks keep the geometry and layout (per prompt or combined) of the first folder's mask files. Returns the
    case ids written.
    """
    folders = [Path(f) for f in folders]
    if len(folders) < 2:
        raise UserError("ensembling needs at least two prediction folders")
    if any(Path(output).resolve() == f.resolve() for f in folders):
        raise UserError(f"{output}: the output folder must not be one of the input folders")
    groups = _matching_cases(folders)
    out = OutputFolder(Path(output), overwrite=overwrite)
    written = []
    for group in tqdm(groups, desc="ensembling", disable=not verbose):
        first = group[0]
        probs, prompts = average_probabilities([c.probabilities_file for c in group])
        if prompts != first.prompts:
            raise UserError(f"{first.probabilities_file}: prompts {prompts} differ from {MANIFEST}'s {first.prompts}")
        geometry = read_label(first.mask_files[0])[1]
        if tuple(probs.shape[1:]) != tuple(geometry.shape):
            raise UserError(f"{first.probabilities_file}: shape {probs.shape[1:]} differs from "
                            f"{first.mask_files[0].name}'s {geometry.shape}")
        _write_case(out, first.case_id, probs, prompts, first.classes, first.resolved, geometry, first.combined,
                    first.ending, threshold, postprocessing, save_probabilities)
        written.append(first.case_id)
    if verbose:
        print(f"{len(written)} case(s) ensembled from {len(folders)} folders into {output}")
    return written


def _write_case(out: OutputFolder, case_id: str, probs: np.ndarray, prompts: list[str], classes: list[str | None],
                structures: list[str | None], geometry: ImageGeometry, combined: bool, ending: str, threshold: float,
                postprocessing: Mapping | None, save_probabilities: bool) -> None:
    """`classes`: the trained class of each prompt (postprocessing.json names these, as in textnnunet_predict: a
    derived "left kidney" takes kidney's threshold); `structures`: what each mask shows, for the files' records."""
    outputs = out.outputs_for(case_id, prompts, combined, ending)
    if (problem := out.check_writable(outputs)) is not None:
        raise UserError(problem)
    if combined:
        out.write_legend(prompts, structures)
    # postprocessing.json's per-class thresholds replace `threshold` for their classes, as in textnnunet_predict
    masks = threshold_probabilities(probs, class_thresholds(postprocessing, classes, threshold))
    if postprocessing is not None:
        masks = postprocess_masks(masks, classes, postprocessing)[0]
    out.write(case_id, masks, prompts, structures, geometry, combined, ending, probs if save_probabilities else None)


def ensemble_model_folders(model_folders: Sequence[str | Path], inputs: Sequence[str | Path], output: str | Path,
                           prompts: Sequence[str], folds: Sequence[str | int] | None = None,
                           checkpoint: str = CHECKPOINT_FINAL, settings=None, combined: bool = False,
                           postprocessing: Mapping | None = None, save_probabilities: bool = False,
                           overwrite: bool = False, verbose: bool = True) -> int:
    """Predict with several model folders and average their probabilities on each input's own grid.

    Returns the number of cases that failed (each reported on one line, the others are still written).
    The first model's prompt resolution names the classes in the manifest and drives the postprocessing.
    `settings` (PredictionSettings) default: textnnunet_predict's, with each model's own similarity threshold.
    """
    from textnnunet.inference.predictor import PredictionSettings, TextPredictor
    from textnnunet.inference.run import print_resolutions

    if len(model_folders) < 2:
        raise UserError("ensembling needs at least two model folders")
    predictors = [TextPredictor.from_folder(m, folds=folds, checkpoint=checkpoint,
                                            settings=replace(settings) if settings else PredictionSettings())
                  for m in model_folders]
    if settings is None:  # as textnnunet_predict: each model's encoder sets how close a prompt must be
        for predictor in predictors:
            predictor.settings.similarity_threshold = predictor.default_similarity_threshold()
    settings = predictors[0].settings
    resolutions = [p.resolve_prompts(list(prompts)) for p in predictors]
    structures = [r.structure for r in resolutions[0]]  # what each output shows (a derived side: "left kidney")
    classes = [r.class_name for r in resolutions[0]]  # what postprocessing.json's rules name
    thresholds = class_thresholds(postprocessing, classes, predictors[0].settings.threshold)  # the sides' cut too
    if verbose:
        print_resolutions(resolutions[0])
        for note in skipped_constraints(postprocessing, classes) if postprocessing is not None else []:
            print(f"postprocessing: {note}")
    channels = {p.plans.num_channels for p in predictors}
    if len(channels) != 1:
        raise UserError(f"models {', '.join(map(str, model_folders))} expect different numbers of input channels")
    out = OutputFolder(Path(output), overwrite=overwrite)
    failures = 0
    for case in tqdm(find_input_cases([Path(i) for i in inputs], channels.pop()), desc="predicting",
                     disable=not verbose):
        if case.problem:
            failures += _report(case.problem)
            continue
        try:
            probs, geometry = None, None
            for predictor, res in zip(predictors, resolutions):
                p, geometry = predictor.predict_case_probabilities(case.files, res, thresholds)
                probs = p if probs is None else probs + p
            ending = split_ending(case.files[0].name)[1] or ".nii.gz"
            _write_case(out, case.case_id, probs / len(predictors), list(prompts), classes, structures, geometry,
                        combined, ending, settings.threshold, postprocessing, save_probabilities)
        except UserError as e:
            failures += _report(str(e))
    return failures
