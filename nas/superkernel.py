"""Single-Path NAS superkernel (Stamoulis et al., 2019): one searchable MBConv layer, one path.

Each `SuperMBConv` holds a single 5x5 depthwise kernel over the e6 channel count. Its decisions:

    use5x5 = 1(||w_ring||^2 > t_k)               the outer 5x5 ring on top of the inner 3x3
    use_e6 = 1(||w_k[second half]||^2 > t_e6)    the channels beyond the e3 half
    keep   = 1(||w_k[first half]||^2 > t_e3)     (skippable layers only) a dropped layer is the identity

where w_k is the depthwise kernel after the kernel decision, and ||.||^2 is the squared norm
divided by the element count (so one threshold scale serves every layer). Indicators are hard
steps forward with a sigmoid straight-through gradient, `stop_grad(step(x) - s(x)) + s(x)`.
Channels beyond the e3 half get their conv weights and BN scale/shift multiplied by use_e6 (the SE
bottleneck beyond its e3 width likewise), the ring is multiplied by use5x5 and the projection's BN by
keep, so the layer computes exactly the fixed layer its decisions describe: one path, no
per-candidate branches, and no activation memory beyond the largest fixed layer's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from search_spaces import ArchSpec, LayerSlot, SearchSpace, make_divisible
from search_spaces.model import ConvBNAct, InvertedResidual, build_layer, init_weights, make_activation
from search_spaces.proxy import Proxy
from search_spaces.space import SKIP, parse_choice
from spnas_core.errors import ArchSpecError, CheckpointError


def ste_step(x: torch.Tensor, band: torch.Tensor | float = 0.0, prev: torch.Tensor | None = None) -> torch.Tensor:
    """Hard 0/1 step forward, sigmoid gradient backward: stop_grad(step(x) - s(x)) + s(x).

    With a hysteresis `band` and the previous decision `prev`, a decision changes only when the margin
    x crosses the band on the other side (a Schmitt trigger): near-zero margins stop flipping."""
    s = torch.sigmoid(x)
    hard = x > 0 if prev is None else torch.where(prev > 0.5, x > -band, x > band)
    return hard.to(x.dtype) - s.detach() + s


def mean_square(w: torch.Tensor) -> torch.Tensor:
    """||w||^2 / numel: the decision statistic, comparable across layers of any width."""
    return w.pow(2).mean()


class SuperMBConv(nn.Module):
    """A searchable inverted residual: kernel {k_small, k_big} x expansion {e_small, e_big} (+ skip)."""

    def __init__(self, slot: LayerSlot, cin: int, cout: int, kernels: tuple[int, int] = (3, 5),
                 expansions: tuple[int, int] = (3, 6), threshold_init: float = 0.0, stride: int | None = None) -> None:
        super().__init__()
        self.slot = slot
        self.kernels, self.expansions = kernels, expansions
        # `stride` differs from the slot's design stride only under a proxy geometry (search_spaces.proxy)
        self.cin, self.cout, self.stride = cin, cout, slot.stride if stride is None else stride
        self.act_name = slot.act
        self.mid_small = make_divisible(cin * expansions[0])
        self.mid = make_divisible(cin * expansions[1])
        self.residual = self.stride == 1 and cin == cout
        if slot.skippable and not self.residual:
            raise ArchSpecError(f"layer {slot.index}: skip needs stride 1 and equal channels")
        kb, ks = kernels[1], kernels[0]
        self.expand = ConvBNAct(cin, self.mid, 1, act=slot.act)
        self.dw_weight = nn.Parameter(torch.empty(self.mid, 1, kb, kb))
        self.dw_bn = nn.BatchNorm2d(self.mid)
        self.dw_act = make_activation(slot.act)
        if slot.se:
            self.se_small = make_divisible(self.mid_small // 4)
            self.se_hidden = make_divisible(self.mid // 4)
            self.se_fc1 = nn.Conv2d(self.mid, self.se_hidden, 1)
            self.se_fc2 = nn.Conv2d(self.se_hidden, self.mid, 1)
        self.project = ConvBNAct(self.mid, cout, 1, act=None)
        ring = torch.ones(kb, kb)
        off = (kb - ks) // 2
        ring[off:off + ks, off:off + ks] = 0
        self.register_buffer("ring_mask", ring.view(1, 1, kb, kb), persistent=False)
        self.register_buffer("inner_mask", (1 - ring).view(1, 1, kb, kb), persistent=False)
        # the committed decisions (kernel, expand, keep) and the hysteresis band, as a fraction of each
        # statistic, a decision must cross to change (0: the plain step of the paper)
        self.register_buffer("decided", torch.ones(3))
        self.hysteresis = 0.0
        self.t_kernel = nn.Parameter(torch.tensor(float(threshold_init)))
        self.t_expand = nn.Parameter(torch.tensor(float(threshold_init)))
        self.t_keep = nn.Parameter(torch.tensor(float(threshold_init))) if slot.skippable else None

    def reset_parameters(self) -> None:
        """Depthwise kernel ~ N(0, 2/k^2) (TF/timm depthwise init): its mean square starts near 2/k^2
        in every layer, above the zero thresholds, so every layer starts as k_big e_big."""
        k = self.kernels[1]
        nn.init.normal_(self.dw_weight, 0.0, (2.0 / (k * k)) ** 0.5)

    # ------------------------------------------------------------------ decisions
    def statistics(self) -> dict[str, float]:
        """The three decision statistics, their thresholds and margins (statistic - threshold): a
        positive margin keeps the 5x5 ring / the e6 half / the layer. For the search log."""
        with torch.no_grad():
            w = self.dw_weight
            ms_ring = mean_square(w * self.ring_mask)
            use_k = self.indicators()["kernel"].detach()
            w_k = w * self.inner_mask + use_k * (w * self.ring_mask)
            ms_e6, ms_e3 = mean_square(w_k[self.mid_small:]), mean_square(w_k[: self.mid_small])
            out = {"ms_ring": float(ms_ring), "t_kernel": float(self.t_kernel),
                   "margin_kernel": float(ms_ring - self.t_kernel), "ms_e6": float(ms_e6),
                   "t_expand": float(self.t_expand), "margin_expand": float(ms_e6 - self.t_expand),
                   "ms_e3": float(ms_e3), "t_keep": None, "margin_keep": None}
            if self.t_keep is not None:
                out.update(t_keep=float(self.t_keep), margin_keep=float(ms_e3 - self.t_keep))
        return out

    def random_indicators(self, keep_prob: float, g: torch.Generator) -> dict[str, torch.Tensor]:
        """Warm-up path dropping (the official code's, keep probability 0.6): each of the three paths
        (5x5 ring, e6 half, the layer itself where it may be skipped) kept at random, no gradient."""
        w = self.dw_weight
        draw = (torch.rand(3, generator=g) < keep_prob).to(w.dtype)
        use_k, use_e = draw[0], draw[1]
        keep = draw[2] if self.t_keep is not None else torch.ones((), dtype=w.dtype)
        w_k = w * self.inner_mask + use_k * (w * self.ring_mask)
        return {"kernel": use_k, "expand": use_e, "keep": keep, "w_k": w_k}

    def indicators(self) -> dict[str, torch.Tensor]:
        """STE indicators: 'kernel' (use big kernel), 'expand' (use big expansion), 'keep'."""
        w = self.dw_weight
        h = self.hysteresis
        prev = self.decided if h > 0 else [None, None, None]
        ms_ring = mean_square(w * self.ring_mask)
        use_k = ste_step(ms_ring - self.t_kernel, h * ms_ring.detach(), prev[0])
        w_k = w * self.inner_mask + use_k * (w * self.ring_mask)
        ms_e6 = mean_square(w_k[self.mid_small:])
        use_e = ste_step(ms_e6 - self.t_expand, h * ms_e6.detach(), prev[1])
        if self.t_keep is not None:
            ms_e3 = mean_square(w_k[: self.mid_small])
            keep = ste_step(ms_e3 - self.t_keep, h * ms_e3.detach(), prev[2])
        else:
            keep = torch.ones((), dtype=w.dtype, device=w.device)
        return {"kernel": use_k, "expand": use_e, "keep": keep, "w_k": w_k}

    @torch.no_grad()
    def commit(self, ind: dict[str, torch.Tensor]) -> None:
        """Remember the decisions a training step used (the hysteresis compares against them)."""
        self.decided.copy_(torch.stack([ind["kernel"].detach(), ind["expand"].detach(), ind["keep"].detach()]))

    def choice(self, ind: dict[str, torch.Tensor] | None = None) -> str:
        """The hard decision as a space choice ('k5_e6', ..., or 'skip'), from `ind` or the current weights."""
        if ind is None:
            with torch.no_grad():
                ind = self.indicators()
        if float(ind["keep"].detach()) < 0.5:
            return SKIP
        k = self.kernels[1] if float(ind["kernel"].detach()) > 0.5 else self.kernels[0]
        e = self.expansions[1] if float(ind["expand"].detach()) > 0.5 else self.expansions[0]
        return f"k{k}_e{e}"

    def _channel_mask(self, n_small: int, n: int, e: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.ones(n_small, dtype=e.dtype, device=e.device), e.expand(n - n_small)])

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, ind: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        # Decisions act on parameters, never on activations: a dropped channel gets zero conv weights
        # and zero BN scale and shift (so it outputs act(0) = 0), the ring is added as use5x5 * ring,
        # and keep scales the projection's BN. The step therefore keeps exactly the activations the
        # largest fixed layer keeps for backward; gradients still reach every indicator.
        ind = ind or self.indicators()
        e, keep = ind["expand"], ind["keep"]
        m = self._channel_mask(self.mid_small, self.mid, e)
        conv, bn = self.expand[0], self.expand[1]
        h = F.conv2d(x, conv.weight * m.view(-1, 1, 1, 1))
        h = self.expand[2](_bn(h, bn, bn.weight * m, bn.bias * m))
        pad = (self.kernels[1] - 1) // 2
        # Same weight strides as a channels-last nn.Conv2d (the fixed net's): arithmetic on a [C, 1, k, k]
        # kernel yields NCHW strides, for which oneDNN picks a depthwise path up to 500x slower (1x1 maps).
        w_dw = (ind["w_k"] * m.view(-1, 1, 1, 1)).to(memory_format=torch.channels_last)
        h = F.conv2d(h, w_dw, None, self.stride, pad, 1, self.mid)
        h = self.dw_act(_bn(h, self.dw_bn, self.dw_bn.weight * m, self.dw_bn.bias * m))
        if self.slot.se:
            hm = self._channel_mask(self.se_small, self.se_hidden, e)
            s = h.mean((2, 3), keepdim=True)
            s = F.relu(F.conv2d(s, self.se_fc1.weight * hm.view(-1, 1, 1, 1), self.se_fc1.bias * hm))
            h = h * F.hardsigmoid(self.se_fc2(s))
        conv, bn = self.project[0], self.project[1]
        y = F.conv2d(h, conv.weight)
        if self.residual:
            return x + _bn(y, bn, bn.weight * keep, bn.bias * keep)
        return bn(y)

    # ------------------------------------------------------------------ fixed layer
    @torch.no_grad()
    def to_fixed(self, choice: str) -> nn.Module:
        """The plain layer of `choice` carrying this superkernel's effective weights (identity for skip)."""
        if choice == SKIP:
            return nn.Identity()
        k, e = parse_choice(choice)
        mid = self.mid_small if e == self.expansions[0] else self.mid
        from search_spaces import ResolvedLayer

        block = self.slot.block(choice)
        se_h = (self.se_small if mid == self.mid_small else self.se_hidden) if self.slot.se else 0
        layer = ResolvedLayer(0, block, self.cin, self.cout, 0, 0, 0, 0, mid, se_h)
        fixed = InvertedResidual(layer)
        _copy_conv_bn(self.expand, fixed.expand, out_slice=slice(0, mid))
        off = (self.kernels[1] - k) // 2
        fixed.depthwise[0].weight.copy_(self.dw_weight[:mid, :, off:off + k, off:off + k])
        _copy_bn(self.dw_bn, fixed.depthwise[1], slice(0, mid))
        if self.slot.se:
            fixed.se.fc1.weight.copy_(self.se_fc1.weight[:se_h, :mid])
            fixed.se.fc1.bias.copy_(self.se_fc1.bias[:se_h])
            fixed.se.fc2.weight.copy_(self.se_fc2.weight[:mid, :se_h])
            fixed.se.fc2.bias.copy_(self.se_fc2.bias[:mid])
        fixed.project[0].weight.copy_(self.project[0].weight[:, :mid])
        _copy_bn(self.project[1], fixed.project[1], slice(None))
        return fixed


def _bn(x: torch.Tensor, bn: nn.BatchNorm2d, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """`bn(x)` with replaced affine parameters (running statistics tracked as nn.BatchNorm2d does); under
    DDP with global BatchNorm the statistics are those of the global batch."""
    from training.distributed import GlobalBatchNorm2d

    if isinstance(bn, GlobalBatchNorm2d):
        return bn.normalize(x, weight, bias)
    if bn.training and bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
    momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
    use_batch = bn.training or bn.running_mean is None
    return F.batch_norm(x, bn.running_mean, bn.running_var, weight, bias, use_batch, momentum, bn.eps)


def _copy_bn(src: nn.BatchNorm2d, dst: nn.BatchNorm2d, sl: slice) -> None:
    dst.weight.copy_(src.weight[sl])
    dst.bias.copy_(src.bias[sl])
    dst.running_mean.copy_(src.running_mean[sl])
    dst.running_var.copy_(src.running_var[sl])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)


def _copy_conv_bn(src: nn.Sequential, dst: nn.Sequential, out_slice: slice) -> None:
    dst[0].weight.copy_(src[0].weight[out_slice])
    _copy_bn(src[1], dst[1], out_slice)


class SuperNet(nn.Module):
    """The whole searchable network: fixed stem/blocks/head from the space, a `SuperMBConv` per slot."""

    def __init__(self, space: SearchSpace, resolution: int = 32, width: float = 1.0, num_classes: int = 10,
                 dropout: float = 0.2, threshold_init: float = 0.0, proxy: Proxy | None = None) -> None:
        super().__init__()
        self.space = space
        self.resolution, self.width, self.num_classes = resolution, width, num_classes
        self.proxy = proxy or Proxy(resolution)
        kernels = tuple(sorted({parse_choice(c)[0] for c in space.choices}))
        exps = tuple(sorted({parse_choice(c)[1] for c in space.choices}))
        big = space.largest(resolution, width, num_classes)
        layers = self.proxy.apply(big).resolve()  # trained geometry; derive() returns the design one
        slot_at = {s.block_index: s for s in space.slots}
        mods: list[nn.Module] = []
        for layer in layers:
            slot = slot_at.get(layer.index)
            if slot is None:
                mods.append(build_layer(layer))
            else:
                mods.append(SuperMBConv(slot, layer.cin, layer.cout, kernels, exps, threshold_init,  # type: ignore[arg-type]
                                        stride=layer.block.stride))
        self.layers = nn.ModuleList(mods)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(layers[-1].cout, num_classes)
        init_weights(self)
        for m in self.super_layers():
            m.reset_parameters()

    def super_layers(self) -> list[SuperMBConv]:
        return [m for m in self.layers if isinstance(m, SuperMBConv)]

    def indicators(self, path_keep: float | None = None, g: torch.Generator | None = None
                   ) -> list[dict[str, torch.Tensor]]:
        """STE indicators of every searchable layer (computed once per step, shared by forward and latency);
        with `path_keep`, random hard paths instead (warm-up path dropping)."""
        if path_keep is not None:
            g = g or torch.default_generator
            return [m.random_indicators(path_keep, g) for m in self.super_layers()]
        return [m.indicators() for m in self.super_layers()]

    def forward(self, x: torch.Tensor, indicators: list[dict[str, torch.Tensor]] | None = None) -> torch.Tensor:
        it = iter(indicators) if indicators is not None else None
        for m in self.layers:
            x = m(x, next(it)) if isinstance(m, SuperMBConv) and it is not None else m(x)
        return self.classifier(self.dropout(x))

    def set_hysteresis(self, band: float) -> None:
        """Hysteresis band of every decision, as a fraction of its statistic (0: the plain step)."""
        for m in self.super_layers():
            m.hysteresis = float(band)

    def commit(self, indicators: list[dict[str, torch.Tensor]]) -> None:
        """Remember the decisions of a training step (for the hysteresis)."""
        for m, ind in zip(self.super_layers(), indicators):
            m.commit(ind)

    def choices(self, indicators: list[dict[str, torch.Tensor]] | None = None) -> list[str]:
        """The hard decisions, one per searchable layer (of `indicators`, or of the current weights)."""
        layers = self.super_layers()
        if indicators is None:
            return [m.choice() for m in layers]
        return [m.choice(i) for m, i in zip(layers, indicators)]

    def derive(self, resolution: int | None = None, num_classes: int | None = None, name: str = "",
               choices: list[str] | None = None) -> ArchSpec:
        """The architecture the decisions (or `choices`) describe, in the grammar, design strides."""
        return self.space.decode(choices or self.choices(), resolution or self.resolution, self.width,
                                 num_classes or self.num_classes, name=name)

    def threshold_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if n.rsplit(".", 1)[-1].startswith("t_")]

    def weight_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if not n.rsplit(".", 1)[-1].startswith("t_")]

    def threshold_values(self) -> list[dict[str, Any]]:
        """Every decision statistic, threshold and margin per layer (for the search log)."""
        return [m.statistics() for m in self.super_layers()]


@torch.no_grad()
def extract_fixed_net(supernet: SuperNet, choices: list[str] | None = None) -> nn.Module:
    """A plain `Net` of the derived architecture carrying the superkernel's weights, in the supernet's
    training geometry (its proxy); the same weights load into the design geometry unchanged."""
    from search_spaces import build_model

    choices = choices or supernet.choices()
    arch = supernet.space.decode(choices, supernet.resolution, supernet.width, supernet.num_classes)
    net = build_model(supernet.proxy.apply(arch))
    slot_choice = iter(choices)
    fixed_layers = []
    for m in supernet.layers:
        if isinstance(m, SuperMBConv):
            fixed_layers.append(m.to_fixed(next(slot_choice)))
        else:
            fixed_layers.append(m)
    for i, layer in enumerate(fixed_layers):
        net.layers[i].load_state_dict(layer.state_dict())
    net.classifier.load_state_dict(supernet.classifier.state_dict())
    return net


def inherit_weights(model: nn.Module, arch: ArchSpec, supernet_path: str) -> None:
    """init=inherit: copy the search's superkernel weights into `model` (the derived net)."""
    from training.checkpoints import load_torch

    blob = load_torch(supernet_path, "supernet checkpoint")
    space = SearchSpace.from_dict(blob["space"])
    proxy = Proxy.from_dict(blob["proxy"]) if blob.get("proxy") else None
    sup = SuperNet(space, blob["resolution"], blob["width"], blob["num_classes"], proxy=proxy)
    sup.load_state_dict(blob["state_dict"])
    choices = space.encode(arch)
    if arch.num_classes != sup.num_classes:
        raise CheckpointError(f"supernet {supernet_path} was trained for {sup.num_classes} classes, the derived net "
                              f"has {arch.num_classes}; retrain on the data set the search ran on")
    src = extract_fixed_net(sup, choices)
    model.load_state_dict(src.state_dict())
