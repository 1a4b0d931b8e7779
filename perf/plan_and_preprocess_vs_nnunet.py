"""textnnunet_plan_and_preprocess against nnU-Net v2's nnUNetv2_plan_and_preprocess on the same raw datasets
(issue 14, item 2).

Installs nnU-Net v2 in its own virtual environment (perf/.nnunet_env, CPU torch, no torchvision) on first use,
generates the phantoms (or uses --raw) and runs the commands of each row with the same number of processes for both
tools (`-np` for both, and `-npfp` = `-np` for nnU-Net, whose fingerprinting would otherwise spawn 8 processes),
every run on empty output folders (fingerprints included, so each run does all of its work):

- `equal`: the same configuration and one cache set each: textnnunet's joint plan, 3d_fullres only, no per-dataset
  baseline caches (`-c 3d_fullres --no_baselines`) with `--preset gpu` (nnU-Net's target-spacing rule, so both
  write caches at about the same spacing), against `nnUNetv2_plan_and_preprocess -c 3d_fullres`. With
  `--cpu_preset_too` textnnunet's machine default preset on a CPU (`--preset cpu`: coarser spacing where the patch
  would see too little, less work) runs beside them in the same rounds, reported as its own line;
- `default`: each tool's default command: textnnunet_plan_and_preprocess -d ... (joint plan + one plan per dataset,
  the joint plan's caches of every configuration, the preset this machine gets; the per-dataset baseline caches only
  with --baselines, which was the default before they became lazy) against nnUNetv2_plan_and_preprocess -d ... (2d,
  3d_fullres and 3d_lowres where nnU-Net plans one).

Timing: one warm-up round (every command once, discarded: page cache, first imports), then --repeats rounds, each
running every command of the row once, interleaved (ours, nnU-Net, ours, ...). Per command: median wall seconds
with min and max, CPU seconds of the process tree (user + system from wait4: the children a process reaps count to
it), peak memory (summed resident set of the process tree, sampled every 50 ms: shared libraries of spawned workers
count once per process) and the size of what it wrote. Ratios are of medians, textnnunet / nnU-Net.
Start-up is measured separately: the time a fresh interpreter takes to import each tool's entry module, median of
3 after one discarded import (bytecode caches are allowed for both tools: PYTHONDONTWRITEBYTECODE is removed).

Sizes: `default` = the demo phantoms (34 training cases of about 4.5 mm: mostly start-up and per-case overhead);
`clinical` = --cases training cases of each of Dataset001-003 regenerated at clinical resolution here (perf/ only):
0.8 mm in-plane over a 380 mm field of view (about 475 x 475 voxels) and slices of 1.5 / 3 / 2 mm over 300 / 330 /
300 mm (about 200 / 110 / 150 slices), the demo's synthetic anatomy; only the `equal` row runs at this size by default.

    .venv/bin/python perf/plan_and_preprocess_vs_nnunet.py -np 2 --rows equal default \
        --json documentation/measurements/plan_and_preprocess_vs_nnunet.json
    .venv/bin/python perf/plan_and_preprocess_vs_nnunet.py -np 2 --size clinical --rows equal --repeats 2 \
        --json documentation/measurements/plan_and_preprocess_vs_nnunet.json

The artefact is keyed by size ("default", "clinical"), so both runs go into one file.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _artefact import git_state, machine, package_versions  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ENV = HERE / ".nnunet_env"
NNUNET_DEPENDENCIES = ["tqdm", "scipy", "batchgenerators>=0.25.1", "numpy>=1.24", "scikit-learn", "scikit-image>=0.19.3",
                       "SimpleITK>=2.2.1", "pandas", "graphviz", "tifffile", "requests", "nibabel", "matplotlib",
                       "seaborn", "imagecodecs", "yacs", "blosc2>=3.3.2", "connected-components-3d"]
# Clinical-size phantoms: (z spacing mm, z field of view mm) per dataset, in-plane 0.8 mm over 380 mm.
CLINICAL_INPLANE_MM, CLINICAL_FOV_INPLANE_MM = 0.8, 380.0
CLINICAL_Z = {1: (1.5, 300.0), 2: (3.0, 330.0), 3: (2.0, 300.0)}


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


# ------------------------------------------------------------------------------------------ clinical phantoms
def _clinical_specs(cases: int):
    from textnnunet.demo.phantoms import PHANTOM_DATASETS

    specs = []
    for spec in PHANTOM_DATASETS:
        if spec.dataset_id not in CLINICAL_Z:
            continue
        z, fov_z = CLINICAL_Z[spec.dataset_id]
        specs.append(dataclasses.replace(
            spec, spacing=(z, CLINICAL_INPLANE_MM, CLINICAL_INPLANE_MM), fov_mm=(fov_z, CLINICAL_FOV_INPLANE_MM),
            num_training={"full": cases}, num_test={"full": 0},
            description=f"{spec.description} Clinical-size copy for perf/plan_and_preprocess_vs_nnunet.py: "
                        f"{CLINICAL_INPLANE_MM} mm in-plane over {CLINICAL_FOV_INPLANE_MM} mm, {z} mm slices."))
    return specs


def _write_clinical_case(job: tuple[int, int, int, str]) -> str:
    from textnnunet.demo.phantoms import generate_case
    from textnnunet.imageio.sitk_io import write_image

    cases, spec_index, case_index, folder = job
    spec = _clinical_specs(cases)[spec_index]
    image_file = Path(folder) / "imagesTr" / f"{spec.case_id(case_index)}_0000.nii.gz"
    label_file = Path(folder) / "labelsTr" / f"{spec.case_id(case_index)}.nii.gz"
    if image_file.exists() and label_file.exists():
        return "skipped"
    case = generate_case(spec, case_index, "full", seed=0)
    write_image(case.labels, case.geometry, label_file)
    write_image(case.image, case.geometry, image_file)
    return f"{image_file.name} {case.image.shape}"


def make_clinical_raw(raw: Path, cases: int, num_processes: int) -> dict:
    """Dataset001-003 with `cases` training cases each at clinical resolution (cached: reused when complete)."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from textnnunet.demo.phantoms import dataset_json
    from textnnunet.utils.files import atomic_write_json

    specs = _clinical_specs(cases)
    jobs = []
    for i, spec in enumerate(specs):
        folder = raw / spec.name
        (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
        (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
        jobs += [(cases, i, c, str(folder)) for c in range(cases)]
    start = time.perf_counter()
    reused = 0
    with ProcessPoolExecutor(max_workers=num_processes, mp_context=get_context("spawn")) as pool:
        for line in pool.map(_write_clinical_case, jobs):
            reused += line == "skipped"
            print("  generated", line, flush=True)
    for spec in specs:
        meta = dataset_json(spec, "full", 0)
        meta["textnnunet_phantom"]["clinical_size_copy"] = "perf/plan_and_preprocess_vs_nnunet.py"
        atomic_write_json(raw / spec.name / "dataset.json", meta)
    return {"generated_in_s": round(time.perf_counter() - start, 1), "cases_reused_from_an_earlier_run": reused,
            "cases_per_dataset": cases,
            "spacing_zyx_mm": {s.name: list(s.spacing) for s in specs},
            "fov_mm_z_inplane": {s.name: list(s.fov_mm) for s in specs}}


def describe_raw(raw: Path, datasets: list[str]) -> dict:
    """Per dataset: number of training images, their shapes (z, y, x) and spacings, total voxels."""
    import SimpleITK as sitk

    out = {}
    for folder in sorted(raw.iterdir()):
        if not folder.is_dir() or not any(folder.name.startswith(f"Dataset{int(d):03d}_") for d in datasets):
            continue
        shapes, spacings = [], []
        for f in sorted((folder / "imagesTr").glob("*.nii.gz")):
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(f))
            reader.ReadImageInformation()
            shapes.append(list(reader.GetSize())[::-1])
            spacings.append([round(s, 3) for s in reader.GetSpacing()[::-1]])
        out[folder.name] = {"cases": len(shapes), "shape_zyx_min": [min(s[i] for s in shapes) for i in range(3)],
                            "shape_zyx_max": [max(s[i] for s in shapes) for i in range(3)],
                            "spacing_zyx_min": [min(s[i] for s in spacings) for i in range(3)],
                            "spacing_zyx_max": [max(s[i] for s in spacings) for i in range(3)],
                            "total_voxels": int(sum(s[0] * s[1] * s[2] for s in shapes))}
    return out


# ------------------------------------------------------------------------------------------ measuring
def run_measured(cmd: list[str], env: dict) -> dict:
    """Wall seconds, CPU seconds of the process tree (wait4), peak summed RSS of the tree (GiB, sampled)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    done = threading.Event()
    err: list[str] = []

    def sample():
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                procs = [root] + root.children(recursive=True)
                total = 0
                for p in procs:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
                peak = max(peak, total)
            except psutil.Error:
                pass
            time.sleep(0.05)

    reader = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)
    sampler = threading.Thread(target=sample, daemon=True)
    reader.start()
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    reader.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{''.join(err)[-3000:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_gib": peak / 2**30}


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def startup_seconds(python: str, module: str, env: dict, n: int = 3) -> dict:
    """Seconds for a fresh interpreter to import the tool's entry module (median, min, max of n; one import before
    them, discarded, writes the bytecode caches and warms the page cache)."""
    subprocess.run([python, "-c", f"import {module}"], env=env, check=True, capture_output=True)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        subprocess.run([python, "-c", f"import {module}"], env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return spread(times)


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def plan_summary(tool: str, pre: Path) -> dict:
    """Target spacing and median shape of every plan's configurations, read from what the tool wrote."""
    out = {}
    if tool.startswith("textnnunet"):
        files = sorted(pre.glob("*/plans.json"))
    else:
        files = sorted(pre.glob("Dataset*/nnUNetPlans.json"))
    for f in files:
        plans = json.loads(f.read_text())
        out[f.parent.name] = {name: {"spacing": cfg.get("spacing"),
                                     "median_shape": cfg.get("median_image_size_in_voxels",
                                                             cfg.get("median_shape")),
                                     "patch_size": cfg.get("patch_size")}
                              for name, cfg in plans.get("configurations", {}).items()}
    return out


# ------------------------------------------------------------------------------------------ main
def versions(nnunet_python: Path) -> dict:
    out = package_versions()
    theirs = subprocess.run([str(nnunet_python), "-c", "import importlib.metadata as m, json; print(json.dumps("
                             "{p: m.version(p) for p in ('nnunetv2', 'torch', 'numpy', 'scipy', 'scikit-image', "
                             "'SimpleITK', 'blosc2', 'acvl-utils', 'batchgenerators')}))"],
                            capture_output=True, text=True)
    out["nnunet_env"] = json.loads(theirs.stdout) if theirs.returncode == 0 else theirs.stderr[-500:]
    return out


def commands(row: str, args, bin_dir: Path, nnunet_bin: Path, work: Path) -> dict[str, tuple[list[str], Path]]:
    """tool -> (command, output folder to empty before and measure after)."""
    d, n = args.datasets, str(args.num_processes)
    theirs_pre = work / "nnunet_pre"
    ours = [str(bin_dir / "textnnunet_plan_and_preprocess"), "-d", *d, "-np", n, "--raw", str(work / "raw")]
    theirs = [str(nnunet_bin / "nnUNetv2_plan_and_preprocess"), "-d", *d, "-np", n, "-npfp", n]
    if row == "equal":
        out = {"textnnunet": (ours + ["--preprocessed", str(work / "ours_pre"), "-c", "3d_fullres", "--no_baselines",
                                      "--preset", "gpu"], work / "ours_pre"),
               "nnunetv2": (theirs + ["-c", "3d_fullres"], theirs_pre)}
        if args.cpu_preset_too:
            out["textnnunet_cpu_preset"] = (ours + ["--preprocessed", str(work / "ours_cpu_pre"), "-c", "3d_fullres",
                                                    "--no_baselines", "--preset", "cpu"], work / "ours_cpu_pre")
        return out
    return {"textnnunet": (ours + ["--preprocessed", str(work / "ours_pre")], work / "ours_pre"),
            "nnunetv2": (theirs, theirs_pre)}


def run_row(row: str, args, bin_dir: Path, nnunet_bin: Path, work: Path, env: dict, save=None) -> dict:
    """save(runs): called after every run with the runs so far (a partial artefact survives an interrupted run)."""
    cmds = commands(row, args, bin_dir, nnunet_bin, work)
    runs, plans = [], {}
    for rnd in range(args.repeats + 1):  # round 0: warm-up, discarded
        order = list(cmds)  # ours, nnU-Net, (ours cpu preset): interleaved
        for tool in order:
            cmd, out = cmds[tool]
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            load = os.getloadavg()
            m = run_measured(cmd, env)
            m.update(tool=tool, round=rnd, warmup=rnd == 0, loadavg_before=list(load),
                     loadavg_after=list(os.getloadavg()), output_bytes=folder_bytes(out))
            if tool not in plans:
                plans[tool] = plan_summary(tool, out)
            shutil.rmtree(out, ignore_errors=True)
            runs.append(m)
            if save:
                save(runs)
            print(f"  {row:7s} round {rnd}{' (warm-up)' if rnd == 0 else '':10s} {tool:22s} wall {m['wall_s']:7.1f} s  "
                  f"cpu {m['cpu_s']:7.1f} s  peak {m['peak_rss_gib']:5.2f} GiB  out {m['output_bytes'] / 2**20:8.1f} MB"
                  f"  load {load[0]:.2f}", flush=True)
    summary = {}
    for tool in cmds:
        rows = [r for r in runs if r["tool"] == tool and not r["warmup"]]
        summary[tool] = {"command": cmds[tool][0], "wall_s": spread([r["wall_s"] for r in rows]),
                         "cpu_s": spread([r["cpu_s"] for r in rows]),
                         "peak_rss_gib": spread([r["peak_rss_gib"] for r in rows]),
                         "output_mb": statistics.median(r["output_bytes"] for r in rows) / 2**20,
                         "plans": plans.get(tool)}
    ratios = {}
    for tool in cmds:
        if tool != "nnunetv2":
            ratios[f"{tool}/nnunetv2"] = {
                key: summary[tool][key]["median"] / summary["nnunetv2"][key]["median"]
                for key in ("wall_s", "cpu_s", "peak_rss_gib")}
    return {"runs": runs, "summary": summary, "ratios_of_medians": ratios}


def derive(result: dict) -> dict:
    """Wall-time ratios of medians with each tool's start-up (the main process's import, measured apart) taken
    out of both; added to the result as `ratios_without_startup`."""
    startup = {tool: s["median"] for tool, s in result.get("startup_s", {}).items()}
    out = {}
    for row, r in result.get("rows", {}).items():
        theirs = r["summary"]["nnunetv2"]["wall_s"]["median"] - startup.get("nnunetv2", 0.0)
        for tool, s in r["summary"].items():
            if tool != "nnunetv2":
                ours = s["wall_s"]["median"] - startup.get("textnnunet", 0.0)
                out[f"{row}/{tool}/nnunetv2"] = ours / theirs
    result["ratios_without_startup"] = out
    return out


LABEL = {"textnnunet": "textnnunet", "nnunetv2": "nnU-Net v2", "textnnunet_cpu_preset": "textnnunet, --preset cpu"}


def markdown(size: str, result: dict) -> str:
    lines = ["| size | row | tool | wall s median (min-max) | CPU s | peak memory GiB median (min-max) | written MB "
             "| wall ratio |", "|---|---|---|---|---|---|---|---|"]
    for row, r in result["rows"].items():
        for tool, s in r["summary"].items():
            ratio = r["ratios_of_medians"].get(f"{tool}/nnunetv2", {}).get("wall_s")
            w, m = s["wall_s"], s["peak_rss_gib"]
            lines.append(f"| {size} | {row} | {LABEL[tool]} | {w['median']:.1f} ({w['min']:.1f}-{w['max']:.1f}) | "
                         f"{s['cpu_s']['median']:.1f} | {m['median']:.2f} ({m['min']:.2f}-{m['max']:.2f}) | "
                         f"{s['output_mb']:.0f} | {'' if ratio is None else f'**{ratio:.2f}x**'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-np", "--num_processes", type=int, default=2, help="-np for both tools, and -npfp for nnU-Net")
    p.add_argument("--raw", help="existing raw folder with the datasets (default: generate phantoms)")
    p.add_argument("--size", default="default", choices=("default", "small", "clinical"),
                   help="phantoms to generate: the demo's (default), tiny (small), clinical resolution (clinical)")
    p.add_argument("--cases", type=int, default=3, help="--size clinical: training cases per dataset")
    p.add_argument("-d", "--datasets", nargs="+", default=["1", "2", "3"])
    p.add_argument("--rows", nargs="+", default=None, choices=("equal", "default"),
                   help="default: equal and default for the demo sizes, equal for clinical")
    p.add_argument("--repeats", type=int, default=3, help="measured rounds after the warm-up round")
    p.add_argument("--cpu_preset_too", action="store_true",
                   help="equal row: also textnnunet's --preset cpu (the machine default without CUDA)")
    p.add_argument("--work", help="working folder (kept; the raw phantoms are reused from it)")
    p.add_argument("--json", help="artefact: the results go under the size's key, other sizes are kept")
    args = p.parse_args(argv)
    rows = args.rows or (["equal"] if args.size == "clinical" else ["equal", "default"])
    nnunet_python = ensure_nnunet_env()
    bin_dir = Path(sys.executable).parent
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="pp_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    result = {"what": "plan + preprocess, textnnunet vs nnU-Net v2 (issue 14 item 2)",
              "command": [sys.executable, *sys.argv], "started": datetime.datetime.now().isoformat(timespec="seconds"),
              "git": git_state(), "versions": versions(nnunet_python), "machine": machine(),
              "loadavg_start": list(os.getloadavg()), "num_processes": args.num_processes, "datasets": args.datasets,
              "repeats": args.repeats, "warmup_rounds": 1,
              "memory_method": "summed RSS of the process tree, sampled every 50 ms (psutil)",
              "cpu_method": "user + system seconds from wait4 (the process and the children it reaped)"}
    try:
        raw = work / "raw"
        if args.raw:
            if raw.exists() or raw.is_symlink():
                raw.unlink() if raw.is_symlink() else shutil.rmtree(raw)
            raw.symlink_to(Path(args.raw).resolve())
        elif args.size == "clinical":
            result["generation"] = make_clinical_raw(raw, args.cases, args.num_processes)
        elif not raw.exists():
            subprocess.run([str(bin_dir / "textnnunet_generate_phantoms"), "--raw", str(raw), "--size", args.size,
                            "-np", str(args.num_processes), "-d", *args.datasets], check=True,
                           stdout=subprocess.DEVNULL)
        result["raw"] = describe_raw(raw, args.datasets)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "nnUNet_raw": str(raw),
               "nnUNet_preprocessed": str(work / "nnunet_pre"), "nnUNet_results": str(work / "nnunet_res"),
               "TEXTNNUNET_raw": str(raw)}
        # Both tools may cache their bytecode (a fresh nnU-Net environment would otherwise compile every module on
        # every start: 200 s of "start-up" under load); the warm-up round and the discarded import write it.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        result["startup_s"] = {
            "textnnunet": startup_seconds(sys.executable, "textnnunet.cli.plan_and_preprocess", env),
            "nnunetv2": startup_seconds(str(nnunet_python),
                                        "nnunetv2.experiment_planning.plan_and_preprocess_entrypoints", env)}
        print(f"start-up (import of the entry module): textnnunet {result['startup_s']['textnnunet']['median']:.2f} s,"
              f" nnU-Net {result['startup_s']['nnunetv2']['median']:.2f} s")
        result["rows"] = {}

        def save_partial(row, runs):
            if args.json:
                path = Path(args.json)
                everything = json.loads(path.read_text()) if path.is_file() else {}
                everything[f"{args.size}_partial"] = {**result, "rows_done": dict(result["rows"]),
                                                      "row_in_progress": row, "runs_so_far": runs}
                path.write_text(json.dumps(everything, indent=1) + "\n")

        for row in rows:
            result["rows"][row] = run_row(row, args, bin_dir, nnunet_python.parent, work, env,
                                          save=lambda runs, row=row: save_partial(row, runs))
        derive(result)
        result["loadavg_end"] = list(os.getloadavg())
        result["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
        table = markdown(args.size, result)
        result["markdown"] = table
        print()
        print(table)
        print(f"\nload average start {result['loadavg_start']} end {result['loadavg_end']}, cpus {os.cpu_count()}")
        if args.json:
            path = Path(args.json)
            everything = json.loads(path.read_text()) if path.is_file() else {}
            everything.pop(f"{args.size}_partial", None)
            everything[args.size] = result
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(everything, indent=1) + "\n")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
