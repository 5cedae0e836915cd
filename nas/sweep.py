"""`spnas-sweep`: an Optuna multi-objective study over lambda or the target latency, per SoC.

    spnas-sweep soc=sd845 sweep.param=lambda sweep.low=0.005 sweep.high=0.2 sweep.n_trials=8
    spnas-sweep soc=sd808 sweep.param=target_ms sweep.low=80 sweep.high=160 sweep.storage=postgresql://...

Objectives: accuracy (maximize; the retrained derived net's val top-1, or the supernet's when
`sweep.retrain_epochs=0`) and the table-predicted latency (minimize). Each trial is a Hydra-composed
search (the sweep's own overrides plus the trial's parameter) in `trials/<number>/`. The study lives
in SQLite by default; any Optuna RDB URL works, so several machines can share one study, and a
re-run continues it. The Pareto front is written as CSV and PNG.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

from .data import load_data
from .runtime import atomic_write_json

log = logging.getLogger(__name__)


def _trial_cfg(base_overrides: list[str], trial_overrides: list[str]) -> dict[str, Any]:
    """Compose the `search` config with the sweep's overrides plus the trial's (Hydra compose API)."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    if not GlobalHydra.instance().is_initialized():
        from hydra import initialize_config_dir

        from .cli import CONFIG_DIR

        with initialize_config_dir(CONFIG_DIR, version_base=None):
            cfg = compose("search", overrides=base_overrides + trial_overrides)
    else:
        cfg = compose("search", overrides=base_overrides + trial_overrides)
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def sweep(cfg: dict[str, Any], search_overrides: list[str] | None = None) -> dict[str, Any]:
    """Run (or continue) the study; write pareto.csv, pareto.png and sweep_summary.json."""
    import optuna

    from .search import search
    from .train import resolve_arch, fit
    from search_spaces import build_model

    scfg = dict(cfg["sweep"])
    run_dir = Path(cfg["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    storage = scfg.get("storage") or f"sqlite:///{(run_dir / 'study.db').resolve()}"
    soc = cfg["soc"]["name"]
    name = scfg.get("study_name") or f"spnas-{soc}-{scfg['param']}"
    sampler = optuna.samplers.NSGAIISampler(seed=int(cfg.get("seed", 0)),
                                            population_size=max(2, int(scfg.get("population", 4))))
    study = optuna.create_study(study_name=name, storage=storage, directions=["maximize", "minimize"],
                                load_if_exists=True, sampler=sampler)
    data_cfg = dict(cfg["data"])
    data_cfg.setdefault("seed", int(cfg.get("seed", 0)))
    data = load_data(data_cfg)  # decoded once, shared by every trial
    param = scfg["param"]
    if param not in ("lambda", "target_ms"):
        raise ValueError(f"sweep.param must be 'lambda' or 'target_ms', got '{param}'")
    base = list(search_overrides or [])

    def objective(trial: "optuna.Trial") -> tuple[float, float]:
        if param == "lambda":
            v = trial.suggest_float("lambda", float(scfg["low"]), float(scfg["high"]), log=True)
            extra = [f"search.lambda={v}"]
        else:
            v = trial.suggest_float("target_ms", float(scfg["low"]), float(scfg["high"]))
            extra = [f"search.target_ms={v}", f"search.loss={scfg.get('target_loss', 'target')}",
                     f"search.lambda={scfg.get('target_lambda', 0.5)}"]
        tdir = run_dir / "trials" / f"{trial.number:03d}"
        tcfg = _trial_cfg(base, extra + [f"run_dir={tdir}", f"resume={'true' if (tdir / 'last.pt').exists() else 'false'}"])
        s = search(tcfg, data=data)
        acc = float(s["val_top1"])
        if int(scfg.get("retrain_epochs", 0)) > 0:
            arch = resolve_arch(tdir / "arch.json", data.num_classes, data.resolution)
            rtrain = {**dict(cfg["train"]), "epochs": int(scfg["retrain_epochs"])}
            r = fit(build_model(arch, float(rtrain.get("dropout", 0.2))), data, rtrain, tdir / "retrain",
                    seed=int(cfg.get("seed", 0)), resume=True, desc=f"retrain trial {trial.number}")
            acc = float(r["history"][-1]["val_top1"])
        trial.set_user_attr("arch", s["arch_string"])
        trial.set_user_attr("choices", s["choices"])
        trial.set_user_attr("run_dir", str(tdir))
        return acc, float(s["predicted_ms"])

    remaining = int(scfg["n_trials"]) - len([t for t in study.trials if t.state.is_finished()])
    if remaining > 0:
        study.optimize(objective, n_trials=remaining, catch=())
    rows = []
    pareto_numbers = {t.number for t in study.best_trials}
    for t in study.trials:
        if t.state != optuna.trial.TrialState.COMPLETE:
            continue
        rows.append({"trial": t.number, param: t.params[param], "accuracy": t.values[0], "predicted_ms": t.values[1],
                     "pareto": t.number in pareto_numbers, "arch": t.user_attrs.get("arch", "")})
    with open(run_dir / "pareto.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["trial", param, "accuracy", "predicted_ms", "pareto", "arch"])
        w.writeheader()
        w.writerows(sorted(rows, key=lambda r: r["predicted_ms"]))
    png = plot_pareto(rows, run_dir / "pareto.png", f"{soc}: accuracy vs predicted latency ({param} sweep)")
    summary = {"study": name, "storage": storage, "soc": soc, "param": param, "trials": rows,
               "pareto": [r for r in rows if r["pareto"]], "csv": str(run_dir / "pareto.csv"), "png": str(png)}
    atomic_write_json(run_dir / "sweep_summary.json", summary)
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
