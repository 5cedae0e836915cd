"""HTTP plumbing of the REST gateway: strict parsing of ids, integers and times (4xx with a message,
never a 500), uploads checked before decoding (type, magic bytes, size, pixels declared in the header,
summed per request), the body limit enforced before a body is read, and bounded admission.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any, Callable

import numpy as np
from fastapi import HTTPException

from spnas_core.errors import ImageDecodeError, ImageTooLargeError
from spnas_core.images import decode_rgb, image_size

from .config import Limits
from .periods import MAX_TS, MIN_TS

ALLOWED_TYPES = {"image/jpeg": (b"\xff\xd8\xff",), "image/png": (b"\x89PNG",), "image/webp": (b"RIFF",),
                 "image/bmp": (b"BM",), "image/gif": (b"GIF87a", b"GIF89a")}
ID_RE = re.compile(r"[0-9]{1,19}")  # ASCII digits only: int() would also take Arabic-Indic and other digits
INT_RE = re.compile(r"[0-9]{1,9}")
NUM_RE = re.compile(r"-?[0-9]{1,20}(\.[0-9]{1,9})?")
MAX_ID = 2**63 - 1


def http_error(code: int, detail: str, retry_after: int | None = None) -> HTTPException:
    return HTTPException(code, detail, headers={"Retry-After": str(retry_after)} if retry_after is not None else None)


def parse_time(v: Any, name: str) -> int | None:
    """Unix seconds (ASCII digits, finite, 1970..9999) or an ISO 8601 time (UTC without a zone); None when absent."""
    if v is None or v == "":
        return None
    if isinstance(v, bool):
        raise http_error(422, f"'{name}' must be unix seconds or an ISO 8601 time, got {v!r}")
    if isinstance(v, int) and not MIN_TS <= v <= MAX_TS:  # a 400-digit JSON integer: float() would overflow
        raise http_error(422, f"'{name}' is outside [{MIN_TS}, {MAX_TS}] (unix seconds, 1970 to 9999)")
    if isinstance(v, (int, float)):
        x = float(v)
    elif isinstance(v, str) and NUM_RE.fullmatch(v.strip()):
        x = float(v.strip())
    elif isinstance(v, str) and v.isascii():
        import datetime as dt

        try:
            t = dt.datetime.fromisoformat(v.strip())
        except ValueError:
            raise http_error(422, f"'{name}' must be unix seconds or an ISO 8601 time, got '{v[:40]}'") from None
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.timezone.utc)
        x = t.timestamp()
    else:
        raise http_error(422, f"'{name}' must be unix seconds or an ISO 8601 time")
    if not math.isfinite(x) or not MIN_TS <= x <= MAX_TS:
        raise http_error(422, f"'{name}'={v} is outside [{MIN_TS}, {MAX_TS}] (unix seconds, 1970 to 9999)")
    return int(x)


def parse_int(v: Any, name: str, lo: int, hi: int) -> int:
    """A JSON integer or a string of ASCII digits within [lo, hi]."""
    if isinstance(v, bool) or not (isinstance(v, int) or (isinstance(v, str) and INT_RE.fullmatch(v.strip()))):
        raise http_error(422, f"'{name}' must be an integer between {lo} and {hi}")
    x = int(v)
    if not lo <= x <= hi:
        raise http_error(422, f"'{name}' must be between {lo} and {hi}, got {x}")
    return x


def parse_id(v: str) -> int:
    """A listing id: ASCII digits, 0 .. 2**63 - 1."""
    v = v.strip()
    if not ID_RE.fullmatch(v) or int(v) > MAX_ID:
        raise http_error(422, f"listing ids are integers 0 .. {MAX_ID} in ASCII digits; got '{v[:40]}'")
    return int(v)


class BodyLimit:
    """Refuse bodies over `max_bytes` before reading them (declared length), or as soon as a chunked
    body passes it; a 413 with a message either way."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await self._reply(send, 400, "Content-Length is not a number")
                return
            if int(declared) > self.max_bytes:
                await self._reply(send, 413, f"request body of {int(declared)} bytes is over the limit of "
                                             f"{self.max_bytes} bytes")
                return
        seen, over, started, replied = 0, False, False, False

        async def counted() -> dict:
            # Past the limit the app is told the client went away: whatever it then answers (Starlette turns
            # the disconnect into a 500) is replaced by the 413 below, so a chunked body gets the same answer.
            nonlocal seen, over
            if over:
                return {"type": "http.disconnect"}
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    over = True
                    return {"type": "http.disconnect"}
            return msg

        async def guarded(msg: dict) -> None:
            nonlocal started, replied
            if over and not started:
                if not replied:
                    replied = True
                    await self._reply(send, 413, f"request body is over the limit of {self.max_bytes} bytes")
                return
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not over:
                raise
        if over and not replied and not started:
            await self._reply(send, 413, f"request body is over the limit of {self.max_bytes} bytes")

    @staticmethod
    async def _reply(send: Callable, code: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": code,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class Admission:
    """At most `limit` requests doing blocking work at once (running or queued for a worker); the event
    loop's thread is the only caller, so a plain counter is enough."""

    def __init__(self, limit: int, retry_after_s: int) -> None:
        self.limit, self.retry_after_s, self.n = limit, retry_after_s, 0

    def __enter__(self) -> "Admission":
        if self.n >= self.limit:
            raise http_error(503, f"the gateway is saturated ({self.n} requests in progress); retry shortly",
                       self.retry_after_s)
        self.n += 1
        return self

    def __exit__(self, *exc: Any) -> None:
        self.n -= 1


@dataclasses.dataclass
class Upload:
    name: str
    ctype: str
    data: bytes


def read_upload(up: Upload, limits: Limits) -> tuple[int, int]:
    """Type, size and magic-byte checks, then the pixel count from the header; 4xx on any problem."""
    if up.ctype not in ALLOWED_TYPES:
        raise http_error(415, f"'{up.name}': content type '{up.ctype or 'none'}' is not an accepted image type "
                        f"({', '.join(ALLOWED_TYPES)})")
    if len(up.data) > limits.max_bytes:
        raise http_error(413, f"'{up.name}' is larger than {limits.max_bytes} bytes")
    if not up.data:
        raise http_error(400, f"'{up.name}' is empty")
    if not up.data.startswith(ALLOWED_TYPES[up.ctype]):
        raise http_error(415, f"'{up.name}' is declared {up.ctype} but its bytes are not")
    try:
        w, h = image_size(up.data)
    except ImageDecodeError as e:
        raise http_error(413 if isinstance(e, ImageTooLargeError) else 400, f"'{up.name}': {e}") from None
    if w * h > limits.max_pixels:
        raise http_error(413, f"'{up.name}' is {w}x{h} = {w * h} pixels, over the limit of {limits.max_pixels}")
    if up.ctype == "image/png":
        missing = png_short_by(up.data)
        if missing:
            raise http_error(400, f"'{up.name}': its pixel data ends {missing} bytes before the {w}x{h} pixels its "
                                  f"header declares (a truncated PNG); send the whole file")
    return w, h


PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def png_short_by(data: bytes) -> int:
    """How many bytes of filtered scanlines a PNG's image data lacks for the size its header declares (0 when
    complete). Pillow decodes a PNG whose zlib stream ends early as if the missing rows were black; this
    inflates the IDAT chunks (1 MiB at a time, counting only) and compares with the declared size."""
    import struct
    import zlib

    pos, idat, ihdr = 8, [], None
    while pos + 8 <= len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            ihdr = body
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + n
    if ihdr is None or len(ihdr) < 13:
        return 0  # not ours to judge: the decoder refuses it
    w, h, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", ihdr[:13])
    bits = depth * PNG_CHANNELS.get(color, 4)

    def size(pw: int, ph: int) -> int:
        return ph * (1 + (pw * bits + 7) // 8) if pw and ph else 0

    want = size(w, h) if not interlace else sum(
        size((w - x0 + dx - 1) // dx if w > x0 else 0, (h - y0 + dy - 1) // dy if h > y0 else 0)
        for x0, y0, dx, dy in ADAM7)
    d, got, buf = zlib.decompressobj(), 0, b"".join(idat)
    try:
        while buf and got < want:
            got += len(d.decompress(buf, 1 << 20))
            buf = d.unconsumed_tail
        if got < want:
            got += len(d.flush())
    except zlib.error:
        return 0  # a corrupt stream: the decoder raises on it
    return max(0, want - got)


def check_uploads(ups: list[Upload], limits: Limits) -> None:
    total = sum(w * h for w, h in (read_upload(u, limits) for u in ups))
    if total > limits.max_request_pixels:
        raise http_error(413, f"the photos of this request declare {total} pixels in all, over the per-request budget "
                        f"of {limits.max_request_pixels}; send fewer or smaller photos per request")


def decode(up: Upload, limits: Limits) -> np.ndarray:
    try:
        return decode_rgb(up.data, max_pixels=limits.max_pixels)
    except ImageDecodeError as e:
        raise http_error(413 if isinstance(e, ImageTooLargeError) else 400, f"'{up.name}': {e}") from None


async def uploads(form: Any, field: str) -> list[Upload]:
    out = []
    for v in form.getlist(field):
        if isinstance(v, str):
            raise http_error(422, f"'{field}' must be a file field")
        out.append(Upload(v.filename or field, (v.content_type or "").split(";")[0].strip().lower(),
                          await v.read()))
    return out


def parse_vector(v: Any, dim: int) -> np.ndarray:
    """A JSON query vector: `dim` finite numbers of unit length (a scaled one is refused, not normalised)."""
    if not isinstance(v, list) or len(v) != dim or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        raise http_error(422, f"JSON search needs 'vector': a list of {dim} numbers")
    try:
        q = np.asarray(v, np.float64)
    except OverflowError:  # a JSON integer with hundreds of digits
        raise http_error(422, "'vector' holds a number too large for a float; send an L2-normalised vector") from None
    if not np.isfinite(q).all():
        raise http_error(422, "'vector' holds NaN or infinity")
    norm = float(np.linalg.norm(q))
    if abs(norm - 1.0) > 1e-3:
        raise http_error(422, f"'vector' has length {norm:.6g}; send an L2-normalised vector (divide by its norm)")
    return q.astype(np.float32)[None]
