"""Where a training batch's CPU time goes in one background-augmentation worker (what limited the lent H200).

On the H200 (results.md, session 8) an epoch of 55 iterations at the GPU plan's 64 x 192 x 192 patch took about
2.5x the training step alone: the GPU waited for the 12 augmentation workers. This script times, in one process and
one thread (as a worker runs), the parts of making one training batch from a preprocessed plan's cases:

- `load_case`: reading and decompressing one case's npz cache (what a sampler cache miss costs);
- `sample_cached`: the sampler's batch (case choice, crop, per-class targets, hierarchy) with every case in memory;
- `sample_default_cache`: the same with the trainer's cache (PatchSampler's default, 8 cases per worker) starting
  empty, so that misses happen as often as in training on a dataset of more cases than that;
- `sample_unpacked_default_cache`: the same sampler reading the cases unpacked into memory-mapped .npy
  (training/unpacking.py; what the trainer does with background workers), after `unpack_s` per case to unpack them;
- `augment`: the training transforms of `--augmentation` (default the trainer's) on those batches;
- `augment_deferred`: what the trainer does since session 8: the sampler's label map through the spatial transform
  and the class targets built after it (`PatchSampler.defer_targets`, augmentation.TargetsFromLabelMap), on the
  same patches (a second sampler with the same seed);
- `augment_targets_K` (with `--target_channels K ...`): the same transforms with the batch's targets replaced by K
  channels (the first classes' targets, then copies), since every class travels through the spatial transform as its
  own channel: how the augmentation's cost grows with the number of classes.

Repeats are interleaved (sample, augment, sample, ...); each part's median and min-max over its batches are kept,
with every batch's seconds, the command, versions and machine:

    OMP_NUM_THREADS=1 .venv/bin/python perf/loader_throughput.py --preprocessed PRE --plans TextPlans_001_002_003 \\
        --batches 20 --json documentation/measurements/loader_throughput_gpu_plan_clinical.json
"""
from __future__ import annotations

import argparse
import datetime
import inspect
import json
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _artefact import git_state, machine, package_versions  # noqa: E402


def _stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def _timed(fn):
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - start_wall, time.process_time() - start_cpu


def measure(preprocessed: Path, plans_name: str, configuration: str, batches: int, augmentation: str,
            seed: int, target_channels: list[int] = ()) -> dict:
    from textnnunet.paths import PlanFolder
    from textnnunet.training.augmentation import augmentation_preset, get_training_transforms
    from textnnunet.training.config import TrainingConfig
    from textnnunet.training.run import preprocessed_case_ids
    from textnnunet.training.sampling import PatchSampler, _load_case_arrays
    from textnnunet.training.trainer import collect_case_refs
    from textnnunet.training.unpacking import is_unpacked, unpack_case
    from textnnunet.utils.plans import Plans

    plans_path = preprocessed / plans_name / "plans.json"
    plans = Plans.of(json.loads(plans_path.read_text()))
    config = plans.configuration(configuration)
    cases_folder = PlanFolder.of_plans_file(plans_path).cases(config.data_identifier)
    refs = collect_case_refs(cases_folder, preprocessed_case_ids(cases_folder, plans.datasets, configuration, "?"))
    patch = [int(p) for p in config.patch_size]
    defaults = TrainingConfig()
    aug = augmentation_preset(augmentation, patch)
    initial = list(aug.initial_patch_size(patch))
    transforms = get_training_transforms(patch, aug)
    DEFAULT_CACHE = inspect.signature(PatchSampler).parameters["cache_size"].default

    def sampler(cache_size: int, use_unpacked: bool = False, defer_targets: bool = False) -> PatchSampler:
        return PatchSampler(refs, plans, configuration, patch_size=patch, initial_patch_size=initial,
                            oversample_foreground_percent=defaults.oversample_foreground,
                            rng=np.random.default_rng(seed), cache_size=cache_size,
                            use_hierarchy=defaults.label_hierarchy, use_exclusion=defaults.label_exclusion,
                            max_excluded_classes=defaults.max_excluded_classes, use_unpacked=use_unpacked,
                            defer_targets=defer_targets)

    loads = []
    for ref in refs:
        arrays, wall, cpu = _timed(lambda ref=ref: _load_case_arrays(ref))
        loads.append({"case": f"{ref.dataset}/{ref.case_id}", "wall_s": wall, "cpu_s": cpu,
                      "npz_mb": ref.npz_path.stat().st_size / 2**20, "shape": list(arrays.data.shape)})
    # Cases unpacked by an earlier run (or by training) are not re-made: their unpack time is not measured then.
    unpack_seconds = [_timed(lambda ref=ref: unpack_case(ref.npz_path))[1] for ref in refs
                      if not is_unpacked(ref.npz_path)]
    cached, default = sampler(len(refs)), sampler(DEFAULT_CACHE)
    unpacked = sampler(DEFAULT_CACHE, use_unpacked=True)
    deferred = sampler(len(refs), defer_targets=True)
    for ref in refs:
        deferred._load(ref)
    transforms_deferred = get_training_transforms(patch, aug, targets_from_labels=deferred.targets_for)
    for ref in refs:  # fill the all-cases cache before timing
        cached._load(ref)
    rounds = []
    np.random.seed(seed)  # batchgenerators' transforms draw from numpy's global generator
    for _ in range(batches):
        batch, cached_wall, _ = _timed(cached.next_batch)
        labels = deferred.next_batch()  # the same patches as `batch`, their label maps
        state, py_state = np.random.get_state(), random.getstate()
        out_deferred, deferred_wall, _ = _timed(lambda: transforms_deferred(
            data=labels["data"].copy(), seg=labels["seg"].copy(), datasets=[d for d, _ in labels["keys"]]))
        np.random.set_state(state)  # the same augmentation draws for the per-class run below
        random.setstate(py_state)
        _, default_wall, _ = _timed(default.next_batch)
        _, unpacked_wall, _ = _timed(unpacked.next_batch)
        out, aug_wall, aug_cpu = _timed(lambda: transforms(data=batch["data"].copy(), seg=batch["target"].copy()))
        same = bool(np.array_equal(out["seg"], out_deferred["seg"]) and np.array_equal(out["data"], out_deferred["data"]))
        by_k = {}
        for k in target_channels:
            reps = -(-k // batch["target"].shape[1])  # each item's own classes, repeated up to k channels
            targets = np.concatenate([batch["target"]] * reps, axis=1)[:, :k]
            by_k[f"augment_targets_{k}_s"] = _timed(
                lambda targets=targets: transforms(data=batch["data"].copy(), seg=targets.copy()))[1]
        rounds.append({**by_k, "sample_cached_s": cached_wall, "sample_default_cache_s": default_wall,
                       "sample_unpacked_default_cache_s": unpacked_wall, "augment_deferred_s": deferred_wall,
                       "deferred_batch_identical": same,
                       "augment_s": aug_wall,
                       "augment_cpu_s": aug_cpu})
    summary = {key: _stats([r[key] for r in rounds]) for key in rounds[0] if key.endswith("_s")}
    summary["deferred_batches_identical"] = f"{sum(r['deferred_batch_identical'] for r in rounds)} of {len(rounds)}"
    summary["load_case_s"] = _stats([x["wall_s"] for x in loads])
    summary["unpack_s"] = _stats(unpack_seconds) if unpack_seconds else "not measured: every case was unpacked already"
    return {"plan": {"plans": plans_name, "configuration": configuration, "patch_size": patch,
                     "initial_patch_size": initial, "batch_size": int(config.batch_size), "classes": len(plans.label_space.class_names),
                     "cases": len(refs), "sampler_default_cache_cases": DEFAULT_CACHE,
                     "augmentation": augmentation},
            "summary": summary, "loads": loads, "rounds": rounds}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preprocessed", type=Path, required=True)
    p.add_argument("--plans", default="TextPlans_001_002_003")
    p.add_argument("-c", "--configuration", default="3d_fullres")
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--augmentation", default="nnunet_regions")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target_channels", type=int, nargs="*", default=[],
                   help="also time the augmentation with this many target channels (classes)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    started = datetime.datetime.now().isoformat(timespec="seconds")
    with threadpool_limits(1):
        result = measure(args.preprocessed, args.plans, args.configuration, args.batches, args.augmentation, args.seed,
                         args.target_channels)
    record = {"what": "seconds per training batch in one worker (one thread): case loading, sampling, augmentation",
              "command": " ".join([sys.executable, *sys.argv]), "started": started,
              "finished": datetime.datetime.now().isoformat(timespec="seconds"), "git": git_state(),
              "versions": package_versions(), "machine": machine(torch_threads=torch.get_num_threads()), **result}
    s = result["summary"]
    print(json.dumps(result["plan"]))
    for key, stats in s.items():
        if isinstance(stats, dict):
            print(f"{key:>24}: median {stats['median']:.3f} s (min {stats['min']:.3f}, max {stats['max']:.3f}, "
                  f"n {stats['n']})")
        else:
            print(f"{key:>24}: {stats}")
    if args.json:
        from textnnunet.utils.files import atomic_write_json

        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.json, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
