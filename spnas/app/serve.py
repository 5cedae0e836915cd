"""`spnas-serve`: the photo search on one machine, or its gateway alone.

    spnas-serve bundle=runs/export/x               # seeds an empty store with Grocery train photos
    open http://127.0.0.1:8000/                    # the photo-search page
    spnas-serve gateway bundle=... workers=2 resolver=dir:/run/services locations.store=postgresql://...

`command=all` (the default) runs, in this process, what a cluster runs as separate jobs: it seeds an
empty listing store (the data set's train photos as listings, ids = their row, times spread over
the past `seed_hours`, titles = product names), builds every version that is due (`spnas-index
build-due`), serves each version the planner uses as an in-process gRPC index service announced in
`<root>/services`, and runs the gateway (`workers` processes) on top; every `build_every_s` it builds
again and starts or stops services to match. `command=gateway` runs only the gateway.

Writes need a bearer token: `$SPNAS_SERVE_TOKEN` / `auth.token_file`, or, on loopback without one, a
token made on first start in `<root>/gateway/token` (mode 0600).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from retrieval.build import build_due
from retrieval.config import AuthConfig, Granularity, Locations
from retrieval.embedders import make_embedder
from retrieval.gateway import GatewaySpec, create_app, serve as serve_gateway
from retrieval.listings import ListingStore
from retrieval.periods import latest_finished
from retrieval.photos import PhotoStore
from retrieval.planner import Ready, plan
from retrieval.security import check_bind, check_grpc, load_token
from retrieval.service import IndexService
from retrieval.version_index import VersionIndex
from retrieval.versions import Repository, open_version
from training.datasets import load_data

from .retrieval_eval import originals
from .serving_config import ServeAppConfig, ServeCommand

log = logging.getLogger(__name__)


def local_token(state_dir: Path) -> AuthConfig:
    """No token configured (loopback only): writes still need one, so make one, readable by this user
    alone, in `<state_dir>/token` (kept across restarts)."""
    p = state_dir / "token"
    if not p.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    return AuthConfig(token_file=str(p))


def seed(store: ListingStore, photos: PhotoStore, embedder: Any, cfg: ServeAppConfig, now: int) -> int:
    """Fill an empty store with the seed data set's train photos as listings (photos, embeddings, rows)."""
    import io

    from PIL import Image

    data = load_data(cfg.data, cfg.seed)
    n = min(len(data.train), cfg.seed_limit or len(data.train))
    imgs = originals(data.train.subset(np.arange(n)), data.train.images[:n])
    vecs = embedder.embed(imgs, progress=True)
    hashes = []
    for path, img in zip(data.train.ids[:n], imgs):
        try:
            raw = Path(path).read_bytes()
        except OSError:  # a cached array only: store it as a JPEG
            b = io.BytesIO()
            Image.fromarray(img).save(b, "JPEG", quality=90)
            raw = b.getvalue()
        hashes.append(photos.put(raw, img))
    store.cache(embedder.bundle_sha256, hashes, vecs)
    ts = now - np.random.default_rng(cfg.seed).integers(0, cfg.seed_hours * 3600, size=n)
    titles = [data.classes[int(data.train.labels[i])] for i in range(n)]
    return store.load(np.arange(n, dtype=np.int64), ts, hashes, titles)


def gateway_spec(cfg: ServeAppConfig, loc: Locations, auth: AuthConfig, port: int) -> GatewaySpec:
    return GatewaySpec(bundles=[cfg.bundle, *cfg.previous_bundles], locations=loc,
                       resolver=cfg.resolver or f"dir:{Path(cfg.root).resolve() / 'services'}",
                       backend=cfg.backend.name, threads=cfg.threads or 1, host=cfg.host, port=port,
                       workers=cfg.workers, limits=cfg.limits, auth=auth, tls=cfg.tls, delta=cfg.delta,
                       retention=cfg.retention, partial=cfg.partial)


class Serving:
    """The one-machine deployment: index services of the planned versions, rebuilt on a schedule."""

    def __init__(self, cfg: ServeAppConfig, clock: Callable[[], float] = time.time) -> None:
        from export.bundle import bundle_id

        self.cfg, self.clock = cfg, clock
        self.token = load_token(cfg.auth)
        check_bind(cfg.host, self.token, "the gateway")
        check_bind(cfg.grpc_host, self.token, "the index services")
        self.root = Path(cfg.root).resolve()
        self.loc = cfg.locations.resolve(cfg.root)
        self.auth = cfg.auth if self.token else local_token(self.root / "gateway")
        self.token = load_token(self.auth)
        check_grpc(cfg.grpc_host, self.token, cfg.tls, "the index services")
        self.store, self.photos, self.repo = ListingStore(self.loc.store), PhotoStore(self.loc.photos), \
            Repository(self.loc.repository)
        self.embedder = make_embedder(cfg.backend.name, cfg.bundle, cfg.threads or 1)
        self.bundles = [self.embedder.bundle_sha256, *(bundle_id(b) for b in cfg.previous_bundles)]
        self.announce = self.root / "services"
        self.services: dict[str, IndexService] = {}
        self._unneeded: dict[str, float] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.url = ""

    def prepare(self) -> "Serving":
        """Seed an empty store, build what is due, start the services of the planned versions."""
        now = int(self.clock())
        if self.cfg.seed_index and self.store.max_seq() == 0:
            log.info("seeded %s with %d listings", self.loc.store, seed(self.store, self.photos, self.embedder,
                                                                         self.cfg, now))
        self.sync()
        return self

    def sync(self) -> dict[str, Any]:
        """One scheduling pass: due builds, then services for exactly the versions the planner uses."""
        with self._lock:
            import faiss

            faiss.omp_set_num_threads(os.cpu_count() or 1)
            summary = build_due(self.store, self.photos, self.repo, self.embedder, self.cfg.build,
                                self.cfg.retention, int(self.clock()), in_use=self.in_use)
            faiss.omp_set_num_threads(1)
            self._match_services()
            return summary

    def needed(self) -> dict[str, Any]:
        now = int(self.clock())
        h0 = latest_finished(Granularity.month, now, self.cfg.retention.months)[-1][1]
        out = {}
        for b in self.bundles:
            vs = {v.url: v for v in self.repo.versions(b)}
            rs = [Ready(v.bundle_id, v.g, v.period, v.version, v.snapshot_seq, v.start_ts, v.end_ts, url)
                  for url, v in vs.items()]
            for piece in plan(rs, h0, now + self.cfg.limits.max_future_s + 3600).pieces:
                out[piece.version.ref] = vs[piece.version.ref]
        return out

    def in_use(self) -> set[tuple]:
        """Versions this machine's services serve (retention keeps them until they stop)."""
        return {svc.vi.info.ref for svc in self.services.values()}

    def _match_services(self) -> None:
        for url in [u for u, svc in self.services.items() if svc.corrupt]:  # its copy no longer matched:
            self.services.pop(url).stop(0)                                  # served again from a fresh copy
        need = self.needed()
        for url, info in need.items():
            self._unneeded.pop(url, None)
            if url not in self.services:
                folder, info = open_version(url, self.loc.cache)
                svc = IndexService(VersionIndex.load(folder, info, self.cfg.search), self.store, self.cfg.grpc_host, 0,
                                   token=self.token, tls=self.cfg.tls, announce_dir=self.announce,
                                   follow_s=self.cfg.delta.refresh_s)
                self.services[url] = svc.start()
        for url in list(self.services):  # left the plan: stop once every gateway worker re-planned
            if url not in need:
                since = self._unneeded.setdefault(url, time.monotonic())
                if time.monotonic() - since > 5 * self.cfg.delta.refresh_s + 2:
                    self.services.pop(url).stop()
                    self._unneeded.pop(url, None)
        for svc in self.services.values():
            svc.wait_serving(120)

    def schedule(self) -> None:
        """Build and re-match services every `build_every_s` (services leaving the plan: sooner)."""
        def loop() -> None:
            period = min(self.cfg.build_every_s, 2.0)
            last = time.monotonic()
            while not self._stop.wait(period):
                try:
                    if time.monotonic() - last >= self.cfg.build_every_s:
                        self.sync()
                        last = time.monotonic()
                    elif self._unneeded or any(svc.corrupt for svc in self.services.values()):
                        with self._lock:
                            self._match_services()
                except Exception:
                    log.exception("scheduled build failed; retrying at the next pass")

        threading.Thread(target=loop, name="spnas-serve-schedule", daemon=True).start()

    def start_gateway(self, port: int | None = None) -> str:
        """The gateway in a thread of this process (one worker); returns its URL."""
        import uvicorn

        spec = gateway_spec(self.cfg, self.loc, self.auth, self.cfg.port if port is None else port)
        self.server = uvicorn.Server(uvicorn.Config(create_app(spec, self.token), host=spec.host, port=spec.port,
                                                    log_level="warning", timeout_graceful_shutdown=2))
        threading.Thread(target=self.server.run, name="gateway", daemon=True).start()
        while not self.server.started:
            time.sleep(0.02)
        bound = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{spec.host}:{bound}"
        return self.url

    def stop(self) -> None:
        self._stop.set()
        if getattr(self, "server", None) is not None:
            self.server.should_exit = True
        for svc in self.services.values():
            svc.stop(0.5)
        self.services.clear()


def start(cfg: ServeAppConfig, clock: Callable[[], float] = time.time) -> Serving:
    """Everything `spnas-serve` runs, not blocking: seeded, built, served, gateway up (one worker)."""
    s = Serving(cfg, clock).prepare()
    s.schedule()
    s.start_gateway()
    return s


def _free_port(host: str) -> int:
    with socket.socket() as so:
        so.bind((host, 0))
        return int(so.getsockname()[1])


def run(cfg: ServeAppConfig) -> None:
    """Serve until SIGINT / SIGTERM."""
    if cfg.command is ServeCommand.gateway:
        token = load_token(cfg.auth)
        loc = cfg.locations.resolve(cfg.root)
        auth = cfg.auth if token else local_token(Path(cfg.root).resolve() / "gateway")
        spec = gateway_spec(cfg, loc, auth, cfg.port or _free_port(cfg.host))
        print(f"gateway on http://{cfg.host}:{spec.port}/ ({cfg.workers} workers)", flush=True)
        serve_gateway(spec, Path(cfg.root).resolve() / "gateway" / f"spec-{spec.port}.json")
        return
    s = Serving(cfg).prepare()
    s.schedule()
    spec = gateway_spec(cfg, s.loc, s.auth, cfg.port or _free_port(cfg.host))
    print(f"{len(s.services)} index services ({', '.join(sorted(v.vi.info.key for v in s.services.values()))}); "
          f"photo search on http://{cfg.host}:{spec.port}/ (OpenAPI docs: /docs); writes need the bearer token in "
          f"{s.auth.token_file or '$' + cfg.auth.token_env}", flush=True)
    try:
        serve_gateway(spec, s.root / "gateway" / f"spec-{spec.port}.json")
    finally:
        s.stop()


__all__ = ["Serving", "local_token", "run", "seed", "start"]
