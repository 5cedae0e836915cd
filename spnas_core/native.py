"""Native libraries' start-up chatter on stderr, filtered where it is made.

TensorFlow Lite prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." from C++ on every
interpreter it builds, and absl its "All log messages before absl::InitializeLog()" preamble; no
environment variable turns either off, and a user can act on neither. `quiet_native()` runs a block
(an interpreter's construction) with file descriptor 2 on a temporary file, then passes every other
line on: real errors still reach stderr, only the known chatter is dropped. One block at a time
(fd 2 belongs to the process), so concurrent embedders build their interpreters one after another.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from typing import Iterator

NATIVE_NOISE = ("Created TensorFlow Lite XNNPACK delegate", "All log messages before absl::InitializeLog",
                "oneDNN custom operations are on")
_LOCK = threading.Lock()


@contextlib.contextmanager
def quiet_native() -> Iterator[None]:
    """Drop `NATIVE_NOISE` lines written to stderr (fd 2) inside the block; pass the rest on after it."""
    with _LOCK:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # no real stderr (an embedded interpreter): nothing to filter
            yield
            return
        with tempfile.TemporaryFile() as tmp:
            os.dup2(tmp.fileno(), 2)
            try:
                yield
            finally:
                with contextlib.suppress(OSError, ValueError):
                    sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                tmp.seek(0)
                kept = [ln for ln in tmp.read().splitlines(keepends=True)
                        if not any(n.encode() in ln for n in NATIVE_NOISE)]
                if kept:
                    os.write(2, b"".join(kept))
