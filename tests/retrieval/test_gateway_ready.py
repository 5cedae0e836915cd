"""A gateway worker's readiness is its own: a missing version (more than the delta holds) keeps it ready
and its answers say `partial: true` with what is missing; a listing store away for a few seconds keeps it
answering from its last view; only no index service and an incomplete delta, or a view older than
`delta.stale_after_s`, take it out. A write is in the view of the worker that acknowledged it when the
write returns, even while a refresh is in progress. /metrics shows the same figures."""

from __future__ import annotations

import threading
import time

from retrieval.backends import LocalBackends
from retrieval.build import build_due
from retrieval.config import BuildConfig, DeltaConfig, Granularity, Locations, RetentionConfig, SearchParams
from retrieval.gateway import Gateway, GatewaySpec
from retrieval.listings import Listing
from retrieval.periods import period_range
from retrieval.router import Router

from .conftest import fake_bundle, make_catalogue, unit

START = period_range(Granularity.day, "2026-11-01")[0]
NOW = START + 2 * 86400 + 1800
DOWN = "2026-11-02"  # the day whose services are down


def catalogue(tmp):
    bdir, bid = fake_bundle(tmp)
    c = make_catalogue(tmp, 600, START, 2 * 86400 + 1200, bundle=bid)
    build_due(c.store, None, c.repo, c.embedder, BuildConfig(), RetentionConfig(), NOW)
    return bdir, c


class Backends:
    """The versions of a repository loaded in this process, less those whose period starts with `down`."""

    def __init__(self, c, tmp, down: str | None = DOWN):
        self.local = LocalBackends(c.repo, c.store, SearchParams(), str(tmp / "cache"))
        self.down, self.block, self.entered, self.gate = down, False, threading.Event(), threading.Event()

    def __call__(self):
        if self.block:  # a refresh that takes its time, holding the router's lock
            self.entered.set()
            self.gate.wait(10)
        return [r for r in self.local() if not (self.down and r.period.startswith(self.down))]


def make_gateway(tmp, backends, c, bdir, **delta):
    spec = GatewaySpec(bundles=[str(bdir)], locations=Locations(store=c.store.url, photos=f"file://{tmp / 'photos'}",
                                                                repository=c.repo.url, cache=str(tmp / "cache")),
                       delta=DeltaConfig(**{"max_listings": 50, **delta}))
    return Gateway(spec, embedder_factory=lambda path: c.embedder, backends=backends, clock=lambda: NOW)


def test_a_missing_version_keeps_the_gateway_ready_and_its_answers_partial(tmp_path):
    bdir, c = catalogue(tmp_path)
    gw = make_gateway(tmp_path, Backends(c, tmp_path), c, bdir)
    gw.start()
    try:
        ok, body = gw.ready()
        assert ok and body["partial"] and body["backends"] > 0 and body["missing"], body
        day = period_range(Granularity.day, DOWN)
        q = c.vector(int(c.ids[(c.ts >= day[0]) & (c.ts < day[1])][0]))
        ans = gw.search_work(None, q[None], 10, None, None)
        assert ans["partial"] is True and any(k.startswith("2026-11-02T00") for k in ans["missing"]), ans["missing"]
        assert ans["results"] and all(not day[0] <= r["ts"] < day[1] for r in ans["results"])
    finally:
        gw.stop()
    # no index service at all and too many listings for the delta: this worker cannot answer
    gw = make_gateway(tmp_path, lambda: [], c, bdir)
    gw.start()
    try:
        ok, body = gw.ready()
        assert not ok and "no index service answers" in " ".join(body["reasons"])
    finally:
        gw.stop()


def test_a_listing_store_outage_keeps_answering_from_the_last_view_until_it_is_stale(tmp_path):
    bdir, c = catalogue(tmp_path)
    gw = make_gateway(tmp_path, Backends(c, tmp_path, down=None), c, bdir, refresh_s=0.2, stale_after_s=1.5)
    gw.start()
    try:
        assert gw.ready()[0]
        gw.store.engine.dispose()
        c.store.engine.dispose()
        db = tmp_path / "listings.sqlite"
        db.rename(tmp_path / "away.sqlite")  # the store goes away
        db.mkdir()
        gw.refresh()
        ok, body = gw.ready()
        assert ok and body["refresh_failures"] >= 1, body
        ans = gw.search_work(None, c.vecs[:1], 5, None, None)
        assert ans["results"][0]["id"] == c.ids[0] and ans["details"] is False  # answered, without titles
        time.sleep(1.6)
        gw.refresh()
        ok, body = gw.ready()
        assert not ok and "has not been read" in " ".join(body["reasons"])
        text = gw.metrics()
        assert "spnas_gateway_ready 0" in text and "spnas_gateway_refresh_failures_total" in text
        assert "spnas_gateway_discovery_stale_seconds 0" in text
    finally:
        gw.stop()


def test_a_write_is_in_the_view_of_its_worker_even_during_a_refresh(tmp_path):
    """The worker's refresh is in progress (holding its lock) when the write commits: the write's
    catch-up waits for it and follows from the view it leaves, so the next search finds the listing."""
    bdir, c = catalogue(tmp_path)
    b = Backends(c, tmp_path, down=None)
    r = Router(c.store, None, lambda bundle: c.embedder, [c.embedder.bundle_sha256], b, DeltaConfig(),
               RetentionConfig(), clock=lambda: NOW)
    r.refresh()
    vec = unit(1, 16, 99)
    c.store.cache(c.embedder.bundle_sha256, ["rw" + "0" * 62], vec)
    for n, (i, gone) in enumerate([(10**12, False), (10**12, True), (int(c.ids[0]), True)]):
        b.block, b.entered, b.gate = True, threading.Event(), threading.Event()
        refresh = threading.Thread(target=r.refresh)
        refresh.start()
        assert b.entered.wait(10)
        if gone:
            c.store.remove(i)
        else:
            c.store.add([Listing(i, NOW - 60, "rw" + "0" * 62)])
        b.block = False
        threading.Timer(0.3, b.gate.set).start()  # the refresh ends a little later
        r.catch_up()
        q = vec if i == 10**12 else c.vector(i)[None]
        got = r.search(q, 5).ids[0]
        assert (i in got) != gone, (n, i, gone, got)
        refresh.join(10)
