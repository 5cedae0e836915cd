"""The headline: run `spnas-pipeline` with a preset and record, per SoC, the winner against MobileNetV2.

    python -m bench.bench_pipeline [--experiment cifar10] [overrides ...]

Target (on each Snapdragon table, and on this CPU's measured latency): the winner of a matched-budget
search is at least 20% faster than MobileNetV2 1.0 at the same input resolution, at equal or better
top-1. Re-running is cheap: finished stages are skipped.
"""

from __future__ import annotations

import argparse
import time

from bench.common import record


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--experiment", default="cifar10")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    import spnas
    from spnas.app.pipeline import run_pipeline

    cfg = spnas.compose("pipeline", [f"experiment={args.experiment}", *args.overrides])
    t0 = time.perf_counter()
    rep = run_pipeline(cfg)
    wall = time.perf_counter() - t0
    rows = []
    for r in rep["rows"]:
        h = next((h for h in rep["headline"] if h["soc"] == r["soc"]), None)
        rows.append({"soc": r["soc"], "model": r["model"], "top1": round(r["top1"], 4),
                     "pred_ms": round(r["predicted_ms"], 2), "d_lat_%": round(r["d_latency_pct"], 1),
                     "cpu_ms_224": round(r["measured_cpu_ms"], 3), "d_cpu_%": round(r["d_measured_pct"], 1),
                     "d_top1_pts": round(r["d_top1_pts"], 2), "R@1": round(r["recall@1"], 3),
                     "R@10": round(r["recall@10"], 3), "mAP@10": round(r["mAP@10"], 3),
                     "MACs_M": round(r["macs_224"] / 1e6), "params_M": round(r["params"] / 1e6, 2),
                     "target_met": (h["met"] if h else "") if r["kind"] == "spnas" else ""})
    over = (" " + " ".join(args.overrides)) if args.overrides else ""
    stage_wall = sum(e["wall_s"] for e in rep["provenance"]["stages"])
    lines = [f"{h['soc']}: {'MET' if h['met'] else 'NOT met'} ({h['latency_basis']} latency "
             f"{h['latency_delta_pct']:+.1f}%, top-1 {h['top1_delta_pts']:+.2f} points)" for h in rep["headline"]]
    record("bench_pipeline", f"Headline: SPNAS winners vs MobileNetV2 1.0 (pipeline experiment={args.experiment}{over})", rows,
           notes=("Headline target (>= 20% faster than MobileNetV2 at equal or better top-1): " + "; ".join(lines) +
                  f". Stage wall time {stage_wall / 3600:.2f} h (this invocation {wall:.0f} s). Predicted latency from "
                  "each SoC's table at 224 (the Snapdragon tables are modeled); CPU ms measured on this machine with "
                  f"LiteRT, 1 thread, at 224. Report: `{cfg.run_dir}/report.md` (not committed). Paper rows for "
                  "orientation: SD808 73.07% @ 113.92 ms vs MobileNetV2 71.80% @ 162.82 ms; SD845 74.48% @ 77.90 ms "
                  "vs 71.80% @ 76.36 ms (ImageNet)."),
           extra={"headline": rep["headline"], "winners": rep["winners"]})


if __name__ == "__main__":
    main()
