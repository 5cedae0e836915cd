"""What answers a query in a gateway worker: the ready versions of one bundle, tiled by the planner,
and the delta, a small exact index of the active listings no ready version holds.

Every `delta.refresh_s` the router takes the ready versions (from `backends`, e.g. the services its
resolver names), picks the bundle (`choose_bundle`) and plans the catalogue's horizon (the retention
window up to now). The delta then holds exactly the listings the versions do not: every active
listing of an uncovered part (newest parts first, up to `delta.max_listings`; older ones are reported
missing), and every listing changed after the snapshot of the version covering its time. The delta
is rebuilt from the listing store when the plan changes and otherwise follows the store's changes;
its change number goes with every query to the services (`as_of`), which leave out exactly the
listings changed up to it, so each active listing is answered once. Results of all parts are merged
with FAISS's `ResultHeap`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np

from .build import embeddings
from .interface import Embedder
from .config import DeltaConfig, Granularity, RetentionConfig
from .listings import Listing, ListingStore
from .periods import latest_finished
from .photos import PhotoStore
from .planner import Plan, Ready, choose_bundle, plan
from .version_index import VersionIndex


class Handle(Protocol):
    """How a ready version is searched: `submit` returns a function that waits for the result."""

    def submit(self, q: np.ndarray, k: int, start: int, end: int, bundle: str, as_of: int
               ) -> Callable[[], tuple[np.ndarray, np.ndarray]]: ...


@dataclass
class View:
    """One consistent state to answer queries with (replaced whole on refresh)."""

    bundle: str
    horizon: tuple[int, int]
    plan: Plan
    delta: VersionIndex
    seq: int
    missing: list[tuple[int, int]]
    ready: list[Ready] = field(default_factory=list)


@dataclass
class Answer:
    scores: np.ndarray
    ids: np.ndarray
    versions: list[str]
    missing: dict[str, str]
    seq: int
    delta: int  # listings the delta held


def _overlap(a: int, b: int, s: int, e: int) -> bool:
    return a < e and s < b


class Router:
    """Plans, keeps the delta and answers queries (thread-safe: searches read the current `View`)."""

    def __init__(self, store: ListingStore, photos: PhotoStore | None, embedder_for: Callable[[str], Embedder],
                 bundles: Sequence[str], backends: Callable[[], list[Ready]], delta: DeltaConfig,
                 retention: RetentionConfig, max_future_s: int = 300, clock: Callable[[], float] = time.time) -> None:
        self.store, self.photos, self.embedder_for = store, photos, embedder_for
        self.bundles, self.backends, self.cfg, self.retention = list(bundles), backends, delta, retention
        self.max_future_s, self.clock = max_future_s, clock
        self.view: View | None = None
        self.live: list[Ready] = []  # what `backends` answered last (read before the store, so a store outage
        self.live_at = 0.0           # does not hide that the services are up); monotonic time of that answer
        self._rows: dict[int, Listing] = {}
        self._vecs: dict[str, np.ndarray] = {}
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ refresh
    def horizon(self) -> tuple[int, int]:
        """[start of the oldest retained month, now + allowed clock skew + an hour)."""
        now = int(self.clock())
        return latest_finished(Granularity.month, now, self.retention.months)[-1][1], now + self.max_future_s + 3600

    def refresh(self) -> View:
        """Re-plan with the versions ready now, and bring the delta up to date."""
        with self._lock:
            ready = self.backends()
            self.live, self.live_at = ready, time.monotonic()
            h0, h1 = self.horizon()
            bundle = choose_bundle(self.bundles, ready, h0, h1) or self.bundles[0]
            p = plan([r for r in ready if r.bundle_id == bundle], h0, h1)
            old = self.view
            if old is None or old.bundle != bundle or old.plan.signature() != p.signature() or \
                    len(self._rows) > self.cfg.max_listings or old.horizon[0] != h0:
                if old is not None and old.bundle != bundle:
                    self._vecs.clear()
                (seq, missing), dirty = self._reload(p, h0), True
            else:
                seq, missing, dirty = self._follow(old)
            delta = self._delta(bundle) if dirty else old.delta
            self.view = View(bundle, (h0, h1), p, delta, seq, missing, ready)
            return self.view

    def catch_up(self) -> None:
        """Follow the store's changes without re-planning (after a write, so it is visible at once here).
        A refresh in progress may have read the store before the write committed, so this waits for it and
        then follows from the view it left: once this returns, this worker's view holds the write."""
        with self._lock:
            old = self.view
            if old is None:
                self.refresh()
                return
            seq, missing, dirty = self._follow(old)
            delta = self._delta(old.bundle) if dirty else old.delta
            self.view = View(old.bundle, old.horizon, old.plan, delta, seq, missing, old.ready)

    def _reload(self, p: Plan, h0: int) -> tuple[int, list[tuple[int, int]]]:
        """The delta's listings read again: changed ones of covered parts, all of uncovered parts (newest first, to the cap)."""
        ranges = [(x.start, x.end, x.version.snapshot_seq) for x in p.pieces]
        room, missing = self.cfg.max_listings - sum(self.store.count(a, b, after=s) for a, b, s in ranges), []
        for a, b in sorted(p.uncovered, key=lambda u: -u[1]):
            n = self.store.count(a, b)
            if n <= room:
                ranges.append((a, b, -1))
                room -= n
            else:
                missing.append((a, b))
                room = 0  # keep the delta's parts contiguous from now backwards
        rows, seq = self.store.active_in(ranges)
        self._rows = {r.id: r for r in rows}
        return seq, sorted(missing)

    def _follow(self, view: View) -> tuple[int, list[tuple[int, int]], bool]:
        """Apply the store's changes since the view: each changed listing leaves the delta, and comes back
        when it is active within the delta's part of the horizon. Returns (seq, missing, changed)."""
        seq, changed = view.seq, False
        h0, h1 = view.horizon
        while True:
            rows, upto = self.store.changes(seq)
            for r in rows:
                changed |= self._rows.pop(r.id, None) is not None
                if r.active and h0 <= r.ts < h1 and not any(a <= r.ts < b for a, b in view.missing):
                    self._rows[r.id], changed = r, True
            seq = upto
            if not rows or rows[-1].seq >= upto:
                return seq, view.missing, changed

    def _delta(self, bundle: str) -> VersionIndex:
        rows = list(self._rows.values())
        emb = self.embedder_for(bundle)
        need = sorted({r.photo for r in rows} - set(self._vecs))
        if need:
            for h, v in zip(need, embeddings(self.store, self.photos, emb, need)):
                self._vecs[h] = v
        keep = {r.photo for r in rows}
        for h in [h for h in self._vecs if h not in keep]:
            del self._vecs[h]
        ids = np.fromiter((r.id for r in rows), np.int64, len(rows))
        ts = np.fromiter((r.ts for r in rows), np.int64, len(rows))
        vecs = np.stack([self._vecs[r.photo] for r in rows]) if rows else np.zeros((0, emb.dim), np.float32)
        return VersionIndex.in_memory(ids, ts, vecs, dim=emb.dim)

    # ------------------------------------------------------------------ search
    def search(self, q: np.ndarray, k: int, start: int | None = None, end: int | None = None) -> Answer:
        """Top-k listings over [start, end) from the versions the plan picks and the delta, merged."""
        import faiss

        view = self.view or self.refresh()
        s = view.horizon[0] if start is None else max(start, view.horizon[0])
        e = view.horizon[1] if end is None else min(end, view.horizon[1])
        q = np.ascontiguousarray(np.atleast_2d(q), np.float32)
        heap = faiss.ResultHeap(len(q), k, keep_max=True)
        waits, used, missing = {}, [], {}
        for piece in view.plan.pieces:
            if _overlap(piece.start, piece.end, s, e):
                v = piece.version
                name = f"{v.granularity.name}/{v.period}"
                try:
                    waits[name] = v.ref.submit(q, k, max(s, piece.start), min(e, piece.end), view.bundle, view.seq)
                except Exception as ex:
                    missing[name] = str(ex)[:160]
        if s < e:
            heap.add_result(*view.delta.search(q, k, s, e))
        for name, wait in waits.items():
            try:
                heap.add_result(*wait())
                used.append(name)
            except Exception as ex:  # that service went away since the last refresh
                details = ex.details() if callable(getattr(ex, "details", None)) else str(ex)
                missing[name] = str(details)[:160]
        for a, b in view.missing:
            if _overlap(a, b, s, e):
                span = "..".join(time.strftime("%Y-%m-%dT%H", time.gmtime(x)) for x in (a, b))
                missing[span] = "no ready version and too many listings for the delta: build it (spnas-index build-due)"
        heap.finalize()
        return Answer(heap.D, heap.I, used, missing, view.seq, len(view.delta))
