"""textnnunet_plan_and_preprocess against nnU-Net v2's nnUNetv2_plan_and_preprocess on the same raw datasets.

Installs nnU-Net v2 in its own virtual environment (perf/.nnunet_env, CPU torch, no torchvision) on first
use, generates the demo phantoms (or uses --raw), runs both tools with the same number of processes on fresh
output folders and prints wall time, peak memory (resident set of the whole process tree, sampled) and the
ratios textnnunet / nnU-Net. Target from issue 2: wall-time ratio <= 0.5.

    .venv/bin/python perf/plan_and_preprocess_vs_nnunet.py -np 2 [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
ENV = HERE / ".nnunet_env"
NNUNET_DEPENDENCIES = ["tqdm", "scipy", "batchgenerators>=0.25.1", "numpy>=1.24", "scikit-learn", "scikit-image>=0.19.3",
                       "SimpleITK>=2.2.1", "pandas", "graphviz", "tifffile", "requests", "nibabel", "matplotlib",
                       "seaborn", "imagecodecs", "yacs", "blosc2>=3.3.2", "connected-components-3d"]


def ensure_nnunet_env() -> Path:
    python = ENV / "bin" / "python"
    if (ENV / ".ready").is_file():
        return python
    subprocess.run([sys.executable, "-m", "venv", str(ENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run(pip + ["torch==2.13.0"], check=True)  # the local CPU wheel; a plain torch pulls CUDA
    # dynamic-network-architectures lists timm (-> torchvision -> a CUDA torch); nnU-Net's U-Nets never import it.
    # pip follows that requirement even for an installed copy once nnunetv2 depends on it, so nnU-Net's own
    # packages go in without dependency resolution and their real dependencies are named here.
    subprocess.run(pip + ["--no-deps", "dynamic-network-architectures==0.4.4", "einops", "nnunetv2",
                          "batchgeneratorsv2", "acvl-utils"], check=True)
    subprocess.run(pip + NNUNET_DEPENDENCIES, check=True)
    (ENV / ".ready").write_text("ok\n")
    return python


def run_measured(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, peak summed RSS of the process tree in GiB); raises on a non-zero exit."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    done = threading.Event()

    def sample():
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                procs = [root] + root.children(recursive=True)
                peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    _, err = proc.communicate()
    done.set()
    thread.join()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])}... failed:\n{err[-2000:]}")
    return wall, peak / 2**30


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-np", "--num_processes", type=int, default=2)
    p.add_argument("--raw", help="existing raw folder with Dataset001-003 (default: generate the demo phantoms)")
    p.add_argument("--size", default="default", help="phantom size when generating")
    p.add_argument("-d", "--datasets", nargs="+", default=["1", "2", "3"])
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    nnunet_python = ensure_nnunet_env()
    bin_dir = Path(sys.executable).parent
    work = Path(tempfile.mkdtemp(prefix="pp_bench_"))
    try:
        raw = Path(args.raw) if args.raw else work / "raw"
        if not args.raw:
            subprocess.run([str(bin_dir / "textnnunet_generate_phantoms"), "--raw", str(raw), "--size", args.size,
                            "-np", str(args.num_processes)], check=True, stdout=subprocess.DEVNULL)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "nnUNet_raw": str(raw),
               "nnUNet_preprocessed": str(work / "nnunet_pre"), "nnUNet_results": str(work / "nnunet_res")}
        ours = [str(bin_dir / "textnnunet_plan_and_preprocess"), "-d", *args.datasets, "-np", str(args.num_processes),
                "-c", "3d_fullres", "--raw", str(raw), "--preprocessed", str(work / "ours_pre")]
        theirs = [str(nnunet_python.parent / "nnUNetv2_plan_and_preprocess"), "-d", *args.datasets,
                  "-np", str(args.num_processes), "-c", "3d_fullres"]
        results = {"num_processes": args.num_processes, "datasets": args.datasets, "cpu": os.cpu_count()}
        for name, cmd in (("nnunetv2", theirs), ("textnnunet", ours)):
            wall, peak = run_measured(cmd, env)
            results[name] = {"wall_seconds": wall, "peak_rss_gib": peak}
            print(f"{name:11s} wall {wall:7.1f} s   peak memory {peak:5.2f} GiB")
        results["wall_ratio"] = results["textnnunet"]["wall_seconds"] / results["nnunetv2"]["wall_seconds"]
        results["memory_ratio"] = results["textnnunet"]["peak_rss_gib"] / results["nnunetv2"]["peak_rss_gib"]
        print(f"ratio textnnunet / nnU-Net: wall {results['wall_ratio']:.2f}x, peak memory "
              f"{results['memory_ratio']:.2f}x (textnnunet also writes the joint plan and one plan per dataset)")
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
