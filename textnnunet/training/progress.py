"""Training history, the text log and the progress plot (progress.png)."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from textnnunet.utils.files import atomic_path


@dataclass
class TrainingHistory:
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    pseudo_dice: list[dict[str, float]] = field(default_factory=list)  # per epoch: class -> Dice (nan if unseen)
    ema_pseudo_dice: list[float] = field(default_factory=list)
    learning_rate: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    # Of each epoch's seconds, those spent waiting for training batches: an epoch far above its steps' time with
    # little waiting is the network; with much waiting, the loader (more --num_workers, or a lighter augmentation).
    data_wait_seconds: list[float] = field(default_factory=list)
    # Whole-case validation, when enabled: {"epoch": e, "scores": {class: {"Dice", "FP", "FN"}}} per check.
    whole_case: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "TrainingHistory":
        return cls(**d)

    @property
    def epochs_done(self) -> int:
        return len(self.train_loss)


def mean_ignoring_nan(values) -> float:
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def update_ema(previous: list[float], value: float, alpha: float) -> float:
    """nnU-Net's EMA of the mean pseudo Dice; nan epochs keep the previous value."""
    if not previous or np.isnan(previous[-1]):
        return value
    if np.isnan(value):
        return previous[-1]
    return alpha * previous[-1] + (1 - alpha) * value


class TextLog:
    def __init__(self, path: Path, echo: bool = True):
        self.path, self.echo = Path(path), echo
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, *parts) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')}: " + " ".join(str(p) for p in parts)
        with open(self.path, "a") as f:
            f.write(line + "\n")
        if self.echo:
            print(line, flush=True)


def plot_progress(history: TrainingHistory, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.arange(history.epochs_done)
    fig, axes = plt.subplots(3, 1, figsize=(10, 12))
    axes[0].plot(epochs, history.train_loss, label="train loss", color="tab:blue")
    axes[0].plot(epochs[: len(history.val_loss)], history.val_loss, label="val loss", color="tab:red")
    axes[0].set_ylabel("loss")
    ax_dice = axes[0].twinx()
    ax_dice.plot(epochs[: len(history.ema_pseudo_dice)], history.ema_pseudo_dice, "g-", label="EMA pseudo Dice")
    ax_dice.set_ylabel("pseudo Dice")
    ax_dice.set_ylim(0, 1)
    axes[0].legend(loc="upper left")
    ax_dice.legend(loc="upper right")
    classes = sorted({k for d in history.pseudo_dice for k in d})
    for name in classes:
        line, = axes[1].plot(epochs[: len(history.pseudo_dice)], [d.get(name, np.nan) for d in history.pseudo_dice],
                             label=name)
        checks = [(c["epoch"], c["scores"][name]["Dice"]) for c in history.whole_case if name in c["scores"]]
        if checks:
            axes[1].plot(*zip(*checks), "o--", color=line.get_color(), label=f"{name} (whole cases)")
    axes[1].set_ylabel("Dice per class: val patches (lines),\nwhole val cases (dots)" if history.whole_case
                       else "pseudo Dice per class (val patches)")
    axes[1].set_ylim(0, 1)
    if classes:
        axes[1].legend(loc="lower right", fontsize="small")
    axes[2].plot(epochs, history.learning_rate, label="learning rate")
    axes[2].set_ylabel("learning rate")
    ax_t = axes[2].twinx()
    ax_t.plot(epochs, history.epoch_seconds, "k:", label="epoch seconds")
    if history.data_wait_seconds:
        ax_t.plot(epochs[: len(history.data_wait_seconds)], history.data_wait_seconds, "k--",
                  label="waiting for batches")
        ax_t.legend(loc="upper right", fontsize="small")
    ax_t.set_ylabel("seconds")
    axes[2].set_xlabel("epoch")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
