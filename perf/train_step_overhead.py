"""Training-step cost of the text-prompted heads against the same backbone with nnU-Net's softmax head.

Same architecture, patch and batch size; random data; forward + backward + SGD step, deep supervision on.
Prints seconds per step and the ratio to the softmax reference measured in the same run (target <= 1.1x).
"all pairs": every (image, prompt) pair annotated, as in the naive-union ablation or a fully labelled dataset;
"partial": each sample annotates a third of the classes, as the demo datasets do, and the trainer computes the
heads of annotated pairs only (the masked loss reads nothing else).

    python perf/train_step_overhead.py --plans demo_work/preprocessed/TextPlans_001_002_003/plans.json
    python perf/train_step_overhead.py --device cuda --patch 128 128 128 --base_features 32 --max_features 320
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch
import torch.nn.functional as F

from textnnunet.experiment_planning.topology import pool_and_conv_props
from textnnunet.network.baseline import build_softmax_unet
from textnnunet.network.deep_supervision import deep_supervision_weights
from textnnunet.network.universal import TextPromptedUNet
from textnnunet.training.config import memory_format_for
from textnnunet.training.loss import downsample_targets, masked_bce_dice_loss


def architecture_for(patch, spacing, base, max_features):
    props = pool_and_conv_props(spacing, patch)
    n = len(props.strides)
    return {"conv_dims": len(patch), "n_stages": n,
            "features_per_stage": [min(base * 2**i, max_features) for i in range(n)],
            "kernel_sizes": props.kernel_sizes, "strides": props.strides,
            "n_conv_per_stage": [2] * n, "n_conv_per_stage_decoder": [2] * (n - 1)}, list(props.patch_size)


def time_steps(step, iters: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters


def make_step(net, loss_fn, x, device, amp: bool):
    opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, nesterov=True)
    dtype = torch.bfloat16 if amp else None

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            loss = loss_fn(net, x)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12)
        opt.step()

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--plans", help="take architecture, patch and batch size from a plans.json")
    p.add_argument("--configuration", default="3d_fullres")
    p.add_argument("--patch", type=int, nargs="+", default=[64, 64, 64])
    p.add_argument("--spacing", type=float, nargs="+", default=None)
    p.add_argument("--batch_size", type=int, default=2)
    p.add_argument("--base_features", type=int, default=32)
    p.add_argument("--max_features", type=int, default=320)
    p.add_argument("--prompts", type=int, nargs="+", default=[5], help="number of classes K (text prompts)")
    p.add_argument("--embed_dim", type=int, default=384)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no_amp", action="store_true")
    p.add_argument("--memory_format", choices=("auto", "channels_first", "channels_last"), default="auto",
                   help="layout of both models and the input (auto: what the trainer uses, channels-last on CPU)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    device = torch.device(args.device)
    amp = device.type == "cuda" and not args.no_amp
    if args.plans:
        plans = json.load(open(args.plans))
        cfg = plans["configurations"][args.configuration]
        arch, patch, batch = cfg["architecture"], cfg["patch_size"], cfg["batch_size"]
    else:
        spacing = args.spacing or [1.0] * len(args.patch)
        arch, patch = architecture_for(args.patch, spacing, args.base_features, args.max_features)
        batch = args.batch_size
    layout = memory_format_for(device.type, len(patch), args.memory_format)
    torch.manual_seed(0)
    x = torch.randn(batch, 1, *patch, device=device).contiguous(memory_format=layout)
    n_scales = arch["n_stages"] - 1
    weights = deep_supervision_weights(n_scales)
    results = {"device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
               "torch": torch.__version__, "threads": torch.get_num_threads(), "patch": patch, "batch": batch,
               "features": arch["features_per_stage"], "amp": amp, "memory_format": str(layout), "rows": []}
    print(f"device {results['device']} | patch {patch} | batch {batch} | features {arch['features_per_stage']} | "
          f"amp {amp} | {layout}")
    for k in args.prompts:
        target = (torch.rand(batch, k, *patch, device=device) > 0.7).float()
        labels = torch.randint(0, k + 1, (batch, *patch), device=device)
        emb = torch.randn(k, args.embed_dim, device=device)
        everything = torch.ones(batch, k, dtype=torch.bool, device=device)
        # As in training on the demo data: three datasets each annotate a third of the classes, and sample i of the
        # batch comes from dataset i mod 3; the trainer computes heads only for the annotated pairs.
        groups = torch.arange(k, device=device) * 3 // k
        partial = torch.stack([groups == i % 3 for i in range(batch)])

        def softmax_loss(net, x):
            outs = net(x)
            total = 0
            for w, o in zip(weights, outs):
                if w:
                    lab = F.interpolate(labels[:, None].float(), size=o.shape[2:], mode="nearest-exact")[:, 0].long()
                    probs = o.float().softmax(1)
                    onehot = F.one_hot(lab, k + 1).movedim(-1, 1).float()
                    dice = 1 - (2 * (probs * onehot).sum() + 1e-5) / (probs.sum() + onehot.sum() + 1e-5)
                    total = total + w * (F.cross_entropy(o.float(), lab) + dice)
            return total

        def text_loss(annotated):
            def loss(net, x):
                outs = net(x, emb, annotated)
                targets = downsample_targets(target, [o.shape[2:] for o in outs])
                return sum(w * masked_bce_dice_loss(o.float(), t, annotated)
                           for w, o, t in zip(weights, outs, targets) if w)
            return loss

        models = {"softmax (nnU-Net head)": (build_softmax_unet(arch, 1, k + 1, deep_supervision=True), softmax_loss),
                  "text controller, all pairs": (TextPromptedUNet(arch, 1, args.embed_dim, "controller"),
                                                 text_loss(everything)),
                  "text controller, partial": (TextPromptedUNet(arch, 1, args.embed_dim, "controller"),
                                               text_loss(partial)),
                  "text FiLM": (TextPromptedUNet(arch, 1, args.embed_dim, "film"), text_loss(partial))}
        reference = None
        for name, (net, loss_fn) in models.items():
            net = net.to(device, memory_format=layout)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            seconds = time_steps(make_step(net, loss_fn, x, device, amp), args.iters, args.warmup, device)
            peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
            reference = reference or seconds
            row = {"K": k, "model": name, "seconds_per_step": seconds, "ratio_to_softmax": seconds / reference,
                   "peak_gpu_memory_gib": peak}
            results["rows"].append(row)
            print(f"K={k:3d} {name:28s} {seconds:8.4f} s/step  ratio {seconds / reference:5.2f}x  "
                  f"peak {peak:6.2f} GiB")
            del net
    if args.json:
        json.dump(results, open(args.json, "w"), indent=2)


if __name__ == "__main__":
    main()
