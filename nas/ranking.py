"""How good the trained supernet thinks a network is: its accuracy inside the supernet, decisions fixed.

A supernet trained with many paths keeps BatchNorm statistics that belong to none of them, so every
path is scored after recalibrating BatchNorm on its own (statistics reset, then accumulated over
`recal` images in training mode, no gradient; Guo et al., SPOS, 2020), then evaluated on held-out
images. Each path runs on its own weight slices (`SuperMBConv.forward_choice`), at its own cost.
The supernet's own BatchNorm state is restored afterwards, so scoring can happen in the middle of a
training run (the ranking curve) without disturbing it.

The score is the mean cross-entropy (lower is better) with top-1 beside it: on a few hundred images
the loss separates networks that tie on accuracy. With no recalibration images, each held-out batch is
normalised by its own statistics (one pass instead of two; the batch must be large).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from training.batches import to_tensor
from training.datasets import Split

from .superkernel import SuperNet


@dataclass(frozen=True)
class PathScore:
    """A fixed network's figures inside the supernet."""

    choices: tuple[str, ...]
    loss: float  # mean cross-entropy on the held-out images
    top1: float


@dataclass(frozen=True)
class RankingImages:
    """The images a ranking uses: `recal` to re-estimate BatchNorm, `held_out` to score (normalised NCHW)."""

    recal: torch.Tensor
    held_out: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def from_split(cls, split: Split, n_recal: int, n_eval: int, seed: int = 0) -> "RankingImages":
        """Disjoint random subsets of `split` (the search's validation images: never trained on)."""
        if n_recal < 0 or n_eval < 1 or n_recal + n_eval > len(split):
            raise ValueError(f"ranking needs {n_recal} + {n_eval} images; the split has {len(split)}")
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(split), generator=g)
        imgs = torch.from_numpy(split.images)
        labels = torch.from_numpy(split.labels).long()
        r, e = idx[:n_recal], idx[n_recal:n_recal + n_eval]
        return cls(to_tensor(imgs[r]), to_tensor(imgs[e]), labels[e])


def _bns(net: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextmanager
def preserved_batchnorm(net: nn.Module) -> Iterator[None]:
    """Restore every BatchNorm's statistics, momentum and the training flag on exit."""
    bns = _bns(net)
    saved = [(bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone(), bn.momentum)
             for bn in bns]
    training = net.training
    try:
        yield
    finally:
        for bn, (m, v, n, mom) in zip(bns, saved):
            bn.running_mean.copy_(m)
            bn.running_var.copy_(v)
            bn.num_batches_tracked.copy_(n)
            bn.momentum = mom
        net.train(training)


@torch.no_grad()
def recalibrate(net: SuperNet, choices: Sequence[str], x: torch.Tensor, batch_size: int = 256) -> None:
    """Reset BatchNorm statistics and accumulate them (cumulative average) over `x` along the path `choices`."""
    for bn in _bns(net):
        bn.reset_running_stats()
        bn.momentum = None
    net.train()
    for i in range(0, len(x), batch_size):
        net(x[i:i + batch_size], list(choices))


@torch.no_grad()
def score_paths(net: SuperNet, paths: Sequence[Sequence[str]], images: RankingImages,
                batch_size: int = 256) -> list[PathScore]:
    """Each path's held-out loss and top-1 inside the supernet, BatchNorm recalibrated per path (the
    supernet's own statistics are restored afterwards)."""
    out = []
    rng = torch.get_rng_state()  # scoring draws nothing the training after it would see
    with preserved_batchnorm(net):
        dropout = net.dropout.p
        net.dropout.p = 0.0
        try:
            for choices in paths:
                if len(images.recal):
                    recalibrate(net, choices, images.recal, batch_size)
                    net.eval()
                else:  # no recalibration images: each held-out batch normalised by its own statistics
                    net.train()
                loss = correct = 0.0
                for i in range(0, len(images.held_out), batch_size):
                    logits = net(images.held_out[i:i + batch_size], list(choices))
                    y = images.labels[i:i + batch_size]
                    loss += float(F.cross_entropy(logits, y, reduction="sum"))
                    correct += float((logits.argmax(1) == y).sum())
                n = len(images.held_out)
                out.append(PathScore(tuple(choices), loss / n, correct / n))
        finally:
            net.dropout.p = dropout
            torch.set_rng_state(rng)
    return out
