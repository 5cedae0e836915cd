"""`spnas-index`: the photo search's index versions, one command per job a scheduler runs.

    spnas-index build bundle=runs/export/x granularity=hour period=2026-11-26T15
    spnas-index build-due bundle=runs/export/x     # what an hourly CronJob runs: every finished period
                                                   # that needs a version, then retention
    spnas-index list                               # the versions in the repository
    spnas-index fetch version=<repository URL of a version> dest=/versions/v   # an initContainer
    spnas-index serve version=/versions/v port=50051 locations.store=postgresql://...   # a Deployment
    spnas-index retain

Locations default to the `root` folder (`runs/serve`): `<root>/listings.sqlite`, `<root>/photos`,
`<root>/repository`; set `locations.store=postgresql://...` and `locations.repository=<fsspec URL>` to
share them between machines.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from retrieval.build import build_due, build_period, retain_locked
from retrieval.config import Locations
from retrieval.listings import ListingStore
from retrieval.photos import PhotoStore
from retrieval.resolver import announced_versions
from retrieval.versions import Repository, fetch_url

from spnas.app.serving.config import IndexAppConfig, IndexCommand

log = logging.getLogger(__name__)


def locations(cfg: Any) -> Locations:
    return cfg.locations.resolve(cfg.root)


def _threads(n: int | None) -> None:
    if n:
        import faiss

        faiss.omp_set_num_threads(n)


def run(cfg: IndexAppConfig) -> Any:
    """Everything `spnas-index` does; returns what it printed a summary of."""
    from retrieval.embedders import make_embedder

    loc = locations(cfg)
    c = cfg.command
    if c is IndexCommand.serve:
        return serve(cfg, loc)
    if c is IndexCommand.fetch:
        folder, info = fetch_url(cfg.version, cfg.dest)
        print(f"fetched {info.key} ({info.count} listings, {info.factory}) into {folder}; verified")
        return folder
    repo = Repository(loc.repository)
    now = int(cfg.now if cfg.now is not None else time.time())
    if c is IndexCommand.list:
        vs = repo.versions()
        for v in vs:
            print(f"{v.bundle_id[:12]}  {v.granularity:<5} {v.period:<13} {v.version}  {v.count:>9} listings  "
                  f"{v.factory:<20} snapshot {v.snapshot_seq}  {v.url}")
        print(f"{len(vs)} versions in {loc.repository}")
        for path, why in repo.problems.items():
            print(f"skipped {path}: {why}; the next build-due of its period writes it again")
        return vs
    store = ListingStore(loc.store)
    if c is IndexCommand.retain:
        out = retain_locked(store, repo, cfg.retention, now, None, lambda: in_use(cfg), cfg.lock_timeout_s)
        print(f"removed {len(out['removed'])} versions: {', '.join(out['removed']) or 'none'} ({out['retention']})")
        return out
    _threads(cfg.threads)
    photos = PhotoStore(loc.photos)
    embedder = make_embedder(cfg.backend.name, cfg.bundle, cfg.threads or 1)
    if c is IndexCommand.build:
        info, built = build_period(store, photos, repo, embedder, cfg.granularity, cfg.period, cfg.build,
                                   cfg.progress)
        print(f"{'built' if built else 'unchanged (same inputs)'}: {info.key}, {info.count} listings, {info.factory}, "
              f"{info.url}")
        return info
    bundle = embedder.bundle_sha256
    summary = build_due(store, photos, repo, embedder, cfg.build, cfg.retention, now, cfg.progress,
                        only=cfg.granularities, apply_retention=False)
    # the servings sync and retention under one lock: jobs of other granularities neither retire servings
    # nor remove versions meanwhile, and a version keeps its files while an IndexServing still serves it
    sync = (lambda: sync_servings(cfg, repo, bundle, now)) if cfg.servings else None
    summary.update(retain_locked(store, repo, cfg.retention, now, bundle, lambda: in_use(cfg), cfg.lock_timeout_s,
                                 before=sync, damaged=summary.pop("damaged_refs")))
    summary["servings"] = summary.pop("before", None)
    print(f"built {len(summary['built'])} versions ({len(summary['healed'])} of them healing a corrupt one), "
          f"{len(summary['unchanged'])} unchanged, removed {len(summary['removed'])} ({summary['retention']}): "
          f"{', '.join(summary['built']) or '-'}")
    for key in summary["corrupt"]:
        what = "built again" if key in summary["healed"] else "replaced by a new version, or left to retention"
        print(f"corrupt in the repository: {key} ({what})")
    return summary


def in_use(cfg: IndexAppConfig) -> set[tuple]:
    """Versions a running service uses: those with an IndexServing (servings=kubernetes) and those
    announced in `announce_dir`; retention keeps them."""
    out = announced_versions(cfg.announce_dir)
    if cfg.servings:
        from retrieval.k8s import own_namespace
        from retrieval.k8s.servings import served_versions

        out |= served_versions(cfg.servings.partition(":")[2] or own_namespace())
    return out


def sync_servings(cfg: IndexAppConfig, repo: Repository, bundle: str, now: int) -> dict[str, Any]:
    """The IndexServing resources made to match the versions the planner uses (Kubernetes); a corrupt
    version gets none (it is built again first)."""
    from retrieval.k8s import own_namespace
    from retrieval.k8s.render import desired_versions, serving_resource
    from retrieval.k8s.servings import sync

    ns = cfg.servings.partition(":")[2] or own_namespace()
    want = [serving_resource(v, ns) for v in desired_versions(repo.versions(), bundle, now, cfg.retention)]
    out = sync(ns, want, cfg.servings_wait_s)
    print(f"index servings in {ns}: {len(out['applied'])} planned, removed {len(out['removed'])}, kept "
          f"{len(out['kept'])} until the planned ones are available")
    return out


class StopSignals:
    """SIGTERM and SIGINT recorded as a flag, for a main thread that waits on a `threading.Event` too.

    A Python signal handler runs in the main thread between any two bytecodes, also inside `Event.wait()`
    while it holds the event's (non-reentrant) lock; a handler that calls `Event.set()` then waits for that
    lock forever, and the service never stops on SIGTERM (a supervisor kills it after its grace period,
    calls in flight included). So the handler only records the signal, and `wait` polls it.
    Use as a context manager: the previous handlers come back on exit."""

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
        self.signals, self.received = signals, None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signal.Signals(signum).name  # an assignment: takes no lock

    def __enter__(self) -> "StopSignals":
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)

    def wait(self, other: threading.Event | None = None, poll_s: float = 0.2) -> str | None:
        """Block until a signal arrives (its name) or `other` is set (None then); a signal is seen within
        `poll_s`."""
        other = other or threading.Event()
        while self.received is None and not other.wait(poll_s):
            pass
        return self.received


def serve(cfg: IndexAppConfig, loc: Locations) -> None:
    """One index service until SIGTERM / SIGINT."""
    from retrieval.security import load_token
    from retrieval.service import open_service

    _threads(1)  # one query per gRPC thread: the cores go to concurrent requests
    svc = open_service(cfg.version, loc.store, loc.cache, cfg.search, cfg.host, cfg.port, source=cfg.source,
                       token=load_token(cfg.auth), tls=cfg.tls, announce_dir=cfg.announce_dir, follow_s=cfg.follow_s,
                       health_port=cfg.health_port, verify_every_s=cfg.verify_every_s)
    with StopSignals() as signals:
        svc.start()
        print(f"serving {svc.vi.info.key} ({len(svc.vi)} listings, {svc.vi.info.factory}) on {svc.address}",
              flush=True)
        why = signals.wait(svc.failed)  # a copy found corrupt ends the process too (its restart fetches it again)
        log.info("%s: stopping (%s)", svc.vi.info.key, why or "the served copy was taken out")
        svc.stop(cfg.stop_grace_s, 0.0 if svc.corrupt else cfg.drain_s)
    if svc.corrupt:
        from spnas_core.errors import VersionCorruptError

        raise VersionCorruptError(f"{svc.corrupt}; stopped serving it")


__all__ = ["StopSignals", "locations", "run", "serve"]
