"""A depthwise convolution whose CPU backward avoids oneDNN's slow cases in the search's small maps.

A search step on this project's spaces spends a third of its time in the backward of depthwise convolutions,
and much of that in one case oneDNN (PyTorch 2.13 CPU) handles poorly (one thread, batch 96, channels-last,
median of 8 calls; `python -m bench.bench_depthwise` measures them on the machine at hand):

- the weight gradient on a tiny map with many channels under a wider kernel: 1536 channels at 4x4, a 5x5
  kernel, took 156 ms, against 5 ms for the forward (NAS-Bench-Macro's last stage, twice per superkernel step).

`depthwise_conv2d` computes the forward with `F.conv2d` and, on the CPU, the weight gradient where the kernel is
wider than a map of at most 16 positions (5x5 at 4x4, 3x3 at 2x2) in another way: for every channel the
products of every input position with every output position, summed over the batch (one batched matrix
product, [C, HW, N] x [C, N, HoWo]), then gathered into the kernel's taps by a fixed 0/1 matrix; 67 ms instead
of 266 at the size above, forward and backward (bench/bench_depthwise.py). Everything else is oneDNN's
(3x3 at 4x4 takes it under 1 ms; a forward convolution with the flipped kernel as the input gradient was
no faster there), so only those layers' weight gradients differ from `F.conv2d`'s.

The gradients equal `F.conv2d`'s up to float rounding (tests/nas/test_depthwise.py); the summation order
differs, so a search that uses it is bit-for-bit repeatable but not bit-identical to one that does not, as
on another CPU. On a GPU, without gradients, or with `set_enabled(False)` it is `F.conv2d`.
"""

from __future__ import annotations

import threading
from typing import Any

import torch
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

GRAM_MAX_POSITIONS = 16  # maps of at most this many positions (4x4), under a wider kernel, take the product-and-gather

_state = {"enabled": True}
_taps: dict[tuple[Any, ...], torch.Tensor] = {}
_taps_lock = threading.Lock()


def set_enabled(on: bool) -> bool:
    """Switch the custom backward on or off for this process (benchmarks compare both); returns the old value."""
    old, _state["enabled"] = _state["enabled"], bool(on)
    return old


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, stride: int = 1, padding: int = 0) -> torch.Tensor:
    """`F.conv2d(x, weight, None, stride, padding, 1, C)` for a depthwise `weight` [C, 1, k, k] (square kernel,
    symmetric padding), with the faster CPU backward described in the module's docstring."""
    if weight.dim() != 4 or weight.shape[1] != 1 or x.shape[1] != weight.shape[0]:
        raise ValueError(f"depthwise_conv2d: weight {tuple(weight.shape)} is not depthwise for {x.shape[1]} channels")
    if (not _state["enabled"] or x.device.type != "cpu" or not torch.is_grad_enabled()
            or not (x.requires_grad or weight.requires_grad) or x.dtype not in (torch.float32, torch.float64)):
        return F.conv2d(x, weight, None, stride, padding, 1, weight.shape[0])
    return _DepthwiseConv2d.apply(x, weight, int(stride), int(padding))


class _DepthwiseConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, weight, None, stride, padding, 1, weight.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        x, weight = ctx.saved_tensors
        s, p = ctx.stride, ctx.padding
        k = weight.shape[-1]
        h, w = x.shape[2:]
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (need_w and s == 1 and h * w <= GRAM_MAX_POSITIONS and k > min(h, w)):
            gx, gw = _native(grad, x, weight, s, p, (need_x, need_w))[:2]
            return gx, gw, None, None
        gx = _native(grad, x, weight, s, p, (True, False))[0] if need_x else None
        c, n = weight.shape[0], x.shape[0]
        ho, wo = grad.shape[2:]
        xs = x.permute(1, 2, 3, 0).reshape(c, h * w, n)          # [C, HW, N]
        gs = grad.permute(1, 0, 2, 3).reshape(c, n, ho * wo)     # [C, N, HoWo]
        products = torch.bmm(xs, gs).reshape(c, h * w * ho * wo)
        gw = (products @ _tap_matrix(h, w, ho, wo, k, p, x.dtype, x.device)).reshape(c, 1, k, k)
        return gx, gw, None, None


def _native(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, s: int, p: int,
            mask: tuple[bool, bool]) -> tuple[torch.Tensor | None, ...]:
    return torch.ops.aten.convolution_backward(grad, x, weight, None, [s, s], [p, p], [1, 1], False, [0, 0],
                                               weight.shape[0], [mask[0], mask[1], False])


def _tap_matrix(h: int, w: int, ho: int, wo: int, k: int, p: int, dtype: torch.dtype,
                device: torch.device) -> torch.Tensor:
    """[(input position, output position), tap] = 1 where the tap joins them (stride 1), else 0; cached."""
    key = (h, w, ho, wo, k, p, dtype, device)
    with _taps_lock:
        m = _taps.get(key)
        if m is None:
            m = torch.zeros(h * w, ho * wo, k * k, dtype=dtype)
            for oi in range(ho):
                for oj in range(wo):
                    for ky in range(k):
                        for kx in range(k):
                            ai, aj = oi + ky - p, oj + kx - p
                            if 0 <= ai < h and 0 <= aj < w:
                                m[ai * w + aj, oi * wo + oj, ky * k + kx] = 1
            m = _taps[key] = m.reshape(h * w * ho * wo, k * k).to(device)
        return m
