"""`spnas-serve`: the photo search, supervised: one gRPC index service process per partition, the REST
gateway process, hourly partitions as the clock advances, scheduled roll-ups.

    spnas-serve bundle=runs/export/x                  # seeds the index with Grocery train photos
    open http://127.0.0.1:8000/                       # the photo-search page
    curl -F image=@photo.jpg http://127.0.0.1:8000/search
    SPNAS_SERVE_TOKEN=$(openssl rand -hex 32) spnas-serve bundle=... host=0.0.0.0   # beyond loopback: a token
    spnas-serve command=compact bundle=...            # one roll-up and exit (cron / a Kubernetes CronJob)

On first start the index folder is seeded with the Grocery Store train photos as listings (ids = their
row in train.txt, timestamps spread over the past `seed_hours` hours, titles = product names, thumbnails
for the page). Index services announce themselves in `<index_dir>/services/`, which the gateway reads;
logs of every process are in `<index_dir>/run/logs/`. Adds and deletes need a bearer token: the one in
`$SPNAS_SERVE_TOKEN` / `auth.token_file`, or, on loopback without one, a token made on first start in
`<index_dir>/gateway/token` (mode 0600).
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from export.bundle import bundle_id
from retrieval.config import ServeAuthConfig
from retrieval.embedders import make_embedder
from retrieval.gateway import GatewaySpec
from retrieval.index import SearchParams
from retrieval.partitions import CompactionReport, PartitionedStore
from retrieval.photos import PhotoStore, thumbnail
from retrieval.security import check_bind, load_token
from retrieval.service import ServiceSpec
from retrieval.supervisor import Supervisor
from spnas.app.config import ServeAppConfig, ServeCommand
from training.datasets import load_data

from .retrieval_eval import originals

log = logging.getLogger(__name__)


def open_store(cfg: ServeAppConfig, dim: int) -> PartitionedStore:
    p = cfg.search_params
    return PartitionedStore(cfg.index_dir, bundle_id(cfg.bundle), dim, cfg.factory,
                            SearchParams(nprobe=p.nprobe, efSearch=p.efSearch, rerank=p.rerank),
                            checkpoint_wal_bytes=cfg.checkpoint_wal_bytes)


def dirs(cfg: ServeAppConfig) -> dict[str, Path]:
    root = Path(cfg.index_dir)
    return {"discovery": Path(cfg.discovery_dir or root / "services"), "state": Path(cfg.state_dir or root / "gateway"),
            "photos": Path(cfg.photos_dir or root / "photos"), "run": root / "run"}


def seed_store(store: PartitionedStore, embedder: Any, cfg: ServeAppConfig, now: int,
               photos: PhotoStore | None = None) -> int:
    """Fill an empty store with the seed data set's train photos as listings (one all-or-nothing add)."""
    data = load_data(cfg.data, cfg.seed)
    n = min(len(data.train), cfg.seed_limit or len(data.train))
    imgs = originals(data.train.subset(np.arange(n)), data.train.images[:n])
    vecs = embedder.embed(imgs, progress=True)
    rng = np.random.default_rng(0)
    ts = now - rng.integers(0, cfg.seed_hours * 3600, size=n)
    if photos is not None:
        for i, img in enumerate(imgs):
            photos.put(i, thumbnail(img), data.classes[int(data.train.labels[i])])
    store.add(np.arange(n, dtype=np.int64), vecs, ts)
    return n


def local_token(state_dir: Path) -> ServeAuthConfig:
    """No token configured (loopback only): writes still need one, so make one, readable by this user
    alone, in `<state_dir>/token` (kept across restarts)."""
    p = state_dir / "token"
    if not p.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    return ServeAuthConfig(token_file=str(p))


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def start(cfg: ServeAppConfig, clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """Seed if empty, then start the supervised services and gateway (not blocking); returns the
    supervisor, store, embedder, gateway URL and folders."""
    token = load_token(cfg.auth)
    check_bind(cfg.host, token, "the gateway")
    check_bind(cfg.grpc_host, token, "the index services")
    d = dirs(cfg)
    auth = cfg.auth if token else local_token(d["state"])
    embedder = make_embedder(cfg.backend.name, cfg.bundle, cfg.threads or 1)
    store = open_store(cfg, embedder.dim)
    photos = PhotoStore(d["photos"])
    now = int(clock())
    store.recover()
    if not store.keys() and cfg.seed_index:
        n = seed_store(store, embedder, cfg, now, photos)
        log.info("seeded %s with %d listings", store.root, n)
    port = cfg.port or _free_port(cfg.host)
    svc = ServiceSpec(index_dir=str(store.root), bundle_sha256=store.bundle, dim=store.dim, factory=str(cfg.factory),
                      search_params=store.params, checkpoint_wal_bytes=cfg.checkpoint_wal_bytes,
                      grpc_host=cfg.grpc_host, discovery_dir=str(d["discovery"]), tls=cfg.tls, auth=auth)
    gw = GatewaySpec(bundle=str(cfg.bundle), backend=cfg.backend, threads=cfg.threads or 1,
                     discovery_dir=str(d["discovery"]), state_dir=str(d["state"]), photos_dir=str(d["photos"]),
                     host=cfg.host, port=port, limits=cfg.limits, auth=auth, tls=cfg.tls, partial=cfg.partial)
    sup = Supervisor(store, svc, d["run"], gateway_spec=gw, clock=clock, tick_s=cfg.tick_s,
                     compact_every_s=cfg.compact_every_s if cfg.compact else float("inf"),
                     precreate_s=cfg.precreate_s)
    if not cfg.compact:
        sup.last_compaction = float(now)
    sup.start()
    return {"supervisor": sup, "store": store, "embedder": embedder, "url": f"http://{cfg.host}:{port}",
            "token_file": auth.token_file, **d}


def compact_once(cfg: ServeAppConfig, now: float | None = None) -> CompactionReport:
    """`spnas-serve command=compact`: one roll-up of the store (safe while it is being served)."""
    from export.bundle import load_manifest
    from retrieval.embedders import _feature_dim

    store = open_store(cfg, _feature_dim(load_manifest(cfg.bundle)))
    return store.compact(int(time.time() if now is None else now))


def run(cfg: ServeAppConfig) -> None:
    """Serve until SIGINT / SIGTERM (or compact once and exit)."""
    if cfg.command is ServeCommand.compact:
        rep = compact_once(cfg)
        print(f"rolled up {sum(len(v) for v in rep.rolled.values())} partition(s) into {sorted(rep.rolled)}; "
              f"{rep.carried} listings carried, {rep.dropped_deleted} deleted ones dropped"
              + (f"; skipped {rep.skipped}" if rep.skipped else ""))
        return
    s = start(cfg)
    sup: Supervisor = s["supervisor"]
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        sup.wait_ready(120)
        print(f"{len(sup.services)} index services ({', '.join(sorted(sup.services))}); photo search on {s['url']}/ "
              f"(OpenAPI docs: {s['url']}/docs); writes need the bearer token in {s['token_file'] or '$' + cfg.auth.token_env}; "
              f"logs in {sup.logs}", flush=True)
        sup.run(stop)
    finally:
        sup.stop()


__all__ = ["compact_once", "dirs", "open_store", "run", "seed_store", "start"]
