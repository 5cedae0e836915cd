"""The planner: windows straddling hours, days and months with some versions not ready get the
coarsest ready version of each part, fall back to finer ones, never count a listing twice; a new
bundle takes over only once its versions cover what the old one covers."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.config import Granularity
from retrieval.periods import period_of, period_range, periods
from retrieval.planner import Ready, choose_bundle, covered, plan

H, D, M = Granularity.hour, Granularity.day, Granularity.month


def v(g: Granularity, period: str, bundle: str = "b1", seq: int = 1) -> Ready:
    a, b = period_range(g, period)
    return Ready(bundle, g, period, f"{g.name}-{period}-{seq}", seq, a, b)


def t(s: str) -> int:
    """Unix seconds of '2026-11-30T22' style times (UTC)."""
    g = H if "T" in s else D if s.count("-") == 2 else M
    return period_range(g, s)[0]


def names(p) -> list[tuple[str, int, int]]:
    return [(x.version.version.rsplit("-", 1)[0], x.start, x.end) for x in p.pieces]


def test_a_month_version_answers_its_whole_part_and_the_next_month_falls_back_to_days_and_hours():
    ready = [v(M, "2026-10"), v(D, "2026-10-31"), v(H, "2026-10-31T23"),  # finer versions inside a ready month
             v(D, "2026-11-01"), v(D, "2026-11-02"), v(H, "2026-11-03T00"), v(H, "2026-11-03T01")]
    start, end = t("2026-10-30T12") + 1800, t("2026-11-03T01") + 600
    p = plan(ready, start, end)
    assert names(p) == [("month-2026-10", start, t("2026-11-01")),  # the month, not its day or hour
                        ("day-2026-11-01", t("2026-11-01"), t("2026-11-02")),
                        ("day-2026-11-02", t("2026-11-02"), t("2026-11-03")),
                        ("hour-2026-11-03T00", t("2026-11-03T00"), t("2026-11-03T01")),
                        ("hour-2026-11-03T01", t("2026-11-03T01"), end)]
    assert p.uncovered == []


def test_parts_without_a_ready_version_are_uncovered_and_merged():
    ready = [v(D, "2026-11-01"), v(H, "2026-11-02T00"), v(H, "2026-11-02T02")]  # hour 01 not ready
    start, end = t("2026-10-31T20"), t("2026-11-02T05")
    p = plan(ready, start, end)
    assert names(p) == [("day-2026-11-01", t("2026-11-01"), t("2026-11-02")),
                        ("hour-2026-11-02T00", t("2026-11-02T00"), t("2026-11-02T01")),
                        ("hour-2026-11-02T02", t("2026-11-02T02"), t("2026-11-02T03"))]
    assert p.uncovered == [(start, t("2026-11-01")), (t("2026-11-02T01"), t("2026-11-02T02")),
                           (t("2026-11-02T03"), end)]


def test_the_version_built_last_wins_and_a_day_replaces_its_hours_when_ready():
    hours = [v(H, f"2026-11-02T{h:02d}") for h in range(24)]
    p = plan(hours, t("2026-11-02"), t("2026-11-03"))
    assert len(p.pieces) == 24
    p = plan(hours + [v(D, "2026-11-02", seq=1), v(D, "2026-11-02", seq=7)], t("2026-11-02"), t("2026-11-03"))
    assert [(x.version.version, x.start, x.end) for x in p.pieces] == [("day-2026-11-02-7", t("2026-11-02"),
                                                                        t("2026-11-03"))]


def test_no_listing_is_counted_twice_and_none_is_lost_on_random_plans():
    """Random ready sets over three months, random windows: every instant of the window lies in exactly
    one piece or one uncovered interval."""
    rng = np.random.default_rng(0)
    months = ["2026-10", "2026-11", "2026-12"]
    every = [(M, m) for m in months]
    for m in months:
        a, b = period_range(M, m)
        every += [(D, key) for key, _, _ in periods(D, a, b)]
        every += [(H, key) for key, _, _ in periods(H, a, b)][::7]
    for trial in range(200):
        ready = [v(g, p) for g, p in every if rng.random() < (0.3 if g is M else 0.5)]
        lo, hi = t("2026-10"), t("2027-01")
        s = int(rng.integers(lo, hi))
        e = int(rng.integers(s + 1, hi + 1))
        p = plan(ready, s, e)
        spans = sorted([(x.start, x.end) for x in p.pieces] + p.uncovered)
        assert spans[0][0] == s and spans[-1][1] == e, trial
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:])), trial  # contiguous, no overlap
        for x in p.pieces:  # each piece lies inside its version's period, at the coarsest ready level
            assert x.version.start_ts <= x.start < x.end <= x.version.end_ts
            if x.version.granularity is not M:
                assert (M, period_of(x.start, M)) not in {(r.granularity, r.period) for r in ready}


@pytest.mark.parametrize("new_has, takes_over", [
    (["2026-10", "2026-11"], True),             # covers everything the old one covers
    (["2026-10"], False),                      # November missing: the old bundle keeps answering
    ([], False),
])
def test_a_new_bundle_takes_over_once_its_versions_cover_the_catalogue(new_has, takes_over):
    old = [v(M, "2026-10", "old"), v(M, "2026-11", "old")]
    new = [v(M, m, "new") for m in new_has]
    chosen = choose_bundle(["new", "old"], old + new, t("2026-10"), t("2026-12"))
    assert chosen == ("new" if takes_over else "old")
    assert choose_bundle(["new", "old"], [], 0, 10) is None
    assert choose_bundle(["new", "old"], new or old, t("2026-10"), t("2026-12")) == ("new" if new else "old")


def test_covered_intervals_are_merged():
    p = plan([v(D, "2026-11-01"), v(D, "2026-11-02"), v(D, "2026-11-04")], t("2026-11-01"), t("2026-11-05"))
    assert covered(p) == [(t("2026-11-01"), t("2026-11-03")), (t("2026-11-04"), t("2026-11-05"))]
