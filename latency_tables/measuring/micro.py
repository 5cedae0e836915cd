"""Single-op micro-models: the PyTorch module of an op key (`micro_module`), and one .tflite file per op
key, cached on disk by key.

The converter is injected (the export stage's `export.tflite.convert_to_tflite`), so the rows of
a table and the shipped models come out of the same litert-torch conversion.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from latency_tables.lookup.keys import layer_of_key, parse_op_key
from search_spaces import build_layer

class ChannelsLastOutput(nn.Module):
    """Return a 4-D output in NHWC, as the layer hands it to the next one inside a converted network.

    The converter takes NHWC input; without this, a single-layer model ends in a TRANSPOSE back to
    NCHW that a whole network never runs, and the op's row would time it."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.module(x)
        return y.permute(0, 2, 3, 1) if y.ndim == 4 else y


class NHWCGlobalPool(nn.Module):
    """Global average pooling of an NHWC tensor (the pool micro-model takes NHWC input directly)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((1, 2))


@dataclass(frozen=True)
class MicroModel:
    """The single-op module for a key, its input shape, and whether that shape is already NHWC."""

    module: nn.Module
    input_shape: tuple[int, ...]
    nhwc_input: bool = False  # True: pass the sample as is (no NCHW -> NHWC wrapping by the converter)


def micro_module(key: str) -> MicroModel:
    """The single-op PyTorch module for a key, channels-last in and out, and its input shape.

    Built with the same `build_layer` as whole networks, so the micro-model is the real layer; its
    converted op list holds the layer's own ops only (no layout TRANSPOSE a network would not run).
    """
    layer = layer_of_key(key)
    b = layer.block
    op = parse_op_key(key)["op"]
    if op == "Logits":
        return MicroModel(nn.Linear(layer.cin, layer.cout), (1, layer.cin))
    if op == "AvgPool2D":
        return MicroModel(NHWCGlobalPool(), (1, layer.hin, layer.win, layer.cin), nhwc_input=True)
    module = build_layer(layer)
    if b.kind == "fc":
        return MicroModel(module, (1, layer.cin))
    return MicroModel(ChannelsLastOutput(module), (1, layer.cin, layer.hin, layer.win))


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
