"""Every training hyper-parameter in one explicit object: change them by flags or by constructing it, not by
subclassing a trainer."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import torch

from textnnunet.errors import UserError
from textnnunet.network.settings import memory_format_for, resolve_mirror_axes
from textnnunet.text.encoders import encoder_tags_model_folder
from textnnunet.utils.files import as_read_back_from_json


# Settings a resumed fold may change (--c): where and how fast it runs, and what it reports. Any other difference from
# the fold's training_config.json would continue the training as another one (a schedule of other length, another
# loss or augmentation) under the same folder, so resuming refuses it.
RUNTIME_FIELDS = frozenset({"device", "amp", "cudnn_benchmark", "compile", "memory_format", "num_workers", "unpack",
                            "case_val_every"})


@dataclass
class TrainingConfig:
    # nnU-Net's defaults for a full run.
    epochs: int = 1000
    iters_per_epoch: int = 250
    val_iters_per_epoch: int = 50
    initial_lr: float = 1e-2
    weight_decay: float = 3e-5
    momentum: float = 0.99
    grad_clip: float = 12.0
    poly_exponent: float = 0.9
    batch_size: int | None = None  # None: the plan's
    oversample_foreground: float = 0.33
    dataset_weighting: str = "uniform"  # uniform | sqrt | proportional
    # Multipliers on top of dataset_weighting, e.g. {"12": 2.0}: a dataset (name or number) drawn twice as often as
    # the scheme says (a modality or structure the pool has few cases of). Empty: the scheme's.
    dataset_weights: dict = field(default_factory=dict)
    # Model.
    conditioning: str = "controller"  # controller | film
    # Prompts that name the image's modality: each class is embedded once per intensity group of the plan ("liver
    # on CT", "liver on T1-weighted MRI") and each training image is prompted with its dataset's; prediction uses
    # the input's (--modality, or the plan's only group). Off by default: "liver" is one class whatever the
    # scanner and the image shows CT from MR (design.md; measured against it in results.md, session 9). Needs a
    # sentence encoder and the controller conditioning. Model tag "modalityprompt".
    prompt_modality: bool = False
    backbone: str = "PlainConvUNet"
    deep_supervision: bool = True
    # Loss.
    batch_dice: bool = False
    # Weight of the soft Dice term next to BCE (nnU-Net: Dice + CE, 1 each). 0: BCE only, the ablation of whether the
    # Dice term draws the organs' boundaries outwards on a coarse grid (results.md, session 9: the liver's rim thins,
    # the small organs do not learn). 0.5 over the matrix's 18 runs (session 10): a tie with 1, so 1 stays.
    dice_weight: float = 1.0
    mask_unannotated: bool = True  # False = the naive union ablation (unlabelled organs become background)
    # The plan's label hierarchy (label_space.hierarchy): a class a dataset does not label is known where a labelled
    # relative says so (left kidney absent outside a labelled kidney; kidney = union of labelled sides). False: the
    # classes are unrelated, as before (the ablation).
    label_hierarchy: bool = True
    # Exclusion (with the hierarchy): voxels a dataset labels as one structure are known negatives of every class it
    # does not label that is neither that structure's ancestor nor its part: the kidney dataset's kidneys teach the
    # spleen and liver prompts "not here", which partial labels alone never do when a dataset's field of view or
    # contrast hides the other organs (issue 10's matrix). Assumes structures unrelated in the lexicon do not overlap.
    # On by default since its negatives weigh as background voxels of a labelled pair (training/loss.py): averaged
    # over their few voxels instead, they made the spleen prompt collapse in a four-dataset run (results.md).
    # --no_label_exclusion turns it off (model tag "noexclusion").
    label_exclusion: bool = True
    # At most this many excluded classes per batch item (a random subset when a dataset excludes more): keeps the
    # heads computed per step near the labelled ones at large K (TotalSegmentator's 117).
    max_excluded_classes: int = 8
    # Augmentation preset: "nnunet_intensity" (nnU-Net's list plus the local brightness and gamma changes of its DA5
    # variant), "nnunet" (nnU-Net's default list exactly) or "none". The datasets of a joint plan come from several
    # scanners and contrast phases, so an organ's HU shifts against its neighbours from one dataset to the next; on
    # the demo the local changes lifted the unseen-phase spleen of Dataset004 from Dice 0.81 to 0.85.
    # "nnunet_regions" (the default since session 5) adds an intensity offset per labelled structure, so that a
    # prompt cannot separate organs by absolute intensity alone (datasets differ by scanner calibration and phase).
    # Its effect on the unenhanced matrix rows is within the spread of two training seeds (results.md, session 5);
    # the demo, clinical and orientation rows hold with it. Without it (session 7) the liver's one-voxel rim of false
    # positives thins but unenhanced spleen and kidney were confused again in one seed of two: kept (design.md).
    augmentation: str = "nnunet_regions"
    # The per-structure offset's sd (normalised units) for presets that shift labelled structures; None: the
    # preset's (0.3). Session 7 found the default may draw a one-voxel rim around the liver; session 8 measured 0.15
    # on every matrix row over three seeds: a tie with 0.3 (design.md), so the preset's sd stays.
    region_shift_sigma: float | None = None
    # Axes of the patch to mirror in training and in test-time augmentation; [] (the default since session 6): none.
    # Preprocessing reorients every image to LPS, so the anatomy always arrives the same way up: mirroring the
    # left-right axis teaches that liver and spleen, left and right kidney, sit on either side, and mirroring
    # head-foot or front-back removes where an organ lies relative to the others, the cue that tells unenhanced
    # spleen from kidney (similar HU). Without mirroring the unenhanced matrix rows swapped the two in none of six
    # runs (three training seeds each), with it in four of six (results.md, session 6); TotalSegmentator's models are
    # trained with nnU-Net's NoMirroring trainer too. None: every axis except left-right (the default until session
    # 5; configs written then say null and keep it).
    mirror_axes: list[int] | None = field(default_factory=list)
    # Runtime.
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # only used on CUDA
    # CUDA: let cuDNN time its convolution algorithms for the patch's shapes and keep the fastest (nnU-Net's setting;
    # the shapes never change during training). Not deterministic across runs, which CUDA training is not anyway.
    cudnn_benchmark: bool = True
    compile: bool = False
    # auto: channels-last on the CPU, where oneDNN's 3D convolutions run 10-35% faster in that layout (measured on
    # the demo plan); channels-first on CUDA, as nnU-Net. Any choice gives the same numbers up to rounding.
    memory_format: str = "auto"  # auto | channels_first | channels_last
    num_workers: int = 0
    # Decompress each case's npz cache once into memory-mapped .npy files beside it (training/unpacking.py) and crop
    # patches from those: "auto" does so with background workers (num_workers > 0, as on a GPU machine), where per-case
    # decompression held the loader back on an H200 (results.md, session 8); "yes" / "no" force it. Same batches.
    unpack: str = "auto"  # auto | yes | no
    seed: int = 12345
    ema_alpha: float = 0.9  # nnU-Net's EMA of the pseudo Dice
    save_every: int = 1
    # Whole-case validation during training: every N epochs (0: never), sliding window over this many validation
    # cases per dataset, Dice/FP/FN in the log and progress.png next to the patch pseudo Dice.
    case_val_every: int = 0
    case_val_cases_per_dataset: int = 1
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    def differences_that_change_training(self, earlier: "TrainingConfig") -> list[str]:
        """`field: earlier -> now` for each setting that changes what a resumed fold learns (everything but
        RUNTIME_FIELDS, which only change where and how fast it runs, or what it reports)."""
        now, before = as_read_back_from_json(self.to_json()), as_read_back_from_json(earlier.to_json())
        return [f"{name}: {before[name]!r} -> {now[name]!r}" for name in now
                if name not in RUNTIME_FIELDS and now[name] != before[name]]

    @classmethod
    def from_json(cls, d: dict) -> "TrainingConfig":
        known = {f.name for f in fields(cls)}
        # Written before label exclusion existed: those models trained without it; before mirror_axes existed:
        # mirrored on every axis but left-right (None).
        d = {"label_exclusion": False, "mirror_axes": None, **d}
        return cls(**{k: v for k, v in d.items() if k in known})

    def resolved_memory_format(self, device_type: str, conv_dims: int) -> torch.memory_format:
        return memory_format_for(device_type, conv_dims, self.memory_format)

    def resolved_unpack(self) -> bool:
        if self.unpack not in ("auto", "yes", "no"):
            raise UserError(f"unpack '{self.unpack}': choose auto, yes or no")
        return self.unpack == "yes" or (self.unpack == "auto" and self.num_workers > 0)

    def resolved_mirror_axes(self, patch_dims: int) -> list[int]:
        return resolve_mirror_axes(self.mirror_axes, patch_dims)

    def model_tag(self, encoder_kind: str) -> str:
        """Folder suffix that keeps ablations apart: empty for the default model."""
        parts = []
        if self.conditioning != "controller":
            parts.append(self.conditioning)
        if self.prompt_modality:
            parts.append("modalityprompt")
        if encoder_tags_model_folder(encoder_kind):
            parts.append(encoder_kind)
        if not self.mask_unannotated:
            parts.append("naiveunion")
        if not self.label_hierarchy:
            parts.append("nohierarchy")
        elif not self.label_exclusion:
            parts.append("noexclusion")
        if self.backbone != "PlainConvUNet":
            parts.append(self.backbone)
        if self.dice_weight != 1.0:
            parts.append(f"dice{self.dice_weight:g}")
        return "__".join(parts)

