"""How long a fixed architecture trains, in optimisation steps (like the search's budget).

`train.epochs` counts passes over the data, which hands a 176-photo folder 2 optimisation steps at
batch 128 (a model at chance) and CIFAR-10 700. So every plan has a floor the data size cannot
shrink: at least `min_steps` optimisation steps (train: `MIN_TRAIN_STEPS`, fine-tuning:
`MIN_FINETUNE_STEPS` by default; a small set gets more epochs), and a small set gets a smaller batch
(an epoch of at least `min_batches_per_epoch` steps) with the learning rate scaled linearly with the
batch (Goyal et al., 2017). A step budget (`train.steps`) is the same work whatever the data size.
Lowering the floor below the default (quick looks, tests) is allowed and warned about. Every model
compared trains with the same plan rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from spnas_core.errors import ConfigError

from .config import TrainConfig

# The fewest optimisation steps that learn on a small set. Measured (2026-12-06, 2 cores): MobileNetV2 from
# scratch on 127 train photos of 7 Grocery products at 96 px, batch 16: 60 steps -> test top-1 0.26 (chance
# 0.14), 120 steps -> 0.91. Fine-tuning starts from trained weights: half of that.
MIN_TRAIN_STEPS = 120
MIN_FINETUNE_STEPS = 60


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
    warnings: tuple[str, ...] = ()  # a run too short to learn: said at WARNING and kept in the summary

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
                "notes": list(self.notes), "warnings": list(self.warnings)}


def plan_training(tcfg: TrainConfig, n_train: int, world_size: int = 1, *, key: str = "train",
                  learns_after: int = MIN_TRAIN_STEPS) -> TrainPlan:
    """The plan for `n_train` images: `train.steps` optimisation steps, or `train.epochs` epochs when it is
    null; either way at least `min_steps` (a small set gets more epochs), and a small set gets a smaller
    batch. A plan below `learns_after` steps (the default floor, lowered by the user) carries a warning;
    `key` names the config node in notes and warnings (`train`, `finetune.recipe`)."""
    if n_train < 1:
        raise ConfigError("the train split is empty: give the data set more images")
    bs, lr, notes, warnings = tcfg.batch_size, tcfg.lr, [], []
    if n_train // bs < tcfg.min_batches_per_epoch:
        new = max(min(tcfg.min_batch_size, bs), n_train // tcfg.min_batches_per_epoch)
        new = max(world_size, min(new, n_train) - min(new, n_train) % world_size)
        if new != bs:
            lr = tcfg.lr * new / bs
            notes.append(f"batch {bs} -> {new} for {n_train} train images (>= {tcfg.min_batches_per_epoch} steps "
                         f"per epoch), lr {tcfg.lr:g} -> {lr:.4g} (linear in the batch)")
            bs = new
    spe = max(1, n_train // bs)
    if tcfg.max_steps_per_epoch:
        spe = min(spe, tcfg.max_steps_per_epoch)
    total = tcfg.steps if tcfg.steps is not None else tcfg.epochs * spe
    if total < tcfg.min_steps:
        what = f"{key}.steps={tcfg.steps}" if tcfg.steps is not None else f"{tcfg.epochs} epochs of {spe} steps"
        notes.append(f"{what} -> {tcfg.min_steps} steps ({key}.min_steps: the floor a small set's epochs cannot "
                     f"go under)")
        total = tcfg.min_steps
    if total < learns_after:
        warnings.append(f"{key}: {total} optimisation steps, fewer than the {learns_after} a model needs to learn "
                        f"anything on a small set ({key}.min_steps={tcfg.min_steps} allows it): expect results near "
                        f"chance; leave {key}.min_steps at its default for a model that learns")
    epochs = math.ceil(total / spe) if total else 0
    return TrainPlan(bs, lr, spe, total, epochs, int(tcfg.warmup_epochs * spe), tuple(notes), tuple(warnings))
