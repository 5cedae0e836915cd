"""One version searched read-only: its FAISS index (memory-mapped where the type allows), the listing
ids and times of its rows, and the listings removed or changed since it was built.

Rows are in listing-time order, so a time window is a range of row positions (`IDSelectorRange`).
Listings changed after the version's snapshot are left out with `IDSelectorNot(IDSelectorBatch(rows))`,
as of the change number the caller asks for, so the gateway's delta (which holds their new state) and
the versions agree exactly on every listing; FAISS applies both selectors while it searches. A window
of at most `exact_below` rows on an approximate index is searched exactly instead, on the exact
vectors under `IDSelectorRange` (FAISS then scans only that slice; a graph walk restricted to a few
per cent of its nodes finds too few of them), the few left-out rows in it dropped from a slightly
longer list. A compressed version (`,RDisk`) keeps its exact vectors on disk (`DiskVectors`): its
IVF-PQ index gives k * `SearchParams.rerank_depth(n)` candidates under the same selectors, which are re-ranked exactly
against their rows read from disk; a narrow window is scanned exactly on its slice of that file. The
gateway's delta is itself a `VersionIndex`, built in memory.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from spnas_core.errors import RetrievalError

from .config import SearchParams
from .factory import DiskVectors, build_index, exact_part, reranked_from_disk, search_params
from .versions import VersionInfo, verify


class VersionIndex:
    """A time-ordered FAISS index with listing ids, windows and exclusions (thread-safe searches)."""

    def __init__(self, index: Any, ids: np.ndarray, ts: np.ndarray, info: VersionInfo | None = None,
                 params: SearchParams | None = None, vectors: DiskVectors | None = None) -> None:
        if index.ntotal != len(ids) or len(ids) != len(ts) or (vectors is not None and len(vectors) != len(ids)):
            raise RetrievalError(f"index holds {index.ntotal} vectors for {len(ids)} ids and {len(ts)} times"
                                 + (f" and {len(vectors)} exact vectors" if vectors is not None else ""))
        self.index, self.exact, self.vectors = index, exact_part(index), vectors
        self.ids, self.ts = np.asarray(ids, np.int64), np.asarray(ts, np.int64)
        self.info, self.params = info, params or SearchParams()
        self.dim = index.d
        self._order: np.ndarray | None = None  # rows by listing id, made at the first exclusion (int32 when it
        self._sorted: np.ndarray | None = None  # fits: 12 B a listing, not 16)
        self._ex_rows = np.zeros(0, np.int64)  # rows excluded, in the order of the changes that excluded them
        self._ex_seqs = np.zeros(0, np.int64)
        self._sel_cache: tuple[int, Any] | None = None
        self._lock = threading.Lock()
        self.folder: Path | None = None  # where its files are (a loaded version)

    @classmethod
    def load(cls, folder: str | Path, info: VersionInfo, params: SearchParams | None = None,
             mmap: bool = True, check: bool = True) -> "VersionIndex":
        """Verify the files against the manifest (refusing a mismatch; `check=False` where the caller has
        just verified them), then open them read-only."""
        import faiss

        folder = Path(folder)
        if check:
            verify(folder, info)
        flags = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY if mmap else 0
        index = faiss.read_index(str(folder / info.files["index"]["name"]), flags)
        ids = np.load(folder / info.files["ids"]["name"], mmap_mode="r" if mmap else None)
        ts = np.load(folder / info.files["ts"]["name"], mmap_mode="r" if mmap else None)
        vectors = DiskVectors(folder / info.files["vectors"]["name"]) if "vectors" in info.files else None
        if reranked_from_disk(info.factory) and vectors is None:
            raise RetrievalError(f"version {info.key} ({info.factory}) has no vectors file to re-rank from")
        out = cls(index, ids, ts, info, params, vectors)
        out.folder = folder
        return out

    @classmethod
    def in_memory(cls, ids: np.ndarray, ts: np.ndarray, vectors: np.ndarray, params: SearchParams | None = None,
                  dim: int | None = None) -> "VersionIndex":
        """An exact index of listings (sorted here by time): the gateway's delta."""
        import faiss

        order = np.lexsort((ids, ts))
        d = vectors.shape[1] if len(vectors) else dim
        index = faiss.IndexFlatIP(d)
        if len(order):
            index.add(np.ascontiguousarray(vectors[order], np.float32))
        return cls(index, np.asarray(ids)[order], np.asarray(ts)[order], None, params)

    @classmethod
    def build(cls, ids: np.ndarray, ts: np.ndarray, vectors: np.ndarray, factory: str, cfg: Any,
              progress: bool = False, vectors_file: str | Path | None = None) -> "VersionIndex":
        """A version's index from listings already in time order (what `build` writes to the repository); a
        `,RDisk` factory re-ranks from `vectors_file` (written here when missing)."""
        disk = None
        if reranked_from_disk(factory):
            from .factory import write_vectors

            if vectors_file is None:
                raise RetrievalError(f"{factory} keeps its exact vectors on disk: give the file to write them to")
            if not Path(vectors_file).is_file():
                write_vectors(vectors, vectors_file)
            disk = DiskVectors(vectors_file)
        return cls(build_index(vectors, factory, cfg, progress), ids, ts, vectors=disk)

    def __len__(self) -> int:
        return len(self.ids)

    # ------------------------------------------------------------------ exclusions
    def rows_of(self, listing_ids: np.ndarray) -> np.ndarray:
        """Row of each listing id (-1 when this version does not hold it)."""
        if self._order is None:
            with self._lock:
                if self._order is None:
                    order = np.argsort(self.ids, kind="stable")
                    self._sorted = self.ids[order]
                    self._order = order.astype(np.int32) if len(order) < 2**31 else order
        q = np.asarray(listing_ids, np.int64)
        i = np.searchsorted(self._sorted, q).clip(0, max(len(self._sorted) - 1, 0))
        hit = (self._sorted[i] == q) if len(self._sorted) else np.zeros(len(q), bool)
        return np.where(hit, self._order[i] if len(self._sorted) else -1, -1)

    def exclude(self, listing_ids: np.ndarray, seqs: np.ndarray) -> int:
        """Exclude the rows of listings changed at change numbers `seqs` (ascending); returns how many rows."""
        rows = self.rows_of(listing_ids)
        keep = rows >= 0
        with self._lock:
            self._ex_rows = np.concatenate([self._ex_rows, rows[keep]])
            self._ex_seqs = np.concatenate([self._ex_seqs, np.asarray(seqs, np.int64)[keep]])
        return int(keep.sum())

    @property
    def excluded(self) -> int:
        return len(np.unique(self._ex_rows))

    def _excluded(self, as_of: int | None) -> tuple[np.ndarray, Any]:
        """(sorted excluded rows, IDSelectorNot over them or None) as of change number `as_of`."""
        import faiss

        with self._lock:
            n = len(self._ex_seqs) if as_of is None else int(np.searchsorted(self._ex_seqs, as_of, side="right"))
            if self._sel_cache is None or self._sel_cache[0] != n:
                rows = np.ascontiguousarray(np.unique(self._ex_rows[:n]), np.int64)
                sel = None
                if n:
                    batch = faiss.IDSelectorBatch(rows)
                    sel = faiss.IDSelectorNot(batch)
                    sel._keep = batch  # FAISS holds a raw pointer: keep the batch alive with its owner
                self._sel_cache = (n, rows, sel)
            return self._sel_cache[1], self._sel_cache[2]

    # ------------------------------------------------------------------ search
    def window(self, start: int | None, end: int | None) -> tuple[int, int]:
        """Rows [lo, hi) of listings with start <= ts < end."""
        lo = 0 if start is None else int(np.searchsorted(self.ts, start, side="left"))
        hi = len(self.ts) if end is None else int(np.searchsorted(self.ts, end, side="left"))
        return lo, max(lo, hi)

    def search(self, queries: np.ndarray, k: int, start: int | None = None, end: int | None = None,
               as_of: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores [nq, k], listing ids [nq, k]) by inner product, best first; -1 pads short lists."""
        import faiss

        q = np.ascontiguousarray(np.atleast_2d(queries), np.float32)
        nq = len(q)
        scores = np.full((nq, k), -np.inf, np.float32)
        out = np.full((nq, k), -1, np.int64)
        lo, hi = self.window(start, end)
        if hi <= lo:
            return scores, out
        ex_rows, ex_sel = self._excluded(as_of)
        rng = faiss.IDSelectorRange(lo, hi, True) if (lo, hi) != (0, len(self)) else None
        if self.vectors is not None:
            d, i = self._reranked(q, k, rng, ex_sel, lo, hi, ex_rows)
        elif rng is not None and self.exact is not self.index and hi - lo <= self.params.exact_below:
            d, i = self._narrow(q, k, rng, lo, hi, ex_rows)
        else:  # the index itself, restricted by FAISS selectors while it searches
            sel = rng if ex_sel is None else ex_sel if rng is None else faiss.IDSelectorAnd(rng, ex_sel)
            d, i = self.index.search(q, k, params=search_params(self.index, sel, self.params, hi - lo))
        ok = i >= 0
        scores[ok], out[ok] = d[ok], self.ids[i[ok]]
        return scores, out

    def _narrow(self, q: np.ndarray, k: int, rng: Any, lo: int, hi: int, ex_rows: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k of a narrow window: the exact vectors searched under IDSelectorRange (FAISS scans only
        that slice of rows), asking for as many more hits as there are excluded rows in it, which are dropped."""
        a, b = np.searchsorted(ex_rows, [lo, hi])
        kk = min(hi - lo, k + int(b - a))
        d, i = self.exact.search(q, kk, params=search_params(self.exact, rng, self.params))
        if b > a:
            drop = np.isin(i, ex_rows[a:b])
            order = np.argsort(drop, axis=1, kind="stable")  # kept rows first, in their score order
            d = np.take_along_axis(np.where(drop, -np.inf, d), order, 1)
            i = np.take_along_axis(np.where(drop, -1, i), order, 1)
        pad = max(0, k - i.shape[1])
        return (np.pad(d[:, :k], ((0, 0), (0, pad)), constant_values=-np.inf),
                np.pad(i[:, :k], ((0, 0), (0, pad)), constant_values=-1))

    def _reranked(self, q: np.ndarray, k: int, rng: Any, ex_sel: Any, lo: int, hi: int, ex_rows: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
        """A compressed version: exact scores from the vectors on disk, for the IVF-PQ's k * k_factor
        candidates (under the window and exclusion selectors), or for every row of a narrow window."""
        import faiss

        nq = len(q)
        scores = np.full((nq, k), -np.inf, np.float32)
        out = np.full((nq, k), -1, np.int64)
        if hi - lo <= self.params.exact_below:  # the whole slice, exactly
            rows = np.arange(lo, hi, dtype=np.int64)
            a, b = np.searchsorted(ex_rows, [lo, hi])
            if b > a:
                rows = rows[~np.isin(rows, ex_rows[a:b])]
            if not len(rows):
                return scores, out
            s = q @ self.vectors.slice(lo, hi)[rows - lo].T  # [nq, rows]
            kk = min(k, len(rows))
            top = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
            top = np.take_along_axis(top, np.argsort(-np.take_along_axis(s, top, 1), axis=1, kind="stable"), 1)
            scores[:, :kk], out[:, :kk] = np.take_along_axis(s, top, 1), rows[top]
            return scores, out
        sel = rng if ex_sel is None else ex_sel if rng is None else faiss.IDSelectorAnd(rng, ex_sel)
        kk = min(hi - lo, k * self.params.rerank_depth(hi - lo))
        _, cand = self.index.search(q, kk, params=search_params(self.index, sel, self.params))
        rows = np.unique(cand[cand >= 0])
        vecs = self.vectors.rows(rows)
        for j in range(nq):
            c = cand[j][cand[j] >= 0]
            if not len(c):
                continue
            s = vecs[np.searchsorted(rows, c)] @ q[j]
            top = np.argsort(-s, kind="stable")[:k]
            scores[j, :len(top)], out[j, :len(top)] = s[top], c[top]
        return scores, out
