"""Pipeline stages: a folder per (kind, name) that is skipped, resumed or redone from its key.

A stage's `stage.json` holds a content hash of its config and inputs (the key) and, once the stage is
done, the sha256 of every file it wrote. A stage is skipped only when the key is the same *and* every
recorded output is still there with the same bytes: a deleted or edited output makes it run again. An
interrupted or failed stage with the same key is resumed (search and training continue from their
checkpoints).

Finished results are never deleted before new ones exist: a stage whose finished outputs are intact
but whose inputs changed (or that is forced) runs in a sibling folder `.<name>.next` and replaces the
old folder only once it has finished. A stage that fails (bad inputs, an error, Ctrl-C) records
`status: failed` with the error and keeps the last good result (`last_good`): the same command with the
old inputs skips to it, the same command with the new inputs continues the failed attempt.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from spnas_core.files import hash_obj, recover_dir, replace_dir, sha256_file, write_json_atomic

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


def _one_line(e: BaseException) -> str:
    text = e.one_line() if hasattr(e, "one_line") else " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _relocated(result: Any, old: Path, new: Path) -> Any:
    """`result` with every path inside `old` pointing into `new` (a stage that ran in its `.next` folder)."""
    if old == new:
        return result
    return json.loads(json.dumps(result).replace(json.dumps(str(old))[1:-1], json.dumps(str(new))[1:-1]))


class Stage:
    """One stage folder: run `fn` unless a finished run with the same key and intact outputs is there."""

    def __init__(self, run_dir: Path, kind: str, name: str, key_inputs: dict[str, Any], force: set[str]) -> None:
        self.kind, self.name = kind, name
        self.dir = run_dir / kind / name
        self.next_dir = self.dir.with_name(f".{self.dir.name}.next")  # where new inputs run beside a good result
        self.key = hash_obj(key_inputs)
        self.force = "all" in force or kind in force
        self.state_path = self.dir / STATE_NAME
        self.stale: list[str] = []

    def state(self, folder: Path | None = None) -> dict[str, Any]:
        """The recorded state (empty when the stage never started or its file is unreadable)."""
        try:
            return json.loads(((folder or self.dir) / STATE_NAME).read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    @staticmethod
    def last_good(st: dict[str, Any]) -> dict[str, Any] | None:
        """The finished record a state stands for: itself when done, the result it kept when failed."""
        if st.get("status") == "done" and "outputs" in st:
            return st
        good = st.get("last_good")
        return good if isinstance(good, dict) and good.get("status") == "done" and "outputs" in good else None

    def is_done(self, st: dict[str, Any] | None = None) -> bool:
        """Finished with this key, and every output it recorded is still there, byte for byte."""
        good = self.last_good(self.state() if st is None else st)
        if good is None or good.get("key") != self.key:
            return False  # a record without output hashes predates them: its outputs cannot be trusted
        self.stale = stale_outputs(self.dir, good["outputs"])
        return not self.stale

    def run(self, fn: Callable[[Path, bool], dict[str, Any]]) -> tuple[dict[str, Any], str]:
        """Returns (the stage's result, 'skipped' | 'resumed' | 'ran'). On any error the stage is recorded
        as failed (its last good result kept) and the error is raised again."""
        recover_dir(self.dir)  # a swap cut between its two renames: put the finished folder back
        st = self.state()
        good = self.last_good(st)
        if not self.force and self.is_done(st):
            if st is not good:  # a failed attempt with other inputs: the finished result stands again
                write_json_atomic(self.state_path, good)
            return good["result"], "skipped"  # type: ignore[index]
        if self.stale:
            log.warning("%s/%s: outputs changed since the stage finished (%s): running it again", self.kind,
                        self.name, ", ".join(self.stale[:5]))
        protect = good is not None and not stale_outputs(self.dir, good["outputs"])
        work = self.next_dir if protect else self.dir
        before = self.state(work) if protect else st
        resume = (before.get("key") == self.key and before.get("status") in ("running", "failed")
                  and not self.force)
        if not resume and work.exists():
            shutil.rmtree(work)  # an unfinished attempt with other inputs (a finished result is never in `work`)
        work.mkdir(parents=True, exist_ok=True)
        started = time.time()
        write_json_atomic(work / STATE_NAME, {"key": self.key, "status": "running", "started": started})
        t0 = time.perf_counter()
        try:
            result = fn(work, resume)
        except BaseException as e:
            failed = {"key": self.key, "status": "failed", "error": _one_line(e), "started": started,
                      "failed": time.time(), "wall_s": time.perf_counter() - t0 + (
                          float(before.get("wall_s", 0)) if resume else 0.0)}
            write_json_atomic(work / STATE_NAME, failed)
            if protect:
                write_json_atomic(self.state_path, {**failed, "last_good": good, "attempt": work.name})
                log.warning("%s/%s failed; its last finished result is kept (%s)", self.kind, self.name, self.dir)
            raise
        wall = time.perf_counter() - t0 + (float(before.get("wall_s", 0)) if resume else 0.0)
        record = {"key": self.key, "status": "done", "result": _relocated(result, work, self.dir), "wall_s": wall,
                  "finished": time.time(), "outputs": output_hashes(work)}
        write_json_atomic(work / STATE_NAME, record)
        if protect:
            replace_dir(work, self.dir)  # the new result whole, then the old one goes
        return record["result"], "resumed" if resume else "ran"

    @property
    def wall_s(self) -> float:
        return float(self.state().get("wall_s", 0.0))
