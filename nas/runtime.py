"""Run-folder plumbing shared by train, search, export and the pipeline: atomic files, JSON lines,
seeding, versions. Files only; no maths here."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from search_spaces.files import atomic_path, write_bytes_atomic


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """`torch.save` written atomically (temporary name, fsync, rename)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


atomic_write_bytes = write_bytes_atomic  # the one atomic writer, under the name nas/ has always used


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """JSON (indented, sorted keys off, trailing newline) written atomically."""
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, default=_json_default) + "\n").encode())


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def load_torch(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """`torch.load` with a clear error for a missing or corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises a zoo of types for a damaged file
        raise ValueError(
            f"{what} {path} is corrupt or not a PyTorch file ({type(e).__name__}: {e}); "
            f"re-create it (re-run the stage that wrote it)"
        ) from None


class JsonLines:
    """An append-only JSON-lines log that can be cut back to a resumed epoch."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record, default=_json_default) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> list[dict[str, Any]]:
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
                break  # a line cut by a crash ends the log
        return out

    def truncate_to(self, keep: Iterable[dict[str, Any]]) -> None:
        """Rewrite the log with only `keep` (atomic), e.g. the epochs a resumed checkpoint covers."""
        text = "".join(json.dumps(r, default=_json_default) + "\n" for r in keep)
        atomic_write_bytes(self.path, text.encode())


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A generator fixed by (seed, epoch): data order and augmentation replay exactly on resume."""
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + epoch * 7_919 + stream * 104_729) % (2**63))
    return g


def versions() -> dict[str, str]:
    """Versions of the runtime stack, for manifests and reports."""
    from importlib import metadata

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for pkg in ("litert-torch", "ai-edge-litert", "mediapipe", "onnx", "onnxruntime", "faiss-cpu",
                "numpy", "hydra-core", "optuna"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


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
    """Stable short hash of JSON-able data (config + inputs) for stage caching."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=_json_default).encode()).hexdigest()[:16]


class Timer:
    """Wall-clock timer: `with Timer() as t: ...; t.seconds`."""

    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.start
