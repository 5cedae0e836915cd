"""Pipeline stages: a folder per (kind, name) that is skipped, resumed or redone from its key.

A stage's `stage.json` holds a content hash of its config and inputs. A finished stage with the
same key is skipped; an interrupted one is resumed (search and training continue from their
checkpoints); one whose inputs changed, or that is forced, is redone from an empty folder.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from spnas.files import hash_obj, write_json_atomic


class Stage:
    """One stage folder: run `fn` unless a finished run with the same key is already there."""

    def __init__(self, run_dir: Path, kind: str, name: str, key_inputs: dict[str, Any], force: set[str]) -> None:
        self.kind, self.name = kind, name
        self.dir = run_dir / kind / name
        self.key = hash_obj(key_inputs)
        self.force = "all" in force or kind in force
        self.state_path = self.dir / "stage.json"

    def state(self) -> dict[str, Any]:
        """The recorded state (empty when the stage never started or its file is unreadable)."""
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def run(self, fn: Callable[[Path, bool], dict[str, Any]]) -> tuple[dict[str, Any], str]:
        """Returns (the stage's result, 'skipped' | 'resumed' | 'ran')."""
        st = self.state()
        if st.get("key") == self.key and st.get("status") == "done" and not self.force:
            return st["result"], "skipped"
        resume = st.get("key") == self.key and st.get("status") == "running" and not self.force
        if not resume and self.dir.exists():
            shutil.rmtree(self.dir)  # inputs changed (or forced): nothing in here is valid any more
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.state_path, {"key": self.key, "status": "running", "started": time.time()})
        t0 = time.perf_counter()
        result = fn(self.dir, resume)
        wall = time.perf_counter() - t0 + (float(st.get("wall_s", 0)) if resume else 0.0)
        write_json_atomic(self.state_path, {"key": self.key, "status": "done", "result": result, "wall_s": wall,
                                            "finished": time.time()})
        return result, "resumed" if resume else "ran"

    @property
    def wall_s(self) -> float:
        return float(self.state().get("wall_s", 0.0))
