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

from typing import Any, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from search_spaces import ArchSpec, LayerSlot, SearchSpace, make_divisible
from search_spaces.model import ConvBNAct, InvertedResidual, build_layer, init_weights, make_activation
from search_spaces.proxy import Proxy
from search_spaces.choices import SKIP, ChoiceSet, SkipKind, parse_choice
from spnas_core.errors import ArchSpecError, CheckpointError, RunStateError

from .depthwise import depthwise_conv2d


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
    """A searchable inverted residual: every candidate of the space's `ChoiceSet` (and skip) in one path.

    One depthwise kernel of the largest size over the largest expansion's channels; the decision ladder
    (`search_spaces.choices`) switches on kernel rings and channel groups, `keep` the layer itself. Where
    skipping means a projection (a stage's first layer changes shape), the layer also holds that 1x1 conv
    + BN and blends the two outputs by `keep` (one of them is zero for hard decisions)."""

    def __init__(self, slot: LayerSlot, cin: int, cout: int, choices: ChoiceSet | None = None,
                 threshold_init: float = 0.0, stride: int | None = None) -> None:
        super().__init__()
        cs = choices or ChoiceSet.of(tuple(c for c in slot.choices if c != SKIP))
        self.slot, self.choice_set = slot, cs
        self.kernels, self.expansions = cs.kernels, cs.expansions
        # `stride` differs from the slot's design stride only under a proxy geometry (search_spaces.proxy)
        self.cin, self.cout, self.stride = cin, cout, slot.stride if stride is None else stride
        self.act_name = slot.act
        self.mids = tuple(make_divisible(cin * e) for e in self.expansions)
        self.mid_small, self.mid = self.mids[0], self.mids[-1]
        self.residual = self.stride == 1 and cin == cout
        self.projection = slot.skip is SkipKind.projection
        if slot.skip is SkipKind.identity and not self.residual:
            raise ArchSpecError(f"layer {slot.index}: skip needs stride 1 and equal channels")
        kb = self.kernels[-1]
        self.expand = ConvBNAct(cin, self.mid, 1, act=slot.act)
        self.dw_weight = nn.Parameter(torch.empty(self.mid, 1, kb, kb))
        self.dw_bn = nn.BatchNorm2d(self.mid)
        self.dw_act = make_activation(slot.act)
        if slot.se:
            self.se_hiddens = tuple(make_divisible(m // 4) for m in self.mids)
            self.se_small, self.se_hidden = self.se_hiddens[0], self.se_hiddens[-1]
            self.se_fc1 = nn.Conv2d(self.mid, self.se_hidden, 1)
            self.se_fc2 = nn.Conv2d(self.se_hidden, self.mid, 1)
        self.project = ConvBNAct(self.mid, cout, 1, act=None)
        if self.projection:
            self.shortcut = ConvBNAct(cin, cout, 1, self.stride, act=None)
        areas = [_area(k, kb) for k in self.kernels]
        self.register_buffer("inner_mask", areas[0], persistent=False)
        self.register_buffer("ring_mask", areas[-1] - areas[0], persistent=False)  # every ring (the statistics' view)
        # what each ladder step switches on: its kernel ring and its channel group (either may be empty)
        self._step_rings = [areas[self.kernels.index(st.kernel_to)] - areas[self.kernels.index(st.kernel_from)]
                            for st in cs.steps]
        for i, (st, ring) in enumerate(zip(cs.steps, self._step_rings)):
            self.register_buffer(f"step_ring{i}", ring, persistent=False)
            if cs.structure == "chain":  # the weights step i switches on: (channels, window) to minus from
                def block(k: int, e: int) -> torch.Tensor:
                    ch = (torch.arange(self.mid) < self.mids[self.expansions.index(e)]).float().view(-1, 1, 1, 1)
                    return ch * areas[self.kernels.index(k)]
                new = block(st.kernel_to, st.expand_to) - block(st.kernel_from, st.expand_from)
                self.register_buffer(f"step_new{i}", new, persistent=False)
        # the committed decisions (ladder steps, then keep) and the hysteresis band, as a fraction of each
        # statistic, a decision must cross to change (0: the plain step of the paper)
        self.decision_names = cs.step_names(False) + ("keep",)
        self.register_buffer("decided", torch.ones(len(self.decision_names)))
        self.hysteresis = 0.0
        for name in cs.step_names(False):
            self.register_parameter(f"t_{name}", nn.Parameter(torch.tensor(float(threshold_init))))
        self.t_keep = nn.Parameter(torch.tensor(float(threshold_init))) if slot.skippable else None

    def reset_parameters(self) -> None:
        """Depthwise kernel ~ N(0, 2/k^2) (TF/timm depthwise init): its mean square starts near 2/k^2
        in every layer, above the zero thresholds, so every layer starts as its largest candidate."""
        k = self.kernels[-1]
        nn.init.normal_(self.dw_weight, 0.0, (2.0 / (k * k)) ** 0.5)

    def threshold(self, name: str) -> torch.Tensor:
        return getattr(self, f"t_{name}")

    def _ring(self, i: int) -> torch.Tensor:
        return getattr(self, f"step_ring{i}")

    def _new(self, i: int) -> torch.Tensor:
        return getattr(self, f"step_new{i}")

    # ------------------------------------------------------------------ decisions
    def _step_statistic(self, i: int, w: torch.Tensor, w_k: torch.Tensor | None) -> torch.Tensor:
        """The statistic of ladder step i: a grid's kernel step, the ring's mean square over the whole kernel
        (the paper's ||w_ring||^2 / numel); its expansion step, the mean square of the channel group under
        the kernel decisions; a chain's step, the mean square of the weights it switches on."""
        st = self.choice_set.steps[i]
        e_from, e_to = self.expansions.index(st.expand_from), self.expansions.index(st.expand_to)
        if self.choice_set.structure == "grid":
            if e_to == e_from:
                return mean_square(w * self._ring(i))
            assert w_k is not None
            return mean_square(w_k[self.mids[e_from]:self.mids[e_to]])
        new = self._new(i)  # a chain step: the weights it switches on, over channels and window
        return (w.pow(2) * new).sum() / new.sum()

    def _spatial(self, dec: dict[str, torch.Tensor], w: torch.Tensor) -> torch.Tensor:
        """The depthwise kernel mask: the smallest window plus every ring the decisions reach."""
        mask = self.inner_mask.to(w)
        reach = torch.ones((), dtype=w.dtype, device=w.device)
        axis_k = self.choice_set.structure == "chain"
        for i, st in enumerate(self.choice_set.steps):
            if axis_k or st.kernel_to != st.kernel_from:
                reach = reach * dec[st.name]
                if st.kernel_to != st.kernel_from:
                    mask = mask + reach * self._ring(i)
        return mask

    def _groups(self, dec: dict[str, torch.Tensor], w: torch.Tensor) -> list[torch.Tensor]:
        """Per expansion level, whether its channel group is on (level 0 always)."""
        one = torch.ones((), dtype=w.dtype, device=w.device)
        out, reach = [one], one
        chain = self.choice_set.structure == "chain"
        for st in self.choice_set.steps:
            if chain or st.expand_to != st.expand_from:
                reach = reach * dec[st.name]
            if st.expand_to != st.expand_from:
                out.append(reach)
        return out

    def _assemble(self, dec: dict[str, torch.Tensor], w: torch.Tensor, w_k: torch.Tensor | None = None
                  ) -> dict[str, torch.Tensor]:
        groups = self._groups(dec, w)
        sizes = [self.mids[0]] + [b - a for a, b in zip(self.mids, self.mids[1:])]
        chan = torch.cat([g.expand(n) for g, n in zip(groups, sizes)])
        ind = dict(dec)
        ind["w_k"] = w * self._spatial(dec, w) if w_k is None else w_k
        ind["chan"] = chan
        ind["groups"] = torch.stack(groups)
        return ind

    def statistics(self) -> dict[str, float | None]:
        """Every decision's statistic, threshold and margin (statistic - threshold; positive keeps the weights
        it gates), as `stat_<name>`, `t_<name>`, `margin_<name>` (and, for the paper's grid, the names the
        search logs have always used: ms_ring, ms_e6, ms_e3 with t/margin of kernel, expand, keep)."""
        with torch.no_grad():
            ind = self.indicators()
            w, w_k = self.dw_weight, ind["w_k"]
            out: dict[str, float | None] = {}
            for i, st in enumerate(self.choice_set.steps):
                v = float(self._step_statistic(i, w, w_k))
                t = float(self.threshold(st.name))
                out.update({f"stat_{st.name}": v, f"t_{st.name}": t, f"margin_{st.name}": v - t})
            v = float(mean_square(w_k[: self.mid_small]))
            out["stat_keep"] = v
            out["t_keep"] = None if self.t_keep is None else float(self.t_keep)
            out["margin_keep"] = None if self.t_keep is None else v - float(self.t_keep)
            if "stat_kernel" in out:
                out["ms_ring"] = out["stat_kernel"]
            if "stat_expand" in out:
                out["ms_e6"] = out["stat_expand"]
            out["ms_e3"] = v
        return out

    def random_indicators(self, keep_prob: float, g: torch.Generator) -> dict[str, torch.Tensor]:
        """Warm-up path dropping (the official code's, keep probability 0.6): every decision (each ladder
        step, and the layer itself where it may be skipped) kept at random, no gradient."""
        w = self.dw_weight
        names = self.decision_names
        draw = (torch.rand(len(names), generator=g) < keep_prob).to(w.dtype)
        dec = {n: draw[i] for i, n in enumerate(names)}
        if self.t_keep is None:
            dec["keep"] = torch.ones((), dtype=w.dtype)
        return self._assemble(dec, w)

    def indicators_for(self, choice: str) -> dict[str, torch.Tensor]:
        """Hard decisions that make this layer `choice` (fixed paths: sampling, ranking), no gradient."""
        w = self.dw_weight
        vals = self.choice_set.decisions_for(choice, self.slot.skippable)
        dec = {n: torch.tensor(vals.get(n, 1.0), dtype=w.dtype, device=w.device) for n in self.decision_names}
        return self._assemble(dec, w)

    def indicators(self) -> dict[str, torch.Tensor]:
        """STE indicators of every decision (a ladder step named as in `ChoiceSet.steps`, and `keep`), the
        decided depthwise weights `w_k`, the channel mask `chan` and the per-expansion groups `groups`."""
        w = self.dw_weight
        h = self.hysteresis
        prev = {n: self.decided[i] for i, n in enumerate(self.decision_names)} if h > 0 else {}
        cs = self.choice_set
        dec: dict[str, torch.Tensor] = {}

        def decide(name: str, stat: torch.Tensor) -> torch.Tensor:
            return ste_step(stat - self.threshold(name), h * stat.detach(), prev.get(name))

        kernel_steps = [i for i, st in enumerate(cs.steps) if cs.structure == "chain" or st.expand_to == st.expand_from]
        for i in kernel_steps:  # decisions on the raw kernel (a grid's rings, every step of a chain)
            dec[cs.steps[i].name] = decide(cs.steps[i].name, self._step_statistic(i, w, None))
        w_k = w * self._spatial(dec, w)  # a grid's window reads only its kernel steps
        for i, st in enumerate(cs.steps):  # a grid's channel groups, under the kernel decisions
            if st.name not in dec:
                dec[st.name] = decide(st.name, self._step_statistic(i, w, w_k))
        if self.t_keep is not None:
            dec["keep"] = decide("keep", mean_square(w_k[: self.mid_small]))
        else:
            dec["keep"] = torch.ones((), dtype=w.dtype, device=w.device)
        return self._assemble(dec, w, w_k)

    @torch.no_grad()
    def start_at(self, choice: str, margin: float) -> None:
        """Set the thresholds so the hard decisions are `choice`, each `margin` (a fraction of its statistic) on
        its side: the threshold phase starts from that network instead of the largest one."""
        vals = self.choice_set.decisions_for(choice, self.slot.skippable)
        w = self.dw_weight
        dec = {n: torch.tensor(vals.get(n, 1.0), dtype=w.dtype, device=w.device) for n in self.decision_names}
        w_k = self._assemble(dec, w)["w_k"]
        for i, st in enumerate(self.choice_set.steps):
            stat = self._step_statistic(i, w, w_k)
            self.threshold(st.name).fill_(float(stat) * (1 - margin if vals[st.name] > 0.5 else 1 + margin))
        if self.t_keep is not None:
            stat = mean_square(w_k[: self.mid_small])
            self.t_keep.fill_(float(stat) * (1 - margin if vals["keep"] > 0.5 else 1 + margin))
        self.decided.copy_(torch.stack([dec[n].reshape(()) for n in self.decision_names]))

    @torch.no_grad()
    def commit(self, ind: dict[str, torch.Tensor]) -> None:
        """Remember the decisions a training step used (the hysteresis compares against them)."""
        self.decided.copy_(torch.stack([ind[n].detach().reshape(()) for n in self.decision_names]))

    def choice(self, ind: dict[str, torch.Tensor] | None = None) -> str:
        """The hard decision as a space choice ('k5_e6', ..., or 'skip'), from `ind` or the current weights."""
        if ind is None:
            with torch.no_grad():
                ind = self.indicators()
        return self.choice_set.choice_of({n: float(ind[n].detach()) for n in self.decision_names},
                                         self.slot.skippable)

    def option_weights(self, ind: dict[str, torch.Tensor]) -> torch.Tensor:
        """Weights over the space's candidates and skip (`SearchSpace.options` order), products of the
        decisions: exactly one is 1 for hard decisions, and they carry the straight-through gradients into
        the cost term."""
        one = torch.ones((), dtype=ind["keep"].dtype, device=ind["keep"].device)
        return torch.stack(self.choice_set.option_weights(ind, self.slot.skippable, one))

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, ind: dict[str, torch.Tensor] | str | None = None) -> torch.Tensor:
        # Decisions act on parameters, never on activations: a dropped channel gets zero conv weights
        # and zero BN scale and shift (so it outputs act(0) = 0), rings are added as decision * ring,
        # and keep scales the projection's BN. The step therefore keeps exactly the activations the
        # largest fixed layer keeps for backward; gradients still reach every indicator.
        if isinstance(ind, str):
            return self.forward_choice(x, ind)
        ind = ind or self.indicators()
        m, keep = ind["chan"], ind["keep"]
        conv, bn = self.expand[0], self.expand[1]
        h = F.conv2d(x, conv.weight * m.view(-1, 1, 1, 1))
        h = self.expand[2](_bn(h, bn, bn.weight * m, bn.bias * m))
        pad = (self.kernels[-1] - 1) // 2
        # Same weight strides as a channels-last nn.Conv2d (the fixed net's): arithmetic on a [C, 1, k, k]
        # kernel yields NCHW strides, for which oneDNN picks a depthwise path up to 500x slower (1x1 maps).
        w_dw = (ind["w_k"] * m.view(-1, 1, 1, 1)).to(memory_format=torch.channels_last)
        h = depthwise_conv2d(h, w_dw, self.stride, pad)
        h = self.dw_act(_bn(h, self.dw_bn, self.dw_bn.weight * m, self.dw_bn.bias * m))
        if self.slot.se:
            sizes = [self.se_hiddens[0]] + [b - a for a, b in zip(self.se_hiddens, self.se_hiddens[1:])]
            hm = torch.cat([g.expand(n) for g, n in zip(ind["groups"], sizes)])
            s = h.mean((2, 3), keepdim=True)
            s = F.relu(F.conv2d(s, self.se_fc1.weight * hm.view(-1, 1, 1, 1), self.se_fc1.bias * hm))
            h = h * F.hardsigmoid(self.se_fc2(s))
        conv, bn = self.project[0], self.project[1]
        y = F.conv2d(h, conv.weight)
        if self.residual:
            return x + _bn(y, bn, bn.weight * keep, bn.bias * keep)
        if self.projection:
            sc, sbn = self.shortcut[0], self.shortcut[1]
            drop = 1 - keep
            z = F.conv2d(x, sc.weight, None, self.stride)
            return _bn(y, bn, bn.weight * keep, bn.bias * keep) + _bn(z, sbn, sbn.weight * drop, sbn.bias * drop)
        return bn(y)

    def forward_choice(self, x: torch.Tensor, choice: str) -> torch.Tensor:
        """The layer as the fixed network of `choice` computes it, on the slices of the superkernel's weights
        that choice uses (no threshold gradients: sampled paths in warm-up, BN recalibration, ranking). The
        same output as the masked forward with hard decisions, at the candidate's own cost."""
        if choice == SKIP:
            if self.projection:
                return self.shortcut(x)
            if not self.residual:
                raise ArchSpecError(f"layer {self.slot.index} cannot be skipped")
            return x
        k, e = parse_choice(choice)
        mid = self.mids[self.expansions.index(e)]
        conv, bn = self.expand[0], self.expand[1]
        h = self.expand[2](_bn_slice(F.conv2d(x, conv.weight[:mid]), bn, mid))
        off = (self.kernels[-1] - k) // 2
        w_dw = self.dw_weight[:mid, :, off:off + k, off:off + k].contiguous(memory_format=torch.channels_last)
        h = depthwise_conv2d(h, w_dw, self.stride, (k - 1) // 2)
        h = self.dw_act(_bn_slice(h, self.dw_bn, mid))
        if self.slot.se:
            se_h = self.se_hiddens[self.expansions.index(e)]
            s = h.mean((2, 3), keepdim=True)
            s = F.relu(F.conv2d(s, self.se_fc1.weight[:se_h, :mid], self.se_fc1.bias[:se_h]))
            h = h * F.hardsigmoid(F.conv2d(s, self.se_fc2.weight[:mid, :se_h], self.se_fc2.bias[:mid]))
        y = self.project[1](F.conv2d(h, self.project[0].weight[:, :mid]))
        return x + y if self.residual else y

    # ------------------------------------------------------------------ fixed layer
    @torch.no_grad()
    def to_fixed(self, choice: str) -> nn.Module:
        """The plain layer of `choice` carrying this superkernel's effective weights (identity for skip, the
        projection where skipping changes the shape)."""
        if choice == SKIP:
            if self.projection:
                fixed_proj = ConvBNAct(self.cin, self.cout, 1, self.stride, act=None)
                fixed_proj.load_state_dict(self.shortcut.state_dict())
                return fixed_proj
            return nn.Identity()
        k, e = parse_choice(choice)
        ei = self.expansions.index(e)
        mid = self.mids[ei]
        from search_spaces import ResolvedLayer

        block = self.slot.block(choice)
        se_h = self.se_hiddens[ei] if self.slot.se else 0
        layer = ResolvedLayer(0, block, self.cin, self.cout, 0, 0, 0, 0, mid, se_h)
        fixed = InvertedResidual(layer)
        _copy_conv_bn(self.expand, fixed.expand, out_slice=slice(0, mid))
        off = (self.kernels[-1] - k) // 2
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


def _area(k: int, big: int) -> torch.Tensor:
    """A [1, 1, big, big] mask of the centred k x k window."""
    m = torch.zeros(big, big)
    off = (big - k) // 2
    m[off:off + k, off:off + k] = 1
    return m.view(1, 1, big, big)


def _bn_slice(x: torch.Tensor, bn: nn.BatchNorm2d, n: int) -> torch.Tensor:
    """`bn` on the first n channels only (their affine parameters and running statistics, which a training
    step updates in place through the slice)."""
    return _bn(x, bn, bn.weight[:n], bn.bias[:n], n)


def _bn(x: torch.Tensor, bn: nn.BatchNorm2d, weight: torch.Tensor, bias: torch.Tensor, n: int | None = None
        ) -> torch.Tensor:
    """`bn(x)` with replaced affine parameters (running statistics tracked as nn.BatchNorm2d does; with `n`,
    those of the first n channels); a global BatchNorm (DDP) normalises by itself, sliced or not: by the global
    batch in a group, by this rank's inside `rank_local_batchnorm`."""
    from training.distributed import GlobalBatchNorm2d, batch_norm_first_channels

    if n is not None and n != x.shape[1]:
        raise RunStateError(f"_bn: {x.shape[1]} channels given for a slice of {n}")
    if isinstance(bn, GlobalBatchNorm2d):
        return bn.normalize(x, weight, bias)
    return batch_norm_first_channels(bn, x, weight, bias)


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
        cs = space.choice_set
        big = space.largest(resolution, width, num_classes)
        layers = self.proxy.apply(big).resolve()  # trained geometry; derive() returns the design one
        slot_at = {s.block_index: s for s in space.slots}
        mods: list[nn.Module] = []
        for layer in layers:
            slot = slot_at.get(layer.index)
            if slot is None:
                mods.append(build_layer(layer))
            else:
                mods.append(SuperMBConv(slot, layer.cin, layer.cout, cs, threshold_init, stride=layer.block.stride))
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

    def indicators_for(self, choices: Sequence[str]) -> list[dict[str, torch.Tensor]]:
        """Hard indicators that make the supernet the network of `choices` (masked path, no threshold gradient)."""
        return [m.indicators_for(c) for m, c in zip(self.super_layers(), choices)]

    def option_weights(self, indicators: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        """[layers, len(space.options)] weights over every layer's candidates and skip (the cost term's input)."""
        return torch.stack([m.option_weights(i) for m, i in zip(self.super_layers(), indicators)])

    def forward(self, x: torch.Tensor, indicators: Sequence[dict[str, torch.Tensor] | str] | None = None
                ) -> torch.Tensor:
        """Logits of the path `indicators` describe: STE indicators (the search), or one choice string per
        searchable layer (a fixed network run on its own weight slices: sampled paths, ranking)."""
        it = iter(indicators) if indicators is not None else None
        for m in self.layers:
            x = m(x, next(it)) if isinstance(m, SuperMBConv) and it is not None else m(x)
        return self.classifier(self.dropout(x))

    def start_at(self, choices: Sequence[str], margin: float = 0.25) -> None:
        """Thresholds set so every layer's decisions are `choices` (see `SuperMBConv.start_at`)."""
        for m, c in zip(self.super_layers(), choices):
            m.start_at(c, margin)

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
