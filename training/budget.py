"""How long a fixed architecture trains, in optimisation steps (like the search's budget).

`train.epochs` counts passes over the data, which hands a 176-photo folder 4 optimisation steps at
batch 128 and CIFAR-10 1,400. A step budget (`train.steps`) is the same work whatever the data size:
the epochs follow from it, a small set gets a smaller batch (an epoch of at least
`min_batches_per_epoch` steps) with the learning rate scaled linearly with the batch (Goyal et al.,
2017), and `min_steps` is a floor. Every model compared trains with the same plan rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from spnas_core.errors import ConfigError

from .config import TrainConfig


@dataclass(frozen=True)
class TrainPlan:
    """Batch, learning rate, steps and epochs of one training run for a given data size."""

    batch_size: int
    lr: float
    steps_per_epoch: int
    total_steps: int
    epochs: int
    warmup_steps: int
    notes: tuple[str, ...] = ()

    def steps_in_epoch(self, epoch: int) -> int:
        """Steps of epoch `epoch` (0-based): full epochs, then what is left of the budget."""
        return max(0, min(self.steps_per_epoch, self.total_steps - epoch * self.steps_per_epoch))

    def apply(self, tcfg: TrainConfig) -> TrainConfig:
        """The recipe as it runs: the adapted batch and learning rate, the derived epochs."""
        return replace(tcfg, batch_size=self.batch_size, lr=self.lr, epochs=self.epochs,
                       min_batch_size=min(tcfg.min_batch_size, self.batch_size))

    def to_dict(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "lr": self.lr, "steps_per_epoch": self.steps_per_epoch,
                "total_steps": self.total_steps, "epochs": self.epochs, "warmup_steps": self.warmup_steps,
                "notes": list(self.notes)}


def plan_training(tcfg: TrainConfig, n_train: int, world_size: int = 1) -> TrainPlan:
    """The plan for `n_train` images: `train.epochs` at `train.batch_size` when `train.steps` is null (as
    before), else the step budget with the batch adapted to the data size."""
    if n_train < 1:
        raise ConfigError("the train split is empty: give the data set more images")
    bs, lr, notes = tcfg.batch_size, tcfg.lr, []
    if tcfg.steps is None:
        spe = n_train // bs if n_train >= bs else 1
        if tcfg.max_steps_per_epoch:
            spe = min(spe, tcfg.max_steps_per_epoch)
        total = tcfg.epochs * spe
        return TrainPlan(bs, lr, spe, total, tcfg.epochs, int(tcfg.warmup_epochs * spe))
    if n_train // bs < tcfg.min_batches_per_epoch:
        new = max(min(tcfg.min_batch_size, bs), n_train // tcfg.min_batches_per_epoch)
        new = max(world_size, min(new, n_train) - min(new, n_train) % world_size)
        lr = tcfg.lr * new / bs
        notes.append(f"batch {bs} -> {new} for {n_train} train images (>= {tcfg.min_batches_per_epoch} steps per "
                     f"epoch), lr {tcfg.lr:g} -> {lr:.4g} (linear in the batch)")
        bs = new
    spe = max(1, n_train // bs)
    if tcfg.max_steps_per_epoch:
        spe = min(spe, tcfg.max_steps_per_epoch)
    total = tcfg.steps
    if total < tcfg.min_steps:
        notes.append(f"steps {total} -> {tcfg.min_steps} (train.min_steps)")
        total = tcfg.min_steps
    return TrainPlan(bs, lr, spe, total, math.ceil(total / spe), int(tcfg.warmup_epochs * spe), tuple(notes))
