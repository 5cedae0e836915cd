"""Single-op micro-models: one .tflite file per op key, cached on disk by key.

The converter is injected (the export stage's `export.tflite.convert_to_tflite`), so the rows of
a table and the shipped models come out of the same litert-torch conversion.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

import torch

from .keys import micro_module

MICRO_VERSION = "v2-nhwc-io"
Converter = Callable[..., Path]  # (module, sample_input, path, *, nhwc_input=bool) -> path


def default_cache_dir() -> Path:
    """`<SPNAS_HOME>/cache/micro` (never inside the installed package)."""
    from spnas_core.paths import cache_root

    return cache_root() / "micro"


class MicroModelCache:
    """Key -> .tflite path, converting on first use."""

    def __init__(self, converter: Converter, cache_dir: str | os.PathLike | None = None) -> None:
        self.converter = converter
        self.dir = Path(cache_dir) if cache_dir else default_cache_dir()

    def path_for(self, key: str) -> Path:
        # v2: channels-last in and out (v1 files ended in a layout TRANSPOSE); the version is in the
        # hash so old cached files are never reused.
        h = hashlib.sha256(f"{MICRO_VERSION}:{key}".encode()).hexdigest()[:20]
        return self.dir / f"{h}.tflite"

    def get(self, key: str) -> Path:
        """The micro-model file for `key`, converted (deterministic weights) if not cached yet."""
        path = self.path_for(key)
        if path.exists():
            return path
        seed = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            micro = micro_module(key)
            sample = torch.randn(*micro.input_shape)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.converter(micro.module.eval(), sample, path, nhwc_input=not micro.nhwc_input)
        (self.dir / f"{path.stem}.key").write_text(key + "\n")
        return path
