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

In that one-pass form a layer's output depends only on the images and the choices before it, so paths
that share their first choices share those layers' work: `score_paths` walks the paths as a prefix
tree, each distinct prefix computed once (the early, high-resolution layers are shared by most paths).
The figures are the per-path loop's, bit for bit (the same operations on the same inputs).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from training.batches import to_tensor
from training.distributed import rank_local_batchnorm
from training.datasets import Split

from .superkernel import SuperMBConv, SuperNet


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
    """Reset BatchNorm statistics and accumulate them (cumulative average) over `x` along the path `choices`
    (this process's images alone, also under DDP: scoring is one rank's work)."""
    for bn in _bns(net):
        bn.reset_running_stats()
        bn.momentum = None
    net.train()
    with rank_local_batchnorm():
        for i in range(0, len(x), batch_size):
            net(x[i:i + batch_size], list(choices))


@torch.no_grad()
def score_paths(net: SuperNet, paths: Sequence[Sequence[str]], images: RankingImages,
                batch_size: int = 256, shared: bool = True) -> list[PathScore]:
    """Each path's held-out loss and top-1 inside the supernet, BatchNorm recalibrated per path (the
    supernet's own statistics are restored afterwards). Without recalibration images and with `shared`,
    the paths' common prefixes run once (the same figures; `shared=False` runs each path whole)."""
    out = []
    rng = torch.get_rng_state()  # scoring draws nothing the training after it would see
    # one rank's work (rank 0 ranks the finalists alone): BatchNorm over this process's batch, no all-reduce
    with preserved_batchnorm(net), rank_local_batchnorm():
        dropout = net.dropout.p
        net.dropout.p = 0.0
        try:
            if shared and not len(images.recal):  # each held-out batch normalised by its own statistics
                net.train()
                return _score_shared(net, paths, images, batch_size)
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


def _score_shared(net: SuperNet, paths: Sequence[Sequence[str]], images: RankingImages,
                  batch_size: int) -> list[PathScore]:
    """`score_paths` without recalibration, the paths walked as a prefix tree: each distinct prefix of choices
    runs once per batch and its output feeds every path that starts with it (depth first, so at most one
    activation per layer is held)."""
    layers = list(net.layers)
    n_super = len(net.super_layers())
    bad = [list(c) for c in paths if len(c) != n_super]
    if bad:
        raise ValueError(f"a path needs one choice per searchable layer ({n_super}); got {bad[0]}")
    loss = [0.0] * len(paths)
    correct = [0.0] * len(paths)

    def walk(pos: int, h: torch.Tensor, idxs: list[int], depth: int, y: torch.Tensor) -> None:
        while pos < len(layers) and not isinstance(layers[pos], SuperMBConv):
            h = layers[pos](h)
            pos += 1
        if pos == len(layers):
            logits = net.classifier(net.dropout(h))
            batch_loss = float(F.cross_entropy(logits, y, reduction="sum"))
            batch_correct = float((logits.argmax(1) == y).sum())
            for i in idxs:
                loss[i] += batch_loss
                correct[i] += batch_correct
            return
        groups: dict[str, list[int]] = {}
        for i in idxs:
            groups.setdefault(paths[i][depth], []).append(i)
        for choice, sub in groups.items():
            walk(pos + 1, layers[pos](h, choice), sub, depth + 1, y)

    for i in range(0, len(images.held_out), batch_size):
        walk(0, images.held_out[i:i + batch_size], list(range(len(paths))), 0, images.labels[i:i + batch_size])
    n = len(images.held_out)
    return [PathScore(tuple(c), loss[i] / n, correct[i] / n) for i, c in enumerate(paths)]
