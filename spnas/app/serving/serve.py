"""`spnas-serve`: the photo search on one machine, or its gateway alone.

    spnas-serve bundle=runs/export/x               # serves the photos the bundle was evaluated on
    spnas-serve bundle=runs/export/x data=folder data.root=/photos     # or the folder it is given
    open http://127.0.0.1:8000/                    # the photo-search page: it names the model and the photos
    spnas-serve gateway bundle=... workers=2 resolver=dir:/run/services locations.store=postgresql://...

`command=all` (the default) runs, in this process, what a cluster runs as separate jobs: it seeds an
empty listing store with photos (`data=...`, or by default the photos the bundle's manifest records it
was evaluated on: every photo of your folder, the train split of a published data set; ids = their
row, titles = class names, times = each photo's own: EXIF DateTimeOriginal, else the file's time),
builds every version that is due (`spnas-index build-due`), serves each version the planner uses as an
in-process gRPC index service announced in `<root>/services`, and runs the gateway (`workers`
processes) on top; every `build_every_s` it builds again and starts or stops services to match. It
says at start, and the page says, which model and which photos it serves; a shutdown (SIGTERM,
Ctrl-C) is logged. `command=gateway` runs only the gateway.

Writes need a bearer token: `$SPNAS_SERVE_TOKEN` / `auth.token_file`, or, on loopback without one, a
token made on first start in `<root>/gateway/token` (mode 0600).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from export.bundle import load_manifest
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
from spnas_core.errors import ConfigError, DataNotFoundError
from spnas_core.files import write_json_atomic
from training.config import DataConfig

from spnas.app.serving.config import SeedTimes, ServeAppConfig, ServeCommand

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


def photos_config(cfg: ServeAppConfig) -> tuple[DataConfig, str]:
    """The photos to serve and where the choice came from: `data=...` as given, else the photos the bundle
    was evaluated on (its manifest's `data_source`)."""
    if cfg.data is not None:
        return cfg.data, "given"
    src = load_manifest(cfg.bundle).get("data_source")
    if not src:
        raise ConfigError(f"bundle {cfg.bundle} does not record the photos it was evaluated on (exported by an "
                          f"earlier spnas): name the photos to serve, data=folder data.root=<your photos> (or "
                          f"data=grocery)")
    dcfg = DataConfig.from_plain(src)
    if not Path(dcfg.root).exists():
        raise DataNotFoundError(f"bundle {cfg.bundle} was evaluated on the photos in {dcfg.root}, which is not there "
                                f"any more: name the photos to serve, data=folder data.root=<your photos>")
    return dcfg, "the bundle was evaluated on"


def photo_files(dcfg: DataConfig, seed_: int) -> tuple[list[str], list[int], list[str]]:
    """(paths, class labels, class names) of the photos to serve: every photo of your folder (its splits are for
    training, not for search), the train split of a published data set (the gallery it was evaluated with)."""
    from training.config import DataKind
    from training.datasets import LISTERS, list_splits

    if dcfg.kind not in LISTERS:
        raise ConfigError(f"data={dcfg.kind.name} is not a set of image files to serve as listings; serve a folder "
                          f"of photos: data=folder data.root=<photos>")
    listing = list_splits(dcfg, seed_)
    paths: list[str] = []
    labels: list[int] = []
    seen: set[str] = set()
    for split in (("train", "val", "test") if dcfg.kind is DataKind.folder else ("train",)):
        for path, label in zip(*listing.splits.get(split, ([], []))):
            if path not in seen:  # an ImageNet-style layout lists val as test too
                seen.add(path)
                paths.append(path)
                labels.append(int(label))
    return paths, labels, list(listing.classes)


def seed(store: ListingStore, photos: PhotoStore, embedder: Any, cfg: ServeAppConfig, now: int) -> dict[str, Any]:
    """Fill an empty store with the photos to serve as listings (photos, embeddings, rows); returns what was
    seeded (`<root>/seeded.json`, what the page and the start line say)."""
    from spnas_core.errors import ImageDecodeError
    from spnas_core.images import decode_rgb, photo_time

    dcfg, origin = photos_config(cfg)
    paths, labels, classes = photo_files(dcfg, cfg.seed)
    paths = paths[:cfg.seed_limit or len(paths)]
    kept: list[int] = []
    hashes: list[str] = []
    for start in range(0, len(paths), 64):  # in chunks: a phone photo decodes to tens of MB
        imgs, raws, idx = [], [], []
        for i in range(start, min(start + 64, len(paths))):
            try:
                raw = Path(paths[i]).read_bytes()
                imgs.append(decode_rgb(raw))
            except (ImageDecodeError, OSError) as e:
                log.warning("not listed: %s (%s)", paths[i], e)
                continue
            raws.append(raw)
            idx.append(i)
        if not idx:
            continue
        vecs = embedder.embed(imgs, progress=len(paths) > 64)
        chunk = [photos.put(raw, img) for raw, img in zip(raws, imgs)]
        store.cache(embedder.bundle_sha256, chunk, vecs)
        kept += idx
        hashes += chunk
    if not kept:
        raise DataNotFoundError(f"no readable photo to serve in {dcfg.root}")
    sources: dict[str, int] = {}
    if cfg.seed_times is SeedTimes.spread:
        ts = now - np.random.default_rng(cfg.seed).integers(0, cfg.seed_hours * 3600, size=len(kept))
        sources["spread"] = len(kept)
    else:
        ts_list = []
        for i in kept:
            t, src = photo_time(paths[i])
            if t > now:  # a camera clock ahead of this machine: listed now rather than in the future
                t, src = now, "clamped to now (camera clock ahead)"
            ts_list.append(t)
            sources[src] = sources.get(src, 0) + 1
        ts = np.asarray(ts_list, dtype=np.int64)
    titles = [classes[labels[i]] for i in kept]
    n = store.load(np.arange(len(kept), dtype=np.int64), ts, hashes, titles)
    oldest, newest = int(np.min(ts)), int(np.max(ts))
    return {"source": origin, "name": dcfg.name, "kind": dcfg.kind.name, "root": str(dcfg.root),
            "test_root": dcfg.test_root, "listings": int(n), "classes": len(classes), "times": sources,
            "oldest": oldest, "newest": newest, "unreadable": len(paths) - len(kept)}


def about(cfg: ServeAppConfig, seeded: dict[str, Any] | None, listings: int) -> dict[str, Any]:
    """Which model and which photos this deployment serves (the start line, `/about` and the page)."""
    from export.bundle import bundle_id

    man = load_manifest(cfg.bundle)
    size = (man.get("input") or {}).get("size", [None])[0]
    trained = man.get("data") or {}
    model = {"name": man.get("name"), "arch": man.get("arch_string"), "input": size,
             "embedding_dim": (man.get("embedding") or {}).get("dim"), "bundle": str(Path(cfg.bundle).resolve()),
             "bundle_id": bundle_id(cfg.bundle)[:12], "trained_on": trained.get("name"),
             "classes": trained.get("num_classes")}
    return {"model": model, "photos": {**(seeded or {}), "listings_now": int(listings)}}


def about_lines(info: dict[str, Any]) -> list[str]:
    """The start lines: the model, the photos (where from, how many, whose times)."""
    import datetime as dt

    m, p = info["model"], info["photos"]
    lines = [f"model: {m['name']} ({m['input']}x{m['input']} input, {m['embedding_dim']}-d embedding, bundle "
             f"{m['bundle']}, id {m['bundle_id']})"]
    if p.get("root"):
        when = ", ".join(f"{n} {k}" for k, n in p.get("times", {}).items())
        day = (lambda t: dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d"))
        span = f", taken {day(p['oldest'])} .. {day(p['newest'])}" if p.get("oldest") else ""
        lines.append(f"photos: {p['listings']} listings of {p['classes']} classes from {p['root']} ({p['source']}; "
                     f"times: {when}{span}); {p['listings_now']} in the listing store now")
    else:
        lines.append(f"photos: {p['listings_now']} listings in the listing store (seeded before this start)")
    return lines


def gateway_spec(cfg: ServeAppConfig, loc: Locations, auth: AuthConfig, port: int,
                 info: dict[str, Any] | None = None) -> GatewaySpec:
    return GatewaySpec(bundles=[cfg.bundle, *cfg.previous_bundles], locations=loc,
                       resolver=cfg.resolver or f"dir:{Path(cfg.root).resolve() / 'services'}",
                       backend=cfg.backend.name, threads=cfg.threads or 1, host=cfg.host, port=port,
                       workers=cfg.workers, limits=cfg.limits, auth=auth, tls=cfg.tls, delta=cfg.delta,
                       retention=cfg.retention, partial=cfg.partial, about=info or {})


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
        self.info: dict[str, Any] = {}

    def prepare(self) -> "Serving":
        """Seed an empty store, build what is due, start the services of the planned versions."""
        now = int(self.clock())
        record = self.root / "seeded.json"
        seeded = json.loads(record.read_text()) if record.is_file() else None
        if self.cfg.seed_index and self.store.max_seq() == 0:
            seeded = seed(self.store, self.photos, self.embedder, self.cfg, now)
            write_json_atomic(record, seeded)
            log.info("seeded %s with %d listings", self.loc.store, seeded["listings"])
        elif self.cfg.data is not None and seeded and seeded.get("root") != str(self.cfg.data.root):
            log.warning("the listing store in %s was seeded with the photos of %s; it is served as it is (start "
                        "with another root=... to serve %s)", self.root, seeded.get("root"), self.cfg.data.root)
        self.info = about(self.cfg, seeded, self.store.count(-(1 << 62), 1 << 62))
        self._warn_outside_retention(seeded, now)
        self.sync()
        return self

    def _warn_outside_retention(self, seeded: dict[str, Any] | None, now: int) -> None:
        """Photos older than the months retention keeps are listed but leave the search: say so, with the fix."""
        if not seeded or not seeded.get("oldest"):
            return
        h0 = latest_finished(Granularity.month, now, self.cfg.retention.months)[-1][1]
        if seeded["oldest"] < h0:
            import datetime as dt

            months = 1 + (dt.datetime.fromtimestamp(now, dt.timezone.utc).year * 12 + dt.datetime.fromtimestamp(
                now, dt.timezone.utc).month) - (dt.datetime.fromtimestamp(seeded["oldest"], dt.timezone.utc).year * 12
                                                 + dt.datetime.fromtimestamp(seeded["oldest"], dt.timezone.utc).month)
            log.warning("some photos were taken before the %d months the search keeps (retention.months): they are "
                        "listed but not searched; retention.months=%d keeps them all", self.cfg.retention.months,
                        months)

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

        spec = gateway_spec(self.cfg, self.loc, self.auth, self.cfg.port if port is None else port, self.info)
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


class _Shutdown(Exception):
    """SIGTERM: stop serving (uvicorn re-raises the signal it caught once it has shut the gateway down)."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Shutdown("SIGTERM")


def run(cfg: ServeAppConfig) -> None:
    """Serve until SIGINT / SIGTERM; the shutdown is logged (what stopped, what is kept)."""
    import signal

    root = Path(cfg.root).resolve()
    if cfg.command is ServeCommand.gateway:
        token = load_token(cfg.auth)
        loc = cfg.locations.resolve(cfg.root)
        auth = cfg.auth if token else local_token(root / "gateway")
        spec = gateway_spec(cfg, loc, auth, cfg.port or _free_port(cfg.host))
        print(f"gateway on http://{cfg.host}:{spec.port}/ ({cfg.workers} workers)", flush=True)
        why = "stopped"
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            serve_gateway(spec, root / "gateway" / f"spec-{spec.port}.json")
        except (_Shutdown, KeyboardInterrupt) as e:
            why = "SIGTERM" if isinstance(e, _Shutdown) else "SIGINT"
        finally:
            signal.signal(signal.SIGTERM, previous)
        print(f"spnas-serve: gateway on port {spec.port} shut down ({why})", flush=True)
        return
    s = Serving(cfg).prepare()
    s.schedule()
    spec = gateway_spec(cfg, s.loc, s.auth, cfg.port or _free_port(cfg.host), s.info)
    for line in about_lines(s.info):
        print(f"spnas-serve: {line}", flush=True)
    print(f"{len(s.services)} index services ({', '.join(sorted(v.vi.info.key for v in s.services.values()))}); "
          f"photo search on http://{cfg.host}:{spec.port}/ (OpenAPI docs: /docs); writes need the bearer token in "
          f"{s.auth.token_file or '$' + cfg.auth.token_env}", flush=True)
    why = "stopped"
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        serve_gateway(spec, s.root / "gateway" / f"spec-{spec.port}.json")
    except (_Shutdown, KeyboardInterrupt) as e:
        why = "SIGTERM" if isinstance(e, _Shutdown) else "SIGINT"
    finally:
        signal.signal(signal.SIGTERM, previous)
        n = len(s.services)
        print(f"spnas-serve: shutting down ({why}): the gateway and {n} index service{'s' if n != 1 else ''}",
              flush=True)
        s.stop()
        print(f"spnas-serve: stopped; the listing store, photos and index versions are kept in {s.root} (the next "
              f"start serves them again)", flush=True)


__all__ = ["Serving", "about", "local_token", "photos_config", "run", "seed", "start"]
