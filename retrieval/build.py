"""Batch builds: a period's active listings from the listing store into an immutable index version.

    build_period(...)   one period (`spnas-index build granularity=hour period=2026-11-26T15`)
    build_due(...)      every finished period of the retention windows without an up-to-date version,
                        then retention (`spnas-index build-due`: what an hourly CronJob runs)

A build reads the period's active listings with the change number it saw (the version's snapshot),
takes their embeddings from the cache (embedding only the photos missing from it), chooses the
FAISS index by size, and publishes the version; one whose inputs already have a version is not
built again. A killed build publishes nothing (the manifest is written last) and its rerun names
the same version.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from spnas_core.errors import InputNotFoundError

from .config import BuildConfig, Granularity, RetentionConfig
from .factory import choose_factory
from .listings import ListingStore
from .periods import latest_finished, period_range
from .photos import PhotoStore
from .version_index import VersionIndex
from .versions import Repository, VersionInfo, inputs_digest, retain

log = logging.getLogger(__name__)


class Embedder(Protocol):
    dim: int
    bundle_sha256: str

    def embed(self, images: Sequence[np.ndarray], progress: bool | None = None) -> np.ndarray: ...


def embeddings(store: ListingStore, photos: PhotoStore | None, embedder: Embedder, hashes: Sequence[str],
               batch: int = 64, progress: bool = False) -> np.ndarray:
    """Vectors of photos by hash: from the embedding cache, embedding (and caching) the missing ones."""
    from spnas_core.images import decode_rgb

    vecs, found = store.cached(embedder.bundle_sha256, hashes, embedder.dim)
    missing = sorted({h for h, f in zip(hashes, found) if not f})
    if missing:
        if photos is None:
            raise InputNotFoundError(f"{len(missing)} embeddings are not cached and there is no photo store to "
                                     f"embed them from")
        log.info("embedding %d photos missing from the cache of bundle %s", len(missing), embedder.bundle_sha256[:12])
        for i in range(0, len(missing), batch):
            chunk = missing[i:i + batch]
            imgs = []
            for h in chunk:
                data = photos.original(h)
                if data is None:
                    raise InputNotFoundError(f"photo {h} of a listing is not in the photo store {photos.url}")
                imgs.append(decode_rgb(data))
            store.cache(embedder.bundle_sha256, chunk, embedder.embed(imgs, progress=progress and len(missing) > batch))
        vecs, found = store.cached(embedder.bundle_sha256, hashes, embedder.dim)
    return vecs


def factory_params(cfg: BuildConfig) -> dict[str, Any]:
    """The build settings a version's content depends on (part of its name)."""
    return dataclasses.asdict(cfg.factory)


def build_period(store: ListingStore, photos: PhotoStore | None, repo: Repository, embedder: Embedder,
                 g: Granularity, period: str, cfg: BuildConfig, progress: bool = False) -> tuple[VersionInfo, bool]:
    """Build (or find) the version of one period; returns (version, whether it was built now)."""
    t0 = time.perf_counter()
    start, end = period_range(g, period)
    ids, ts, hashes, seq = store.snapshot(start, end)
    factory = choose_factory(len(ids), embedder.dim, cfg.factory)
    digest = inputs_digest(embedder.bundle_sha256, g, period, factory, factory_params(cfg), ids, ts, hashes)
    found = repo.get(embedder.bundle_sha256, g, period, digest[:16])
    if found is not None:
        return found, False
    vecs = embeddings(store, photos, embedder, hashes, cfg.embed_batch, progress)
    vi = VersionIndex.build(ids, ts, vecs, factory, cfg.factory, progress)
    import faiss

    with tempfile.TemporaryDirectory(prefix="spnas-build-") as tmp:
        faiss.write_index(vi.index, str(Path(tmp) / "index.faiss"))
        np.save(Path(tmp) / "ids.npy", ids)
        np.save(Path(tmp) / "ts.npy", ts)
        info = VersionInfo(bundle_id=embedder.bundle_sha256, granularity=g.name, period=period, version=digest[:16],
                           start_ts=start, end_ts=end, count=len(ids), dim=embedder.dim, factory=factory,
                           snapshot_seq=seq, inputs_sha256=digest, created=time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                        time.gmtime()),
                           build_s=round(time.perf_counter() - t0, 3))
        info = repo.publish(Path(tmp), info)
    log.info("built %s: %d listings, %s, %.1f s", info.key, info.count, factory, info.build_s)
    return info, True


def due(store: ListingStore, repo: Repository, bundle: str, cfg: BuildConfig, retention: RetentionConfig,
        now: int, only: Sequence[Granularity] | None = None) -> list[tuple[Granularity, str]]:
    """Finished periods of the retention windows that need a build: listings but no version, or a
    version older than `cfg.rebuild_changed` of its listings' changes (of the granularities `only`)."""
    keep = {Granularity.hour: retention.hours, Granularity.day: retention.days, Granularity.month: retention.months}
    keep = {g: n for g, n in keep.items() if only is None or g in only}
    latest: dict[tuple[str, str], VersionInfo] = {}
    for v in repo.versions(bundle):
        k = (v.granularity, v.period)
        if k not in latest or v.snapshot_seq > latest[k].snapshot_seq:
            latest[k] = v
    out = []
    for g, n in keep.items():
        for period, a, b in latest_finished(g, now, n):
            v = latest.get((g.name, period))
            if v is None:
                if store.count(a, b) > 0:
                    out.append((g, period))
            elif store.count(a, b, after=v.snapshot_seq, active=False) > cfg.rebuild_changed * max(v.count, 1):
                out.append((g, period))
    return out


def build_due(store: ListingStore, photos: PhotoStore | None, repo: Repository, embedder: Embedder,
              cfg: BuildConfig, retention: RetentionConfig, now: int | None = None,
              progress: bool = False, only: Sequence[Granularity] | None = None) -> dict[str, Any]:
    """Build what is due (hours, then days, then months; of the granularities `only`), then apply
    retention; a summary."""
    now = int(time.time() if now is None else now)
    built, found = [], []
    for g, period in due(store, repo, embedder.bundle_sha256, cfg, retention, now, only):
        info, new = build_period(store, photos, repo, embedder, g, period, cfg, progress)
        (built if new else found).append(info.key)
    removed = [v.key for v in retain(repo, retention, now, embedder.bundle_sha256)]
    return {"built": built, "unchanged": found, "removed": removed}
