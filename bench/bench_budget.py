"""Which training budget ranks capacity? The winners, their controls and the reference family of a preset,
retrained at several step budgets: each budget's ranking (mean proxy top-1 over seeds), whether the
reference family comes out ordered by width and whether models were still improving in the last quarter
(the report's noise-aware budget check, `spnas.app.pipeline.evidence.budget_check`), each winner against the mean
of its random controls, and Kendall's tau between the rankings of each pair of budgets.

    python -m bench.bench_budget [--experiment evidence] [overrides ...] [--steps 300 900 1800] [--seeds 0]

(overrides before `--steps`/`--seeds`: those take every number that follows them.)

A budget whose ranking still moves when the budget grows (tau well below 1 against the next) ranks the
budget, not the architectures. Searches and controls come from the preset's run folder (stage cache);
only the retrains run per budget (no fine-tuning, export or photo search).
"""

from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import replace
from pathlib import Path

from bench.common import record


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--experiment", default="evidence")
    ap.add_argument("--steps", type=int, nargs="+", default=[300, 900, 1800])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    import spnas
    from spnas.app.pipeline import evidence as E
    from spnas.app.pipeline.run import PipelineRun, model_list, prepare_devices, search_stage, train_stage, warmup_stage
    from spnas_core.stats import kendall_tau

    cfg = spnas.compose("pipeline", [f"experiment={args.experiment}", *args.overrides])
    cfg, _ = prepare_devices(cfg)
    run = PipelineRun(cfg, Path(cfg.run_dir), set())
    warm = warmup_stage(run)
    winners = [search_stage(run, s, warm) for s in [*cfg.socs, *(["fleet"] if cfg.search.fleet else [])]]
    base = model_list(run, winners)
    rankings, rows, walls, checks = {}, [], {}, {}
    for steps in args.steps:
        run.cfg = replace(cfg, train=replace(cfg.train, steps=steps))
        t0 = time.perf_counter()
        models = {n: replace(m, seeds={}) for n, m in base.items()}
        for seed in args.seeds:
            for m in models.values():
                train_stage(run, m, seed)
        walls[steps] = time.perf_counter() - t0
        stats = {n: E.summarize(m.seeds)["top1"] for n, m in models.items()}
        means = {n: st["mean"] for n, st in stats.items()}
        rankings[steps] = means
        fam = {b: sorted(((_width(models[n]), E.seed_samples(models[n].seeds, "top1")) for n in means
                          if n == b or n.startswith(f"{b}-w")), key=lambda p: p[0]) for b in cfg.baselines}
        check = E.budget_check(fam, {n: E.curve_rises(m.seeds) for n, m in models.items()}, cfg.report.rising_pts)
        checks[steps] = check
        order = sorted(means, key=means.get, reverse=True)
        rise = check["rise"]
        rows.append({"steps": steps, "ranking (best first)": ", ".join(f"{n} {_mean_ci(stats[n])}" for n in order),
                     "family ordered": all(o["ordered"] for o in check["families"].values()),
                     "last-quarter rise (pts, pooled)": _rise(rise), "winner - its random nets (pts)":
                     "; ".join(_vs_random(w, models) for w in models.values() if w.kind == "spnas"),
                     "still rising": check["rise"]["state"], "wall_s": round(walls[steps])})
    names = list(base)
    taus = {f"{a} vs {b}": round(kendall_tau([rankings[a][n] for n in names], [rankings[b][n] for n in names]), 3)
            for a, b in itertools.combinations(args.steps, 2)}
    for r in rows:
        r["tau vs next"] = next((v for k, v in taus.items() if k.startswith(f"{r['steps']} vs")), None)
    over = (" " + " ".join(args.overrides)) if args.overrides else ""
    record("bench_budget", f"Which budget ranks? Rankings of winners, controls and references by training steps "
                           f"(experiment={args.experiment}{over}, seeds {args.seeds})", rows,
           notes=("Kendall tau between the budgets' rankings: " + ", ".join(f"{k}: {v}" for k, v in taus.items()) +
                  ". 'family ordered' and the pooled last-quarter rise are the report's budget check: "
                  + next(iter(checks.values()))["rule"] + ". " +
                  (f"Mean top-1 [95% interval over seeds {args.seeds} and the test images]." if len(args.seeds) > 1
                   else "One seed: no intervals and no verdicts (the check cannot call a family ordered); a gap "
                        "smaller than the seed-to-seed spread (2-3 points of top-1 at these budgets, "
                        "docs/evidence.md) is not distinguishable.")),
           extra={"rankings": rankings, "taus": taus, "seeds": args.seeds,
                  "checks": {k: {"ranks": c["ranks"], "reasons": c["reasons"], "rise": c["rise"]}
                             for k, c in checks.items()}})


def _mean_ci(st: dict) -> str:
    """'0.452' for one seed, '0.452 [0.431, 0.473]' for several (summarize's 95% t-interval)."""
    if st.get("ci_low") is None or st.get("n", 1) < 2:
        return f"{st['mean']:.3f}"
    return f"{st['mean']:.3f} [{st['ci_low']:.3f}, {st['ci_high']:.3f}]"


def _rise(r: dict) -> str:
    """The pooled last-quarter rise with its interval and what the check makes of it."""
    if r.get("ci_low") is None:
        return f"{r['state']} ({r['n']} runs)"
    return f"{r['mean']:+.1f} [{r['ci_low']:+.1f}, {r['ci_high']:+.1f}]: {r['state']}"


def _vs_random(w, models: dict) -> str:
    """'sd845 +1.2 [-0.8, +3.2], above 2 of 3' (one seed: the difference and the count alone)."""
    from spnas.app.pipeline import evidence as E

    pop = [m.seeds for m in models.values() if m.kind == "random" and f"random control of {w.name}" in m.roles]
    d = E.against_population(w.seeds, pop, ["top1"]).get("top1") if pop else None
    if not d or d.get("mean") is None:
        return f"{w.soc} n/a"
    ci = "" if d.get("ci_low") is None else f" [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]"
    return f"{w.soc} {100 * d['mean']:+.1f}{ci}, above {sum(x > 0 for x in d['per_net'])} of {len(pop)}"


def _width(m) -> float:
    from search_spaces import ArchSpec

    rec = next(iter(m.seeds.values()))["train"]
    return ArchSpec.from_string(rec["arch_string"]).width


if __name__ == "__main__":
    main()
