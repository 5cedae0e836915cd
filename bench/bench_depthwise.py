"""The depthwise convolutions of a superkernel step: oneDNN's backward against `nas.depthwise`'s, side by side.

    python -m bench.bench_depthwise [--threads 1] [--batch 96] [--steps 12] [--experiment nasbench_macro]
    python -m bench.bench_depthwise --experiment none      # the MobileNetV3 space (bench_depthwise_mbv3)

- per shape: the depthwise convolution of every candidate of every layer of the space's superkernel (the
  largest is what a threshold step runs, each candidate what a warm-up path runs), and a few shapes of other
  spaces and resolutions (marked "other"), forward and backward in float32, median of `--steps` calls, the two
  ways interleaved call by call;
- whole steps of the space's `SuperNet`, built as the search builds it (the data's resolution, 32x32 here, and
  the proxy geometry that keeps maps of at least 4x4), at `--batch` images, channels-last: a threshold
  step (the superkernel, indicators on) and a warm-up step (one uniformly drawn path, the same paths both ways),
  interleaved step by step so the machine's slow episodes hit both alike; and how far the two ways' gradients
  are apart (relative L2 norm over all parameters: float rounding, not a different computation).

The ground-truth harness runs one-thread workers, hence `--threads 1`. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any, Callable

from bench.common import median, record


# (channels, map size, kernel) at stride 1 from other spaces and resolutions: a kernel wider than a 2x2 or 4x4 map
# (MobileNetV3's last stages at 64 px and below), and 3x3 at 4x4, where oneDNN is fast and is kept
OTHER_SHAPES = [(960, 2, 3), (960, 2, 5), (576, 4, 7), (576, 4, 3)]


def _median_ms(fns: dict[str, Callable[[], Any]], n: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(n + 1):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            if i:  # the first call of each warms caches and oneDNN's kernels
                times[k].append(time.perf_counter() - t)
    return {k: median(v) * 1e3 for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=96)
    p.add_argument("--steps", type=int, default=12, help="calls (steps) per median")
    p.add_argument("--experiment", default="nasbench_macro",
                   help="the search preset whose space is measured (none: the default MobileNetV3 space)")
    args = p.parse_args(argv)

    import torch
    from torch import nn

    import spnas
    from nas import depthwise
    from nas.search import search_proxy
    from nas.superkernel import SuperMBConv, SuperNet
    from search_spaces import SearchSpace
    from search_spaces.choices import parse_choice

    torch.set_num_threads(args.threads)
    cfg = spnas.compose("search", [] if args.experiment == "none" else [f"experiment={args.experiment}"])
    space = SearchSpace.from_config(cfg.space)
    torch.manual_seed(0)
    res, scfg = int(cfg.data.resolution), cfg.search  # the supernet as the search builds it (nas.search.build_search)
    proxy = search_proxy(space, res, scfg.width, 10, cfg.proxy)
    net = SuperNet(space, res, scfg.width, 10, scfg.dropout, scfg.threshold_init, proxy)
    net = net.to(memory_format=torch.channels_last)
    x = torch.randn(args.batch, 3, res, res).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,))
    crit = nn.CrossEntropyLoss()

    # the depthwise shapes: each layer's input size from a forward pass, its candidates from its choice set
    layers = [m for m in net.modules() if isinstance(m, SuperMBConv)]
    sizes: dict[int, int] = {}
    hooks = [m.register_forward_pre_hook(lambda m, a, i=i: sizes.__setitem__(i, a[0].shape[-1]))
             for i, m in enumerate(layers)]
    with torch.no_grad():
        net(x[:2])
    for h in hooks:
        h.remove()
    shapes: dict[tuple[int, int, int, int], int] = {}
    for i, m in enumerate(layers):
        for choice in m.choice_set.options:
            k, e = parse_choice(choice)
            key = (m.mids[m.expansions.index(e)], sizes[i], m.stride, k)
            shapes[key] = shapes.get(key, 0) + 1
    ordered = sorted(shapes.items(), key=lambda kv: (-kv[0][1], kv[0][0], kv[0][3]))
    others = [((c, hw, 1, k), 0) for c, hw, k in OTHER_SHAPES if (c, hw, 1, k) not in shapes]
    rows: list[dict[str, Any]] = []
    for (c, hw, s, k), count in ordered + others:
        xi = torch.randn(args.batch, c, hw, hw).to(memory_format=torch.channels_last).requires_grad_()
        w = torch.randn(c, 1, k, k).to(memory_format=torch.channels_last).requires_grad_()
        g = torch.randn_like(torch.nn.functional.conv2d(xi, w, None, s, k // 2, 1, c))

        def call(on: bool) -> Callable[[], Any]:
            def f() -> Any:
                depthwise.set_enabled(on)
                return torch.autograd.grad(depthwise.depthwise_conv2d(xi, w, s, k // 2), (xi, w), g)
            return f
        t = _median_ms({"oneDNN": call(False), "nas.depthwise": call(True)}, args.steps)
        rows.append({"what": f"{c} ch, {hw}x{hw}, {k}x{k}, stride {s}", "layers": count or "other",
                     "oneDNN_ms": round(t["oneDNN"], 1), "custom_ms": round(t["nas.depthwise"], 1),
                     "ratio": round(t["oneDNN"] / t["nas.depthwise"], 2)})

    # whole steps
    options = [list(m.choice_set.options) + (["skip"] if m.slot.skippable else []) for m in layers]
    rng = random.Random(0)
    paths = [[rng.choice(o) for o in options] for _ in range(args.steps + 1)]
    it = {True: iter(paths), False: iter(paths)}

    def step(on: bool, path: list[str] | None) -> list[torch.Tensor]:
        depthwise.set_enabled(on)
        torch.manual_seed(1)
        loss = crit(net(x, net.indicators() if path is None else path), y)
        net.zero_grad(set_to_none=True)
        loss.backward()
        return [q.grad.reshape(-1) for q in net.parameters() if q.grad is not None]

    a, b = torch.cat(step(False, None)), torch.cat(step(True, None))
    grad_diff = ((a - b).norm() / a.norm()).item()
    t_thr = _median_ms({"oneDNN": lambda: step(False, None), "nas.depthwise": lambda: step(True, None)}, args.steps)
    t_warm = _median_ms({"oneDNN": lambda: step(False, next(it[False])),
                         "nas.depthwise": lambda: step(True, next(it[True]))}, args.steps)
    depthwise.set_enabled(True)
    for name, t in (("threshold step (superkernel)", t_thr), ("warm-up step (one uniform path)", t_warm)):
        rows.append({"what": name, "layers": len(layers), "oneDNN_ms": round(t["oneDNN"]),
                     "custom_ms": round(t["nas.depthwise"]), "ratio": round(t["oneDNN"] / t["nas.depthwise"], 2)})
    name = "bench_depthwise" if args.experiment == "nasbench_macro" else \
        "bench_depthwise_" + ("mbv3" if args.experiment == "none" else args.experiment)
    record(name,
           f"Depthwise convolutions forward + backward, oneDNN vs nas.depthwise ({space.name}, batch {args.batch}, "
           f"{res}x{res}, {args.threads} thread{'s' if args.threads > 1 else ''}, median of {args.steps})",
           rows, notes=f"gradients of a whole threshold step apart by {grad_diff:.1e} (relative L2 norm: float "
                       "rounding). Interleaved call by call and step by step, one process, run alone.",
           extra={"threads": args.threads, "batch": args.batch, "grad_rel_diff": grad_diff})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
