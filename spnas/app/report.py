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

import numpy as np
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

# The seed's own result (Single-Path NAS, Stamoulis et al. 2019, per-device searches on ImageNet against
# MobileNetV2 1.0): winner minus MobileNetV2, in top-1 points and latency percent; with the SoC's
# generation (year of release) the seed's table orders them by.
SEED_DELTAS: dict[str, dict[str, float]] = {
    "sd801": {"year": 2014, "top1_pts": 0.1, "latency_pct": -30.0},
    "sd808": {"year": 2015, "top1_pts": 1.3, "latency_pct": -30.0},
    "sd670": {"year": 2018, "top1_pts": 1.4, "latency_pct": -18.0},
    "sd845": {"year": 2018, "top1_pts": 2.7, "latency_pct": 2.0},
}


def _arch(m: dict[str, Any], resolution: int) -> ArchSpec:
    return ArchSpec.from_string(m["train"]["arch_string"]).replace(resolution=resolution)


def build_rows(cfg: PipelineAppConfig, models: dict[str, dict[str, Any]],
               tables: dict[str, LatencyTable]) -> list[dict[str, Any]]:
    """One row per (SoC, model) with the deltas against MobileNetV2 on the same SoC (`tables`: per SoC)."""
    lat_res = cfg.search.latency_resolution
    rows = []
    for soc in cfg.socs:
        table = tables[soc]
        names = [f"spnas-{soc}", *cfg.baselines]
        for name in names:
            m = models.get(name)
            if m is None:
                continue
            res = m["retrieval"]["results"]
            r = res["train"]["fine"]
            ri = (res.get("catalogue") or res["train"])["fine"]
            rows.append({
                "soc": soc, "model": name, "kind": m["kind"],
                "top1": m["train"]["test_top1"],
                "predicted_ms": predict_latency_ms(_arch(m, lat_res), table),
                "table_provenance": table.provenance,
                "measured_cpu_ms": m["export"]["measured_224_ms"],
                "recall@1": r["recall@1"], "recall@1_ci": r["ci95"]["recall@1"], "recall@10": r["recall@10"],
                "mAP@10": r["mAP@10"], "catalogue_recall@1": ri["recall@1"], "catalogue_recall@1_ci": ri["ci95"]["recall@1"],
                "catalogue_mAP@10": ri["mAP@10"],
                "embedder_ms": _embedder_ms(m, table),
                "finetune_top1": (m.get("finetune") or {}).get("test_top1"),
                "params": m["train"]["params"], "macs_224": m["train"]["macs_at_deploy_resolution"],
                "fp32_bytes": m["export"]["fp32_bytes"], "arch": m["train"]["arch_string"],
                **_search_verdict(m),
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


def _embedder_ms(m: dict[str, Any], table: LatencyTable) -> float | None:
    """Predicted latency of the exported embedder (its input size) on a SoC's table: a shopper's query
    on that phone. None when the table cannot price that input size."""
    from latency_tables.predictor import predict_latency_ms as _predict
    from spnas.errors import TableError

    size = m["export"].get("input_size")
    if not size:
        return None
    try:
        return _predict(_arch(m, int(size)), table)
    except TableError:
        return None


def retrieval_comparison(rows: list[dict[str, Any]], models: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per SoC: the winner's photo search against MobileNetV2's on the same queries (paired bootstrap of
    recall@1 on the train-photo and catalogue galleries), and the query latency on that SoC's table."""
    from retrieval.metrics import paired_difference

    out = []
    for r in rows:
        if r["kind"] != "spnas":
            continue
        base = next((b for b in rows if b["soc"] == r["soc"] and b["model"] == BASELINE), None)
        if base is None:
            continue
        rec: dict[str, Any] = {"soc": r["soc"], "winner_embedder_ms": r["embedder_ms"],
                               "mbv2_embedder_ms": base["embedder_ms"]}
        for g in ("train", "catalogue"):
            a = models[r["model"]]["retrieval"]["results"].get(g)
            b = models[BASELINE]["retrieval"]["results"].get(g)
            if a is None or b is None:
                continue
            d = paired_difference(np.asarray(a["fine"]["per_query"]["recall@1"]),
                                  np.asarray(b["fine"]["per_query"]["recall@1"]))
            rec[g] = {"winner_r1": a["fine"]["recall@1"], "winner_ci": a["fine"]["ci95"]["recall@1"],
                      "mbv2_r1": b["fine"]["recall@1"], "mbv2_ci": b["fine"]["ci95"]["recall@1"], **d}
        out.append(rec)
    return out


def _search_verdict(m: dict[str, Any]) -> dict[str, Any]:
    """For a searched model: its budget, whether the search landed on it, and why not."""
    t = (m.get("search") or {}).get("target") or {}
    if m["kind"] != "spnas":
        return {"target_ms": None, "on_target": None, "target_note": ""}
    return {"target_ms": t.get("target_ms"), "on_target": t.get("met"), "target_note": t.get("reason", "")}


def seed_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The seed's layout: per SoC (by generation), winner and MobileNetV2 with our deltas beside the seed's."""
    out = []
    socs = sorted({r["soc"] for r in rows}, key=lambda s: (SEED_DELTAS.get(s, {}).get("year", 9999), s))
    for soc in socs:
        win = next((r for r in rows if r["soc"] == soc and r["kind"] == "spnas"), None)
        base = next((r for r in rows if r["soc"] == soc and r["model"] == BASELINE), None)
        if win is None or base is None:
            continue
        seed = SEED_DELTAS.get(soc)
        out.append({"soc": soc, "year": seed["year"] if seed else None,
                    "winner_top1": win["top1"], "winner_ms": win["predicted_ms"],
                    "mbv2_top1": base["top1"], "mbv2_ms": base["predicted_ms"],
                    "d_top1_pts": win["d_top1_pts"], "d_latency_pct": win["d_latency_pct"],
                    "seed_d_top1_pts": seed["top1_pts"] if seed else None,
                    "seed_d_latency_pct": seed["latency_pct"] if seed else None})
    return out


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


def _pct(v: Any, spec: str) -> str:
    return "n/a" if v is None else _fmt(v, spec) + "%"


def _ci(v: float, ci: list[float] | None) -> str:
    if ci is None:
        return _fmt(v, ".3f")
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def markdown(cfg: PipelineAppConfig, rows: list[dict[str, Any]], head: list[dict[str, Any]], prov: dict[str, Any],
             plots: list[str], ret_cmp: list[dict[str, Any]] | None = None) -> str:
    """report.md."""
    res = cfg.search.latency_resolution
    lines = [f"# spnas report: {cfg.experiment_name}", "",
             f"Data: {prov['data'].get('name')} at {prov['data'].get('resolution')}x{prov['data'].get('resolution')} "
             f"({prov['data'].get('train')} train / {prov['data'].get('val')} val / {prov['data'].get('test')} test images); "
             f"latency at {res}x{res}; photo search on {prov.get('retrieval_split', 'n/a')} (fine labels), every "
             f"model {prov.get('finetune', 'exported as trained')}. "
             f"Every model trained under the same proxy: {prov.get('proxy', 'n/a')}; exported and priced with the "
             f"design strides.", "",
             "## Headline: SPNAS winner vs MobileNetV2 1.0 on each device", ""]
    for h in head:
        verdict = "MET" if h["met"] else "NOT MET"
        why = [] if h["met"] else [w for w, bad in (("not 20% faster", not h["faster_by_20pct"]),
                                                    ("less accurate", not h["top1_at_least_baseline"])) if bad]
        lines.append(f"- **{h['soc']}**: {verdict}{' (' + ' and '.join(why) + ')' if why else ''} — latency "
                     f"{_fmt(h['latency_delta_pct'], '+.1f')}% ({h['latency_basis']}), top-1 "
                     f"{_fmt(h['top1_delta_pts'], '+.2f')} points (target: <= -20% at >= +0.00)"
                     + (f"; photo search R@1 {h['retrieval']['winner_r1']:.3f} vs {h['retrieval']['mbv2_r1']:.3f} "
                        f"({h['retrieval']['difference']:+.3f}, {'differs' if h['retrieval']['differ'] else 'within noise'}"
                        f"), query {_fmt(h['retrieval']['winner_query_ms'], '.1f')} vs "
                        f"{_fmt(h['retrieval']['mbv2_query_ms'], '.1f')} ms" if h.get("retrieval") else ""))
    if ret_cmp:
        lines += ["", "## Photo search: SPNAS winner vs MobileNetV2 on each device", "",
                  "Recall@1 with 95% bootstrap intervals over the same queries; the difference is a paired bootstrap "
                  "(it says whether the two models really differ on this query set). Query latency: the exported "
                  "embedder priced on the SoC's table at its input size.", "",
                  "| SoC | gallery | winner R@1 | MobileNetV2 R@1 | difference [95%] | differ? | winner query ms "
                  "| MobileNetV2 query ms |", "|---|---|---|---|---|---|---|---|"]
        for c in ret_cmp:
            for g in ("train", "catalogue"):
                if g not in c:
                    continue
                d = c[g]
                lines.append(f"| {c['soc']} | {g} | {_ci(d['winner_r1'], d['winner_ci'])} | "
                             f"{_ci(d['mbv2_r1'], d['mbv2_ci'])} | {d['difference']:+.3f} [{d['ci_low']:+.3f}, "
                             f"{d['ci_high']:+.3f}] | {'yes' if d['differ'] else 'no'} | "
                             f"{_fmt(c['winner_embedder_ms'], '.2f')} | {_fmt(c['mbv2_embedder_ms'], '.2f')} |")
    lines += ["", "## Results", "",
              "| SoC | model | top-1 | pred. ms | Δ lat | CPU ms (LiteRT 1T) | Δ CPU | Δ top-1 (pts) | R@1 train [95%] "
              "| R@1 catalogue [95%] | R@10 | mAP@10 | params | MACs (224) | fp32 size |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['soc']} | {r['model']} | {r['top1']:.4f} | {r['predicted_ms']:.2f} | {_fmt(r['d_latency_pct'], '+.1f')}% "
            f"| {_fmt(r['measured_cpu_ms'], '.2f')} | {_fmt(r['d_measured_pct'], '+.1f')}% | {_fmt(r['d_top1_pts'], '+.2f')} "
            f"| {_ci(r['recall@1'], r['recall@1_ci'])} | {_ci(r['catalogue_recall@1'], r['catalogue_recall@1_ci'])} "
            f"| {r['recall@10']:.3f} | {r['mAP@10']:.3f} | {r['params'] / 1e6:.2f} M "
            f"| {r['macs_224'] / 1e6:.0f} M | {r['fp32_bytes'] / 1e6:.2f} MB |")
    lines += ["", "Table-predicted latency uses each SoC's table (modeled tables say so below); CPU ms is the fp32 "
              "classifier converted with litert-torch and measured with the local profiler (p10, 1 thread).", "",
              "## Against the seed's table", "",
              "Per SoC by generation, the winner against MobileNetV2 1.0 on the same table, beside the deltas the "
              "Single-Path NAS paper reports for its own per-device searches (ImageNet, 8-epoch search, full "
              "training). Ours come from this run's proxy and budget, so compare directions, not magnitudes.", "",
              "| SoC (year) | winner top-1 | winner ms | MobileNetV2 top-1 | MobileNetV2 ms | Δ top-1 (pts) | Δ latency "
              "| seed's Δ top-1 | seed's Δ latency |", "|---|---|---|---|---|---|---|---|---|"]
    for t in seed_table(rows):
        lines.append(f"| {t['soc']} ({_fmt(t['year'], 'd')}) | {t['winner_top1']:.4f} | {t['winner_ms']:.2f} "
                     f"| {t['mbv2_top1']:.4f} | {t['mbv2_ms']:.2f} | {_fmt(t['d_top1_pts'], '+.2f')} "
                     f"| {_pct(t['d_latency_pct'], '+.1f')} | {_fmt(t['seed_d_top1_pts'], '+.1f')} "
                     f"| {_pct(t['seed_d_latency_pct'], '+.0f')} |")
    lines += ["", "## Winners and their budgets", ""]
    for r in rows:
        if r["kind"] == "spnas":
            landed = {True: "landed on its budget", False: "MISSED its budget", None: "no budget"}[r["on_target"]]
            budget = f"{r['target_ms']:.2f} ms" if r["target_ms"] else "none"
            lines.append(f"- {r['soc']}: budget {budget}, predicted {r['predicted_ms']:.2f} ms: {landed} "
                         f"({r['target_note']}); `{r['arch']}`")
    lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    lines += ["", "## Provenance", "", "| table | provenance | method | SoC | date |", "|---|---|---|---|---|"]
    for n, t in prov["tables"].items():
        lines.append(f"| {n} | {t['provenance']} | {t.get('method') or t.get('runtime') or ''} | {t.get('soc')} "
                     f"| {t.get('date')} |")
    for soc, info in prov.get("devices", {}).items():
        lines += ["", _device_line(soc, info)] if "skipped" in info or info.get("fingerprint_text") else []
    lines += ["", f"Seed {prov['seed']}. Versions: " + ", ".join(f"{k} {v}" for k, v in prov["versions"].items()), "",
              "| stage | this run | wall time (s) |", "|---|---|---|"]
    for e in prov["stages"]:
        lines.append(f"| {e['stage']} | {e['how']} | {e['wall_s']:.0f} |")
    return "\n".join(lines) + "\n"


def _device_line(soc: str, info: dict[str, Any]) -> str:
    """What `pipeline.prepare_devices` found for one device: why it was left out, or its table's
    fingerprint and spot check."""
    if "skipped" in info:
        return f"**{soc} skipped**: {info['skipped']}"
    line = f"{soc}: table `{info.get('table')}` measured on {info['fingerprint_text']}"
    if info.get("profiled_now"):
        line += " (profiled in this run)"
    chk = info.get("stale_check")
    if chk:
        names = ", ".join(r["name"] for r in chk["rows"])
        line += f"; spot check on this machine: median drift {chk['drift'] * 100:+.1f}% over {names}"
        if chk.get("warning"):
            line += " (WARNING: beyond tolerance)"
    return line


def write_report(run_dir: Path, cfg: PipelineAppConfig, models: dict[str, dict[str, Any]],
                 events: list[dict[str, Any]], devices: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """report.json, report.md, report.csv and the PNGs, from the stage outputs only (`devices`: what
    `pipeline.prepare_devices` found per SoC: the table's fingerprint, its spot check, or why it was skipped)."""
    by_soc = {s: LatencyTable.load(cfg.soc_configs[s].table) for s in cfg.socs}  # read once, used throughout
    rows = build_rows(cfg, models, by_soc)
    head = headline(rows)
    tables = {cfg.soc_configs[s].table: by_soc[s] for s in cfg.socs}
    any_model = next(iter(models.values()))
    prov = {"versions": versions(), "seed": cfg.seed, "stages": events,
            "data": any_model["train"].get("data", {}),
            "proxy": (f"{cfg.data.resolution} px, {cfg.proxy.strides.name} strides (the fewest stride-2 blocks, "
                      f"{cfg.proxy.drop.name} first, trained at stride 1 so every layer sees >= "
                      f"{cfg.proxy.min_map}x{cfg.proxy.min_map})"),
            "proxies": {n: m["train"].get("proxy") for n, m in models.items()},
            "retrieval_queries": next(iter(models.values()))["retrieval"]["results"]["train"]["gallery_size"],
            "retrieval_split": any_model["retrieval"].get("split", "n/a"),
            "finetune": (f"fine-tuned as a {cfg.finetune.embedding_dim}-d embedder ({cfg.finetune.loss.name}, "
                         f"{cfg.finetune.recipe.epochs} epochs at {cfg.finetune.resolution} px) on its train split"
                         if cfg.finetune.enabled else "exported as trained on the proxy (no fine-tuning)"),
            "tables": {n: {"provenance": t.provenance, "soc": t.meta.get("soc"), "date": t.meta.get("date"),
                           "runtime": t.meta.get("runtime"), "method": (t.meta.get("method") or {}).get("name")}
                       for n, t in tables.items()},
            "devices": devices or {}}
    plots = make_plots(run_dir, cfg, models, rows, by_soc)
    ret_cmp = retrieval_comparison(rows, models)
    for h in head:  # the headline gains the photo-search comparison on the same device
        c = next((c for c in ret_cmp if c["soc"] == h["soc"]), None)
        if c and "train" in c:
            h["retrieval"] = {"gallery": "train", "winner_r1": c["train"]["winner_r1"], "mbv2_r1": c["train"]["mbv2_r1"],
                              "difference": c["train"]["difference"], "ci": [c["train"]["ci_low"], c["train"]["ci_high"]],
                              "differ": c["train"]["differ"], "winner_query_ms": c["winner_embedder_ms"],
                              "mbv2_query_ms": c["mbv2_embedder_ms"]}
    report = {"experiment": cfg.experiment_name, "rows": rows, "headline": head, "seed_table": seed_table(rows),
              "retrieval_comparison": ret_cmp,
              "provenance": prov,
              "plots": plots, "winners": {n: m["train"]["arch_string"] for n, m in models.items() if m["kind"] == "spnas"}}
    write_json_atomic(run_dir / "report.json", report)
    write_bytes_atomic(run_dir / "report.md", markdown(cfg, rows, head, prov, plots, ret_cmp).encode())
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0].keys()) if rows else ["soc"])
    w.writeheader()
    w.writerows(rows)
    write_bytes_atomic(run_dir / "report.csv", buf.getvalue().encode())
    return report


def make_plots(run_dir: Path, cfg: PipelineAppConfig, models: dict[str, dict[str, Any]],
               rows: list[dict[str, Any]], tables: dict[str, LatencyTable]) -> list[str]:
    """accuracy_vs_latency.png, winner_decisions.png, latency_breakdown.png (`tables`: per SoC)."""
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
        table = tables[soc]
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
