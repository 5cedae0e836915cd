"""Time-partitioned indexes: hourly, daily and monthly partitions of one embedding space.

New listings go to the partition of their hour (`h/2026-11-26T15`). `compact(now)` rolls finished
hours into their day (`d/2026-11-26`) and finished days into their month (`m/2026-11`): IVF
partitions are cloned from one trained template per month so `merge_from` works; HNSW and Flat
partitions are rebuilt from the exact vectors. Deletions (sold listings) are tombstones recorded
in every partition holding the id and in a store-wide list, honoured at query time everywhere.
A query fans out over the partitions covering its time window, merges the top-k, de-duplicates
ids and re-ranks with exact vectors (each partition scores its candidates exactly).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .index import Hits, SearchParams, VectorIndex, default_factory, needs_training
from spnas.errors import RetrievalError

UTC = dt.timezone.utc
LEVELS = ("h", "d", "m")


def partition_key(ts: int, level: str = "h") -> str:
    """The partition of a unix timestamp at a level: h/YYYY-MM-DDTHH, d/YYYY-MM-DD, m/YYYY-MM."""
    t = dt.datetime.fromtimestamp(int(ts), UTC)
    if level == "h":
        return f"h/{t:%Y-%m-%dT%H}"
    if level == "d":
        return f"d/{t:%Y-%m-%d}"
    if level == "m":
        return f"m/{t:%Y-%m}"
    raise RetrievalError(f"partition level must be h, d or m; got '{level}'")


def key_range(key: str) -> tuple[int, int]:
    """[start, end) unix seconds a partition key covers."""
    level, stamp = key.split("/", 1)
    if level == "h":
        start = dt.datetime.strptime(stamp, "%Y-%m-%dT%H").replace(tzinfo=UTC)
        end = start + dt.timedelta(hours=1)
    elif level == "d":
        start = dt.datetime.strptime(stamp, "%Y-%m-%d").replace(tzinfo=UTC)
        end = start + dt.timedelta(days=1)
    elif level == "m":
        start = dt.datetime.strptime(stamp, "%Y-%m").replace(tzinfo=UTC)
        end = (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    else:
        raise RetrievalError(f"bad partition key '{key}'")
    return int(start.timestamp()), int(end.timestamp())


def parent_key(key: str) -> str | None:
    level = key.split("/", 1)[0]
    start, _ = key_range(key)
    return {"h": partition_key(start, "d"), "d": partition_key(start, "m"), "m": None}[level]


def merge_hits(parts: Iterable[Hits], k: int) -> Hits:
    """Merge per-partition top-k lists: best score per id (de-duplicated), then the top-k overall."""
    parts = list(parts)
    if not parts:
        return Hits(np.zeros((0, k), np.int64), np.zeros((0, k), np.float32), np.zeros((0, k), np.int64))
    nq = len(parts[0].ids)
    ids = np.full((nq, k), -1, np.int64)
    sc = np.full((nq, k), -np.inf, np.float32)
    ts = np.zeros((nq, k), np.int64)
    for i in range(nq):
        best: dict[int, tuple[float, int]] = {}
        for h in parts:
            for j in range(h.ids.shape[1]):
                x = int(h.ids[i, j])
                if x < 0:
                    continue
                s = float(h.scores[i, j])
                if x not in best or s > best[x][0] or (s == best[x][0] and h.ts[i, j] > best[x][1]):
                    best[x] = (s, int(h.ts[i, j]))
        top = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))[:k]
        for j, (x, (s, t)) in enumerate(top):
            ids[i, j], sc[i, j], ts[i, j] = x, s, t
    return Hits(ids, sc, ts)


@dataclass
class CompactionReport:
    rolled: dict[str, list[str]]
    carried: int
    dropped_deleted: int


class PartitionedStore:
    """A folder of partitions (`root/h/...`, `root/d/...`, `root/m/...`) for one model bundle."""

    def __init__(self, root: str | os.PathLike, bundle_sha256: str, dim: int,
                 factory: str | Callable[[int, int], str] = "auto", params: SearchParams | None = None) -> None:
        self.root = Path(root)
        self.bundle = bundle_sha256
        self.dim = dim
        self.factory = factory
        self.params = params or SearchParams()
        self.root.mkdir(parents=True, exist_ok=True)
        self._cache: dict[str, VectorIndex] = {}

    # ------------------------------------------------------------------ partitions
    def keys(self) -> list[str]:
        out = []
        for level in LEVELS:
            d = self.root / level
            if d.is_dir():
                out += [f"{level}/{p.name}" for p in sorted(d.iterdir())
                        if p.is_dir() and not p.name.startswith(".") and (p / "manifest.json").exists()]
        return out

    def path(self, key: str) -> Path:
        return self.root / key

    def _factory_for(self, n: int) -> str:
        if callable(self.factory):
            return self.factory(n, self.dim)
        return default_factory(n, self.dim) if self.factory == "auto" else str(self.factory)

    def open(self, key: str, create_for: int = 0) -> VectorIndex:
        """A partition (loaded once, cached); created empty when missing and `create_for` > 0."""
        if key in self._cache:
            return self._cache[key]
        p = self.path(key)
        if (p / "manifest.json").exists() or any(p.parent.glob(f".{p.name}.old-*")):
            idx = VectorIndex.load(p, expected_bundle=self.bundle)
        else:
            idx = self._new_index(key, create_for)
        idx.params = self.params
        self._cache[key] = idx
        return idx

    def _new_index(self, key: str, n: int) -> VectorIndex:
        factory = self._factory_for(max(n, 1))
        idx = VectorIndex(factory, self.dim, self.bundle, name=key)
        if needs_training(factory):
            template = self.template_for(key)
            if template is not None:
                import faiss

                idx.faiss_index = faiss.clone_index(template)
                idx.faiss_index.reset()
                idx.template = partition_key(key_range(key)[0], "m")
        return idx

    def template_for(self, key: str):
        """The month's trained IVF template (so hourly/daily IVF partitions can be merged), if any."""
        import faiss

        month = partition_key(key_range(key)[0], "m").split("/", 1)[1]
        p = self.root / "templates" / f"{month}.faiss"
        return faiss.read_index(str(p)) if p.exists() else None

    def train_template(self, month_ts: int, sample: np.ndarray, factory: str) -> Path:
        """Train and store the month's IVF template on a sample of its vectors."""
        import faiss

        from .index import new_faiss_index

        idx = new_faiss_index(factory, self.dim)
        idx.train(np.ascontiguousarray(sample, dtype=np.float32))
        month = partition_key(month_ts, "m").split("/", 1)[1]
        p = self.root / "templates" / f"{month}.faiss"
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.tmp")
        faiss.write_index(idx, str(tmp))
        os.replace(tmp, p)
        return p

    # ------------------------------------------------------------------ writes
    def add(self, ids: np.ndarray, vectors: np.ndarray, ts: np.ndarray) -> dict[str, int]:
        """New listings go to the partition of their hour; returns items added per partition."""
        ids = np.asarray(ids, np.int64)
        ts = np.asarray(ts, np.int64)
        vectors = np.asarray(vectors, np.float32)
        keys = np.array([partition_key(t, "h") for t in ts])
        added: dict[str, int] = {}
        for key in sorted(set(keys.tolist())):
            m = keys == key
            idx = self.open(key, create_for=int(m.sum()))
            idx.add(ids[m], vectors[m], ts[m])
            idx.save(self.path(key))
            added[key] = int(m.sum())
        return added

    def delete(self, ids: Iterable[int]) -> int:
        """Tombstone ids in every partition that holds them and in the store-wide list."""
        ids = np.asarray(list(ids), np.int64)
        n = 0
        for key in self.keys():
            idx = self.open(key)
            hit = idx.delete(ids)
            if hit:
                idx.save(self.path(key))
                n += hit
        dead = self.deleted() | set(ids.tolist())
        _write_json_atomic(self.root / "deleted.json", sorted(dead))
        return n

    def deleted(self) -> set[int]:
        p = self.root / "deleted.json"
        return set(json.loads(p.read_text())) if p.exists() else set()

    # ------------------------------------------------------------------ queries
    def covering(self, start_ts: int | None, end_ts: int | None) -> list[str]:
        """Partitions whose time range overlaps [start_ts, end_ts)."""
        lo = -(2**62) if start_ts is None else int(start_ts)
        hi = 2**62 if end_ts is None else int(end_ts)
        out = []
        for key in self.keys():
            a, b = key_range(key)
            if a < hi and lo < b:
                out.append(key)
        return out

    def search(self, queries: np.ndarray, k: int = 10, start_ts: int | None = None, end_ts: int | None = None
               ) -> Hits:
        """Fan out over the covering partitions, merge, de-duplicate, honour deletions everywhere."""
        q = np.atleast_2d(np.asarray(queries, np.float32))
        dead = self.deleted()
        parts = []
        for key in self.covering(start_ts, end_ts):
            idx = self.open(key)
            extra = len(dead - idx.deleted)
            h = idx.search(q, k + min(extra, 10 * k), start_ts, end_ts)
            if dead:
                h = _drop(h, dead)
            parts.append(h)
        if not parts:
            return Hits(np.full((len(q), k), -1, np.int64), np.full((len(q), k), -np.inf, np.float32),
                        np.zeros((len(q), k), np.int64))
        return merge_hits(parts, k)

    # ------------------------------------------------------------------ compaction
    def compact(self, now_ts: int) -> CompactionReport:
        """Roll finished hours into days and finished days into months (tombstoned items are dropped)."""
        rolled: dict[str, list[str]] = {}
        carried = dropped = 0
        for level, up in (("h", "d"), ("d", "m")):
            current = partition_key(now_ts, level)
            for key in [k for k in self.keys() if k.startswith(f"{level}/") and k != current]:
                if key_range(key)[1] > now_ts:
                    continue
                parent = parent_key(key)
                assert parent is not None
                src = self.open(key)
                ids, vecs, ts = src.live_items()
                dropped += len(src) - len(ids)
                dst = self.open(parent, create_for=len(ids))
                if src.template is not None and src.template == dst.template and len(src.deleted) == 0:
                    # both cloned from the month's trained template: move the inverted lists, no re-encoding
                    dst.faiss_index.merge_from(src.faiss_index, 0)
                    dst.ids = np.concatenate([dst.ids, src.ids])
                    dst.ts = np.concatenate([dst.ts, src.ts])
                    dst.vectors = np.concatenate([dst.vectors, src.vectors])
                else:
                    dst.add(ids, vecs, ts)
                dst.deleted |= (src.deleted & set(dst.ids.tolist()))
                dst.save(self.path(parent))
                carried += len(ids)
                rolled.setdefault(parent, []).append(key)
                self._remove(key)
        return CompactionReport(rolled, carried, dropped)

    def _remove(self, key: str) -> None:
        import shutil

        self._cache.pop(key, None)
        p = self.path(key)
        gone = p.with_name(f".{p.name}.compacted")
        os.replace(p, gone)
        shutil.rmtree(gone, ignore_errors=True)

    def stats(self) -> dict[str, dict]:
        return {k: self.open(k).manifest() for k in self.keys()}


def _drop(h: Hits, dead: set[int]) -> Hits:
    mask = np.isin(h.ids, list(dead))
    ids = np.where(mask, -1, h.ids)
    sc = np.where(mask, -np.inf, h.scores)
    return Hits(ids, sc.astype(np.float32), h.ts)


def _write_json_atomic(path: Path, obj: object) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)
