"""Latency-table validation on this CPU, repeated: does the host table's agreement with whole networks hold
from run to run?

    python -m bench.bench_latency_validation [--runs 3] [--num-archs 50] [--passes 10] [--speed-probes 6]

Each run measures >= 50 sampled architectures of the space plus the three reference nets (converted
whole with litert-torch, LiteRT on one pinned core) and compares them with the host table's prediction
(the sum of op rows + the overhead constant, which was fitted on other networks). Rows and whole
networks are reduced with the same statistic (the fastest of `repeats` runs' means, the fastest of
`passes` interleaved passes). Also the fitted op model (the method behind the Snapdragon tables)
checked on this CPU. Run it under the CPU lock, runs one after another.
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench.common import record

TARGET = {"within_10pct": 0.95, "mape_pct": 3.0, "kendall_tau": 0.95}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--num-archs", type=int, default=50)
    ap.add_argument("--passes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--table", default="host")
    ap.add_argument("--speed-probes", type=int, default=6)
    args = ap.parse_args()
    import spnas
    from latency_tables.lookup.fingerprint import table_fingerprint
    from latency_tables.measuring.host import OVERHEAD_SEED
    from latency_tables.lookup.table import LatencyTable
    from latency_tables.validating.validate import error_metrics
    from spnas.app.jobs.profile import cmd_validate

    table = LatencyTable.load(args.table)
    fp = table_fingerprint(table.meta)
    runs, rows = [], []
    goal = ">=95% within 10%, MAPE<=3%, tau>=0.95"

    def met(m: dict) -> bool:
        return (m["within_10pct"] >= TARGET["within_10pct"] and m["mape_pct"] <= TARGET["mape_pct"]
                and m["kendall_tau"] >= TARGET["kendall_tau"])

    def row(what: str, m: dict, **more: object) -> dict:
        return {"what": what, "within_10%": f"{m['within_10pct'] * 100:.1f}%", "MAPE_%": round(m["mape_pct"], 2),
                "kendall_tau": round(m["kendall_tau"], 3), "max_err_%": round(m["max_abs_err_pct"], 1),
                "bias_%": round(m["bias_pct"], 2), **more}

    for i in range(args.runs):
        t0 = time.perf_counter()
        cfg = spnas.compose("profile", ["command=validate", f"validate.table={args.table}",
                                        f"validate.num_archs={args.num_archs}", f"validate.seed={args.seed}",
                                        f"validate.speed_probes={args.speed_probes}",
                                        f"validate.passes={args.passes}", f"validate.out_dir=bench/out/validate/run{i + 1}"])
        r = cmd_validate(cfg)
        runs.append(r)
        m, ms_ = r["metrics"], r.get("metrics_at_speed")
        wall = round(time.perf_counter() - t0)
        rows.append(row(f"run {i + 1}: absolute ms ({m['n']} nets)", m, speed="", wall_s=wall,
                        target="(diagnostic: includes the machine's speed now vs at calibration)", met=""))
        if ms_:
            rows.append(row(f"run {i + 1}: at this machine's current speed", ms_,
                            speed=f"x{r['speed']['factor']:.3f}", wall_s="", target=goal, met=met(ms_)))
    key = "metrics_at_speed" if all(r.get("metrics_at_speed") for r in runs) else "metrics"
    ms = [r[key] for r in runs]

    def spread(k: str, scale: float = 1.0, d: int = 2) -> str:
        v = [x[k] * scale for x in ms]
        return f"{min(v):.{d}f}..{max(v):.{d}f} (median {statistics.median(v):.{d}f})"

    speeds = [r["speed"]["factor"] for r in runs if r.get("speed")]
    rows.append({"what": f"spread over {len(runs)} runs ({'at current speed' if key != 'metrics' else 'absolute'})",
                 "within_10%": spread("within_10pct", 100, 1), "MAPE_%": spread("mape_pct"),
                 "kendall_tau": spread("kendall_tau", 1, 3), "max_err_%": spread("max_abs_err_pct", 1, 1),
                 "bias_%": spread("bias_pct"), "speed": f"x{min(speeds):.3f}..x{max(speeds):.3f}" if speeds else "",
                 "wall_s": "", "target": f"every run: {goal}", "met": all(met(x) for x in ms)})
    if len(runs) > 1:  # how well this machine's measurements agree with themselves: the ceiling of any predictor
        meas_runs = [[x["measured_ms"] for x in r["rows"]] for r in runs]
        taus = [error_metrics(meas_runs[i], meas_runs[j])["kendall_tau"]
                for i in range(len(runs)) for j in range(i + 1, len(runs))]
        per_net = [statistics.pstdev(v) / statistics.fmean(v) * 100 for v in zip(*meas_runs)]
        rows.append({"what": f"repeatability: measured vs measured, run pairs ({len(taus)})", "within_10%": "",
                     "MAPE_%": f"net spread {statistics.median(per_net):.2f}% (median std)",
                     "kendall_tau": f"{min(taus):.3f}..{max(taus):.3f}", "max_err_%": "", "bias_%": "", "speed": "",
                     "wall_s": "", "target": "(diagnostic: the tau any predictor can reach)", "met": ""})
    om, on = runs[-1]["op_model_vs_table_rows"], runs[-1]["op_model_vs_whole_networks"]
    rows.append({"what": f"fitted op model -> this CPU's table rows ({om['n']} ops, diagnostic)",
                 "within_10%": f"{om['within_10pct'] * 100:.1f}%", "MAPE_%": round(om["mape_pct"], 2),
                 "kendall_tau": round(om["kendall_tau"], 3), "max_err_%": round(om["max_abs_err_pct"], 1),
                 "bias_%": "", "speed": "", "wall_s": "", "target": "(diagnostic)", "met": ""})
    rows.append({"what": f"fitted op model, scaled on MobileNetV2 -> whole networks ({on['n']} nets, diagnostic)",
                 "within_10%": f"{on['within_10pct'] * 100:.1f}%", "MAPE_%": round(on["mape_pct"], 2),
                 "kendall_tau": round(on["kendall_tau"], 3), "max_err_%": round(on["max_abs_err_pct"], 1),
                 "bias_%": round(on["bias_pct"], 2), "speed": "", "wall_s": "", "target": "(diagnostic)", "met": ""})
    meas = sorted(x["measured_ms"] for x in runs[-1]["rows"])
    ov = table.meta.get("overhead_fit") or {}
    record("bench_latency_validation", "Latency table validation on this CPU, repeated (LiteRT, 1 thread)", rows,
           notes=(f"Host table `{table.device}` ({fp.describe() if fp else 'no fingerprint'}); statistic: "
                  f"{(table.meta.get('statistic') or {}).get('meaning', table.meta.get('statistic'))}. "
                  f"{args.runs} validation runs one after another, each {len(meas)} networks ({meas[0]:.2f}-"
                  f"{meas[-1]:.2f} ms; {args.num_archs} sampled with per-network preferences for big kernels / "
                  f"expansions / skips, plus the three reference nets) in {args.passes} interleaved passes. The "
                  f"overhead constant ({table.overhead_ms:.3f} ms) was fitted on {ov.get('n', '?')} other sampled "
                  f"networks (seed {OVERHEAD_SEED}), none of which is validated. Speed: {args.speed_probes} of "
                  "those calibration networks are re-measured in every pass, spread through it; the median of "
                  "now / at calibration is this machine's speed level relative to the calibration's, and "
                  "'at this machine's current speed' judges predictions x that factor (the shared VM's level "
                  "moves 3-6% within tens of minutes; a uniform factor cancels in every decision the search "
                  "and the report make, which compare latencies on one table). 'absolute ms' rows are the raw "
                  "comparison, kept as a diagnostic. Kendall tau is bounded by the repeatability row: two "
                  "measurements of the same networks on this machine rank them with tau of about 0.93-0.95 "
                  "themselves with 3-5 passes, 0.95-0.96 with 10 (the default). What moved the "
                  "agreement between runs before: rows and whole networks reduced with different statistics "
                  "(p10 of single invocations vs whole-network passes), an overhead fitted on three networks that "
                  "were also judged, and a table measured on another CPU under the same name (the machine behind "
                  "the previous figures was an Intel Xeon; this one is an AMD EPYC). Scatter plots: "
                  "`bench/out/validate/run*/validate_scatter.png` (not committed). nn-Meter's mark on a Pixel 4 "
                  "CPU: 99.0% within +-10%."),
           extra={"runs": [{"metrics": r["metrics"], "metrics_at_speed": r.get("metrics_at_speed"),
                           "speed": r.get("speed"), "rows_detail": r["rows"]} for r in runs]})


if __name__ == "__main__":
    main()
