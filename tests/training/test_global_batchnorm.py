"""GlobalBatchNorm2d on a channel slice (a superkernel's sliced candidate path): alone, as plain BatchNorm on
those channels; in a group of two gloo ranks, as one process over the global batch."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn import functional as F

from training.distributed import GlobalBatchNorm2d, rank_local_batchnorm


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return (torch.randn(8, 3, 4, 4, generator=g) * 2 + 1, torch.rand(3, generator=g) + 0.5,
            torch.randn(3, generator=g))


def _reference(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Plain BatchNorm over the first 3 of 5 channels: output, running mean and var of all 5."""
    rm, rv = torch.zeros(5), torch.ones(5)
    y = F.batch_norm(x, rm[:3], rv[:3], w, b, True, 0.1, 1e-5)
    return y, rm, rv


def test_a_slice_alone_is_plain_batchnorm_on_its_channels():
    x, w, b = _batch()
    bn = GlobalBatchNorm2d(5).train()
    want, rm, rv = _reference(x, w, b)
    for local in (False, True):  # no group at all, or one rank scoring alone in a group
        bn.reset_running_stats()
        if local:
            with rank_local_batchnorm():
                got = bn.normalize(x, w, b)
        else:
            got = bn.normalize(x, w, b)
        assert torch.allclose(got, want, atol=1e-6)
        assert torch.allclose(bn.running_mean, rm) and torch.allclose(bn.running_var, rv)
        assert bn.running_mean[3:].eq(0).all() and bn.running_var[3:].eq(1).all()  # the rest untouched


def _rank(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        x, w, b = _batch()
        bn = GlobalBatchNorm2d(5).train()
        y = bn.normalize(x[rank * 4:(rank + 1) * 4], w, b)
        torch.save({"y": y, "rm": bn.running_mean, "rv": bn.running_var}, os.path.join(out, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_a_slice_in_a_group_is_batchnorm_over_the_global_batch(tmp_path: Path):
    mp.spawn(_rank, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    x, w, b = _batch()
    want, rm, rv = _reference(x, w, b)
    got = [torch.load(tmp_path / f"{r}.pt") for r in (0, 1)]
    assert torch.allclose(torch.cat([g["y"] for g in got]), want, atol=1e-5)
    for g in got:
        assert torch.allclose(g["rm"], rm, atol=1e-6) and torch.allclose(g["rv"], rv, atol=1e-5)
