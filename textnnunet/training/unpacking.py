"""Unpacked case arrays: each preprocessed case's npz cache decompressed once into two .npy files beside it, which
training then memory-maps (nnU-Net's unpack_dataset, for the same reason).

A background worker that draws a case it has not cached otherwise decompresses the whole case to crop one patch:
at the GPU plan of a clinical CT (about 130 x 350 x 350 voxels) that is 0.18 s of a core per case, and the sampler's
cache (8 cases per worker) misses most of the time on datasets of more cases than that (results.md, GPU section;
perf/loader_throughput.py). A memory-mapped crop reads only the patch's pages, and the page cache is shared by the
workers.

Files, beside `<case>.npz` (owned here; the npz stays the source of truth):
    <case>.data.npy        float32 (C, Z, Y, X)
    <case>.seg.npy         the npz's seg (1, Z, Y, X)
    <case>.unpacked.json   written last: the npz's size and modification time it was made from, and each
                           channel's minimum (the sampler's padding value, so a crop never reads the whole case)
The pair is current only while the npz's size and modification time equal the stamp's (a re-preprocessed or
copied-in npz makes it stale; it is then re-made). Every file is written atomically.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterable, NamedTuple

import numpy as np
from tqdm import tqdm

from textnnunet.errors import UserError
from textnnunet.utils.files import atomic_path, atomic_write_json, load_json


class UnpackedCase(NamedTuple):
    data: np.ndarray  # memory-mapped, read-only (C, Z, Y, X) float32
    seg: np.ndarray  # memory-mapped, read-only (1, Z, Y, X)
    pad_values: np.ndarray  # (C,) each channel's minimum


def unpacked_paths(npz_path: str | os.PathLike) -> tuple[Path, Path, Path]:
    """(data .npy, seg .npy, stamp .json) beside the npz."""
    npz_path = Path(npz_path)
    stem = npz_path.name[: -len(".npz")] if npz_path.name.endswith(".npz") else npz_path.name
    return (npz_path.with_name(f"{stem}.data.npy"), npz_path.with_name(f"{stem}.seg.npy"),
            npz_path.with_name(f"{stem}.unpacked.json"))


def _npz_identity(npz_path: Path) -> dict:
    stat = npz_path.stat()
    return {"npz_size": stat.st_size, "npz_mtime_ns": stat.st_mtime_ns}


def _current_stamp(npz_path: str | os.PathLike) -> dict | None:
    """The stamp when the unpacked pair is current for the npz as it is now, else None."""
    data_path, seg_path, stamp_path = unpacked_paths(npz_path)
    if not (stamp_path.is_file() and data_path.is_file() and seg_path.is_file()):
        return None
    try:
        stamp = load_json(stamp_path)
    except UserError:
        return None
    identity = _npz_identity(Path(npz_path))
    return stamp if all(stamp.get(k) == v for k, v in identity.items()) else None


def is_unpacked(npz_path: str | os.PathLike) -> bool:
    return _current_stamp(npz_path) is not None


def unpack_case(npz_path: str | os.PathLike) -> None:
    """Write the case's unpacked pair and, last, its stamp (each atomically), unless they are already current."""
    npz_path = Path(npz_path)
    if is_unpacked(npz_path):
        return
    identity = _npz_identity(npz_path)
    try:
        with np.load(npz_path) as npz:
            data, seg = npz["data"].astype(np.float32, copy=False), npz["seg"]
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{npz_path}: cannot read preprocessed case to unpack it ({e})") from None
    data_path, seg_path, stamp_path = unpacked_paths(npz_path)
    for array, target in ((data, data_path), (seg, seg_path)):
        with atomic_path(target, suffix=".npy") as tmp:
            np.save(tmp, array)
    atomic_write_json(stamp_path, {**identity, "pad_values": data.reshape(data.shape[0], -1).min(axis=1).tolist()})


def unpack_cases(npz_paths: Iterable[str | os.PathLike], num_processes: int = 1, progress: bool = True) -> None:
    """Unpack every case not yet current, with `num_processes` processes (idempotent). The processes are spawned,
    not forked: a trainer calls this after CUDA and its threads have started."""
    todo = [Path(p) for p in npz_paths if not is_unpacked(p)]
    if not todo:
        return
    with tqdm(total=len(todo), desc="unpacking cases", unit="case", disable=not progress) as bar:
        if num_processes <= 1:
            for path in todo:
                unpack_case(path)
                bar.update()
            return
        with ProcessPoolExecutor(num_processes, mp_context=multiprocessing.get_context("spawn")) as pool:
            for _ in pool.map(unpack_case, todo):
                bar.update()


def load_unpacked(npz_path: str | os.PathLike) -> UnpackedCase | None:
    """The case memory-mapped read-only, or None when it is not (or no longer) unpacked."""
    stamp = _current_stamp(npz_path)
    if stamp is None:
        return None
    data_path, seg_path, _ = unpacked_paths(npz_path)
    try:
        data, seg = np.load(data_path, mmap_mode="r"), np.load(seg_path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise UserError(f"{data_path}: unreadable unpacked case ({e}); delete the .npy files to re-make them") from None
    pad_values = np.asarray(stamp["pad_values"], dtype=np.float32)
    if pad_values.shape != (data.shape[0],):
        raise UserError(f"{unpacked_paths(npz_path)[2]}: pad values do not match {data_path}; delete both to re-make them")
    return UnpackedCase(data, seg, pad_values)
