"""Training-free scores of an architecture, from one randomly initialised network and one batch.

- NASWOT (Mellor et al., "Neural Architecture Search without Training", ICML 2021): the log-determinant
  of the kernel K[i, j] = number of ReLUs at which images i and j fall on the same side of zero. A
  network whose activation patterns tell a batch's images apart scores high. Kendall tau 0.76 with
  NAS-Bench-Macro's accuracy on 2 cores, the strongest training-free ranker measured there.
- SynFlow (Tanaka et al., NeurIPS 2020; as a NAS proxy: Abdelfattah et al., ICLR 2021): the sum over
  parameters of |theta * dR/dtheta| with every weight replaced by its absolute value and an all-ones
  input, R the sum of the outputs (no data needed).

Both are pure functions of (architecture, seed, batch) so a search and its controls score a network
identically; the network is built with `search_spaces.build_model` and never trained.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from search_spaces import ArchSpec, build_model


RECTIFIERS = (nn.ReLU, nn.ReLU6, nn.Hardswish)  # the units NASWOT reads: output > 0 exactly when input > 0


def naswot_score(model: nn.Module, x: torch.Tensor) -> float:
    """log|det K| of the binary ReLU-code kernel of batch `x` (the model in train mode, no gradient); every
    ReLU, ReLU6 and hard-swish unit contributes its on/off bit."""
    codes: list[torch.Tensor] = []

    def hook(_m: nn.Module, _i: tuple, out: torch.Tensor) -> None:
        codes.append(out.detach().flatten(1) > 0)

    # hard-swish is positive exactly where its input is, so its units give the same binary code as a ReLU's
    # (MobileNetV3's later blocks); without them NASWOT would not see those layers at all
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, RECTIFIERS)]
    try:
        model.train()
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    n = x.shape[0]
    k = torch.zeros(n, n, dtype=torch.float64)
    for code in codes:
        # agreements of two binary codes: c_i.c_j + (1-c_i).(1-c_j) = d - a_i - a_j + 2 c_i.c_j, one product;
        # counts are integers, exact in float32 below 2**24 features (a 32-px layer has at most ~4e5)
        c = code.to(torch.float32 if code.shape[1] < 2 ** 24 else torch.float64)
        a = c.sum(1, dtype=torch.float64)
        k += code.shape[1] - a[:, None] - a[None, :] + 2 * (c @ c.t()).double()
    sign, logdet = torch.linalg.slogdet(k)
    return float(logdet) if float(sign) > 0 else float("-inf")


def synflow_score(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """sum |theta * d(sum f(1))/d theta| over the weights, on |theta| in float64 (BN as the identity map)."""
    model = model.double()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
    model.eval()
    signs = {}
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if p.is_floating_point() and "running" not in name:
                signs[name] = torch.sign(p)
                p.abs_()
    model.zero_grad()
    out = model(torch.ones(input_shape, dtype=torch.float64))
    out.sum().backward()
    score = 0.0
    for p in model.parameters():
        if p.grad is not None:
            score += float((p.detach() * p.grad).abs().sum())
    return score


def score_arch(arch: ArchSpec, proxy: str, x: torch.Tensor, seed: int = 0) -> float:
    """The training-free score `proxy` (naswot | synflow) of `arch`, built with initialisation seed `seed`."""
    return score_arch_many(arch, (proxy,), x, seed)[proxy]


def score_arch_many(arch: ArchSpec, proxies: tuple[str, ...], x: torch.Tensor, seed: int = 0) -> dict[str, float]:
    """Several training-free scores of `arch` from one build (each equal to `score_arch`'s): NASWOT only
    reads the network, so it goes first; SynFlow turns its weights to |theta| in float64, so it goes last."""
    unknown = set(proxies) - {"naswot", "synflow"}
    if unknown:
        raise ValueError(f"unknown training-free proxy '{sorted(unknown)[0]}' (naswot | synflow)")
    torch.manual_seed(seed)
    model = build_model(arch, dropout=0.0)
    out: dict[str, float] = {}
    if "naswot" in proxies:
        out["naswot"] = naswot_score(model, x)
    if "synflow" in proxies:
        out["synflow"] = synflow_score(model, (1, *x.shape[1:]))
    return out


PROXIES: dict[str, Callable[[ArchSpec, torch.Tensor, int], float]] = {
    "naswot": lambda a, x, s: score_arch(a, "naswot", x, s),
    "synflow": lambda a, x, s: score_arch(a, "synflow", x, s),
}
