"""The report's PNGs: accuracy against latency with intervals (random controls as a cloud, each reference
family as a curve over widths), learning curves, each winner's decisions, per-layer latency."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from latency_tables.predictor import latency_breakdown
from latency_tables.table import LatencyTable
from search_spaces import ArchSpec, SearchSpace
from spnas.app.config import PipelineAppConfig

FLEET = "fleet"
KIND_STYLE = {"spnas": {"marker": "*", "ms": 13, "color": "tab:red"}, "random": {"marker": "o", "ms": 5, "color": "0.55"},
              "baseline": {"marker": "s", "ms": 6, "color": "tab:blue"}}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def make_plots(run_dir: Path, cfg: PipelineAppConfig, models: dict[str, Any], rows: list[dict[str, Any]],
               tables: dict[str, LatencyTable]) -> list[str]:
    """accuracy_vs_latency.png, learning_curves.png, winner_decisions.png, latency_breakdown.png."""
    return [str(p) for p in (accuracy_vs_latency(run_dir, cfg, rows), learning_curves(run_dir, models, rows),
                             winner_decisions(run_dir, cfg, rows), latency_bars(run_dir, cfg, rows, tables)) if p]


def _err(st: dict[str, Any] | None) -> tuple[float, list[list[float]]] | None:
    if not st or st.get("mean") is None:
        return None
    lo = st["mean"] - st["ci_low"] if st.get("ci_low") is not None else 0.0
    hi = st["ci_high"] - st["mean"] if st.get("ci_high") is not None else 0.0
    return st["mean"], [[lo], [hi]]


def accuracy_vs_latency(run_dir: Path, cfg: PipelineAppConfig, rows: list[dict[str, Any]]) -> Path:
    """One panel per winner: every model at its cost on that winner's table, mean top-1 with its interval."""
    plt = _plt()
    winners = [r for r in rows if r["kind"] == "spnas"]
    fig, axes = plt.subplots(1, len(winners), figsize=(4.2 * len(winners), 3.6), squeeze=False)
    for ax, w in zip(axes[0], winners):
        cost = (lambda r: r["fleet_cost"]) if w["soc"] == FLEET else (lambda r, s=w["soc"]: r["latency_ms"].get(s))
        for r in rows:
            e, x = _err(r["stats"].get("top1")), cost(r)
            if e is None or x is None or r["kind"] in ("scaled", "family"):
                continue
            if r["kind"] == "spnas" and r is not w:
                continue
            style = KIND_STYLE.get(r["kind"], KIND_STYLE["baseline"])
            ax.errorbar(x, e[0], yerr=e[1], fmt=style["marker"], ms=style["ms"], color=style["color"], capsize=2,
                        label=r["model"] if r["kind"] != "random" else None)
        _families(ax, rows, cfg.baselines, cost)
        _sweeps(ax, cfg, w["soc"])
        ax.set_title(f"{w['model']}: random nets (grey) and reference families at its latency", fontsize=8)
        ax.set_xlabel("fleet cost (x budget)" if w["soc"] == FLEET else f"predicted ms on {w['soc']}", fontsize=8)
        ax.set_ylabel("proxy test top-1 (mean, 95% interval over seeds)" if any(
            (r["stats"].get("top1") or {}).get("ci_low") is not None for r in rows)
            else "proxy test top-1 (one seed: no interval drawn)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    fig.tight_layout()
    p = run_dir / "accuracy_vs_latency.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def _families(ax: Any, rows: list[dict[str, Any]], baselines: list[str], cost: Any) -> None:
    """Each reference net over its widths (1.0, scaled to winners, extra widths) as a curve."""
    for b in baselines:
        pts = []
        for r in rows:
            e = _err(r["stats"].get("top1"))
            if e is None or cost(r) is None or r["arch"] is None:
                continue
            if r["model"] == b or (r["kind"] in ("scaled", "family") and r["model"].startswith(f"{b}-w")):
                pts.append((cost(r), e[0], e[1], ArchSpec.from_string(r["arch"]).width))
        if len(pts) < 2:
            continue
        pts.sort()
        line = ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[[p[2][0][0] for p in pts],
                           [p[2][1][0] for p in pts]], fmt="--s", ms=4, capsize=2, label=f"{b} over widths")
        for x, y, _, wd in pts:
            ax.annotate(f"w{wd:g}", (x, y), fontsize=6, xytext=(3, -8), textcoords="offset points",
                        color=line[0].get_color())


def _sweeps(ax: Any, cfg: PipelineAppConfig, soc: str) -> None:
    """A spnas-sweep's Pareto front for this SoC, when one was run."""
    for pareto in sorted(Path(cfg.report.sweeps).glob(f"{soc}-*/pareto.csv")):
        with open(pareto) as f:
            pts = sorted((float(d["predicted_ms"]), float(d["accuracy"])) for d in csv.DictReader(f)
                         if d.get("pareto") == "True")
        if pts:
            ax.plot(*zip(*pts), ":", c="0.4", label=f"sweep Pareto front ({pareto.parent.name})")


def learning_curves(run_dir: Path, models: dict[str, Any], rows: list[dict[str, Any]]) -> Path:
    """Validation top-1 against training steps, every model (mean over seeds): is the budget still rising?"""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in rows:
        curves = [rec["train"].get("curve") or [] for rec in models[r["model"]].seeds.values() if rec.get("train")]
        curves = [c for c in curves if c]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        steps = [curves[0][i]["step"] for i in range(n)]
        mean = [sum(c[i]["val_top1"] for c in curves) / len(curves) for i in range(n)]
        grey = KIND_STYLE["random"]["color"] if r["kind"] == "random" else None  # every other model its own colour
        ax.plot(steps, mean, "-", lw=1.6 if r["kind"] == "spnas" else 0.9, color=grey,
                label=r["model"] if r["kind"] != "random" else None, alpha=0.6 if r["kind"] == "random" else 1)
    ax.axvspan(0.75 * max((c["step"] for r in rows for rec in models[r["model"]].seeds.values()
                           for c in (rec.get("train") or {}).get("curve") or [] if c.get("step")), default=1),
               ax.get_xlim()[1], color="0.92", zorder=-1, label="last quarter")
    ax.set_xlabel("optimisation step", fontsize=8)
    ax.set_ylabel("validation top-1 (mean over seeds)", fontsize=8)
    ax.set_title("learning curves: random controls in grey", fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    p = run_dir / "learning_curves.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def winner_decisions(run_dir: Path, cfg: PipelineAppConfig, rows: list[dict[str, Any]]) -> Path | None:
    """Per-layer decisions of each winner."""
    from nas.plots import choice_cmap, choice_index
    from search_spaces.space import CHOICE_ORDER

    plt = _plt()
    space = SearchSpace.from_config(cfg.space)
    winners = [r for r in rows if r["kind"] == "spnas" and r["arch"]]
    if not winners:
        return None
    grid = [space.encode(ArchSpec.from_string(w["arch"])) for w in winners]
    fig, ax = plt.subplots(figsize=(0.55 * space.num_layers + 2, 0.5 * len(winners) + 1.2))
    ax.imshow([[choice_index(c) for c in g] for g in grid], cmap=choice_cmap(), vmin=-0.5,
              vmax=len(CHOICE_ORDER) - 0.5, aspect="auto")
    for i, g in enumerate(grid):
        for j, c in enumerate(g):
            ax.text(j, i, c.replace("_", "\n"), ha="center", va="center", fontsize=6)
    ax.set_yticks(range(len(winners)), [w["soc"] for w in winners])
    ax.set_xticks(range(space.num_layers), [f"L{i}" for i in range(space.num_layers)], fontsize=7)
    ax.set_title("per-layer decisions of each winner", fontsize=9)
    fig.tight_layout()
    p = run_dir / "winner_decisions.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def latency_bars(run_dir: Path, cfg: PipelineAppConfig, rows: list[dict[str, Any]],
                 tables: dict[str, LatencyTable]) -> Path:
    """Per SoC: the winner's, its scaled baselines' and the baselines' per-layer latency on that table."""
    plt = _plt()
    socs = list(tables)
    fig, axes = plt.subplots(len(socs), 1, figsize=(9, 1.7 * len(socs) + 0.6), squeeze=False)
    res = cfg.search.latency_resolution
    for ax, soc in zip(axes[:, 0], socs):
        show = [r for r in rows if r["arch"] and (r["kind"] == "baseline" or r["soc"] == soc and r["kind"] in
                                                  ("spnas", "scaled"))]
        for yi, r in enumerate(show):
            left = 0.0
            for k, op in enumerate(latency_breakdown(ArchSpec.from_string(r["arch"]).replace(resolution=res),
                                                     tables[soc])):
                ax.barh(yi, op["ms"], left=left, color=plt.cm.tab20(k % 20), edgecolor="white", linewidth=0.3)
                left += op["ms"]
            ax.text(left, yi, f" {left:.1f} ms", va="center", fontsize=7)
        ax.set_yticks(range(len(show)), [r["model"] for r in show], fontsize=7)
        ax.set_title(f"{soc}: per-layer latency ({tables[soc].provenance} table)", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    axes[-1, 0].set_xlabel("ms (each segment one layer, network order)", fontsize=8)
    fig.tight_layout()
    p = run_dir / "latency_breakdown.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p
