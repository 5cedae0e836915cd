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


def test_first_channels_keeps_batchnorms_own_bookkeeping():
    """The superkernel's sliced BatchNorm (plain or global, outside a group) against nn.BatchNorm2d on just those
    channels: outputs, running statistics and the step count agree in training and eval, with a fixed momentum,
    a cumulative average (momentum None, also evaluated before any training step) and untracked statistics."""
    from training.distributed import batch_norm_first_channels

    x, w, b = _batch()
    for kind in (torch.nn.BatchNorm2d, GlobalBatchNorm2d):
        for kwargs in ({"momentum": 0.1}, {"momentum": None}, {"track_running_stats": False}):
            big, small = kind(5, **kwargs), torch.nn.BatchNorm2d(3, **kwargs)
            with torch.no_grad():
                small.weight.copy_(w)
                small.bias.copy_(b)
            for mode, steps in (("eval", 1), ("train", 3), ("eval", 1)):
                big.train(mode == "train")
                small.train(mode == "train")
                for k in range(steps):
                    xi = x + k
                    got = batch_norm_first_channels(big, xi, w, b)
                    torch.testing.assert_close(got, small(xi), msg=f"{kind.__name__} {kwargs} {mode}")
            if small.track_running_stats:
                torch.testing.assert_close(big.running_mean[:3], small.running_mean)
                torch.testing.assert_close(big.running_var[:3], small.running_var)
                assert int(big.num_batches_tracked) == int(small.num_batches_tracked) == 3
                assert torch.equal(big.running_mean[3:], torch.zeros(2)), "channels outside the slice untouched"
