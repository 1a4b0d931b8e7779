"""Where raw, preprocessed and results folders live.

Only the CLI calls `resolve_folders`; library code receives explicit paths, so nothing deep inside
reads the environment.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from textnnunet.errors import UserError

ENV_VARS = {"raw": "TEXTNNUNET_raw", "preprocessed": "TEXTNNUNET_preprocessed", "results": "TEXTNNUNET_results"}


@dataclass(frozen=True)
class Folders:
    raw: Path | None
    preprocessed: Path | None
    results: Path | None


def resolve_folder(kind: str, override: str | os.PathLike | None = None, required: bool = True) -> Path | None:
    """The folder for `kind` ('raw', 'preprocessed', 'results'): the override, else its env var."""
    var = ENV_VARS[kind]
    value = override if override is not None else os.environ.get(var)
    if value is None or str(value) == "":
        if required:
            raise UserError(f"{var} is not set: export {var}=/path/to/{kind} or pass --{kind} PATH")
        return None
    return Path(value).expanduser().resolve()


def resolve_folders(
    raw: str | os.PathLike | None = None,
    preprocessed: str | os.PathLike | None = None,
    results: str | os.PathLike | None = None,
    required: tuple[str, ...] = ("raw", "preprocessed", "results"),
) -> Folders:
    return Folders(
        raw=resolve_folder("raw", raw, "raw" in required),
        preprocessed=resolve_folder("preprocessed", preprocessed, "preprocessed" in required),
        results=resolve_folder("results", results, "results" in required),
    )


def joint_plans_name(dataset_ids: list[int]) -> str:
    return "TextPlans_" + "_".join(f"{i:03d}" for i in sorted(set(dataset_ids)))


# ------------------------------------------------------------------------------------------- folder layouts
# The file names of a preprocessed plan folder and of a trained model folder (documentation/contracts.md), defined
# here only: training writes them, inference, evaluation and the benchmark read them through these classes.
PLANS_FILE = "plans.json"
SPLITS_FILE = "splits_final.json"
VOCABULARY_FILE = "vocabulary.json"
TRAINING_CONFIG_FILE = "training_config.json"
LOG_FILE = "log.txt"
PROGRESS_FILE = "progress.png"
VALIDATION_FOLDER = "validation"
CHECKPOINT_FINAL = "checkpoint_final.pth"
CHECKPOINT_BEST = "checkpoint_best.pth"
CHECKPOINT_LATEST = "checkpoint_latest.pth"
CHECKPOINT_NAMES = (CHECKPOINT_FINAL, CHECKPOINT_BEST, CHECKPOINT_LATEST)
JOINT_PLANS_PREFIX = "TextPlans_"


@dataclass(frozen=True)
class PlanFolder:
    """preprocessed/<plans_name>/: plans.json, splits_final.json and one cache folder per data identifier."""

    path: Path

    @classmethod
    def find(cls, preprocessed: str | os.PathLike, plans_name: str | None = None,
             dataset_ids: list[int] | None = None) -> "PlanFolder":
        """The joint plan named `plans_name`, else the one of `dataset_ids`, else the only joint plan there is."""
        preprocessed = Path(preprocessed)
        if plans_name is None and dataset_ids:
            plans_name = joint_plans_name(dataset_ids)
        if plans_name is not None:
            folder = cls(preprocessed / plans_name)
            if not folder.plans_file.is_file():
                ids = " ".join(map(str, dataset_ids)) if dataset_ids else "<ids>"
                raise UserError(f"{folder.plans_file}: plan not found (run textnnunet_plan_and_preprocess -d {ids} "
                                "first)")
            return folder
        candidates = sorted(preprocessed.glob(f"{JOINT_PLANS_PREFIX}*/{PLANS_FILE}")) if preprocessed.is_dir() else []
        if not candidates:
            raise UserError(f"{preprocessed}: no joint plan found (run textnnunet_plan_and_preprocess -d <ids> first)")
        if len(candidates) > 1:
            names = ", ".join(c.parent.name for c in candidates)
            raise UserError(f"{preprocessed}: several joint plans ({names}); choose one with -p or -d")
        return cls(candidates[0].parent)

    @classmethod
    def find_dataset(cls, preprocessed: str | os.PathLike, dataset: int | str) -> "PlanFolder":
        """preprocessed/DatasetXXX_Name/ (the per-dataset plan) for a dataset id (1, "1", "001") or full name."""
        preprocessed = Path(preprocessed)
        text = str(dataset)
        if text.isdigit():
            pattern = f"Dataset{int(text):03d}_*"
            matches = sorted(preprocessed.glob(f"{pattern}/{PLANS_FILE}")) if preprocessed.is_dir() else []
            if len(matches) > 1:
                raise UserError(f"{preprocessed}: several folders for dataset {int(text):03d}: "
                                f"{', '.join(m.parent.name for m in matches)}")
            folder = cls(matches[0].parent if matches else preprocessed / pattern)
        else:
            folder = cls(preprocessed / text)
        if not folder.plans_file.is_file():
            raise UserError(f"{folder.plans_file}: per-dataset plan not found (run textnnunet_plan_and_preprocess "
                            f"-d {dataset})")
        return folder

    @classmethod
    def of_plans_file(cls, plans_file: str | os.PathLike) -> "PlanFolder":
        """The folder of a plans.json path, or the folder itself when given one."""
        path = Path(plans_file)
        return cls(path.parent if path.suffix == ".json" and not path.is_dir() else path)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def plans_file(self) -> Path:
        return self.path / PLANS_FILE

    @property
    def splits_file(self) -> Path:
        return self.path / SPLITS_FILE

    def cases(self, data_identifier: str) -> Path:
        """The cache folder of a configuration (one subfolder per dataset)."""
        return self.path / data_identifier


@dataclass(frozen=True)
class FoldFolder:
    """<model folder>/fold_<k>/: checkpoints, training_config.json, log.txt, progress.png, validation/."""

    path: Path

    @property
    def fold(self) -> str:
        return self.path.name[len("fold_"):]

    def checkpoint(self, name: str = CHECKPOINT_FINAL) -> Path:
        return self.path / name

    @property
    def final_checkpoint(self) -> Path:
        return self.path / CHECKPOINT_FINAL

    @property
    def latest_checkpoint(self) -> Path:
        return self.path / CHECKPOINT_LATEST

    @property
    def best_checkpoint(self) -> Path:
        return self.path / CHECKPOINT_BEST

    def has_checkpoint(self) -> bool:
        return any(self.checkpoint(n).is_file() for n in (CHECKPOINT_LATEST, CHECKPOINT_FINAL, CHECKPOINT_BEST))

    @property
    def training_config_file(self) -> Path:
        return self.path / TRAINING_CONFIG_FILE

    @property
    def log_file(self) -> Path:
        return self.path / LOG_FILE

    @property
    def progress_file(self) -> Path:
        return self.path / PROGRESS_FILE

    @property
    def validation(self) -> Path:
        return self.path / VALIDATION_FOLDER


@dataclass(frozen=True)
class ModelFolder:
    """results/<plans_name>/<configuration>[__<tag>]/: a trained model (documentation/contracts.md)."""

    path: Path

    @classmethod
    def find(cls, results: str | os.PathLike, plans: str | None = None, configuration: str = "3d_fullres",
             tag: str | None = "") -> "ModelFolder":
        """The model of plan `plans` (a plans name); without one, the only joint plan in `results` that holds a
        model of this configuration and tag."""
        results = Path(results)
        name = configuration + (f"__{tag}" if tag else "")
        if plans is not None:
            return cls(results / plans / name)
        found = sorted(p.name for p in results.glob(f"{JOINT_PLANS_PREFIX}*") if (p / name).is_dir())
        if len(found) != 1:
            raise UserError(f"{results}: need exactly one plan with a {name} model (found: {', '.join(found) or 'none'})"
                            "; use -m or --plans")
        return cls(results / found[0] / name)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def configuration(self) -> str:
        return self.path.name.split("__")[0]

    @property
    def plans_file(self) -> Path:
        return self.path / PLANS_FILE

    @property
    def vocabulary_file(self) -> Path:
        return self.path / VOCABULARY_FILE

    @property
    def splits_file(self) -> Path:
        return self.path / SPLITS_FILE

    def fold(self, fold: int | str) -> FoldFolder:
        return FoldFolder(self.path / f"fold_{fold}")

    def available_folds(self, checkpoint: str = CHECKPOINT_FINAL) -> list[str]:
        """The folds with `checkpoint`, sorted by name."""
        return sorted(p.parent.name[len("fold_"):] for p in self.path.glob(f"fold_*/{checkpoint}"))
