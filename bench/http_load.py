"""A light HTTP/1.1 load generator: requests encoded once, sent over keep-alive connections with
asyncio streams, so the client's own CPU (on the same 2-core machine as what it measures) stays a
small share: httpx spent about one core on the multipart encoding of ~100 photo searches a second."""

from __future__ import annotations

import asyncio
import time
import uuid
from urllib.parse import urlsplit


def multipart(field: str, filename: str, data: bytes, ctype: str = "image/jpeg") -> tuple[bytes, str]:
    """(body, content type) of a multipart form with one file field."""
    b = uuid.uuid4().hex
    body = (f"--{b}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {ctype}\r\n\r\n").encode() + data + f"\r\n--{b}--\r\n".encode()
    return body, f"multipart/form-data; boundary={b}"


def request(url: str, path: str, body: bytes, ctype: str) -> bytes:
    host = urlsplit(url).netloc
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            f"\r\n").encode() + body


async def _one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> int:
    writer.write(req)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    await reader.readexactly(length)
    return status


async def load(url: str, requests: list[bytes], concurrency: int, seconds: float) -> tuple[list[float], int]:
    """Send `requests` round robin from `concurrency` connections for `seconds`: (latencies, non-200s)."""
    u = urlsplit(url)
    lat: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(u.hostname, u.port)
        j = i
        try:
            while time.perf_counter() < stop:
                t = time.perf_counter()
                try:
                    ok = await _one(reader, writer, requests[j % len(requests)]) == 200
                except (OSError, asyncio.IncompleteReadError):
                    ok = False
                    writer.close()
                    reader, writer = await asyncio.open_connection(u.hostname, u.port)
                lat.append(time.perf_counter() - t)
                errors += not ok
                j += concurrency
        finally:
            writer.close()

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return lat, errors
