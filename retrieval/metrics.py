"""Retrieval metrics on ranked result lists (pure functions).

recall@k: share of queries with at least one relevant item (same label) in the top k.
mAP@k: mean over queries of AP@k = (1 / min(R, k)) * sum_{i<=k} P@i * rel_i, R = relevant items in
the gallery (so a single relevant item at rank r gives 1/r). Intervals and paired comparisons of the
per-query values: `spnas_core.stats`.
"""

from __future__ import annotations

import numpy as np


def relevance(ranked_labels: np.ndarray, query_labels: np.ndarray) -> np.ndarray:
    """[nq, k] booleans: is the item at each rank relevant to its query."""
    return np.asarray(ranked_labels) == np.asarray(query_labels)[:, None]


def recall_at_k(rel: np.ndarray, k: int) -> float:
    return float(rel[:, :k].any(axis=1).mean()) if len(rel) else float("nan")


def map_at_k(rel: np.ndarray, n_relevant: np.ndarray, k: int) -> float:
    """mean AP@k; `n_relevant[q]` is how many gallery items share query q's label."""
    if not len(rel):
        return float("nan")
    r = rel[:, :k].astype(np.float64)
    prec = np.cumsum(r, axis=1) / np.arange(1, r.shape[1] + 1)
    denom = np.minimum(np.asarray(n_relevant, dtype=np.float64), k)
    ap = np.where(denom > 0, (prec * r).sum(axis=1) / np.maximum(denom, 1), 0.0)
    return float(ap.mean())


def summarize(ranked_labels: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray,
              ks: tuple[int, ...] = (1, 5, 10), map_k: int = 10) -> dict[str, float]:
    """recall@k for each k and mAP@map_k."""
    rel = relevance(ranked_labels, query_labels)
    counts = np.bincount(np.asarray(gallery_labels), minlength=int(max(np.max(gallery_labels),
                                                                      np.max(query_labels))) + 1)
    out = {f"recall@{k}": recall_at_k(rel, k) for k in ks}
    out[f"mAP@{map_k}"] = map_at_k(rel, counts[np.asarray(query_labels)], map_k)
    return out


def percentile_ms(samples_s: list[float] | np.ndarray, q: float) -> float:
    return float(np.percentile(np.asarray(samples_s) * 1e3, q)) if len(samples_s) else float("nan")


# ---------------------------------------------------------------------------------- per query, with intervals
def per_query(ranked_labels: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray,
              ks: tuple[int, ...] = (1, 5, 10), map_k: int = 10) -> dict[str, np.ndarray]:
    """Each query's hit@k (0/1) and AP@map_k: the means are `summarize`; kept per query so intervals
    and paired comparisons between models can be bootstrapped over the same queries."""
    rel = relevance(ranked_labels, query_labels)
    counts = np.bincount(np.asarray(gallery_labels), minlength=int(max(np.max(gallery_labels),
                                                                      np.max(query_labels))) + 1)
    out = {f"recall@{k}": rel[:, :k].any(axis=1).astype(np.float64) for k in ks}
    r = rel[:, :map_k].astype(np.float64)
    prec = np.cumsum(r, axis=1) / np.arange(1, r.shape[1] + 1)
    denom = np.minimum(counts[np.asarray(query_labels)].astype(np.float64), map_k)
    out[f"mAP@{map_k}"] = np.where(denom > 0, (prec * r).sum(axis=1) / np.maximum(denom, 1), 0.0)
    return out
