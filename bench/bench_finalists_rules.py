"""Finalists rules judged on a finished ground-truth harness run, without training again.

The threshold decisions of a search are deterministic for a seed, so a change of the finalists step alone
(`search.finalists`: radius, rankers) can be judged exactly on the centres a `bench_groundtruth` run
reached: each search's derived network brought within its budget (`finalists.centre` of its
`search_summary.json`). Every rule ranks the same candidates with the search's own code
(`nas.finalists.neighbourhood` and `rank_finalists`, NASWOT on the search's own 64 held-out images); the
truth is NAS-Bench-Macro's mean accuracy. Rules that need the supernet are not re-run here: the search's
own pick (the preset's rule) is read from its summary. Decision-window networks beyond the centre are not
added (the summary records the window's agreement; a search whose window flipped is counted in the notes).

    python -m bench.bench_finalists_rules                 # the default harness folder, runs/groundtruth
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from bench.common import record

RULES = [(1, "naswot_depth"), (2, "naswot_depth"), (1, "naswot_layers"), (2, "naswot_layers"), (2, "naswot"),
         (2, "depth"), (2, "truth")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/groundtruth", help="a finished bench_groundtruth --out folder")
    p.add_argument("--table", default=None, help="the benchmark file (default: under $SPNAS_SHARED)")
    args = p.parse_args(argv)

    import spnas
    from latency_tables.lookup.table import LatencyTable
    from nas.finalists import naswot_of_choices, neighbourhood, rank_finalists
    from nas.groundtruth import NasBenchMacro, code_cost, judge
    from nas.ranking import RankingImages
    from search_spaces import SearchSpace
    from search_spaces.nasbench_macro import code_of
    from spnas.app.jobs.commands import resolve_soc
    from training.datasets import load_data

    run = Path(args.run)
    summaries = sorted(run.glob("s*/T*/search_summary.json"))
    if not summaries:
        raise SystemExit(f"{run} holds no finished search (s<seed>/T<budget>/search_summary.json): run "
                         f"`python -m bench.bench_groundtruth --out {run}` first")
    t0 = time.perf_counter()
    cfg = spnas.compose("search", ["experiment=nasbench_macro", "soc=flops", "device=cpu"])
    space = SearchSpace.from_config(cfg.space)
    table = LatencyTable.load(resolve_soc(cfg).table)
    gt = NasBenchMacro.load(args.table)
    data = load_data(cfg.data, 0)

    cost_of_code = code_cost(table, data.resolution)

    def cost(choices: Sequence[str]) -> float:
        return cost_of_code(code_of(choices))

    picks: dict[tuple[float, str], list[Any]] = {}
    flipped = 0
    for path in summaries:
        s = json.loads(path.read_text())
        seed, budget = int(s["seed"]), float(s["finalists"]["budget"])
        centre = list(s["finalists"].get("centre") or s["derived_choices"])
        flipped += any(s["decision"].get("flips") or [])
        picks.setdefault((budget, "the search's own pick (its search_summary.json)"), []).append(
            judge(gt, code_of(s["choices"]), cost_of_code, budget))
        n = min(len(data.val), cfg.search.finalists.recal_images + cfg.search.finalists.eval_images)
        images = RankingImages.from_split(data.val, 0, n, seed=seed)  # the search's own images
        proxy = naswot_of_choices(space, data.resolution, data.num_classes, images.held_out[:64], seed)
        truth: Callable[[Sequence[str]], float] = lambda c: gt[code_of(c)].mean_acc  # noqa: E731
        for radius, ranker in RULES:
            cands = neighbourhood(space, centre, radius)
            if ranker == "truth":
                ranked = rank_finalists(None, cands, cost, budget, images, truth, supernet=False)
            else:
                ranked = rank_finalists(None, cands, cost, budget, images, proxy if "naswot" in ranker else None,
                                        depth="layers" if ranker.endswith("layers") else "depth" in ranker,
                                        supernet=False)
            name = f"radius {radius}, " + {"naswot_depth": "NASWOT + depth then cost",
                                           "naswot_layers": "NASWOT + layers", "naswot": "NASWOT alone",
                                           "depth": "depth alone", "truth": "the truth (the best it holds)"}[ranker]
            picks.setdefault((budget, name), []).append(judge(gt, code_of(ranked[0].choices), cost_of_code, budget))
        print(f"{path.parent}: centre {code_of(centre)}", flush=True)
    rows = []
    for (budget, name), judged in sorted(picks.items(), key=lambda kv: kv[0][0]):
        rows.append({"target": budget, "rule": name, "seeds": len(judged),
                     "acc": statistics.fmean(j.accuracy for j in judged),
                     "top5_hits": sum(j.top_pct <= 5.0 for j in judged),
                     "mean_top_pct": statistics.fmean(j.top_pct for j in judged),
                     "picks": " ".join(j.code for j in judged)})
    wall = time.perf_counter() - t0
    notes = (f"Centres of `{run}` ({len(summaries)} searches; {flipped} had a decision window that flipped, "
             f"whose window networks the search also ranks and this does not). acc: mean NAS-Bench-Macro "
             f"accuracy of the picks; top5_hits: picks in the top 5% of the distinct networks within the "
             f"budget. {wall / 60:.1f} min on this machine.")
    print(notes)
    record("bench_finalists_rules", "Finalists rules on a ground-truth run's centres (NAS-Bench-Macro)", rows,
           notes=notes, extra={"run": str(run)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
