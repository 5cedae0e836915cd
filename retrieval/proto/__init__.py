"""gRPC stubs for the index service, generated from the .proto files with grpcio-tools.

`make setup` / `pip install` generate them at build time (setup.py's build_py hook); when they are
missing or older than their .proto (an editable checkout after a proto change), `load()` regenerates
them here before importing.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
PROTOS = ("index.proto",)


def generate(out_dir: Path = HERE) -> None:
    """Run grpc_tools.protoc on the .proto files (writes *_pb2.py and *_pb2_grpc.py)."""
    from grpc_tools import protoc

    import grpc_tools

    include = str(Path(grpc_tools.__file__).resolve().parent / "_proto")
    for proto in PROTOS:
        rc = protoc.main(["protoc", f"-I{HERE}", f"-I{include}", f"--python_out={out_dir}",
                          f"--grpc_python_out={out_dir}", str(HERE / proto)])
        if rc != 0:
            raise RuntimeError(f"protoc failed on {proto} (exit {rc})")


def _stale() -> bool:
    for proto in PROTOS:
        stem = proto.removesuffix(".proto")
        for gen in (f"{stem}_pb2.py", f"{stem}_pb2_grpc.py"):
            p = HERE / gen
            if not p.exists() or p.stat().st_mtime < (HERE / proto).stat().st_mtime:
                return True
    return False


def load() -> tuple[ModuleType, ModuleType]:
    """(index_pb2, index_pb2_grpc), generating them first if needed."""
    if _stale() and os.access(HERE, os.W_OK):
        generate()
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))  # generated *_pb2_grpc import their *_pb2 as top-level modules
    return tuple(importlib.import_module(m) for m in  # type: ignore[return-value]
                 ("index_pb2", "index_pb2_grpc"))

