"""`spnas-serve`: the photo-search demo on loopback: one gRPC index service per partition and the
REST gateway, all from one command.

    spnas-serve bundle=runs/export/x                 # seeds the index with Grocery train photos
    curl -F image=@photo.jpg http://127.0.0.1:8000/search

On first start the index folder is seeded with the Grocery Store train photos as listings (ids =
their row in train.txt, timestamps spread over the past `seed_hours` hours), then compacted so
finished hours roll into days. A service is started for every partition and for the current hour
(new listings go there); each announces itself in `<index_dir>/services/`, which the gateway reads.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from export.bundle import bundle_id
from retrieval.embedders import make_embedder
from retrieval.gateway import DirectoryResolver, UploadLimits, create_app
from retrieval.index import SearchParams
from retrieval.partitions import PartitionedStore, partition_key
from retrieval.service import serve_partition
from spnas.config import ServeAppConfig
from training.datasets import load_data

from .retrieval_eval import originals

log = logging.getLogger(__name__)


def seed_store(store: PartitionedStore, embedder: Any, cfg: ServeAppConfig, now: int) -> int:
    """Fill an empty store with the seed data set's train photos as listings."""
    data = load_data(cfg.data, cfg.seed)
    n = min(len(data.train), cfg.seed_limit or len(data.train))
    photos = originals(data.train.subset(np.arange(n)), data.train.images[:n])
    vecs = embedder.embed(photos, progress=True)
    rng = np.random.default_rng(0)
    hours = cfg.seed_hours
    ts = now - rng.integers(0, hours * 3600, size=n)
    store.add(np.arange(n, dtype=np.int64), vecs, ts)
    return n


def start(cfg: ServeAppConfig) -> dict[str, Any]:
    """Start services (and return them) without blocking; `run` adds the gateway and blocks."""
    bundle = cfg.bundle
    embedder = make_embedder(cfg.backend.name, bundle, cfg.threads or 1)
    root = Path(cfg.index_dir)
    p = cfg.search_params
    store = PartitionedStore(root, bundle_id(bundle), embedder.dim, cfg.factory,
                             SearchParams(nprobe=p.nprobe, efSearch=p.efSearch, rerank=p.rerank))
    now = int(time.time())
    if not store.keys() and cfg.seed_index:
        n = seed_store(store, embedder, cfg, now)
        log.info("seeded %s with %d listings", root, n)
    if cfg.compact:
        rep = store.compact(now)
        if rep.rolled:
            log.info("compacted: %s", {k: len(v) for k, v in rep.rolled.items()})
    disc = Path(cfg.discovery_dir or root / "services")
    for old in disc.glob("*.json"):
        old.unlink()
    keys = sorted(set(store.keys()) | {partition_key(now, "h")})
    servers = {}
    for key in keys:
        server, addr = serve_partition(store, key, cfg.host, 0, disc)
        servers[key] = (server, addr)
    app = create_app(embedder, DirectoryResolver(disc), UploadLimits(**vars(cfg.limits)))
    return {"app": app, "servers": servers, "store": store, "embedder": embedder, "discovery": disc}


def run(cfg: ServeAppConfig) -> None:
    """Start everything and serve until interrupted."""
    import uvicorn

    s = start(cfg)
    host, port = cfg.host, cfg.port
    print(f"{len(s['servers'])} index services ({', '.join(s['servers'])}); gateway on http://{host}:{port} "
          f"(OpenAPI docs: http://{host}:{port}/docs)")
    try:
        uvicorn.run(s["app"], host=host, port=port, log_level="warning")
    finally:
        for server, _ in s["servers"].values():
            server.stop(grace=1)
