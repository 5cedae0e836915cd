"""FAISS index store: inner product on L2-normalised vectors, 64-bit caller ids, timestamps, tombstones.

One `VectorIndex` is one partition on disk:

    index.faiss      the FAISS index (ids are the caller's int64 ids via IndexIDMap2)
    ids.npy, ts.npy  id and unix-seconds timestamp of every stored item (insertion order)
    vectors.npy      the exact float32 vectors (exact re-ranking of approximate indexes, rebuilds)
    deleted.npy      tombstoned ids (sold listings), filtered at query time
    manifest.json    factory string, dimension, count, model bundle sha256, created / updated time

`save()` writes everything into a temporary folder (each file and the folder fsync'd) and renames it
over the old one, so a crash never leaves a half index in place; `load()` puts back a copy a crash
left moved aside, and refuses an index built by a different model bundle.

Ids are the caller's listing ids: integers in [0, 2**63 - 1] (-1 pads short result lists, so
negative ids are refused). Vectors must be finite and of unit length (within `NORM_TOLERANCE`): an
unnormalised vector would outscore every real listing under inner product. A tombstoned id can be
added again (a re-listed item): the new row replaces it, the old row stays tombstoned.

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

from spnas_core.errors import DuplicateIdError, IndexMismatchError, InputNotFoundError, RetrievalError
from spnas_core.files import fsync_dir, recover_dir, replace_dir

INDEX_FORMAT = "spnas.index/1"
MAX_ID = 2**63 - 1
NORM_TOLERANCE = 1e-3  # |1 - ||v|||: float32 embedders normalise to ~1e-7; 1e-3 still refuses scaled vectors


def check_vectors(vectors: np.ndarray, dim: int) -> np.ndarray:
    """float32 [n, dim], finite and unit length within `NORM_TOLERANCE`; `RetrievalError` naming the first bad row."""
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim != 2 or v.shape[1] != dim:
        raise RetrievalError(f"vectors must be [n, {dim}], got {list(v.shape)}")
    finite = np.isfinite(v).all(axis=1)
    if not finite.all():
        raise RetrievalError(f"vector {int(np.argmin(finite))} holds NaN or infinity")
    norms = np.linalg.norm(v.astype(np.float64), axis=1)
    bad = np.abs(norms - 1.0) > NORM_TOLERANCE
    if bad.any():
        i = int(np.argmax(bad))
        raise RetrievalError(f"vector {i} has length {norms[i]:.6g}; vectors must be L2-normalised "
                             f"(|1 - ||v||| <= {NORM_TOLERANCE}): divide by the norm first")
    return np.ascontiguousarray(v)


def check_ids(ids: np.ndarray | list[int]) -> np.ndarray:
    """int64 ids in [0, 2**63 - 1], each once; `RetrievalError` otherwise."""
    a = np.asarray(ids)
    if a.size and a.dtype.kind not in "iu":
        raise RetrievalError("listing ids must be integers")
    a = a.astype(np.int64).ravel()
    if (a < 0).any():
        raise RetrievalError(f"listing ids must be in [0, {MAX_ID}] (-1 pads short result lists); got "
                             f"{int(a[a < 0][0])}")
    if len(np.unique(a)) != len(a):
        u, c = np.unique(a, return_counts=True)
        raise RetrievalError(f"listing id {int(u[c > 1][0])} appears twice in one request")
    return a


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
    extra: dict[str, Any] = field(default_factory=dict)  # written into manifest.json as is (partition state)

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
        return int(self._live_rows().sum())

    def _live_rows(self) -> np.ndarray:
        """Rows that are the latest row of their id and not tombstoned."""
        pos = self._positions()
        latest = np.zeros(len(self.ids), bool)
        if len(pos):
            latest[np.fromiter(pos.values(), np.int64, len(pos))] = True
        if self.deleted:
            latest &= ~np.isin(self.ids, np.fromiter(self.deleted, np.int64, len(self.deleted)))
        return latest

    def live_ids(self) -> np.ndarray:
        """Ids of the live listings."""
        return self.ids[self._live_rows()]

    def is_live(self, ids: np.ndarray) -> np.ndarray:
        """Per id: held here and not tombstoned."""
        pos = self._positions()
        return np.array([int(i) in pos and int(i) not in self.deleted for i in np.asarray(ids).ravel()], bool)

    def train(self, sample: np.ndarray) -> None:
        """Train an IVF / PQ index (no-op for Flat and HNSW)."""
        if not self.faiss_index.is_trained:
            self.faiss_index.train(np.ascontiguousarray(sample, dtype=np.float32))

    def check_add(self, ids: np.ndarray, vectors: np.ndarray, ts: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Validated (ids, vectors, ts) of an add, or `RetrievalError` / `DuplicateIdError`; changes nothing."""
        ids = check_ids(ids)
        vectors = check_vectors(vectors, self.dim)
        ts = np.asarray(ts, dtype=np.int64).ravel()
        if not (len(ids) == len(vectors) == len(ts)):
            raise RetrievalError(f"{len(ids)} ids, {len(vectors)} vectors and {len(ts)} timestamps do not match")
        live = self.is_live(ids)
        if live.any():
            raise DuplicateIdError(f"listing id {int(ids[live][0])} is already live in partition {self.name}; "
                                   f"delete it first (or give the new listing another id)")
        return ids, vectors, ts

    def add(self, ids: np.ndarray, vectors: np.ndarray, ts: np.ndarray) -> None:
        """Add listings (unit vectors, ids not live here); a tombstoned id is re-listed with a new row."""
        ids, vectors, ts = self.check_add(ids, vectors, ts)
        if len(ids) == 0:
            return
        if not self.faiss_index.is_trained:
            self.train(vectors)
        self.faiss_index.add_with_ids(vectors, ids)
        cache = getattr(self, "_pos_cache", None)
        if cache is not None and cache[0] == len(self.ids):  # extend the id -> row map instead of rebuilding it
            n0 = len(self.ids)
            cache[1].update((int(x), n0 + j) for j, x in enumerate(ids))
            object.__setattr__(self, "_pos_cache", (n0 + len(ids), cache[1]))
        self.ids = np.concatenate([self.ids, ids])
        self.ts = np.concatenate([self.ts, ts])
        self.vectors = np.concatenate([self.vectors, vectors])
        self.deleted.difference_update(ids.tolist())

    def delete(self, ids: np.ndarray | list[int]) -> int:
        """Tombstone ids held here; returns how many were live."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        live = ids[self.is_live(ids)] if len(ids) else ids
        self.deleted |= set(live.tolist())
        return len(set(live.tolist()))

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
        extra = len(self.deleted) + (len(self.ids) - len(self._positions()))  # tombstones and superseded rows
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
            _, first = np.unique(c, return_index=True)  # a re-listed id has two rows: score its latest once
            c = c[np.sort(first)]
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
        """(ids, vectors, ts) of live listings (latest row, not tombstoned): what compaction carries forward."""
        keep = self._live_rows()
        return self.ids[keep], self.vectors[keep], self.ts[keep]

    # ------------------------------------------------------------------ files
    def manifest(self) -> dict[str, Any]:
        return {**self.extra, "format": INDEX_FORMAT, "name": self.name, "factory": self.factory, "dim": self.dim,
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
            fsync_dir(tmp)
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
                  ids=np.load(folder / "ids.npy", allow_pickle=False),
                  ts=np.load(folder / "ts.npy", allow_pickle=False),
                  vectors=np.load(folder / "vectors.npy", allow_pickle=False),
                  deleted=set(np.load(folder / "deleted.npy", allow_pickle=False).tolist()), created=m["created"],
                  template=m.get("template"), extra={k: m[k] for k in ("partition",) if k in m},
                  faiss_index=faiss.read_index(str(folder / "index.faiss")))
        if idx.faiss_index.ntotal != len(idx.ids):
            raise RetrievalError(f"{folder}: index holds {idx.faiss_index.ntotal} vectors but ids.npy {len(idx.ids)}")
        return idx


def _recover(folder: Path) -> None:
    """Undo what a killed `save` leaves: the old copy moved aside (put back) and temporary folders."""
    if not folder.parent.exists():
        return
    recover_dir(folder)
    for stale in folder.parent.glob(f".{folder.name}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
