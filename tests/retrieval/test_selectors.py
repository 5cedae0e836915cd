"""Query-time selection on a version, against brute force: time windows (IDSelectorRange over the
time-ordered rows, narrow ones exactly on their slice), listings removed after the build
(IDSelectorNot(IDSelectorBatch)) as of a change number, and results of several versions plus the
delta merged with FAISS's ResultHeap, every active listing answered exactly once."""

from __future__ import annotations

import os

import numpy as np
import pytest

from retrieval.config import DeltaConfig, FactoryConfig, Granularity, RetentionConfig, SearchParams
from retrieval.version_index import VersionIndex

from .conftest import make_catalogue, unit


def brute(q, vecs, ids, mask, k):
    s = q @ vecs.T
    s[:, ~mask] = -np.inf
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.where(np.take_along_axis(s, order, 1) > -np.inf, ids[order], -1)


@pytest.mark.parametrize("factory, exact_below", [("Flat", 0), ("HNSW16", 50), ("HNSW16", 10**6),
                                                  ("IVF16,PQ8x4,RFlat", 50), ("IVF16_HNSW32,PQ8x4,RDisk", 50),
                                                  ("IVF16_HNSW32,PQ8x4,RDisk", 10**6)])
def test_windows_and_removed_listings_match_brute_force(factory, exact_below, tmp_path):
    rng = np.random.default_rng(1)
    n, d = 3000, 16
    v = unit(n, d, 1)
    ts = np.sort(rng.integers(0, 100_000, n))
    ids = rng.choice(2**40, n, replace=False).astype(np.int64)
    vi = VersionIndex.build(ids, ts, v, factory, FactoryConfig(train_sample=n), vectors_file=tmp_path / "v.npy")
    vi.params = SearchParams(exact_below=exact_below, efSearch=512, nprobe=16, k_factor=64)
    gone = ids[rng.choice(n, 300, replace=False)]
    assert vi.exclude(np.concatenate([gone, [7]]), np.arange(1, 302)) == 300  # id 7 is not in this version
    q = v[rng.choice(n, 20)]
    for start, end, as_of in [(None, None, None), (20_000, 70_000, None), (30_000, 31_500, 150), (None, None, 0),
                              (99_999, 100_000, None), (5, 5, None)]:
        _, got = vi.search(q, 10, start, end, as_of)
        mask = np.ones(n, bool)
        if start is not None:
            mask &= (ts >= start) & (ts < end)
        mask &= ~np.isin(ids, gone if as_of is None else gone[:as_of])
        want = brute(q, v, ids, mask, 10)
        recall = np.mean([len(set(a[a >= 0]) & set(b[b >= 0])) / (b >= 0).sum() if (b >= 0).any() else 1.0
                          for a, b in zip(got, want)])
        assert recall >= 0.97, (factory, start, end, as_of, recall)
        assert not np.isin(got[got >= 0], ids[~mask]).any(), "a removed or out-of-window listing was returned"
        assert ((got >= 0).sum(1) == np.minimum(10, mask.sum())).all(), "short lists only when the window is small"


def test_a_narrow_window_on_an_approximate_version_is_exact():
    n, d = 5000, 16
    v, ts, ids = unit(n, d, 2), np.arange(n, dtype=np.int64), np.arange(n, dtype=np.int64) + 10
    vi = VersionIndex.build(ids, ts, v, "HNSW8", FactoryConfig(hnsw_m=8, ef_construction=8))
    vi.params = SearchParams(efSearch=4, exact_below=500)  # a poor graph search: the slice must not use it
    q = v[1000:1010]
    _, got = vi.search(q, 10, 800, 1200)
    mask = (ts >= 800) & (ts < 1200)
    assert np.array_equal(got, brute(q, v, ids, mask, 10))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_versions_and_delta_merge_to_brute_force_with_each_listing_once(tmp_path, request, backend):
    """A local router over built versions: listings deleted, re-listed in another period, and added
    after the builds are each answered once, by a version or by the delta (on either store)."""
    from retrieval.backends import LocalBackends
    from retrieval.build import build_due
    from retrieval.config import BuildConfig
    from retrieval.listings import Listing
    from retrieval.periods import period_range
    from retrieval.router import Router

    start = period_range(Granularity.day, "2026-11-01")[0]
    now = start + 2 * 86400 + 1800
    url = None
    if backend == "postgresql":
        from ..postgres import create_database

        url = create_database(request.getfixturevalue("postgres_admin_url"), f"spnas_merge_{os.getpid()}")
    c = make_catalogue(tmp_path, 1500, start, 2 * 86400 + 1200, store=url)
    build_due(c.store, None, c.repo, c.embedder, BuildConfig(), RetentionConfig(), now)
    assert {v.granularity for v in c.repo.versions()} == {"day", "hour"}
    rng = np.random.default_rng(3)
    gone = c.ids[rng.choice(1500, 100, replace=False)]
    for i in gone[:80]:
        c.store.remove(int(i))
    moved = gone[80:]
    for i in moved:  # deleted, then listed again (same photo) in the current hour: the delta holds them now
        c.store.remove(int(i))
        j = int(np.flatnonzero(c.ids == i)[0])
        c.store.add([Listing(int(i), now - 60, c.photos[j])])
    new_ids = np.arange(10**12, 10**12 + 30)
    new_v = unit(30, 16, 9)
    c.store.cache(c.embedder.bundle_sha256, [f"n{i:063d}" for i in range(30)], new_v)
    c.store.add([Listing(int(i), now - 100, f"n{j:063d}") for j, i in enumerate(new_ids)])
    r = Router(c.store, None, lambda b: c.embedder, [c.embedder.bundle_sha256],
               LocalBackends(c.repo, c.store, SearchParams(), str(tmp_path / "cache")), DeltaConfig(),
               RetentionConfig(), clock=lambda: now)
    view = r.refresh()
    this_hour = int(((c.ts >= now - 1800) & ~np.isin(c.ids, gone)).sum())  # the current hour has no version yet
    assert len(view.delta) == 30 + len(moved) + this_hour and view.plan.pieces and not view.missing
    all_ids = np.concatenate([c.ids, new_ids])
    all_v = np.concatenate([c.vecs, new_v])
    mask = ~np.isin(all_ids, gone[:80])
    q = all_v[rng.choice(len(all_ids), 25)]
    ans = r.search(q, 10)
    assert np.array_equal(ans.ids, brute(q, all_v, all_ids, mask, 10))
    assert all(len(set(row[row >= 0])) == (row >= 0).sum() for row in ans.ids), "a listing answered twice"
    # a window over the current hour only: the re-listed and new listings, from the delta
    got = r.search(q, 10, now - 1800, now).ids
    recent = set(c.ids[(c.ts >= now - 1800) & ~np.isin(c.ids, gone)].tolist())
    assert set(got[got >= 0].tolist()) <= set(new_ids.tolist()) | set(moved.tolist()) | recent
    # later changes reach the versions through their followers and the delta at the next refresh
    c.store.remove(int(new_ids[0]))
    c.store.remove(int(c.ids[~np.isin(c.ids, gone)][0]))
    r.refresh()
    ans = r.search(np.stack([new_v[0], c.vector(int(c.ids[~np.isin(c.ids, gone)][0]))]), 5)
    assert int(new_ids[0]) not in ans.ids and int(c.ids[~np.isin(c.ids, gone)][0]) not in ans.ids


def test_a_new_bundle_takes_over_once_its_versions_cover_the_catalogue(tmp_path):
    """Two embedding spaces over one listing store: the router searches the old bundle's versions until
    the new bundle's versions cover what they cover, then the new one, its delta in its own space."""
    from retrieval.backends import LocalBackends
    from retrieval.build import build_due, build_period
    from retrieval.config import BuildConfig
    from retrieval.periods import period_range
    from retrieval.router import Router

    from .conftest import FakeEmbedder

    start = period_range(Granularity.day, "2026-11-01")[0]
    now = start + 2 * 86400 + 1800
    c = make_catalogue(tmp_path, 600, start, 2 * 86400 + 1200, bundle="0" * 64)  # the old bundle's space
    new = FakeEmbedder(16, "1" * 64)
    new_vecs = unit(600, 16, 77)  # the same photos in the new space
    c.store.cache(new.bundle_sha256, c.photos, new_vecs)
    build_due(c.store, None, c.repo, c.embedder, BuildConfig(), RetentionConfig(), now)
    embedders = {c.embedder.bundle_sha256: c.embedder, new.bundle_sha256: new}
    r = Router(c.store, None, embedders.__getitem__, [new.bundle_sha256, c.embedder.bundle_sha256],
               LocalBackends(c.repo, c.store, SearchParams(), str(tmp_path / "cache")), DeltaConfig(),
               RetentionConfig(), clock=lambda: now)
    assert r.refresh().bundle == c.embedder.bundle_sha256  # the new one has no version yet
    build_period(c.store, None, c.repo, new, Granularity.day, "2026-11-01", BuildConfig())
    assert r.refresh().bundle == c.embedder.bundle_sha256, "one day of three is not the catalogue"
    build_due(c.store, None, c.repo, new, BuildConfig(), RetentionConfig(), now)
    view = r.refresh()
    assert view.bundle == new.bundle_sha256 and all(p.version.bundle_id == new.bundle_sha256 for p in view.plan.pieces)
    ans = r.search(new_vecs[:5], 1)
    assert ans.ids[:, 0].tolist() == c.ids[:5].tolist()  # answered in the new space, the delta included


def test_the_rerank_depth_grows_with_the_listings_searched():
    """k_factor up to 1e6 listings, then k_factor x (n / 1e6) ** growth: a 1e7 month re-ranks 203 candidates
    per result by default (0.917 recall@10 at 64, 0.972 at 200 in bench_index_compressed); growth 0 keeps it."""
    from spnas_core.errors import ConfigError

    p = SearchParams()
    assert [p.rerank_depth(n) for n in (10, 10**6, 4 * 10**6, 10**7)] == [64, 64, 128, 203]
    assert SearchParams(k_factor_growth=0.0).rerank_depth(10**7) == 64
    assert SearchParams(k_factor=10, k_factor_growth=1.0).rerank_depth(3 * 10**6) == 30
    with pytest.raises(ConfigError, match="k_factor_growth"):
        SearchParams(k_factor_growth=-0.5)


def test_a_compressed_version_asks_for_the_depth_of_its_window(tmp_path):
    """The IVF-PQ is asked for k x rerank_depth(listings in the window) candidates: the depth follows the
    window searched, not a fixed factor."""
    n, d = 3000, 16
    v, ts, ids = unit(n, d, 3), np.arange(n, dtype=np.int64), np.arange(n, dtype=np.int64) + 10
    vi = VersionIndex.build(ids, ts, v, "IVF16_HNSW32,PQ8x4,RDisk", FactoryConfig(train_sample=n),
                            vectors_file=tmp_path / "v.npy")
    asked: list[int] = []

    class Spy(SearchParams):
        def rerank_depth(self, m: int) -> int:
            asked.append(m)
            return super().rerank_depth(m)

    vi.params = Spy(exact_below=100, nprobe=16)
    vi.search(v[:2], 5)
    vi.search(v[:2], 5, 1000, 2500)
    assert asked == [n, 1500]


def test_an_in_memory_refine_gets_the_same_depth():
    """FAISS's own refine (`,RFlat`) is given the depth the disk re-ranking uses: rerank_depth of the
    listings searched (the window), not a fixed k_factor."""
    import faiss

    from retrieval.factory import search_params

    index = faiss.index_factory(8, "IVF4,PQ4x4,RFlat", faiss.METRIC_INNER_PRODUCT)
    x = unit(200, 8, 4)
    index.train(x)
    index.add(x)
    p = SearchParams(k_factor=3, k_factor_growth=1.0)
    assert search_params(index, None, p).k_factor == 3
    assert search_params(index, None, p, 4 * 10**6).k_factor == 12
