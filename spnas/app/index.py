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

from retrieval.build import build_due, build_period
from retrieval.config import Locations
from retrieval.listings import ListingStore
from retrieval.photos import PhotoStore
from retrieval.versions import Repository, fetch_url, retain

from .serving_config import IndexAppConfig, IndexCommand

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
        return vs
    if c is IndexCommand.retain:
        removed = retain(repo, cfg.retention, now)
        print(f"removed {len(removed)} versions: {', '.join(v.key for v in removed) or 'none'}")
        return removed
    _threads(cfg.threads)
    store, photos = ListingStore(loc.store), PhotoStore(loc.photos)
    embedder = make_embedder(cfg.backend.name, cfg.bundle, cfg.threads or 1)
    if c is IndexCommand.build:
        info, built = build_period(store, photos, repo, embedder, cfg.granularity, cfg.period, cfg.build,
                                   cfg.progress)
        print(f"{'built' if built else 'unchanged (same inputs)'}: {info.key}, {info.count} listings, {info.factory}, "
              f"{info.url}")
        return info
    summary = build_due(store, photos, repo, embedder, cfg.build, cfg.retention, now, cfg.progress,
                        only=cfg.granularities)
    print(f"built {len(summary['built'])} versions, {len(summary['unchanged'])} unchanged, removed "
          f"{len(summary['removed'])}: {', '.join(summary['built']) or '-'}")
    if cfg.servings:
        summary["servings"] = sync_servings(cfg, repo, embedder.bundle_sha256, now)
    return summary


def sync_servings(cfg: IndexAppConfig, repo: Repository, bundle: str, now: int) -> dict[str, Any]:
    """The IndexServing resources made to match the versions the planner uses (Kubernetes)."""
    from retrieval.k8s import own_namespace
    from retrieval.k8s.render import desired_versions, serving_resource
    from retrieval.k8s.servings import sync

    ns = cfg.servings.partition(":")[2] or own_namespace()
    want = [serving_resource(v, ns) for v in desired_versions(repo.versions(), bundle, now, cfg.retention)]
    out = sync(ns, want, cfg.servings_wait_s)
    print(f"index servings in {ns}: {len(out['applied'])} planned, removed {len(out['removed'])}, kept "
          f"{len(out['kept'])} until the planned ones are available")
    return out


def serve(cfg: IndexAppConfig, loc: Locations) -> None:
    """One index service until SIGTERM / SIGINT."""
    from retrieval.security import load_token
    from retrieval.service import open_service

    _threads(1)  # one query per gRPC thread: the cores go to concurrent requests
    svc = open_service(cfg.version, loc.store, loc.cache, cfg.search, cfg.host, cfg.port, token=load_token(cfg.auth),
                       tls=cfg.tls, announce_dir=cfg.announce_dir, follow_s=cfg.follow_s, health_port=cfg.health_port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    svc.start()
    print(f"serving {svc.vi.info.key} ({len(svc.vi)} listings, {svc.vi.info.factory}) on {svc.address}", flush=True)
    stop.wait()
    svc.stop()


__all__ = ["locations", "run", "serve"]
