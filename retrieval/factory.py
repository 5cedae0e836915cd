"""Which FAISS index a version gets, built from its size: exact `Flat` for small periods, `HNSW<M>` up
to `hnsw_up_to`, and `IVF<nlist>,PQ<m>,RFlat` above (trained on a seeded sample, candidates re-ranked
exactly against the stored vectors). Vectors are unit length, the metric is inner product, and the
index's own ids are row positions 0..n-1 in listing-time order: a time window is then one contiguous
range of ids (`IDSelectorRange`), and its rows are one contiguous slice of the exact vectors.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from spnas_core.errors import RetrievalError

from .config import FactoryConfig, SearchParams


def choose_factory(n: int, d: int, cfg: FactoryConfig) -> str:
    """The factory string for a version of n listings of dimension d."""
    if n < cfg.flat_below:
        return "Flat"
    if n <= cfg.hnsw_up_to:
        return f"HNSW{cfg.hnsw_m}"
    nlist = 2 ** int(round(math.log2(4 * math.sqrt(n))))
    m = next(m for m in (64, 48, 32, 24, 16, 8, 4, 2, 1) if d % m == 0)  # at most 64 bytes a vector
    train = min(n, cfg.train_sample)
    bits = 8 if train >= 39 * 256 else max(4, int(math.log2(max(train, 16) / 39)))  # >= 39 points a centroid
    return f"IVF{nlist},PQ{m}{'' if bits == 8 else f'x{bits}'},RFlat"


def build_index(vectors: np.ndarray, factory: str, cfg: FactoryConfig, progress: bool = False) -> Any:
    """A FAISS index of `vectors` (rows in time order) under `factory`, added in chunks with a progress bar."""
    import faiss
    from tqdm import tqdm

    x = np.ascontiguousarray(vectors, np.float32)
    n, d = x.shape
    try:
        index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise RetrievalError(f"bad index factory string '{factory}': {str(e).splitlines()[-1]}") from None
    hnsw = getattr(faiss.downcast_index(index), "hnsw", None)
    if hnsw is not None:
        hnsw.efConstruction = cfg.ef_construction
    if not index.is_trained:
        rng = np.random.default_rng(cfg.seed)
        sample = x[np.sort(rng.choice(n, size=min(n, cfg.train_sample), replace=False))]
        index.train(sample)
    step = 50_000
    with tqdm(total=n, desc=f"add {factory}", unit="vec", disable=not progress or n < step) as bar:
        for i in range(0, n, step):
            index.add(x[i:i + step])
            bar.update(min(step, n - i))
    return index


def exact_part(index: Any) -> Any:
    """The exact (Flat) vectors inside an index: the index itself, HNSW's storage, or RFlat's refinement."""
    import faiss

    ix = faiss.downcast_index(index)
    for attr in ("storage", "refine_index"):
        if hasattr(ix, attr):
            return faiss.downcast_index(getattr(ix, attr))
    return ix


def search_params(index: Any, sel: Any, p: SearchParams) -> Any:
    """FAISS search parameters for this index type carrying the selector `sel` (or None)."""
    import faiss

    ix = faiss.downcast_index(index)
    if isinstance(ix, faiss.IndexRefine):
        base = faiss.SearchParametersIVF(sel=sel, nprobe=p.nprobe) if sel is not None else \
            faiss.SearchParametersIVF(nprobe=p.nprobe)
        out = faiss.IndexRefineSearchParameters(k_factor=p.k_factor, base_index_params=base)
        out._keep = base  # the C++ object points at `base`: keep it alive with its owner
        return out
    if hasattr(ix, "hnsw"):
        out = faiss.SearchParametersHNSW(efSearch=p.efSearch)
    elif hasattr(ix, "nprobe"):
        out = faiss.SearchParametersIVF(nprobe=p.nprobe)
    else:
        out = faiss.SearchParameters()
    if sel is not None:
        out.sel = sel
    return out
