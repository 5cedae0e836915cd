"""Integrity and lifecycle of versions with real `spnas-index serve` processes on loopback: a byte flipped
in place in the repository never reaches a running service and the next build heals it; a served copy
that changes is taken out (the process exits 7) and its restart fetches it again; an unreadable
manifest is a reported, skipped version and retention still runs; retention keeps what a running (or
just killed) service uses, so its restart finds it; build jobs take a lock around retention; stale
announcements of killed services are ignored, then removed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from retrieval.build import build_due, build_period
from retrieval.config import BuildConfig, Granularity, RetentionConfig
from retrieval.listings import Listing
from retrieval.periods import period_range
from retrieval.resolver import DirectoryResolver, announced_versions
from retrieval.versions import open_version, retain

from .conftest import make_catalogue, unit, wait_for

H, D = Granularity.hour, Granularity.day
HOUR = "2026-11-26T15"
START = period_range(H, HOUR)[0]
NOW = START + 2 * 3600  # the hour is over
BIN = Path(sys.executable).parent


class Service:
    """`spnas-index serve` in its own process, announced in a folder; `client` searches it."""

    def __init__(self, tmp: Path, store_url: str, version: str, *extra: str) -> None:
        self.announce = tmp / "services"
        self.log = open(tmp / f"service-{time.monotonic_ns()}.log", "w")
        self.proc = subprocess.Popen([str(BIN / "spnas-index"), "serve", f"version={version}", f"root={tmp}",
                                      f"locations.store={store_url}", f"announce_dir={self.announce}", "follow_s=0.2",
                                      *extra], stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "OMP_NUM_THREADS": "1"})
        self.client = None

    def wait_serving(self, timeout: float = 60) -> "Service":
        from retrieval.service import IndexClient

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"the service exited {self.proc.returncode}: {self.output()[-1500:]}")
            for p in self.announce.glob("*.json"):
                a = json.loads(p.read_text())
                if a.get("pid") == self.proc.pid:
                    return a["address"]
            return None

        self.client = IndexClient(wait_for(up, timeout, "the service to announce itself"), 5)
        return self

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)


def _flip(path: Path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0xFF  # one byte, same size
    path.write_bytes(bytes(data))


def test_a_byte_flipped_in_the_repository_never_reaches_a_running_service_and_the_next_build_heals_it(tmp_path):
    c = make_catalogue(tmp_path, 400, START, 3600)
    info, _ = build_period(c.store, None, c.repo, c.embedder, H, HOUR, BuildConfig())
    svc = Service(tmp_path, c.store.url, info.url).wait_serving()
    try:
        q = c.vecs[:40]
        before = svc.client.search(q, 10, bundle=c.embedder.bundle_sha256)
        _flip(Path(info.url) / info.files["index"]["name"])  # in place, in the repository
        after = svc.client.search(q, 10, bundle=c.embedder.bundle_sha256)
        assert np.array_equal(before[1], after[1]) and np.array_equal(before[0], after[0]), \
            "a byte changed in the repository reached the running service"
    finally:
        svc.stop()
    # `spnas-index build` of that period finds it corrupt and builds it again under the same name
    corrupt = c.repo.versions()[0]
    with pytest.raises(Exception, match="does not match"):
        c.repo.check(corrupt)
    s = build_due(c.store, None, c.repo, c.embedder, BuildConfig(), RetentionConfig(), NOW)
    assert s["corrupt"] == [info.key] and s["healed"] == [info.key] and s["built"] == [info.key], s
    c.repo.check(c.repo.versions()[0])  # its files match again (the content-named file was replaced)
    assert [v.version for v in c.repo.versions()] == [info.version]
    assert build_due(c.store, None, c.repo, c.embedder, BuildConfig(), RetentionConfig(), NOW)["built"] == []


def test_a_corrupt_version_in_use_that_a_new_build_replaces_is_removed(tmp_path):
    """A served version is damaged in the repository and its hour has changed meanwhile: the next build
    makes a new version of the hour, and retention removes the damaged one although a service still
    names it (no restart could load it), so no version that fails its manifest stays visible."""
    c = make_catalogue(tmp_path, 200, START, 3600)
    old, _ = build_period(c.store, None, c.repo, c.embedder, H, HOUR, BuildConfig())
    _flip(Path(old.url) / old.files["index"]["name"])
    c.store.cache(c.embedder.bundle_sha256, ["late" + "0" * 60], unit(1, 16, 5))
    c.store.add([Listing(10**12, START + 100, "late" + "0" * 60)])  # the hour's inputs change
    s = build_due(c.store, None, c.repo, c.embedder, BuildConfig(), RetentionConfig(), NOW,
                  in_use=lambda: {old.ref})
    assert s["corrupt"] == [old.key] and len(s["built"]) == 1 and s["built"] != [old.key], s
    assert s["removed"] == [old.key], s  # in use, but replaced and damaged
    (v,) = c.repo.versions()
    c.repo.check(v)
    # an intact replaced version a service uses still stays (the rule above is for damaged ones only)
    c.store.add([Listing(10**12 + 1, START + 200, "late" + "0" * 60)])
    s = build_due(c.store, None, c.repo, c.embedder, BuildConfig(rebuild_changed=0.0), RetentionConfig(), NOW,
                  in_use=lambda: {v.ref})
    assert len(s["built"]) == 1 and s["removed"] == [] and len(c.repo.versions()) == 2, s


def test_a_version_folder_with_a_truncated_manifest_is_refused_with_one_clear_error(tmp_path):
    """A service given a folder whose manifest.json is cut short said JSONDecodeError (bench_chaos)."""
    from retrieval.versions import VersionCorruptError, open_version

    c = make_catalogue(tmp_path, 50, START, 3600)
    info, _ = build_period(c.store, None, c.repo, c.embedder, H, HOUR, BuildConfig())
    m = Path(info.url) / "manifest.json"
    m.write_text(m.read_text()[:100])
    with pytest.raises(VersionCorruptError, match="manifest.json is unreadable"):
        open_version(info.url, tmp_path / "cache")


def test_a_served_copy_that_changes_is_taken_out_and_its_restart_fetches_it_again(tmp_path):
    """The service's own copy (a folder, as an initContainer fetched it) is damaged in place: within a
    check the service stops answering (exit 7, nothing served from the damaged bytes), and started again
    with its `source` it copies the damaged file again and answers as before."""
    c = make_catalogue(tmp_path, 300, START, 3600)
    info, _ = build_period(c.store, None, c.repo, c.embedder, H, HOUR, BuildConfig())
    folder, _ = open_version(info.url, tmp_path / "copy")
    args = (f"source={info.url}", "verify_every_s=0.3")
    svc = Service(tmp_path, c.store.url, str(folder), *args).wait_serving()
    want = svc.client.search(c.vecs[:20], 5, bundle=c.embedder.bundle_sha256)
    _flip(folder / info.files["index"]["name"])
    assert svc.proc.wait(30) == 7, svc.output()[-2000:]
    assert "taken out of service" in svc.output() and not list(svc.announce.glob("*.json"))
    again = Service(tmp_path, c.store.url, str(folder), *args).wait_serving()
    try:
        got = again.client.search(c.vecs[:20], 5, bundle=c.embedder.bundle_sha256)
        assert np.array_equal(got[1], want[1]) and "fetching it again" in again.output()
        (folder / info.files["ids"]["name"]).write_bytes(b"")  # truncated: caught by the size check at once
        assert again.proc.wait(30) == 7
    finally:
        again.stop()


def test_an_unreadable_manifest_is_reported_skipped_and_rebuilt_and_retention_still_runs(tmp_path):
    now = period_range(H, "2026-11-03T05")[0] + 600
    c = make_catalogue(tmp_path, 300, now - 4 * 3600, 4 * 3600 - 600)
    ret = RetentionConfig(hours=2)
    build_due(c.store, None, c.repo, c.embedder, BuildConfig(), ret, now)
    first = {v.period: v for v in c.repo.versions()}
    assert sorted(first) == ["2026-11-03T03", "2026-11-03T04"]
    victim = first["2026-11-03T04"]
    m = Path(victim.url) / "manifest.json"
    m.write_text(m.read_text()[:100])  # truncated
    r = subprocess.run([str(BIN / "spnas-index"), "list", f"locations.repository={c.repo.url}",
                        f"root={tmp_path}"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and f"skipped {m}" in r.stdout and "unreadable manifest" in r.stdout, r.stdout + r.stderr
    assert [v.period for v in c.repo.versions()] == ["2026-11-03T03"]  # skipped, not a crash
    c.store.cache(c.embedder.bundle_sha256, ["late" + "0" * 60], unit(1, 16, 5))
    c.store.add([Listing(10**12, first["2026-11-03T03"].start_ts + 5, "late" + "0" * 60)])  # T03 changes
    s = build_due(c.store, None, c.repo, c.embedder, BuildConfig(), ret, now)
    assert [str(m)] == [h for h in s["healed"] if h.endswith("manifest.json")] and str(m) in s["corrupt"], s
    assert s["retention"] == "done" and s["removed"] == [first["2026-11-03T03"].key], s  # the replaced T03 went
    assert json.loads(m.read_text())["version"] == victim.version and not c.repo.problems


def test_retention_keeps_what_a_running_or_just_killed_service_uses(tmp_path):
    """A late listing in a built hour makes the next build replace its version; the old one's service
    still runs (announced), so retention keeps its files; the service is killed and restarted with the
    same version, as a supervisor does, and starts. Once no service announced it for `keep_s`, it goes."""
    c = make_catalogue(tmp_path, 200, START, 3600)
    old, _ = build_period(c.store, None, c.repo, c.embedder, H, HOUR, BuildConfig())
    svc = Service(tmp_path, c.store.url, old.url).wait_serving()
    try:
        c.store.cache(c.embedder.bundle_sha256, ["late" + "0" * 60], unit(1, 16, 5))
        c.store.add([Listing(10**12, START + 100, "late" + "0" * 60)])
        in_use = lambda: announced_versions(svc.announce)  # noqa: E731
        s = build_due(c.store, None, c.repo, c.embedder, BuildConfig(rebuild_changed=0.0), RetentionConfig(), NOW,
                      in_use=in_use)
        assert len(s["built"]) == 1 and s["removed"] == [], s
        assert {v.version for v in c.repo.versions()} == {old.version, s["built"][0].rsplit("/", 1)[1]}
        svc.kill()
        assert retain(c.repo, RetentionConfig(), NOW, in_use=in_use()) == []  # killed just now: may restart
        svc = Service(tmp_path, c.store.url, old.url).wait_serving()  # the restart finds its version
        assert svc.client.search(c.vecs[:1], 1, bundle=c.embedder.bundle_sha256)[1][0, 0] == c.ids[0]
    finally:
        svc.stop()
    (killed,) = svc.announce.glob("*.json")  # the restarted one withdrew its announcement; the killed one's stays
    assert json.loads(killed.read_text())["ref"][3] == old.version
    os.utime(killed, (time.time() - 700, time.time() - 700))  # ... until nobody has restarted it for 10 minutes
    assert announced_versions(svc.announce) == set()
    assert [v.key for v in retain(c.repo, RetentionConfig(), NOW, in_use=in_use())] == [old.key]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_build_jobs_take_a_lock_around_retention(tmp_path, request, backend):
    url = None
    if backend == "postgresql":
        from ..postgres import create_database

        url = create_database(request.getfixturevalue("postgres_admin_url"), f"spnas_lock_{os.getpid()}")
    c = make_catalogue(tmp_path, 50, START, 3600, store=url)
    from retrieval.listings import ListingStore

    other = ListingStore(c.store.url)  # another job
    with other.lock("retention", 0) as got:
        assert got
        with c.store.lock("retention", 0.2) as mine:
            assert not mine
        s = build_due(c.store, None, c.repo, c.embedder, BuildConfig(), RetentionConfig(), NOW, lock_timeout_s=0.2)
        assert s["built"] and s["retention"].startswith("skipped")
    with c.store.lock("retention", 0) as mine:
        assert mine  # released by its holder
    assert build_due(c.store, None, c.repo, c.embedder, BuildConfig(), RetentionConfig(), NOW)["retention"] == "done"
    other.close()


def test_announcements_of_killed_services_are_ignored_then_removed(tmp_path):
    folder = tmp_path / "services"
    folder.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    import socket

    host = socket.gethostname()
    ref = ["f" * 64, "hour", HOUR, "0" * 16]
    for name, pid, age in (("live", os.getpid(), 0), ("killed", int(dead), 0), ("silent", os.getpid(), 60),
                           ("ancient", int(dead), 7200)):
        p = folder / f"{name}.json"
        p.write_text(json.dumps({"address": f"127.0.0.1:{len(name)}", "pid": pid, "host": host, "ref": ref}))
        os.utime(p, (time.time() - age, time.time() - age))
    r = DirectoryResolver(folder, stale_s=15, remove_after_s=3600)
    assert r.addresses() == ["127.0.0.1:4"]  # the live one; a dead pid and a stopped heartbeat are ignored
    assert sorted(p.stem for p in folder.glob("*.json")) == ["killed", "live", "silent"]  # the ancient one removed
    assert announced_versions(folder, keep_s=600) == {tuple(ref)}


def test_fetch_copies_again_a_same_size_corrupt_copy_and_refuses_a_corrupt_source(tmp_path):
    from retrieval.versions import fetch_url
    from spnas_core.errors import VersionCorruptError

    c = make_catalogue(tmp_path, 120, START, 3600)
    info, _ = build_period(c.store, None, c.repo, c.embedder, H, HOUR, BuildConfig())
    dest = tmp_path / "pod" / "v"
    fetch_url(info.url, dest)
    _flip(dest / info.files["ts"]["name"])  # the local copy changed, same size
    folder, _ = fetch_url(info.url, dest)  # healed: the file is copied again
    from retrieval.versions import read_local, verify

    verify(folder, read_local(folder))
    _flip(Path(info.url) / info.files["ids"]["name"])  # now the repository's copy
    with pytest.raises(VersionCorruptError, match="does not match"):
        fetch_url(info.url, tmp_path / "pod2" / "v")
    assert not (tmp_path / "pod2" / "v" / "manifest.json").exists()


_SIGNAL_IN_EVENT_WAIT = """
import os, signal, sys, threading
event = threading.Event()
{install}
with event._cond:  # where Event.wait() holds the event's lock: a signal's handler may run here
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(1000):  # the handler runs between two of these bytecodes, the lock still held
        pass
print({result}, flush=True)
"""


def _run_signal_script(install: str, result: str, timeout: float) -> subprocess.CompletedProcess | None:
    code = _SIGNAL_IN_EVENT_WAIT.format(install=install, result=result)
    try:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def test_sigterm_while_the_main_thread_holds_the_stop_events_lock_still_stops_the_service():
    """`spnas-index serve` waits on an event that a corrupt copy also sets; SIGTERM arriving inside
    Event.wait() (the main thread holding the event's lock) must not deadlock the handler. The control shows
    the window is real: a handler that calls Event.set() hangs there."""
    control = _run_signal_script("signal.signal(signal.SIGTERM, lambda *_: event.set())", "'stopped'", 4)
    assert control is None, f"the control did not hang: {control}"
    done = _run_signal_script("from spnas.app.serving.index import StopSignals\n"
                              "signals = StopSignals().__enter__()", "signals.wait(event, 0.05)", 120)
    assert done is not None, "SIGTERM inside Event.wait's lock hung the process"
    assert done.returncode == 0 and done.stdout.strip() == "SIGTERM", done.stderr[-1500:]
