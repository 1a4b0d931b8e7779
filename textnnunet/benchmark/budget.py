"""Training budgets: the universal model gets as many iterations as all the baselines together (by default)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from textnnunet.errors import UserError


@dataclass(frozen=True)
class Budget:
    epochs: int
    baseline_iters_per_epoch: int
    universal_iters_per_epoch: int
    n_baselines: int
    equal: bool

    @property
    def baseline_iterations(self) -> int:
        """Iterations of one baseline."""
        return self.epochs * self.baseline_iters_per_epoch

    @property
    def baselines_total_iterations(self) -> int:
        return self.n_baselines * self.baseline_iterations

    @property
    def universal_iterations(self) -> int:
        return self.epochs * self.universal_iters_per_epoch

    def to_json(self) -> dict:
        return {**asdict(self), "baseline_iterations": self.baseline_iterations,
                "baselines_total_iterations": self.baselines_total_iterations,
                "universal_iterations": self.universal_iterations}

    def describe(self) -> str:
        rule = ("equal budgets: the universal model trains as many iterations as the baselines together"
                if self.equal else "unequal budgets: the universal model trains as many iterations as ONE baseline")
        return (f"{rule}. Universal: {self.epochs} epochs x {self.universal_iters_per_epoch} iterations = "
                f"{self.universal_iterations}; each of {self.n_baselines} baseline(s): {self.epochs} x "
                f"{self.baseline_iters_per_epoch} = {self.baseline_iterations} ({self.baselines_total_iterations} "
                f"together).")


def plan_budget(epochs: int, iters_per_epoch: int, n_datasets: int, equal: bool = True) -> Budget:
    """Baselines train `epochs` x `iters_per_epoch` each; the universal model keeps the epochs (so its learning
    rate schedule and validation cadence match) and multiplies the iterations per epoch by the number of
    datasets, so its total equals theirs."""
    if epochs < 1 or iters_per_epoch < 1:
        raise UserError(f"budget: epochs ({epochs}) and iterations per epoch ({iters_per_epoch}) must be >= 1")
    if n_datasets < 1:
        raise UserError("budget: at least one dataset is needed")
    universal = iters_per_epoch * n_datasets if equal else iters_per_epoch
    return Budget(epochs, iters_per_epoch, universal, n_datasets, equal)


def trained_iterations(training_config: dict, epochs_done: int) -> int:
    """Iterations a checkpoint actually trained (its own config, not what was asked for this time)."""
    return int(epochs_done) * int(training_config["iters_per_epoch"])
