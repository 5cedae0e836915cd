"""NASWOT of many networks: one network at a time against one prefix tree (`nas.proxies.naswot_scores`),
side by side in one run, on the ground-truth harness's two workloads.

    python -m bench.bench_naswot_tree [--rank-nets 500] [--centres 11111111 10110100 21211110]

- the harness's ranking sample: `--rank-nets` distinct NAS-Bench-Macro networks (bench_groundtruth's sample),
  64 CIFAR-10 training images, init seed 0; Kendall tau of the scores against the benchmark's accuracy;
- a search's finalists: every network within two layer changes of each centre (129 each), 64 held-out images.

Both ways give the same scores bit for bit (checked here on every network, and in tests/nas/test_proxies.py);
the table says how much faster the tree is. Runs alone on the machine (wall times).
"""

from __future__ import annotations

import argparse
import time

from bench.common import record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rank-nets", type=int, default=500)
    p.add_argument("--centres", nargs="+", default=["11111111", "10110100", "21211110"])
    p.add_argument("--table", default=None, help="the benchmark file (default: under $SPNAS_SHARED)")
    args = p.parse_args(argv)

    import spnas
    from bench.bench_groundtruth import ranking_sample
    from nas.finalists import neighbourhood
    from nas.groundtruth import NasBenchMacro, kendall_with_ci
    from nas.proxies import naswot_scores, score_arch
    from search_spaces import SearchSpace
    from search_spaces.nasbench_macro import arch_of, choices_of, code_of
    from training.batches import to_tensor
    from training.datasets import load_data

    cfg = spnas.compose("search", ["experiment=nasbench_macro", "device=cpu"])
    space = SearchSpace.from_config(cfg.space)
    gt = NasBenchMacro.load(args.table)
    data = load_data(cfg.data, 0)
    workloads = [(f"ranking sample ({args.rank_nets} random networks)", ranking_sample(gt, args.rank_nets),
                  to_tensor(data.train.images[:64]))]
    for c in args.centres:
        workloads.append((f"finalists around {c} (radius 2)",
                          [code_of(n) for n in neighbourhood(space, choices_of(c), 2)], to_tensor(data.val.images[:64])))
    rows, taus = [], {}
    for name, codes, x in workloads:
        archs = [arch_of(c) for c in codes]
        t = time.perf_counter()
        alone = [score_arch(a, "naswot", x, 0) for a in archs]
        t_alone = time.perf_counter() - t
        t = time.perf_counter()
        tree = naswot_scores(archs, x, 0)
        t_tree = time.perf_counter() - t
        if tree != alone:
            raise SystemExit(f"{name}: the tree's scores differ from the networks' own: a defect, report it")
        rows.append({"workload": name, "networks": len(codes), "one_at_a_time_s": round(t_alone, 1),
                     "prefix_tree_s": round(t_tree, 1), "speedup": round(t_alone / t_tree, 2), "identical": True})
        if name.startswith("ranking"):
            taus = kendall_with_ci(tree, [gt[c].mean_acc for c in codes])
        print(rows[-1], flush=True)
    notes = (f"- Scores identical both ways on all {sum(r['networks'] for r in rows)} networks. "
             f"NASWOT's Kendall tau with the benchmark's accuracy on the ranking sample: {taus['tau']:.3f} "
             f"[{taus['low']:.3f}, {taus['high']:.3f}] (per-layer initialisation, seed 0).\n"
             "- Layers are initialised one by one (seed, depth among the kept layers, the layer), so networks "
             "sharing their first layers compute them once; the ground-truth harness scores both workloads.")
    record("bench_naswot_tree", "NASWOT over a prefix tree vs one network at a time (NAS-Bench-Macro)", rows,
           notes=notes, extra={"tau": taus})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
