"""Calendar periods of index versions (UTC): hours `2026-11-26T15`, days `2026-11-26`, months `2026-11`.

A period is a half-open interval of unix seconds, [start, end). Periods of one granularity tile the
time line; a day holds its 24 hours and a month its days, which is what lets the planner swap a
coarse version for the finer ones inside it.
"""

from __future__ import annotations

import datetime as dt
from typing import Iterator

from spnas_core.errors import RetrievalError

from .config import Granularity

UTC = dt.timezone.utc
MIN_TS, MAX_TS = 0, 253_402_300_799  # 1970-01-01 .. 9999-12-31T23:59:59 UTC
FORMATS = {Granularity.hour: "%Y-%m-%dT%H", Granularity.day: "%Y-%m-%d", Granularity.month: "%Y-%m"}
COARSER = {Granularity.hour: Granularity.day, Granularity.day: Granularity.month, Granularity.month: None}


def _start(t: dt.datetime, g: Granularity) -> dt.datetime:
    if g is Granularity.hour:
        return t.replace(minute=0, second=0, microsecond=0)
    if g is Granularity.day:
        return t.replace(hour=0, minute=0, second=0, microsecond=0)
    return t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _next(t: dt.datetime, g: Granularity) -> dt.datetime:
    if g is Granularity.hour:
        return t + dt.timedelta(hours=1)
    if g is Granularity.day:
        return t + dt.timedelta(days=1)
    return (t.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def period_of(ts: int, g: Granularity) -> str:
    """The period of granularity `g` holding unix time `ts`."""
    return dt.datetime.fromtimestamp(int(ts), UTC).strftime(FORMATS[g])


def period_range(g: Granularity, period: str) -> tuple[int, int]:
    """[start, end) unix seconds of a period; `RetrievalError` naming the expected form otherwise."""
    try:
        t = dt.datetime.strptime(period, FORMATS[g]).replace(tzinfo=UTC)
    except (ValueError, TypeError):
        example = {"hour": "2026-11-26T15", "day": "2026-11-26", "month": "2026-11"}[g.name]
        raise RetrievalError(f"period '{period}' is not a {g.name} (expected e.g. {example}, UTC)") from None
    return int(t.timestamp()), int(_next(t, g).timestamp())


def periods(g: Granularity, start: int, end: int) -> Iterator[tuple[str, int, int]]:
    """(period, start, end) of every period of `g` overlapping [start, end), in time order."""
    t = _start(dt.datetime.fromtimestamp(max(int(start), MIN_TS), UTC), g)
    while int(t.timestamp()) < end:
        n = _next(t, g)
        yield t.strftime(FORMATS[g]), int(t.timestamp()), int(n.timestamp())
        t = n


def latest_finished(g: Granularity, now: int, count: int) -> list[tuple[str, int, int]]:
    """The `count` most recent periods of `g` that ended by `now`, newest first."""
    out: list[tuple[str, int, int]] = []
    t = _start(dt.datetime.fromtimestamp(int(now), UTC), g)
    while len(out) < count:
        prev = _start(t - dt.timedelta(seconds=1), g)
        out.append((prev.strftime(FORMATS[g]), int(prev.timestamp()), int(t.timestamp())))
        t = prev
    return out


def parent(g: Granularity, period: str) -> tuple[Granularity, str] | None:
    """The coarser period holding this one (None for a month)."""
    up = COARSER[g]
    return None if up is None else (up, period_of(period_range(g, period)[0], up))
