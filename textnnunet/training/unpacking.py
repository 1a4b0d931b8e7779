"""Unpacked case arrays: each preprocessed case's npz cache decompressed once into two .npy files beside it, which
training then memory-maps (nnU-Net's unpack_dataset, for the same reason).

A background worker that draws a case it has not cached otherwise decompresses the whole case to crop one patch:
at the GPU plan of a clinical CT (about 130 x 350 x 350 voxels) that is 0.19 s of a core per case, and the sampler's
cache (8 cases per worker) misses most of the time on datasets of more cases than that (results.md, GPU section;
perf/loader_throughput.py). A memory-mapped crop reads only the patch's pages, and the page cache is shared by the
workers.

Files, beside `<case>.npz` (owned here; the npz stays the source of truth):
    <case>.data.npy   float32 (C, Z, Y, X)
    <case>.seg.npy    the npz's seg (1, Z, Y, X)
Each is written atomically; an unpacked pair older than its npz (a re-preprocessed case) is stale and re-made.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm import tqdm

from textnnunet.errors import UserError
from textnnunet.utils.files import atomic_path


def unpacked_paths(npz_path: str | os.PathLike) -> tuple[Path, Path]:
    npz_path = Path(npz_path)
    stem = npz_path.name[: -len(".npz")] if npz_path.name.endswith(".npz") else npz_path.name
    return npz_path.with_name(f"{stem}.data.npy"), npz_path.with_name(f"{stem}.seg.npy")


def is_unpacked(npz_path: str | os.PathLike) -> bool:
    """Both .npy files exist and are not older than the npz."""
    npz_time = Path(npz_path).stat().st_mtime_ns
    return all(p.is_file() and p.stat().st_mtime_ns >= npz_time for p in unpacked_paths(npz_path))


def unpack_case(npz_path: str | os.PathLike) -> None:
    """Write the case's unpacked pair (atomically, each file) unless it is already current."""
    if is_unpacked(npz_path):
        return
    try:
        with np.load(npz_path) as npz:
            data, seg = npz["data"].astype(np.float32, copy=False), npz["seg"]
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{npz_path}: cannot read preprocessed case to unpack it ({e})") from None
    for array, target in zip((data, seg), unpacked_paths(npz_path)):
        with atomic_path(target, suffix=".npy") as tmp:
            np.save(tmp, array)


def unpack_cases(npz_paths: Iterable[str | os.PathLike], num_processes: int = 1, progress: bool = True) -> None:
    """Unpack every case not yet current, with `num_processes` processes (idempotent; safe to run concurrently)."""
    todo = [Path(p) for p in npz_paths if not is_unpacked(p)]
    if not todo:
        return
    bar = tqdm(total=len(todo), desc="unpacking cases", unit="case", disable=not progress)
    if num_processes <= 1:
        for path in todo:
            unpack_case(path)
            bar.update()
    else:
        with ProcessPoolExecutor(num_processes) as pool:
            for _ in pool.map(unpack_case, todo):
                bar.update()
    bar.close()


def load_unpacked(npz_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray] | None:
    """(data, seg) memory-mapped read-only, or None when the case is not (or no longer) unpacked."""
    if not is_unpacked(npz_path):
        return None
    data_path, seg_path = unpacked_paths(npz_path)
    try:
        return np.load(data_path, mmap_mode="r"), np.load(seg_path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise UserError(f"{data_path}: unreadable unpacked case ({e}); delete the .npy files to re-make them") from None
