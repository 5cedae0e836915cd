"""Finalists rules judged on a finished ground-truth harness run, without training again.

The threshold decisions of a search are deterministic for a seed, so a change of the finalists step alone
(`search.finalists`: radius, rankers) can be judged exactly on the centres a `bench_groundtruth` run
reached: each search's derived network brought within its budget (`finalists.centre` of its
`search_summary.json`). Every rule ranks the same candidates with the search's own code
(`nas.finalists.neighbourhood` and `rank_finalists`, NASWOT on the search's own 64 held-out images); the
truth is NAS-Bench-Macro's mean accuracy. Rules that need the supernet are not re-run here: the search's
own pick (whatever finalists rule that run used, named in the row) is read from its summary. Decision-window networks beyond the centre are not
added (the summary records the window's agreement; a search whose window flipped is counted in the notes).

    python -m bench.bench_finalists_rules                 # the default harness folder, runs/groundtruth
    python -m bench.bench_finalists_rules --run runs/groundtruth runs/gt_rms    # several runs, one table

Several runs (say the preset's and a variant's, whose threshold decisions reached other centres) judge a rule
on more centres than the one run it may have been chosen on. The controls ask what the search's centre is
worth: the preset's finalists step run around centres no search chose, per (seed, budget) searched (the same
NASWOT images), the depth rule's network and `--random-centres` random networks costing [0.8 T, T].
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from bench.common import record

RULES = [(1, "naswot_depth"), (2, "naswot_depth"), (1, "naswot_layers"), (2, "naswot_layers"), (3, "naswot_layers"),
         (2, "naswot"), (2, "depth"), (2, "truth")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", nargs="+", default=["runs/groundtruth"],
                   help="finished bench_groundtruth --out folders (each judged apart, one table)")
    p.add_argument("--random-centres", type=int, default=2,
                   help="controls: random networks within [low x T, T] per (seed, budget) searched, the preset's "
                        "finalists step around each (what the step finds without the search's centre)")
    p.add_argument("--low", type=float, default=0.8, help="controls: the random centres' lower cost bound, x T")
    p.add_argument("--table", default=None, help="the benchmark file (default: under $SPNAS_SHARED)")
    args = p.parse_args(argv)

    import spnas
    from latency_tables.lookup.table import LatencyTable
    from nas.finalists import naswot_of_choices, neighbourhood, rank_finalists
    from nas.groundtruth import NasBenchMacro, code_cost, depth_then_cost, judge
    from nas.ranking import RankingImages
    from search_spaces import SearchSpace
    from search_spaces.nasbench_macro import all_codes, choices_of, code_of
    from spnas.app.jobs.commands import resolve_soc
    from training.datasets import load_data

    runs = [Path(r) for r in args.run]
    summaries = []
    for run in runs:
        found = sorted(run.glob("s*/T*/search_summary.json"))
        if not found:
            raise SystemExit(f"{run} holds no finished search (s<seed>/T<budget>/search_summary.json): run "
                             f"`python -m bench.bench_groundtruth --out {run}` first")
        summaries += [(run, p) for p in found]
    t0 = time.perf_counter()
    cfg = spnas.compose("search", ["experiment=nasbench_macro", "soc=flops", "device=cpu"])
    space = SearchSpace.from_config(cfg.space)
    table = LatencyTable.load(resolve_soc(cfg).table)
    gt = NasBenchMacro.load(args.table)
    data = load_data(cfg.data, 0)

    cost_of_code = code_cost(table, data.resolution)

    def cost(choices: Sequence[str]) -> float:
        return cost_of_code(code_of(choices))

    truth: Callable[[Sequence[str]], float] = lambda c: gt[code_of(c)].mean_acc  # noqa: E731
    n = min(len(data.val), cfg.search.finalists.recal_images + cfg.search.finalists.eval_images)
    seen: dict[int, tuple[Any, Any]] = {}

    def seed_images(seed: int) -> tuple[Any, Any]:
        """The search's own held-out images for `seed` and its NASWOT on them (memoised across runs/budgets)."""
        if seed not in seen:
            images = RankingImages.from_split(data.val, 0, n, seed=seed)
            seen[seed] = images, naswot_of_choices(space, data.resolution, data.num_classes, images.held_out[:64],
                                                   seed)
        return seen[seed]

    def pick(centre: list[str], budget: float, seed: int, radius: int, ranker: str) -> Any:
        images, proxy = seed_images(seed)
        cands = neighbourhood(space, centre, radius)
        if ranker == "truth":
            ranked = rank_finalists(None, cands, cost, budget, images, truth, supernet=False)
        else:
            ranked = rank_finalists(None, cands, cost, budget, images, proxy if "naswot" in ranker else None,
                                    depth="layers" if ranker.endswith("layers") else "depth" in ranker,
                                    supernet=False)
        return judge(gt, code_of(ranked[0].choices), cost_of_code, budget)

    picks: dict[tuple[str, float, str], list[Any]] = {}
    flipped = 0
    searched: list[tuple[int, float]] = []
    for run, path in summaries:
        s = json.loads(path.read_text())
        seed, budget = int(s["seed"]), float(s["finalists"]["budget"])
        if (seed, budget) not in searched:
            searched.append((seed, budget))
        centre = list(s["finalists"].get("centre") or s["derived_choices"])
        flipped += any(s["decision"].get("flips") or [])
        ran = path.parent / "config.json"  # the search's own settings, beside its summary
        fin = json.loads(ran.read_text()).get("search", {}).get("finalists", {}) if ran.exists() else {}
        own = (f"the search's own pick (radius {fin.get('radius', '?')}, {fin.get('proxy', '?')}"
               f"{', with the supernet' if fin.get('supernet', True) else ''})")
        picks.setdefault((str(run), budget, own), []).append(
            judge(gt, code_of(s["choices"]), cost_of_code, budget))
        for radius, ranker in RULES:
            name = f"radius {radius}, " + {"naswot_depth": "NASWOT + depth then cost",
                                           "naswot_layers": "NASWOT + layers", "naswot": "NASWOT alone",
                                           "depth": "depth alone", "truth": "the truth (the best it holds)"}[ranker]
            picks.setdefault((str(run), budget, name), []).append(pick(centre, budget, seed, radius, ranker))
        print(f"{path.parent}: centre {code_of(centre)}", flush=True)

    # controls: the preset's finalists step around centres no search chose, per (seed, budget) searched
    fcfg = cfg.search.finalists
    rule = (fcfg.radius, fcfg.proxy.name)
    label = f"no search: the preset's finalists (radius {fcfg.radius}, {fcfg.proxy.name}) around "
    pool = {b: [c for c in all_codes() if args.low * b <= cost_of_code(c) <= b] for _, b in searched}
    for seed, budget in searched:
        rng = random.Random(7919 * seed + int(budget * 1000))
        centres = [("the depth rule's network", depth_then_cost(gt, cost_of_code, budget))]
        centres += [(f"a random network within [{args.low:g}T, T] ({args.random_centres} per seed)",
                     rng.choice(pool[budget])) for _ in range(args.random_centres)]
        for what, code in centres:
            picks.setdefault(("controls", budget, label + what), []).append(
                pick(choices_of(code), budget, seed, *rule))
        print(f"controls of seed {seed} at {budget:g}: done", flush=True)
    runs_shown = [*map(str, runs), "controls"]
    rows = []
    order = {r: i for i, r in enumerate(runs_shown)}
    for (run_name, budget, name), judged in sorted(picks.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])):
        rows.append({"run": run_name, "target": budget, "rule": name, "n": len(judged),
                     "acc": statistics.fmean(j.accuracy for j in judged),
                     "top5_hits": sum(j.top_pct <= 5.0 for j in judged),
                     "mean_top_pct": statistics.fmean(j.top_pct for j in judged),
                     "picks": " ".join(j.code for j in judged)})
    wall = time.perf_counter() - t0
    notes = (f"Centres of {', '.join(f'`{r}`' for r in runs)} ({len(summaries)} searches; {flipped} had a decision "
             f"window that flipped, "
             f"whose window networks the search also ranks and this does not). n: picks judged (searches, or "
             f"control centres); acc: mean NAS-Bench-Macro "
             f"accuracy of the picks; top5_hits: picks in the top 5% of the distinct networks within the "
             f"budget. {wall / 60:.1f} min on this machine.")
    print(notes)
    record("bench_finalists_rules", "Finalists rules on ground-truth runs' centres (NAS-Bench-Macro)", rows,
           notes=notes, extra={"runs": [str(r) for r in runs]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
