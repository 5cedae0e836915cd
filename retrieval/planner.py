"""Which ready versions answer which part of a time window: a pure function of its inputs.

Each part of the window is answered by the coarsest ready version whose period holds it: a month's
version if it is ready, else the versions of that month's days, and inside a day without one its
hours; what no ready version holds is `uncovered` (the gateway's delta answers it from the listing
store). Periods of one granularity never overlap and a coarse version replaces its finer ones
whole, so no listing is counted twice. Of two ready versions of one period the one built last
(highest snapshot) wins. Versions of one embedder bundle only are planned together (`choose_bundle`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from .config import Granularity
from .periods import period_of, periods


@dataclass(frozen=True)
class Ready:
    """A ready version as the planner sees it (`ref` is whatever the caller uses to reach it)."""

    bundle_id: str
    granularity: Granularity
    period: str
    version: str
    snapshot_seq: int
    start_ts: int
    end_ts: int
    ref: Any = field(default=None, compare=False)


@dataclass(frozen=True)
class Piece:
    version: Ready
    start: int
    end: int


@dataclass
class Plan:
    pieces: list[Piece]
    uncovered: list[tuple[int, int]]

    def signature(self) -> tuple:
        """What the plan answers with, for telling two plans apart."""
        return tuple((p.version.version, p.start, p.end) for p in self.pieces), tuple(self.uncovered)


def plan(versions: Sequence[Ready], start: int, end: int) -> Plan:
    """Tile [start, end) with the coarsest ready versions, months first; the rest is uncovered."""
    best: dict[tuple[Granularity, str], Ready] = {}
    for v in versions:
        k = (v.granularity, v.period)
        if k not in best or v.snapshot_seq > best[k].snapshot_seq:
            best[k] = v
    has_inside = {Granularity.month: {period_of(v.start_ts, Granularity.month) for v in best.values()
                                      if v.granularity is not Granularity.month},
                  Granularity.day: {period_of(v.start_ts, Granularity.day) for v in best.values()
                                    if v.granularity is Granularity.hour}}
    pieces: list[Piece] = []
    uncovered: list[tuple[int, int]] = []

    def cover(g: Granularity, a: int, b: int) -> None:
        for key, ps, pe in periods(g, a, b):
            lo, hi = max(a, ps), min(b, pe)
            v = best.get((g, key))
            if v is not None:
                pieces.append(Piece(v, lo, hi))
            elif g is not Granularity.hour and key in has_inside[g]:
                cover(Granularity.day if g is Granularity.month else Granularity.hour, lo, hi)
            elif uncovered and uncovered[-1][1] == lo:
                uncovered[-1] = (uncovered[-1][0], hi)
            else:
                uncovered.append((lo, hi))

    if start < end:
        cover(Granularity.month, start, end)
    return Plan(pieces, uncovered)


def covered(p: Plan) -> list[tuple[int, int]]:
    """The intervals a plan answers with versions, merged."""
    out: list[tuple[int, int]] = []
    for piece in p.pieces:
        if out and out[-1][1] == piece.start:
            out[-1] = (out[-1][0], piece.end)
        else:
            out.append((piece.start, piece.end))
    return out


def _contains(outer: list[tuple[int, int]], inner: list[tuple[int, int]]) -> bool:
    return all(any(a <= s and e <= b for a, b in outer) for s, e in inner)


def choose_bundle(bundles: Sequence[str], versions: Sequence[Ready], start: int, end: int) -> str | None:
    """The bundle to search with, from `bundles` (newest first): the newest one whose versions cover
    every part of [start, end) that the bundle serving until now covers (the next older one with
    versions); None when no bundle has a version."""
    cov = {b: covered(plan([v for v in versions if v.bundle_id == b], start, end)) for b in bundles}
    with_versions = [b for b in bundles if cov[b]]
    if not with_versions:
        return None
    current = with_versions[-1]  # the oldest bundle still served: it answers until a newer one covers it
    for b in with_versions:
        if b == current or _contains(cov[b], cov[current]):
            return b
    return current
