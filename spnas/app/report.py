"""The pipeline report: `report.md`, `report.json` and PNGs, built only from the stage outputs.

One row per (SoC, model): top-1 on the test split, table-predicted latency on that SoC at the
deployment resolution, latency measured on this CPU (LiteRT, 1 thread, same resolution), Grocery
retrieval recall@1/10 and mAP@10, params, MACs, model size, and the deltas against MobileNetV2 on
the same SoC. The headline check and the provenance of every number follow.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from latency_tables.predictor import latency_breakdown, predict_latency_ms
from latency_tables.table import LatencyTable
from search_spaces import ArchSpec, SearchSpace
from spnas.config import PipelineAppConfig, to_plain
from spnas.files import write_bytes_atomic, write_json_atomic
from training.runtime import versions

BASELINE = "mobilenet_v2"
SPEEDUP_TARGET = 0.20


def _arch(m: dict[str, Any], resolution: int) -> ArchSpec:
    return ArchSpec.from_string(m["train"]["arch_string"]).replace(resolution=resolution)


def build_rows(cfg: PipelineAppConfig, models: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (SoC, model) with the deltas against MobileNetV2 on the same SoC."""
    lat_res = cfg.search.latency_resolution
    rows = []
    for soc in cfg.socs:
        table = LatencyTable.load(cfg.soc_configs[soc].table)
        names = [f"spnas-{soc}", *cfg.baselines]
        for name in names:
            m = models.get(name)
            if m is None:
                continue
            r = m["retrieval"]["results"]["train"]["fine"]
            ri = m["retrieval"]["results"]["iconic"]["fine"]
            rows.append({
                "soc": soc, "model": name, "kind": m["kind"],
                "top1": m["train"]["test_top1"],
                "predicted_ms": predict_latency_ms(_arch(m, lat_res), table),
                "table_provenance": table.provenance,
                "measured_cpu_ms": m["export"]["measured_224_ms"],
                "recall@1": r["recall@1"], "recall@10": r["recall@10"], "mAP@10": r["mAP@10"],
                "iconic_recall@1": ri["recall@1"], "iconic_mAP@10": ri["mAP@10"],
                "params": m["train"]["params"], "macs_224": m["train"]["macs_at_deploy_resolution"],
                "fp32_bytes": m["export"]["fp32_bytes"], "arch": m["train"]["arch_string"],
            })
    for r in rows:
        base = next((b for b in rows if b["soc"] == r["soc"] and b["model"] == BASELINE), None)
        if base is None:
            r["d_latency_pct"] = r["d_measured_pct"] = r["d_top1_pts"] = None
            continue
        r["d_latency_pct"] = 100 * (r["predicted_ms"] - base["predicted_ms"]) / base["predicted_ms"]
        r["d_measured_pct"] = (100 * (r["measured_cpu_ms"] - base["measured_cpu_ms"]) / base["measured_cpu_ms"]
                               if r["measured_cpu_ms"] and base["measured_cpu_ms"] else None)
        r["d_top1_pts"] = 100 * (r["top1"] - base["top1"])
    return rows


def headline(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per SoC: is the winner >= 20% faster than MobileNetV2 at equal or better top-1?"""
    out = []
    for r in rows:
        if r["kind"] != "spnas" or r["d_latency_pct"] is None:
            continue
        host = r["soc"] == "host"
        d = r["d_measured_pct"] if host else r["d_latency_pct"]
        faster = d is not None and d <= -100 * SPEEDUP_TARGET
        accurate = r["d_top1_pts"] >= 0
        out.append({"soc": r["soc"], "latency_basis": "measured on this CPU" if host else "table-predicted",
                    "latency_delta_pct": d, "top1_delta_pts": r["d_top1_pts"], "faster_by_20pct": faster,
                    "top1_at_least_baseline": accurate, "met": bool(faster and accurate)})
    return out


def _fmt(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return format(v, spec)


def markdown(cfg: PipelineAppConfig, rows: list[dict[str, Any]], head: list[dict[str, Any]], prov: dict[str, Any],
             plots: list[str]) -> str:
    """report.md."""
    res = cfg.search.latency_resolution
    lines = [f"# spnas report: {cfg.experiment_name}", "",
             f"Data: {prov['data'].get('name')} at {prov['data'].get('resolution')}x{prov['data'].get('resolution')} "
             f"({prov['data'].get('train')} train / {prov['data'].get('val')} val / {prov['data'].get('test')} test images); "
             f"latency at {res}x{res}; retrieval on Grocery Store (train photos as gallery, fine labels).", "",
             "## Headline: SPNAS winner vs MobileNetV2 1.0 on each device", ""]
    for h in head:
        verdict = "MET" if h["met"] else "NOT MET"
        lines.append(f"- **{h['soc']}**: {verdict} — latency {_fmt(h['latency_delta_pct'], '+.1f')}% "
                     f"({h['latency_basis']}), top-1 {_fmt(h['top1_delta_pts'], '+.2f')} points "
                     f"(target: <= -20% at >= +0.00)")
    lines += ["", "## Results", "",
              "| SoC | model | top-1 | pred. ms | Δ lat | CPU ms (LiteRT 1T) | Δ CPU | Δ top-1 (pts) | R@1 | R@10 | mAP@10 "
              "| params | MACs (224) | fp32 size |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['soc']} | {r['model']} | {r['top1']:.4f} | {r['predicted_ms']:.2f} | {_fmt(r['d_latency_pct'], '+.1f')}% "
            f"| {_fmt(r['measured_cpu_ms'], '.2f')} | {_fmt(r['d_measured_pct'], '+.1f')}% | {_fmt(r['d_top1_pts'], '+.2f')} "
            f"| {r['recall@1']:.3f} | {r['recall@10']:.3f} | {r['mAP@10']:.3f} | {r['params'] / 1e6:.2f} M "
            f"| {r['macs_224'] / 1e6:.0f} M | {r['fp32_bytes'] / 1e6:.2f} MB |")
    lines += ["", "Table-predicted latency uses each SoC's table (modeled tables say so below); CPU ms is the fp32 "
              "classifier converted with litert-torch and measured with the local profiler (p10, 1 thread).", "",
              "## Winners", ""]
    for r in rows:
        if r["kind"] == "spnas":
            lines.append(f"- {r['soc']}: `{r['arch']}`")
    lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    lines += ["", "## Provenance", "", "| table | provenance | method | SoC | date |", "|---|---|---|---|---|"]
    for n, t in prov["tables"].items():
        lines.append(f"| {n} | {t['provenance']} | {t.get('method') or t.get('runtime') or ''} | {t.get('soc')} "
                     f"| {t.get('date')} |")
    lines += ["", f"Seed {prov['seed']}. Versions: " + ", ".join(f"{k} {v}" for k, v in prov["versions"].items()), "",
              "| stage | this run | wall time (s) |", "|---|---|---|"]
    for e in prov["stages"]:
        lines.append(f"| {e['stage']} | {e['how']} | {e['wall_s']:.0f} |")
    return "\n".join(lines) + "\n"


def write_report(run_dir: Path, cfg: PipelineAppConfig, models: dict[str, dict[str, Any]],
                 events: list[dict[str, Any]]) -> dict[str, Any]:
    """report.json, report.md, report.csv and the PNGs, from the stage outputs only."""
    rows = build_rows(cfg, models)
    head = headline(rows)
    tables = {cfg.soc_configs[s].table: LatencyTable.load(cfg.soc_configs[s].table) for s in cfg.socs}
    any_model = next(iter(models.values()))
    prov = {"versions": versions(), "seed": cfg.seed, "stages": events,
            "data": any_model["train"].get("data", {}),
            "retrieval_queries": next(iter(models.values()))["retrieval"]["results"]["train"]["gallery_size"],
            "tables": {n: {"provenance": t.provenance, "soc": t.meta.get("soc"), "date": t.meta.get("date"),
                           "runtime": t.meta.get("runtime"), "method": (t.meta.get("method") or {}).get("name")}
                       for n, t in tables.items()}}
    plots = make_plots(run_dir, cfg, models, rows)
    report = {"experiment": cfg.experiment_name, "rows": rows, "headline": head, "provenance": prov,
              "plots": plots, "winners": {n: m["train"]["arch_string"] for n, m in models.items() if m["kind"] == "spnas"}}
    write_json_atomic(run_dir / "report.json", report)
    write_bytes_atomic(run_dir / "report.md", markdown(cfg, rows, head, prov, plots).encode())
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0].keys()) if rows else ["soc"])
    w.writeheader()
    w.writerows(rows)
    write_bytes_atomic(run_dir / "report.csv", buf.getvalue().encode())
    return report


def make_plots(run_dir: Path, cfg: PipelineAppConfig, models: dict[str, dict[str, Any]],
               rows: list[dict[str, Any]]) -> list[str]:
    """accuracy_vs_latency.png, winner_decisions.png, latency_breakdown.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    socs = list(cfg.socs)
    lat_res = cfg.search.latency_resolution
    # 1. accuracy vs predicted latency per SoC (+ a sweep's Pareto front when one was run)
    fig, axes = plt.subplots(1, len(socs), figsize=(3.4 * len(socs), 3.2), squeeze=False)
    for ax, soc in zip(axes[0], socs):
        for r in (r for r in rows if r["soc"] == soc):
            style = {"marker": "*", "s": 160, "c": "tab:red"} if r["kind"] == "spnas" else {"marker": "o", "s": 50}
            ax.scatter(r["predicted_ms"], r["top1"], label=r["model"], **style)
        sweeps = Path(cfg.report.sweeps)
        for pareto in sorted(sweeps.glob(f"{soc}-*/pareto.csv")):  # spnas-sweep's default run folders
            with open(pareto) as f:
                pts = sorted((float(d["predicted_ms"]), float(d["accuracy"])) for d in csv.DictReader(f)
                             if d.get("pareto") == "True")
            if pts:
                ax.plot(*zip(*pts), "--", c="0.5", label=f"sweep Pareto front ({pareto.parent.name})")
        ax.set_title(soc, fontsize=9)
        ax.set_xlabel("predicted latency (ms)", fontsize=8)
        ax.set_ylabel("test top-1", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    p = run_dir / "accuracy_vs_latency.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    out.append(str(p))
    # 2. per-layer decisions of each winner
    from nas.plots import choice_cmap, choice_index
    from search_spaces.space import CHOICE_ORDER

    space = SearchSpace.from_dict(to_plain(cfg.space))
    winners = [(s, models[f"spnas-{s}"]) for s in socs if f"spnas-{s}" in models]
    grid = [[choice_index(c) for c in space.encode(_arch(m, lat_res))] for _, m in winners]
    fig, ax = plt.subplots(figsize=(0.55 * space.num_layers + 2, 0.5 * len(winners) + 1.2))
    ax.imshow(grid, cmap=choice_cmap(), vmin=-0.5, vmax=len(CHOICE_ORDER) - 0.5, aspect="auto")
    for i, (_, m) in enumerate(winners):
        for j, c in enumerate(space.encode(_arch(m, lat_res))):
            ax.text(j, i, c.replace("_", "\n"), ha="center", va="center", fontsize=6)
    ax.set_yticks(range(len(winners)), [s for s, _ in winners])
    ax.set_xticks(range(space.num_layers), [f"L{i}" for i in range(space.num_layers)], fontsize=7)
    ax.set_title("per-layer decisions of each SoC's winner", fontsize=9)
    fig.tight_layout()
    p = run_dir / "winner_decisions.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    out.append(str(p))
    # 3. per-layer latency breakdown on each SoC's table (winner vs baselines)
    fig, axes = plt.subplots(len(socs), 1, figsize=(9, 1.6 * len(socs) + 0.6), squeeze=False)
    for ax, soc in zip(axes[:, 0], socs):
        table = LatencyTable.load(cfg.soc_configs[soc].table)
        names = [n for n in [f"spnas-{soc}", *cfg.baselines] if n in models]
        for yi, n in enumerate(names):
            left = 0.0
            for k, op in enumerate(latency_breakdown(_arch(models[n], lat_res), table)):
                ax.barh(yi, op["ms"], left=left, color=plt.cm.tab20(k % 20), edgecolor="white", linewidth=0.3)
                left += op["ms"]
            ax.text(left, yi, f" {left:.1f} ms", va="center", fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_title(f"{soc}: per-layer latency ({table.provenance} table)", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    axes[-1, 0].set_xlabel("ms (each segment one layer, network order)", fontsize=8)
    fig.tight_layout()
    p = run_dir / "latency_breakdown.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    out.append(str(p))
    return out
