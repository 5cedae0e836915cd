"""`spnas-sweep` workers sharing one study on a real PostgreSQL server (Debian's `postgresql` package).

A throwaway cluster is started for the module (initdb + pg_ctl in a temporary folder, a free port,
as the `postgres` user when the tests run as root) unless SPNAS_TEST_POSTGRES_URL names a server to
use; either way the study lives in a database created for this test and dropped after. Without the
server binaries the tests skip, except in CI (CI=true), where that is a failure.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ..conftest import _missing

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    cands = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]), reverse=True)
    return cands[0] if cands else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(cmd: list[str]) -> list[str]:
    """initdb refuses to run as root: run the server tools as the `postgres` user then."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _create_db(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}"')
        c.execute(f'CREATE DATABASE "{name}"')


@pytest.fixture(scope="module")
def postgres_url():
    """postgresql://... of an empty database on a running server (a throwaway cluster if needed)."""
    db = f"spnas_sweep_{os.getpid()}"
    given = os.environ.get("SPNAS_TEST_POSTGRES_URL")
    if given:
        _create_db(given, db)
        yield given.rsplit("/", 1)[0] + f"/{db}"
        return
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        _missing("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install -y postgresql")
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            _missing("running as root and there is no `postgres` user to run the server as")
    tmp = Path(tempfile.mkdtemp(prefix="spnas-pg-"))  # under /tmp itself: pytest's tmp is root-only
    if os.geteuid() == 0:
        os.chown(tmp, pw.pw_uid, pw.pw_gid)
    data, port = tmp / "data", _free_port()
    subprocess.run(_as_postgres([initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                                 "--no-sync"]), check=True, capture_output=True)
    opts = f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
    subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-o", opts, "-l", str(tmp / "server.log"), "-w",
                                 "start"]), check=True, capture_output=True)
    try:
        admin = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        _create_db(admin, db)
        yield f"postgresql://postgres@127.0.0.1:{port}/{db}"
    finally:
        subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"]), capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


def _sweep_args(cifar_root: Path, tmp: Path, url: str, n_trials: int) -> list[str]:
    return ["soc=sd808", f"data.root={cifar_root}", "data.train_limit=320", "data.test_limit=50",
            f"data.cache_dir={tmp / 'cache'}", "search.steps=45", "search.warmup_fraction=0",
            "search.min_threshold_updates=0", "search.batch_size=32", "search.eval_batch_size=100",
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
    port = _free_port()  # nothing listens there
    args = _sweep_args(cifar_root, tmp_path, f"postgresql://postgres@127.0.0.1:{port}/nowhere", n_trials=1)
    r = subprocess.run([str(BIN / "spnas-sweep"), *args], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 3, r.stderr[-2000:]
    assert "cannot open the study storage postgresql+psycopg://postgres@127.0.0.1" in r.stderr
    assert "Traceback" not in r.stderr
