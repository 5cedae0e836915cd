"""Batch builds: a period's active listings from the listing store into an immutable index version.

    build_period(...)   one period (`spnas-index build granularity=hour period=2026-11-26T15`)
    build_due(...)      every finished period of the retention windows without an up-to-date version,
                        or whose version fails verification, then retention (`spnas-index build-due`:
                        what an hourly CronJob runs)

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
from typing import Any, Callable, Sequence

import numpy as np

from spnas_core.errors import InputNotFoundError, VersionCorruptError

from .config import BuildConfig, Granularity, RetentionConfig
from .interface import Embedder
from .factory import VECTORS_DTYPE, choose_factory, reranked_from_disk
from .listings import ListingStore
from .periods import latest_finished, period_range
from .photos import PhotoStore
from .version_index import VersionIndex
from .versions import LOCAL_NAMES, Repository, VersionInfo, VersionRef, inputs_digest, retain

log = logging.getLogger(__name__)


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
    """Build (or find) the version of one period; returns (version, whether it was built now). The period
    is read in one snapshot with its cached embeddings (streamed; a compressed version's vectors go straight
    into the float16 file it publishes, so a month of 1e7 listings is never held in memory whole); a
    version found with the same inputs is verified, and built again when its files do not match."""
    import faiss

    t0 = time.perf_counter()
    start, end = period_range(g, period)
    bundle, dim = embedder.bundle_sha256, embedder.dim
    with tempfile.TemporaryDirectory(prefix="spnas-build-", dir=cfg.tmp_dir) as tmp_dir:
        tmp = Path(tmp_dir)
        made: dict[str, Any] = {}

        def alloc(n: int) -> np.ndarray:
            made["factory"] = f = choose_factory(n, dim, cfg.factory)
            if reranked_from_disk(f):
                from numpy.lib.format import open_memmap

                made["vecs"] = open_memmap(tmp / LOCAL_NAMES["vectors"], mode="w+", dtype=VECTORS_DTYPE,
                                           shape=(n, dim))
            else:
                made["vecs"] = np.zeros((n, dim), np.float32)
            return made["vecs"]

        ids, ts, hashes, missing, seq = store.snapshot_vectors(start, end, bundle, dim, alloc)
        factory, vecs = made["factory"], made["vecs"]
        digest = inputs_digest(bundle, g, period, factory, factory_params(cfg), ids, ts, hashes)
        del hashes
        found = repo.get(bundle, g, period, digest[:16])
        if found is not None:
            try:
                repo.check(found)
                return found, False
            except VersionCorruptError as e:  # same inputs, damaged files: built again, the bad files replaced
                log.warning("%s; building it again", e)
        if missing:  # photos listed before their embedding was cached: embedded (and cached) now
            got = embeddings(store, photos, embedder, list(missing), cfg.embed_batch, progress)
            for v, rows in zip(got, missing.values()):
                vecs[rows] = v
        t1 = time.perf_counter()
        vi = VersionIndex.build(ids, ts, vecs, factory, cfg.factory, progress,
                                vectors_file=tmp / LOCAL_NAMES["vectors"])
        if isinstance(vecs, np.memmap):
            vecs.flush()
        del vecs, made["vecs"]
        t2 = time.perf_counter()
        faiss.write_index(vi.index, str(tmp / LOCAL_NAMES["index"]))
        del vi
        np.save(tmp / LOCAL_NAMES["ids"], ids)
        np.save(tmp / LOCAL_NAMES["ts"], ts)
        info = VersionInfo(bundle_id=bundle, granularity=g.name, period=period, version=digest[:16],
                           start_ts=start, end_ts=end, count=len(ids), dim=dim, factory=factory,
                           snapshot_seq=seq, inputs_sha256=digest, created=time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                        time.gmtime()),
                           build_s=round(time.perf_counter() - t0, 3))
        info = repo.publish(tmp, info)
    log.info("built %s: %d listings, %s, %.1f s (read %.1f s, index %.1f s, write + publish %.1f s)", info.key,
             info.count, factory, info.build_s, t1 - t0, t2 - t1, time.perf_counter() - t2)
    return info, True


def verify_versions(repo: Repository, bundle: str, only: Sequence[Granularity] | None = None) -> list[VersionInfo]:
    """The versions (of the granularities `only`) whose repository files do not match their manifest
    (`Repository.check`: size and sha256 of every file)."""
    bad = []
    for v in repo.versions(bundle):
        if only is not None and v.g not in only:
            continue
        try:
            repo.check(v)
        except VersionCorruptError as e:
            log.error("%s", e)
            bad.append(v)
    return bad


def due(store: ListingStore, repo: Repository, bundle: str, cfg: BuildConfig, retention: RetentionConfig,
        now: int, only: Sequence[Granularity] | None = None, corrupt: set[VersionRef] | frozenset = frozenset()
        ) -> list[tuple[Granularity, str]]:
    """Finished periods of the retention windows that need a build: listings but no version (or only a
    version in `corrupt`), or a version older than `cfg.rebuild_changed` of its listings' changes (of the
    granularities `only`)."""
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
            if v is None or v.ref in corrupt:
                if store.count(a, b) > 0:
                    out.append((g, period))
            elif store.count(a, b, after=v.snapshot_seq, active=False) > cfg.rebuild_changed * max(v.count, 1):
                out.append((g, period))
    return out


def retain_locked(store: ListingStore, repo: Repository, retention: RetentionConfig, now: int, bundle: str,
                  in_use: Callable[[], set[VersionRef]] | None = None, timeout_s: float = 60.0,
                  before: Callable[[], Any] | None = None, damaged: set[VersionRef] | frozenset = frozenset()
                  ) -> dict[str, Any]:
    """Retention under the store's "retention" lock (jobs of different granularities never remove versions
    at once): `before` runs first under it (the servings sync), then `in_use()` names what running
    services use, which stays (unless replaced and `damaged`: no restart could use it). Skipped, and said
    so, when another job holds the lock past `timeout_s`."""
    with store.lock("retention", timeout_s) as got:
        if not got:
            log.warning("another build job holds the retention lock; retention is left to it this time")
            return {"removed": [], "retention": "skipped: another job held the lock"}
        out: dict[str, Any] = {"retention": "done"}
        if before is not None:
            out["before"] = before()
        removed = retain(repo, retention, now, bundle, in_use() if in_use is not None else frozenset(), damaged)
        out["removed"] = [v.key for v in removed]
        return out


def build_due(store: ListingStore, photos: PhotoStore | None, repo: Repository, embedder: Embedder,
              cfg: BuildConfig, retention: RetentionConfig, now: int | None = None,
              progress: bool = False, only: Sequence[Granularity] | None = None, *, apply_retention: bool = True,
              in_use: Callable[[], set[VersionRef]] | None = None, lock_timeout_s: float = 60.0) -> dict[str, Any]:
    """Verify the versions of the granularities `only` (`cfg.verify`), build what is due (hours, then days,
    then months), the period of a corrupt version included (same inputs: built again under its name, its
    files replaced; else a new version replaces it), then apply retention (under the lock, keeping what
    `in_use` names unless replaced and corrupt); a summary."""
    now = int(time.time() if now is None else now)
    bundle = embedder.bundle_sha256
    corrupt = verify_versions(repo, bundle, only) if cfg.verify else []
    unreadable = {k: v for k, v in repo.problems.items() if f"/{bundle}/" in k}
    bad = {v.ref for v in corrupt}
    built, found, healed = [], [], []
    for g, period in due(store, repo, bundle, cfg, retention, now, only, bad):
        info, new = build_period(store, photos, repo, embedder, g, period, cfg, progress)
        (built if new else found).append(info.key)
        if new and info.key in {v.key for v in corrupt}:  # the same inputs built again: its files replaced
            healed.append(info.key)
    healed += [path for path in unreadable if repo.get(*path.rsplit("/", 5)[1:5]) is not None]  # manifest rewritten
    out: dict[str, Any] = {"built": built, "unchanged": found, "corrupt": [v.key for v in corrupt] + list(unreadable),
                           "healed": healed, "removed": []}
    if apply_retention:
        out.update(retain_locked(store, repo, retention, now, bundle, in_use, lock_timeout_s, damaged=bad))
    else:
        out["damaged_refs"] = bad  # for the caller's retention
    return out
