"""REST gateway (FastAPI): a shopper's photo in, similar listings out; the coordinator of every write.

    GET  /                 the photo-search page (plain HTML/JS: drop a photo, see the listings)
    POST /search           multipart `image` (a photo) or JSON {"vector": [...]}; optional k, start, end
    POST /items            multipart `images` (+ `ids`, optional `ts`, `title` per photo): add listings  [token]
    DELETE /items/{id}     tombstone a sold listing                                                  [token]
    GET  /items/{id}/photo the listing's thumbnail
    GET  /partitions, /health (process alive), /ready (every index service reachable); OpenAPI at /docs

**Writes.** An add is answered only once it is durable in every partition it touches, all or nothing:
one partition is one logged record; several are a two-phase commit this gateway coordinates, with its
decisions in `<state_dir>/decisions.log` (a crash after the decision is finished by the next start).
One listing id is live in one partition at a time: the gateway keeps the live ids with their times
(loaded from the services at start; adds answer 503 until every partition was read) and answers 409
for an id already live or being written. A delete asks the partitions covering the listing's time;
one that does not answer gets the delete again until it does (queued durably in
`<state_dir>/deletes.jsonl`), and the reply says so per partition (202).

**Limits.** Bodies over `limits.max_body_bytes` are refused before they are read; each photo is checked
(type, magic bytes, size) and the pixels its header declares are summed against
`limits.max_request_pixels` before anything is decoded. Decoding, embedding and gRPC calls run on
`limits.workers` threads (one embedder each), never on the event loop, so /health answers while
searches run; past `limits.queue` waiting requests the answer is 503 with Retry-After. Bad input of
any kind is a 4xx with a message.

**Auth.** With a token configured (`$SPNAS_SERVE_TOKEN` or `auth.token_file`), POST /items and DELETE
need `Authorization: Bearer <token>`; the gateway refuses to listen beyond loopback without one.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import math
import os
import re
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from retrieval.config import Backend, GrpcTlsConfig, PartialResults, ServeAuthConfig, ServeLimits
from spnas_core.errors import (
    ConfigError,
    DuplicateIdError,
    ImageDecodeError,
    ImageTooLargeError,
    IndexWriteError,
    PartitionClosedError,
    RetrievalError,
    SpnasError,
)
from spnas_core.files import JsonLines, write_json_atomic
from spnas_core.images import decode_rgb, image_size

from .faults import failpoint
from .index import MAX_ID, NORM_TOLERANCE, Hits
from .partitions import (
    MAX_TS,
    MIN_TS,
    DecisionLog,
    coordinator_gone,
    finest_covering,
    key_range,
    merge_hits,
    new_txn_id,
    overlapping,
    partition_key,
)
from .photos import PhotoStore, thumbnail
from .security import check_bind, load_token, token_ok
from .service import IndexClient, health_pb, pb

log = logging.getLogger(__name__)

ALLOWED_TYPES = {"image/jpeg": (b"\xff\xd8\xff",), "image/png": (b"\x89PNG",), "image/webp": (b"RIFF",),
                 "image/bmp": (b"BM",), "image/gif": (b"GIF87a", b"GIF89a")}
ID_RE = re.compile(r"[0-9]{1,19}")  # ASCII digits only: int() would also take Arabic-Indic and other digits
INT_RE = re.compile(r"[0-9]{1,9}")
NUM_RE = re.compile(r"-?[0-9]{1,20}(\.[0-9]{1,9})?")
WEB = Path(__file__).resolve().parent / "web"


class Embedder(Protocol):
    dim: int
    bundle_sha256: str
    name: str

    def embed(self, images: Any, progress: bool | None = None) -> np.ndarray: ...


# ---------------------------------------------------------------------------------- discovery
class Resolver(Protocol):
    """Where the index services are: partition key -> address."""

    def endpoints(self) -> dict[str, str]: ...


class StaticResolver:
    """A JSON/YAML file: {"partitions": {"h/2026-11-26T15": "127.0.0.1:50051", ...}}."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def endpoints(self) -> dict[str, str]:
        import yaml

        data = yaml.safe_load(self.path.read_text()) or {}
        return {str(k): str(v) for k, v in (data.get("partitions") or {}).items()}


class DirectoryResolver:
    """The folder running services announce themselves in (`<partition>.json`), re-read at most every
    `ttl_s` seconds."""

    def __init__(self, folder: str | Path, ttl_s: float = 0.25) -> None:
        self.folder = Path(folder)
        self.ttl_s = ttl_s
        self._cache: tuple[float, dict[str, str]] = (-1e9, {})
        self._lock = threading.Lock()

    def endpoints(self) -> dict[str, str]:
        with self._lock:
            if time.monotonic() - self._cache[0] < self.ttl_s:
                return self._cache[1]
            out = {}
            for p in sorted(self.folder.glob("*.json")):
                try:
                    d = json.loads(p.read_text())
                    out[d["partition"]] = d["address"]
                except (json.JSONDecodeError, KeyError, OSError):
                    log.warning("ignoring unreadable service announcement %s", p)
            self._cache = (time.monotonic(), out)
            return out


def make_resolver(spec: str) -> Resolver:
    """`dir:<folder>`, `file:<path>`, or `module:Class` (a custom resolver, e.g. Kubernetes endpoints)."""
    kind, _, arg = spec.partition(":")
    if kind == "dir":
        return DirectoryResolver(arg)
    if kind == "file":
        return StaticResolver(arg)
    import importlib

    mod, _, cls = spec.rpartition(":") if spec.count(":") == 1 else (None, None, None)
    if mod and cls:
        return getattr(importlib.import_module(mod), cls)()
    raise ConfigError(f"resolver must be dir:<folder>, file:<path> or <module>:<Class>; got '{spec}'")


# ---------------------------------------------------------------------------------- parsing
def _err(code: int, detail: str, retry_after: int | None = None) -> HTTPException:
    return HTTPException(code, detail, headers={"Retry-After": str(retry_after)} if retry_after is not None else None)


def parse_time(v: Any, name: str) -> int | None:
    """Unix seconds (ASCII digits, finite, 1970..9999) or an ISO 8601 time (UTC without a zone); None when absent."""
    if v is None or v == "":
        return None
    if isinstance(v, bool):
        raise _err(422, f"'{name}' must be unix seconds or an ISO 8601 time, got {v!r}")
    if isinstance(v, (int, float)):
        x = float(v)
    elif isinstance(v, str) and NUM_RE.fullmatch(v.strip()):
        x = float(v.strip())
    elif isinstance(v, str) and v.isascii():
        import datetime as dt

        try:
            t = dt.datetime.fromisoformat(v.strip())
        except ValueError:
            raise _err(422, f"'{name}' must be unix seconds or an ISO 8601 time, got '{v[:40]}'") from None
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.timezone.utc)
        x = t.timestamp()
    else:
        raise _err(422, f"'{name}' must be unix seconds or an ISO 8601 time")
    if not math.isfinite(x) or not MIN_TS <= x <= MAX_TS:
        raise _err(422, f"'{name}'={v} is outside [{MIN_TS}, {MAX_TS}] (unix seconds, 1970 to 9999)")
    return int(x)


def parse_int(v: Any, name: str, lo: int, hi: int) -> int:
    """A JSON integer or a string of ASCII digits within [lo, hi]."""
    if isinstance(v, bool) or not (isinstance(v, int) or (isinstance(v, str) and INT_RE.fullmatch(v.strip()))):
        raise _err(422, f"'{name}' must be an integer between {lo} and {hi}")
    x = int(v)
    if not lo <= x <= hi:
        raise _err(422, f"'{name}' must be between {lo} and {hi}, got {x}")
    return x


def parse_id(v: str) -> int:
    """A listing id: ASCII digits, 0 .. 2**63 - 1."""
    v = v.strip()
    if not ID_RE.fullmatch(v) or int(v) > MAX_ID:
        raise _err(422, f"listing ids are integers 0 .. {MAX_ID} in ASCII digits; got '{v[:40]}'")
    return int(v)


# ---------------------------------------------------------------------------------- ASGI limits
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
        seen = 0
        started = False

        async def counted() -> dict:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge()
            return msg

        async def tracked_send(msg: dict) -> None:
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, counted, tracked_send)
        except _TooLarge:
            if not started:
                await self._reply(send, 413, f"request body is over the limit of {self.max_bytes} bytes")

    @staticmethod
    async def _reply(send: Callable, code: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": code,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class Admission:
    """At most `limit` requests doing blocking work at once (running or queued for a worker); the event
    loop's thread is the only caller, so a plain counter is enough."""

    def __init__(self, limit: int, retry_after_s: int) -> None:
        self.limit, self.retry_after_s, self.n = limit, retry_after_s, 0

    def __enter__(self) -> "Admission":
        if self.n >= self.limit:
            raise _err(503, f"the gateway is saturated ({self.n} requests in progress); retry shortly",
                       self.retry_after_s)
        self.n += 1
        return self

    def __exit__(self, *exc: Any) -> None:
        self.n -= 1


# ---------------------------------------------------------------------------------- the gateway
@dataclasses.dataclass
class Upload:
    name: str
    ctype: str
    data: bytes


class IdRegistry:
    """Live listing ids -> timestamps over the whole store, ids being written, deletes pending."""

    def __init__(self) -> None:
        self.live: dict[int, int] = {}
        self.loaded: set[str] = set()
        self.writing: set[int] = set()
        self.pending_delete: set[int] = set()
        self.lock = threading.Lock()

    def missing(self, keys: list[str]) -> list[str]:
        return [k for k in keys if k not in self.loaded]


def _rpc_code(e: Exception) -> Any:
    code = getattr(e, "code", None)
    return code() if callable(code) else None


def _rpc_details(e: Exception) -> str:
    details = getattr(e, "details", None)
    return str(details() if callable(details) else e)


class Gateway:
    """What the REST handlers do: check uploads, embed, fan queries out, coordinate writes."""

    def __init__(self, embedder_factory: Callable[[], Embedder], resolver: Resolver, limits: ServeLimits, *,
                 token: str | None = None, tls: GrpcTlsConfig | None = None, state_dir: str | os.PathLike,
                 photos: PhotoStore | None = None, partial: PartialResults = PartialResults.allow,
                 clock: Callable[[], float] = time.time, name: str = "gw") -> None:
        self.factory, self.resolver, self.limits = embedder_factory, resolver, limits
        self.token, self.tls, self.photos, self.partial, self.clock = token, tls or GrpcTlsConfig(), photos, partial, clock
        first = embedder_factory()
        self.dim, self.bundle, self.embedder_name = first.dim, first.bundle_sha256, first.name
        self._local = threading.local()
        self._spare = [first]
        self.pool = ThreadPoolExecutor(max_workers=limits.workers, thread_name_prefix="gateway-cpu")
        self.admission = Admission(limits.workers + limits.queue, limits.retry_after_s)
        self.clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.coordinator = f"{name}@{socket.gethostname()}:{os.getpid()}"
        self.decisions = DecisionLog(self.state_dir / "decisions.log")
        self.deletes = JsonLines(self.state_dir / "deletes.jsonl")
        self.registry = IdRegistry()
        self.active: set[str] = set()
        self._stop = threading.Event()
        self._maint: threading.Thread | None = None
        for r in self._pending_deletes().values():
            self.registry.pending_delete.add(int(r["id"]))

    # ------------------------------------------------------------------ plumbing
    def embedder(self) -> Embedder:
        """This worker thread's embedder (interpreters are not thread-safe; one each)."""
        e = getattr(self._local, "embedder", None)
        if e is None:
            with self._clients_lock:
                e = self._spare.pop() if self._spare else None
            e = self._local.embedder = e or self.factory()
        return e

    def client(self, address: str) -> IndexClient:
        with self._clients_lock:
            c = self.clients.get(address)
            if c is None:
                c = self.clients[address] = IndexClient(address, self.limits.rpc_timeout_s, token=self.token,
                                                        tls=self.tls)
        return c

    def start(self) -> None:
        """Start the maintenance thread (id registry, unfinished commits, in-doubt transactions, deletes)."""
        if self._maint is None:
            self._maint = threading.Thread(target=self._maintain_loop, name="gateway-maintenance", daemon=True)
            self._maint.start()

    def stop(self) -> None:
        self._stop.set()
        if self._maint is not None:
            self._maint.join(timeout=10)
        self.pool.shutdown(wait=False, cancel_futures=True)
        for c in list(self.clients.values()):
            c.close()

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Blocking work on a worker thread, admitted or refused with 503."""
        with self.admission:
            return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def _rpc_error(self, key: str, e: Exception) -> HTTPException:
        import grpc

        code, details = _rpc_code(e), _rpc_details(e)
        ra = self.limits.retry_after_s
        if code == grpc.StatusCode.ALREADY_EXISTS:
            return _err(409, details)
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return _err(422, details)
        if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND) and (
                "sealed" in details or "retired" in details):
            return _err(503, f"partition {key} is being compacted ({details}); retry", ra)
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return _err(503, f"the index service of partition {key} did not answer ({details[:200]}); nothing was "
                             f"changed, retry", ra)
        return _err(502, f"the index service of partition {key} failed: {details[:300]}")

    # ------------------------------------------------------------------ photos in
    def read_upload(self, up: Upload) -> tuple[int, int]:
        """Type, size and magic-byte checks, then the pixel count from the header; 4xx on any problem."""
        limits = self.limits
        if up.ctype not in ALLOWED_TYPES:
            raise _err(415, f"'{up.name}': content type '{up.ctype or 'none'}' is not an accepted image type "
                            f"({', '.join(ALLOWED_TYPES)})")
        if len(up.data) > limits.max_bytes:
            raise _err(413, f"'{up.name}' is larger than {limits.max_bytes} bytes")
        if not up.data:
            raise _err(400, f"'{up.name}' is empty")
        if not up.data.startswith(ALLOWED_TYPES[up.ctype]):
            raise _err(415, f"'{up.name}' is declared {up.ctype} but its bytes are not")
        try:
            w, h = image_size(up.data)
        except ImageDecodeError as e:
            raise _err(413 if isinstance(e, ImageTooLargeError) else 400, f"'{up.name}': {e}") from None
        if w * h > limits.max_pixels:
            raise _err(413, f"'{up.name}' is {w}x{h} = {w * h} pixels, over the limit of {limits.max_pixels}")
        return w, h

    def check_uploads(self, ups: list[Upload]) -> None:
        total = sum(w * h for w, h in (self.read_upload(u) for u in ups))
        if total > self.limits.max_request_pixels:
            raise _err(413, f"the photos of this request declare {total} pixels in all, over the per-request budget "
                            f"of {self.limits.max_request_pixels}; send fewer or smaller photos per request")

    def decode(self, up: Upload) -> np.ndarray:
        try:
            return decode_rgb(up.data, max_pixels=self.limits.max_pixels)
        except ImageDecodeError as e:
            raise _err(413 if isinstance(e, ImageTooLargeError) else 400, f"'{up.name}': {e}") from None

    @staticmethod
    async def uploads(form: Any, field: str) -> list[Upload]:
        out = []
        for v in form.getlist(field):
            if isinstance(v, str):
                raise _err(422, f"'{field}' must be a file field")
            out.append(Upload(v.filename or field, (v.content_type or "").split(";")[0].strip().lower(),
                              await v.read()))
        return out

    # ------------------------------------------------------------------ search
    def _plan(self, start: int | None, end: int | None) -> dict[str, str]:
        eps = self.resolver.endpoints()
        return {k: eps[k] for k in overlapping(eps, start, end)}

    def search_work(self, up: Upload | None, vec: np.ndarray | None, k: int, start: int | None, end: int | None
                    ) -> dict[str, Any]:
        t0 = time.perf_counter()
        if up is not None:
            img = self.decode(up)
            t1 = time.perf_counter()
            q = self.embedder().embed([img])
        else:
            t1 = time.perf_counter()
            q = vec
        t2 = time.perf_counter()
        chosen = self._plan(start, end)  # no partition overlaps the window: no listing can be in it
        futs = {}
        if chosen:
            req = self.client(next(iter(chosen.values()))).search_request(q, k, start, end, self.bundle)
            futs = {key: self.client(addr).search_future(req) for key, addr in chosen.items()}
        answers, failed = {}, {}
        for key, f in futs.items():
            try:
                answers[key] = f.result()
            except Exception as e:
                failed[key] = f"{_rpc_code(e)}: {_rpc_details(e)[:160]}"
        absorbed = {a for r in answers.values() for a in r.absorbed}
        parts = []
        for key, r in answers.items():
            if key in absorbed:
                continue  # a retiring partition whose listings another one already holds
            ids = np.full((1, k), -1, np.int64)
            sc = np.full((1, k), -np.inf, np.float32)
            ts = np.zeros((1, k), np.int64)
            for j, h in enumerate(r.results[0].hits[:k]):
                ids[0, j], sc[0, j], ts[0, j] = h.id, h.score, h.ts
            parts.append(Hits(ids, sc, ts))
        missing = {key: why for key, why in failed.items() if key not in absorbed}
        if missing and self.partial is PartialResults.fail:
            raise _err(503, f"index services not answering: {', '.join(sorted(missing))}; retry",
                       self.limits.retry_after_s)
        hits = merge_hits(parts, k) if parts else Hits(np.full((1, k), -1), np.full((1, k), -np.inf), np.zeros((1, k)))
        t3 = time.perf_counter()
        results = []
        for i, s, t in zip(hits.ids[0], hits.scores[0], hits.ts[0]):
            if i >= 0:
                r = {"id": int(i), "score": float(s), "ts": int(t), "photo": f"/items/{int(i)}/photo"}
                if self.photos is not None:
                    r["title"] = self.photos.title(int(i))
                results.append(r)
        return {"results": results, "partitions": [k for k in chosen if k in answers and k not in absorbed],
                "missing": sorted(missing), "partial": bool(missing), "missing_detail": missing,
                "took_ms": {"decode": (t1 - t0) * 1e3, "embed": (t2 - t1) * 1e3, "search": (t3 - t2) * 1e3}}

    async def search(self, request: Request) -> JSONResponse:
        ctype = request.headers.get("content-type", "")
        up, vec = None, None
        if ctype.startswith("multipart/form-data"):
            form = await request.form(max_files=2, max_fields=8)
            ups = await self.uploads(form, "image")
            if len(ups) != 1:
                raise _err(422, "multipart search needs one file field 'image'")
            self.check_uploads(ups)
            up, params = ups[0], form
        elif ctype.startswith("application/json"):
            try:
                params = await request.json()
            except Exception:
                raise _err(400, "body is not valid JSON") from None
            v = params.get("vector") if isinstance(params, dict) else None
            if not isinstance(v, list) or len(v) != self.dim or not all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
                raise _err(422, f"JSON search needs 'vector': a list of {self.dim} numbers")
            q = np.asarray(v, np.float64)
            if not np.isfinite(q).all():
                raise _err(422, "'vector' holds NaN or infinity")
            norm = float(np.linalg.norm(q))
            if abs(norm - 1.0) > NORM_TOLERANCE:
                raise _err(422, f"'vector' has length {norm:.6g}; send an L2-normalised vector (divide by its norm)")
            vec = q.astype(np.float32)[None]
        else:
            raise _err(415, "send multipart/form-data with an 'image' file, or application/json with 'vector'")
        k = parse_int(params.get("k", 10), "k", 1, self.limits.max_k)
        start, end = parse_time(params.get("start"), "start"), parse_time(params.get("end"), "end")
        if start is not None and end is not None and start >= end:
            raise _err(422, f"'start' ({start}) must be before 'end' ({end})")
        return JSONResponse(await self.run(self.search_work, up, vec, k, start, end))

    # ------------------------------------------------------------------ adds
    async def add_items(self, request: Request) -> dict[str, Any]:
        form = await request.form(max_files=self.limits.max_items_per_request + 1,
                                  max_fields=3 * self.limits.max_items_per_request + 8)
        ups = await self.uploads(form, "images")
        if not ups:
            raise _err(422, "send one or more photos in the file field 'images'")
        if len(ups) > self.limits.max_items_per_request:
            raise _err(413, f"at most {self.limits.max_items_per_request} photos per request")
        raw_ids = ",".join(str(x) for x in form.getlist("ids"))
        id_list = [parse_id(x) for x in raw_ids.split(",") if x.strip()]
        if len(id_list) != len(ups):
            raise _err(422, f"{len(ups)} photos need {len(ups)} ids (comma-separated), got {len(id_list)}")
        if len(set(id_list)) != len(id_list):
            raise _err(422, "a listing id appears twice in this request")
        now = int(self.clock())
        raw_ts = ",".join(str(x) for x in form.getlist("ts"))
        ts_list = [parse_time(x, "ts") for x in raw_ts.split(",")] if raw_ts.strip() else [now] * len(ups)
        if len(ts_list) != len(ups) or any(t is None for t in ts_list):
            raise _err(422, "'ts' must give one timestamp per photo (or be left out: now)")
        late = [t for t in ts_list if t > now + self.limits.max_future_s]  # type: ignore[operator]
        if late:
            raise _err(422, f"timestamp {late[0]} is more than {self.limits.max_future_s} s in the future")
        titles = [str(t)[:200] for t in form.getlist("title")]
        if titles and len(titles) != len(ups):
            raise _err(422, f"give one 'title' per photo or none ({len(ups)} photos, {len(titles)} titles)")
        self.check_uploads(ups)
        return await self.run(self.add_work, ups, id_list, ts_list, titles or [""] * len(ups))

    def _route(self, ts_list: list[int], now: int) -> tuple[dict[str, str], list[str]]:
        eps = self.resolver.endpoints()
        keys = []
        for t in ts_list:
            key = finest_covering(eps, t)
            if key is None:
                hour = partition_key(t)
                if t >= now - 3600:
                    raise _err(503, f"the partition of {hour} is starting; retry", self.limits.retry_after_s)
                raise _err(422, f"no partition serves time {t} ({hour}): listings can be added with times the "
                                f"served partitions cover ({', '.join(sorted(eps)) or 'none'})")
            keys.append(key)
        return eps, keys

    def _unsure(self, key: str, e: Exception) -> None:
        """A write whose outcome is unknown (the service died or timed out mid-call), or an id the
        registry did not know: read that partition's ids again before the next add."""
        import grpc

        if _rpc_code(e) in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                            grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.CANCELLED):
            with self.registry.lock:
                self.registry.loaded.discard(key)

    def _load_ids(self, eps: dict[str, str], keys: list[str]) -> None:
        """Read the live ids of partitions not read yet (new ones, or ones that were down)."""
        for key in keys:
            try:
                ids, ts, _ = self.client(eps[key]).ids()
            except Exception:
                continue
            with self.registry.lock:
                self.registry.live.update(zip(ids.tolist(), ts.tolist()))
                self.registry.loaded.add(key)

    def _reserve(self, ids: list[int]) -> None:
        reg = self.registry
        eps_map = self.resolver.endpoints()
        self._load_ids(eps_map, reg.missing(list(eps_map)))  # e.g. a day a compaction just created
        with reg.lock:
            for i in ids:
                if i in reg.writing:
                    raise _err(409, f"listing {i} is being written by another request")
                if i in reg.pending_delete:
                    raise _err(409, f"the delete of listing {i} is still pending; list it again once it completes")
                if i in reg.live:
                    raise _err(409, f"listing {i} is already live (at {reg.live[i]}); delete it first or use another "
                                    f"id (one id lives in one partition at a time)")
            missing = reg.missing(list(eps_map))
            if missing:
                raise _err(503, f"cannot check that the ids are free: the listing ids of {', '.join(missing[:3])} are "
                                f"not read yet (that service is starting or down); retry shortly",
                           self.limits.retry_after_s)
            reg.writing.update(ids)

    def add_work(self, ups: list[Upload], ids: list[int], ts: list[int], titles: list[str]) -> dict[str, Any]:
        now = int(self.clock())
        self._reserve(ids)
        try:
            imgs = [self.decode(u) for u in ups]
            vecs = self.embedder().embed(imgs)
            eps, keys = self._route(ts, now)
            if self.photos is not None:  # before the commit: a live listing always has its photo
                for i, img, title in zip(ids, imgs, titles):
                    self.photos.put(i, thumbnail(img), title)
            groups: dict[str, list[int]] = {}
            for j, key in enumerate(keys):
                groups.setdefault(key, []).append(j)
            ida, tsa = np.asarray(ids, np.int64), np.asarray(ts, np.int64)
            if len(groups) == 1:
                key = keys[0]
                try:
                    self.client(eps[key]).add(ida, vecs, tsa, self.bundle)
                except Exception as e:
                    self._unsure(key, e)
                    raise self._rpc_error(key, e) from None
                pending: list[str] = []
            else:
                pending = self._transact(eps, {key: rows for key, rows in groups.items()}, ida, vecs, tsa)
            with self.registry.lock:
                self.registry.live.update(zip(ids, ts))
        finally:
            with self.registry.lock:
                self.registry.writing.difference_update(ids)
        out: dict[str, Any] = {"added": {key: len(rows) for key, rows in groups.items()}}
        if pending:
            out["commit_pending"] = pending  # durable (decided); visible once those services are back
        return out

    def _transact(self, eps: dict[str, str], groups: dict[str, list[int]], ids: np.ndarray, vecs: np.ndarray,
                  ts: np.ndarray) -> list[str]:
        """Two-phase commit over several partitions; returns partitions whose commit is still to be delivered."""
        txn = new_txn_id(self.coordinator)
        self.active.add(txn)
        try:
            futs = {key: self.client(eps[key]).stub.Prepare.future(
                self.client(eps[key]).add_request(ids[rows], vecs[rows], ts[rows], self.bundle, txn),
                **self.client(eps[key])._kw()) for key, rows in groups.items()}
            prepared, errors = [], {}
            for key, f in futs.items():
                try:
                    f.result()
                    prepared.append(key)
                except Exception as e:  # a prepare never makes ids live: the registry stays right
                    errors[key] = e
            failpoint("txn.after_prepare")
            if not errors and not self.decisions.decide(txn, list(groups)):
                errors["deadline"] = IndexWriteError(f"transaction {txn} passed its deadline")
            if errors:
                for key in prepared:  # what fails here, the maintenance thread aborts (presumed abort)
                    try:
                        self.client(eps[key]).abort(txn)
                    except Exception:
                        pass
                key, e = next(iter(errors.items()))
                if isinstance(e, SpnasError):
                    raise _err(503, str(e), self.limits.retry_after_s)
                raise self._rpc_error(key, e)
            failpoint("txn.after_decision")
            pending = []
            for n, key in enumerate(groups):
                try:
                    self.client(eps[key]).commit(txn)
                except Exception as e:
                    log.warning("commit of %s in %s deferred (%s); it is durable and will be delivered", txn, key,
                                _rpc_details(e)[:200])
                    pending.append(key)
                if n == 0:
                    failpoint("txn.after_first_commit")
            if not pending:
                self.decisions.done(txn)
            return pending
        finally:
            self.active.discard(txn)

    # ------------------------------------------------------------------ deletes
    def _pending_deletes(self) -> dict[int, dict]:
        out: dict[int, dict] = {}
        for r in self.deletes.read():
            if r.get("done"):
                out.pop(int(r["id"]), None)
            else:
                out[int(r["id"])] = r
        return out

    def _delete_on(self, item_id: int) -> tuple[dict[str, str], bool]:
        """Ask the partitions that may hold `item_id`; (per-partition outcome, deleted somewhere)."""
        eps = self.resolver.endpoints()
        with self.registry.lock:
            ts = self.registry.live.get(item_id)
        targets = {k: a for k, a in eps.items() if ts is None or key_range(k)[0] <= ts < key_range(k)[1]}
        futs = {k: self.client(a).stub.Delete.future(
            pb.DeleteRequest(ids=[item_id]),
            **self.client(a)._kw()) for k, a in targets.items()}
        report, deleted = {}, False
        for k, f in futs.items():
            try:
                n = f.result().deleted
                report[k] = "deleted" if n else "not held"
                deleted |= bool(n)
            except Exception as e:
                report[k] = f"retrying ({_rpc_details(e)[:120]})"
        if ts is not None and not targets:
            report[partition_key(ts)] = "retrying (no service announced for the listing's time)"
        return report, deleted

    def delete_work(self, item_id: int) -> tuple[int, dict[str, Any]]:
        reg = self.registry
        with reg.lock:
            if item_id in reg.writing:
                raise _err(409, f"listing {item_id} is being written; retry")
            known = item_id in reg.live
            complete = not reg.missing(list(self.resolver.endpoints()))
            if item_id in reg.pending_delete:
                return 202, {"deleted": "pending", "id": item_id, "detail": "already queued; retried until every "
                                                                           "partition answers"}
        if not known and complete:
            raise _err(404, f"no live listing {item_id}")
        report, deleted = self._delete_on(item_id)
        if deleted:
            self._forget(item_id)
            return 200, {"deleted": True, "id": item_id, "partitions": report}
        if any(v.startswith("retrying") for v in report.values()):
            self.deletes.append({"id": item_id, "queued": time.time()})
            with reg.lock:
                reg.pending_delete.add(item_id)
            return 202, {"deleted": "pending", "id": item_id, "partitions": report,
                         "detail": "a partition did not answer; the delete is queued and retried until it does"}
        self._forget(item_id)
        raise _err(404, f"no live listing {item_id}")

    def _forget(self, item_id: int) -> None:
        with self.registry.lock:
            self.registry.live.pop(item_id, None)
            self.registry.pending_delete.discard(item_id)
        if self.photos is not None:
            self.photos.delete(item_id)

    # ------------------------------------------------------------------ maintenance
    def _maintain_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.maintain()
            except Exception:  # a service down mid-pass: the next pass retries
                log.exception("gateway maintenance pass failed; retrying")
            self._stop.wait(1.0)

    def maintain(self) -> None:
        """One pass: read ids of partitions not yet read, deliver decided commits, abort orphaned
        prepares (presumed abort), retry pending deletes."""
        eps = self.resolver.endpoints()
        self._load_ids(eps, self.registry.missing(list(eps)))
        decided = self.decisions.read()
        for txn, d in decided.items():
            if d["decision"] != "commit" or d["done"] or txn in self.active:
                continue
            ok = True
            for key in d["parts"]:
                try:
                    self.client(eps[key]).commit(txn)
                except Exception:
                    ok = False
            if ok:
                self.decisions.done(txn)
        for key, addr in eps.items():
            try:
                doubt = self.client(addr).in_doubt()
            except Exception:
                continue
            for txn in doubt:
                if txn in self.active or decided.get(txn, {}).get("decision") == "commit":
                    continue
                mine = txn.rsplit(":", 2)[0] == self.coordinator
                if mine or coordinator_gone(txn, self.coordinator.split("@")[0]):
                    try:
                        self.client(addr).abort(txn)
                    except Exception:
                        pass
        for item_id in list(self._pending_deletes()):
            report, deleted = self._delete_on(item_id)
            if deleted or not any(v.startswith("retrying") for v in report.values()):
                self.deletes.append({"id": item_id, "done": True})
                self._forget(item_id)
        if len(decided) > 10_000:
            self.decisions.trim()

    # ------------------------------------------------------------------ status
    def health(self) -> dict[str, Any]:
        return {"status": "ok", "bundle_sha256": self.bundle, "embedder": self.embedder_name}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        eps = self.resolver.endpoints()
        futs = {k: self.client(a).health.Check.future(
            health_pb.HealthCheckRequest(), timeout=1.0)
            for k, a in eps.items()}
        services = {}
        for k, f in futs.items():
            try:
                services[k] = f.result().status == 1
            except Exception:
                services[k] = False
        missing_ids = self.registry.missing(list(eps))
        ok = bool(eps) and all(services.values()) and not missing_ids
        return ok, {"ready": ok, "services": services, "ids_not_yet_read": missing_ids,
                    "pending_deletes": len(self.registry.pending_delete)}

    def partitions(self) -> dict[str, Any]:
        out = {}
        for key, addr in self.resolver.endpoints().items():
            try:
                s = self.client(addr).stats()
                out[key] = {"address": addr, "count": s.count, "live": s.live, "factory": s.factory,
                            "pending": s.pending, "sealed": s.sealed, "absorbed": list(s.absorbed)}
            except Exception as e:
                out[key] = {"address": addr, "error": _rpc_details(e)[:200]}
        return out


def create_app(embedder_factory: Callable[[], Embedder], resolver: Resolver, limits: ServeLimits | None = None, *,
               token: str | None = None, tls: GrpcTlsConfig | None = None, state_dir: str | os.PathLike,
               photos: PhotoStore | None = None, partial: PartialResults = PartialResults.allow,
               clock: Callable[[], float] = time.time) -> Any:
    """The ASGI application: FastAPI behind the body limit (embedder in-process, index services over gRPC)."""
    from contextlib import asynccontextmanager

    limits = limits or ServeLimits()
    gw = Gateway(embedder_factory, resolver, limits, token=token, tls=tls, state_dir=state_dir, photos=photos,
                 partial=partial, clock=clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        gw.start()
        yield
        gw.stop()

    app = FastAPI(title="spnas photo search", version="2", lifespan=lifespan,
                  description="Shop-photo search over time-partitioned FAISS index services.")
    app.state.gateway = gw

    def authorize(request: Request) -> None:
        if not token_ok(request.headers.get("authorization"), token):
            raise HTTPException(401, "this endpoint needs 'Authorization: Bearer <token>' (the token spnas-serve "
                                     "was started with)", headers={"WWW-Authenticate": "Bearer"})

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((WEB / "index.html").read_text(), headers={"Cache-Control": "no-cache"})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """The process is alive (answers at once, whatever else is running)."""
        return gw.health()

    @app.get("/ready")
    async def ready() -> JSONResponse:
        """Every index service reachable and every partition's ids read: 200, else 503 with details."""
        ok, body = await asyncio.to_thread(gw.ready)
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/partitions")
    async def partitions() -> dict[str, Any]:
        return await asyncio.to_thread(gw.partitions)

    @app.post("/search")
    async def search(request: Request) -> JSONResponse:
        """Photo (multipart `image`) or unit vector (JSON `vector`) in; listings with scores out."""
        return await gw.search(request)

    @app.post("/items")
    async def add_items(request: Request) -> dict[str, Any]:
        """Add listings: photos (`images`), comma-separated ids, optional timestamps and `title` per photo."""
        authorize(request)
        return await gw.add_items(request)

    @app.delete("/items/{item_id}")
    async def delete_item(item_id: str, request: Request) -> JSONResponse:
        """Tombstone a sold listing; 202 when a partition must be retried."""
        authorize(request)
        code, body = await gw.run(gw.delete_work, parse_id(item_id))
        return JSONResponse(body, status_code=code)

    @app.get("/items/{item_id}/photo")
    async def photo(item_id: str) -> Response:
        data = gw.photos.photo(parse_id(item_id)) if gw.photos is not None else None
        if data is None:
            raise HTTPException(404, f"no photo for listing {item_id}")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.exception_handler(SpnasError)
    async def project_error(request: Request, exc: SpnasError) -> JSONResponse:
        code = {DuplicateIdError: 409, PartitionClosedError: 503, IndexWriteError: 503,
                ImageTooLargeError: 413, ImageDecodeError: 400}.get(type(exc), 422 if isinstance(exc, RetrievalError)
                                                                     else 400)
        return JSONResponse(status_code=code, content={"detail": str(exc)})

    return BodyLimit(app, limits.max_body_bytes)


# ---------------------------------------------------------------------------------- the process
@dataclasses.dataclass
class GatewaySpec:
    """What the gateway process needs (written by the supervisor, read by `main`)."""

    bundle: str
    backend: Backend
    threads: int
    discovery_dir: str
    state_dir: str
    photos_dir: str
    host: str
    port: int
    limits: ServeLimits
    auth: ServeAuthConfig
    tls: GrpcTlsConfig
    partial: PartialResults

    def save(self, path: Path) -> Path:
        d = dataclasses.asdict(self)
        d["backend"], d["partial"] = self.backend.name, self.partial.name
        return write_json_atomic(path, d)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "GatewaySpec":
        d = json.loads(Path(path).read_text())
        return cls(**{**d, "backend": Backend[d["backend"]], "partial": PartialResults[d["partial"]],
                      "limits": ServeLimits(**d["limits"]), "auth": ServeAuthConfig(**d["auth"]),
                      "tls": GrpcTlsConfig(**d["tls"])})


def main(argv: list[str] | None = None) -> None:
    """The gateway process: serve until SIGTERM; announce its address in `<state_dir>/gateway.json`."""
    import uvicorn

    from .embedders import make_embedder

    ap = argparse.ArgumentParser(prog="python -m retrieval.gateway", description=__doc__.splitlines()[0])
    ap.add_argument("--spec", required=True, help="gateway.json written by spnas-serve")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="[%(asctime)s][gateway][%(levelname)s] %(message)s")
    spec = GatewaySpec.load(args.spec)
    token = load_token(spec.auth)
    check_bind(spec.host, token, "the gateway")
    app = create_app(lambda: make_embedder(spec.backend.name, spec.bundle, spec.threads),
                     DirectoryResolver(spec.discovery_dir), spec.limits, token=token, tls=spec.tls,
                     state_dir=spec.state_dir, photos=PhotoStore(spec.photos_dir), partial=spec.partial)
    server = uvicorn.Server(uvicorn.Config(app, host=spec.host, port=spec.port, log_level="warning",
                                           timeout_graceful_shutdown=2))

    def announce() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.02)
        if server.started:
            write_json_atomic(Path(spec.state_dir) / "gateway.json",
                              {"address": f"http://{spec.host}:{spec.port}", "pid": os.getpid(), "started": time.time()})

    threading.Thread(target=announce, daemon=True).start()
    from .supervisor import watch_parent

    watch_parent(lambda: setattr(server, "should_exit", True))
    server.run()


if __name__ == "__main__":
    main()
