"""One warm-up for every phone: the wall time of searching four SoCs (one shared warm-up, four forked
searches) against one search run alone, at the same search settings and data.

    python -m bench.bench_shared_warmup [--experiment evidence] [--socs sd845 sd670 sd808 sd801] [overrides ...]

Target: 4 SoCs <= 2.0x one search. The warm-up (weights only, latency term off) is table-independent, so
its share of the steps is paid once; the searching steps are paid per SoC. Runs alone on the machine;
each search starts from scratch (fresh folders) so nothing is cached.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from bench.common import record


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--experiment", default="evidence")
    ap.add_argument("--socs", nargs="+", default=["sd845", "sd670", "sd808", "sd801"])
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    import spnas
    from nas.search import run_search, run_warmup
    from training.datasets import load_data

    cfg = spnas.compose("pipeline", [f"experiment={args.experiment}", *args.overrides])
    space, rt = spnas.SearchSpace.from_config(cfg.space), cfg.runtime()
    data = load_data(cfg.data, cfg.seed)
    tmp = Path(tempfile.mkdtemp(prefix="bench_shared_warmup."))
    try:
        t0 = time.perf_counter()
        alone = run_search(cfg.search, space, cfg.soc_configs[args.socs[0]].table, data, tmp / "alone",
                           proxy=cfg.proxy, name=args.socs[0], seed=cfg.seed, runtime=rt)
        one = time.perf_counter() - t0
        t0 = time.perf_counter()
        warm = run_warmup(cfg.search, space, data, tmp / "warm", proxy=cfg.proxy, seed=cfg.seed, runtime=rt)
        t_warm = time.perf_counter() - t0
        forks, per = [], {}
        for soc in args.socs:
            t = time.perf_counter()
            forks.append(run_search(cfg.search, space, cfg.soc_configs[soc].table, data, tmp / soc, proxy=cfg.proxy,
                                    name=soc, seed=cfg.seed, runtime=rt, warmup=warm))
            per[soc] = time.perf_counter() - t
        shared = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    same = forks[0]["choices"] == alone["choices"]
    b = alone["budget"]
    rows = [{"run": f"one search ({args.socs[0]}, own warm-up)", "wall_s": round(one, 1), "x_one": 1.0},
            {"run": "shared warm-up", "wall_s": round(t_warm, 1), "x_one": round(t_warm / one, 3)},
            *[{"run": f"forked search {s}", "wall_s": round(v, 1), "x_one": round(v / one, 3)} for s, v in per.items()],
            {"run": f"{len(args.socs)} SoCs in all", "wall_s": round(shared, 1), "x_one": round(shared / one, 3)}]
    over = (" " + " ".join(args.overrides)) if args.overrides else ""
    record("bench_shared_warmup", f"One warm-up for every phone: {len(args.socs)} SoC searches vs one "
                                  f"(experiment={args.experiment}{over})", rows,
           notes=(f"Budget: {b['total_steps']} steps, {b['warmup_steps']} of them warm-up (shared), batch "
                  f"{b['batch_size']}. {len(args.socs)} SoCs = {shared / one:.2f}x one search (target <= 2.0x: "
                  f"{'met' if shared / one <= 2.0 else 'NOT met'}). The {args.socs[0]} search forked from the shared "
                  f"warm-up derived {'the same' if same else 'a DIFFERENT'} network as the one run alone."),
           extra={"ratio": shared / one, "same_winner": same})


if __name__ == "__main__":
    main()
