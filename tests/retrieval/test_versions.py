"""Index versions: content-named and immutable (same inputs, same version; a change, a new one), the
factory chosen by size, a corrupted file refused, a build killed before its manifest leaving nothing
visible (and its rerun naming the same version), retention, and a non-local fsspec repository."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from retrieval.build import build_due, build_period
from retrieval.config import BuildConfig, FactoryConfig, Granularity, RetentionConfig
from retrieval.periods import period_range
from retrieval.version_index import VersionIndex
from retrieval.versions import Repository, open_version, retain
from spnas_core.errors import VersionCorruptError

from .conftest import make_catalogue, unit

H, D, M = Granularity.hour, Granularity.day, Granularity.month
HOUR = "2026-11-26T15"
START = period_range(H, HOUR)[0]


def test_listings_sharing_a_photo_are_each_indexed_with_its_vector(tmp_path):
    """Two listings of one photo: the build takes both vectors from the cache (it embedded nothing: the
    fake embedder refuses) and a search with that vector finds both."""
    c = make_catalogue(tmp_path, 50, START, 3600)
    c.store.load(np.array([7, 8], np.int64), np.array([START + 10, START + 20]), [c.photos[3], c.photos[3]],
                 ["again", "and again"])
    info, _ = build_period(c.store, None, c.repo, c.embedder, H, HOUR, BuildConfig())
    vi = VersionIndex.load(*open_version(info.url, tmp_path / "cache"))
    scores, ids = vi.search(c.vecs[3:4], 3)
    assert sorted(ids[0].tolist()) == sorted([int(c.ids[3]), 7, 8]) and np.allclose(scores[0], 1.0, atol=1e-5)


def test_same_inputs_make_no_new_version_and_a_change_makes_one(tmp_path):
    c = make_catalogue(tmp_path, 300, START, 3600)
    cfg = BuildConfig()
    v1, built = build_period(c.store, None, c.repo, c.embedder, H, HOUR, cfg)
    assert built and v1.count == 300 and v1.factory == "Flat" and v1.version == v1.inputs_sha256[:16]
    v2, built = build_period(c.store, None, c.repo, c.embedder, H, HOUR, cfg)
    assert not built and v2.version == v1.version and len(c.repo.versions()) == 1
    other = Repository(f"file://{tmp_path / 'other'}")  # built elsewhere from the same inputs: the same name
    assert build_period(c.store, None, other, c.embedder, H, HOUR, cfg)[0].version == v1.version
    c.store.remove(int(c.ids[0]))
    v3, built = build_period(c.store, None, c.repo, c.embedder, H, HOUR, cfg)
    assert built and v3.version != v1.version and v3.count == 299 and v3.snapshot_seq > v1.snapshot_seq
    m = json.loads((Path(v3.url) / "manifest.json").read_text())
    assert set(m["files"]) == {"index", "ids", "ts"} and all(len(f["sha256"]) == 64 for f in m["files"].values())
    folder, info = open_version(v3.url, tmp_path / "cache")
    vi = VersionIndex.load(folder, info)
    assert list(vi.ts) == sorted(vi.ts) and int(c.ids[0]) not in set(vi.ids.tolist())


@pytest.mark.parametrize("n, factory", [(40, "Flat"), (150, "HNSW8"), (400, "IVF16_HNSW32,PQ16x4,RDisk")])
def test_the_factory_is_chosen_by_size_and_every_kind_finds_the_listing(tmp_path, n, factory):
    c = make_catalogue(tmp_path, n, START, 3600)
    cfg = BuildConfig(factory=FactoryConfig(flat_below=100, hnsw_up_to=300, hnsw_m=8, train_sample=400))
    info, _ = build_period(c.store, None, c.repo, c.embedder, H, HOUR, cfg)
    assert info.factory == factory
    assert ("vectors" in info.files) == factory.endswith(",RDisk")  # the exact vectors beside a compressed index
    vi = VersionIndex.load(*open_version(info.url, tmp_path / "cache"))
    scores, ids = vi.search(c.vecs[:5], 3)
    assert ids[:, 0].tolist() == c.ids[:5].tolist()  # exact re-ranking puts the listing itself first
    assert np.allclose(scores[:, 0], 1.0, atol=2e-3)  # exact scores (float16 vectors on disk: within 1e-3)


def test_the_factory_takes_the_compressed_path_at_the_decks_scale():
    """Above `hnsw_up_to` (1e6): IVF-PQ with an HNSW coarse quantizer, re-ranked exactly from float16
    vectors on disk (the path bench/bench_index_compressed.py measures at 1e7)."""
    from retrieval.factory import choose_factory

    cfg = FactoryConfig()
    assert choose_factory(99_999, 128, cfg) == "Flat" and choose_factory(10**6, 128, cfg) == "HNSW32"
    assert choose_factory(10**7, 128, cfg) == "IVF4096_HNSW32,PQ32,RDisk"
    assert choose_factory(3 * 10**7, 128, cfg) == "IVF4096_HNSW32,PQ32,RDisk"
    assert choose_factory(10**7, 128, FactoryConfig(opq=True, pq_m=16)) == "OPQ16_128,IVF4096_HNSW32,PQ16,RDisk"


def test_a_corrupted_index_file_is_refused(tmp_path):
    c = make_catalogue(tmp_path, 50, START, 3600)
    info, _ = build_period(c.store, None, c.repo, c.embedder, H, HOUR, BuildConfig())
    f = Path(info.url) / info.files["index"]["name"]
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    f.write_bytes(bytes(data))
    with pytest.raises(VersionCorruptError, match="does not match its manifest"):
        VersionIndex.load(*open_version(info.url, tmp_path / "cache"))
    r = subprocess.run([str(Path(sys.executable).parent / "spnas-index"), "serve", f"version={info.url}",
                        f"locations.store=sqlite:///{tmp_path / 'listings.sqlite'}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 7 and "does not match its manifest" in r.stderr and "Traceback" not in r.stderr


BUILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from retrieval.build import build_period
    from retrieval.config import BuildConfig, Granularity
    from retrieval.listings import ListingStore
    from retrieval.versions import Repository
    from tests.retrieval.conftest import FakeEmbedder
    info, built = build_period(ListingStore({store!r}), None, Repository({repo!r}), FakeEmbedder(16),
                               Granularity.hour, {hour!r}, BuildConfig())
    print(info.version, built)
""")


def test_a_build_killed_before_its_manifest_leaves_nothing_and_its_rerun_names_the_same_version(tmp_path):
    c = make_catalogue(tmp_path, 200, START, 3600)
    root = str(Path(__file__).resolve().parents[2])
    script = BUILD.format(root=root, store=c.store.url, repo=c.repo.url, hour=HOUR)
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "SPNAS_FAILPOINTS": "build.before_manifest"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert c.repo.versions() == []  # nothing visible ...
    left = [p for p in (tmp_path / "repository").rglob("*") if p.is_file()]
    assert left and not any(p.name == "manifest.json" for p in left)  # ... though its data files were written
    rerun = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    version, built = rerun.stdout.split()
    assert built == "True" and [v.version for v in c.repo.versions()] == [version]
    again = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert again.stdout.split() == [version, "False"]
    # what a killed build leaves in a folder that never got a manifest is removed by retention
    stray = tmp_path / "repository" / c.embedder.bundle_sha256 / "hour" / "2026-11-26T14" / "0123456789abcdef"
    stray.mkdir(parents=True)
    (stray / "index.0000.faiss").write_bytes(b"half")
    retain(c.repo, RetentionConfig(incomplete_after_s=0), START + 7200, c.embedder.bundle_sha256)
    assert not any(stray.iterdir()) and [v.version for v in c.repo.versions()] == [version]


def test_build_due_of_one_granularity_builds_only_it(tmp_path):
    """What each CronJob runs: the hourly one builds hours, the daily one days (granularities=[...])."""
    now = period_range(H, "2026-11-03T05")[0] + 600
    c = make_catalogue(tmp_path, 300, now - 3 * 86400, 3 * 86400 - 600)
    build_due(c.store, None, c.repo, c.embedder, BuildConfig(), RetentionConfig(), now, only=[H])
    assert {v.granularity for v in c.repo.versions()} == {"hour"}
    build_due(c.store, None, c.repo, c.embedder, BuildConfig(), RetentionConfig(), now, only=[D])
    assert {v.granularity for v in c.repo.versions()} == {"hour", "day"}


def test_the_index_command_takes_the_cronjobs_options():
    import spnas
    from spnas_core.errors import ConfigError

    cfg = spnas.compose("index", ["command=build_due", "bundle=/b", "granularities=[hour]", "servings=kubernetes",
                                  "health_port=50052"])
    assert cfg.granularities == [H] and cfg.servings == "kubernetes" and cfg.health_port == 50052
    with pytest.raises(ConfigError, match="servings"):
        spnas.compose("index", ["command=build_due", "bundle=/b", "servings=swarm"])


def test_build_due_and_retention(tmp_path):
    month0 = period_range(M, "2026-09")[0]
    now = period_range(H, "2026-11-03T05")[0] + 600
    c = make_catalogue(tmp_path, 2000, month0, now - month0 - 600)
    ret = RetentionConfig(months=2, days=3, hours=4)
    s = build_due(c.store, None, c.repo, c.embedder, BuildConfig(), ret, now)
    got = {(v.granularity, v.period) for v in c.repo.versions()}

    def held(g, p):
        a, b = period_range(g, p)
        return bool(((c.ts >= a) & (c.ts < b)).any())

    want = {("month", "2026-10"), ("month", "2026-09"), ("day", "2026-11-02"), ("day", "2026-11-01"),
            ("day", "2026-10-31"), *{("hour", f"2026-11-03T0{h}") for h in range(1, 5)}}
    assert got == {(g, p) for g, p in want if held(Granularity[g], p)}, sorted(got)  # empty periods: no version
    assert len(s["built"]) == len(got)
    assert build_due(c.store, None, c.repo, c.embedder, BuildConfig(), ret, now)["built"] == []  # nothing due
    # hours past their window stay until their day's version covers them, then go
    hours = lambda: sorted(v.period for v in c.repo.versions() if v.granularity == "hour")  # noqa: E731
    early = [h for h in hours() if h < "2026-11-03T02"]
    build_due(c.store, None, c.repo, c.embedder, BuildConfig(), ret, now + 3 * 3600)
    assert set(early) <= set(hours())  # 2026-11-03 is not over: no day version yet
    build_due(c.store, None, c.repo, c.embedder, BuildConfig(), ret, now + 86400)
    assert ("day", "2026-11-03") in {(v.granularity, v.period) for v in c.repo.versions()}
    assert not [h for h in hours() if h < "2026-11-04T01"]  # covered by their day: removed
    # a change in a built day beyond `rebuild_changed` rebuilds it; the replaced version is removed
    day = next(v for v in c.repo.versions() if v.period == "2026-11-02")
    a, b = period_range(D, "2026-11-02")
    for i in c.ids[(c.ts >= a) & (c.ts < b)][:2]:
        c.store.remove(int(i))
    build_due(c.store, None, c.repo, c.embedder, BuildConfig(), ret, now + 86400)
    days = [v for v in c.repo.versions() if v.period == "2026-11-02"]
    assert len(days) == 1 and days[0].version != day.version and days[0].count == day.count - 2


def test_a_non_local_fsspec_repository(tmp_path):
    """`memory://` stands for any remote filesystem: published there, fetched into a local cache, verified."""
    import fsspec

    c = make_catalogue(tmp_path, 120, START, 3600, repository="memory://spnas-test-repo")
    info, _ = build_period(c.store, None, c.repo, c.embedder, H, HOUR, BuildConfig())
    assert info.url.startswith("memory://") and [v.version for v in c.repo.versions()] == [info.version]
    folder, got = open_version(info.url, tmp_path / "cache")
    assert folder.is_relative_to(tmp_path / "cache") and (folder / "manifest.json").is_file()
    vi = VersionIndex.load(folder, got)
    assert vi.search(c.vecs[:1], 1)[1][0, 0] == c.ids[0]
    fs = fsspec.filesystem("memory")
    fs.pipe_file(f"/spnas-test-repo/{c.embedder.bundle_sha256}/hour/{HOUR}/{info.version}/{info.files['ids']['name']}",
                 np.zeros(3, np.int64).tobytes())  # the remote copy changed after publication
    with pytest.raises(VersionCorruptError):
        open_version(info.url, tmp_path / "cache2")
    c.repo.remove(info)
    assert c.repo.versions() == [] and not fs.ls(f"/spnas-test-repo/{c.embedder.bundle_sha256}/hour/{HOUR}")
    fs.rm("/spnas-test-repo", recursive=True)


def test_photo_store_on_fsspec_is_content_addressed(tmp_path):
    from retrieval.photos import PhotoStore
    from tests.retrieval.conftest import jpeg

    img = (unit(1, 32 * 32 * 3, 0).reshape(32, 32, 3) * 127 + 128).astype(np.uint8)
    for url in (f"file://{tmp_path / 'photos'}", "memory://spnas-test-photos"):
        s = PhotoStore(url)
        data = jpeg(img)
        h = s.put(data)
        assert s.put(data) == h and s.original(h) == data and s.thumbnail(h)[:3] == b"\xff\xd8\xff"
        assert s.original("0" * 64) is None
