"""Cost of one Single-Path search step vs training the largest fixed net vs a multi-path supernet.

    python -m bench.bench_search_step [--steps 20] [--batch 128] [--resolution 32]

(a) fixed: the largest network of the space (every layer k5e6), one SGD training step.
(s) single-path: one superkernel search step (indicators, forward, CE + lambda log R, backward,
    weight and threshold updates).
(b) multi-path: an FBNet/DARTS-style supernet written here for comparison: every searchable layer
    computes all four candidates (and the identity where skip is allowed) and mixes them with
    softmax(alpha); the expected latency is the softmax-weighted table latency.

Time: median over `--steps` steps after warm-up, the three variants interleaved step by step in one
process so the machine's slow episodes hit them alike. Memory: each variant in a fresh process,
peak RSS during the steps minus RSS before the first step, and the bytes autograd saves for backward.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import torch
from torch import nn

from bench.common import record

VARIANTS = ("fixed_largest", "single_path", "multi_path")


class MultiPathLayer(nn.Module):
    """All candidates computed, outputs mixed by softmax(alpha) (DARTS / FBNet style)."""

    def __init__(self, slot, cin: int, cout: int, hin: int) -> None:
        from search_spaces import ResolvedLayer
        from search_spaces.model import InvertedResidual
        from search_spaces.space import SKIP

        super().__init__()
        self.choices = [c for c in slot.choices]
        ops = []
        for c in self.choices:
            if c == SKIP:
                ops.append(nn.Identity())
                continue
            b = slot.block(c)
            from search_spaces import make_divisible

            mid = make_divisible(cin * b.expansion)
            layer = ResolvedLayer(0, b, cin, cout, hin, hin, hin // b.stride, hin // b.stride, mid,
                                  make_divisible(mid // 4) if b.se else 0)
            ops.append(InvertedResidual(layer))
        self.ops = nn.ModuleList(ops)
        self.alpha = nn.Parameter(torch.zeros(len(ops)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self.alpha, 0)
        return sum(wi * op(x) for wi, op in zip(w, self.ops))


class MultiPathNet(nn.Module):
    def __init__(self, space, resolution: int, num_classes: int) -> None:
        from search_spaces import build_layer

        super().__init__()
        big = space.largest(resolution, 1.0, num_classes)
        slots = {s.block_index: s for s in space.slots}
        self.layers = nn.ModuleList(
            MultiPathLayer(slots[lay.index], lay.cin, lay.cout, lay.hin) if lay.index in slots else build_layer(lay)
            for lay in big.resolve())
        self.classifier = nn.Linear(big.resolve()[-1].cout, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.layers:
            x = m(x)
        return self.classifier(x)


def make_step(variant: str, batch: int, resolution: int):
    """A zero-argument callable running one training/search step of `variant`."""
    from latency_tables.lookup.predictor import SpaceLatency
    from latency_tables.lookup.table import LatencyTable
    from nas.superkernel import SuperNet
    from search_spaces import build_model, default_space

    torch.manual_seed(0)
    space = default_space()
    x = torch.randn(batch, 3, resolution, resolution).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)
    lat = SpaceLatency(space, LatencyTable.load("sd845"), 224, 1.0, 10)
    if variant == "fixed_largest":
        model = build_model(space.largest(resolution, 1.0, 10)).to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step() -> None:
            loss = crit(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    elif variant == "single_path":
        model = SuperNet(space, resolution, 1.0, 10).to(memory_format=torch.channels_last)
        opt = torch.optim.SGD([p for _, p in model.weight_parameters()], lr=0.01, momentum=0.9)
        opt_t = torch.optim.Adam(model.threshold_parameters(), lr=0.01)

        def step() -> None:
            ind = model.indicators()
            r = lat.expected(model.option_weights(ind))
            loss = crit(model(x, ind), y) + 0.02 * torch.log(r)
            opt.zero_grad()
            opt_t.zero_grad()
            loss.backward()
            opt.step()
            opt_t.step()
    elif variant == "multi_path":
        model = MultiPathNet(space, resolution, 10).to(memory_format=torch.channels_last)
        alphas = [m.alpha for m in model.layers if isinstance(m, MultiPathLayer)]
        opt = torch.optim.SGD([p for n, p in model.named_parameters() if not n.endswith("alpha")], lr=0.01,
                              momentum=0.9)
        opt_a = torch.optim.Adam(alphas, lr=0.01)
        order = {"k3_e3": (0, 0), "k5_e3": (0, 1), "k3_e6": (1, 0), "k5_e6": (1, 1)}

        def step() -> None:
            exp_ms = lat.fixed_ms
            for li, layer in enumerate(m for m in model.layers if isinstance(m, MultiPathLayer)):
                w = torch.softmax(layer.alpha, 0)
                for wi, c in zip(w, layer.choices):
                    if c in order:
                        e, k = order[c]
                        exp_ms = exp_ms + wi * float(lat.rows[li, e, k])
            loss = crit(model(x), y) + 0.02 * torch.log(exp_ms)
            opt.zero_grad()
            opt_a.zero_grad()
            loss.backward()
            opt.step()
            opt_a.step()
    else:
        raise ValueError(variant)
    model.train()
    return step, model


def saved_bytes(step) -> int:
    """Bytes autograd keeps for backward during one step (distinct storages: activation memory, exact)."""
    total = 0
    seen: set[int] = set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        st = t.untyped_storage()
        if st.data_ptr() not in seen:
            seen.add(st.data_ptr())
            total += st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return total


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _hwm_mb() -> float:
    """Peak RSS (VmHWM) since the last reset. ru_maxrss is useless here: a child inherits its
    parent's high-water mark across fork/exec."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def memory_child(variant: str, batch: int, resolution: int, steps: int) -> dict[str, Any]:
    """Run in a fresh process: peak RSS over the steps minus RSS before the first step."""
    torch.set_num_threads(1)
    step, _ = make_step(variant, batch, resolution)
    before = _rss_mb()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    for _ in range(steps):
        step()
    peak = _hwm_mb()
    return {"rss_before_mb": before, "peak_rss_mb": peak, "step_peak_mb": peak - before,
            "saved_for_backward_mb": saved_bytes(step) / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", choices=VARIANTS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(memory_child(args.child, args.batch, args.resolution, 3)))
        return
    torch.set_num_threads(args.threads)
    steps = {v: make_step(v, args.batch, args.resolution)[0] for v in VARIANTS}
    for _ in range(args.warmup):
        for v in VARIANTS:
            steps[v]()
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(args.steps):
        for v in VARIANTS:
            t = time.perf_counter()
            steps[v]()
            times[v].append((time.perf_counter() - t) * 1e3)
    mem = {}
    for v in VARIANTS:
        out = subprocess.run([sys.executable, "-m", "bench.bench_search_step", "--child", v, "--batch",
                              str(args.batch), "--resolution", str(args.resolution)],
                             capture_output=True, text=True, check=True).stdout
        mem[v] = json.loads(out.strip().splitlines()[-1])
    base_t = statistics.median(times["fixed_largest"])
    base_m = mem["fixed_largest"]
    rows = []
    for v in VARIANTS:
        t = statistics.median(times[v])
        rows.append({"variant": v, "step_ms_median": round(t, 1), "time_x_fixed": round(t / base_t, 3),
                     "step_peak_rss_mb": round(mem[v]["step_peak_mb"], 1),
                     "mem_x_fixed": round(mem[v]["step_peak_mb"] / base_m["step_peak_mb"], 3),
                     "saved_for_backward_mb": round(mem[v]["saved_for_backward_mb"], 1),
                     "saved_x_fixed": round(mem[v]["saved_for_backward_mb"] / base_m["saved_for_backward_mb"], 3)})
    sp = rows[1]
    met = sp["time_x_fixed"] <= 1.15 and sp["mem_x_fixed"] <= 1.10
    record("bench_search_step",
           f"Search step cost: single-path vs largest fixed net vs multi-path supernet "
           f"(batch {args.batch}, {args.resolution}x{args.resolution}, {args.threads} threads)", rows,
           notes=(f"Median of {args.steps} steps after {args.warmup} warm-up steps, variants interleaved step by step. "
                  f"Memory: each variant in a fresh process, peak RSS during 3 steps minus RSS before them "
                  f"(step_peak_rss_mb), and the exact bytes autograd saves for backward. "
                  f"Target for single-path: <= 1.15x time and <= 1.10x memory of the fixed net: "
                  f"{'met' if met else 'NOT met'} ({sp['time_x_fixed']}x time, {sp['mem_x_fixed']}x peak RSS, "
                  f"{sp['saved_x_fixed']}x saved-for-backward)."))


if __name__ == "__main__":
    main()
