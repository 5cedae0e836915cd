"""Pipeline stages: a folder per (kind, name) that is skipped, resumed or redone from its key.

A stage's `stage.json` holds a content hash of its config and inputs (the key) and, once the stage is
done, the sha256 of every file it wrote. A stage is skipped only when the key is the same *and* every
recorded output is still there with the same bytes: a deleted or edited output makes it run again. An
interrupted stage with the same key is resumed (search and training continue from their checkpoints);
one whose inputs changed, whose outputs went stale, or that is forced, is redone from an empty folder.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from spnas_core.files import hash_obj, sha256_file, write_json_atomic

log = logging.getLogger(__name__)

STATE_NAME = "stage.json"


def output_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file below `folder` (relative paths), except the stage record itself and
    temporary files of interrupted atomic writes."""
    out: dict[str, str] = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != STATE_NAME and not (p.name.startswith(".") and p.name.endswith(".tmp")):
            out[str(p.relative_to(folder))] = sha256_file(p)
    return out


def stale_outputs(folder: Path, recorded: dict[str, str]) -> list[str]:
    """Recorded outputs that are missing or whose bytes changed (empty: all intact)."""
    bad = []
    for rel, digest in recorded.items():
        p = folder / rel
        if not p.is_file():
            bad.append(f"{rel} (missing)")
        elif sha256_file(p) != digest:
            bad.append(f"{rel} (changed)")
    return bad


class Stage:
    """One stage folder: run `fn` unless a finished run with the same key and intact outputs is there."""

    def __init__(self, run_dir: Path, kind: str, name: str, key_inputs: dict[str, Any], force: set[str]) -> None:
        self.kind, self.name = kind, name
        self.dir = run_dir / kind / name
        self.key = hash_obj(key_inputs)
        self.force = "all" in force or kind in force
        self.state_path = self.dir / STATE_NAME
        self.stale: list[str] = []

    def state(self) -> dict[str, Any]:
        """The recorded state (empty when the stage never started or its file is unreadable)."""
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def is_done(self, st: dict[str, Any] | None = None) -> bool:
        """Finished with this key, and every output it recorded is still there, byte for byte."""
        st = self.state() if st is None else st
        if st.get("key") != self.key or st.get("status") != "done" or "outputs" not in st:
            return False  # a record without output hashes predates them: its outputs cannot be trusted
        self.stale = stale_outputs(self.dir, st["outputs"])
        return not self.stale

    def run(self, fn: Callable[[Path, bool], dict[str, Any]]) -> tuple[dict[str, Any], str]:
        """Returns (the stage's result, 'skipped' | 'resumed' | 'ran')."""
        st = self.state()
        if not self.force and self.is_done(st):
            return st["result"], "skipped"
        if self.stale:
            log.warning("%s/%s: outputs changed since the stage finished (%s): running it again", self.kind,
                        self.name, ", ".join(self.stale[:5]))
        resume = st.get("key") == self.key and st.get("status") == "running" and not self.force
        if not resume and self.dir.exists():
            shutil.rmtree(self.dir)  # inputs changed, outputs stale, or forced: nothing in here is valid any more
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.state_path, {"key": self.key, "status": "running", "started": time.time()})
        t0 = time.perf_counter()
        result = fn(self.dir, resume)
        wall = time.perf_counter() - t0 + (float(st.get("wall_s", 0)) if resume else 0.0)
        write_json_atomic(self.state_path, {"key": self.key, "status": "done", "result": result, "wall_s": wall,
                                            "finished": time.time(), "outputs": output_hashes(self.dir)})
        return result, "resumed" if resume else "ran"

    @property
    def wall_s(self) -> float:
        return float(self.state().get("wall_s", 0.0))
