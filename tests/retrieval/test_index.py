"""FAISS index store and time partitions: exactness, deletions, compaction, atomic files, bundle identity."""

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from retrieval.index import IndexMismatchError, VectorIndex, default_factory
from retrieval.partitions import PartitionedStore, key_range, partition_key

D = 64
BUNDLE = "a" * 64
HOUR = 3600
T0 = 1_790_000_000 - 1_790_000_000 % (24 * HOUR)  # a day boundary (UTC)


def unit(n, d=D, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_default_factory_by_size():
    assert default_factory(50_000, 1280) == "Flat"
    assert default_factory(500_000, 1280) == "HNSW32"
    f = default_factory(5_000_000, 1280)
    assert f.startswith("IVF") and ",PQ" in f


def test_flat_search_is_exact_with_ids_and_deletions():
    x = unit(500)
    ids = np.arange(1000, 1500, dtype=np.int64) * 7919  # arbitrary 64-bit ids
    idx = VectorIndex("Flat", D, BUNDLE)
    idx.add(ids, x, np.full(500, T0))
    q = unit(5, seed=1)
    h = idx.search(q, 10)
    brute = np.argsort(-(q @ x.T), axis=1)[:, :10]
    assert np.array_equal(h.ids, ids[brute])
    idx.delete(ids[brute[:, 0]])
    h2 = idx.search(q, 10)
    assert not np.isin(h2.ids, ids[brute[:, 0]]).any()
    with pytest.raises(ValueError, match="already"):
        idx.add(ids[:1], x[:1], [T0])


@pytest.mark.parametrize("factory", ["HNSW32", "IVF16,Flat"])
def test_approximate_indexes_rerank_exactly(factory):
    x = unit(2000, seed=3)
    idx = VectorIndex(factory, D, BUNDLE)
    idx.add(np.arange(2000), x, np.full(2000, T0))
    q = unit(20, seed=4)
    h = idx.search(q, 10)
    assert np.allclose(h.scores, np.take_along_axis(q @ x.T, h.ids, axis=1), atol=1e-6)
    exact = np.argsort(-(q @ x.T), axis=1)[:, :10]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(h.ids, exact)])
    assert recall >= 0.9


def _spread(n, hours, seed=0):
    rng = np.random.default_rng(seed)
    return T0 + rng.integers(0, hours * HOUR, size=n)


def test_partition_fanout_equals_one_flat_index(tmp_path):
    x = unit(1200, seed=5)
    ids = np.arange(1200, dtype=np.int64) + 10**12
    ts = _spread(1200, 72)
    store = PartitionedStore(tmp_path / "store", BUNDLE, D, factory="Flat")
    added = store.add(ids, x, ts)
    assert len(added) > 48 and all(k.startswith("h/") for k in added)
    flat = VectorIndex("Flat", D, BUNDLE)
    flat.add(ids, x, ts)
    dead = ids[::17]
    store.delete(dead)
    flat.delete(dead)
    q = unit(25, seed=6)
    for window in [(None, None), (T0 + 5 * HOUR, T0 + 30 * HOUR), (T0 + 50 * HOUR + 1234, None)]:
        a = store.search(q, 10, *window)
        b = flat.search(q, 10, *window)
        assert np.array_equal(a.ids, b.ids), window
        assert np.allclose(a.scores, b.scores)
        assert not np.isin(a.ids, dead).any()
    # the same after compaction (hours -> days -> months)
    store.compact(T0 + 80 * HOUR)
    assert any(k.startswith("d/") for k in store.keys()) or any(k.startswith("m/") for k in store.keys())
    a = store.search(q, 10)
    assert np.array_equal(a.ids, flat.search(q, 10).ids)


@pytest.mark.parametrize("factory", ["Flat", "HNSW32", "IVF8,Flat"])
def test_compaction_preserves_every_live_id(tmp_path, factory):
    x = unit(900, seed=7)
    ids = np.arange(900, dtype=np.int64)
    ts = _spread(900, 24 * 40)  # 40 days
    store = PartitionedStore(tmp_path / "s", BUNDLE, D, factory=factory)
    if factory.startswith("IVF"):
        for month_ts in sorted({key_range(partition_key(t, "m"))[0] for t in ts}):
            store.train_template(month_ts, x, factory)
    store.add(ids, x, ts)
    store.delete([3, 5, 8])
    before = set(store.keys())
    rep = store.compact(T0 + 24 * 40 * HOUR + 5)
    after = store.keys()
    assert rep.rolled and set(after) != before
    held = np.concatenate([store.open(k).live_items()[0] for k in after])
    assert sorted(held.tolist()) == sorted(set(ids.tolist()) - {3, 5, 8})
    assert all(k.startswith(("d/", "m/")) for k in after)
    if factory.startswith("IVF"):  # cloned from the month's template all the way: merged by merge_from
        assert all(store.open(k).template == f"m/{k.split('/')[1][:7]}" for k in after)


def test_wrong_bundle_is_refused(tmp_path):
    idx = VectorIndex("Flat", D, BUNDLE)
    idx.add(np.arange(3), unit(3), np.full(3, T0))
    idx.save(tmp_path / "p")
    assert len(VectorIndex.load(tmp_path / "p", expected_bundle=BUNDLE)) == 3
    with pytest.raises(IndexMismatchError, match="another embedding space"):
        VectorIndex.load(tmp_path / "p", expected_bundle="b" * 64)
    store = PartitionedStore(tmp_path / "store", BUNDLE, D, factory="Flat")
    store.add(np.arange(3), unit(3), np.full(3, T0))
    with pytest.raises(IndexMismatchError):
        PartitionedStore(tmp_path / "store", "c" * 64, D).search(unit(1), 3)


def test_kill_during_save_leaves_previous_index_loadable(tmp_path):
    """SIGKILL a process that keeps saving; every kill leaves a loadable, self-consistent index."""
    folder = tmp_path / "p"
    idx = VectorIndex("Flat", D, BUNDLE)
    idx.add(np.arange(100), unit(100), np.full(100, T0))
    idx.save(folder)
    code = textwrap.dedent(f"""
        import numpy as np
        from retrieval.index import VectorIndex
        idx = VectorIndex.load({str(folder)!r})
        i = 10_000
        x = np.random.default_rng(0).standard_normal((50, {D})).astype(np.float32)
        while True:
            idx.add(np.arange(i, i + 50), x / np.linalg.norm(x, axis=1, keepdims=True), np.full(50, {T0}))
            idx.save({str(folder)!r})
            i += 50
    """)
    root = Path(__file__).resolve().parents[2]
    for delay in (0.7, 1.1, 1.6):
        p = subprocess.Popen([sys.executable, "-c", code], cwd=root)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        back = VectorIndex.load(folder, expected_bundle=BUNDLE)
        assert back.faiss_index.ntotal == len(back.ids) == len(back.ts) == len(back.vectors) >= 100
        assert back.search(unit(1), 5).ids[0, 0] >= 0
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".p.")]
    assert not leftovers, "load() clears what an interrupted save left behind"
