"""Training-step cost of the text-prompted heads against the same backbone with nnU-Net's softmax head
(issue 14, item 4).

One network size, patch and batch for every variant; random data; one training step as the trainer runs it
(`Trainer.train_step`): zero_grad, forward under autocast (CUDA), deep-supervision targets downsampled, loss,
backward, gradient clipping at 12, SGD (lr 1e-2, momentum 0.99, Nesterov). For each K (number of classes):

- `softmax`: the plain U-Net with a K+1-channel softmax head and nnU-Net's Dice + CE
  (`textnnunet.benchmark.baseline.softmax_dice_ce_loss`, the per-dataset baseline's loss), label-map target;
- `text_partial`: the text-prompted model (`--conditioning`, default the controller) computing only the pairs the
  batch annotates, as the trainer does without label exclusion (`--no_label_exclusion`; the default until commit
  ef85908): `UniversalStep.outputs` passes `annotated_pairs` to the network, and the masked BCE + Dice reads only
  those; the K classes are split over `--datasets` datasets (class k belongs to dataset k * D // K) and batch item
  i comes from dataset i mod D;
- `text_all`: the same model with every (image, class) pair computed and judged (a fully labelled dataset such
  as TotalSegmentator, or the naive-union ablation);
- `text_exclusion` (with `--variants`): the trainer's default since ef85908, label exclusion: the classes a
  sample's dataset does not label are known negatives on the voxels of those it labels; since session 5 at most
  `max_excluded_classes` (8) of them per item, a random subset, so the pairs computed are the annotated ones plus
  at most 8 per item; the loss is the voxel-masked one (a K x K product per voxel in `PartialAnnotation.known`).

Timing: `--warmup` unmeasured steps per variant, then `--repeats` rounds, each round running `--steps` steps of
every variant in turn (A B C A B C ...). Per variant: median seconds per step with min, max and IQR over the
rounds; ratios of medians to `softmax`, and the paired ratio per round (variant / softmax in the same round).
CPU seconds of the process (time.process_time, all threads) are recorded beside wall seconds: on shared cores they
move less with other processes' load than wall time does (but count OpenMP spin-waiting).

Memory: on the CPU each variant runs again in its own subprocess (build, warm-up, `--steps` steps) and reports its
peak resident set (VmHWM, reset just before the first step) and that peak minus the resident set just before the
first step (the step's working memory: activations, gradients, optimizer state, allocator caching). On CUDA: torch.cuda.max_memory_allocated
per variant in the timing process (reset before each block), minus what was allocated before the block.

The JSON artefact keeps the command, git commit, versions, machine, load average before and after each block and
every round. Default CPU run (K = 5, 32, 117 on the demo plan's 32 x 56 x 48 patch, batch 2, features 8-64):

    OMP_NUM_THREADS=2 .venv/bin/python perf/train_step_overhead.py \
        --json documentation/measurements/head_overhead_cpu.json

GPU (nnU-Net's 3d_fullres shape, bf16 autocast):

    python perf/train_step_overhead.py --device cuda --patch 128 128 128 --base_features 32 --max_features 320 \
        --steps 5 --warmup 5 --json documentation/measurements/head_overhead_gpu.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _artefact import git_state, machine, package_versions  # noqa: E402
from textnnunet.benchmark.baseline import softmax_dice_ce_loss
from textnnunet.experiment_planning.topology import pool_and_conv_props
from textnnunet.network.baseline import build_softmax_unet
from textnnunet.network.deep_supervision import deep_supervision_weights
from textnnunet.network.settings import memory_format_for
from textnnunet.network.universal import TextPromptedUNet
from textnnunet.training.config import TrainingConfig
from textnnunet.training.loss import (DeepSupervisionLoss, PartialAnnotation, annotated_pairs, downsample_targets,
                                      masked_bce_dice_loss)

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("softmax", "text_partial", "text_all", "text_exclusion")
DEFAULT_VARIANTS = ("softmax", "text_partial", "text_all")
LABELS = {"softmax": "softmax U-Net (nnU-Net head, K+1 channels)",
          "text_partial": "text heads, annotated pairs only (--no_label_exclusion)",
          "text_all": "text heads, all K pairs",
          "text_exclusion": "text heads, label exclusion (trainer default since ef85908; at most 8 excluded classes "
                            "per item since session 5)"}


# ------------------------------------------------------------------------------------------ setup
def architecture_for(patch, spacing, base, max_features):
    props = pool_and_conv_props(spacing, patch)
    n = len(props.strides)
    return {"conv_dims": len(patch), "n_stages": n,
            "features_per_stage": [min(base * 2**i, max_features) for i in range(n)],
            "kernel_sizes": props.kernel_sizes, "strides": props.strides,
            "n_conv_per_stage": [2] * n, "n_conv_per_stage_decoder": [2] * (n - 1)}, list(props.patch_size)


def resolve_shape(args) -> tuple[dict, list[int], int, str]:
    """(architecture, patch, batch, where they came from)."""
    if args.plans:
        plans = json.load(open(args.plans))
        cfg = plans["configurations"][args.configuration]
        return cfg["architecture"], list(cfg["patch_size"]), int(args.batch_size or cfg["batch_size"]), args.plans
    spacing = args.spacing or [1.0] * len(args.patch)
    arch, patch = architecture_for(args.patch, spacing, args.base_features, args.max_features)
    return arch, patch, int(args.batch_size or 2), "command line"


def autocast_dtype(device: torch.device, amp: bool):
    """What the trainer uses: bf16 where supported, else fp16 with a GradScaler; none on the CPU."""
    if device.type != "cuda" or not amp:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def partial_pairs(batch: int, k: int, datasets: int, device) -> torch.Tensor:
    """(B, K) bool: class k belongs to dataset k * D // K, batch item i comes from dataset i mod D."""
    owner = torch.arange(k, device=device) * datasets // k
    return torch.stack([owner == (i % datasets) for i in range(batch)])


def capped_exclusion(unlabelled: torch.Tensor, cap: int, gen: torch.Generator) -> torch.Tensor:
    """(B, K) bool: per item, its unlabelled classes, or a random `cap` of them where it has more (the trainer's rule)."""
    out = torch.zeros_like(unlabelled, device="cpu")
    for i, row in enumerate(unlabelled.cpu()):
        classes = torch.nonzero(row).flatten()
        if len(classes) > cap:
            classes = classes[torch.randperm(len(classes), generator=gen)[:cap]]
        out[i, classes] = True
    return out


def make_variant(name: str, k: int, arch: dict, batch: int, patch: list[int], args, device, layout, seed: int = 0):
    """A zero-argument training step of one variant, with its own network, optimizer and data."""
    config = TrainingConfig()
    gen = torch.Generator().manual_seed(seed + k)
    x = torch.randn(batch, 1, *patch, generator=gen).to(device).contiguous(memory_format=layout)
    labels = torch.randint(0, k + 1, (batch, 1, *patch), generator=gen).float().to(device)
    weights = deep_supervision_weights(arch["n_stages"] - 1)
    if name == "softmax":
        net = build_softmax_unet(arch, 1, k + 1, deep_supervision=True)
        target = labels
        annotation = None
        loss_fn = DeepSupervisionLoss(lambda logits, t, a: softmax_dice_ce_loss(logits, t), weights)

        def outputs(data):
            return net(data)
    else:
        net = TextPromptedUNet(arch, 1, args.embed_dim, args.conditioning, deep_supervision=True)
        embeddings = torch.randn(k, args.embed_dim, generator=gen).to(device)
        net.set_text_normalization(embeddings)
        # Per-class binary maps of the same label map (mutually exclusive, as the demo's targets are).
        target = torch.cat([(labels == c + 1).float() for c in range(k)], 1)
        if name == "text_partial":
            annotation = partial_pairs(batch, k, args.datasets, device)
        elif name == "text_exclusion":
            # The trainer's default with label exclusion (config.label_exclusion, on since commit ef85908) on
            # classes without hierarchy links: a class a sample's dataset does not label is a known negative on the
            # voxels of the classes it does label (PatchSampler's known_excluded_by), for at most
            # config.max_excluded_classes such classes per item (a random subset, PatchSampler._excluded_for_item);
            # the loss is the voxel-masked one (PartialAnnotation.known: a K x K product per voxel).
            annotated = partial_pairs(batch, k, args.datasets, device)
            excluding = capped_exclusion(~annotated, config.max_excluded_classes, gen).to(device)
            annotation = PartialAnnotation(annotated, torch.full((batch, k), -1, dtype=torch.long, device=device),
                                           torch.zeros(batch, k, dtype=torch.bool, device=device),
                                           excluding[:, :, None] & annotated[:, None, :])
        else:
            annotation = torch.ones(batch, k, dtype=torch.bool, device=device)
        loss_fn = DeepSupervisionLoss(masked_bce_dice_loss, weights)

        def outputs(data):
            return net(data, embeddings, annotated_pairs(annotation))  # UniversalStep.outputs: the pairs it reads
    net = net.to(device, memory_format=layout).train()
    opt = torch.optim.SGD(net.parameters(), lr=config.initial_lr, momentum=config.momentum, nesterov=True)
    dtype = autocast_dtype(device, not args.no_amp)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            outs = outputs(x)
            loss = loss_fn(outs, downsample_targets(target, [o.shape[2:] for o in outs]), annotation)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
            opt.step()

    n_params = sum(p.numel() for p in net.parameters())
    pairs = None if annotation is None else int(annotated_pairs(annotation).sum())  # the softmax head has none
    return step, {"parameters": n_params, "pairs_per_batch": pairs}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------ memory (CPU)
def rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def high_water_mark() -> int:
    """Peak resident set in bytes: VmHWM (resettable), else ru_maxrss."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_high_water_mark() -> bool:
    """Linux >= 4.0: writing 5 to clear_refs resets VmHWM to the current resident set."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_worker(args) -> None:
    """One variant alone: build, warm up, `--steps` steps; print peak RSS and the step's working memory (JSON)."""
    device = torch.device(args.device)
    arch, patch, batch, _ = resolve_shape(args)
    layout = memory_format_for(device.type, len(patch), args.memory_format)
    name, k = args._memory_variant, args._memory_k
    step, info = make_variant(name, k, arch, batch, patch, args, device, layout)
    before = rss_bytes()
    peak_before = high_water_mark()
    reset = reset_high_water_mark()  # else the import's peak may hide the steps'
    for _ in range(max(1, args.warmup) + args.steps):
        step()
    peak = high_water_mark()
    print(json.dumps({"rss_before_first_step_mb": before / 2**20, "peak_rss_mb": peak / 2**20,
                      "peak_rss_before_first_step_mb": peak_before / 2**20, "high_water_mark_reset": reset,
                      "step_working_memory_mb": (peak - before) / 2**20, **info}))


def measure_memory_cpu(args, k: int, name: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:], "--_memory_variant", name,
           "--_memory_k", str(k)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ reporting
def spread(values: list[float]) -> dict:
    q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "q1": q[0], "q3": q[2], "n": len(values)}


def machine_facts(device: torch.device) -> dict:
    info = machine(torch_threads=torch.get_num_threads())
    if device.type == "cuda":
        info.update(gpu=torch.cuda.get_device_name(), cuda=torch.version.cuda,
                    gpu_memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
    return info


def markdown(result: dict) -> str:
    cuda = result["settings"]["device"] == "cuda"
    mem_head = "peak GPU memory (step)" if cuda else "step memory (RSS)"
    lines = [f"| K | variant | pairs / batch | s/step median (min-max) [IQR] | ratio of medians | paired ratio "
             f"median (min-max) | process CPU s/step (ratio) | {mem_head} |", "|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        t = row["seconds_per_step"]
        mem = row.get("memory", {})
        if cuda and "peak_allocated_gib" in mem:
            m = f"{mem['peak_allocated_gib']:.2f} GiB ({mem['step_allocated_gib']:.2f})"
        elif "step_working_memory_mb" in mem:
            m = f"{mem['step_working_memory_mb'] / 1024:.2f} GiB (peak {mem['peak_rss_mb'] / 1024:.2f})"
        else:
            m = "n/a"
        c = row["cpu_seconds_per_step"]["median"]
        cpu = f"{c:.3f}" + (f" ({row['cpu_ratio_of_medians']:.2f}x)" if "cpu_ratio_of_medians" in row else "")
        if row["variant"] == "softmax":
            ratio, paired = "1", "—"
        else:
            ratio = f"**{row['ratio_of_medians']:.2f}x**"
            p = row["paired_ratio"]
            paired = f"{p['median']:.2f}x ({p['min']:.2f}-{p['max']:.2f})"
        pairs = "—" if row["pairs_per_batch"] is None else row["pairs_per_batch"]
        lines.append(f"| {row['K']} | {LABELS[row['variant']]} | {pairs} | "
                     f"{t['median']:.3f} ({t['min']:.3f}-{t['max']:.3f}) [{t['q1']:.3f}-{t['q3']:.3f}] | {ratio} | "
                     f"{paired} | {cpu} | {m} |")
    return "\n".join(lines)


def memory_per_pair(result: dict) -> dict:
    """Per K: extra step memory (MB) per computed pair, from the partial- and all-pairs rows of a CPU artefact."""
    out = {}
    for k in sorted({r["K"] for r in result["rows"]}):
        rows = {r["variant"]: r for r in result["rows"] if r["K"] == k}
        a, p = rows.get("text_all"), rows.get("text_partial")
        if a and p and "step_working_memory_mb" in a.get("memory", {}) and "step_working_memory_mb" in p.get(
                "memory", {}) and a["pairs_per_batch"] > p["pairs_per_batch"]:
            out[str(k)] = ((a["memory"]["step_working_memory_mb"] - p["memory"]["step_working_memory_mb"])
                           / (a["pairs_per_batch"] - p["pairs_per_batch"]))
    return out


def gpu_memory_estimate(cpu_artefact: Path, patch=(128, 128, 128), batch: int = 2) -> dict:
    """An ESTIMATE, not a measurement: extra GPU memory of the text heads at nnU-Net's GPU patch, scaling the CPU
    run's memory per computed pair by the voxel count (fp32 on the CPU; bf16 autocast could halve the head
    activations, hence the low end), for the partial- and all-pairs counts of that batch."""
    cpu = json.loads(Path(cpu_artefact).read_text())
    per_pair = memory_per_pair(cpu)
    voxels_cpu = 1
    for n in cpu["settings"]["patch"]:
        voxels_cpu *= n
    voxels_gpu = 1
    for n in patch:
        voxels_gpu *= n
    largest_k = max(per_pair, key=int)
    mb = per_pair[largest_k] * voxels_gpu / voxels_cpu
    gb_per_pair = {"fp32_gb": mb / 1000, "bf16_half_activations_gb": mb / 2000}
    out = {"what": "ESTIMATE, not a measurement: extra GPU memory of the text heads' computed pairs at nnU-Net's "
                   "GPU patch, from the CPU artefact's memory per pair scaled by the voxel count",
           "from": str(cpu_artefact.name), "cpu_patch": cpu["settings"]["patch"], "gpu_patch": list(patch),
           "batch": batch, "cpu_mb_per_pair": per_pair, "gb_per_pair": gb_per_pair, "extra_gb": {}}
    for k in cpu["settings"]["K"]:
        pairs_all = batch * k
        pairs_partial = int(partial_pairs(batch, k, cpu["settings"]["datasets_for_partial_pairs"], "cpu").sum())
        out["extra_gb"][str(k)] = {
            "partial_pairs": pairs_partial, "all_pairs": pairs_all,
            "partial_gb_low": pairs_partial * gb_per_pair["bf16_half_activations_gb"],
            "partial_gb_high": pairs_partial * gb_per_pair["fp32_gb"],
            "all_gb_low": pairs_all * gb_per_pair["bf16_half_activations_gb"],
            "all_gb_high": pairs_all * gb_per_pair["fp32_gb"]}
    return out


# ------------------------------------------------------------------------------------------ main
def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--plans", help="take architecture, patch and batch size from a plans.json")
    p.add_argument("--configuration", default="3d_fullres")
    p.add_argument("--patch", type=int, nargs="+", default=[32, 56, 48], help="default: the demo plan's patch")
    p.add_argument("--spacing", type=float, nargs="+", default=None)
    p.add_argument("--batch_size", type=int, default=None, help="default 2 (or the plan's)")
    p.add_argument("--base_features", type=int, default=8)
    p.add_argument("--max_features", type=int, default=64)
    p.add_argument("--prompts", "-K", type=int, nargs="+", default=[5, 32, 117],
                   help="numbers of classes K (117: TotalSegmentator's class count)")
    p.add_argument("--datasets", type=int, default=3, help="datasets the K classes are split over (partial pairs)")
    p.add_argument("--conditioning", default="controller", choices=("controller", "film"))
    p.add_argument("--embed_dim", type=int, default=384)
    p.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=VARIANTS,
                   help="text_exclusion: the trainer's label-exclusion default (all pairs, voxel-masked loss)")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured steps per variant before the rounds")
    p.add_argument("--repeats", type=int, default=7, help="interleaved rounds")
    p.add_argument("--steps", type=int, default=2, help="timed steps per variant per round")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no_amp", action="store_true", help="CUDA: fp32 instead of the trainer's bf16/fp16 autocast")
    p.add_argument("--memory_format", choices=("auto", "channels_first", "channels_last"), default="auto",
                   help="layout of the models and the input (auto: what the trainer uses, channels-last on CPU)")
    p.add_argument("--no_memory", action="store_true", help="skip the per-variant memory subprocesses (CPU)")
    p.add_argument("--json", help="write the artefact here")
    p.add_argument("--gpu_estimate_from", metavar="CPU_ARTEFACT",
                   help="write an ESTIMATE of the GPU memory (to --json) from a CPU artefact's memory per pair; runs "
                        "nothing")
    p.add_argument("--_memory_variant", help=argparse.SUPPRESS)
    p.add_argument("--_memory_k", type=int, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._memory_variant:
        memory_worker(args)
        return 0
    if args.gpu_estimate_from:
        estimate = gpu_memory_estimate(Path(args.gpu_estimate_from))
        print(json.dumps(estimate, indent=1))
        if args.json:
            Path(args.json).write_text(json.dumps(estimate, indent=1) + "\n")
        return 0
    device = torch.device(args.device)
    arch, patch, batch, source = resolve_shape(args)
    layout = memory_format_for(device.type, len(patch), args.memory_format)
    dtype = autocast_dtype(device, not args.no_amp)
    result = {
        "what": "training step (forward + backward + SGD step, deep supervision) of the text-prompted heads vs the "
                "same backbone with a K+1-channel softmax head (issue 14 item 4)",
        "command": [sys.executable, *sys.argv], "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "git": git_state(), "versions": package_versions(("textnnunet", "torch", "numpy")), "machine": machine_facts(device),
        "loadavg_start": list(os.getloadavg()),
        "settings": {"device": device.type, "shape_from": source, "patch": patch, "batch": batch,
                     "features": arch["features_per_stage"], "strides": arch["strides"],
                     "autocast": str(dtype), "memory_format": str(layout), "conditioning": args.conditioning,
                     "embed_dim": args.embed_dim, "datasets_for_partial_pairs": args.datasets,
                     "warmup_steps": args.warmup, "repeats": args.repeats, "steps_per_block": args.steps,
                     "K": args.prompts, "variants": args.variants},
        "memory_method": ("torch.cuda.max_memory_allocated per block (reset before it); step_allocated = peak minus "
                          "allocated before the block" if device.type == "cuda" else
                          "a subprocess per (K, variant): build, warm-up, steps; peak_rss = ru_maxrss, "
                          "step_working_memory = peak RSS (VmHWM, reset just before the first step) minus RSS just before "
                          "the first step"),
        "rows": [], "rounds": [],
    }
    print(f"device {result['machine'].get('gpu', result['machine']['cpu'])} | torch threads "
          f"{torch.get_num_threads()} | cpus {os.cpu_count()} | load {os.getloadavg()}")
    print(f"patch {patch} | batch {batch} | features {arch['features_per_stage']} | autocast {dtype} | {layout} | "
          f"{args.repeats} rounds x {args.steps} steps, warm-up {args.warmup}")
    for k in args.prompts:
        steps, infos = {}, {}
        for name in args.variants:
            steps[name], infos[name] = make_variant(name, k, arch, batch, patch, args, device, layout)
        for name in args.variants:  # warm-up, discarded
            for _ in range(args.warmup):
                steps[name]()
        sync(device)
        times = {name: [] for name in args.variants}
        cpu_times = {name: [] for name in args.variants}
        gpu_peak = {name: [] for name in args.variants}
        for r in range(args.repeats):
            for name in args.variants:
                load = os.getloadavg()
                if device.type == "cuda":
                    sync(device)
                    allocated = torch.cuda.memory_allocated()
                    torch.cuda.reset_peak_memory_stats()
                start, cpu_start = time.perf_counter(), time.process_time()
                for _ in range(args.steps):
                    steps[name]()
                sync(device)
                seconds = (time.perf_counter() - start) / args.steps
                cpu_seconds = (time.process_time() - cpu_start) / args.steps
                times[name].append(seconds)
                cpu_times[name].append(cpu_seconds)
                entry = {"K": k, "round": r, "variant": name, "seconds_per_step": seconds,
                         "cpu_seconds_per_step": cpu_seconds,
                         "loadavg_before": list(load), "loadavg_after": list(os.getloadavg())}
                if device.type == "cuda":
                    peak = torch.cuda.max_memory_allocated()
                    gpu_peak[name].append((peak, peak - allocated))
                    entry.update(peak_allocated_gib=peak / 2**30, step_allocated_gib=(peak - allocated) / 2**30)
                result["rounds"].append(entry)
            print(f"K={k:3d} round {r}: " + "  ".join(f"{n} {times[n][-1]:.3f}" for n in args.variants), flush=True)
        del steps
        if device.type == "cuda":
            torch.cuda.empty_cache()
        ref = times.get("softmax")
        for name in args.variants:
            row = {"K": k, "variant": name, "label": LABELS[name], **infos[name],
                   "seconds_per_step": spread(times[name]), "all_seconds_per_step": times[name],
                   "cpu_seconds_per_step": spread(cpu_times[name]), "all_cpu_seconds_per_step": cpu_times[name]}
            if ref and name != "softmax" and "softmax" in cpu_times:
                row["ratio_of_medians"] = statistics.median(times[name]) / statistics.median(ref)
                row["paired_ratio"] = spread([a / b for a, b in zip(times[name], ref)])
                cpu_ref = cpu_times["softmax"]
                row["cpu_ratio_of_medians"] = statistics.median(cpu_times[name]) / statistics.median(cpu_ref)
            if device.type == "cuda":
                row["memory"] = {"peak_allocated_gib": max(p for p, _ in gpu_peak[name]) / 2**30,
                                 "step_allocated_gib": max(s for _, s in gpu_peak[name]) / 2**30}
            result["rows"].append(row)
    if device.type == "cpu" and not args.no_memory:
        for row in result["rows"]:
            row["memory"] = measure_memory_cpu(args, row["K"], row["variant"])
            m = row["memory"]
            print(f"memory K={row['K']:3d} {row['variant']:13s} " +
                  (f"step {m['step_working_memory_mb']:8.1f} MB  peak RSS {m['peak_rss_mb']:8.1f} MB"
                   if "peak_rss_mb" in m else m.get("error", "")[-300:]), flush=True)
    result["memory_mb_per_computed_pair"] = memory_per_pair(result)
    result["loadavg_end"] = list(os.getloadavg())
    result["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
    table = markdown(result)
    result["markdown"] = table
    print()
    print(table)
    print(f"\nload average start {result['loadavg_start']} end {result['loadavg_end']}, cpus {os.cpu_count()}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
