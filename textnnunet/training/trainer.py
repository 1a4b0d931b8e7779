"""The trainer: nnU-Net's loop, schedule, augmentation, checkpoints, logs and DDP around a model + loss step.

Kept small on purpose: the maths (loss, sampling, augmentation, learning rate) lives in pure functions
elsewhere, and what the network predicts and how it is judged is the step's (training/step.py: the universal
model's `UniversalStep`, the softmax baseline's `SoftmaxStep`); this file wires them, loops, checkpoints and resumes.
"""
from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from textnnunet.errors import UserError
from textnnunet.network.deep_supervision import DDP_LOWEST_WEIGHT, deep_supervision_weights
# The checkpoint names stay importable from here (paths.py defines them with the rest of the model folder).
from textnnunet.paths import CHECKPOINT_BEST, CHECKPOINT_FINAL, CHECKPOINT_LATEST, FoldFolder  # noqa: F401
from textnnunet.training.augmentation import augmentation_preset, get_training_transforms, get_validation_transforms
from textnnunet.training.config import TrainingConfig
from textnnunet.training.dataloading import TrainingBatchIterator
from textnnunet.training.loss import DeepSupervisionLoss, downsample_targets
from textnnunet.training.progress import TextLog, TrainingHistory, mean_ignoring_nan, plot_progress, update_ema
from textnnunet.training.sampling import CaseRef
from textnnunet.training.step import TrainingStep, as_step, class_names_of, pseudo_dice_counts
from textnnunet.training.unpacking import unpack_cases
from textnnunet.utils.files import atomic_path, atomic_write_json
from textnnunet.utils.plans import Plans


@dataclass(frozen=True)
class DistributedContext:
    """Filled by the CLI from torchrun's variables; the trainer never reads the environment itself."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(requested: str, dist: DistributedContext) -> torch.device:
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device is available (use --device cpu)")
        return torch.device("cuda", dist.local_rank)
    if requested != "cpu":
        raise UserError(f"--device {requested}: expected auto, cpu or cuda")
    return torch.device("cpu")


def poly_lr(epoch: int, max_epochs: int, initial_lr: float, exponent: float = 0.9) -> float:
    """nnU-Net's polynomial decay, evaluated at the start of each epoch."""
    return initial_lr * (1 - epoch / max_epochs) ** exponent


def collect_case_refs(cases_folder: Path, case_ids_by_dataset: dict[str, list[str]]) -> list[CaseRef]:
    refs = []
    for dataset, ids in case_ids_by_dataset.items():
        for case_id in ids:
            npz, js = cases_folder / dataset / f"{case_id}.npz", cases_folder / dataset / f"{case_id}.json"
            if not (npz.is_file() and js.is_file()):
                raise UserError(f"{npz}: preprocessed case missing (run textnnunet_plan_and_preprocess or "
                                f"textnnunet_preprocess for this plan and configuration)")
            refs.append(CaseRef(dataset=dataset, case_id=case_id, npz_path=npz, json_path=js))
    return refs


def dice_from_counts(counts: torch.Tensor, class_names: list[str], seen: torch.Tensor) -> dict[str, float]:
    tp, fp, fn = counts
    out = {}
    for k, name in enumerate(class_names):
        denom = float(2 * tp[k] + fp[k] + fn[k])
        out[name] = float(2 * tp[k]) / denom if (seen[k] and denom > 0) else float("nan")
    return out


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Trains fold `fold` of the model `step` defines on the plan's configuration `configuration`.

    `step`: a `TrainingStep` (training/step.py), or the class embeddings (K, E) of the universal model, one per class
    of the plan's label space computed once by the caller with the chosen encoder.
    """

    def __init__(self, plans: Plans | dict, configuration: str, fold: int | str, cases_folder: Path,
                 train_cases: dict[str, list[str]], val_cases: dict[str, list[str]], output_folder: Path,
                 config: TrainingConfig, step: TrainingStep | np.ndarray,
                 dist: DistributedContext = DistributedContext(), echo: bool = True):
        plans = Plans.of(plans)
        if not plans.has_configuration(configuration):
            raise UserError(f"configuration '{configuration}' is not in plan {plans.plans_name} "
                            f"(available: {', '.join(plans.configuration_names)})")
        self.plans, self.configuration_name, self.fold = plans, configuration, fold
        self.cfg_plan = plans.configuration(configuration)
        self.config, self.dist, self.echo = config, dist, echo
        self.output_folder = Path(output_folder)
        self.class_names = class_names_of(plans)
        self.device = resolve_device(config.device, dist)
        self.step = as_step(step)
        self.step.setup(plans, configuration, config, self.class_names, self.device)
        self.log = TextLog(FoldFolder(self.output_folder).log_file, echo=echo and dist.is_main) if dist.is_main else (lambda *a: None)
        self.history = TrainingHistory()
        self.start_epoch = 0
        self.best_ema = -1.0
        self.train_refs = collect_case_refs(cases_folder, train_cases)
        self.val_refs = collect_case_refs(cases_folder, {d: v for d, v in val_cases.items() if v})
        seed_everything(config.seed + dist.rank)
        self.network = self._build_network()
        self.optimizer = torch.optim.SGD(self.network.parameters(), lr=config.initial_lr, momentum=config.momentum,
                                         nesterov=True, weight_decay=config.weight_decay)
        self.autocast_dtype = self._autocast_dtype()
        self.grad_scaler = torch.amp.GradScaler("cuda") if self.autocast_dtype == torch.float16 else None
        self.loss = self._build_loss()
        self.train_iter, self.val_iter = self._build_iterators()

    # ----------------------------------------------------------------------------------------- set-up
    def _build_network(self) -> nn.Module:
        self.memory_format = self.config.resolved_memory_format(
            self.device.type, self.cfg_plan.architecture["conv_dims"])
        net = self.step.build_network(self.cfg_plan.architecture, self.plans.num_channels)
        net = net.to(self.device, memory_format=self.memory_format)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = self.config.cudnn_benchmark
        self.raw_network = net
        if self.config.compile and self.device.type == "cuda":
            net = torch.compile(net)
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # With deep supervision every parameter gets a gradient each step (the lowest output keeps a tiny weight
            # under DDP, _build_loss), so DDP need not search the graph for unused ones; without it the lower
            # outputs' heads are not reached.
            net = torch.nn.parallel.DistributedDataParallel(
                net, device_ids=ids, find_unused_parameters=not self.config.deep_supervision)
        return net

    def _autocast_dtype(self):
        if self.device.type != "cuda" or not self.config.amp:
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def _build_loss(self):
        if not self.config.deep_supervision:
            return self.step.loss
        n_scales = len(self.cfg_plan.architecture["strides"]) - 1
        lowest = DDP_LOWEST_WEIGHT if self.dist.enabled else 0.0
        return DeepSupervisionLoss(self.step.loss, deep_supervision_weights(n_scales, lowest))

    def batch_size_per_process(self) -> int:
        total = self.config.batch_size or self.cfg_plan.batch_size
        if total < self.dist.world_size:
            raise UserError(f"batch size {total} is smaller than the number of processes {self.dist.world_size}")
        # nnU-Net splits the global batch over GPUs; remainders go to the first ranks.
        return total // self.dist.world_size + (1 if self.dist.rank < total % self.dist.world_size else 0)

    def _unpack_cases(self) -> None:
        """Unpack the fold's cases once (training/unpacking.py): the main process does it while the others wait."""
        if self.dist.is_main:
            unpack_cases([r.npz_path for r in [*self.train_refs, *self.val_refs]],
                         num_processes=max(1, self.config.num_workers), progress=self.echo)
        if self.dist.enabled:
            torch.distributed.barrier()

    def _build_iterators(self):
        patch = list(self.cfg_plan.patch_size)
        aug = augmentation_preset(self.config.augmentation, patch, region_shift_sigma=self.config.region_shift_sigma)
        if aug.mirror_axes:
            aug = dataclasses.replace(aug, mirror_axes=tuple(self.config.resolved_mirror_axes(len(patch))))
        # Sampled larger so that rotation/scaling never pull in padding; the spatial transform crops back.
        big_patch = list(aug.initial_patch_size(patch))
        bs = self.batch_size_per_process()
        seed = self.config.seed + 1000 * self.dist.rank
        unpacked = self.config.resolved_unpack()
        if unpacked:
            self._unpack_cases()

        def sampler(refs, initial_patch, rng_seed, **kwargs):
            return self.step.sampler(refs, self.plans, self.configuration_name, batch_size=bs, patch_size=patch,
                                     oversample_foreground_percent=self.config.oversample_foreground,
                                     dataset_weighting=self.config.dataset_weighting,
                                     dataset_weights=self.config.dataset_weights,
                                     rng=np.random.default_rng(rng_seed), initial_patch_size=initial_patch,
                                     use_unpacked=unpacked, **kwargs)

        # The label map, not one target channel per class, goes through the spatial augmentation (its cost would
        # otherwise grow with the number of classes; results.md, session 8); the same batches either way.
        train_sampler = sampler(self.train_refs, big_patch, seed, defer_targets=True)
        train = TrainingBatchIterator(train_sampler,
                                      get_training_transforms(patch, aug, targets_from_labels=train_sampler.targets_for),
                                      num_workers=self.config.num_workers, seed=seed)
        val = None
        if self.val_refs:
            val = TrainingBatchIterator(sampler(self.val_refs, patch, seed + 1), get_validation_transforms(),
                                        num_workers=0, seed=seed + 1)
        return train, val

    # ------------------------------------------------------------------------------------------- steps
    def _forward_loss(self, batch: dict):
        """(loss, highest-resolution logits as float32, target, the step's annotation of the batch)."""
        data = batch["data"].to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        target = batch["target"].to(self.device, non_blocking=True)
        annotation = self.step.annotation(batch)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            outputs = self.step.outputs(self.network, data, annotation, batch)
            if self.config.deep_supervision:
                shapes = [o.shape[2:] for o in outputs]
                loss = self.loss(outputs, downsample_targets(target, shapes), annotation)
                top = outputs[0]
            else:
                loss = self.loss(outputs, target, annotation)
                top = outputs
        return loss, top.float(), target, annotation

    def train_step(self, batch: dict) -> float:
        self.network.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss, *_ = self._forward_loss(batch)
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.config.grad_clip)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.config.grad_clip)
            self.optimizer.step()
        return float(loss.detach())

    @torch.no_grad()
    def validation_step(self, batch: dict) -> tuple[float, torch.Tensor, torch.Tensor]:
        self.network.eval()
        loss, top, target, annotation = self._forward_loss(batch)
        counts, seen = self.step.pseudo_dice_counts(top, target, annotation)
        return float(loss), counts.cpu(), seen.cpu()

    # ------------------------------------------------------------------------------------------- epochs
    def run_epoch(self, epoch: int) -> None:
        start = time.time()
        lr = poly_lr(epoch, self.config.epochs, self.config.initial_lr, self.config.poly_exponent)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        losses, waited = [], 0.0
        for _ in range(self.config.iters_per_epoch):
            before = time.perf_counter()
            batch = next(self.train_iter)
            waited += time.perf_counter() - before
            losses.append(self.train_step(batch))
        self.history.data_wait_seconds.append(waited)
        self.history.train_loss.append(mean_ignoring_nan(self._all_reduce_mean(losses)))
        self.history.learning_rate.append(lr)
        self._validate_epoch()
        self.history.epoch_seconds.append(time.time() - start)
        h = self.history
        self.log(f"epoch {epoch}: train loss {h.train_loss[-1]:.4f} | val loss {h.val_loss[-1]:.4f} | pseudo Dice "
                 + ", ".join(f"{k} {v:.3f}" for k, v in h.pseudo_dice[-1].items())
                 + f" | EMA {h.ema_pseudo_dice[-1]:.4f} | lr {lr:.5f} | {h.epoch_seconds[-1]:.1f} s"
                 + f" (waiting for batches {waited:.1f} s)")
        every = self.config.case_val_every
        if every and (epoch + 1) % every == 0 and self.dist.is_main and self.val_refs:
            self._validate_whole_cases(epoch)

    def _whole_case_refs(self) -> list[CaseRef]:
        """The first validation cases of each dataset (sorted ids), the same ones at every check."""
        per_dataset: dict[str, list[CaseRef]] = {}
        for ref in sorted(self.val_refs, key=lambda r: (r.dataset, r.case_id)):
            per_dataset.setdefault(ref.dataset, []).append(ref)
        return [r for refs in per_dataset.values() for r in refs[: self.config.case_val_cases_per_dataset]]

    def _validate_whole_cases(self, epoch: int) -> None:
        """Sliding-window Dice/FP/FN on whole validation cases; no random numbers are drawn, so training
        continues exactly as without it."""
        from textnnunet.preprocessing.preprocessor import load_case

        start = time.time()
        if not hasattr(self, "_whole_cases"):
            self._whole_cases = [(r.dataset, *load_case(r.npz_path.parent, r.case_id)[:2])
                                 for r in self._whole_case_refs()]
        scores = self.step.whole_case_scores(self.raw_network, self._whole_cases)
        self.history.whole_case.append({"epoch": epoch, "scores": scores})
        self.log(f"epoch {epoch}: whole-case validation ({len(self._whole_cases)} cases, {time.time() - start:.1f} s): "
                 + ", ".join(f"{k} Dice {v['Dice']:.3f} FP {v['FP']} FN {v['FN']}" for k, v in scores.items()))

    def _all_reduce_mean(self, values: list[float]) -> list[float]:
        if not self.dist.enabled:
            return values
        t = torch.tensor([float(np.mean(values))], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return [float(t) / self.dist.world_size]

    def _validate_epoch(self) -> None:
        k = len(self.class_names)
        counts, seen, losses = torch.zeros(3, k), torch.zeros(k, dtype=torch.bool), []
        if self.val_iter is not None:
            for _ in range(self.config.val_iters_per_epoch):
                loss, c, s = self.validation_step(next(self.val_iter))
                losses.append(loss)
                counts += c
                seen |= s
        dice = dice_from_counts(counts, self.class_names, seen)
        self.history.val_loss.append(mean_ignoring_nan(losses) if losses else float("nan"))
        self.history.pseudo_dice.append(dice)
        self.history.ema_pseudo_dice.append(
            update_ema(self.history.ema_pseudo_dice, mean_ignoring_nan(dice.values()), self.config.ema_alpha))

    def run(self) -> Path:
        """Train the remaining epochs; returns the final checkpoint path."""
        self.log(f"training {self.configuration_name} fold {self.fold} on {self.device} "
                 f"({len(self.train_refs)} training / {len(self.val_refs)} validation cases, "
                 f"{len(self.class_names)} classes, batch {self.batch_size_per_process()} x {self.dist.world_size})")
        try:
            for epoch in range(self.start_epoch, self.config.epochs):
                self.run_epoch(epoch)
                self._end_of_epoch(epoch)
        finally:
            self.close()
        if self.dist.is_main:
            self.save_checkpoint(self.output_folder / CHECKPOINT_FINAL, self.config.epochs)
        return self.output_folder / CHECKPOINT_FINAL

    def _end_of_epoch(self, epoch: int) -> None:
        if not self.dist.is_main:
            return
        ema = self.history.ema_pseudo_dice[-1]
        if not np.isnan(ema) and ema > self.best_ema:
            self.best_ema = ema
            self.save_checkpoint(self.output_folder / CHECKPOINT_BEST, epoch + 1)
            self.log(f"new best EMA pseudo Dice {ema:.4f}")
        if (epoch + 1) % self.config.save_every == 0 or epoch + 1 == self.config.epochs:
            self.save_checkpoint(self.output_folder / CHECKPOINT_LATEST, epoch + 1)
        plot_progress(self.history, FoldFolder(self.output_folder).progress_file)

    def close(self) -> None:
        for it in (self.train_iter, self.val_iter):
            if it is not None:
                it.close()

    # -------------------------------------------------------------------------------------- checkpoints
    def checkpoint_dict(self, epochs_done: int) -> dict:
        return {
            "network": self.raw_network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "grad_scaler": self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
            "epochs_done": epochs_done,
            "best_ema": self.best_ema,
            "history": self.history.to_json(),
            "rng": rng_state(),
            # Background workers draw batches ahead of time, so only the in-process iterator resumes exactly.
            "train_sampler": self.train_iter.state() if self.config.num_workers == 0 else None,
            "val_sampler": self.val_iter.state() if self.val_iter is not None else None,
            "training_config": self.config.to_json(),
            "configuration": self.configuration_name,
            "fold": self.fold,
            "class_names": self.class_names,
            "plans_name": self.plans.plans_name,
            "world_size": self.dist.world_size,
            **self.step.checkpoint_entries(),
        }

    def save_checkpoint(self, path: Path, epochs_done: int) -> None:
        with atomic_path(path, suffix=".pth") as tmp:
            torch.save(self.checkpoint_dict(epochs_done), tmp)

    def _read_checkpoint(self, path: Path) -> dict:
        ckpt = torch.load(path, map_location=self.device, weights_only=False)
        if ckpt["class_names"] != self.class_names:
            raise UserError(f"{path}: checkpoint classes differ from the plan's label space")
        return ckpt

    def load_network_weights(self, path: Path) -> None:
        """The network alone (validation of a finished fold: no optimizer, sampler or RNG state needed)."""
        self.raw_network.load_state_dict(self._read_checkpoint(path)["network"])

    def load_checkpoint(self, path: Path) -> None:
        ckpt = self._read_checkpoint(path)
        if ckpt.get("world_size", 1) != self.dist.world_size:
            raise UserError(f"{path}: written with {ckpt.get('world_size', 1)} processes; resume with the same number")
        self.raw_network.load_state_dict(ckpt["network"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.grad_scaler is not None and ckpt["grad_scaler"] is not None:
            self.grad_scaler.load_state_dict(ckpt["grad_scaler"])
        self.start_epoch = ckpt["epochs_done"]
        self.best_ema = ckpt["best_ema"]
        self.history = TrainingHistory.from_json(ckpt["history"])
        if self.dist.rank == 0 or self.dist.world_size == 1:
            set_rng_state(ckpt["rng"])
        if ckpt["train_sampler"] is not None and self.config.num_workers == 0:
            self.train_iter.set_state(ckpt["train_sampler"])
        if self.val_iter is not None and ckpt["val_sampler"] is not None:
            self.val_iter.set_state(ckpt["val_sampler"])
        self.log(f"resumed from {path.name} after epoch {self.start_epoch}")


def find_resume_checkpoint(output_folder: Path) -> Path:
    for name in (CHECKPOINT_LATEST, CHECKPOINT_FINAL):
        if (Path(output_folder) / name).is_file():
            return Path(output_folder) / name
    raise UserError(f"{output_folder}: nothing to resume (no {CHECKPOINT_LATEST}); start without --c")
