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
