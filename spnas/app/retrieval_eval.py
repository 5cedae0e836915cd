"""`spnas-retrieval-eval`: photo search quality and latency of a model bundle on the Grocery Store set.

Queries are the shop photos of the test split; galleries are (a) the 81 catalogue ("iconic")
images and (b) the train photos. Relevance is the same label, at fine (81 products) and coarse
(product type) level. Embeddings come from any backend of `retrieval.embedders` fed the original
photos (each backend resizes like MediaPipe); search uses a FAISS index from `retrieval.index`.
Query latency is measured per single query, separately for embedding and for search.

    spnas-retrieval-eval bundle=runs/export/x backend=litert
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from dataclasses import replace

from retrieval.embedders import make_embedder
from retrieval.index import VectorIndex
from retrieval.metrics import percentile_ms, summarize
from spnas.config import Backend, DataKind, LabelLevel, RetrievalEvalAppConfig
from spnas.errors import ConfigError, ImageDecodeError, InputError
from spnas.files import write_bytes_atomic, write_json_atomic
from spnas.images import decode_rgb
from training.datasets import DataBundle, Split, load_data

log = logging.getLogger(__name__)


def originals(split: Split, fallback: np.ndarray) -> list[np.ndarray]:
    """The original photos of a split (full size, decoded from their files), or the cached ones."""
    out = []
    for i, ident in enumerate(split.ids):
        try:
            out.append(decode_rgb(ident))
        except (ImageDecodeError, FileNotFoundError, OSError):
            out.append(fallback[i])
    return out


def evaluate_bundle(bundle: str | Path, data: DataBundle, backend: Backend = Backend.litert, factory: str = "Flat",
                    latency_queries: int = 200, ks: tuple[int, ...] = (1, 5, 10), threads: int = 1) -> dict[str, Any]:
    """Recall@k and mAP@10 at fine and coarse level against both galleries, plus query latency."""
    if data.gallery is None or data.coarse_of_fine is None:
        raise InputError(f"data set '{data.name}' has no catalogue gallery; retrieval eval needs data=grocery "
                         f"(label_level=fine)")
    emb = make_embedder(backend.name, bundle, threads)
    coarse = np.asarray(data.coarse_of_fine)
    queries = originals(data.test, data.test.images)
    q_vec = emb.embed(queries, progress=True)
    galleries = {"iconic": data.gallery, "train": data.train}
    results: dict[str, Any] = {}
    search_lat: dict[str, Any] = {}
    for gname, split in galleries.items():
        g_vec = emb.embed(originals(split, split.images), progress=True)
        index = VectorIndex(factory, emb.dim, emb.bundle_sha256, name=f"grocery-{gname}")
        index.add(np.arange(len(split), dtype=np.int64), g_vec, np.zeros(len(split), np.int64))
        k = max(ks)
        hits = index.search(q_vec, k)
        ranked = split.labels[np.clip(hits.ids, 0, None)]
        ranked = np.where(hits.ids >= 0, ranked, -1)
        results[gname] = {
            "gallery_size": int(len(split)),
            "fine": summarize(ranked, data.test.labels, split.labels, ks),
            "coarse": summarize(np.where(ranked >= 0, coarse[np.clip(ranked, 0, None)], -1),
                                coarse[data.test.labels], coarse[split.labels], ks),
        }
        ts = []
        for i in range(min(latency_queries, len(q_vec))):
            t = time.perf_counter()
            index.search(q_vec[i:i + 1], k)
            ts.append(time.perf_counter() - t)
        search_lat[gname] = {"p50_ms": percentile_ms(ts, 50), "p99_ms": percentile_ms(ts, 99), "n": len(ts)}
    ts = []
    for img in queries[:latency_queries]:
        t = time.perf_counter()
        emb.embed([img], progress=False)
        ts.append(time.perf_counter() - t)
    return {"bundle": str(bundle), "bundle_sha256": emb.bundle_sha256, "backend": backend.name, "factory": factory,
            "queries": len(queries), "embedding_dim": emb.dim, "results": results,
            "latency": {"embed_single_query": {"p50_ms": percentile_ms(ts, 50), "p99_ms": percentile_ms(ts, 99),
                                               "n": len(ts)}, "search_single_query": search_lat}}


def markdown_table(s: dict[str, Any]) -> str:
    """The summary as a markdown table (one row per gallery and label level)."""
    lines = [f"Retrieval on Grocery Store: {s['queries']} test photos as queries, bundle `{Path(s['bundle']).name}` "
             f"({s['backend']} embedder, {s['embedding_dim']}-d, FAISS `{s['factory']}`)", "",
             "| gallery | labels | recall@1 | recall@5 | recall@10 | mAP@10 |", "|---|---|---|---|---|---|"]
    for g, r in s["results"].items():
        for level in ("fine", "coarse"):
            m = r[level]
            lines.append(f"| {g} ({r['gallery_size']}) | {level} | {m['recall@1']:.3f} | {m['recall@5']:.3f} | "
                         f"{m['recall@10']:.3f} | {m['mAP@10']:.3f} |")
    e = s["latency"]["embed_single_query"]
    lines += ["", f"Query latency: embedding p50 {e['p50_ms']:.2f} ms / p99 {e['p99_ms']:.2f} ms; search " +
              ", ".join(f"{g} p50 {v['p50_ms']:.3f} ms / p99 {v['p99_ms']:.3f} ms"
                        for g, v in s["latency"]["search_single_query"].items()), ""]
    return "\n".join(lines)


def run(cfg: RetrievalEvalAppConfig) -> dict[str, Any]:
    """Everything `spnas-retrieval-eval` does: evaluate, write retrieval_eval.json / .md."""
    if cfg.data.kind is not DataKind.grocery:
        raise ConfigError("spnas-retrieval-eval runs on the Grocery Store set: use data=grocery")
    data = load_data(replace(cfg.data, label_level=LabelLevel.fine), cfg.seed)
    s = evaluate_bundle(cfg.bundle, data, cfg.backend, cfg.factory, cfg.latency_queries, threads=cfg.threads or 1)
    out = Path(cfg.out_dir or Path(cfg.bundle) / "retrieval")
    write_json_atomic(out / "retrieval_eval.json", s)
    write_bytes_atomic(out / "retrieval_eval.md", markdown_table(s).encode())
    return s
