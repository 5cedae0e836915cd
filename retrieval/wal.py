"""Write-ahead log: the durable record of every change to a partition since its last snapshot.

A write is acknowledged only after its record is appended and fsync'd; index snapshots fold the log
in (`Partition.checkpoint`). The file is a sequence of frames:

    b"SPWL" | u32 body length | u32 crc32(body) | body
    body = u32 header length | header (JSON: op, seq, fields, array dtypes and shapes) | array bytes

A crash can only cut the last frame (appends are sequential); readers stop at the first frame that
is short or fails its checksum, and the next writer (holding the partition lock) truncates it away.
Arrays travel as raw little-endian bytes: a 1024-d listing costs 4 KiB, not 20 KiB of JSON, and
nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spnas_core.errors import IndexWriteError, RetrievalError
from spnas_core.files import fsync_dir

from .faults import failpoint

MAGIC = b"SPWL"
_FRAME = struct.Struct("<4sII")
_U32 = struct.Struct("<I")
_DTYPES = {"<i8", "<f4"}


@dataclass
class Record:
    """One logged change: an operation, its sequence number, small fields and arrays."""

    op: str
    seq: int = 0
    fields: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def encode(rec: Record) -> bytes:
    """A record as one frame."""
    arrays = {k: np.ascontiguousarray(v, dtype=v.dtype.newbyteorder("<")) for k, v in rec.arrays.items()}
    head = {"op": rec.op, "seq": int(rec.seq), "fields": rec.fields,
            "arrays": [[k, a.dtype.str, list(a.shape)] for k, a in arrays.items()]}
    hb = json.dumps(head, separators=(",", ":")).encode()
    body = b"".join([_U32.pack(len(hb)), hb, *(a.tobytes() for a in arrays.values())])
    return _FRAME.pack(MAGIC, len(body), zlib.crc32(body) & 0xFFFFFFFF) + body


def decode(body: bytes) -> Record:
    """The record of a frame body (checksum already verified)."""
    (hlen,) = _U32.unpack_from(body, 0)
    head = json.loads(body[4:4 + hlen])
    arrays, pos = {}, 4 + hlen
    for name, dt, shape in head["arrays"]:
        if dt not in _DTYPES:
            raise RetrievalError(f"write-ahead log record holds an array of type {dt}; only {sorted(_DTYPES)} are valid")
        n = int(np.prod(shape)) * np.dtype(dt).itemsize
        arrays[name] = np.frombuffer(body[pos:pos + n], dtype=dt).reshape(shape).astype(dt[1:], copy=True)
        pos += n
    return Record(head["op"], int(head["seq"]), head.get("fields", {}), arrays)


def read_frames(path: Path, offset: int = 0) -> tuple[list[Record], int, bool]:
    """Whole records from `offset` on, the offset after the last whole one, and whether a cut or
    corrupt frame follows it (a crash mid-append, or an append still being written by another process)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset, False
    out, pos = [], 0
    while pos < len(data):
        if len(data) - pos < _FRAME.size:
            return out, offset + pos, True
        magic, n, crc = _FRAME.unpack_from(data, pos)
        body = data[pos + _FRAME.size:pos + _FRAME.size + n]
        if magic != MAGIC or len(body) < n or zlib.crc32(body) & 0xFFFFFFFF != crc:
            return out, offset + pos, True
        out.append(decode(body))
        pos += _FRAME.size + n
    return out, offset + pos, False


def append_frames(path: Path, frames: list[bytes], expected_end: int) -> int:
    """Append frames at `expected_end` (cutting a torn tail first) and fsync; returns the new end.

    On any failure (disk full, I/O error) the file is cut back to `expected_end`, so the log holds
    exactly what it held before, and `IndexWriteError` is raised: the caller changes nothing.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        try:
            if os.fstat(fd).st_size != expected_end:
                os.ftruncate(fd, expected_end)
            os.lseek(fd, expected_end, os.SEEK_SET)
            data = b"".join(frames)
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            failpoint("wal.before_fsync")
            os.fsync(fd)
        except OSError as e:
            try:
                os.ftruncate(fd, expected_end)
                os.fsync(fd)
            except OSError:
                pass
            raise IndexWriteError(f"could not make a write durable in {path} ({e.strerror or e}); nothing was "
                                  f"changed: free disk space or fix the volume, then retry") from None
        return expected_end + len(data)
    finally:
        os.close(fd)


def reset(path: Path) -> None:
    """Replace the log with an empty one (after a snapshot folded it in); atomic, parent fsync'd."""
    tmp = path.with_name(f".{path.name}.reset")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)
