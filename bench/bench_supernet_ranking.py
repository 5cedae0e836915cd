"""Why the search does (or does not) beat random: does the trained supernet rank architectures the way
training them alone does? (the supernet-ranking test of Sciuto et al., "Evaluating the search phase of
NAS", 2019), and how far each layer's decision is from the accuracy-optimal choice inside the supernet.

    python -m bench.bench_supernet_ranking [--experiment evidence] [--soc sd845] [--warmups 0.25 0.7]
                                           [--random 6] [--train-steps N] [overrides ...]

For each warm-up share (a search at each, same seed and steps otherwise): its supernet's accuracy of ~10
architectures with their decisions fixed (BatchNorm statistics recalibrated on training batches, as
single-path supernets are evaluated) against the same architectures retrained alone (the preset's
recipe, seed 0; trained once, shared by every variant); Kendall's tau over all of them and over those
at the first winner's latency (the random draws within +-2% of it, and each winner only when it is
within +-2% too), each with its n and p-value: with a dozen nets and one seed, only a strong ranking can
be told from none. Then, per searchable layer of the winner, every choice of that layer inside the
supernet (the others fixed): which is the most accurate, and whether the threshold decision took it.
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import replace
from pathlib import Path

from bench.common import record

TOLERANCE = 0.02  # "at the winner's latency": within +-2% of it, as the pipeline's controls


def supernet_accuracy(sup, choices, data, recal_batches: int = 20, batch: int = 128) -> float:
    """Val top-1 of one architecture inside the supernet (fixed decisions), BN statistics recalibrated."""
    import torch

    from nas.superkernel import extract_fixed_net
    from training.batches import iterate_batches
    from training.loop import evaluate
    from training.runtime import epoch_generator

    net = extract_fixed_net(sup, list(choices))
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a plain average over the recalibration batches
    net.train()
    with torch.no_grad():
        for i, (x, _) in enumerate(iterate_batches(data.train, batch, shuffle=True, generator=epoch_generator(0, 0))):
            if i >= recal_batches:
                break
            net(x)
    return float(evaluate(net, data.val, 500)["top1"])


def load_supernet(path: Path):
    from nas.superkernel import SuperNet
    from search_spaces import SearchSpace
    from search_spaces.proxy import Proxy
    from training.checkpoints import load_torch

    blob = load_torch(path, "supernet checkpoint")
    sup = SuperNet(SearchSpace.from_dict(blob["space"]), blob["resolution"], blob["width"], blob["num_classes"],
                   proxy=Proxy.from_dict(blob["proxy"]))
    sup.load_state_dict(blob["state_dict"])
    return sup.eval()


def main() -> None:  # noqa: C901 - one measurement, read top to bottom
    ap = argparse.ArgumentParser()
    ap.add_argument("--experiment", default="evidence")
    ap.add_argument("--soc", default="sd845")
    ap.add_argument("--warmups", type=float, nargs="+", default=[0.25, 0.7])
    ap.add_argument("--random", type=int, default=6)
    ap.add_argument("--train-steps", type=int, default=None, help="standalone retrain budget (default: the preset's)")
    ap.add_argument("--run-dir", default="bench/out/supernet_ranking")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    import spnas
    from latency_tables.lookup.predictor import SpaceLatency
    from nas.controls import sample_at_cost
    from nas.search import run_search
    from spnas_core.stats import kendall_test
    from training.datasets import load_data
    from training.loop import train_model

    cfg = spnas.compose("pipeline", [f"experiment={args.experiment}", *args.overrides])
    space, rt = spnas.SearchSpace.from_config(cfg.space), cfg.runtime()
    data = load_data(cfg.data, cfg.seed)
    table = spnas.load_table(cfg.soc_configs[args.soc].table)
    out = Path(args.run_dir)
    t0 = time.perf_counter()
    searches = {}
    for w in args.warmups:
        folder = out / f"search-warmup{w:g}"
        scfg = replace(cfg.search, warmup_fraction=w)
        done = (folder / "search_summary.json").exists()
        searches[w] = _load_summary(folder) if done else run_search(
            scfg, space, table, data, folder, proxy=cfg.proxy, name=args.soc, seed=cfg.seed, runtime=rt,
            resume=(folder / "last.pt").exists())
    lat = SpaceLatency(space, table, cfg.search.latency_resolution, cfg.search.width, data.num_classes)
    first = searches[args.warmups[0]]
    draw = sample_at_cost(space, lat.of_choices, first["cost"], args.random, seed=11, tolerance=TOLERANCE,
                          num_classes=data.num_classes, exclude=[s["choices"] for s in searches.values()],
                          strict=False)
    rng = random.Random(5)
    archs = {f"winner-warmup{w:g}": s["choices"] for w, s in searches.items()}
    archs.update({f"matched-{i}": c for i, c in enumerate(draw.choices)})
    archs["largest"] = ["k5_e6"] * space.num_layers
    archs["smallest"] = [("skip" if "skip" in s.choices else "k3_e3") for s in space.slots]
    archs["random-any"] = [rng.choice(s.choices) for s in space.slots]
    band = (1 - TOLERANCE) * first["cost"], (1 + TOLERANCE) * first["cost"]
    matched = {n for n in archs if n.startswith("matched")} | {
        n for n in archs if n.startswith("winner") and band[0] <= lat.of_choices(archs[n]) <= band[1]}
    tcfg = replace(cfg.train, steps=args.train_steps or cfg.train.steps)
    alone = {}
    for n, ch in archs.items():
        folder = out / "alone" / n
        s = _load_train(folder) or train_model(space.decode(ch, data.resolution, cfg.search.width, data.num_classes, n),
                                               tcfg, data, folder, proxy=cfg.proxy, seed=0, runtime=rt)
        alone[n] = s["test_top1"]
    rows, layer_rows, tests = [], [], {}
    for w in args.warmups:
        sup = load_supernet(out / f"search-warmup{w:g}" / "supernet.pt")
        inside = {n: supernet_accuracy(sup, ch, data) for n, ch in archs.items()}
        names = list(archs)
        t_all = kendall_test([inside[n] for n in names], [alone[n] for n in names])
        m = sorted(matched)
        t_m = kendall_test([inside[n] for n in m], [alone[n] for n in m])
        tests[w] = {"all": t_all, "matched": t_m}
        rows.append({"warm-up share": w, "supernet val top-1 (winner)": round(inside[f"winner-warmup{w:g}"], 4),
                     "winner alone": round(alone[f"winner-warmup{w:g}"], 4),
                     f"tau all (n={t_all['n']}, p)": f"{t_all['tau']:+.2f} (p={t_all['p_value']:.2f})",
                     f"tau within +-{100 * TOLERANCE:g}% of the first winner (n={t_m['n']}, p)":
                         f"{t_m['tau']:+.2f} (p={t_m['p_value']:.2f})",
                     **_layer_summary(sup, searches[w]["choices"], space, data, layer_rows, w)})
    wall = time.perf_counter() - t0
    detail = "; ".join(f"{n}: alone {alone[n]:.3f} ({lat.of_choices(archs[n]):.1f} ms)" for n in archs)
    over = (" " + " ".join(args.overrides)) if args.overrides else ""
    record("bench_supernet_ranking", f"Does the supernet rank like training alone? (experiment={args.experiment}, "
                                     f"{args.soc}{over})", rows,
           notes=(f"{len(archs)} architectures ({len(matched)} within +-{100 * TOLERANCE:g}% of the first winner's "
                  f"latency: {', '.join(sorted(matched))}), retrained alone for {tcfg.steps} steps (seed 0): {detail}. "
                  f"p: two-sided test of no association (Kendall, exact for small n); with n this small and one "
                  f"training seed a tau near 0 is 'no ranking shown', not 'no ranking'. Inside the supernet: "
                  f"decisions fixed, BatchNorm "
                  f"recalibrated on 20 training batches, validation split. Per layer: for each searchable layer of "
                  f"the winner, every choice tried inside the supernet with the other layers fixed; "
                  f"'layers off the accuracy-optimal choice' counts the layers whose decision is not the most accurate "
                  f"(the latency term is meant to move some), with the mean accuracy given up there. {wall / 60:.0f} "
                  f"min in all."),
           extra={"archs": {n: {"choices": c, "alone": alone[n], "ms": lat.of_choices(c)} for n, c in archs.items()},
                  "matched": sorted(matched), "tests": tests, "per_layer": layer_rows})


def _layer_summary(sup, winner: list[str], space, data, out: list, w: float) -> dict:
    """Every choice of every layer inside the supernet (the others at the winner's): where the decision sits."""
    off, gaps = 0, []
    base = supernet_accuracy(sup, winner, data)
    for li, slot in enumerate(space.slots):
        accs = {}
        for c in slot.choices:
            ch = list(winner)
            ch[li] = c
            accs[c] = base if c == winner[li] else supernet_accuracy(sup, ch, data)
        best = max(accs, key=accs.get)
        if best != winner[li]:
            off += 1
            gaps.append(accs[best] - accs[winner[li]])
        out.append({"warmup": w, "layer": li, "decision": winner[li], "best": best,
                    "accuracy": {k: round(v, 4) for k, v in accs.items()}})
    return {"layers off the accuracy-optimal choice": f"{off} of {space.num_layers}",
            "mean gap there (pts)": round(100 * sum(gaps) / len(gaps), 2) if gaps else 0.0}


def _load_summary(folder: Path) -> dict:
    import json

    return json.loads((folder / "search_summary.json").read_text())


def _load_train(folder: Path) -> dict | None:
    import json

    p = folder / "summary.json"
    return json.loads(p.read_text()) if p.exists() else None


if __name__ == "__main__":
    main()
