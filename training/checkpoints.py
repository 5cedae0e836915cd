"""Checkpoint files: atomic `torch.save`, safe loading, and the trained-model file the exporter reads.

Every load uses `weights_only=True`: a checkpoint holds tensors and plain data only, so a file from
elsewhere cannot run code when it is opened.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from search_spaces import ArchSpec, build_for_weights
from spnas_core.errors import CheckpointError, InputNotFoundError
from spnas_core.files import atomic_path

MODEL_FORMAT = "spnas.model/1"


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """`torch.save` written atomically (temporary name, fsync, rename)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def load_torch(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """`torch.load(weights_only=True)` with a clear error for a missing or corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"{what} {path} does not exist; check the path (a model.pt is written by "
                                 f"spnas-train, a supernet.pt by spnas-search)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises a zoo of types for a damaged or unsafe file
        raise CheckpointError(
            f"{what} {path} is corrupt or not a plain-tensor PyTorch file ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); re-create it (re-run the stage that wrote it)"
        ) from None


def save_model(path: Path, model: nn.Module, arch: ArchSpec, data_info: dict[str, Any],
               extra: dict[str, Any] | None = None) -> Path:
    """The trained-weights file the exporter reads: weights + arch + data facts (atomic)."""
    return atomic_torch_save({"format": MODEL_FORMAT, "arch": arch.to_dict(), "state_dict": model.state_dict(),
                              "data": data_info, **(extra or {})}, path)


def load_model_file(path: str | os.PathLike) -> tuple[nn.Module, ArchSpec, dict[str, Any]]:
    """Load a `model.pt` written by `save_model`; clear errors for corrupt or mismatched files."""
    blob = load_torch(path, "model checkpoint")
    if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
        raise CheckpointError(f"{path} is not an spnas model checkpoint (expected format {MODEL_FORMAT}); "
                              f"pass the model.pt written by spnas-train")
    arch = ArchSpec.from_dict(blob["arch"])
    model = build_for_weights(arch, blob.get("embedding"))  # a plain classifier, or a fine-tuned embedder
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not match its architecture ({str(e).splitlines()[0]})") from None
    return model.eval(), arch, blob
