"""Training-free scores of an architecture, from one randomly initialised network and one batch.

- NASWOT (Mellor et al., "Neural Architecture Search without Training", ICML 2021): the log-determinant
  of the kernel K[i, j] = number of ReLUs at which images i and j fall on the same side of zero. A
  network whose activation patterns tell a batch's images apart scores high. Kendall tau 0.76 with
  NAS-Bench-Macro's accuracy on 2 cores, the strongest training-free ranker measured there.
- SynFlow (Tanaka et al., NeurIPS 2020; as a NAS proxy: Abdelfattah et al., ICLR 2021): the sum over
  parameters of |theta * dR/dtheta| with every weight replaced by its absolute value and an all-ones
  input, R the sum of the outputs (no data needed).

Both are pure functions of (architecture, seed, batch) so a search and its controls score a network
identically; the network is built with `search_spaces.build_model`, initialised layer by layer
(`search_spaces.model.init_per_layer`: a layer's initial weights depend on the seed, its depth among the
layers that are not skipped and the layer itself, not on the rest of the network) and never trained.
Networks that share a layer therefore share its weights: a comparison of two scores compares what differs
between the networks, codes of one network score alike, and `naswot_scores` computes a prefix that many
networks share once (a search's finalists, a ranking sample).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from search_spaces import ArchSpec, build_model
from search_spaces.model import Net, build_seeded_layer, init_per_layer, seeded_layers


RECTIFIERS = (nn.ReLU, nn.ReLU6, nn.Hardswish)  # the units NASWOT reads: output > 0 exactly when input > 0


def naswot_score(model: nn.Module, x: torch.Tensor) -> float:
    """log|det K| of the binary ReLU-code kernel of batch `x` (the model in train mode, no gradient); every
    ReLU, ReLU6 and hard-swish unit contributes its on/off bit."""
    # hard-swish is positive exactly where its input is, so its units give the same binary code as a ReLU's
    # (MobileNetV3's later blocks); without them NASWOT would not see those layers at all
    model.train()
    with torch.no_grad():
        _, codes = _run_reading_codes(model, x)
    return _log_det(_agreements(codes, x.shape[0]))


def _agreements(codes: Sequence[torch.Tensor], n: int) -> torch.Tensor:
    """The n x n kernel of agreements summed over the binary codes (float64, integer-valued)."""
    k = torch.zeros(n, n, dtype=torch.float64)
    for code in codes:
        # agreements of two binary codes: c_i.c_j + (1-c_i).(1-c_j) = d - a_i - a_j + 2 c_i.c_j, one product;
        # counts are integers, exact in float32 below 2**24 features (a 32-px layer has at most ~4e5), and
        # their float64 sums are exact in any order (so a kernel summed layer by layer equals the whole's)
        c = code.to(torch.float32 if code.shape[1] < 2 ** 24 else torch.float64)
        a = c.sum(1, dtype=torch.float64)
        k += code.shape[1] - a[:, None] - a[None, :] + 2 * (c @ c.t()).double()
    return k


def _log_det(k: torch.Tensor) -> float:
    sign, logdet = torch.linalg.slogdet(k)
    return float(logdet) if float(sign) > 0 else float("-inf")


def build_for_scoring(arch: ArchSpec, seed: int) -> Net:
    """The never-trained network a training-free score reads: no dropout, initialised layer by layer from
    `seed` (`init_per_layer`); the global random state is left as it was."""
    with torch.random.fork_rng(devices=[]):  # the modules' default initialisation draws; init_per_layer redraws
        model = build_model(arch, dropout=0.0)
    return init_per_layer(model, seed)


def naswot_scores(archs: Sequence[ArchSpec], x: torch.Tensor, seed: int = 0) -> list[float]:
    """NASWOT of each network, each equal to `score_arch(arch, "naswot", x, seed)`, over a prefix tree.

    A layer's weights depend only on the seed, its depth and the layer (`seeded_layers`), so networks whose
    first j non-identity layers are the same compute the same activations and ReLU codes there. The
    networks are visited in the order of their layers; each keeps the deepest activation and partial kernel
    it shares with the one before and builds and runs only the layers after it. The kernel's entries are
    integer counts, exact in any order of summation, so each score is its whole network's, bit for bit. A
    neighbourhood of radius 2 around a network of 8 searchable layers (129 networks) runs fewer than half
    the layers; a random sample of a space shares its early layers, the costliest to read (the highest
    resolution, the widest codes)."""
    if not archs:
        return []
    resolved = [a.resolve() for a in archs]
    layers = [seeded_layers(r, seed) for r in resolved]
    keys = [tuple(key for _i, key, _s in ls) for ls in layers]
    n = x.shape[0]
    out: list[float] = [0.0] * len(archs)
    stack: list[tuple[str, torch.Tensor, torch.Tensor]] = []  # (layer, its output, the kernel up to it)
    with torch.no_grad():
        for a in sorted(range(len(archs)), key=lambda a: keys[a]):
            key = keys[a]
            shared = 0
            while shared < min(len(stack), len(key)) and stack[shared][0] == key[shared]:
                shared += 1
            del stack[shared:]
            h = stack[-1][1] if stack else x
            k = stack[-1][2] if stack else torch.zeros(n, n, dtype=torch.float64)
            for j in range(shared, len(key)):
                i, _key, generator_seed = layers[a][j]
                h, codes = _run_reading_codes(build_seeded_layer(resolved[a][i], generator_seed).train(), h)
                k = k + _agreements(codes, n)
                stack.append((key[j], h, k))
            out[a] = _log_det(k)  # the kernel of this network's last layer (shared or just computed)
    return out


def _run_reading_codes(module: nn.Module, h: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """`module(h)` and the binary codes of its rectifiers (NASWOT's reading of a whole network or of one layer).
    In the tree `h` is shared by many networks: a module that changed it in place would corrupt them, so that
    is refused."""
    codes: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda _m, _i, o: codes.append(o.detach().flatten(1) > 0))
               for m in module.modules() if isinstance(m, RECTIFIERS)]
    version = h._version
    try:
        y = module(h)
    finally:
        for hd in handles:
            hd.remove()
    if h._version != version:
        raise RuntimeError(f"{type(module).__name__} changed its input in place: the NASWOT prefix tree cannot share it")
    return y, codes


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
    model = build_for_scoring(arch, seed)
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
