"""REST gateway (FastAPI): a shopper's photo in, similar listings out.

    POST /search   multipart `image` (a photo) or JSON {"vector": [...]}; optional k, start, end
    POST /items    multipart `images` (one or more photos) + `ids` (+ optional `ts`): add listings
    DELETE /items/{id}   tombstone a sold listing in every partition
    GET /partitions, GET /health;  OpenAPI docs at /docs

Photos are checked before decoding: byte limit, content type (and magic bytes), pixel limit read
from the header (decompression-bomb guard). Bad input is a 4xx with a message, never a 500.
Index services are found by a pluggable resolver (a config file, or a directory the services
announce themselves in).
"""

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse

from spnas.errors import ConfigError, ImageDecodeError, ImageTooLargeError
from spnas.images import decode_rgb

from .embedders import Embedder
from .index import Hits
from .partitions import key_range, merge_hits, partition_key

log = logging.getLogger(__name__)

ALLOWED_TYPES = {"image/jpeg": b"\xff\xd8\xff", "image/png": b"\x89PNG", "image/webp": b"RIFF",
                 "image/bmp": b"BM", "image/gif": b"GIF8"}


@dataclass
class UploadLimits:
    max_bytes: int = 8 << 20
    max_pixels: int = 24_000_000
    max_items_per_request: int = 64
    max_k: int = 100


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
    """The folder running services announce themselves in (`<partition>.json`)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def endpoints(self) -> dict[str, str]:
        out = {}
        for p in sorted(self.folder.glob("*.json")):
            try:
                d = json.loads(p.read_text())
                out[d["partition"]] = d["address"]
            except (json.JSONDecodeError, KeyError, OSError):
                log.warning("ignoring unreadable service announcement %s", p)
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


def _rpc_details(e: Exception) -> str:
    """The server's message of a gRPC error (or the exception text)."""
    details = getattr(e, "details", None)
    return str(details() if callable(details) else e)


# ---------------------------------------------------------------------------------- app
def parse_time(v: Any, name: str) -> int | None:
    """Unix seconds or an ISO 8601 time (UTC when no zone is given); None when absent."""
    if v in (None, ""):
        return None
    try:
        return int(float(v))
    except (TypeError, ValueError):
        pass
    try:
        import datetime as dt

        t = dt.datetime.fromisoformat(str(v))
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.timezone.utc)
        return int(t.timestamp())
    except ValueError:
        raise HTTPException(422, f"'{name}' must be unix seconds or an ISO 8601 time, got '{v}'") from None


class Gateway:
    """What the REST handlers do: check uploads, embed, fan a query out to the index services."""

    def __init__(self, embedder: Embedder, resolver: Resolver, limits: UploadLimits, timeout_s: float) -> None:
        self.embedder, self.resolver, self.limits, self.timeout_s = embedder, resolver, limits, timeout_s
        self.clients: dict[str, Any] = {}
        self.pool = ThreadPoolExecutor(max_workers=8)

    def client(self, address: str) -> Any:
        from .service import IndexClient

        if address not in self.clients:
            self.clients[address] = IndexClient(address, self.timeout_s)
        return self.clients[address]

    async def read_image(self, upload: UploadFile) -> np.ndarray:
        """Type, size and magic-byte checks, then a pixel-limited decode; 4xx on any problem."""
        limits = self.limits
        ctype = (upload.content_type or "").split(";")[0].strip().lower()
        if ctype not in ALLOWED_TYPES:
            raise HTTPException(415, f"'{upload.filename}': content type '{ctype or 'none'}' is not an accepted image "
                                     f"type ({', '.join(ALLOWED_TYPES)})")
        data = await upload.read(limits.max_bytes + 1)
        if len(data) > limits.max_bytes:
            raise HTTPException(413, f"'{upload.filename}' is larger than {limits.max_bytes} bytes")
        if not data:
            raise HTTPException(400, f"'{upload.filename}' is empty")
        if not data.startswith(ALLOWED_TYPES[ctype]):
            raise HTTPException(415, f"'{upload.filename}' is declared {ctype} but its bytes are not")
        try:
            return decode_rgb(data, max_pixels=limits.max_pixels)
        except ImageDecodeError as e:
            code = 413 if isinstance(e, ImageTooLargeError) else 400
            raise HTTPException(code, f"'{upload.filename}': {e}") from None

    def fan_out(self, q: np.ndarray, k: int, start: int | None, end: int | None) -> "tuple[Hits, list[str]]":
        """Search every service whose partition overlaps the window; merge their top-k."""
        eps = self.resolver.endpoints()
        lo, hi = start if start is not None else -(2**62), end if end is not None else 2**62
        chosen = {key: addr for key, addr in eps.items() if key_range(key)[0] < hi and lo < key_range(key)[1]}
        if not chosen:
            raise HTTPException(503, "no index service covers the requested time window")

        def one(addr: str) -> Hits:
            r = self.client(addr).search(q, k, start, end, self.embedder.bundle_sha256)
            ids = np.full((1, k), -1, np.int64)
            sc = np.full((1, k), -np.inf, np.float32)
            ts = np.zeros((1, k), np.int64)
            for j, h in enumerate(r.results[0].hits[:k]):
                ids[0, j], sc[0, j], ts[0, j] = h.id, h.score, h.ts
            return Hits(ids, sc, ts)

        try:
            parts = list(self.pool.map(one, chosen.values()))
        except Exception as e:  # a service down or refusing
            raise HTTPException(502, f"an index service failed: {_rpc_details(e)}") from None
        return merge_hits(parts, k), sorted(chosen)

    async def query_vector(self, request: Request) -> tuple[np.ndarray, Any, float]:
        """The query of a search request (photo or vector), its parameters, and when decoding ended."""
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            form = await request.form()
            upload = form.get("image")
            if upload is None or isinstance(upload, str):
                raise HTTPException(422, "multipart search needs a file field 'image'")
            img = await self.read_image(upload)  # type: ignore[arg-type]
            t1 = time.perf_counter()
            return self.embedder.embed([img]), form, t1
        if ctype.startswith("application/json"):
            try:
                body = await request.json()
            except Exception:
                raise HTTPException(400, "body is not valid JSON") from None
            vec = body.get("vector") if isinstance(body, dict) else None
            if not isinstance(vec, list) or len(vec) != self.embedder.dim:
                raise HTTPException(422, f"JSON search needs 'vector': a list of {self.embedder.dim} numbers")
            try:
                q = np.asarray(vec, np.float32)[None]
            except (TypeError, ValueError):
                raise HTTPException(422, "'vector' must hold numbers only") from None
            if not np.isfinite(q).all():
                raise HTTPException(422, "'vector' holds NaN or infinity")
            return q / max(float(np.linalg.norm(q)), 1e-12), body, time.perf_counter()
        raise HTTPException(415, "send multipart/form-data with an 'image' file, or application/json with 'vector'")

    async def search(self, request: Request) -> JSONResponse:
        t0 = time.perf_counter()
        q, params, t1 = await self.query_vector(request)
        try:
            k = int(params.get("k", 10))
        except (TypeError, ValueError):
            raise HTTPException(422, "'k' must be an integer") from None
        if not 1 <= k <= self.limits.max_k:
            raise HTTPException(422, f"'k' must be between 1 and {self.limits.max_k}")
        start, end = parse_time(params.get("start"), "start"), parse_time(params.get("end"), "end")
        t2 = time.perf_counter()
        hits, used = self.fan_out(q, k, start, end)
        t3 = time.perf_counter()
        results = [{"id": int(i), "score": float(s), "ts": int(t)} for i, s, t in
                   zip(hits.ids[0], hits.scores[0], hits.ts[0]) if i >= 0]
        return JSONResponse({"results": results, "partitions": used,
                             "took_ms": {"decode": (t1 - t0) * 1e3, "embed": (t2 - t1) * 1e3,
                                         "search": (t3 - t2) * 1e3}})

    def _parse_items(self, n_images: int, ids: str, ts: str | None) -> tuple[list[int], list[int]]:
        if n_images > self.limits.max_items_per_request:
            raise HTTPException(413, f"at most {self.limits.max_items_per_request} photos per request")
        try:
            id_list = [int(x) for x in ids.split(",") if x.strip()]
        except ValueError:
            raise HTTPException(422, "'ids' must be comma-separated integers") from None
        if len(id_list) != n_images or any(not (-(2**63) <= i < 2**63) for i in id_list):
            raise HTTPException(422, f"{n_images} photos need {n_images} 64-bit ids, got {len(id_list)}")
        now = int(time.time())
        ts_list = [parse_time(x, "ts") for x in ts.split(",")] if ts else [now] * len(id_list)
        if len(ts_list) != len(id_list):
            raise HTTPException(422, "'ts' must give one timestamp per photo")
        return id_list, ts_list  # type: ignore[return-value]

    async def add_items(self, images: list[UploadFile], ids: str, ts: str | None) -> dict[str, Any]:
        id_list, ts_list = self._parse_items(len(images), ids, ts)
        pixels = [await self.read_image(u) for u in images]
        vecs = self.embedder.embed(pixels)
        eps = self.resolver.endpoints()
        by_key: dict[str, list[int]] = {}
        for j, t in enumerate(ts_list):
            by_key.setdefault(partition_key(int(t), "h"), []).append(j)
        added = {}
        for key, rows in by_key.items():
            if key not in eps:
                raise HTTPException(503, f"no index service for partition {key}; start one (spnas-serve) or "
                                         f"send timestamps of a served hour")
            try:
                r = self.client(eps[key]).add(np.asarray([id_list[j] for j in rows]), vecs[rows],
                                              np.asarray([ts_list[j] for j in rows]), self.embedder.bundle_sha256)
            except Exception as e:
                details = _rpc_details(e)
                raise HTTPException(409 if "already" in details else 502, details) from None
            added[key] = r.added
        return {"added": added}

    def health(self) -> dict[str, Any]:
        eps = self.resolver.endpoints()
        return {"status": "ok", "bundle_sha256": self.embedder.bundle_sha256, "embedder": self.embedder.name,
                "services": {k: self.client(a).healthy() for k, a in eps.items()}}

    def partitions(self) -> dict[str, Any]:
        out = {}
        for key, addr in self.resolver.endpoints().items():
            try:
                s = self.client(addr).stats()
                out[key] = {"address": addr, "count": s.count, "live": s.live, "factory": s.factory}
            except Exception as e:
                out[key] = {"address": addr, "error": str(e)[:200]}
        return out

    def delete_item(self, item_id: int) -> dict[str, Any]:
        return {"deleted": sum(self.client(addr).delete([item_id]).deleted
                               for addr in self.resolver.endpoints().values())}


def create_app(embedder: Embedder, resolver: Resolver, limits: UploadLimits | None = None,
               timeout_s: float = 10.0) -> FastAPI:
    """The FastAPI application (embedder in-process, index services over gRPC)."""
    gw = Gateway(embedder, resolver, limits or UploadLimits(), timeout_s)
    app = FastAPI(title="spnas photo search", version="1",
                  description="Shop-photo search over time-partitioned FAISS index services.")
    app.state.gateway = gw

    @app.get("/health")
    def health() -> dict[str, Any]:
        return gw.health()

    @app.get("/partitions")
    def partitions() -> dict[str, Any]:
        return gw.partitions()

    @app.post("/search")
    async def search(request: Request) -> JSONResponse:
        """Photo (multipart `image`) or vector (JSON `vector`) in; ranked listing ids with scores out."""
        return await gw.search(request)

    @app.post("/items")
    async def add_items(images: list[UploadFile] = File(...), ids: str = Form(...),
                        ts: str | None = Form(None)) -> dict[str, Any]:
        """Add listings: photos, comma-separated 64-bit ids, optional comma-separated timestamps (default now)."""
        return await gw.add_items(images, ids, ts)

    @app.delete("/items/{item_id}")
    def delete_item(item_id: int) -> dict[str, Any]:
        """Tombstone a sold listing in every partition."""
        return gw.delete_item(item_id)

    @app.exception_handler(ValueError)
    async def value_error(request: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"detail": str(exc)})

    return app
