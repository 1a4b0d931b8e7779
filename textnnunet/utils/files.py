"""Atomic file writes: write to a temporary file in the target folder, then rename over the target."""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np


@contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it is renamed to `target`, else removed.

    `suffix` keeps an extension some writers insist on (SimpleITK picks the format from it).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or ".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def as_read_back_from_json(obj: Any) -> Any:
    """`obj` as it looks after a JSON write and read (tuples become lists, numpy scalars numbers): compare
    in-memory settings with a file written earlier in this form."""
    return json.loads(json.dumps(_to_jsonable(obj)))


def atomic_write_json(target: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    with atomic_path(target) as tmp:
        with open(tmp, "w") as f:
            json.dump(_to_jsonable(obj), f, indent=indent)
            f.write("\n")


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def atomic_savez_compressed(target: str | os.PathLike, **arrays: np.ndarray) -> None:
    with atomic_path(target, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)


def load_json(path: str | os.PathLike) -> Any:
    from textnnunet.errors import UserError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
