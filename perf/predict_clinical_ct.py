"""Where textnnunet_predict spends its time on a clinical-size CT (issue 14, item 3).

The real CT of ../shared/realct (3 mm, 122 x 101 x 112) is resampled once to 0.8 x 0.8 x 1.5 mm (458 x 379 x 224
voxels, int16, linear interpolation, air outside; cached under --work) and predicted with the demo model:

- `cli`: `textnnunet_predict -i CT -o OUT -m MODEL -p ...` as its own process: wall seconds (interpreter start,
  imports and checkpoint loading included) and peak resident memory (the child's ru_maxrss from wait4);
- `api`: a fresh Python process that imports textnnunet, builds `TextPredictor.from_folder` and calls
  `textnnunet.inference.run.predict_cases` (what the CLI calls) with timing wrappers around the pipeline's
  functions: start-up (process creation to a loaded predictor) and seconds per stage (read, reorient in, crop,
  normalise, resample in, sliding window, resample out, uncrop + reorient out, write; "other" is the rest of the
  case: before issue 14 mostly the thresholding of the full-resolution maps, which since then happens inside
  resample out, slab by slab), peak resident memory likewise.

Each with 1 prompt (liver) and 5 prompts (liver, spleen, kidney, liver tumor, kidney tumor). One unmeasured
warm-up run first (page cache), then --repeats rounds, each round running every (mode, prompts) pair in a
rotated order (interleaved), median and spread (min-max) per pair. The JSON artefact keeps every repeat, the
inputs, the command, versions, the machine and the load average before and after each run, under the run's
--label ("before", "after", ...), so one file holds a before/after comparison. The masks of the last 5-prompt
run are kept under <work>/masks_<label>/ and, when another label's masks exist, compared (Dice per prompt).

    .venv/bin/python perf/predict_clinical_ct.py --model /work/c_demo_work/results/TextPlans_001_002_003/3d_fullres \
        --label after --repeats 3

The machine's load (os.getloadavg) is recorded because on a shared machine absolute seconds are inflated.
"""
from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _artefact import git_state, machine, package_versions  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "realct" / "ct_abdomen_3mm.nii.gz"
DEFAULT_ARTEFACT = REPO / "documentation" / "measurements" / "predict_clinical_ct.json"
TARGET_SPACING_XYZ = (0.8, 0.8, 1.5)
PROMPTS = {1: ["liver"], 5: ["liver", "spleen", "kidney", "liver tumor", "kidney tumor"]}
STAGE_ORDER = ("read", "reorient_in", "crop", "normalise", "resample_in", "sliding_window", "resample_out",
               "reorient_out", "write", "other")

# (module, attribute, stage). Functions are wrapped where the pipeline looks them up; absent names are skipped,
# so the same list serves the code before and after a change. Nested wrapped calls count once (exclusive time).
WRAPPED = [
    ("textnnunet.preprocessing.preprocessor", "read_image", "read"),
    ("textnnunet.preprocessing.preprocessor", "to_canonical", "reorient_in"),
    ("textnnunet.preprocessing.preprocessor", "crop_to_nonzero_with_mask", "crop"),
    ("textnnunet.preprocessing.preprocessor", "normalize", "normalise"),
    ("textnnunet.preprocessing.preprocessor", "resample_image", "resample_in"),
    ("textnnunet.inference.predictor", "sliding_window_predict", "sliding_window"),
    ("textnnunet.preprocessing.preprocessor", "resample_probabilities", "resample_out"),
    ("textnnunet.preprocessing.preprocessor", "resample_probability_channel", "resample_out"),
    ("textnnunet.preprocessing.preprocessor", "uncrop", "reorient_out"),
    ("textnnunet.preprocessing.preprocessor", "from_canonical", "reorient_out"),
    # After issue 14 the masks are thresholded while resampled (slab by slab): one fused stage.
    ("textnnunet.preprocessing.preprocessor", "threshold_channel", "resample_out"),
    ("textnnunet.inference.export:OutputFolder", "write", "write"),
]


# ------------------------------------------------------------------------------------------ input image
def make_clinical_ct(source: Path, target: Path) -> dict:
    """Resample `source` to 0.8 x 0.8 x 1.5 mm over the same physical extent (int16, linear, air outside)."""
    import SimpleITK as sitk

    img = sitk.ReadImage(str(source))
    old_size, old_spacing = img.GetSize(), img.GetSpacing()
    new_size = [int(round(n * s / t)) for n, s, t in zip(old_size, old_spacing, TARGET_SPACING_XYZ)]
    # Same physical box: the first voxel centre moves from half an old voxel to half a new voxel inside the edge.
    shift = [(-0.5 * s + 0.5 * t) for s, t in zip(old_spacing, TARGET_SPACING_XYZ)]
    origin = img.TransformContinuousIndexToPhysicalPoint([sh / s for sh, s in zip(shift, old_spacing)])
    out = sitk.Resample(img, new_size, sitk.Transform(), sitk.sitkLinear, origin, TARGET_SPACING_XYZ,
                        img.GetDirection(), -1024, sitk.sitkInt16)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(".tmp_" + target.name)
    sitk.WriteImage(out, str(tmp), useCompression=True)
    os.replace(tmp, target)
    return {"size_xyz": new_size, "spacing_xyz": list(TARGET_SPACING_XYZ)}


def image_info(path: Path) -> dict:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return {"file": str(path), "bytes": path.stat().st_size, "size_xyz": list(reader.GetSize()),
            "spacing_xyz": [round(s, 4) for s in reader.GetSpacing()], "direction": list(reader.GetDirection()),
            "pixel_type": sitk.GetPixelIDValueAsString(reader.GetPixelID())}


# ------------------------------------------------------------------------------------------ worker (api)
class StageTimer:
    """Exclusive wall seconds per stage over wrapped functions (thread-safe enough for one case at a time)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}  # process CPU time (all threads) during the stage
        self.local = threading.local()
        self.lock = threading.Lock()

    def wrap(self, fn, stage):
        timer = self

        def wrapped(*args, **kwargs):
            stack = getattr(timer.local, "stack", None)
            if stack is None:
                stack = timer.local.stack = []
            stack.append([0.0, 0.0])  # wall and CPU time spent in nested wrapped calls
            start, cpu_start = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
                nested, nested_cpu = stack.pop()
                if stack:
                    stack[-1][0] += elapsed
                    stack[-1][1] += cpu
                with timer.lock:
                    timer.seconds[stage] = timer.seconds.get(stage, 0.0) + elapsed - nested
                    timer.cpu_seconds[stage] = timer.cpu_seconds.get(stage, 0.0) + cpu - nested_cpu

        wrapped.__wrapped__ = fn
        return wrapped

    def install(self) -> list[str]:
        import importlib

        installed = []
        for target, attr, stage in WRAPPED:
            module_name, _, class_name = target.partition(":")
            try:
                owner = importlib.import_module(module_name)
            except ImportError:
                continue
            if class_name:
                owner = getattr(owner, class_name, None)
            if owner is not None and hasattr(owner, attr):
                setattr(owner, attr, self.wrap(getattr(owner, attr), stage))
                installed.append(f"{target}.{attr}")
        return installed


def worker(args) -> None:
    """One in-process run through the Python API; prints one JSON line."""
    import psutil

    created = psutil.Process().create_time()
    t_main = time.time()
    timer = StageTimer()
    installed = timer.install()
    from textnnunet.inference.predictor import PredictionSettings, TextPredictor
    from textnnunet.inference.run import predict_cases

    predictor = TextPredictor.from_folder(args.model, settings=PredictionSettings())
    predictor.settings.similarity_threshold = predictor.default_similarity_threshold()
    t_ready = time.time()
    start, cpu_start = time.perf_counter(), time.process_time()
    failures = predict_cases(predictor, [Path(args.input)], Path(args.output), args.prompts, verbose=False,
                             overwrite=True)
    case_seconds, case_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    import resource

    stages = dict(timer.seconds)
    stages["other"] = case_seconds - sum(stages.values())
    stages_cpu = dict(timer.cpu_seconds)
    stages_cpu["other"] = case_cpu - sum(stages_cpu.values())
    print(json.dumps({
        "failures": failures,
        "startup_s": t_ready - created,
        "interpreter_s": t_main - created,
        "case_s": case_seconds,
        "stages_s": stages,
        "stages_cpu_s": stages_cpu,
        "startup_cpu_s": cpu_start,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "wrapped": installed,
        "torch_threads": __import__("torch").get_num_threads(),
        "textnnunet_package": str(Path(__import__("textnnunet").__file__).parent),
    }))


# ------------------------------------------------------------------------------------------ runs
def run_measured(cmd: list[str], env: dict) -> tuple[float, float, str, int, float]:
    """Wall seconds, peak RSS (MB) of the child (wait4), its stdout, exit code, its CPU seconds (user + system:
    less sensitive than wall time to other processes sharing the cores)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    # Read the pipes in threads so a chatty child cannot block; wait4 gives this child's own rusage.
    out: dict[str, str] = {}
    readers = [threading.Thread(target=lambda k=k, s=s: out.__setitem__(k, s.read()))
               for k, s in (("out", proc.stdout), ("err", proc.stderr))]
    for r in readers:
        r.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    for r in readers:
        r.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.stderr.write(out.get("err", "")[-3000:])
    return wall, usage.ru_maxrss / 1024, out.get("out", ""), proc.returncode, usage.ru_utime + usage.ru_stime


def one_run(mode: str, k: int, args, ct: Path, out_dir: Path, variant: tuple[str, str] = ("current", "")) -> dict:
    shutil.rmtree(out_dir, ignore_errors=True)
    env = dict(os.environ)
    if variant[1]:  # another copy of the package, first on the path (the console script and worker honour it)
        env["PYTHONPATH"] = variant[1] + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    load_before = os.getloadavg()
    if mode == "cli":
        exe = Path(sys.executable).with_name("textnnunet_predict")
        cmd = [str(exe), "-i", str(ct), "-o", str(out_dir), "-m", str(args.model), "--quiet", "-p", *PROMPTS[k]]
        wall, rss, _, rc, cpu = run_measured(cmd, env)
        result = {"wall_s": wall, "peak_rss_mb": rss, "cpu_s": cpu}
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_worker", "--model", str(args.model),
               "--input", str(ct), "--output", str(out_dir), "--prompts", *PROMPTS[k]]
        wall, rss, stdout, rc, cpu = run_measured(cmd, env)
        result = {"wall_s": wall, "peak_rss_mb": rss, "cpu_s": cpu}
        if rc == 0:
            result.update(json.loads(stdout.strip().splitlines()[-1]))
    result.update({"variant": variant[0], "pythonpath": env.get("PYTHONPATH")})
    result.update({"mode": mode, "prompts": k, "returncode": rc, "load_before": list(load_before),
                   "load_after": list(os.getloadavg()), "command": cmd})
    return result


def dice(a, b) -> float:
    import numpy as np

    a, b = a > 0, b > 0
    denominator = int(a.sum()) + int(b.sum())
    return 1.0 if denominator == 0 else 2.0 * int(np.logical_and(a, b).sum()) / denominator


def compare_masks(folder_a: Path, folder_b: Path) -> dict:
    import SimpleITK as sitk

    result = {}
    for fa in sorted(folder_a.glob("*.nii.gz")):
        fb = folder_b / fa.name
        if not fb.is_file():
            continue
        a, b = sitk.GetArrayFromImage(sitk.ReadImage(str(fa))), sitk.GetArrayFromImage(sitk.ReadImage(str(fb)))
        result[fa.name] = {"dice": round(dice(a, b), 6), "voxels_differing": int((a != b).sum()),
                           "voxels_a": int((a > 0).sum()), "voxels_b": int((b > 0).sum())}
    return result


def summarise(repeats: list[dict]) -> dict:
    summary = {}
    variants = sorted({r.get("variant", "current") for r in repeats})
    for variant, *key in sorted({(r.get("variant", "current"), r["mode"], r["prompts"]) for r in repeats}):
        rows = [r for r in repeats if (r.get("variant", "current"), r["mode"], r["prompts"]) == (variant, *key)
                and r["returncode"] == 0]
        if not rows:
            continue
        entry = {}
        fields = [f for f in ("wall_s", "cpu_s", "peak_rss_mb") if all(f in r for r in rows)]
        fields += ["startup_s", "case_s"] if key[0] == "api" else []
        for f in fields:
            values = [r[f] for r in rows]
            entry[f] = {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
                        "max": round(max(values), 3)}
        if key[0] == "api":
            stages = {s for r in rows for s in r["stages_s"]}
            entry["stages_s"] = {s: {"median": round(statistics.median(r["stages_s"].get(s, 0.0) for r in rows), 3),
                                     "min": round(min(r["stages_s"].get(s, 0.0) for r in rows), 3),
                                     "max": round(max(r["stages_s"].get(s, 0.0) for r in rows), 3)}
                                 for s in [s for s in STAGE_ORDER if s in stages]}
            if all("stages_cpu_s" in r for r in rows):
                entry["stages_cpu_s"] = {s: round(statistics.median(r["stages_cpu_s"].get(s, 0.0) for r in rows), 3)
                                         for s in STAGE_ORDER if s in stages}
        prefix = f"{variant}_" if len(variants) > 1 else ""
        entry["repeats"] = len(rows)
        entry["load_1min"] = {"median": round(statistics.median(r["load_before"][0] for r in rows), 2),
                              "min": round(min(r["load_before"][0] for r in rows), 2),
                              "max": round(max(r["load_before"][0] for r in rows), 2)}
        summary[f"{prefix}{key[0]}_{key[1]}prompt{'s' if key[1] > 1 else ''}"] = entry
    return summary


def versions() -> dict:
    git = git_state(("textnnunet",))
    return {**package_versions(), "git_commit": git["commit"], "git_dirty_textnnunet_files": git["dirty_files"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="/work/c_demo_work/results/TextPlans_001_002_003/3d_fullres")
    p.add_argument("--source", default=str(DEFAULT_SOURCE))
    p.add_argument("--work", default="clinical_ct_work", help="cache and output folder")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--modes", nargs="+", default=["cli", "api"], choices=("cli", "api"))
    p.add_argument("--prompt_counts", nargs="+", type=int, default=[1, 5], choices=(1, 5))
    p.add_argument("--no_warmup", action="store_true")
    p.add_argument("--label", default="after", help="key of this run in the artefact (before, after, ...)")
    p.add_argument("--json", default=str(DEFAULT_ARTEFACT))
    p.add_argument("--note", default="", help="free text stored with the run")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=PATH",
                   help="compare package copies: each run once per variant (PYTHONPATH=PATH first; an empty PATH is "
                        "the installed tree), interleaved; repeatable")
    # worker mode (internal)
    p.add_argument("--_worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--input", help=argparse.SUPPRESS)
    p.add_argument("--output", help=argparse.SUPPRESS)
    p.add_argument("--prompts", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._worker:
        worker(args)
        return 0

    work = Path(args.work)
    source = Path(args.source)
    if not source.is_file():
        print(f"{source}: not found (the real CT of ../shared/realct)", file=sys.stderr)
        return 2
    if not (Path(args.model) / "plans.json").is_file():
        print(f"{args.model}: not a model folder (train the demo first: textnnunet_demo --work ...)", file=sys.stderr)
        return 2
    ct = work / "clinical_ct_0000.nii.gz"
    if not ct.is_file():
        t = time.perf_counter()
        make_clinical_ct(source, ct)
        print(f"resampled {source.name} to {ct} in {time.perf_counter() - t:.1f} s")
    variants = [tuple(v.split("=", 1)) if "=" in v else (v, "") for v in args.variant] or [("current", "")]
    pairs = [(v, m, k) for v in variants for m in args.modes for k in args.prompt_counts]
    versions_at_start = versions()  # others may commit while it runs
    if not args.no_warmup:
        print("warm-up (not recorded) ...", flush=True)
        one_run("cli", max(args.prompt_counts), args, ct, work / "out_warmup", variants[-1])
    repeats = []
    for r in range(args.repeats):
        order = pairs[r % len(pairs):] + pairs[: r % len(pairs)]  # rotate so no pair always runs first
        for variant, mode, k in order:
            out_name = f"out_{mode}_{k}" if len(variants) == 1 else f"out_{variant[0]}_{mode}_{k}"
            res = one_run(mode, k, args, ct, work / out_name, variant)
            res["repeat"] = r
            repeats.append(res)
            stage_text = ""
            if "stages_s" in res:
                stage_text = " " + " ".join(f"{s}={v:.2f}" for s, v in res["stages_s"].items())
                stage_text += f" startup={res['startup_s']:.2f}"
            print(f"[{r}] {variant[0]} {mode} {k} prompt(s): {res['wall_s']:.1f} s (cpu {res['cpu_s']:.1f} s), "
                  f"peak {res['peak_rss_mb']:.0f} MB, "
                  f"load {res['load_before'][0]:.1f}{stage_text}", flush=True)
    # Keep the 5-prompt masks of this label and compare with any other label's.
    comparisons = {}
    for variant in variants:
        name = args.label if len(variants) == 1 else f"{args.label}_{variant[0]}"
        last = next((work / (f"out_{m}_{k}" if len(variants) == 1 else f"out_{v[0]}_{m}_{k}")
                     for v, m, k in reversed(pairs) if k == max(args.prompt_counts) and v == variant), None)
        if last is None or not last.is_dir():
            continue
        kept = work / f"masks_{name}"
        shutil.rmtree(kept, ignore_errors=True)
        shutil.copytree(last, kept)
    for a, b in itertools.combinations(sorted(work.glob("masks_*")), 2):
        comparisons[f"{a.name[6:]} vs {b.name[6:]}"] = compare_masks(a, b)
    record = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": [Path(sys.executable).name, *sys.argv],
        "note": args.note,
        "variants": {name: path for name, path in variants},
        "inputs": {"source": str(source), "clinical_ct": image_info(ct), "model": str(args.model),
                   "prompts": {str(k): PROMPTS[k] for k in args.prompt_counts}, "plan": _plan_summary(args.model)},
        "versions": versions_at_start,
        "machine": machine(pythonpath=os.environ.get("PYTHONPATH")),
        "load_average_start_end": [list(repeats[0]["load_before"]) if repeats else None,
                                   list(os.getloadavg())],
        "summary": summarise(repeats),
        "masks_compared_with": comparisons,
        "repeats": repeats,
    }
    artefact = Path(args.json)
    artefact.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(artefact.read_text()) if artefact.is_file() else {}
    data.setdefault("description", __doc__.strip().split("\n\n")[0])
    data.setdefault("runs", {})[args.label] = record
    tmp = artefact.with_name("." + artefact.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, artefact)
    print(json.dumps(record["summary"], indent=1))
    if comparisons:
        print(json.dumps(comparisons, indent=1))
    print(f"wrote {artefact} (run '{args.label}')")
    return 0


def _plan_summary(model: str) -> dict:
    plans = json.loads((Path(model) / "plans.json").read_text())
    c = plans["configurations"].get("3d_fullres", {})
    return {"plans_name": plans.get("plans_name"), "spacing": c.get("spacing"), "patch_size": c.get("patch_size"),
            "features_per_stage": c.get("architecture", {}).get("features_per_stage"),
            "resampling": c.get("resampling")}


if __name__ == "__main__":
    sys.exit(main())
