"""A genuine nnU-Net v2 next to ours: read (or run) its predictions and score them with the benchmark's evaluation.

nnU-Net v2 leaves a trained model in `<nnUNet_results>/DatasetXXX_Name/<Trainer>__<Plans>__<configuration>/`:
`dataset.json` and `plans.json` (its copies of the raw dataset's description and of its plan) and, per fold,
`fold_<k>/checkpoint_final.pth` and `fold_<k>/validation/<case><file_ending>`, the label maps it predicted for its
held-out cases at the end of training, in each case's original geometry.

The benchmark scores those label maps on the held-out cases of *our* split (the cases the universal model and our
baseline are judged on; nnU-Net's own split must hold out the same ones), and on a fully labelled test set it reads
the model's predictions from a folder or runs `nnUNetv2_predict_from_modelfolder`. A label map becomes class masks
through the model's dataset.json labels (region syntax: "liver": [1, 2]); the reference through the raw dataset's;
both go through `score_cases`, the evaluation every model of the benchmark gets.
"""
from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from textnnunet.benchmark.aggregate import nnunet_name
from textnnunet.benchmark.models import classes_to_judge, score_cases
from textnnunet.dataset.description import Case, DatasetDescription, load_dataset_folder, test_cases
from textnnunet.errors import UserError
from textnnunet.evaluation.metrics import label_map_to_masks
from textnnunet.imageio.sitk_io import ImageGeometry, read_geometry, read_label
from textnnunet.utils.files import load_json

KIND = "nnunet_v2"
PREDICT_EXECUTABLE = "nnUNetv2_predict_from_modelfolder"
CHECKPOINT = "checkpoint_final.pth"
PREDICT_LOG = "nnunet_predict_log.txt"
EXPECTED_LAYOUT = "<nnUNet_results>/DatasetXXX_Name/<Trainer>__<Plans>__<configuration>"


@dataclass(frozen=True)
class NnUNetModel:
    """One fold of a trained nnU-Net v2 model, checked against the raw dataset it claims to segment."""

    folder: Path
    fold: int | str
    dataset: str  # the raw dataset it was trained on (plans.json dataset_name)
    regions: Mapping[str, tuple[int, ...]]  # class name -> label values, from its dataset.json
    file_ending: str
    num_channels: int

    @property
    def name(self) -> str:
        return nnunet_name(self.dataset)

    @property
    def classes(self) -> list[str]:
        return list(self.regions)

    @property
    def fold_folder(self) -> Path:
        return self.folder / f"fold_{self.fold}"

    @property
    def validation_folder(self) -> Path:
        return self.fold_folder / "validation"

    def trainer_plans_configuration(self) -> tuple[str, str, str]:
        parts = self.folder.name.split("__")
        return (parts[0], parts[1], parts[2]) if len(parts) == 3 else ("?", "?", "?")


def _labels_text(classes: Mapping[str, Sequence[int]]) -> str:
    return "{" + ", ".join(f"{name}: {list(values)}" for name, values in classes.items()) + "}"


def open_nnunet_model(folder: str | Path, fold: int | str, raw: DatasetDescription) -> NnUNetModel:
    """The model folder's fold, after checking it was trained on `raw` with the same labels and finished training."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: nnU-Net v2 model folder not found (expected {EXPECTED_LAYOUT})")
    plans_path = folder / "plans.json"
    trained_on = load_json(plans_path).get("dataset_name")
    if trained_on != raw.name:
        raise UserError(f"{plans_path}: dataset_name is {trained_on!r}, not {raw.name!r}: this nnU-Net model was "
                        f"trained on another dataset")
    described = load_dataset_folder(folder)  # its dataset.json: a user error names the file if it is unusable
    if dict(described.classes) != dict(raw.classes):
        raise UserError(f"{folder / 'dataset.json'}: labels {_labels_text(described.classes)} differ from the raw "
                        f"dataset's {_labels_text(raw.classes)} ({raw.folder / 'dataset.json'})")
    if described.num_channels != raw.num_channels:
        raise UserError(f"{folder / 'dataset.json'}: {described.num_channels} input channel(s), the raw dataset has "
                        f"{raw.num_channels} ({raw.folder / 'dataset.json'})")
    checkpoint = folder / f"fold_{fold}" / CHECKPOINT
    if not checkpoint.is_file():
        raise UserError(f"{checkpoint}: not found (fold {fold} of this nnU-Net model has not finished training)")
    return NnUNetModel(folder, fold, raw.name, dict(described.classes), described.file_ending,
                       described.num_channels)


# ------------------------------------------------------------------------------------------ reading label maps
def _geometry_text(g: ImageGeometry) -> str:
    return (f"shape {g.shape}, spacing {tuple(round(s, 4) for s in g.spacing)}, "
            f"origin {tuple(round(o, 3) for o in g.origin)}")


def label_map_reader(model: NnUNetModel, files: Mapping[str, Path]) -> Callable[[Case, list[str]], dict]:
    """`predict(case, classes)` for `score_cases`: the case's nnU-Net label map as {class: mask} (model's labels).

    The label map must lie on the reference's grid (nnU-Net writes predictions in the input's geometry).
    """
    def read(case: Case, classes: list[str]) -> dict[str, np.ndarray]:
        path = files[case.case_id]
        label_map, geometry = read_label(path)
        reference = read_geometry(case.label_file)
        if not geometry.matches(reference):
            raise UserError(f"{path}: geometry ({_geometry_text(geometry)}) differs from the reference "
                            f"{case.label_file} ({_geometry_text(reference)})")
        return label_map_to_masks(label_map, {c: model.regions[c] for c in classes if c in model.regions})

    return read


# ------------------------------------------------------------------------------------------ validation
def validation_prediction_files(model: NnUNetModel) -> dict[str, Path]:
    """case id -> the label map nnU-Net wrote for it into fold_<k>/validation/."""
    folder = model.validation_folder
    if not folder.is_dir():
        raise UserError(f"{folder}: not found (nnU-Net writes its validation predictions at the end of training; "
                        f"`nnUNetv2_train ... --val` writes them again)")
    n = len(model.file_ending)
    return {p.name[:-n]: p for p in sorted(folder.iterdir()) if p.is_file() and p.name.endswith(model.file_ending)}


def check_validation_cases(model: NnUNetModel, case_ids: Sequence[str], splits_file: Path) -> dict[str, Path]:
    """The prediction file of each of our held-out cases; a user error when nnU-Net held out other cases."""
    found = validation_prediction_files(model)
    missing = [f"{c}{model.file_ending}" for c in case_ids if c not in found]
    extra = sorted(set(found) - set(case_ids))
    if not missing and not extra:
        return {c: found[c] for c in case_ids}
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing)} ({len(missing)} of our {len(case_ids)} held-out case(s))")
    if extra:
        problems.append(f"it held out {', '.join(extra)}, which our fold {model.fold} does not")
    raise UserError(f"{model.validation_folder}: {'; '.join(problems)}. nnU-Net's own splits "
                    f"(nnUNet_preprocessed/{model.dataset}/splits_final.json) can differ from ours ({splits_file}, "
                    f"key {model.dataset}): copy our folds there and retrain so both hold out the same cases")


def held_out_cases(raw: DatasetDescription, case_ids: Sequence[str]) -> list[Case]:
    """Our held-out cases with their raw reference label files (images are not needed to score label maps)."""
    cases = [Case(c, [], raw.folder / "labelsTr" / f"{c}{raw.file_ending}") for c in case_ids]
    missing = [str(c.label_file) for c in cases if not c.label_file.is_file()]
    if missing:
        raise UserError(f"{raw.folder / 'labelsTr'}: no reference label for held-out case(s): {', '.join(missing)}")
    return cases


def score_validation(model: NnUNetModel, raw: DatasetDescription, case_ids: Sequence[str], splits_file: Path,
                     output_folder: Path, nsd_tolerance_mm: float = 2.0) -> dict:
    """nnU-Net's validation label maps of our held-out cases, scored on the raw dataset's classes; the summary."""
    files = check_validation_cases(model, case_ids, splits_file)
    summary, _ = score_cases(held_out_cases(raw, case_ids), label_map_reader(model, files), dict(raw.classes),
                             raw.name, output_folder, nsd_tolerance_mm)
    return summary


# ------------------------------------------------------------------------------------------ test set
def find_predict_executable(given: str | Path | None = None) -> Path | None:
    """`given` (a path or a name on PATH), else nnUNetv2_predict_from_modelfolder on PATH; None when there is none."""
    if given:
        found = shutil.which(str(given))
        if found is None:
            raise UserError(f"{given}: not an executable file (--nnunet_predict_exe)")
        return Path(found).absolute()
    found = shutil.which(PREDICT_EXECUTABLE)
    return Path(found).absolute() if found else None


def predict_command(executable: Path, images_folder: Path, output_folder: Path, model: NnUNetModel, device: str,
                    use_mirroring: bool = True) -> list[str]:
    """nnUNetv2_predict_from_modelfolder on one fold of the model (device: cpu or cuda)."""
    command = [str(executable), "-i", str(images_folder), "-o", str(output_folder), "-m", str(model.folder),
               "-f", str(model.fold), "-device", device]
    return command + ([] if use_mirroring else ["--disable_tta"])


def _last_line(path: Path) -> str:
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def run_predict_command(command: list[str], log_file: Path) -> float:
    """Run nnU-Net's predictor with its output going to `log_file`; the wall time in seconds."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log_file, "w") as log:
        try:
            result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
        except OSError as e:
            raise UserError(f"{command[0]}: cannot be run ({e.strerror or e})") from None
    if result.returncode != 0:
        last = _last_line(log_file)
        raise UserError(f"{command[0]}: exited with code {result.returncode} (log: {log_file})"
                        + (f"; last line: {last}" if last else ""))
    return time.perf_counter() - start


def prediction_files_for_cases(model: NnUNetModel, cases: Sequence[Case], folder: Path) -> dict[str, Path]:
    """case id -> `<folder>/<case><file_ending>`; a user error naming every missing one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: folder of nnU-Net test predictions not found")
    files = {c.case_id: folder / f"{c.case_id}{model.file_ending}" for c in cases}
    missing = [p.name for p in files.values() if not p.is_file()]
    if missing:
        raise UserError(f"{folder}: no nnU-Net prediction for {len(missing)} labelled test case(s): "
                        f"{', '.join(missing)}")
    return files


def score_test_set(model: NnUNetModel, test: DatasetDescription, cases: Sequence[Case], output_folder: Path, *,
                   predictions: Path | None = None, executable: Path | None = None, device: str = "cpu",
                   use_mirroring: bool = True, nsd_tolerance_mm: float = 2.0) -> tuple[dict, float | None]:
    """Score the model on the test classes it labels (matched by name); (summary, predictor seconds per case).

    Reads `predictions` (a folder of nnU-Net label maps) when given, else runs `executable` on the test set's
    imagesTs into `output_folder/predictions`. Seconds per case: the predictor's wall time (start-up included)
    over the images it predicted; None for predictions made elsewhere.
    """
    judged = classes_to_judge(test.classes, model.regions, test.name, model.folder)
    seconds = None
    if predictions is None:
        if executable is None:
            raise UserError(f"{model.folder}: no test predictions given and no {PREDICT_EXECUTABLE} to make them")
        if model.num_channels != test.num_channels:
            raise UserError(f"{test.folder / 'dataset.json'}: {test.num_channels} input channel(s), the nnU-Net "
                            f"model {model.folder} takes {model.num_channels}")
        predictions = Path(output_folder) / "predictions"
        command = predict_command(executable, test.folder / "imagesTs", predictions, model, device, use_mirroring)
        elapsed = run_predict_command(command, Path(output_folder) / PREDICT_LOG)
        seconds = elapsed / max(1, len(test_cases(test)))
    files = prediction_files_for_cases(model, cases, predictions)
    summary, _ = score_cases(cases, label_map_reader(model, files), judged, test.name, output_folder,
                             nsd_tolerance_mm)
    return summary, seconds


# ------------------------------------------------------------------------------------------ what it cost
def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def parameter_count(checkpoint: Mapping) -> int | None:
    """Learned scalars in the checkpoint's network weights (normalisation running statistics excluded).

    nnU-Net's decoder keeps a reference to the encoder, so every encoder tensor appears twice in the state dict
    (`encoder.*` and `decoder.encoder.*`, one shared storage): each storage is counted once.
    """
    import torch

    weights = checkpoint.get("network_weights")
    if not weights:
        return None
    seen, total = set(), 0
    for key, value in weights.items():
        if not (torch.is_tensor(value) and value.is_floating_point()) or key.endswith(("running_mean", "running_var")):
            continue
        storage = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape))
        if storage not in seen:
            seen.add(storage)
            total += value.numel()
    return total


def training_record(checkpoint: Mapping, plans: Mapping, configuration: str, debug: Mapping) -> dict:
    """Epochs, iterations, batch size and wall time of an nnU-Net run, as far as its files tell (else None).

    Epochs and epoch times come from the checkpoint's log, iterations per epoch from fold_<k>/debug.json.
    """
    log = checkpoint.get("logging") or {}
    starts, ends = log.get("epoch_start_timestamps") or [], log.get("epoch_end_timestamps") or []
    epochs = _int_or_none(checkpoint.get("current_epoch"))
    iters_per_epoch = _int_or_none(debug.get("num_iterations_per_epoch"))
    configuration_plan = (plans.get("configurations") or {}).get(configuration) or {}
    return {"epochs": epochs, "iters_per_epoch": iters_per_epoch,
            "iterations": epochs * iters_per_epoch if epochs is not None and iters_per_epoch is not None else None,
            "batch_size": _int_or_none(configuration_plan.get("batch_size")),
            "wall_seconds": float(sum(e - s for s, e in zip(starts, ends))) if ends else None,
            "device": debug.get("device")}


def _read_checkpoint(path: Path) -> tuple[dict, str | None]:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=False), None
    except Exception as e:  # noqa: BLE001 - costs are informative; the scores do not depend on them
        return {}, f"{path}: could not be read ({type(e).__name__})"


def model_info(model: NnUNetModel) -> dict:
    """The models-table entry: kind, folder, classes, parameters, training record, trainer/plans/configuration."""
    trainer, plans_name, configuration = model.trainer_plans_configuration()
    checkpoint, problem = _read_checkpoint(model.fold_folder / CHECKPOINT)
    debug_path = model.fold_folder / "debug.json"
    try:
        debug = load_json(debug_path) if debug_path.is_file() else {}
    except UserError:  # informative only, like the checkpoint's log
        debug = {}
    info = {"kind": KIND, "folder": str(model.folder), "classes": model.classes,
            "parameters": parameter_count(checkpoint),
            "training": training_record(checkpoint, load_json(model.folder / "plans.json"), configuration, debug),
            "trainer": trainer, "plans": plans_name, "configuration": configuration, "fold": model.fold}
    if problem:
        info["note"] = problem
    return info
