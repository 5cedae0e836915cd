"""spnas-retrieval-eval on the Grocery Store set: summary JSON and markdown table for a bundle."""

import json

from ..conftest import compose


def test_retrieval_eval_summary_and_table(small_bundle, grocery_root, tmp_path):
    from spnas.app.jobs.retrieval_eval import run

    cfg = compose("retrieval_eval", [f"bundle={small_bundle}", f"data.root={grocery_root}", "data.train_limit=300",
                                     "data.test_limit=120", "data.val_limit=20", f"data.cache_dir={tmp_path / 'c'}",
                                     f"out_dir={tmp_path / 'out'}", "latency_queries=20"])
    s = run(cfg)
    saved = json.loads((tmp_path / "out" / "retrieval_eval.json").read_text())
    assert saved["queries"] == s["queries"] == 120
    for gallery, size in (("catalogue", 81), ("train", 300)):
        r = s["results"][gallery]
        assert r["gallery_size"] == size
        for level in ("fine", "coarse"):
            m = r[level]
            assert 0 <= m["recall@1"] <= m["recall@5"] <= m["recall@10"] <= 1
            assert 0 <= m["mAP@10"] <= 1
            lo, hi = m["ci95"]["recall@1"]
            assert lo <= m["recall@1"] <= hi and len(m["per_query"]["recall@1"]) == 120
        assert r["coarse"]["recall@10"] >= r["fine"]["recall@10"]  # a coarse match is easier than a fine one
    lat = s["latency"]
    assert lat["embed_single_query"]["p50_ms"] > 0 and lat["embed_single_query"]["p99_ms"] >= lat["embed_single_query"]["p50_ms"]
    assert set(lat["search_single_query"]) == {"catalogue", "train"}
    md = (tmp_path / "out" / "retrieval_eval.md").read_text()
    assert "| catalogue (81) | fine |" in md and "| train (300) | coarse |" in md and "grocery" in md


def test_a_users_own_folder_evaluates_without_code_changes(small_bundle, grocery_root, tmp_path):
    """root/{train,test,gallery}/<class>/*: named in the output, nothing moved between gallery and queries."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = tmp_path / "my-shop"
    classes = sorted((grocery_root / "train" / "Fruit").iterdir())[:6]
    counts = {"train": 0, "test": 0, "gallery": 0}
    for cls in classes:
        photos = sorted(cls.rglob("*.jpg"))
        for split, files in (("train", photos[:12]), ("test", photos[12:16]), ("gallery", photos[16:17])):
            (root / split / cls.name).mkdir(parents=True)
            for p in files:
                shutil.copy(p, root / split / cls.name / p.name)
            counts[split] += len(files)
    out = tmp_path / "eval"
    r = subprocess.run([str(Path(sys.executable).parent / "spnas-retrieval-eval"), f"bundle={small_bundle}",
                        "data=folder", f"data.root={root}", "data.name=my-shop", f"data.cache_dir={tmp_path / 'c'}",
                        f"out_dir={out}", "latency_queries=5", "bootstrap=100"], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((out / "retrieval_eval.json").read_text())
    assert s["data"] == "my-shop" and s["queries"] == counts["test"]
    assert s["results"]["train"]["gallery_size"] == counts["train"]  # no validation share carved out
    assert s["results"]["catalogue"]["gallery_size"] == counts["gallery"]
    assert "coarse" not in s["results"]["train"]  # a folder defines no product types
    assert "my-shop" in r.stdout and "Grocery" not in r.stdout


def test_bootstrap_intervals_and_paired_difference():
    import numpy as np

    from spnas_core.stats import bootstrap_ci, paired_difference

    rng = np.random.default_rng(0)
    a = (rng.random(400) < 0.6).astype(float)
    lo, hi = bootstrap_ci(a, 1000)
    assert lo < a.mean() < hi and hi - lo < 0.12
    same = paired_difference(a, a.copy())
    assert same["difference"] == 0 and not same["differ"]
    better = paired_difference(np.maximum(a, (rng.random(400) < 0.5)), a)
    assert better["differ"] and better["ci_low"] > 0


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
