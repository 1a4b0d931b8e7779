"""Predicting a whole folder: preprocessing ahead in background threads, export behind, bad cases reported."""
from __future__ import annotations

import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from textnnunet.errors import UserError
from textnnunet.inference.export import InputCase, OutputFolder, find_input_cases, split_ending
from textnnunet.inference.predictor import TextPredictor, geometry_from_properties
from textnnunet.postprocessing import (
    class_thresholds,
    postprocess_masks,
    skipped_constraints,
    threshold_probabilities,
)
from textnnunet.preprocessing.preprocessor import restore_masks, restore_to_original
from textnnunet.text.prompts import describe_resolution


def print_resolutions(resolutions, stream=None) -> None:
    """One line per prompt: the decision as textnnunet_embed_prompts shows it (textnnunet.text.prompts)."""
    stream = stream or sys.stdout  # looked up per call: a default bound at import outlives a replaced sys.stdout
    for r in resolutions:
        print(describe_resolution(r), file=stream)


def predict_cases(predictor: TextPredictor, inputs: list[Path], output: Path, prompts: list[str],
                  combined: bool = False, save_probabilities: bool = False, resume: bool = False,
                  overwrite: bool = False, num_preprocess: int = 1, num_export: int = 1, verbose: bool = True,
                  postprocessing: dict | None = None) -> int:
    """Predict every input case; returns the number of cases that failed (each reported on one line).

    `postprocessing`: rules of a postprocessing.json: its per-class thresholds make the masks of prompts that
    resolve to a trained class (other prompts: the settings' threshold), then its mask rules apply; saved
    probabilities are left as predicted.
    """
    resolutions = predictor.resolve_prompts(prompts)
    if verbose:
        print_resolutions(resolutions)
    heads = predictor.heads_for(resolutions)
    resolved = [r.class_name for r in resolutions]  # the trained classes asked (post-processing rules name these)
    structures = [r.structure for r in resolutions]  # what each output shows ('left kidney' derived from 'kidney')
    thresholds = class_thresholds(postprocessing, resolved, predictor.settings.threshold)
    if postprocessing is not None and verbose:
        for note in skipped_constraints(postprocessing, resolved):
            print(f"postprocessing: {note}")
    cases = find_input_cases(inputs, predictor.plans.num_channels)
    out = OutputFolder(output, overwrite=overwrite, resolutions={r.prompt: r.to_json() for r in resolutions})
    if combined:
        out.write_legend(prompts, structures)
    todo, failures = [], 0
    for case in cases:
        ending = split_ending(case.files[0].name)[1] if case.files else ".nii.gz"
        outputs = out.outputs_for(case.case_id, prompts, combined, ending)
        if case.problem:
            failures += _report(case.case_id, case.problem)
        elif resume and out.finished(case.case_id, outputs):
            continue
        elif (problem := out.check_writable(outputs)) is not None:
            failures += _report(case.case_id, problem)
        else:
            todo.append((case, ending))

    def load(case: InputCase):
        return predictor.preprocess(case.files)

    def export(case_id, probs, properties, ending):
        # Masks class by class, thresholded while resampled; full-resolution float maps only when they are saved.
        original = restore_to_original(probs, properties) if save_probabilities else None
        masks = (restore_masks(probs, properties, thresholds) if original is None
                 else threshold_probabilities(original, thresholds))
        if postprocessing is not None:
            masks = postprocess_masks(masks, resolved, postprocessing)[0]
        out.write(case_id, masks, prompts, structures, geometry_from_properties(properties), combined, ending,
                  original if save_probabilities else None)

    with ThreadPoolExecutor(max(1, num_preprocess)) as readers, ThreadPoolExecutor(max(1, num_export)) as writers:
        pending: list[Future] = [readers.submit(load, case) for case, _ in todo]
        exports: list[tuple[str, Future]] = []
        for (case, ending), future in tqdm(list(zip(todo, pending)), desc="predicting", disable=not verbose):
            try:
                data, properties = future.result()
                probs = predictor.predict_prompts_preprocessed(data, resolutions, heads, thresholds)
            except UserError as e:
                failures += _report(case.case_id, str(e))
                continue
            exports.append((case.case_id, writers.submit(export, case.case_id, probs, properties, ending)))
        for case_id, future in exports:
            try:
                future.result()
            except UserError as e:
                failures += _report(case_id, str(e))
    if verbose:
        print(f"{len(todo) - failures if len(todo) >= failures else 0} case(s) written to {output}"
              + (f", {failures} failed" if failures else ""))
    return failures


def _report(case_id: str, message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1
