"""A depthwise convolution whose CPU weight gradient avoids oneDNN's slow case: a kernel wider than the map.

A search step on this project's spaces spends about a third of its time in the backward of depthwise
convolutions (a profile of one NAS-Bench-Macro threshold step, one thread, batch 96), and oneDNN (PyTorch 2.13,
float32) is far slower than the arithmetic needs wherever the kernel is wider than a small map: 5x5 over 1536
channels at 4x4 (that space's last stage, twice per superkernel step) took 172-266 ms forward and backward where
its forward alone takes about 5 ms; 3x3 at 2x2 and 7x7 at 4x4 likewise. Where the kernel fits the map it is
fast (3x3 at 4x4: a few ms).

`depthwise_conv2d` computes the forward with `F.conv2d` and, on the CPU, the weight gradient in exactly those
cases (stride 1, at most 16 positions, a kernel wider than the map) another way: for every channel the products
of every input position with every output position, summed over the batch (one batched matrix product,
[C, HW, N] x [C, N, HoWo]), then gathered into the kernel's taps by a fixed 0/1 matrix. Everything else, the
input gradient included, is PyTorch's own backward (oneDNN in float32). `python -m bench.bench_depthwise`
measures both ways side by side on the machine at hand, the space's shapes and a few others; its latest figures
are in docs/benchmarks.md (5x5 at 4x4, 1536 channels: 3.2-4.2x faster in two runs; a threshold step of
NAS-Bench-Macro's superkernel 1.06-1.14x, of the MobileNetV3 space's, whose 4x4 maps carry 5x5 kernels in most
layers, 1.74x).

The gradients equal `F.conv2d`'s up to float rounding (tests/nas/test_depthwise.py); the summation order
differs, so a search that uses it is bit-for-bit repeatable but not bit-identical to one that does not, as
on another CPU. On a GPU, without gradients, under CPU autocast (`amp=bf16`), for other dtypes, non-square
kernels or non-integer strides and paddings, or with `set_enabled(False)`, it is `F.conv2d`.
"""

from __future__ import annotations

import threading
from typing import Any

import torch
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

GRAM_MAX_POSITIONS = 16  # maps of at most this many positions (4x4) under a wider kernel: product-and-gather

_state = {"enabled": True}
_taps: dict[tuple[Any, ...], torch.Tensor] = {}
_taps_lock = threading.Lock()


def set_enabled(on: bool) -> bool:
    """Switch the custom backward on or off for this process (benchmarks compare both); returns the old value."""
    old, _state["enabled"] = _state["enabled"], bool(on)
    return old


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, stride: Any = 1, padding: Any = 0) -> torch.Tensor:
    """`F.conv2d(x, weight, None, stride, padding, 1, C)` for a depthwise `weight` [C, 1, kh, kw], with the faster
    CPU weight gradient of the module's docstring for a square kernel and integer stride and padding."""
    if weight.dim() != 4 or weight.shape[1] != 1 or x.shape[1] != weight.shape[0]:
        raise ValueError(f"depthwise_conv2d: weight {tuple(weight.shape)} is not depthwise for {x.shape[1]} channels")
    if (not _state["enabled"] or not isinstance(stride, int) or not isinstance(padding, int)
            or weight.shape[2] != weight.shape[3] or x.device.type != "cpu" or not torch.is_grad_enabled()
            or not (x.requires_grad or weight.requires_grad) or x.dtype not in (torch.float32, torch.float64)
            or torch.is_autocast_enabled("cpu")):  # amp=bf16: autocast's own casts around oneDNN's backward
        return F.conv2d(x, weight, None, stride, padding, 1, weight.shape[0])
    return _DepthwiseConv2d.apply(x, weight, stride, padding)


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
            oi, oj = torch.arange(ho).view(-1, 1, 1, 1), torch.arange(wo).view(1, -1, 1, 1)
            ky, kx = torch.arange(k).view(1, 1, -1, 1), torch.arange(k).view(1, 1, 1, -1)
            ai, aj = (oi + ky - p).expand(ho, wo, k, k), (oj + kx - p).expand(ho, wo, k, k)
            valid = (ai >= 0) & (ai < h) & (aj >= 0) & (aj < w)
            rows = (ai * w + aj) * (ho * wo) + (oi * wo + oj)  # (input position, output position)
            cols = (ky * k + kx).expand(ho, wo, k, k)
            m = torch.zeros(h * w * ho * wo, k * k, dtype=dtype)
            m[rows[valid], cols[valid]] = 1
            m = _taps[key] = m.to(device)
        return m
