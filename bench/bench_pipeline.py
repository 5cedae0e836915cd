"""The headline: run `spnas-pipeline` with a preset and record every model's figures with their intervals,
each winner's verdicts against its controls, the search's spread over search seeds, the budget check, the
fleet view and the wall time.

    python -m bench.bench_pipeline [--experiment evidence] [overrides ...]

Re-running is cheap: finished stages are skipped. The wall time recorded is this invocation's and the
stages' own (summed from their records, per stage kind: what a run from scratch costs on this machine,
e.g. the evidence preset's 75-minute limit on 2 cores).
"""

from __future__ import annotations

import argparse
import time

from bench.common import record


def _ci(st: dict | None) -> str:
    if not st or st.get("mean") is None:
        return "n/a"
    if st.get("ci_low") is None:
        return f"{st['mean']:.4f} (1 seed)"
    return f"{st['mean']:.4f} [{st['ci_low']:.4f}, {st['ci_high']:.4f}]"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--experiment", default="evidence")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    import spnas
    from spnas.app.pipeline.run import run_pipeline

    cfg = spnas.compose("pipeline", [f"experiment={args.experiment}", *args.overrides])
    t0 = time.perf_counter()
    rep = run_pipeline(cfg)
    wall = time.perf_counter() - t0
    socs = sorted({s for r in rep["rows"] for s in r["latency_ms"]})
    rows = [{"model": r["model"], "kind": r["kind"], **{f"ms_{s}": round(r["latency_ms"][s], 2)
                                                        for s in socs if r["latency_ms"].get(s) is not None},
             "top1 [95%]": _ci(r["stats"].get("top1")), "R@1 train [95%]": _ci(r["stats"].get("r1_train")),
             "seeds": len(r["seeds"])} for r in rep["rows"]]
    stages = rep["provenance"]["stages"]
    stage_wall = sum(e["wall_s"] for e in stages)
    by_kind: dict[str, float] = {}
    for e in stages:
        kind = e["stage"].split("/", 1)[0]
        by_kind[kind] = by_kind.get(kind, 0.0) + e["wall_s"]
    ran = sum(e["how"] != "skipped" for e in stages)
    b = rep["budget"]
    fleet = ""
    if rep.get("fleet"):
        fleet = " Fleet view (ms on each table): " + "; ".join(
            f"{f['winner']}: " + ", ".join(f"{d} {v:.1f}" for d, v in f["ms"].items() if v is not None) +
            f" (fleet cost {f['fleet_cost']:.3f}, over budget on {', '.join(f['over_budget_on']) or 'none'})"
            for f in rep["fleet"]) + "."
    spread = ""
    if rep.get("search_spread"):
        spread = " Search spread (search seeds): " + "; ".join(
            f"{sp['soc']}: " + ", ".join(f"seed {e['search_seed']} {e['cost']:.4g} top-1 {_ci(e['top1'])}"
                                         for e in sp["searches"]) for sp in rep["search_spread"]) + "."
    over = (" " + " ".join(args.overrides)) if args.overrides else ""
    record("bench_pipeline", f"Headline with controls and seeds (pipeline experiment={args.experiment}{over})", rows,
           notes=("Verdicts (proxy test top-1, paired by seed and test image, "
                  + (rep.get("family") or {}).get("rule", "") + "): "
                  + " ".join(h["text"] + "." for h in rep["headline"])
                  + f" Budget check: {'ranks capacity' if b['ranks'] else 'budget-limited: ' + '; '.join(b['reasons'])}."
                  + fleet + spread + f" Stage wall time {stage_wall / 60:.1f} min on this machine ("
                  + ", ".join(f"{k} {v / 60:.1f}" for k, v in by_kind.items()) + f" min; this invocation "
                  f"{wall:.0f} s, {ran} of {len(stages)} stages run in it)."
                  f" Report: `{cfg.run_dir}/report.md` (not committed)."),
           extra={"headline": rep["headline"], "family": rep.get("family"), "budget": b, "winners": rep["winners"],
                  "fleet": rep.get("fleet"), "search_spread": rep.get("search_spread"), "stage_wall_s": stage_wall,
                  "stage_wall_by_kind_s": by_kind, "wall_s": wall, "stages_run": ran, "stages": len(stages)})


if __name__ == "__main__":
    main()
