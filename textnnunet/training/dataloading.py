"""Batches for the training loop: sampler + augmentation, in-process or in background workers.

num_workers=0: everything runs in the calling process. The sampler's generator chooses the patches
and the augmentation (batchgenerators draws from NumPy's global generator) is seeded per batch from
(seed, batch index), so the stream is deterministic and `state()`/`set_state()` resume it exactly.

num_workers>0: batchgenerators' MultiThreadedAugmenter runs the same pipeline in worker processes.
Worker i samples with its own generator seeded from (seed, i) and augments with its own seeds;
batches come back in a fixed round-robin order, so a run is reproducible for a given seed, but the
exact mid-run state cannot be captured (start a new iterator with a new seed to resume).
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter
from batchgenerators.transforms.abstract_transforms import AbstractTransform

from textnnunet.training.sampling import PatchSampler

# Batch keys the label hierarchy adds (textnnunet.training.loss.PartialAnnotation), present only when it adds any.
HIERARCHY_KEYS = ("known_outside_of", "known_where_positive", "known_excluded_by")


def _augment(batch: dict, transforms: AbstractTransform | None) -> dict:
    """Run batchgenerators transforms; targets travel as the 'seg' key. A batch whose sampler deferred its targets
    carries the label map as "seg" instead, and its transforms build the targets (augmentation.TargetsFromLabelMap)."""
    if transforms is None:
        if "seg" in batch:
            raise ValueError("a batch with deferred targets needs transforms that build them")
        return batch
    if "seg" in batch:
        out = transforms(data=batch["data"], seg=batch["seg"], datasets=[dataset for dataset, _ in batch["keys"]])
    else:
        out = transforms(data=batch["data"], seg=batch["target"])
    augmented = {
        "data": np.ascontiguousarray(out["data"], dtype=np.float32),
        "target": np.ascontiguousarray(out["seg"], dtype=np.float32),
        "annotated": batch["annotated"],
        "keys": batch["keys"],
    }
    for key in HIERARCHY_KEYS:  # per (item, class), not per voxel: augmentation leaves them as they are
        if key in batch:
            augmented[key] = batch[key]
    return augmented


def _augmentation_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def to_torch(batch: dict, pin_memory: bool = False) -> dict:
    """NumPy batch -> torch per the batch contract (data/target float32, annotated bool)."""
    out = {
        "data": torch.from_numpy(np.ascontiguousarray(batch["data"], dtype=np.float32)),
        "target": torch.from_numpy(np.ascontiguousarray(batch["target"], dtype=np.float32)),
        "annotated": torch.from_numpy(np.asarray(batch["annotated"], dtype=bool)),
        "keys": [tuple(k) for k in batch["keys"]],
    }
    if "known_outside_of" in batch:
        out["known_outside_of"] = torch.from_numpy(np.asarray(batch["known_outside_of"], dtype=np.int64))
        out["known_where_positive"] = torch.from_numpy(np.asarray(batch["known_where_positive"], dtype=bool))
        if "known_excluded_by" in batch:
            out["known_excluded_by"] = torch.from_numpy(np.asarray(batch["known_excluded_by"], dtype=bool))
    if pin_memory and torch.cuda.is_available():
        for key in ("data", "target", "annotated"):
            out[key] = out[key].pin_memory()
    return out


class _WorkerSource:
    """What each background worker iterates: sample, then augment (in the worker)."""

    def __init__(self, sampler: PatchSampler, transforms: AbstractTransform | None, seed: int):
        self.sampler = sampler
        self.transforms = transforms
        self.seed = seed

    def set_thread_id(self, thread_id: int) -> None:
        # called by batchgenerators in each worker (which seeds NumPy itself): give every worker its
        # own sampling stream and its own Python `random` stream (used by the noise transform)
        self.sampler.reseed([self.seed, 1, thread_id])
        random.seed(_augmentation_seed(self.seed, 20_000 + thread_id))

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        return _augment(self.sampler.next_batch(), self.transforms)


class TrainingBatchIterator:
    """Infinite iterator of torch training batches. Use as a context manager or call `close()`."""

    def __init__(
        self,
        sampler: PatchSampler,
        transforms: AbstractTransform | None,
        num_workers: int = 0,
        seed: int = 0,
        pin_memory: bool = False,
        num_cached_per_worker: int = 2,
    ):
        if num_workers < 0:
            raise ValueError("num_workers must be >= 0")
        self.sampler = sampler
        self.transforms = transforms
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.pin_memory = pin_memory
        self.iteration = 0
        self._augmenter: MultiThreadedAugmenter | None = None
        self._closed = False
        if self.num_workers > 0:
            seeds = [_augmentation_seed(self.seed, 10_000 + i) for i in range(self.num_workers)]
            self._augmenter = MultiThreadedAugmenter(
                _WorkerSource(sampler, transforms, self.seed),
                None,
                self.num_workers,
                num_cached_per_queue=num_cached_per_worker,
                seeds=seeds,
                pin_memory=False,  # pinned here, after conversion to torch
            )

    # ---------------------------------------------------------------- iteration
    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._closed:
            raise RuntimeError("TrainingBatchIterator is closed")
        if self._augmenter is not None:
            batch = next(self._augmenter)
        else:
            batch = self._next_in_process()
        self.iteration += 1
        return to_torch(batch, self.pin_memory)

    def _next_in_process(self) -> dict:
        batch = self.sampler.next_batch()
        # batchgenerators draws from NumPy's global generator (and Python's `random` for the noise
        # variance): seed both per batch, then put them back
        saved_np, saved_py = np.random.get_state(), random.getstate()
        aug_seed = _augmentation_seed(self.seed, self.iteration)
        np.random.seed(aug_seed)
        random.seed(aug_seed)
        try:
            return _augment(batch, self.transforms)
        finally:
            np.random.set_state(saved_np)
            random.setstate(saved_py)

    # ---------------------------------------------------------------- resumability (num_workers=0)
    def state(self) -> dict[str, Any]:
        if self.num_workers > 0:
            raise RuntimeError("exact resume needs num_workers=0; with workers start a new iterator with a new seed")
        return {"iteration": self.iteration, "sampler": self.sampler.state()}

    def set_state(self, state: dict[str, Any]) -> None:
        if self.num_workers > 0:
            raise RuntimeError("exact resume needs num_workers=0; with workers start a new iterator with a new seed")
        self.iteration = int(state["iteration"])
        self.sampler.set_state(state["sampler"])

    # ---------------------------------------------------------------- shutdown
    def close(self) -> None:
        """Stop the background workers (if any). Safe to call twice."""
        self._closed = True
        if self._augmenter is not None:
            self._augmenter._finish()
            self._augmenter = None

    def __enter__(self) -> "TrainingBatchIterator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass  # interpreter shutdown: nothing useful left to do
