"""Cross-validation splits per dataset: seeded, saved as JSON, the same for every model of a plan."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from textnnunet.errors import UserError
from textnnunet.utils.files import atomic_write_json, load_json

DEFAULT_NUM_FOLDS = 5


def make_splits(case_ids: list[str], num_folds: int = DEFAULT_NUM_FOLDS, seed: int = 12345) -> list[dict]:
    """K-fold splits of one dataset's cases, shuffled with a fixed seed (nnU-Net uses 12345).

    With fewer cases than folds each case is validated once and later folds reuse them cyclically,
    so every fold index still exists (tests and tiny datasets).
    """
    ids = sorted(case_ids)
    if not ids:
        raise ValueError("no cases to split")
    order = np.random.default_rng(seed).permutation(len(ids))
    shuffled = [ids[i] for i in order]
    n_groups = min(num_folds, len(ids))
    groups = [shuffled[g::n_groups] for g in range(n_groups)]
    splits = []
    for fold in range(num_folds):
        val = sorted(groups[fold % n_groups])
        train = sorted(c for c in ids if c not in set(val)) or list(val)
        splits.append({"train": train, "val": val})
    return splits


def load_or_create_splits(path: Path, case_ids_by_dataset: dict[str, list[str]], num_folds: int = DEFAULT_NUM_FOLDS,
                          seed: int = 12345) -> dict[str, list[dict]]:
    """Splits for every dataset; datasets missing from an existing file are added, existing ones never change."""
    splits = load_json(path) if Path(path).is_file() else {}
    changed = False
    for dataset, ids in case_ids_by_dataset.items():
        if dataset not in splits:
            splits[dataset] = make_splits(ids, num_folds, seed)
            changed = True
    if changed:
        atomic_write_json(path, splits)
    return splits


def parse_fold(fold: str | int) -> int | str:
    if str(fold) == "all":
        return "all"
    try:
        value = int(fold)
    except ValueError:
        raise UserError(f"fold '{fold}': expected an integer 0-{DEFAULT_NUM_FOLDS - 1} or 'all'") from None
    if value < 0:
        raise UserError(f"fold '{fold}': must not be negative")
    return value


def cases_for_fold(splits: dict[str, list[dict]], fold: int | str, datasets: list[str]) -> tuple[dict, dict]:
    """(train, val) case ids per dataset for `fold`; 'all' trains on everything and validates on nothing held out."""
    train, val = {}, {}
    for dataset in datasets:
        folds = splits[dataset]
        if fold == "all":
            everything = sorted({c for f in folds for c in f["train"] + f["val"]})
            train[dataset], val[dataset] = everything, []
            continue
        if fold >= len(folds):
            raise UserError(f"fold {fold}: the splits of {dataset} have only {len(folds)} folds (0-{len(folds) - 1})")
        train[dataset], val[dataset] = list(folds[fold]["train"]), list(folds[fold]["val"])
    return train, val
