"""nas.depthwise: the same gradients as F.conv2d, on every path its backward takes, and in a superkernel step."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from nas import depthwise
from nas.depthwise import depthwise_conv2d


@pytest.fixture(autouse=True)
def _enabled():
    old = depthwise.set_enabled(True)
    yield
    depthwise.set_enabled(old)


# (channels, height, width, kernel, stride, padding): the product-and-gather weight gradient (a kernel wider than
# a map of <= 16 positions), oneDNN's (larger maps, a kernel within the map), stride 2, uneven maps, other paddings
CASES = [(24, 4, 4, 5, 1, 2), (16, 2, 2, 3, 1, 1), (8, 3, 5, 7, 1, 3), (8, 1, 1, 5, 1, 2), (12, 4, 4, 3, 1, 1),
         (12, 8, 8, 5, 1, 2), (10, 9, 7, 5, 2, 2), (6, 8, 8, 3, 2, 1), (6, 4, 4, 5, 1, 1), (6, 6, 6, 3, 1, 0),
         (8, 4, 4, 5, 2, 2), (8, 2, 2, 3, 2, 1)]


def takes_gather(h: int, w: int, k: int, s: int) -> bool:
    """Where the product-and-gather weight gradient is meant to run: stride 1, <= 16 positions, a wider kernel."""
    return s == 1 and h * w <= 16 and k > min(h, w)


@pytest.mark.parametrize("c,h,w,k,s,p", CASES)
@pytest.mark.parametrize("fmt", [torch.channels_last, torch.contiguous_format])
def test_gradients_equal_conv2d(c: int, h: int, w: int, k: int, s: int, p: int, fmt: torch.memory_format) -> None:
    torch.manual_seed(0)
    x = torch.randn(5, c, h, w, dtype=torch.float64).to(memory_format=fmt).requires_grad_()
    wt = torch.randn(c, 1, k, k, dtype=torch.float64).to(memory_format=fmt).requires_grad_()
    ref = F.conv2d(x, wt, None, s, p, 1, c)
    out = depthwise_conv2d(x, wt, s, p)
    assert out.grad_fn is not None and "Depthwise" in type(out.grad_fn).__name__  # the custom backward ran
    torch.testing.assert_close(out, ref, rtol=0, atol=0)  # the forward is F.conv2d itself
    g = torch.randn_like(ref)
    want = torch.autograd.grad(ref, (x, wt), g)
    depthwise._taps.clear()
    got = torch.autograd.grad(out, (x, wt), g)
    assert bool(depthwise._taps) == takes_gather(h, w, k, s)  # the branch the rule names ran
    for a, b in zip(got, want):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_float32_and_one_input_needing_a_gradient() -> None:
    torch.manual_seed(1)
    x = torch.randn(8, 32, 4, 4).to(memory_format=torch.channels_last)
    wt = torch.randn(32, 1, 5, 5).to(memory_format=torch.channels_last).requires_grad_()
    (gw,) = torch.autograd.grad(depthwise_conv2d(x, wt, 1, 2).square().sum(), (wt,))
    (ref,) = torch.autograd.grad(F.conv2d(x, wt, None, 1, 2, 1, 32).square().sum(), (wt,))
    torch.testing.assert_close(gw, ref, rtol=1e-4, atol=1e-4)
    x.requires_grad_()
    wt.requires_grad_(False)
    (gx,) = torch.autograd.grad(depthwise_conv2d(x, wt, 1, 2).square().sum(), (x,))
    (ref,) = torch.autograd.grad(F.conv2d(x, wt, None, 1, 2, 1, 32).square().sum(), (x,))
    torch.testing.assert_close(gx, ref, rtol=1e-4, atol=1e-4)


def test_plain_conv2d_without_gradients_or_when_switched_off() -> None:
    x = torch.randn(2, 4, 4, 4, requires_grad=True)
    wt = torch.randn(4, 1, 5, 5, requires_grad=True)
    with torch.no_grad():
        assert depthwise_conv2d(x, wt, 1, 2).grad_fn is None
    with torch.autocast("cpu", dtype=torch.bfloat16):  # amp=bf16 on the CPU: autocast's conv, whose backward works
        out = depthwise_conv2d(x, wt, 1, 2)
    assert out.dtype is torch.bfloat16 and "Depthwise" not in type(out.grad_fn).__name__
    torch.autograd.grad(out.float().sum(), (x, wt))
    depthwise.set_enabled(False)
    assert "Depthwise" not in type(depthwise_conv2d(x, wt, 1, 2).grad_fn).__name__
    depthwise.set_enabled(True)
    for args in ((torch.randn(4, 1, 3, 5, requires_grad=True), 1, (1, 2)), (wt, (1, 1), 2), (wt, 1, "same")):
        out = depthwise_conv2d(x, *args)  # a non-square kernel, a tuple stride, a string padding: F.conv2d's own
        assert "Depthwise" not in type(out.grad_fn).__name__
        torch.testing.assert_close(out, F.conv2d(x, args[0], None, args[1], args[2], 1, 4))
    with pytest.raises(ValueError, match="not depthwise"):
        depthwise_conv2d(x, torch.randn(4, 2, 3, 3), 1, 1)


def test_superkernel_step_same_gradients_both_ways() -> None:
    """A threshold step and a sampled warm-up step of NAS-Bench-Macro's superkernel: every parameter's gradient
    (thresholds included) as with oneDNN's backward, up to float rounding."""
    import spnas
    from nas.superkernel import SuperNet
    from search_spaces import SearchSpace

    space = SearchSpace.from_config(spnas.compose("search", ["experiment=nasbench_macro"]).space)
    torch.manual_seed(0)
    net = SuperNet(space, 32, 1.0, 10).double().to(memory_format=torch.channels_last)
    x = torch.randn(6, 3, 32, 32, dtype=torch.float64).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (6,))

    def grads(on: bool, path: list[str] | None) -> list[torch.Tensor]:
        depthwise.set_enabled(on)
        torch.manual_seed(1)
        loss = F.cross_entropy(net(x, net.indicators() if path is None else path), y)
        net.zero_grad(set_to_none=True)
        loss.backward()
        return [q.grad.clone() for q in net.parameters() if q.grad is not None]

    for path in (None, ["k5_e6", "k3_e3", "k5_e6", "skip", "k5_e6", "k3_e3", "k5_e6", "k5_e6"]):
        want = grads(False, path)
        depthwise._taps.clear()
        got = grads(True, path)
        assert depthwise._taps  # the last stage's 5x5 at 4x4 took the product-and-gather weight gradient
        assert len(want) == len(got) > 8
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-12)
