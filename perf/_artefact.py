"""What every perf/ artefact records about where it ran: machine, package versions, the code's git state."""
from __future__ import annotations

import importlib.metadata as md
import os
import platform
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine(**extra) -> dict:
    """Platform, CPU, cores (all and usable), memory and the thread variables, plus `extra` (e.g. torch threads)."""
    import psutil

    return {"platform": platform.platform(), "cpu": cpu_name(), "cpu_count": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "mkl_num_threads": os.environ.get("MKL_NUM_THREADS"),
            **extra}


def package_versions(packages=("textnnunet", "torch", "numpy", "scipy", "scikit-image", "SimpleITK")) -> dict:
    out = {"python": platform.python_version()}
    for package in packages:
        try:
            out[package] = md.version(package)
        except md.PackageNotFoundError:
            out[package] = None
    return out


def git_state(paths=("textnnunet", "perf")) -> dict:
    """The commit and the files under `paths` that differ from it (the measured code is the commit plus these)."""
    def git(*args):
        try:
            return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True).stdout
        except OSError:
            return ""

    # Porcelain lines are "XY path": the status columns may be blank, so the output is not stripped on the left.
    # A copy of the tree without .git (the lent GPU machine's) names its commit in GIT_COMMIT (perf/gpu_check.sh).
    return {"commit": git("rev-parse", "HEAD").strip() or os.environ.get("GIT_COMMIT", ""),
            "dirty_files": [line[3:] for line in git("status", "--porcelain", "--", *paths).splitlines() if line]}
