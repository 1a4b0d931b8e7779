"""textnnunet_predict with 1, 3 and 5 prompts against nnU-Net v2's nnUNetv2_predict on the same image (issue 4).

Seconds per case and peak memory, each tool run as its own command on a one-image input folder, measured
end to end (wall time includes interpreter start, imports, loading the checkpoint, preprocessing, sliding
window with test-time mirroring, resampling back and writing the files; peak memory is the summed resident set
of the whole process tree, sampled every 50 ms). Neither tool prints a comparable in-process time (their
progress bars, kept in the warm-up logs under <work>/logs, cover different parts), so the in-process figure is
an estimate: the script also times `python -c "import <the tool's prediction modules>"` in each environment and
reports wall minus that start-up.

nnU-Net side (in its own environment, perf/.nnunet_env, installed on first use; work folder --work):
 1. nnUNetv2_plan_and_preprocess --no_pp for one demo dataset (default 3 = Kidney: kidney + kidney tumour);
 2. a plans file "nnUNetPlans_textnnunet_size" whose 3d_fullres network has the universal model's size: its patch
    and batch size, target spacing (--nnunet_spacing keeps nnU-Net's own), features per stage, strides, kernel
    sizes and convolutions per stage, same backbone class (values permuted by nnU-Net's transpose_forward);
 3. nnUNetv2_preprocess with it and a brief nnUNetv2_train (--trainer, default nnUNetTrainer_1epoch: 250
    iterations + 50 validation iterations + validation) so that a real checkpoint exists.
Each step is skipped when its output exists (re-runs resume); a changed plans file redoes step 3.
textnnunet side: the trained universal model (--model), fold --fold, prompts liver / liver spleen kidney /
liver spleen kidney "liver tumor" "kidney tumor".

Fairness: same device (--device, default cpu), same input folder, fold 0 only, each tool's default mirroring TTA
(or --disable_tta for both), one preprocessing and one export worker each (-npp 1 -nps 1; nnU-Net's are spawned
processes, which it cannot do without, textnnunet's are threads). nnU-Net's CLI sets torch threads to
multiprocessing.cpu_count() on the CPU whatever the environment says; textnnunet leaves torch's default, so the
script sets OMP_NUM_THREADS=cpu_count for both (the probe in the JSON records what each ends up with). The
mirror axes differ by default: nnU-Net mirrors all 3 axes (8 passes per window), textnnunet all but left-right
(4 passes); the JSON records both, --disable_tta compares the same work. Repeats are interleaved (order rotated
each round) after one unmeasured warm-up per command; medians are reported. nnU-Net needs one model per
dataset, so "nnU-Net x3 models" (liver, spleen, kidney) is 3 x the measured single-model time, not a measurement.

    .venv/bin/python perf/predict_vs_nnunet.py                   # demo data and model, 3 repeats
    .venv/bin/python perf/predict_vs_nnunet.py --repeats 5 --json predict_vs_nnunet.json
    .venv/bin/python perf/predict_vs_nnunet.py --disable_tta    # the same number of passes for both

Quick check on tiny data (minutes on 2 cores; the numbers mean nothing):

    .venv/bin/textnnunet_generate_phantoms --raw /tmp/pvn/raw --size small
    .venv/bin/textnnunet_plan_and_preprocess -d 1 2 3 -c 3d_fullres --no_baselines --preset cpu \
        --raw /tmp/pvn/raw --preprocessed /tmp/pvn/pre
    .venv/bin/textnnunet_train 3d_fullres 0 --epochs 1 --iters_per_epoch 2 --val_iters_per_epoch 1 --device cpu \
        --skip_validation --raw /tmp/pvn/raw --preprocessed /tmp/pvn/pre --results /tmp/pvn/res
    .venv/bin/python perf/predict_vs_nnunet.py --work /tmp/pvn/work --raw /tmp/pvn/raw \
        --model /tmp/pvn/res/TextPlans_001_002_003/3d_fullres --trainer nnUNetTrainer_textnnunetTiny --repeats 1

nnU-Net finds trainers by importing its trainer modules; its primus/ package needs timm, which the benchmark
environment leaves out, so the script writes one module into that environment's nnunetv2 package
(training/nnUNetTrainer/nnUNetTrainer_textnnunet_benchmark.py) that re-exports nnU-Net's own training-length
trainers (nnUNetTrainer_1epoch, _5epochs, ...) where the search finds them first, and adds
nnUNetTrainer_textnnunetTiny (1 epoch of 2 iterations, 1 validation iteration), for quick checks only.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _artefact import cpu_name, git_state  # noqa: E402
from plan_and_preprocess_vs_nnunet import ensure_nnunet_env, run_measured  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PLANS_ID = "nnUNetPlans_textnnunet_size"
CONFIGURATION = "3d_fullres"
PROMPT_SETS = {1: ["liver"], 3: ["liver", "spleen", "kidney"],
               5: ["liver", "spleen", "kidney", "liver tumor", "kidney tumor"]}
TINY_TRAINER = "nnUNetTrainer_textnnunetTiny"
SHIM_MODULE = "nnUNetTrainer_textnnunet_benchmark"
SHIM_SOURCE = f'''"""Written by textnnunet's perf/predict_vs_nnunet.py (safe to delete).

nnU-Net finds a trainer by name by importing the modules under nnunetv2/training/nnUNetTrainer: first the
top-level modules, then the subpackages in alphabetical order. primus/ imports timm, which the benchmark
environment leaves out (it pulls torchvision and a CUDA torch), and comes before variants/, so a trainer from
variants/ (nnUNetTrainer_1epoch, ...) is only found, in training and in prediction, when a top-level module such
as this one re-exports it. The classes are nnU-Net's own, unchanged.
"""
import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.training.nnUNetTrainer.variants.training_length.nnUNetTrainer_Xepochs import *  # noqa: F401,F403
from nnunetv2.training.nnUNetTrainer.variants.training_length.nnUNetTrainer_Xepochs_NoMirroring import *  # noqa


class {TINY_TRAINER}(nnUNetTrainer):
    """For quick checks of the benchmark script only: 1 epoch of 2 training and 1 validation iteration."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 1
        self.num_iterations_per_epoch = 2
        self.num_val_iterations_per_epoch = 1
'''
NNUNET_PROBE = r"""
import json, multiprocessing, sys, importlib.metadata as md
import torch
out = {"torch": torch.__version__, "nnunetv2": md.version("nnunetv2"),
       "torch_threads_default": torch.get_num_threads(),
       "torch_threads_predict": multiprocessing.cpu_count(),  # nnUNetv2_predict -device cpu sets this
       "python": sys.version.split()[0]}
ckpt = torch.load(sys.argv[1], map_location="cpu", weights_only=False)
out["mirror_axes"] = list(ckpt.get("inference_allowed_mirroring_axes") or [])
out["trainer"] = ckpt.get("trainer_name")
print(json.dumps(out))
"""
TEXTNNUNET_PROBE = r"""
import json, sys
import torch
from textnnunet.training.config import TrainingConfig
ckpt = torch.load(sys.argv[1], map_location="cpu", weights_only=False)
config = TrainingConfig.from_json(ckpt["training_config"])
print(json.dumps({"torch": torch.__version__, "torch_threads_default": torch.get_num_threads(),
                  "torch_threads_predict": torch.get_num_threads(),  # textnnunet_predict does not change it
                  "mirror_axes": config.resolved_mirror_axes(int(sys.argv[2])), "backbone": config.backbone,
                  "python": sys.version.split()[0]}))
"""
IMPORTS = {"nnunetv2": "import nnunetv2.inference.predict_from_raw_data",
           "textnnunet": "import textnnunet.cli.predict, textnnunet.inference.predictor, textnnunet.inference.run"}


def log(msg: str) -> None:
    print(msg, flush=True)


def run_logged(cmd: list[str], env: dict, logfile: Path) -> None:
    """Run an unmeasured setup step, output to logfile; raise with its tail on failure."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with open(logfile, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        rc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        tail = logfile.read_text()[-3000:]
        raise RuntimeError(f"{Path(cmd[0]).name} failed (exit {rc}); log {logfile}:\n{tail}")


def find_dataset(raw: Path, dataset_id: int) -> str:
    found = sorted(p.name for p in raw.glob(f"Dataset{dataset_id:03d}_*") if p.is_dir())
    if len(found) != 1:
        raise SystemExit(f"{raw}: expected one Dataset{dataset_id:03d}_* folder, found {found or 'none'}")
    return found[0]


def sized_plans(nnunet_plans: dict, ours: dict, backbone: str, keep_nnunet_spacing: bool) -> dict:
    """nnU-Net's plans with one 3d_fullres configuration whose network and patch are the universal model's.

    Our plan's axes are textnnunet's array axes (z, y, x of the reoriented image); nnU-Net's configuration values
    are in its transposed order (transpose_forward puts the coarsest axis first), so ours are permuted into it.
    """
    arch = ours["architecture"]
    if arch.get("conv_dims", 3) != 3:
        raise SystemExit("the universal model is not 3D; this benchmark compares 3d_fullres networks")
    tf = list(nnunet_plans.get("transpose_forward", [0, 1, 2]))

    def perm(v):
        return [v[t] for t in tf]

    plans = json.loads(json.dumps(nnunet_plans))
    plans["plans_name"] = PLANS_ID
    config = plans["configurations"][CONFIGURATION]
    config["data_identifier"] = f"{PLANS_ID}_{CONFIGURATION}"
    config["patch_size"] = perm(ours["patch_size"])
    config["batch_size"] = int(ours["batch_size"])
    if not keep_nnunet_spacing:
        config["spacing"] = perm(ours["spacing"])
    kwargs = config["architecture"]["arch_kwargs"]
    kwargs.update(n_stages=arch["n_stages"], features_per_stage=list(arch["features_per_stage"]),
                  kernel_sizes=[perm(k) for k in arch["kernel_sizes"]], strides=[perm(s) for s in arch["strides"]],
                  n_conv_per_stage_decoder=list(arch["n_conv_per_stage_decoder"]))
    if backbone == "ResidualEncoderUNet":  # textnnunet reads n_conv_per_stage as residual blocks per stage
        kwargs.pop("n_conv_per_stage", None)
        kwargs["n_blocks_per_stage"] = list(arch["n_conv_per_stage"])
        config["architecture"]["network_class_name"] = \
            "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
    else:
        kwargs["n_conv_per_stage"] = list(arch["n_conv_per_stage"])
        config["architecture"]["network_class_name"] = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
    plans["configurations"] = {CONFIGURATION: config}  # no 2d / lowres / cascade to preprocess or train
    return plans


def install_trainer_shim(nnunet_python: Path) -> None:
    """Make nnU-Net's variants/ trainers (and the tiny one) findable without timm; see SHIM_SOURCE."""
    out = subprocess.run([str(nnunet_python), "-c", "import nnunetv2, os; print(os.path.dirname(nnunetv2.__file__))"],
                         check=True, capture_output=True, text=True).stdout.strip()
    path = Path(out) / "training" / "nnUNetTrainer" / f"{SHIM_MODULE}.py"
    if not path.is_file() or path.read_text() != SHIM_SOURCE:
        path.write_text(SHIM_SOURCE)


def prepare_nnunet(args, nnunet_bin: Path, env: dict, ours_config: dict, backbone: str) -> Path:
    """Plan, write the sized plans, preprocess, train; each step skipped when done. Returns the fold folder."""
    work, logs = Path(args.work), Path(args.work) / "logs"
    dataset = find_dataset(Path(args.raw), args.dataset)
    pre = Path(env["nnUNet_preprocessed"]) / dataset
    if not (pre / "nnUNetPlans.json").is_file():
        log(f"nnU-Net: fingerprint and plan {dataset} (log {logs / 'setup.log'})")
        run_logged([str(nnunet_bin / "nnUNetv2_plan_and_preprocess"), "-d", str(args.dataset), "-c", CONFIGURATION,
                    "-npfp", str(args.np), "-np", str(args.np), "--no_pp"], env, logs / "setup.log")
    plans = sized_plans(json.loads((pre / "nnUNetPlans.json").read_text()), ours_config, backbone,
                        args.nnunet_spacing)
    plans_file = pre / f"{PLANS_ID}.json"
    data_folder = pre / plans["configurations"][CONFIGURATION]["data_identifier"]
    model = Path(env["nnUNet_results"]) / dataset / f"{args.trainer}__{PLANS_ID}__{CONFIGURATION}"
    done = work / "markers" / f"preprocessed_{dataset}"
    if not plans_file.is_file() or json.loads(plans_file.read_text()) != plans:
        if plans_file.is_file():
            log(f"nnU-Net: {plans_file.name} changed (another model size?): preprocessing and training again")
        for stale in [data_folder, *Path(env["nnUNet_results"]).glob(f"{dataset}/*__{PLANS_ID}__*")]:
            shutil.rmtree(stale, ignore_errors=True)
        done.unlink(missing_ok=True)
        plans_file.write_text(json.dumps(plans, indent=2))
    if not done.is_file():
        log(f"nnU-Net: preprocess {dataset} with {PLANS_ID}")
        run_logged([str(nnunet_bin / "nnUNetv2_preprocess"), "-d", str(args.dataset), "-plans_name", PLANS_ID,
                    "-c", CONFIGURATION, "-np", str(args.np)], env, logs / "setup.log")
        done.parent.mkdir(parents=True, exist_ok=True)
        done.write_text("ok\n")
    # nnU-Net trains on textnnunet's folds, so its validation predictions can be imported into
    # textnnunet_benchmark (--nnunet_model) and scored on the same held-out cases.
    ours_splits = Path(args.model) / "splits_final.json"
    if ours_splits.is_file():
        splits = json.loads(ours_splits.read_text()).get(dataset)
        if splits and (not (pre / "splits_final.json").is_file()
                       or json.loads((pre / "splits_final.json").read_text()) != splits):
            (pre / "splits_final.json").write_text(json.dumps(splits, indent=2))
    fold = model / f"fold_{args.fold}"
    if not (fold / "checkpoint_final.pth").is_file():
        log(f"nnU-Net: train {args.trainer} fold {args.fold} on {args.device} (log {logs / 'train.log'}; "
            "nnUNetTrainer_1epoch takes minutes on a few cores)")
        run_logged([str(nnunet_bin / "nnUNetv2_train"), str(args.dataset), CONFIGURATION, str(args.fold),
                    "-p", PLANS_ID, "-tr", args.trainer, "-device", args.device], env, logs / "train.log")
    return fold


def with_cases(name: str, cases: int) -> str:
    """The measurement's key: the tool (and prompt count), with '@<cases>' for input folders of several cases."""
    return name if cases == 1 else f"{name}@{cases}"


def make_input_folder(folder: Path, image: Path, case: str, ending: str, cases: int) -> Path:
    """`cases` copies of the image (case, case_copy1, ...): every copy is predicted as a case of its own."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i in range(cases):
        shutil.copy(image, folder / f"{case}{'' if i == 0 else f'_copy{i}'}_0000{ending}")
    return folder


def steady_state(measured: dict, case_counts: list[int], tools: list[str]) -> dict:
    """Per-case seconds from the largest and the smallest input folder (median walls), and the fixed rest."""
    if len(case_counts) < 2:
        return {}
    low, high = case_counts[0], case_counts[-1]
    rows = {}
    for tool in tools:
        t_low = measured[with_cases(tool, low)]["median_wall_seconds"]
        t_high = measured[with_cases(tool, high)]["median_wall_seconds"]
        per_case = (t_high - t_low) / (high - low)
        rows[tool] = {"per_case_seconds": per_case, "fixed_seconds": t_low - low * per_case,
                      "from_cases": [low, high]}
    if "nnunetv2" in rows:
        for tool in tools[1:]:
            rows[tool]["per_case_over_nnunetv2"] = rows[tool]["per_case_seconds"] / rows["nnunetv2"]["per_case_seconds"]
    return rows


def probe(python: Path, code: str, argv: list[str], env: dict) -> dict:
    out = subprocess.run([str(python), "-c", code, *argv], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="/tmp/predict_vs_nnunet", help="nnU-Net folders, outputs, logs (kept; re-runs "
                   "resume)")
    p.add_argument("--raw", default=str(REPO / "demo_work" / "raw"), help="nnU-Net raw folder with the datasets")
    p.add_argument("--model", default=str(REPO / "demo_work" / "results" / "TextPlans_001_002_003" / CONFIGURATION),
                   help="textnnunet model folder (its plans.json sizes nnU-Net's network)")
    p.add_argument("-d", "--dataset", type=int, default=3, help="nnU-Net dataset id to train on (default 3, Kidney)")
    p.add_argument("--image", help="test image (default: the first Dataset004_Abdomen/imagesTs image)")
    p.add_argument("-f", "--fold", default="0")
    p.add_argument("--trainer", default="nnUNetTrainer_1epoch",
                   help=f"nnU-Net trainer (nnUNetTrainer_5epochs, ...; {TINY_TRAINER} for quick checks)")
    p.add_argument("--nnunet_spacing", action="store_true", help="keep nnU-Net's planned target spacing")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--disable_tta", action="store_true", help="no mirroring for either tool")
    p.add_argument("--combined", action="store_true",
                   help="textnnunet writes one label map per case (like nnU-Net) instead of one mask per prompt")
    p.add_argument("--prompt_counts", type=int, nargs="+", default=[1, 3, 5], choices=sorted(PROMPT_SETS))
    p.add_argument("--case_counts", type=int, nargs="+", default=[1],
                   help="input folders holding this many copies of the image (e.g. 1 3): each command runs on each, "
                        "and the difference gives the per-case steady-state time apart from start-up")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1, help="unmeasured runs of each command first")
    p.add_argument("-np", type=int, default=2, help="processes for nnU-Net's planning and preprocessing")
    p.add_argument("--prepare_only", action="store_true",
                   help="only plan, preprocess and train the nnU-Net model (the steps that need no idle machine)")
    p.add_argument("--json", help="results file (default: <work>/predict_vs_nnunet.json)")
    args = p.parse_args()

    work = Path(args.work).resolve()
    args.work = str(work)
    raw, model = Path(args.raw).resolve(), Path(args.model).resolve()
    args.raw = str(raw)
    ours_plans = json.loads((model / "plans.json").read_text())
    ours_config = ours_plans["configurations"][model.name.split("__")[0]]
    ckpt_ours = model / f"fold_{args.fold}" / "checkpoint_final.pth"
    if not ckpt_ours.is_file():
        raise SystemExit(f"{ckpt_ours}: not found (train the universal model first)")
    nnunet_python = ensure_nnunet_env()
    install_trainer_shim(nnunet_python)
    nnunet_bin, ours_bin = nnunet_python.parent, Path(sys.executable).parent
    threads = os.cpu_count() or 1
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "nnUNet_raw": str(raw),
           "nnUNet_preprocessed": str(work / "nnUNet_preprocessed"), "nnUNet_results": str(work / "nnUNet_results"),
           "nnUNet_n_proc_DA": str(args.np), "nnUNet_compile": "f"}
    env.pop("MKL_NUM_THREADS", None)
    ours_probe = probe(sys.executable, TEXTNNUNET_PROBE, [str(ckpt_ours), str(len(ours_config["patch_size"]))], env)

    fold_folder = prepare_nnunet(args, nnunet_bin, env, ours_config, ours_probe["backbone"])
    nnunet_probe = probe(nnunet_python, NNUNET_PROBE, [str(fold_folder / "checkpoint_final.pth")], env)
    if args.prepare_only:
        log(f"nnU-Net model ready: {fold_folder}")
        return

    image = Path(args.image) if args.image else sorted((raw / "Dataset004_Abdomen" / "imagesTs").glob("*_0000.*"))[0]
    case = image.name.split("_0000.")[0] if "_0000." in image.name else image.name.split(".")[0]
    ending = image.name[image.name.index("."):]
    case_counts = sorted(set(args.case_counts) | {1})  # the one-case folder is the main row
    input_folders = {n: make_input_folder(work / ("input" if n == 1 else f"input_{n}"), image, case, ending, n)
                     for n in case_counts}
    tta = ["--disable_tta"] if args.disable_tta else []

    def out(name):
        return work / "predictions" / name

    commands, expected, cases_of = {}, {}, {}
    for n, inputs in input_folders.items():
        name = with_cases("nnunetv2", n)
        commands[name] = [str(nnunet_bin / "nnUNetv2_predict"), "-i", str(inputs), "-o", str(out(name)),
                          "-d", str(args.dataset), "-c", CONFIGURATION, "-f", str(args.fold), "-tr", args.trainer,
                          "-p", PLANS_ID, "-device", args.device, "-npp", "1", "-nps", "1", *tta]
        expected[name], cases_of[name] = n, n
        for k in args.prompt_counts:
            name = with_cases(f"textnnunet_{k}", n)
            commands[name] = [str(ours_bin / "textnnunet_predict"), "-i", str(inputs), "-o", str(out(name)),
                              "-m", str(model), "-f", str(args.fold), "-p", *PROMPT_SETS[k], "--device", args.device,
                              "-npp", "1", "-nps", "1", *tta, *(["--combined"] if args.combined else [])]
            expected[name], cases_of[name] = n * (1 if args.combined else k), n
    imports = {"import_nnunetv2": [str(nnunet_python), "-c", IMPORTS["nnunetv2"]],
               "import_textnnunet": [sys.executable, "-c", IMPORTS["textnnunet"]]}

    def check_outputs(name):
        n = len(list(out(name).glob(f"{case}*{ending}")))  # the copies' names start with the case's
        if n != expected[name]:
            raise RuntimeError(f"{name}: expected {expected[name]} output file(s) in {out(name)}, found {n}")

    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for _ in range(args.warmup):  # file caches, and a chance to see what each tool says
        for name, cmd in commands.items():
            shutil.rmtree(out(name), ignore_errors=True)
            r = subprocess.run(cmd, env=env, capture_output=True, text=True)
            (logs / f"warmup_{name}.log").write_text(f"$ {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
            if r.returncode != 0:
                raise RuntimeError(f"{name} failed (exit {r.returncode}):\n{(r.stdout + r.stderr)[-3000:]}")
            check_outputs(name)
            if name.startswith("textnnunet") and ("zero-shot" in r.stdout or "cosine" in r.stdout):
                log(f"warning: {name}: a prompt was not a trained class or synonym:\n{r.stdout}")

    load_before = os.getloadavg()
    measured = {name: {"wall_seconds": [], "cpu_seconds": [], "peak_rss_gib": []} for name in [*commands, *imports]}
    names = list(commands) + list(imports)
    for r in range(args.repeats):
        order = names[r % len(names):] + names[:r % len(names)]  # rotated, so drift spreads over every command
        for name in order:
            if name in commands:
                shutil.rmtree(out(name), ignore_errors=True)
            m = run_measured(commands.get(name) or imports[name], env)
            if name in commands:
                check_outputs(name)
            measured[name]["wall_seconds"].append(m["wall_s"])
            measured[name]["cpu_seconds"].append(m["cpu_s"])  # user + system of the process tree (wait4)
            measured[name]["peak_rss_gib"].append(m["peak_rss_gib"])
        log(f"round {r + 1}/{args.repeats}: " + ", ".join(f"{n} {measured[n]['wall_seconds'][-1]:.1f} s"
                                                          for n in names))
    load_after = os.getloadavg()
    for m in measured.values():
        m["median_wall_seconds"] = statistics.median(m["wall_seconds"])
        m["median_cpu_seconds"] = statistics.median(m["cpu_seconds"])
        m["median_peak_rss_gib"] = statistics.median(m["peak_rss_gib"])
    startup = {"nnunetv2": measured["import_nnunetv2"]["median_wall_seconds"],
               "textnnunet": measured["import_textnnunet"]["median_wall_seconds"]}
    for name in commands:
        tool = "nnunetv2" if name.startswith("nnunetv2") else "textnnunet"
        measured[name]["command"] = commands[name]
        measured[name]["cases"] = cases_of[name]
        measured[name]["median_wall_minus_startup_seconds"] = measured[name]["median_wall_seconds"] - startup[tool]
    per_case = steady_state(measured, case_counts, ["nnunetv2", *(f"textnnunet_{k}" for k in args.prompt_counts)])
    for name, row in per_case.items():
        log(f"{name}: {row['per_case_seconds']:.2f} s per further case (from {row['from_cases']} cases), "
            f"{row['fixed_seconds']:.2f} s fixed (start-up, checkpoint, first-case overheads)")

    nn = measured["nnunetv2"]
    rows = [("nnU-Net v2, one model (" + find_dataset(raw, args.dataset) + ")", nn)]
    rows += [(f"textnnunet, {k} prompt{'s' * (k > 1)}", measured[f"textnnunet_{k}"]) for k in args.prompt_counts]
    log(f"\nimage {image.name}, device {args.device}, {threads} torch threads each, fold {args.fold}, TTA "
        + ("off" if args.disable_tta else f"on (mirror axes nnU-Net {nnunet_probe['mirror_axes']}, textnnunet "
                                          f"{ours_probe['mirror_axes']})") + f", median of {args.repeats}")
    log(f"{'':42s} {'wall s':>8s} {'minus start-up':>15s} {'peak GiB':>9s}")
    for label, m in rows:
        log(f"{label:42s} {m['median_wall_seconds']:8.2f} {m['median_wall_minus_startup_seconds']:15.2f} "
            f"{m['median_peak_rss_gib']:9.2f}")
    log(f"{'nnU-Net v2, x3 models (3 x measured one)':42s} {3 * nn['median_wall_seconds']:8.2f} "
        f"{3 * nn['median_wall_minus_startup_seconds']:15.2f}")
    log(f"start-up (python -c 'import ...' of the prediction modules): nnU-Net {startup['nnunetv2']:.2f} s, "
        f"textnnunet {startup['textnnunet']:.2f} s; wall includes interpreter start and imports for both")

    ratios = {}

    def wall_ratio(key: str, label: str, numerator: dict, denominator: dict, target: str) -> None:
        """Ratio of median wall times, with and without start-up, stored under `key` and printed."""
        ratios[key] = numerator["median_wall_seconds"] / denominator["median_wall_seconds"]
        ratios[key + "_minus_startup"] = (numerator["median_wall_minus_startup_seconds"]
                                          / denominator["median_wall_minus_startup_seconds"])
        log(f"{label}: {ratios[key]:.2f}x wall ({ratios[key + '_minus_startup']:.2f}x minus start-up)   {target}")

    if 1 in args.prompt_counts:
        one = measured["textnnunet_1"]
        wall_ratio("textnnunet_1_over_nnunet", "textnnunet 1 prompt / nnU-Net", one, nn, "target <= 1.0")
        if 5 in args.prompt_counts:
            wall_ratio("textnnunet_5_over_1", "textnnunet 5 prompts / 1 prompt", measured["textnnunet_5"], one,
                       "target < 1.3")
    if 5 in args.prompt_counts:
        ratios["textnnunet_5_over_nnunet_x3"] = measured["textnnunet_5"]["median_wall_seconds"] / (
            3 * nn["median_wall_seconds"])
        log(f"textnnunet 5 prompts / nnU-Net x3 models (3 x measured): {ratios['textnnunet_5_over_nnunet_x3']:.2f}x")
    for k in args.prompt_counts:
        ratios[f"memory_textnnunet_{k}_over_nnunet"] = (measured[f"textnnunet_{k}"]["median_peak_rss_gib"]
                                                        / nn["median_peak_rss_gib"])
    log("peak memory: summed RSS of each process tree (nnU-Net spawns a preprocessing and an export process)")
    if load_before[0] > 0.5 * threads or load_after[0] > 0.5 * threads:
        log(f"note: load average {load_before[0]:.1f} before / {load_after[0]:.1f} after on {threads} CPUs: "
            "other processes were running, so the timings are contended")

    results = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": [sys.executable, *sys.argv],
        "machine": {"cpu": cpu_name(), "cpu_count": threads, "platform": platform.platform(),
                    "load_average_before": load_before, "load_average_after": load_after},
        "settings": {"device": args.device, "fold": args.fold, "tta": not args.disable_tta, "repeats": args.repeats,
                     "warmup": args.warmup, "image": str(image), "combined": args.combined,
                     "case_counts": case_counts,
                     "OMP_NUM_THREADS": env["OMP_NUM_THREADS"], "npp": 1, "nps": 1, "prompts": {
                         f"textnnunet_{k}": PROMPT_SETS[k] for k in args.prompt_counts}},
        "nnunetv2": {**nnunet_probe, "dataset": find_dataset(raw, args.dataset), "plans": PLANS_ID,
                     "model_folder": str(fold_folder.parent), "trainer_requested": args.trainer,
                     "spacing": "nnU-Net's own" if args.nnunet_spacing else "the universal model's",
                     "configuration": json.loads((work / "nnUNet_preprocessed" / find_dataset(raw, args.dataset)
                                                  / f"{PLANS_ID}.json").read_text())["configurations"][CONFIGURATION]},
        "textnnunet": {**ours_probe, "model_folder": str(model), "git": git_state(),
                       "configuration": ours_config},
        "startup_seconds": startup,
        "measurements": measured,
        "nnunetv2_x3_models_wall_seconds": 3 * nn["median_wall_seconds"],
        "nnunetv2_x3_note": "3 x the measured single-model time (liver, spleen, kidney need three nnU-Net models)",
        "ratios": ratios,
        "steady_state": per_case,
        "notes": "wall includes interpreter start, imports and checkpoint loading for both tools; 'minus start-up' "
                 "subtracts the median time of `python -c 'import <prediction modules>'` in each environment. "
                 "Neither tool prints a comparable in-process time: the warm-up logs under <work>/logs keep each "
                 "tool's own progress bar (textnnunet: reading + preprocessing + network per case; nnU-Net: the "
                 "sliding-window loop only). Peak memory sums RSS over the process tree, so libraries shared by "
                 "nnU-Net's spawned worker processes are counted once per process.",
    }
    json_path = Path(args.json) if args.json else work / "predict_vs_nnunet.json"
    json_path.write_text(json.dumps(results, indent=2))
    log(f"written {json_path}")


if __name__ == "__main__":
    main()
