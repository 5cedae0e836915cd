"""`spnas-sweep`: an Optuna multi-objective study over lambda or the target latency, per SoC.

    spnas-sweep soc=sd845 sweep.param=latency_lambda sweep.low=0.005 sweep.high=0.2 sweep.n_trials=8
    spnas-sweep soc=sd808 sweep.param=target_ms sweep.low=80 sweep.high=160 sweep.storage=postgresql://...

Objectives: accuracy (maximize; the retrained derived net's val top-1, or the supernet's when
`sweep.retrain_epochs=0`) and the table-predicted latency (minimize). Each trial is the sweep's search
config with the trial's parameter set, run in `trials/<number>/`. The Pareto front is written as
CSV and PNG.

Sharing one study across processes and machines: the study lives in SQLite by default
(`<run_dir>/study.db`); `sweep.storage=postgresql://user:password@host:5432/db` puts it in PostgreSQL
(driver: psycopg 3), and every `spnas-sweep` started with that URL and the same study name is one
more worker. The workers together run `sweep.n_trials` trials, not that many each: a worker claims a
trial slot under a lock held in the database itself (`pg_advisory_lock`; a file lock for SQLite), so
no two workers start the last trial twice. A running trial beats every `sweep.heartbeat_s`; a worker
that dies (killed, machine gone) stops beating, and after `sweep.grace_s` its trial is marked failed
and re-queued with the same parameter (Optuna's RetryHeartbeatStaleTrialCallback) for any live worker, which
resumes it from the dead worker's checkpoint when it can see the trial folder. Workers whose slots are
all taken wait for the running trials to finish (or die and come back as retries) before exiting.
A re-run continues the study.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import logging
import os
import socket
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from latency_tables.lookup.table import LatencyTable
from nas.config import SearchConfig, SweepConfig, SweepParam
from search_spaces import SearchSpace, build_model
from search_spaces.config import ProxyConfig
from search_spaces.proxy import Proxy
from spnas_core.errors import InputError
from spnas_core.files import write_bytes_atomic, write_json_atomic
from training.config import DataConfig, Runtime, TrainConfig
from training.datasets import DataBundle, load_data
from training.devices import resolve_compute
from training.loop import fit, resolve_arch

from .search import run_search

log = logging.getLogger(__name__)


def trial_search(sweep: SweepConfig, search: SearchConfig, value: float) -> SearchConfig:
    """The search settings of one trial: the sweep's search settings with the trial's parameter set."""
    if sweep.param is SweepParam.latency_lambda:
        return replace(search, latency_lambda=value)
    return replace(search, target_ms=value, target_fraction_of=None, loss=sweep.target_loss,
                   latency_lambda=sweep.target_lambda)


@dataclass(frozen=True)
class SweepJob:
    """What every trial shares: the sweep, the search and retrain settings, the space, the device's table
    and name, the training geometry, the seed and the runtime."""

    sweep: SweepConfig
    search: SearchConfig
    train: TrainConfig
    space: SearchSpace
    table: LatencyTable
    name: str
    proxy: ProxyConfig
    seed: int
    runtime: Runtime


def worker_id() -> str:
    """Which process ran a trial (host:pid), recorded on the trial."""
    return f"{socket.gethostname()}:{os.getpid()}"


def trial_dir(run_dir: Path, trial: Any) -> Path:
    """A trial's folder; a retry of a trial whose worker died reuses the dead trial's folder, so its
    search resumes from the last checkpoint instead of starting over."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        first = RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
    return run_dir / "trials" / f"{(trial.number if first is None else first):03d}"


def _objective(job: SweepJob, data: DataBundle, run_dir: Path, on_start: Callable[[], None] = lambda: None):
    sw = job.sweep

    def objective(trial: Any) -> tuple[float, float]:
        on_start()  # the trial exists and runs: the next worker may claim a slot
        trial.set_user_attr("worker", worker_id())
        if sw.param is SweepParam.latency_lambda:
            v = trial.suggest_float(sw.param.name, sw.low, sw.high, log=True)
        else:
            v = trial.suggest_float(sw.param.name, sw.low, sw.high)
        tdir = trial_dir(run_dir, trial)
        s = run_search(trial_search(sw, job.search, v), job.space, job.table, data, tdir, proxy=job.proxy,
                       name=job.name, seed=job.seed, resume=(tdir / "last.pt").exists(), runtime=job.runtime)
        acc = float(s["val_top1"])
        if sw.retrain_epochs > 0:
            arch = resolve_arch(tdir / "arch.json", data.num_classes, data.resolution)
            proxy = Proxy.from_dict(s["proxy"])  # the trial's search proxy: every trial retrains the same way
            rtrain = replace(job.train, epochs=sw.retrain_epochs)
            r = fit(build_model(proxy.apply(arch), rtrain.dropout), data, rtrain, tdir / "retrain", seed=job.seed,
                    resume=True, desc=f"retrain trial {trial.number}",
                    compute=resolve_compute(job.runtime.device, job.runtime.amp, channels_last=rtrain.channels_last))
            acc = float(r["history"][-1]["val_top1"])
        trial.set_user_attr("arch", s["arch_string"])
        trial.set_user_attr("choices", s["choices"])
        trial.set_user_attr("run_dir", str(tdir))
        return acc, float(s["predicted_ms"])

    return objective


def storage_url(url: str) -> str:
    """A storage URL as SQLAlchemy needs it: bare `postgresql://` means psycopg 3 (the driver installed)."""
    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare):
            return "postgresql+psycopg://" + url[len(bare):]
    return url


def _shown(url: str) -> str:
    """The URL with its password hidden (for logs and summaries)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def open_storage(sw: SweepConfig, url: str) -> Any:
    """Optuna's RDB storage with heartbeats and the retry callback, or a clear error naming the URL."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    grace = sw.grace_s or 2 * sw.heartbeat_s
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(url, heartbeat_interval=sw.heartbeat_s, grace_period=grace,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=sw.max_retry),
                              engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else None)
    except Exception as e:  # SQLAlchemy / driver errors: unreachable server, bad credentials, missing db
        raise storage_error(url, e) from None


def storage_error(url: str, e: BaseException) -> InputError:
    """One line for a storage that cannot be reached or used, saying what to check."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return InputError(f"cannot open the study storage {_shown(url)}: {first}. Check that the server is up and "
                      f"the URL is postgresql://user:password@host:port/database (the database must exist: "
                      f"createdb <name>)")


class SlotLock:
    """Serialises "count the trials, then start one" across every worker of a study.

    PostgreSQL: a session-level advisory lock keyed by the study name, held by one connection of the
    database every worker already talks to. SQLite: an exclusive lock on `<db>.lock` beside the file.
    Other databases: no lock (the trial count may be overshot by at most one per extra worker)."""

    def __init__(self, url: str, study_name: str) -> None:
        self.url, self.key = url, int.from_bytes(hashlib.sha256(study_name.encode()).digest()[:8], "big", signed=True)
        self._conn: Any = None
        self._file: Any = None
        self._engine: Any = None
        if url.startswith("postgresql"):
            from sqlalchemy import create_engine
            from sqlalchemy.pool import NullPool

            self._engine = create_engine(url, poolclass=NullPool)
        elif not url.startswith("sqlite"):
            log.warning("sweep: no cross-worker lock for %s; concurrent workers may run a trial more than asked",
                        _shown(url))

    def acquire(self) -> None:
        if self._engine is not None:
            from sqlalchemy import text

            try:
                self._conn = self._engine.connect()
            except Exception as e:
                raise storage_error(self.url, e) from None
            self._conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
        elif self.url.startswith("sqlite:///"):
            import fcntl

            self._file = open(self.url[len("sqlite:///"):] + ".lock", "a+")
            fcntl.flock(self._file, fcntl.LOCK_EX)

    def release(self) -> None:
        """Idempotent: the objective releases as soon as its trial runs, the loop again after."""
        if self._conn is not None:
            from sqlalchemy import text

            with contextlib.suppress(Exception):
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        if self._file is not None:
            import fcntl

            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def close(self) -> None:
        self.release()
        if self._engine is not None:
            self._engine.dispose()


def _work(study: Any, objective: Callable[[Any], Any], lock: SlotLock, n_trials: int, poll_s: float) -> int:
    """Run trials until the study holds `n_trials` live-or-done trials and none is running; returns how
    many this worker ran."""
    import optuna
    from optuna.trial import TrialState

    ran = 0
    while True:
        lock.acquire()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)  # dead workers' trials: failed, re-queued as WAITING
            states = [t.state for t in study.get_trials(deepcopy=False)]
            done, running, waiting = (states.count(s) for s in (TrialState.COMPLETE, TrialState.RUNNING,
                                                                 TrialState.WAITING))
            if waiting or done + running < n_trials:
                # `optimize` pops a WAITING retry first, else asks the sampler; the objective releases the lock
                study.optimize(objective, n_trials=1, catch=())
                ran += 1
                continue
        finally:
            lock.release()
        if running == 0:
            return ran
        time.sleep(poll_s)  # slots all taken: a running trial may still die and come back as a retry


def run_sweep(sweep: SweepConfig, search: SearchConfig, train: TrainConfig, space: SearchSpace,
              table: LatencyTable | str, data: DataConfig, run_dir: str | Path, *, proxy: ProxyConfig | None = None,
              name: str | None = None, seed: int = 0, runtime: Runtime | None = None) -> dict[str, Any]:
    """Run (or continue) the study as one of its workers: every trial searches `space` against `table`
    on `data` with `search` and the trial's parameter, then (`sweep.retrain_epochs` > 0) retrains the
    derived net with `train`; writes pareto.csv, pareto.png and sweep_summary.json into `run_dir`."""
    import optuna

    runtime = runtime or Runtime()
    table = table if isinstance(table, LatencyTable) else LatencyTable.load(table)
    soc = name or table.device
    job = SweepJob(sweep, search, train, space, table, soc, proxy or ProxyConfig(), seed, runtime)
    sw = sweep
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    storage = storage_url(sw.storage or f"sqlite:///{(run_dir / 'study.db').resolve()}")
    param = sw.param.name
    study_name = sw.study_name or f"spnas-{soc}-{param}"
    resolve_compute(runtime.device, runtime.amp)  # a device this machine lacks fails before the study is touched
    sampler = optuna.samplers.NSGAIISampler(seed=seed, population_size=max(2, sw.population))
    lock = SlotLock(storage, study_name)
    try:
        lock.acquire()  # two workers creating the schema or the study at once would race on their rows
        try:
            rdb = open_storage(sw, storage)
            study = optuna.create_study(study_name=study_name, storage=rdb, directions=["maximize", "minimize"],
                                        load_if_exists=True, sampler=sampler)
        finally:
            lock.release()
        decoded = load_data(data, seed)  # decoded once, shared by every trial of this worker
        ran = _work(study, _objective(job, decoded, run_dir, on_start=lock.release), lock, sw.n_trials,
                    poll_s=min(5.0, sw.heartbeat_s / 2))
        log.info("sweep worker %s ran %d trial(s) of study %s", worker_id(), ran, study_name)
    finally:
        lock.close()
    storage = _shown(storage)
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
    summary = {"study": study_name, "storage": storage, "soc": soc, "param": param, "trials": rows,
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
