"""Failpoints: named places where a test can kill this process with SIGKILL, to prove crash safety.

`SPNAS_FAILPOINTS=compact.after_absorb,txn.after_prepare` makes the process kill itself (SIGKILL,
no cleanup, exactly what a power cut or an OOM kill does to it) the first time it reaches one of
those points. Unset (always, in production) a failpoint costs one dict lookup. The points are listed
in FAILPOINTS so a typo in a test is an error, not a test that silently passes.
"""

from __future__ import annotations

import os
import signal

from spnas_core.errors import ConfigError

FAILPOINTS = {
    "wal.before_fsync": "a record is written to the log but not yet fsync'd",
    "checkpoint.after_snapshot": "a snapshot is in place, the log it folds in not yet reset",
    "compact.after_seal": "the source partition is sealed, nothing moved yet",
    "compact.after_absorb": "the target logged the source's listings; the source is not yet retired",
    "compact.mid_retire": "the source is being retired (moved aside, not yet deleted)",
    "txn.after_prepare": "every partition of a transaction prepared, no decision logged",
    "txn.after_decision": "the commit decision is logged, no partition has committed",
    "txn.after_first_commit": "one partition committed, the others not yet",
}

_armed: set[str] | None = None


def _points() -> set[str]:
    global _armed
    if _armed is None:
        _armed = {p.strip() for p in os.environ.get("SPNAS_FAILPOINTS", "").split(",") if p.strip()}
        unknown = _armed - set(FAILPOINTS)
        if unknown:
            raise ConfigError(f"SPNAS_FAILPOINTS names unknown failpoints {sorted(unknown)}; known: {sorted(FAILPOINTS)}")
    return _armed


def failpoint(name: str) -> None:
    """SIGKILL this process here when the failpoint `name` is armed."""
    if name in _points():
        os.kill(os.getpid(), signal.SIGKILL)
