"""spnas-retrieval-eval on the Grocery Store set: summary JSON and markdown table for a bundle."""

import json

from ..conftest import compose


def test_retrieval_eval_summary_and_table(small_bundle, grocery_root, tmp_path):
    from spnas.app.retrieval_eval import run

    cfg = compose("retrieval_eval", [f"bundle={small_bundle}", f"data.root={grocery_root}", "data.train_limit=300",
                                     "data.test_limit=120", "data.val_limit=20", f"data.cache_dir={tmp_path / 'c'}",
                                     f"out_dir={tmp_path / 'out'}", "latency_queries=20"])
    s = run(cfg)
    saved = json.loads((tmp_path / "out" / "retrieval_eval.json").read_text())
    assert saved["queries"] == s["queries"] == 120
    for gallery, size in (("iconic", 81), ("train", 300)):
        r = s["results"][gallery]
        assert r["gallery_size"] == size
        for level in ("fine", "coarse"):
            m = r[level]
            assert 0 <= m["recall@1"] <= m["recall@5"] <= m["recall@10"] <= 1
            assert 0 <= m["mAP@10"] <= 1
        assert r["coarse"]["recall@10"] >= r["fine"]["recall@10"]  # a coarse match is easier than a fine one
    lat = s["latency"]
    assert lat["embed_single_query"]["p50_ms"] > 0 and lat["embed_single_query"]["p99_ms"] >= lat["embed_single_query"]["p50_ms"]
    assert set(lat["search_single_query"]) == {"iconic", "train"}
    md = (tmp_path / "out" / "retrieval_eval.md").read_text()
    assert "| iconic (81) | fine |" in md and "| train (300) | coarse |" in md


def test_metrics_by_hand():
    import numpy as np

    from retrieval.metrics import map_at_k, recall_at_k, relevance, summarize

    ranked = np.array([[3, 1, 2], [0, 0, 5]])
    q = np.array([1, 5])
    rel = relevance(ranked, q)
    assert rel.tolist() == [[False, True, False], [False, False, True]]
    assert recall_at_k(rel, 1) == 0 and recall_at_k(rel, 2) == 0.5 and recall_at_k(rel, 3) == 1
    # one relevant item each: AP = 1/rank
    assert map_at_k(rel, np.array([1, 1]), 3) == (1 / 2 + 1 / 3) / 2
    s = summarize(ranked, q, np.array([0, 1, 2, 3, 5]), ks=(1, 3), map_k=3)
    assert s["recall@3"] == 1.0
