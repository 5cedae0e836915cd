"""FAISS index store: inner product on L2-normalised vectors, 64-bit caller ids, timestamps, tombstones.

One `VectorIndex` is one partition on disk:

    index.faiss      the FAISS index (ids are the caller's int64 ids via IndexIDMap2)
    ids.npy, ts.npy  id and unix-seconds timestamp of every stored item (insertion order)
    vectors.npy      the exact float32 vectors (exact re-ranking of approximate indexes, rebuilds)
    deleted.npy      tombstoned ids (sold listings), filtered at query time
    manifest.json    factory string, dimension, count, model bundle sha256, created / updated time

`save()` writes everything into a temporary folder and renames it over the old one, so a crash
never leaves a half index in place. `load()` refuses an index built by a different model bundle.

Factory strings are FAISS `index_factory` strings. `default_factory(n, d)` picks exact `Flat`
below 1e5 items, `HNSW32` up to 1e6, and `IVF<nlist>,PQ<m>` above (with exact re-ranking from the
stored vectors). Knobs: `nprobe` (IVF lists visited), `efSearch` (HNSW candidate list),
`rerank` (how many candidates are re-scored exactly, as a multiple of k).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spnas.errors import IndexMismatchError, InputNotFoundError, RetrievalError
from spnas.files import replace_dir

INDEX_FORMAT = "spnas.index/1"


def default_factory(n: int, d: int) -> str:
    """Exact below 1e5 items, HNSW32 to 1e6, IVF-PQ (re-ranked exactly) above."""
    if n < 100_000:
        return "Flat"
    if n <= 1_000_000:
        return "HNSW32"
    nlist = 2 ** int(round(math.log2(4 * math.sqrt(n))))
    m = next(m for m in (64, 48, 32, 24, 16, 8) if d % m == 0)
    return f"IVF{nlist},PQ{m}"


def is_approximate(factory: str) -> bool:
    return factory.strip() != "Flat"


def needs_training(factory: str) -> bool:
    return "IVF" in factory or "PQ" in factory


@dataclass
class SearchParams:
    """Query-time knobs (see the module docstring)."""

    nprobe: int = 32
    efSearch: int = 128
    rerank: int = 4


@dataclass
class Hits:
    """Top-k results of a batch of queries: ids (-1 padded), scores, timestamps."""

    ids: np.ndarray
    scores: np.ndarray
    ts: np.ndarray


def _faiss():
    import faiss

    return faiss


def new_faiss_index(factory: str, d: int):
    """An empty id-mapped inner-product index for a factory string."""
    faiss = _faiss()
    try:
        base = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise RetrievalError(f"bad index factory string '{factory}': {str(e).splitlines()[-1]}") from None
    return faiss.IndexIDMap2(base)


def apply_params(index, params: SearchParams) -> None:
    faiss = _faiss()
    base = faiss.downcast_index(index.index if hasattr(index, "index") else index)
    if hasattr(base, "nprobe"):
        base.nprobe = params.nprobe
    if hasattr(base, "hnsw"):
        base.hnsw.efSearch = params.efSearch


@dataclass
class VectorIndex:
    """One partition's index plus the exact vectors, ids, timestamps and tombstones."""

    factory: str
    dim: int
    bundle_sha256: str
    name: str = "index"
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    vectors: np.ndarray | None = None
    deleted: set[int] = field(default_factory=set)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S"))
    template: str | None = None  # the trained IVF template this index was cloned from (merge_from needs one)
    faiss_index: Any = None
    params: SearchParams = field(default_factory=SearchParams)

    def __post_init__(self) -> None:
        if self.vectors is None:
            self.vectors = np.zeros((0, self.dim), np.float32)
        if self.faiss_index is None:
            self.faiss_index = new_faiss_index(self.factory, self.dim)

    # ------------------------------------------------------------------ content
    def __len__(self) -> int:
        return len(self.ids)

    @property
    def live_count(self) -> int:
        return int(len(self.ids) - np.isin(self.ids, list(self.deleted)).sum()) if self.deleted else len(self.ids)

    def train(self, sample: np.ndarray) -> None:
        """Train an IVF / PQ index (no-op for Flat and HNSW)."""
        if not self.faiss_index.is_trained:
            self.faiss_index.train(np.ascontiguousarray(sample, dtype=np.float32))

    def add(self, ids: np.ndarray, vectors: np.ndarray, ts: np.ndarray) -> None:
        """Add items (vectors must be L2-normalised; ids unique within the partition)."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ts = np.asarray(ts, dtype=np.int64).ravel()
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise RetrievalError(f"vectors must be [n, {self.dim}], got {list(vectors.shape)}")
        if not (len(ids) == len(vectors) == len(ts)):
            raise RetrievalError(f"{len(ids)} ids, {len(vectors)} vectors and {len(ts)} timestamps do not match")
        if len(ids) == 0:
            return
        dup = np.intersect1d(ids, self.ids)
        if len(dup) or len(np.unique(ids)) != len(ids):
            raise RetrievalError(f"ids already in partition {self.name}: {dup[:5].tolist()} (delete them first)")
        if not self.faiss_index.is_trained:
            self.train(vectors)
        self.faiss_index.add_with_ids(vectors, ids)
        self.ids = np.concatenate([self.ids, ids])
        self.ts = np.concatenate([self.ts, ts])
        self.vectors = np.concatenate([self.vectors, vectors])
        self.deleted.difference_update(ids.tolist())

    def delete(self, ids: np.ndarray | list[int]) -> int:
        """Tombstone ids held here; returns how many were live."""
        present = set(np.intersect1d(np.asarray(ids, dtype=np.int64), self.ids).tolist())
        new = present - self.deleted
        self.deleted |= present
        return len(new)

    # ------------------------------------------------------------------ queries
    def search(self, queries: np.ndarray, k: int, start_ts: int | None = None, end_ts: int | None = None,
               params: SearchParams | None = None) -> Hits:
        """Top-k by inner product, tombstones and out-of-window items removed, exactly re-ranked."""
        params = params or self.params
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        nq = len(q)
        out_ids = np.full((nq, k), -1, np.int64)
        out_sc = np.full((nq, k), -np.inf, np.float32)
        out_ts = np.zeros((nq, k), np.int64)
        if len(self.ids) == 0 or k <= 0:
            return Hits(out_ids, out_sc, out_ts)
        windowed = start_ts is not None or end_ts is not None
        extra = len(self.deleted)
        fetch = k * (params.rerank if is_approximate(self.factory) else 1) + extra
        if windowed:
            in_win = self._in_window(start_ts, end_ts)
            extra_out = int((~in_win).sum())
            fetch += extra_out
        fetch = min(fetch, len(self.ids))
        apply_params(self.faiss_index, params)
        _, cand = self.faiss_index.search(q, fetch)
        pos_of = self._positions()
        for i in range(nq):
            c = cand[i][cand[i] >= 0]
            if self.deleted:
                c = c[~np.isin(c, list(self.deleted))]
            pos = np.array([pos_of[int(x)] for x in c], dtype=np.int64)
            if windowed and len(pos):
                pos = pos[in_win[pos]]
            if not len(pos):
                continue
            exact = self.vectors[pos] @ q[i]  # exact scores: re-ranks approximate candidates
            order = np.argsort(-exact, kind="stable")[:k]
            n = len(order)
            out_ids[i, :n] = self.ids[pos[order]]
            out_sc[i, :n] = exact[order]
            out_ts[i, :n] = self.ts[pos[order]]
        return Hits(out_ids, out_sc, out_ts)

    def _in_window(self, start_ts: int | None, end_ts: int | None) -> np.ndarray:
        m = np.ones(len(self.ts), bool)
        if start_ts is not None:
            m &= self.ts >= start_ts
        if end_ts is not None:
            m &= self.ts < end_ts
        return m

    def _positions(self) -> dict[int, int]:
        cache = getattr(self, "_pos_cache", None)
        if cache is None or cache[0] != len(self.ids):
            cache = (len(self.ids), {int(x): i for i, x in enumerate(self.ids)})
            object.__setattr__(self, "_pos_cache", cache)
        return cache[1]

    def live_items(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, vectors, ts) of items not tombstoned: what compaction carries forward."""
        keep = ~np.isin(self.ids, list(self.deleted)) if self.deleted else np.ones(len(self.ids), bool)
        return self.ids[keep], self.vectors[keep], self.ts[keep]

    # ------------------------------------------------------------------ files
    def manifest(self) -> dict[str, Any]:
        return {"format": INDEX_FORMAT, "name": self.name, "factory": self.factory, "dim": self.dim,
                "count": int(len(self.ids)), "live": self.live_count, "deleted": len(self.deleted),
                "bundle_sha256": self.bundle_sha256, "created": self.created, "template": self.template,
                "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), "metric": "inner_product",
                "ts_range": [int(self.ts.min()), int(self.ts.max())] if len(self.ts) else None}

    def save(self, folder: str | os.PathLike) -> Path:
        """Write atomically: a temporary sibling folder, then a rename over the old one."""
        faiss = _faiss()
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
        try:
            faiss.write_index(self.faiss_index, str(tmp / "index.faiss"))
            np.save(tmp / "ids.npy", self.ids)
            np.save(tmp / "ts.npy", self.ts)
            np.save(tmp / "vectors.npy", self.vectors)
            np.save(tmp / "deleted.npy", np.asarray(sorted(self.deleted), dtype=np.int64))
            (tmp / "manifest.json").write_text(json.dumps(self.manifest(), indent=2) + "\n")
            for f in tmp.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            os.chmod(tmp, 0o755)
            replace_dir(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, expected_bundle: str | None = None) -> "VectorIndex":
        """Load a partition; with `expected_bundle`, refuse one built by another model bundle."""
        faiss = _faiss()
        folder = Path(folder)
        _recover(folder)
        mpath = folder / "manifest.json"
        if not mpath.is_file():
            raise InputNotFoundError(f"{folder} is not an index (no manifest.json)")
        m = json.loads(mpath.read_text())
        if m.get("format") != INDEX_FORMAT:
            raise RetrievalError(f"{mpath}: unsupported index format {m.get('format')!r}")
        if expected_bundle is not None and m["bundle_sha256"] != expected_bundle:
            raise IndexMismatchError(
                f"index {folder} was built with model bundle {m['bundle_sha256'][:12]}..., but the embedder is "
                f"bundle {expected_bundle[:12]}...: its vectors live in another embedding space. Rebuild the index "
                f"with this bundle (or serve the bundle it was built with)")
        idx = cls(factory=m["factory"], dim=int(m["dim"]), bundle_sha256=m["bundle_sha256"], name=m["name"],
                  ids=np.load(folder / "ids.npy"), ts=np.load(folder / "ts.npy"),
                  vectors=np.load(folder / "vectors.npy"),
                  deleted=set(np.load(folder / "deleted.npy").tolist()), created=m["created"],
                  template=m.get("template"),
                  faiss_index=faiss.read_index(str(folder / "index.faiss")))
        if idx.faiss_index.ntotal != len(idx.ids):
            raise RetrievalError(f"{folder}: index holds {idx.faiss_index.ntotal} vectors but ids.npy {len(idx.ids)}")
        return idx


def _recover(folder: Path) -> None:
    """Undo what a killed `save` leaves: the old copy moved aside (put back) and temporary folders."""
    if not folder.parent.exists():
        return
    olds = sorted(folder.parent.glob(f".{folder.name}.old-*"))
    if not folder.exists() and olds:
        os.replace(olds.pop(), folder)
    for stale in olds + list(folder.parent.glob(f".{folder.name}.*.tmp")):
        shutil.rmtree(stale, ignore_errors=True)
