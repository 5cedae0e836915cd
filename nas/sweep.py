"""`spnas-sweep`: an Optuna multi-objective study over lambda or the target latency, per SoC.

    spnas-sweep soc=sd845 sweep.param=latency_lambda sweep.low=0.005 sweep.high=0.2 sweep.n_trials=8
    spnas-sweep soc=sd808 sweep.param=target_ms sweep.low=80 sweep.high=160 sweep.storage=postgresql://...

Objectives: accuracy (maximize; the retrained derived net's val top-1, or the supernet's when
`sweep.retrain_epochs=0`) and the table-predicted latency (minimize). Each trial is the sweep's search
config with the trial's parameter set, run in `trials/<number>/`. The study lives
in SQLite by default; any Optuna RDB URL works, so several machines can share one study, and a
re-run continues it. The Pareto front is written as CSV and PNG.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from search_spaces import build_model
from spnas.config import SearchAppConfig, SweepAppConfig, SweepParam
from spnas.files import write_bytes_atomic, write_json_atomic
from training.datasets import DataBundle, load_data
from training.loop import fit, resolve_arch

from .search import run_search

log = logging.getLogger(__name__)


def trial_config(cfg: SweepAppConfig, value: float, run_dir: Path) -> SearchAppConfig:
    """The search config of one trial: the sweep's search settings with the trial's parameter set."""
    sw = cfg.sweep
    if sw.param is SweepParam.latency_lambda:
        search = replace(cfg.search, latency_lambda=value)
    else:
        search = replace(cfg.search, target_ms=value, target_fraction_of=None, loss=sw.target_loss,
                         latency_lambda=sw.target_lambda)
    return SearchAppConfig(seed=cfg.seed, threads=cfg.threads, soc=cfg.soc, space=cfg.space, data=cfg.data,
                           search=search, resume=(run_dir / "last.pt").exists(), run_dir=str(run_dir))


def _objective(cfg: SweepAppConfig, data: DataBundle, run_dir: Path):
    sw = cfg.sweep

    def objective(trial: Any) -> tuple[float, float]:
        if sw.param is SweepParam.latency_lambda:
            v = trial.suggest_float(sw.param.name, sw.low, sw.high, log=True)
        else:
            v = trial.suggest_float(sw.param.name, sw.low, sw.high)
        tdir = run_dir / "trials" / f"{trial.number:03d}"
        s = run_search(trial_config(cfg, v, tdir), data=data)
        acc = float(s["val_top1"])
        if sw.retrain_epochs > 0:
            arch = resolve_arch(tdir / "arch.json", data.num_classes, data.resolution)
            rtrain = replace(cfg.train, epochs=sw.retrain_epochs)
            r = fit(build_model(arch, rtrain.dropout), data, rtrain, tdir / "retrain", seed=cfg.seed, resume=True,
                    desc=f"retrain trial {trial.number}")
            acc = float(r["history"][-1]["val_top1"])
        trial.set_user_attr("arch", s["arch_string"])
        trial.set_user_attr("choices", s["choices"])
        trial.set_user_attr("run_dir", str(tdir))
        return acc, float(s["predicted_ms"])

    return objective


def run_sweep(cfg: SweepAppConfig) -> dict[str, Any]:
    """Run (or continue) the study; write pareto.csv, pareto.png and sweep_summary.json."""
    import optuna

    sw = cfg.sweep
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    storage = sw.storage or f"sqlite:///{(run_dir / 'study.db').resolve()}"
    soc = cfg.soc.name
    param = sw.param.name
    name = sw.study_name or f"spnas-{soc}-{param}"
    sampler = optuna.samplers.NSGAIISampler(seed=cfg.seed, population_size=max(2, sw.population))
    study = optuna.create_study(study_name=name, storage=storage, directions=["maximize", "minimize"],
                                load_if_exists=True, sampler=sampler)
    data = load_data(cfg.data, cfg.seed)  # decoded once, shared by every trial
    remaining = sw.n_trials - len([t for t in study.trials if t.state.is_finished()])
    if remaining > 0:
        study.optimize(_objective(cfg, data, run_dir), n_trials=remaining, catch=())
    rows = []
    pareto_numbers = {t.number for t in study.best_trials}
    for t in study.trials:
        if t.state != optuna.trial.TrialState.COMPLETE:
            continue
        rows.append({"trial": t.number, param: t.params[param], "accuracy": t.values[0], "predicted_ms": t.values[1],
                     "pareto": t.number in pareto_numbers, "arch": t.user_attrs.get("arch", "")})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["trial", param, "accuracy", "predicted_ms", "pareto", "arch"])
    w.writeheader()
    w.writerows(sorted(rows, key=lambda r: r["predicted_ms"]))
    write_bytes_atomic(run_dir / "pareto.csv", buf.getvalue().encode())
    png = plot_pareto(rows, run_dir / "pareto.png", f"{soc}: accuracy vs predicted latency ({param} sweep)")
    summary = {"study": name, "storage": storage, "soc": soc, "param": param, "trials": rows,
               "pareto": [r for r in rows if r["pareto"]], "csv": str(run_dir / "pareto.csv"), "png": str(png)}
    write_json_atomic(run_dir / "sweep_summary.json", summary)
    return summary


def plot_pareto(rows: list[dict[str, Any]], path: Path, title: str,
                baselines: dict[str, tuple[float, float]] | None = None) -> Path:
    """All trials, the Pareto front joined up, and optional baselines (name -> (ms, accuracy))."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    if rows:
        ax.scatter([r["predicted_ms"] for r in rows], [r["accuracy"] for r in rows], c="0.6", s=18, label="trials")
        front = sorted((r for r in rows if r["pareto"]), key=lambda r: r["predicted_ms"])
        ax.plot([r["predicted_ms"] for r in front], [r["accuracy"] for r in front], "o-", c="tab:red",
                label="Pareto front")
    for name, (ms, acc) in (baselines or {}).items():
        ax.scatter([ms], [acc], marker="*", s=120, label=name)
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
