"""File helpers every stage shares: atomic writes, folder swaps, JSON lines, content hashes.

A crash (or SIGKILL) mid-write leaves the previous file in place, never half a file: data goes to a
temporary name in the same folder, is fsync'd, renamed over the target, and the folder is fsync'd
so the rename itself survives a power cut. This module imports nothing from the project.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator


def fsync_dir(folder: str | os.PathLike) -> None:
    """fsync a folder, so renames inside it are durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; artifacts are meant to be shared
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write text (UTF-8) atomically."""
    return write_bytes_atomic(path, text.encode())


def json_default(o: Any) -> Any:
    """JSON for the types run summaries hold: NumPy scalars and arrays, paths, enums, dataclasses."""
    import dataclasses
    import enum

    if isinstance(o, enum.Enum):
        return o.name
    if isinstance(o, Path):
        return str(o)
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    try:
        import numpy as np

        if isinstance(o, np.integer):
            return int(o)
        if isinstance(o, np.floating):
            return float(o)
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """JSON (indented, trailing newline) written atomically."""
    return write_bytes_atomic(path, (json.dumps(obj, indent=2, default=json_default) + "\n").encode())


def replace_dir(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Put the finished folder `src` at `dst`; an existing `dst` is moved aside first, removed after.

    Readers see either the old folder or the new one whole. A crash between the two renames leaves
    the old one beside it as `.<name>.old-*`, which `recover_dir` puts back.
    """
    src, dst = Path(src), Path(dst)
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}-{time.time_ns()}")
        os.replace(dst, old)
    os.replace(src, dst)
    fsync_dir(dst.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return dst


def recover_dir(dst: str | os.PathLike) -> bool:
    """Undo a `replace_dir` cut between its renames: restore the newest `.<name>.old-*` if `dst` is
    missing, and drop leftovers when it is present. Returns True when a folder was restored."""
    dst = Path(dst)
    olds = sorted(dst.parent.glob(f".{dst.name}.old-*"), key=lambda p: p.stat().st_mtime)
    restored = False
    if olds and not dst.exists():
        os.replace(olds.pop(), dst)
        fsync_dir(dst.parent)
        restored = True
    for o in olds:
        shutil.rmtree(o, ignore_errors=True)
    return restored


class JsonLines:
    """An append-only JSON-lines log that can be cut back to a resumed epoch."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def append(self, record: dict[str, Any]) -> None:
        """Append one record and fsync it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record, default=json_default) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> list[dict[str, Any]]:
        """Every whole record; a line cut by a crash ends the log."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return out

    def truncate_to(self, keep: Iterable[dict[str, Any]]) -> None:
        """Rewrite the log with only `keep` (atomic), e.g. the epochs a resumed checkpoint covers."""
        text = "".join(json.dumps(r, default=json_default) + "\n" for r in keep)
        write_bytes_atomic(self.path, text.encode())


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def hash_obj(obj: Any) -> str:
    """Stable short hash of JSON-able data (config + inputs), for stage and cache keys."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=json_default).encode()).hexdigest()[:16]
