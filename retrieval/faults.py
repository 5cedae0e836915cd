"""Failpoints: named places where a test makes this process SIGKILL itself, to prove crash safety.

`SPNAS_FAILPOINTS=build.before_manifest` kills the process (no cleanup, as a power cut or an OOM
kill would) when it gets there. Unset, a failpoint costs one set lookup; a name not in FAILPOINTS is
an error, so a typo in a test cannot pass silently.
"""

from __future__ import annotations

import os
import signal

from spnas_core.errors import ConfigError

FAILPOINTS = {"build.before_manifest": "a version's data files are uploaded, its manifest not yet written"}


def failpoint(name: str) -> None:
    """SIGKILL this process here when the failpoint `name` is armed."""
    armed = {p.strip() for p in os.environ.get("SPNAS_FAILPOINTS", "").split(",") if p.strip()}
    if armed - set(FAILPOINTS):
        raise ConfigError(f"SPNAS_FAILPOINTS names unknown failpoints {sorted(armed - set(FAILPOINTS))}")
    if name in armed:
        os.kill(os.getpid(), signal.SIGKILL)
