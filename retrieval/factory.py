"""Which FAISS index a version gets, built from its size: exact `Flat` for small periods, `HNSW<M>` up
to `hnsw_up_to`, and above it the compressed path for the deck's scale (tens of millions of listings a
month): `IVF<nlist>_HNSW32,PQ<m>,RDisk` (OPQ in front with `factory.opq`). Vectors are unit length,
the metric is inner product, and the index's own ids are row positions 0..n-1 in listing-time order: a
time window is then one contiguous range of ids (`IDSelectorRange`), and its rows are one contiguous
slice of the exact vectors.

`,RDisk` is spnas's suffix, by analogy with FAISS's `,RFlat`: the candidates of the compressed index
(k * `k_factor` of them) are re-ranked exactly against the full vectors, which stay on disk in the
version (`vectors.npy`, float16) and are read row by row (`DiskVectors`), never mapped into memory, so
a service holds only the PQ codes, the coarse quantizer and the ids: about m + 8 bytes a listing
instead of 4 d (bench/bench_index_compressed.py measures it at 1e7). The coarse quantizer is an HNSW
graph over the centroids, so assigning 1e7 vectors to their lists takes minutes, not an hour.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from spnas_core.errors import RetrievalError

from .config import FactoryConfig, SearchParams
from .interface import IndexFamily

RDISK = ",RDisk"
VECTORS_DTYPE = np.float16  # exact vectors on disk: half the reads of float32, scores within ~1e-3


class FlatFamily(IndexFamily):
    """Exact search (`Flat`) for small periods: below `flat_below` listings."""

    name = "flat"

    def fits(self, n: int, cfg: FactoryConfig) -> bool:
        return n < cfg.flat_below

    def factory(self, n: int, d: int, cfg: FactoryConfig) -> str:
        return "Flat"


class HnswFamily(IndexFamily):
    """A graph index (`HNSW<M>`) up to `hnsw_up_to` listings, its vectors in memory."""

    name = "hnsw"

    def fits(self, n: int, cfg: FactoryConfig) -> bool:
        return n <= cfg.hnsw_up_to

    def factory(self, n: int, d: int, cfg: FactoryConfig) -> str:
        return f"HNSW{cfg.hnsw_m}"


class IvfPqDiskFamily(IndexFamily):
    """Above that, IVF-PQ (`[OPQ..,]IVF<nlist>_HNSW32,PQ<m>[x<bits>],RDisk`): the coarse quantizer an HNSW
    graph, the codes `pq_m` bytes, the candidates re-ranked exactly from the vectors on disk."""

    name = "ivf_pq_rdisk"

    def fits(self, n: int, cfg: FactoryConfig) -> bool:
        return True

    def factory(self, n: int, d: int, cfg: FactoryConfig) -> str:
        nlist = max(16, 2 ** int(round(math.log2(cfg.nlist_per_sqrt * math.sqrt(n)))))
        m = next(m for m in (cfg.pq_m, 64, 48, 32, 24, 16, 8, 4, 2, 1) if m <= d and d % m == 0)
        train = min(n, cfg.train_sample)
        bits = 8 if train >= 39 * 256 else max(4, int(math.log2(max(train, 16) / 39)))  # >= 39 points a centroid
        opq = f"OPQ{m}_{d}," if cfg.opq else ""
        return f"{opq}IVF{nlist}_HNSW32,PQ{m}{'' if bits == 8 else f'x{bits}'}{RDISK}"


# The index families, tried in order (the last fits every size).
FAMILIES: tuple[IndexFamily, ...] = (FlatFamily(), HnswFamily(), IvfPqDiskFamily())


def choose_factory(n: int, d: int, cfg: FactoryConfig) -> str:
    """The factory string for a version of n listings of dimension d: the first family that fits."""
    return next(f for f in FAMILIES if f.fits(n, cfg)).factory(n, d, cfg)


def reranked_from_disk(factory: str) -> bool:
    return factory.endswith(RDISK)


def _rows(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x[idx], np.float32)


def build_index(vectors: np.ndarray, factory: str, cfg: FactoryConfig, progress: bool = False) -> Any:
    """A FAISS index of `vectors` (rows in time order; an array or a memory-mapped file, read in chunks:
    a 1e7-row month is never copied into memory whole) under `factory` (its `,RDisk` suffix is not FAISS's:
    the exact vectors are stored beside the index, `write_vectors`)."""
    import faiss
    from tqdm import tqdm

    x = vectors
    n, d = x.shape
    try:
        index = faiss.index_factory(d, factory.removesuffix(RDISK), faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise RetrievalError(f"bad index factory string '{factory}': {str(e).splitlines()[-1]}") from None
    hnsw = getattr(faiss.downcast_index(index), "hnsw", None)
    if hnsw is not None:
        hnsw.efConstruction = cfg.ef_construction
    ivf = faiss.try_extract_index_ivf(index) if "IVF" in factory else None
    if ivf is not None:
        q = faiss.downcast_index(ivf.quantizer)
        if hasattr(q, "hnsw"):
            q.hnsw.efConstruction, q.hnsw.efSearch = 64, 64  # assignment of the vectors to their lists
    if not index.is_trained:
        rng = np.random.default_rng(cfg.seed)
        index.train(_rows(x, np.sort(rng.choice(n, size=min(n, cfg.train_sample), replace=False))))
    step = 100_000
    with tqdm(total=n, desc=f"add {factory}", unit="vec", disable=not progress or n < step) as bar:
        for i in range(0, n, step):
            index.add(np.ascontiguousarray(x[i:i + step], np.float32))
            bar.update(min(step, n - i))
    return index


def write_vectors(vectors: np.ndarray, path: str | os.PathLike, step: int = 200_000) -> Path:
    """The exact vectors of a `,RDisk` version as a .npy file of float16 rows (written in chunks)."""
    from numpy.lib.format import open_memmap

    out = open_memmap(path, mode="w+", dtype=VECTORS_DTYPE, shape=vectors.shape)
    for i in range(0, len(vectors), step):
        out[i:i + step] = vectors[i:i + step]
    out.flush()
    del out
    return Path(path)


class DiskVectors:
    """The exact vectors of a version read from its .npy file with `pread` (only the rows asked for: the
    process does not map the file, so re-ranking adds nothing to its resident memory but the rows read)."""

    def __init__(self, path: str | os.PathLike) -> None:
        from numpy.lib.format import read_array_header_1_0, read_array_header_2_0, read_magic

        with open(path, "rb") as f:
            major, _ = read_magic(f)
            shape, fortran, dtype = (read_array_header_1_0 if major == 1 else read_array_header_2_0)(f)
            self.offset = f.tell()
        if fortran or len(shape) != 2:
            raise RetrievalError(f"{path}: not a C-ordered matrix of vectors")
        self.path, self.shape, self.dtype = Path(path), tuple(shape), np.dtype(dtype)
        self.row = self.shape[1] * self.dtype.itemsize
        self.fd = os.open(path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    def slice(self, lo: int, hi: int) -> np.ndarray:
        """Rows [lo, hi) as float32."""
        buf = os.pread(self.fd, (hi - lo) * self.row, self.offset + lo * self.row)
        return np.frombuffer(buf, self.dtype).reshape(hi - lo, self.shape[1]).astype(np.float32)

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """The rows `idx` (sorted, unique) as float32; neighbouring rows are read in one call."""
        idx = np.asarray(idx, np.int64)
        out = np.empty((len(idx), self.shape[1]), np.float32)
        if not len(idx):
            return out
        breaks = np.flatnonzero(np.diff(idx) != 1) + 1
        for a, b in zip(np.r_[0, breaks], np.r_[breaks, len(idx)]):
            out[a:b] = self.slice(int(idx[a]), int(idx[b - 1]) + 1)
        return out

    def close(self) -> None:
        os.close(self.fd)

    def __del__(self) -> None:
        try:
            os.close(self.fd)
        except (OSError, AttributeError):
            pass


def exact_part(index: Any) -> Any:
    """The exact (Flat) vectors inside an index: the index itself, HNSW's storage, or RFlat's refinement."""
    import faiss

    ix = faiss.downcast_index(index)
    for attr in ("storage", "refine_index"):
        if hasattr(ix, attr):
            return faiss.downcast_index(getattr(ix, attr))
    return ix


def search_params(index: Any, sel: Any, p: SearchParams, n: int | None = None) -> Any:
    """FAISS search parameters for this index type carrying the selector `sel` (or None); `n`, the listings
    searched (default: all the index holds), sets an in-memory refine's depth (`SearchParams.rerank_depth`)."""
    import faiss

    ix = faiss.downcast_index(index)
    if isinstance(ix, faiss.IndexRefine):
        base = faiss.SearchParametersIVF(sel=sel, nprobe=p.nprobe) if sel is not None else \
            faiss.SearchParametersIVF(nprobe=p.nprobe)
        depth = p.rerank_depth(ix.ntotal if n is None else n)
        out = faiss.IndexRefineSearchParameters(k_factor=depth, base_index_params=base)
        out._keep = base  # the C++ object points at `base`: keep it alive with its owner
        return out
    if isinstance(ix, faiss.IndexPreTransform):  # OPQ in front: the parameters go to the IVF inside
        inner = search_params(ix.index, sel, p, n)
        return inner
    if hasattr(ix, "hnsw"):
        out = faiss.SearchParametersHNSW(efSearch=p.efSearch)
    elif hasattr(ix, "nprobe"):
        out = faiss.SearchParametersIVF(nprobe=p.nprobe)
    else:
        out = faiss.SearchParameters()
    if sel is not None:
        out.sel = sel
    return out
