"""Reproducibility and provenance for runs: seeding, per-epoch generators, versions of the stack."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A generator fixed by (seed, epoch): data order and augmentation replay exactly on resume."""
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + epoch * 7_919 + stream * 104_729) % (2**63))
    return g


def set_threads(threads: int | None) -> None:
    """torch intra-op threads (None: leave torch's default)."""
    if threads:
        torch.set_num_threads(int(threads))


def progress(total: int, desc: str, unit: str = "batch"):
    """A tqdm bar (rate and ETA shown) that stays quiet when not on a terminal-ish stream."""
    import sys

    from tqdm import tqdm

    tty = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False,
                mininterval=0.5 if tty else 20.0, file=sys.stderr)
