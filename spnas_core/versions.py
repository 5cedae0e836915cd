"""Versions of the runtime stack, recorded in manifests, tables, summaries and reports (so a figure
says which torch, converter and runtime made it)."""

from __future__ import annotations

import platform
from importlib import metadata

PACKAGES = ("spnas", "torch", "litert-torch", "ai-edge-litert", "mediapipe", "onnx", "onnxruntime", "faiss-cpu",
            "numpy", "hydra-core", "optuna")


def versions() -> dict[str, str]:
    """`{"python": ..., <package>: <version>}` for the installed packages of the stack."""
    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out
