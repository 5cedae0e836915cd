"""The report's PNGs: accuracy against latency with intervals (one panel per winner: its own random
controls as a cloud, its search repeats, each reference family as a curve over widths), learning curves
with the window the budget check reads shaded, each winner's decisions, per-layer latency."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from latency_tables.lookup.predictor import latency_breakdown
from latency_tables.lookup.table import LatencyTable
from search_spaces import ArchSpec, SearchSpace
from spnas.app.pipeline.config import PipelineAppConfig

FLEET = "fleet"
KIND_STYLE = {"spnas": {"marker": "*", "ms": 13, "color": "tab:red"}, "random": {"marker": "o", "ms": 5, "color": "0.55"},
              "repeat": {"marker": "*", "ms": 9, "color": "tab:orange"},
              "scaled": {"marker": "D", "ms": 6, "color": "tab:purple"},
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


def panel_rows(rows: list[dict[str, Any]], w: dict[str, Any]) -> list[dict[str, Any]]:
    """The models one winner's panel draws as points: the winner, its search repeats, its own random
    controls and width-scaled nets, and the reference nets (never another winner's controls)."""
    def mine(r: dict[str, Any]) -> bool:
        return any(w["model"] in role for role in r["roles"])

    return [r for r in rows if r is w or (r["kind"] == "repeat" and r["soc"] == w["soc"])
            or (r["kind"] in ("random", "scaled") and mine(r)) or r["kind"] == "baseline"]


def draw_panel(ax: Any, cfg: PipelineAppConfig, rows: list[dict[str, Any]], w: dict[str, Any]) -> None:
    """One winner's panel: `panel_rows` at their cost on the winner's table (or fleet cost), mean top-1
    with its interval; the random nets as one legend entry; each reference family as a curve."""
    cost = (lambda r: r["fleet_cost"]) if w["soc"] == FLEET else (lambda r, s=w["soc"]: r["latency_ms"].get(s))
    shown = panel_rows(rows, w)
    n_random, labelled = sum(r["kind"] == "random" for r in shown), False
    for r in shown:
        e, x = _err(r["stats"].get("top1")), cost(r)
        if e is None or x is None:
            continue
        style = KIND_STYLE.get(r["kind"], KIND_STYLE["baseline"])
        label = r["model"]
        if r["kind"] == "random":
            label = None if labelled else f"its random nets at its latency (n={n_random})"
            labelled = True
        elif r["kind"] == "repeat":
            label = f"{r['model']} (search seed {r['record'].get('search_seed')})"
        ax.errorbar(x, e[0], yerr=e[1], fmt=style["marker"], ms=style["ms"], color=style["color"], capsize=2,
                    label=label)
    _families(ax, rows, cfg.baselines, cost)
    _sweeps(ax, cfg, w["soc"])
    ax.set_title(w["model"], fontsize=9)
    ax.set_xlabel("fleet cost (x budget)" if w["soc"] == FLEET else f"predicted ms on {w['soc']}", fontsize=8)
    ax.set_ylabel("proxy test top-1", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6)


def accuracy_vs_latency(run_dir: Path, cfg: PipelineAppConfig, rows: list[dict[str, Any]]) -> Path:
    """One panel per winner (`draw_panel`): its models at their cost on that winner's table."""
    plt = _plt()
    winners = [r for r in rows if r["kind"] == "spnas"]
    fig, axes = plt.subplots(1, len(winners), figsize=(5.0 * len(winners), 4.0), squeeze=False)
    for ax, w in zip(axes[0], winners):
        draw_panel(ax, cfg, rows, w)
    fig.suptitle("Each winner, its own random controls and width-scaled nets, and the reference families at its "
                 "latency\n(mean proxy top-1 with its 95% interval over seeds and test images; none for one seed)",
                 fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
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
    n_random, labelled = sum(r["kind"] == "random" for r in rows), False
    for r in rows:
        curves = [rec["train"].get("curve") or [] for rec in models[r["model"]].seeds.values() if rec.get("train")]
        curves = [c for c in curves if c]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        steps = [curves[0][i]["step"] for i in range(n)]
        mean = [sum(c[i]["val_top1"] for c in curves) / len(curves) for i in range(n)]
        style = KIND_STYLE.get(r["kind"], {"color": None})
        label = r["model"]
        if r["kind"] == "random":  # one legend entry for the random controls
            label = None if labelled else f"random controls (n={n_random})"
            labelled = True
        ax.plot(steps, mean, "-", lw=1.6 if r["kind"] == "spnas" else 0.9, color=style["color"],
                label=label, alpha=0.6 if r["kind"] == "random" else 1)
    window = check_window(models, rows)
    if window:
        ax.axvspan(window[0], window[1], color="0.92", zorder=-1, label="window the budget check reads")
    ax.set_xlabel("optimisation step", fontsize=8)
    ax.set_ylabel("validation top-1 (mean over seeds)", fontsize=8)
    ax.set_title("learning curves: random controls in grey", fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    p = run_dir / "learning_curves.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def check_window(models: dict[str, Any], rows: list[dict[str, Any]]) -> tuple[float, float] | None:
    """The steps the budget check measures the rise between (`evidence.rise_window`), over every curve:
    the earliest start and latest end (one window when, as in a run, every model trains the same steps)."""
    from spnas.app.pipeline.evidence import rise_window

    wins = [rise_window((rec.get("train") or {}).get("curve") or []) for r in rows
            for rec in models[r["model"]].seeds.values()]
    wins = [w for w in wins if w]
    return (min(w[0] for w in wins), max(w[1] for w in wins)) if wins else None


def winner_decisions(run_dir: Path, cfg: PipelineAppConfig, rows: list[dict[str, Any]]) -> Path | None:
    """Per-layer decisions of each winner."""
    from nas.plots import choice_cmap, choice_index
    from search_spaces.space import CHOICE_ORDER

    plt = _plt()
    space = SearchSpace.from_config(cfg.space)
    winners = [r for r in rows if r["kind"] in ("spnas", "repeat") and r["arch"]]
    if not winners:
        return None
    grid = [space.encode(ArchSpec.from_string(w["arch"])) for w in winners]
    fig, ax = plt.subplots(figsize=(0.55 * space.num_layers + 2, 0.5 * len(winners) + 1.2))
    ax.imshow([[choice_index(c) for c in g] for g in grid], cmap=choice_cmap(), vmin=-0.5,
              vmax=len(CHOICE_ORDER) - 0.5, aspect="auto")
    for i, g in enumerate(grid):
        for j, c in enumerate(g):
            ax.text(j, i, c.replace("_", "\n"), ha="center", va="center", fontsize=6)
    ax.set_yticks(range(len(winners)), [w["soc"] + ("" if w["kind"] == "spnas" else
                                                    f" (seed {w['record'].get('search_seed')})") for w in winners])
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
