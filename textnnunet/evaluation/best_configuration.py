"""Choose the best trained configuration from cross-validation and decide its postprocessing, as nnU-Net does.

Reads what training writes per fold (`fold_k/validation/summary.json` and `validation/<dataset>/<case>.npz`
with `masks` (K, z, y, x) on the original grid and `classes`), pools the folds' validation cases (each case is
validated by exactly one fold) and compares configurations by the foreground mean of the per-class mean Dice.
Each case is judged only on the classes its dataset labels (`label_space.datasets` of the plan).

Ensembles of two configurations need probabilities, which validation stores only when asked (`textnnunet_train
... --npz`, or `--val --npz` on a finished fold, as nnU-Net): a pair is scored only when every case has
`validation/<dataset>/<case>_probabilities.npz` (`probabilities` (K, z, y, x), `classes`) in both; otherwise the
output says it was not scored.

Postprocessing (needs reference labels: raw labels or the preprocessed cache), decided per class on the pooled
CV cases and adopted only when it raises that class's mean Dice (nnU-Net's rule): keep the largest connected
component; for a lesion class ("liver tumor") whose organ is a class too, keep it inside the (post-processed)
organ, then possibly its largest component. nnU-Net's first step, the largest component of the union of all
foreground, is left out: the classes here are independent sigmoid masks (regions may overlap), not one label map.

Before the mask rules, and only when every pooled case of the chosen candidate has validation probabilities, each
class's probability threshold is chosen from THRESHOLD_GRID by its Dice on the CV cases that label it, and adopted
only when its gain over THRESHOLD is at least MIN_GAIN_IN_SE standard errors of the per-case differences (a sigmoid
mask that is confidently one coarse voxel too large gains from a higher one in every case). The mask rules are then
decided on the masks at the adopted thresholds, so the decisions compose as textnnunet_predict applies them.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from textnnunet.dataset.description import load_dataset
from textnnunet.errors import UserError
from textnnunet.evaluation.metrics import confusion_counts, dice_from_counts, label_map_to_masks
from textnnunet.evaluation.references import reference_label_map
from textnnunet.evaluation.summary import summarize
from textnnunet.imageio.sitk_io import read_label
from textnnunet.postprocessing import (
    POSTPROCESSING_FILE,
    constrain_to,
    keep_largest_component,
    organ_pairs,
    save_postprocessing,
)
from textnnunet.paths import ModelFolder, PlanFolder
from textnnunet.utils.files import atomic_write_json, atomic_write_text, load_json
from textnnunet.utils.plans import Plans

BEST_CONFIGURATION_FILE = "best_configuration.json"
INSTRUCTIONS_FILE = "inference_instructions.md"
ENSEMBLES_FOLDER = "ensembles"
THRESHOLD = 0.5  # what validation thresholds the fold probabilities with
THRESHOLD_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # per-class thresholds tried on the CV cases (holds THRESHOLD)
MIN_GAIN_IN_SE = 2.0  # a class's threshold moves only for a Dice gain of at least this many standard errors
CaseKey = tuple[str, str]  # (dataset, case_id)


# ------------------------------------------------------------------------------------------ trained models
@dataclass
class ValidationCase:
    dataset: str
    case_id: str
    fold: str
    masks_file: Path

    @property
    def probabilities_file(self) -> Path:
        return self.masks_file.with_name(f"{self.case_id}_probabilities.npz")


@dataclass
class TrainedConfiguration:
    """One model folder's pooled cross-validation outputs."""

    name: str  # the folder name: configuration[__tag]
    folder: Path
    plans: Plans
    cases: dict[CaseKey, ValidationCase]
    summary_rows: list[dict]  # metric_per_case of the folds' summary.json files

    @property
    def configuration(self) -> str:
        return self.name.split("__")[0]

    def has_probabilities(self) -> bool:
        return all(c.probabilities_file.is_file() for c in self.cases.values())


def collect_validation(model_folder: Path, folds: Sequence[str | int]) -> TrainedConfiguration:
    """The validation cases of `folds` in a model folder; every fold must have finished its validation."""
    model = ModelFolder(Path(model_folder))
    model_folder = model.path
    if not model_folder.is_dir():
        raise UserError(f"{model_folder}: model folder not found (train this configuration first)")
    plans = Plans.load(model.plans_file)
    cases: dict[CaseKey, ValidationCase] = {}
    rows: list[dict] = []
    for fold in folds:
        summary_path = model.fold(fold).validation / "summary.json"
        if not summary_path.is_file():
            raise UserError(f"{summary_path}: not found (fold {fold} has not finished training and validation; "
                            "finish it or leave it out with -f)")
        for row in load_json(summary_path).get("metric_per_case", []):
            key = (row["dataset"], row["case_id"])
            if key in cases:
                raise UserError(f"{summary_path}: case {key[1]} of {key[0]} is also validated by fold "
                                f"{cases[key].fold} (the folds must come from one set of splits)")
            npz = summary_path.parent / key[0] / f"{key[1]}.npz"
            cases[key] = ValidationCase(key[0], key[1], str(fold), npz)
            rows.append(row)
    if not cases:
        raise UserError(f"{model_folder}: the validation summaries of folds {', '.join(map(str, folds))} list no cases")
    return TrainedConfiguration(model_folder.name, model_folder, plans, cases, rows)


def _load_npz(path: Path, array: str) -> tuple[np.ndarray, list[str]]:
    if not path.is_file():
        raise UserError(f"{path}: validation output not found (re-run the fold's validation)")
    with np.load(path) as f:
        if array not in f.files or "classes" not in f.files:
            raise UserError(f"{path}: expected arrays '{array}' and 'classes'")
        return f[array], [str(c) for c in f["classes"]]


# ---------------------------------------------------------------------------------------------- candidates
@dataclass
class Candidate:
    """A configuration, or an ensemble of configurations (mean probability, thresholded)."""

    members: list[TrainedConfiguration]

    @property
    def name(self) -> str:
        return "+".join(m.name for m in self.members)

    @property
    def is_ensemble(self) -> bool:
        return len(self.members) > 1

    def lacking_probabilities(self) -> list[str]:
        """The members without validation probabilities for every CV case."""
        return [m.name for m in self.members if not m.has_probabilities()]

    def case_probabilities(self, key: CaseKey) -> dict[str, np.ndarray]:
        """{class: probability} of one case; an ensemble's is its members' mean."""
        total, classes = None, None
        for member in self.members:
            path = member.cases[key].probabilities_file
            probs, names = _load_npz(path, "probabilities")
            if classes is not None and (names != classes or probs.shape != total.shape):
                raise UserError(f"{path}: classes or shape differ from {self.members[0].cases[key].probabilities_file}")
            total = probs.astype(np.float32) if total is None else total + probs
            classes = names
        return dict(zip(classes, total / len(self.members)))

    def case_masks(self, key: CaseKey, thresholds: Mapping[str, float] | None = None) -> dict[str, np.ndarray]:
        """{class: mask} of one case: a class's probability above its threshold in `thresholds`, else THRESHOLD.
        A single configuration without thresholds reads the validation masks (its probabilities > THRESHOLD)."""
        if not self.is_ensemble and not thresholds:
            masks, classes = _load_npz(self.members[0].cases[key].masks_file, "masks")
            return {c: masks[i].astype(bool) for i, c in enumerate(classes)}
        thresholds = thresholds or {}
        return {c: p > thresholds.get(c, THRESHOLD) for c, p in self.case_probabilities(key).items()}


# ---------------------------------------------------------------------------------------------- references
@dataclass
class References:
    """Reference masks of CV cases: the raw labels when given (the honest reference), else the cached labels
    mapped back onto the original grid (what training validated against without raw data)."""

    annotated: dict[str, dict[str, list[int]]]  # dataset -> class -> label values (plans' label_space.datasets)
    raw_root: Path | None = None
    cache_folder: Path | None = None  # preprocessed/<plan>/<data_identifier>
    _raw_folders: dict = field(default_factory=dict)

    @property
    def available(self) -> bool:
        return self.raw_root is not None or (self.cache_folder is not None and self.cache_folder.is_dir())

    def describe(self) -> str:
        if self.raw_root is not None:
            return f"raw labels under {self.raw_root}"
        return f"preprocessed labels under {self.cache_folder} mapped to the original grid"

    def masks(self, dataset: str, case_id: str) -> dict[str, np.ndarray]:
        return label_map_to_masks(self._label_map(dataset, case_id), self.annotated.get(dataset, {}))

    def _label_map(self, dataset: str, case_id: str) -> np.ndarray:
        if self.raw_root is not None:
            if dataset not in self._raw_folders:
                desc = load_dataset(self.raw_root, dataset)
                self._raw_folders[dataset] = (desc.folder / "labelsTr", desc.file_ending)
            folder, ending = self._raw_folders[dataset]
            if (folder / f"{case_id}{ending}").is_file() or self.cache_folder is None:
                return read_label(folder / f"{case_id}{ending}")[0]
        from textnnunet.preprocessing.preprocessor import load_case

        _, seg, properties = load_case(self.cache_folder / dataset, case_id)
        if seg is None:
            raise UserError(f"{self.cache_folder / dataset}: case {case_id} has no cached labels")
        return reference_label_map(None, dataset, case_id, seg, properties)


def references_for(trained: TrainedConfiguration, raw_root: Path | None, preprocessed_root: Path | None
                   ) -> References:
    plans = trained.plans
    cache = None
    if preprocessed_root is not None:
        cache = PlanFolder(Path(preprocessed_root) / plans.plans_name).cases(
            plans.configuration(trained.configuration).data_identifier)
    return References(plans.label_space.datasets, Path(raw_root) if raw_root else None, cache)


# ------------------------------------------------------------------------------------------------- scoring
def dice(reference: np.ndarray, prediction: np.ndarray) -> float:
    counts = confusion_counts(reference, prediction)
    return dice_from_counts(counts["TP"], counts["FP"], counts["FN"])


def _cv_block(rows: Sequence[Mapping]) -> dict:
    """Per-class mean Dice and the foreground mean over pooled CV cases (NaN-ignoring, as the summaries)."""
    summary = summarize([{"case_id": r["case_id"], "dataset": r["dataset"],
                          "metrics": {c: {"Dice": m["Dice"]} for c, m in r["metrics"].items()}} for r in rows])
    return {"num_cases": summary["num_cases"],
            "foreground_mean_dice": summary["foreground_mean"].get("Dice", float("nan")),
            "dice_per_class": {c: m["Dice"] for c, m in summary["mean"].items()}}


def score_candidate(candidate: Candidate, keys: Sequence[CaseKey], references: References) -> list[dict]:
    """Per-case Dice of every annotated class (rows in the shape of summary.json's metric_per_case)."""
    rows = []
    for dataset, case_id in keys:
        reference = references.masks(dataset, case_id)
        predicted = candidate.case_masks((dataset, case_id))
        missing = [c for c in reference if c not in predicted]
        if missing:
            raise UserError(f"{candidate.name}: validation of {case_id} ({dataset}) lacks class(es) "
                            f"{', '.join(missing)}")
        rows.append({"case_id": case_id, "dataset": dataset,
                     "metrics": {c: {"Dice": dice(ref, predicted[c])} for c, ref in reference.items()}})
    return rows


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _better(after: float, before: float) -> bool:
    """nnU-Net adopts a postprocessing step only for a strict improvement; NaN (nothing judged) never improves."""
    return not math.isnan(after) and (math.isnan(before) or after > before)


# ------------------------------------------------------------------------------------------ postprocessing
def determine_thresholds(candidate: Candidate, keys: Sequence[CaseKey], references: References,
                         grid: Sequence[float] = THRESHOLD_GRID, min_gain_in_se: float = MIN_GAIN_IN_SE) -> dict:
    """Per class, its mean Dice at every `grid` threshold over the pooled CV cases that label it (a case with an
    empty reference and an empty mask counts 1, `_agreement`), and the adopted thresholds (`_best_threshold`), from
    one pass over the cases' probabilities.

    Returns {"dice_per_threshold": {class: {threshold: mean Dice}}, "gain_per_threshold": {class: {threshold:
    threshold_gains entry}}, "adopted": {class: threshold}, "before":
    the CV block at THRESHOLD (what the candidate scores without postprocessing)}.
    """
    per_case = []
    for dataset, case_id in keys:
        reference = references.masks(dataset, case_id)
        probabilities = candidate.case_probabilities((dataset, case_id))
        per_case.append({"case_id": case_id, "dataset": dataset,
                         "dice": {c: {t: _agreement(ref, _class_probability(probabilities, c, dataset, case_id) > t)
                                      for t in grid}
                                  for c, ref in reference.items()}})
    labelled = dict.fromkeys(c for row in per_case for c in row["dice"])
    values = {c: {t: [r["dice"][c][t] for r in per_case if c in r["dice"]] for t in grid} for c in labelled}
    means = {c: {t: _mean(v) for t, v in by_t.items()} for c, by_t in values.items()}
    adopted = {c: t for c, by_t in values.items() if (t := _best_threshold(by_t, min_gain_in_se)) != THRESHOLD}
    at_default = [{"case_id": r["case_id"], "dataset": r["dataset"],
                   "metrics": {c: {"Dice": d[THRESHOLD]} for c, d in r["dice"].items()}} for r in per_case]
    return {"dice_per_threshold": means, "gain_per_threshold": {c: threshold_gains(v) for c, v in values.items()},
            "adopted": adopted, "before": _cv_block(at_default)}


def _agreement(reference: np.ndarray, mask: np.ndarray) -> float:
    """Dice, with a case whose reference and mask are both empty counted as full agreement (1): as NaN it would drop
    out of the comparison, and a lower threshold that puts false positives into such a case would go unpenalised."""
    value = dice(reference, mask)
    return 1.0 if math.isnan(value) else value


def _class_probability(probabilities: Mapping[str, np.ndarray], name: str, dataset: str, case_id: str) -> np.ndarray:
    if name not in probabilities:
        raise UserError(f"{dataset}/{case_id}: the validation probabilities hold no '{name}' "
                        f"(they hold {', '.join(probabilities)}); re-run the fold's validation with --val --npz")
    return probabilities[name]


def _best_threshold(per_case_dice: Mapping[float, Sequence[float]], min_gain_in_se: float = MIN_GAIN_IN_SE
                    ) -> float:
    """The threshold whose mean per-case gain in Dice over THRESHOLD is largest among those whose gain is at least
    `min_gain_in_se` standard errors of the paired per-case differences (at least two cases); THRESHOLD if none. Of
    equal gains the threshold nearest THRESHOLD (then the lower). A threshold is a continuous knob tried at several
    values on a few CV cases: a strict improvement of the mean alone adopted noise (a kidney moved to 0.4 for a mean
    gain of 0.001, which doubled its FP on the test set), while an organ drawn a voxel too large gains in every case.
    """
    best, best_gain = THRESHOLD, 0.0
    gains = threshold_gains(per_case_dice)
    for t in sorted(gains, key=lambda t: (round(abs(t - THRESHOLD), 6), t)):  # 0.7 - 0.5 < 0.5 - 0.3 in floats
        gain, standard_error = gains[t]["gain"], gains[t]["standard_error"]
        if not math.isnan(standard_error) and gain > min_gain_in_se * standard_error and gain > best_gain:
            best, best_gain = t, gain
    return best


def threshold_gains(per_case_dice: Mapping[float, Sequence[float]]) -> dict[float, dict]:
    """Per threshold other than THRESHOLD: the mean per-case Dice gain over THRESHOLD, its standard error (NaN
    with fewer than two cases) and the number of cases, what `_best_threshold` weighs (and the results record)."""
    base = np.asarray(per_case_dice[THRESHOLD], dtype=float)
    out = {}
    for t, values in per_case_dice.items():
        if t == THRESHOLD:
            continue
        difference = np.asarray(values, dtype=float) - base
        difference = difference[np.isfinite(difference)]
        standard_error = (float(difference.std(ddof=1)) / math.sqrt(difference.size) if difference.size >= 2
                          else math.nan)
        out[t] = {"gain": float(difference.mean()) if difference.size else math.nan,
                  "standard_error": standard_error, "cases": int(difference.size)}
    return out


def determine_postprocessing(candidate: Candidate, keys: Sequence[CaseKey], references: References,
                             classes: Sequence[str], thresholds: Mapping[str, float] | None = None) -> dict:
    """Rules for `candidate` and the per-case Dice before/after them, from one pass over the CV cases.

    `thresholds`: per-class thresholds already adopted (`determine_thresholds`); the masks are made with them and
    the mask rules decided on those masks, as they will be applied; the rules then hold them under "threshold".
    Every variant's Dice is computed per case (largest component, organ constraint with the raw and with the
    largest-component organ, both together), so decisions need no second pass: organs first, then lesions
    given the organ's decision, each adopted only if it raises the class's mean Dice.
    """
    pairs = {lesion: organ for lesion, organ in organ_pairs(classes).items() if organ not in organ_pairs(classes)}
    variants: dict[str, dict[str, list[float]]] = {c: {} for c in classes}  # class -> variant -> per-case Dice
    before_rows = []
    for dataset, case_id in keys:
        scores = _variant_scores(references.masks(dataset, case_id),
                                 candidate.case_masks((dataset, case_id), thresholds), pairs)
        for name, found in scores.items():
            for variant, value in found.items():
                variants.setdefault(name, {}).setdefault(variant, []).append(value)
        before_rows.append({"case_id": case_id, "dataset": dataset, "scores": scores})

    rules = {"largest_component": [], "constrain_to_organ": {}}
    if thresholds is not None:  # absent when not decided: postprocessing.json then reads as before thresholds
        rules = {"threshold": dict(thresholds), **rules}
    decisions, chosen = {}, {}
    for name in sorted(variants, key=lambda c: c in pairs):  # organs before their lesions
        if not variants[name]:
            continue
        means = {v: _mean(vals) for v, vals in variants[name].items()}
        current, steps = "none", {}
        organ_variant = "organ_largest" if pairs.get(name) in rules["largest_component"] else "organ"
        option = f"constrain|{organ_variant}"
        # a lesion is only judged constrained if its organ was predicted in every case that labels the lesion
        if name in pairs and len(variants[name].get(option, [])) == len(variants[name]["none"]):
            steps["constrain_to_organ"] = _step(means[current], means[option], organ=pairs[name])
            if steps["constrain_to_organ"]["applied"]:
                current = option
                rules["constrain_to_organ"][name] = pairs[name]
        option = "largest" if current == "none" else current.replace("constrain|", "constrain+largest|")
        steps["largest_component"] = _step(means[current], means[option])
        if steps["largest_component"]["applied"]:
            current = option
            rules["largest_component"].append(name)
        decisions[name], chosen[name] = steps, current

    def rows_for(pick) -> list[dict]:
        return [{"case_id": r["case_id"], "dataset": r["dataset"],
                 "metrics": {c: {"Dice": s[pick(c)]} for c, s in r["scores"].items()}} for r in before_rows]

    return {"rules": rules, "decisions": decisions, "before": _cv_block(rows_for(lambda c: "none")),
            "after": _cv_block(rows_for(lambda c: chosen[c]))}


def _variant_scores(reference: Mapping[str, np.ndarray], predicted: Mapping[str, np.ndarray],
                    pairs: Mapping[str, str]) -> dict[str, dict[str, float]]:
    """Dice of every postprocessing variant of every class one case labels."""
    largest: dict[str, np.ndarray] = {}

    def lcc(name: str) -> np.ndarray:
        if name not in largest:
            largest[name] = keep_largest_component(predicted[name])
        return largest[name]

    scores = {}
    for name, ref in reference.items():
        found = {"none": dice(ref, predicted[name]), "largest": dice(ref, lcc(name))}
        organ = pairs.get(name)
        if organ in predicted:
            for organ_variant, organ_mask in (("organ", predicted[organ]), ("organ_largest", lcc(organ))):
                inside = constrain_to(predicted[name], organ_mask)
                found[f"constrain|{organ_variant}"] = dice(ref, inside)
                found[f"constrain+largest|{organ_variant}"] = dice(ref, keep_largest_component(inside))
        scores[name] = found
    return scores


def _step(before: float, after: float, **extra) -> dict:
    return {**extra, "dice_before": before, "dice_after": after, "applied": _better(after, before)}


# ------------------------------------------------------------------------------------------------ the search
def find_best_configuration(results_root: str | Path, plans_name: str, configurations: Sequence[str],
                            folds: Sequence[str | int] = (0, 1, 2, 3, 4), raw_root: str | Path | None = None,
                            preprocessed_root: str | Path | None = None, allow_ensembles: bool = True,
                            write: bool = True, decide_thresholds: bool = True,
                            threshold_min_gain_se: float = MIN_GAIN_IN_SE) -> dict:
    """Compare `configurations` (model folder names under results/<plans_name>, `configuration[__tag]`) by
    pooled cross-validation Dice, try pairwise ensembles where probabilities exist, choose the best, decide its
    postprocessing (when references are available; per-class thresholds too when `decide_thresholds` and the
    best has validation probabilities; `threshold_min_gain_se`: `_best_threshold`'s bar) and write best_configuration.json, inference_instructions.md and
    postprocessing.json. Returns what best_configuration.json holds.
    """
    plan_folder = Path(results_root) / plans_name
    if not plan_folder.is_dir():
        raise UserError(f"{plan_folder}: no trained models for plan {plans_name}")
    if not configurations:
        raise UserError("no configurations given (e.g. -c 3d_fullres 2d)")
    folds = [str(f) for f in folds]
    trained = [collect_validation(plan_folder / name, folds) for name in dict.fromkeys(configurations)]
    keys = sorted(trained[0].cases)
    for t in trained[1:]:
        if sorted(t.cases) != keys:
            raise UserError(f"{t.folder}: validates other cases than {trained[0].folder} (train both with the "
                            "same plan, splits and folds)")
    references = references_for(trained[0], raw_root, preprocessed_root)

    result: dict = {"plans_name": plans_name, "folds": folds, "num_cv_cases": len(keys),
                    "references": references.describe() if references.available else None,
                    "configurations": {}, "ensembles": []}
    candidates: dict[str, tuple[Candidate, float]] = {}
    for t in trained:
        if references.available:
            block = _cv_block(score_candidate(Candidate([t]), keys, references))
            source = "validation masks scored against the references"
        else:
            block, source = _cv_block(t.summary_rows), "the folds' validation/summary.json"
        result["configurations"][t.name] = {"model_folder": str(t.folder), "scored_from": source, **block}
        candidates[t.name] = (Candidate([t]), block["foreground_mean_dice"])
    if allow_ensembles:
        for pair in itertools.combinations(trained, 2):
            candidate = Candidate(list(pair))
            entry = _score_ensemble(candidate, keys, references)
            result["ensembles"].append(entry)
            if entry["scored"]:
                candidates[candidate.name] = (candidate, entry["foreground_mean_dice"])

    # the first of equally good candidates wins: single configurations are listed before ensembles
    best, score = max(candidates.values(), key=lambda cs: -math.inf if math.isnan(cs[1]) else cs[1])
    result["best"] = {"name": best.name, "members": [m.name for m in best.members],
                      "model_folders": [str(m.folder) for m in best.members], "foreground_mean_dice": score}
    result["postprocessing"] = _postprocessing_entry(best, keys, references, plan_folder, write, decide_thresholds,
                                                     threshold_min_gain_se)
    if write:
        atomic_write_json(plan_folder / BEST_CONFIGURATION_FILE, result)
        atomic_write_text(plan_folder / INSTRUCTIONS_FILE, inference_instructions(result))
    return result


def _score_ensemble(candidate: Candidate, keys: Sequence[CaseKey], references: References) -> dict:
    entry = {"name": candidate.name, "members": [m.name for m in candidate.members]}
    lacking = candidate.lacking_probabilities()
    if lacking:
        return {**entry, "scored": False, "reason": _no_probabilities(lacking, "an ensemble")}
    if not references.available:
        return {**entry, "scored": False, "reason": "no reference labels (give the raw or preprocessed folder)"}
    return {**entry, "scored": True, **_cv_block(score_candidate(candidate, keys, references))}


def _no_probabilities(names: Sequence[str], what: str) -> str:
    return (f"no validation probabilities for {', '.join(names)}: {what} needs "
            "validation/<dataset>/<case>_probabilities.npz for every CV case (train with --npz, or re-run a "
            "finished fold's validation with textnnunet_train CONFIGURATION FOLD --val --npz)")


def _postprocessing_entry(best: Candidate, keys: Sequence[CaseKey], references: References, plan_folder: Path,
                          write: bool, decide_thresholds: bool = True,
                          threshold_min_gain_se: float = MIN_GAIN_IN_SE) -> dict:
    if not references.available:
        return {"determined": False,
                "reason": "no reference labels (give the raw or preprocessed folder); no postprocessing.json written"}
    classes = best.members[0].plans.label_space.class_names
    thresholds, before = _threshold_entry(best, keys, references, decide_thresholds, threshold_min_gain_se)
    found = determine_postprocessing(best, keys, references, classes, thresholds.get("adopted"))
    before = before or found["before"]  # the CV Dice at THRESHOLD, before any postprocessing
    folder = best.members[0].folder if not best.is_ensemble else plan_folder / ENSEMBLES_FOLDER / best.name
    path = folder / POSTPROCESSING_FILE
    if write:
        save_postprocessing(path, found["rules"])
    return {"determined": True, "file": str(path), "rules": found["rules"], "thresholds": thresholds,
            "decisions": found["decisions"],
            "foreground_mean_dice_before": before["foreground_mean_dice"],
            "foreground_mean_dice_after": found["after"]["foreground_mean_dice"],
            "dice_per_class_before": before["dice_per_class"],
            "dice_per_class_after": found["after"]["dice_per_class"]}


def _threshold_entry(best: Candidate, keys: Sequence[CaseKey], references: References, decide: bool,
                     min_gain_in_se: float = MIN_GAIN_IN_SE) -> tuple[dict, dict | None]:
    """The results' "thresholds" entry (the mean Dice at every grid threshold, or why they were not decided)
    and, when decided, the CV block at THRESHOLD."""
    if not decide:
        return {"decided": False, "reason": "switched off (--no_thresholds)"}, None
    lacking = best.lacking_probabilities()
    if lacking:
        return {"decided": False, "reason": _no_probabilities(lacking, "deciding per-class thresholds")}, None
    found = determine_thresholds(best, keys, references, min_gain_in_se=min_gain_in_se)
    return {"decided": True, "grid": list(THRESHOLD_GRID), "min_gain_in_se": min_gain_in_se, "adopted": found["adopted"],
            "dice_per_threshold": {c: {f"{t:g}": d for t, d in means.items()}  # JSON keys are strings
                                   for c, means in found["dice_per_threshold"].items()},
            "gain_per_threshold": {c: {f"{t:g}": g for t, g in gains.items()}
                                   for c, gains in found["gain_per_threshold"].items()}}, found["before"]


# ------------------------------------------------------------------------------------------------- report
def _fmt(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def _threshold_lines(entry: Mapping | None) -> list[str]:
    """The per-class thresholds' part of inference_instructions.md: why each was (not) adopted."""
    if entry is None:
        return []
    if not entry["decided"]:
        return [f"Per-class thresholds were not decided: {entry['reason']}.", ""]
    grid = [f"{t:g}" for t in entry["grid"]]
    bar = entry.get("min_gain_in_se", MIN_GAIN_IN_SE)
    lines = [f"Per-class thresholds: CV mean Dice at each; one is adopted only when its gain over {THRESHOLD} is "
             f"at least {bar:g} standard errors of the per-case differences.", "",
             f"| class | {' | '.join(grid)} | adopted |", "|---" * (len(grid) + 2) + "|"]
    for name, means in entry["dice_per_threshold"].items():
        lines.append(f"| {name} | {' | '.join(_fmt(means[t]) for t in grid)} "
                     f"| {entry['adopted'].get(name, THRESHOLD):g} |")
    return lines + [""]


def inference_instructions(result: Mapping) -> str:
    """inference_instructions.md: how to predict with the chosen configuration, and the numbers behind it."""
    best, pp = result["best"], result["postprocessing"]
    folds = " ".join(result["folds"])
    pp_flag = f" --postprocessing {pp['file']}" if pp.get("determined") else ""
    lines = [f"# Inference instructions: {result['plans_name']}", "",
             f"Best: **{best['name']}**, cross-validation foreground mean Dice {_fmt(best['foreground_mean_dice'])} "
             f"over {result['num_cv_cases']} case(s) of folds {folds}.", "", "## Predict", "", "```bash"]
    if len(best["members"]) == 1:
        lines.append(f"textnnunet_predict -i INPUT_FOLDER -o OUTPUT_FOLDER -m {best['model_folders'][0]} -f {folds} "
                     f"-p PROMPT [PROMPT ...]{pp_flag}")
    else:
        outs = []
        for member, folder in zip(best["members"], best["model_folders"]):
            outs.append(f"OUTPUT_FOLDER_{member}")
            lines.append(f"textnnunet_predict -i INPUT_FOLDER -o {outs[-1]} -m {folder} -f {folds} "
                         "-p PROMPT [PROMPT ...] --save_probabilities")
        lines.append(f"textnnunet_ensemble -i {' '.join(outs)} -o OUTPUT_FOLDER{pp_flag}")
    lines += ["```", ""]
    if pp.get("determined"):
        rules = pp["rules"]
        thresholds = ", ".join(f"{k} {v:g}" for k, v in rules.get("threshold", {}).items()) or f"{THRESHOLD} for all"
        kept = ", ".join(rules["largest_component"]) or "none"
        inside = ", ".join(f"{k} inside {v}" for k, v in rules["constrain_to_organ"].items()) or "none"
        lines += [f"Postprocessing ({pp['file']}): thresholds: {thresholds}; largest component for {kept}; "
                  f"organ constraint: {inside}.", "", *_threshold_lines(pp.get("thresholds")),
                  "| class | CV Dice | after postprocessing |", "|---|---|---|"]
        for name, value in pp["dice_per_class_before"].items():
            lines.append(f"| {name} | {_fmt(value)} | {_fmt(pp['dice_per_class_after'].get(name))} |")
        lines.append(f"| **foreground mean** | {_fmt(pp['foreground_mean_dice_before'])} "
                     f"| {_fmt(pp['foreground_mean_dice_after'])} |")
    else:
        lines.append(f"Postprocessing was not determined: {pp['reason']}.")
    lines += ["", "## Configurations compared", "", "| model | CV foreground mean Dice | scored from |",
              "|---|---|---|"]
    for name, entry in result["configurations"].items():
        lines.append(f"| {name} | {_fmt(entry['foreground_mean_dice'])} | {entry['scored_from']} |")
    for entry in result["ensembles"]:
        if entry["scored"]:
            lines.append(f"| {entry['name']} (ensemble) | {_fmt(entry['foreground_mean_dice'])} "
                         f"| mean validation probability > {THRESHOLD} |")
        else:
            lines.append(f"| {entry['name']} (ensemble) | not scored | {entry['reason']} |")
    return "\n".join(lines) + "\n"
