"""The supervisor `spnas-serve` runs: index service processes, the gateway process, and the clock.

Each partition is served by its own process (`python -m retrieval.service`), as one pod per
partition would be, and the gateway by another (`python -m retrieval.gateway`). Every `tick_s` the
supervisor:

- makes sure the current hour has a partition (and the next one, `precreate_s` before it begins),
  so listings keep being accepted as the clock advances;
- every `compact_every_s`, rolls finished hours into days and days into months
  (`PartitionedStore.compact`; services of retired partitions exit by themselves);
- starts a service for every partition on disk that has none, restarts a service or the gateway
  that died (exponential back-off when one keeps dying), and stops services of partitions gone.

Children stop when the supervisor goes away (`watch_parent`), so a killed `spnas-serve` leaves no orphans. The
clock is injectable (`clock=`), which is how the hour rollover is tested without waiting an hour.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from spnas_core.errors import RetrievalError

from .partitions import CompactionReport, PartitionedStore, partition_key
from .service import ServiceSpec, announcement_path

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]


def watch_parent(stop: Callable[[], None], period_s: float = 0.5) -> threading.Thread:
    """In a child: call `stop` when the supervisor that started it is gone (re-parented), so a killed
    `spnas-serve` leaves no orphans. (Polling, not PR_SET_PDEATHSIG: that needs a fork-time hook, and
    forking the multi-threaded supervisor with one is unsafe.)"""
    parent = os.getppid()

    def run() -> None:
        while os.getppid() == parent:
            time.sleep(period_s)
        log.warning("the supervisor (pid %d) is gone; stopping", parent)
        stop()

    t = threading.Thread(target=run, name="watch-parent", daemon=True)
    t.start()
    return t


@dataclass
class Child:
    """One supervised process."""

    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen | None = None
    started: float = 0.0
    restarts: int = 0
    restart_at: float | None = None
    history: list[float] = field(default_factory=list)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Supervisor:
    """Starts, watches and restarts the index services and the gateway of one store."""

    def __init__(self, store: PartitionedStore, service_spec: ServiceSpec, run_dir: str | os.PathLike, *,
                 gateway_spec: "object | None" = None, clock: Callable[[], float] = time.time, tick_s: float = 5.0,
                 compact_every_s: float = 300.0, precreate_s: float = 120.0, env: dict[str, str] | None = None
                 ) -> None:
        self.store, self.spec, self.gateway_spec = store, service_spec, gateway_spec
        self.run_dir = Path(run_dir)
        self.clock, self.tick_s, self.compact_every_s, self.precreate_s = clock, tick_s, compact_every_s, precreate_s
        self.env = {**os.environ, **(env or {})}
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), self.env.get("PYTHONPATH", "")) if p)
        self.discovery = Path(service_spec.discovery_dir)
        self.logs = self.run_dir / "logs"
        self.services: dict[str, Child] = {}
        self.gateway: Child | None = None
        self.last_compaction: float | None = None
        self.compactions: list[CompactionReport] = []
        self._stop = threading.Event()
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "Supervisor":
        """Write the specs, clear stale announcements, start every service and the gateway."""
        self.logs.mkdir(parents=True, exist_ok=True)
        self.discovery.mkdir(parents=True, exist_ok=True)
        for old in self.discovery.glob("*.json"):
            old.unlink()
        self.spec_path = self.spec.save(self.run_dir / "services.json")
        if self.gateway_spec is not None:
            self.gateway_spec_path = self.gateway_spec.save(self.run_dir / "gateway.json")  # type: ignore[attr-defined]
            (Path(self.gateway_spec.state_dir) / "gateway.json").unlink(missing_ok=True)  # type: ignore[attr-defined]
        self.tick()
        return self

    def tick(self) -> None:
        """One pass: hours, compaction when due, services and gateway up."""
        with self._lock:
            now = self.clock()
            self.ensure_hours(now)
            if self.last_compaction is None or now - self.last_compaction >= self.compact_every_s:
                self.last_compaction = now
                try:
                    rep = self.store.compact(int(now))
                    if rep.rolled or rep.skipped:
                        log.info("compaction: rolled %s; skipped %s", {k: len(v) for k, v in rep.rolled.items()},
                                 rep.skipped)
                    self.compactions.append(rep)
                except RetrievalError as e:  # the next pass retries; serving goes on meanwhile
                    log.warning("compaction failed, will retry: %s", e)
                finally:
                    self.store.forget()
            self.reconcile()

    def ensure_hours(self, now: float) -> list[str]:
        """The current hour's partition, and the next one's when it begins within `precreate_s`."""
        keys = [partition_key(int(now))]
        nxt = partition_key(int(now) + int(self.precreate_s))
        if nxt not in keys:
            keys.append(nxt)
        for k in keys:
            if not self.store.exists(k):
                self.store.create(k)
                log.info("created partition %s", k)
        return keys

    def reconcile(self) -> None:
        keys = set(self.store.keys())
        now = time.monotonic()
        for key in sorted(keys):
            c = self.services.get(key)
            if c is None:
                c = self.services[key] = Child(f"service {key}", [sys.executable, "-m", "retrieval.service", "--spec",
                                                                  str(self.spec_path), "--partition", key],
                                               self.logs / f"service-{key.replace('/', '_')}.log")
            if not c.alive():
                self._launch(c, now)
        for key in [k for k in self.services if k not in keys]:
            c = self.services.pop(key)
            self._terminate(c)
            announcement_path(self.discovery, key).unlink(missing_ok=True)
        if self.gateway_spec is not None:
            if self.gateway is None:
                self.gateway = Child("gateway", [sys.executable, "-m", "retrieval.gateway", "--spec",
                                                 str(self.gateway_spec_path)], self.logs / "gateway.log")
            if not self.gateway.alive():
                self._launch(self.gateway, now)

    def _launch(self, c: Child, now: float) -> None:
        if c.proc is not None and c.restart_at is None:  # it died: restart, backing off when it keeps dying
            lived = now - c.started
            c.restarts = 1 if lived > 30 else c.restarts + 1
            delay = 0.0 if c.restarts <= 1 else min(0.25 * 2 ** min(c.restarts, 6), 15.0)
            c.restart_at = now + delay
            c.history.append(time.time())
            log.warning("%s exited with %s after %.1f s; restarting in %.1f s", c.name, c.proc.returncode, lived, delay)
        if c.restart_at is not None and now < c.restart_at:
            return
        with open(c.log_path, "ab") as logf:
            c.proc = subprocess.Popen(c.argv, stdout=logf, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT,
                                      stdin=subprocess.DEVNULL)
        c.started, c.restart_at = now, None

    @staticmethod
    def _terminate(c: Child, grace_s: float = 5.0) -> None:
        if c.alive():
            assert c.proc is not None
            c.proc.terminate()
            try:
                c.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                c.proc.kill()
                c.proc.wait()

    def run(self, stop: threading.Event | None = None) -> None:
        """Tick until `stop` (or `self.stop()`) is set."""
        stop = stop or self._stop
        while not stop.wait(self.tick_s) and not self._stop.is_set():
            self.tick()

    def stop(self) -> None:
        """Stop the gateway, then the services (SIGTERM, then SIGKILL after a grace period)."""
        self._stop.set()
        with self._lock:
            if self.gateway is not None:
                self._terminate(self.gateway)
            for c in self.services.values():
                if c.alive():
                    assert c.proc is not None
                    c.proc.terminate()
            for c in self.services.values():
                self._terminate(c)

    # ------------------------------------------------------------------ status
    def service_pid(self, key: str) -> int | None:
        c = self.services.get(key)
        return c.proc.pid if c is not None and c.alive() and c.proc is not None else None

    def gateway_pid(self) -> int | None:
        c = self.gateway
        return c.proc.pid if c is not None and c.alive() and c.proc is not None else None

    def announced(self) -> dict[str, int]:
        """Partition -> pid of the process that announced it (the live ones)."""
        import json

        out = {}
        for p in self.discovery.glob("*.json"):
            try:
                d = json.loads(p.read_text())
                out[d["partition"]] = int(d["pid"])
            except (OSError, ValueError, KeyError):
                pass
        return out

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Until every partition's current service and the gateway announced themselves (ticking meanwhile)."""
        import json

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.tick()
            ann = self.announced()
            ok = all(ann.get(k) == self.service_pid(k) for k in self.store.keys())
            if ok and self.gateway_spec is not None:
                p = Path(self.gateway_spec.state_dir) / "gateway.json"  # type: ignore[attr-defined]
                try:
                    ok = json.loads(p.read_text())["pid"] == self.gateway_pid()
                except (OSError, ValueError, KeyError):
                    ok = False
            if ok:
                return
            time.sleep(0.05)
        raise RetrievalError(f"the index services or the gateway did not come up within {timeout_s:.0f} s; see the "
                             f"logs in {self.logs}")
