"""`spnas-retrieval-eval`: photo-search quality and latency of a model bundle on a photo collection.

The split is fixed and documented; nothing moves between gallery and queries:
- queries: the collection's test split (Grocery: `test.txt`; a folder: `test/<class>/`, or, for a plain
  `<root>/<class>/` folder, `data.test_fraction` of each class chosen by the seed);
- galleries: `catalogue`, one reference image per product where the collection has them (Grocery's
  iconic images; a folder's `gallery/<class>/`), and `train`, the train split (every train photo:
  no validation share is carved out of it for retrieval).
Relevance is the same label (fine), and the same product type (coarse) where the collection defines
one (Grocery). Embeddings come from any backend of `retrieval.embedders` fed the original photos
(decoded once, the same way for every backend); search is exact FAISS by default. Every figure has a
bootstrap interval over the queries, and per-query values are kept so two models can be compared on
the same queries (`retrieval.metrics.paired_difference`).

    spnas-retrieval-eval bundle=runs/export/x                                  # Grocery Store
    spnas-retrieval-eval bundle=runs/export/x data=folder data.root=~/photos   # your own collection
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.config import Backend, FactoryConfig
from retrieval.embedders import make_embedder
from retrieval.interface import Embedder
from retrieval.metrics import per_query, percentile_ms
from retrieval.version_index import VersionIndex
from spnas.app.jobs.config import RetrievalEvalAppConfig
from spnas_core.errors import ImageDecodeError, InputError
from spnas_core.files import write_bytes_atomic, write_json_atomic
from spnas_core.images import decode_rgb
from spnas_core.stats import bootstrap_ci
from training.config import DataConfig, LabelLevel
from training.datasets import DataBundle, Split, load_data

log = logging.getLogger(__name__)

KS = (1, 5, 10)


def originals(split: Split, fallback: np.ndarray) -> list[np.ndarray]:
    """The original photos of a split (full size, decoded from their files), or the cached ones."""
    out = []
    for i, ident in enumerate(split.ids):
        try:
            out.append(decode_rgb(ident))
        except (ImageDecodeError, FileNotFoundError, OSError):
            out.append(fallback[i])
    return out


def load_retrieval_data(cfg: DataConfig, seed: int = 0) -> DataBundle:
    """A photo collection for retrieval: fine labels, and the whole train split (no validation share)."""
    return load_data(replace(cfg, label_level=LabelLevel.fine, val_fraction=0.0), seed)


def galleries(data: DataBundle) -> dict[str, Split]:
    """The galleries of the documented split: `catalogue` (where the collection has one) and `train`."""
    out: dict[str, Split] = {}
    if data.gallery is not None and len(data.gallery):
        out["catalogue"] = data.gallery
    out["train"] = data.train
    return out


def split_description(data: DataBundle) -> str:
    """The split in words, for reports."""
    g = galleries(data)
    parts = [f"{len(data.test)} test photos as queries"]
    parts += [f"{name} gallery of {len(s)} images" for name, s in g.items()]
    return f"{data.name}: " + ", ".join(parts)


def _level_metrics(ranked: np.ndarray, q_labels: np.ndarray, g_labels: np.ndarray, n_boot: int, seed: int
                   ) -> dict[str, Any]:
    pq = per_query(ranked, q_labels, g_labels, KS)
    out: dict[str, Any] = {m: float(v.mean()) for m, v in pq.items()}
    out["ci95"] = {m: list(bootstrap_ci(v, n_boot, seed=seed)) for m, v in pq.items()}
    out["per_query"] = {m: v.astype(np.float32).round(4).tolist() for m, v in pq.items()
                        if m in ("recall@1", "mAP@10")}
    return out


def evaluate_bundle(bundle: str | Path, data: DataBundle, backend: Backend = Backend.litert, factory: str = "Flat",
                    latency_queries: int = 200, threads: int = 1, n_boot: int = 2000, seed: int = 0
                    ) -> dict[str, Any]:
    """Recall@1/5/10 and mAP@10 with bootstrap intervals of a bundle's embedder (any backend), plus
    single-query latency of embedding and search (`evaluate_embedder`)."""
    out = evaluate_embedder(make_embedder(backend.name, bundle, threads), data, factory, latency_queries, n_boot, seed)
    return {"bundle": str(bundle), **out}


def evaluate_embedder(emb: Embedder, data: DataBundle, factory: str = "Flat", latency_queries: int = 200,
                      n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Recall@1/5/10 and mAP@10 with bootstrap intervals, fine (and coarse where defined), against each
    gallery of the documented split, plus single-query latency of embedding and search."""
    if len(data.test) == 0:
        raise InputError(f"data set '{data.name}' has no test photos to use as queries")
    coarse = np.asarray(data.coarse_of_fine) if data.coarse_of_fine is not None else None
    queries = originals(data.test, data.test.images)
    q_vec = emb.embed(queries, progress=True)
    results: dict[str, Any] = {}
    search_lat: dict[str, Any] = {}
    for gname, split in galleries(data).items():
        g_vec = emb.embed(originals(split, split.images), progress=True)
        index = VersionIndex.build(np.arange(len(split), dtype=np.int64), np.zeros(len(split), np.int64), g_vec,
                                   factory, FactoryConfig())
        k = max(KS)
        _, ids = index.search(q_vec, k)
        ranked = np.where(ids >= 0, split.labels[np.clip(ids, 0, None)], -1)
        results[gname] = {"gallery_size": int(len(split)),
                          "fine": _level_metrics(ranked, data.test.labels, split.labels, n_boot, seed)}
        if coarse is not None:
            results[gname]["coarse"] = _level_metrics(np.where(ranked >= 0, coarse[np.clip(ranked, 0, None)], -1),
                                                      coarse[data.test.labels], coarse[split.labels], n_boot, seed)
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
    return {"bundle_sha256": emb.bundle_sha256, "backend": emb.name, "factory": factory,
            "data": data.name, "split": split_description(data), "queries": len(queries), "embedding_dim": emb.dim,
            "input_size": getattr(emb, "size", None), "bootstrap": n_boot, "results": results,
            "latency": {"embed_single_query": {"p50_ms": percentile_ms(ts, 50), "p99_ms": percentile_ms(ts, 99),
                                               "n": len(ts)}, "search_single_query": search_lat}}


class CheckpointEmbedder(Embedder):
    """PyTorch on a fine-tuned `model.pt` (not yet exported): the same preprocessing and unit vectors as
    every bundle backend (`retrieval.embedders`), so models compared without exporting each seed are
    embedded exactly as their export would be (the export's parity gates bound the difference)."""

    name = "torch-checkpoint"
    batch_size = 64

    def __init__(self, model_pt: str | Path) -> None:
        import torch

        from export.deploy import DeployModel
        from spnas_core.files import sha256_file
        from training.checkpoints import load_model_file

        net, arch, _ = load_model_file(model_pt)
        self.torch = torch
        self.model = DeployModel(net, "features").eval()
        self.size = arch.resolution
        self.bundle_sha256 = sha256_file(model_pt)
        with torch.no_grad():
            self.dim = int(self.model(torch.zeros(1, 3, self.size, self.size)).shape[1])

    def embed(self, images: Any, progress: bool | None = None) -> np.ndarray:
        from retrieval.embedders import l2_normalize
        from spnas_core.images import resize_like_mediapipe, to_rgb_array

        if len(images) == 0:
            return np.zeros((0, self.dim), np.float32)
        out = []
        for i in range(0, len(images), self.batch_size):
            x = np.stack([resize_like_mediapipe(to_rgb_array(im), self.size) for im in images[i:i + self.batch_size]])
            with self.torch.no_grad():
                t = self.torch.from_numpy(x.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
                out.append(self.model(t).numpy())
        return l2_normalize(np.concatenate(out))


def _ci(m: dict[str, Any], key: str) -> str:
    lo, hi = m["ci95"][key]
    return f"{m[key]:.3f} [{lo:.3f}, {hi:.3f}]"


def markdown_table(s: dict[str, Any]) -> str:
    """The summary as a markdown table (one row per gallery and label level), 95% intervals in brackets."""
    lines = [f"Retrieval on {s['split']}; bundle `{Path(s['bundle']).name}` ({s['backend']} embedder, "
             f"{s['embedding_dim']}-d, FAISS `{s['factory']}`); 95% bootstrap intervals over the queries.", "",
             "| gallery | labels | recall@1 | recall@5 | recall@10 | mAP@10 |", "|---|---|---|---|---|---|"]
    for g, r in s["results"].items():
        for level in ("fine", "coarse"):
            if level not in r:
                continue
            m = r[level]
            lines.append(f"| {g} ({r['gallery_size']}) | {level} | {_ci(m, 'recall@1')} | {_ci(m, 'recall@5')} | "
                         f"{_ci(m, 'recall@10')} | {_ci(m, 'mAP@10')} |")
    e = s["latency"]["embed_single_query"]
    lines += ["", f"Query latency: embedding p50 {e['p50_ms']:.2f} ms / p99 {e['p99_ms']:.2f} ms; search " +
              ", ".join(f"{g} p50 {v['p50_ms']:.3f} ms / p99 {v['p99_ms']:.3f} ms"
                        for g, v in s["latency"]["search_single_query"].items()), ""]
    return "\n".join(lines)


def run(cfg: RetrievalEvalAppConfig) -> dict[str, Any]:
    """Everything `spnas-retrieval-eval` does: evaluate, write retrieval_eval.json / .md."""
    data = load_retrieval_data(cfg.data, cfg.seed)
    s = evaluate_bundle(cfg.bundle, data, cfg.backend, cfg.factory, cfg.latency_queries, threads=cfg.threads or 1,
                        n_boot=cfg.bootstrap, seed=cfg.seed)
    out = Path(cfg.out_dir or Path(cfg.bundle) / "retrieval")
    write_json_atomic(out / "retrieval_eval.json", s)
    write_bytes_atomic(out / "retrieval_eval.md", markdown_table(s).encode())
    return s
