"""How long a search runs and how its decisions settle (pure functions).

A budget in optimisation steps: the data size sets how many epochs that is, a small set gets a
smaller batch (an epoch of at least `min_batches_per_epoch` steps) and a floor of threshold updates.
The thresholds' learning rate is 0 in warm-up, ramps up, then decays (cosine) to 0 where the decision
window starts; the derived network is the majority decision over that window, with every flip counted.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

from nas.config import SearchConfig, ThresholdSchedule
from spnas_core.errors import ConfigError

# below this many threshold-learning steps (the searching steps before the decision window, where the thresholds'
# rate is above 0) a search warns: NAS-Bench-Macro's ground truth (docs/groundtruth.md) saw the threshold decisions
# collapse and not yet regrow at 40 (60 searching steps, a 20-step window), and settle at 80
MIN_THRESHOLD_LEARNING = 80


@dataclass(frozen=True)
class Budget:
    """How long a search runs, derived from the config and the data size."""

    batch_size: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    epochs: int
    window_steps: int  # the final steps whose majority decision is the derived network
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()  # a search too short for its decisions to mean anything

    @property
    def threshold_updates(self) -> int:
        return self.total_steps - self.warmup_steps

    def to_dict(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "steps_per_epoch": self.steps_per_epoch,
                "total_steps": self.total_steps, "warmup_steps": self.warmup_steps, "epochs": self.epochs,
                "threshold_updates": self.threshold_updates, "decision_window_steps": self.window_steps,
                "notes": list(self.notes), "warnings": list(self.warnings)}


def plan_budget(scfg: SearchConfig, n_train: int, world_size: int = 1) -> Budget:
    """Steps, epochs and batch size for `n_train` images: a small set gets a smaller batch (an epoch of
    at least `min_batches_per_epoch` steps) and at least `min_threshold_updates` searching steps. The
    batch is global: an adapted batch is rounded down to a multiple of the ranks."""
    if n_train < 1:
        raise ConfigError("the search's train split is empty: give the data set more images")
    notes = []
    bs = scfg.batch_size
    if n_train // bs < scfg.min_batches_per_epoch:
        bs = max(scfg.min_batch_size, n_train // scfg.min_batches_per_epoch)
        bs = max(1, min(bs, n_train))
        bs = max(world_size, bs - bs % world_size)
        notes.append(f"batch {scfg.batch_size} -> {bs} for {n_train} train images "
                     f"(>= {scfg.min_batches_per_epoch} steps per epoch)")
    spe = max(1, n_train // bs)
    warm = int(round(scfg.warmup_fraction * scfg.steps))
    total = scfg.steps
    if total - warm < scfg.min_threshold_updates:
        total = warm + scfg.min_threshold_updates
        notes.append(f"steps {scfg.steps} -> {total} to reach {scfg.min_threshold_updates} threshold updates")
    window = min(total - warm, scfg.decision_window_steps or max(spe, scfg.decision_window_min_steps))
    warnings = []
    if total - warm - window < MIN_THRESHOLD_LEARNING:
        warnings.append(f"search: {total - warm - window} threshold-learning steps ({total - warm} searching steps, the "
                        f"last {window} the decision window), fewer than the {MIN_THRESHOLD_LEARNING} its decisions need "
                        f"to settle (search.min_threshold_updates={scfg.min_threshold_updates} allows it): the derived "
                        f"network says little; leave search.min_threshold_updates at its default")
    return Budget(bs, spe, total, warm, math.ceil(total / spe), window, tuple(notes), tuple(warnings))


def threshold_lr_factor(schedule: ThresholdSchedule, warmup: int, settle: int) -> Callable[[int], float]:
    """Multiplier of the thresholds' learning rate at a step: 0 in warm-up, then (cosine) a decay that
    reaches 0 at step `settle`, where the decision window starts; the window only trains the weights of
    the settled architecture and shows whether its decisions hold (constant: the base rate throughout)."""
    span = max(1, settle - warmup)
    ramp = max(1, span // 10)  # a short linear ramp: the first searching steps do not shock the decisions

    def f(step: int) -> float:
        if step < warmup:
            return 0.0
        if schedule is ThresholdSchedule.constant:
            return 1.0
        t = min(1.0, (step - warmup) / span)
        return min(1.0, (step - warmup + 1) / ramp) * 0.5 * (1 + math.cos(math.pi * t))

    return f


def majority_decision(window: list[list[str]]) -> tuple[list[str], list[int], list[float]]:
    """Per layer over the window's steps: the most frequent choice (ties: the latest), the number of
    flips (changes between consecutive steps) and the share of steps that agree with the majority."""
    if not window:
        raise ValueError("the decision window is empty")
    n_layers = len(window[0])
    choices, flips, agree = [], [], []
    for li in range(n_layers):
        seq = [w[li] for w in window]
        counts = Counter(seq)
        best = max(counts.values())
        pick = next(c for c in reversed(seq) if counts[c] == best)
        choices.append(pick)
        flips.append(sum(a != b for a, b in zip(seq, seq[1:])))
        agree.append(best / len(seq))
    return choices, flips, agree
