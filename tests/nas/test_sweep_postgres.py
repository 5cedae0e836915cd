"""`spnas-sweep` workers sharing one study on a real PostgreSQL server (Debian's `postgresql` package).

The server is the session's throwaway cluster (or SPNAS_TEST_POSTGRES_URL; tests/postgres.py); the
study lives in a database created for this module. Without the server binaries the tests skip,
except in CI (CI=true), where that is a failure.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..postgres import create_database, free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def postgres_url(postgres_admin_url):
    """postgresql://... of an empty database on a running server (tests/postgres.py)."""
    return create_database(postgres_admin_url, f"spnas_sweep_{os.getpid()}")


def _sweep_args(cifar_root: Path, tmp: Path, url: str, n_trials: int) -> list[str]:
    return ["soc=sd808", f"data.root={cifar_root}", "data.train_limit=320", "data.test_limit=50",
            f"data.cache_dir={tmp / 'cache'}", "search.steps=27", "search.warmup_fraction=0",
            "search.min_threshold_updates=0", "search.batch_size=32", "search.eval_batch_size=100",
            "search.finalists.radius=0",  # the finalists step is tested in tests/nas/test_finalists.py, test_search.py
            "sweep.retrain_epochs=0", f"sweep.n_trials={n_trials}", "sweep.population=2", f"sweep.storage={url}",
            "sweep.study_name=shared", "sweep.heartbeat_s=1", "sweep.grace_s=3", f"run_dir={tmp / 'sweep'}",
            "threads=1", "device=cpu"]


def _worker(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "spnas-sweep"), *args], cwd=ROOT, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_two_workers_share_a_postgres_study_and_a_killed_trial_is_retried(cifar_root, tmp_path, postgres_url):
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    from nas.sweep import storage_url

    args = _sweep_args(cifar_root, tmp_path, postgres_url, n_trials=4)
    workers = {name: _worker(args, tmp_path / f"{name}.log") for name in ("a", "b")}
    trials_dir = tmp_path / "sweep" / "trials"
    # kill whichever worker runs the first trial that has checkpointed, in the middle of that trial
    deadline = time.time() + 300
    victim = None
    while victim is None:
        assert time.time() < deadline, "no trial checkpointed in time"
        assert all(p.poll() is None for p in workers.values()), "a worker exited early: " + \
            (tmp_path / "a.log").read_text()[-2000:] + (tmp_path / "b.log").read_text()[-2000:]
        for d in sorted(trials_dir.glob("*")) if trials_dir.exists() else []:
            if (d / "last.pt").exists() and not (d / "search_summary.json").exists():
                study = optuna.load_study(study_name="shared", storage=storage_url(postgres_url))
                t = next(t for t in study.get_trials() if t.number == int(d.name))
                pid = int(t.user_attrs["worker"].rsplit(":", 1)[1])
                victim = (next(n for n, p in workers.items() if p.pid == pid), t.number)
                workers[victim[0]].send_signal(signal.SIGKILL)
                break
        time.sleep(0.02)
    killed_name, killed_trial = victim
    workers[killed_name].wait()
    survivor = workers["b" if killed_name == "a" else "a"]
    assert survivor.wait(timeout=400) == 0, (tmp_path / f"{'b' if killed_name == 'a' else 'a'}.log").read_text()[-3000:]

    study = optuna.load_study(study_name="shared", storage=storage_url(postgres_url))
    trials = study.get_trials()
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == 4, [(t.number, t.state.name) for t in trials]  # the count holds over both workers
    dead = next(t for t in trials if t.number == killed_trial)
    assert dead.state == TrialState.FAIL  # the heartbeat stopped: failed, not left RUNNING
    with pytest.warns(optuna.exceptions.ExperimentalWarning):  # retried_trial_number is marked experimental
        retries = [t for t in done if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed_trial]
    assert len(retries) == 1 and retries[0].params == dead.params  # retried once, with the same parameter
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    # no trial ran twice: every folder's search log holds each epoch once (the retry resumed the dead
    # trial's folder from its checkpoint instead of starting it over)
    for d in trials_dir.iterdir():
        epochs = [json.loads(line)["epoch"] for line in (d / "search_log.jsonl").read_text().splitlines()]
        assert epochs == sorted(set(epochs)) and epochs[0] == 1, (d.name, epochs)
    assert {t.user_attrs["worker"] for t in done} <= {f"{socket.gethostname()}:{p.pid}" for p in workers.values()}

    # the study resumes: one more worker with a larger budget runs exactly the missing trial ...
    more = subprocess.run([str(BIN / "spnas-sweep"), *_sweep_args(cifar_root, tmp_path, postgres_url, n_trials=5)],
                          cwd=ROOT, capture_output=True, text=True)
    assert more.returncode == 0, more.stderr[-3000:]
    study = optuna.load_study(study_name="shared", storage=storage_url(postgres_url))
    assert len([t for t in study.get_trials() if t.state == TrialState.COMPLETE]) == 5
    summary = json.loads((tmp_path / "sweep" / "sweep_summary.json").read_text())
    assert len(summary["trials"]) == 5 and "postgresql+psycopg://postgres@127.0.0.1" in summary["storage"]


def test_unreachable_database_is_one_clear_error(tmp_path, cifar_root):
    port = free_port()  # nothing listens there
    args = _sweep_args(cifar_root, tmp_path, f"postgresql://postgres@127.0.0.1:{port}/nowhere", n_trials=1)
    r = subprocess.run([str(BIN / "spnas-sweep"), *args], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 3, r.stderr[-2000:]
    assert "cannot open the study storage postgresql+psycopg://postgres@127.0.0.1" in r.stderr
    assert "Traceback" not in r.stderr
