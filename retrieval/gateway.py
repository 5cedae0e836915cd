"""REST gateway (FastAPI): a shopper's photo in, similar listings out. Stateless: run any number of
workers or replicas; each plans on its own from the ready index services and the listing store.

    GET  /                  the photo-search page (drop a photo, pick a time window, add or delete listings)
    POST /search            multipart `image` (a photo) or JSON {"vector": [...]}; optional k, start, end
    POST /items             multipart `images` + `ids` (+ optional `ts`, `title` per photo)            [token]
    DELETE /items/{id}      a sold listing (?status=sold|deleted, default deleted)                      [token]
    GET  /items/{id}/photo  the listing's thumbnail
    GET  /versions          the ready versions, the plan and the delta (service addresses: with the token)
    GET  /about             which model and which photos this deployment serves (what the page shows)
    GET  /health (process alive), /ready (this worker can answer), /metrics (Prometheus text); OpenAPI at /docs

**Readiness** is this worker's own: its refresh loop runs, its view of the listing store is at most
`delta.stale_after_s` old, and at least one index service answers (or the delta holds everything the
versions do not). A missing version never takes a gateway out of its Service: searches answer
`partial: true` and name what is missing. While the store is briefly away, searches answer from the
last view (without titles when those cannot be read) and writes answer 503.

**Writes** go to the listing store and are answered once committed: an add stores the photo by
content, caches its embedding for the bundle being served, then commits the listing; repeating an add
or a delete changes nothing (idempotent by id). A new listing is searchable at the next refresh of
the delta (`delta.refresh_s`), well within a minute, and is built into its hour's version later.
**Limits** as in `retrieval.http`; blocking work runs on `limits.threads` threads, never on the event
loop. **Auth**: writes need `Authorization: Bearer <token>`; the gateway does not listen beyond
loopback without one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from spnas_core.errors import (DuplicateIdError, ImageDecodeError, ImageTooLargeError, RetrievalError, SpnasError,
                          StoreUnavailableError)

from .backends import GrpcBackends, ready_json
from .interface import Embedder
from .config import AuthConfig, DeltaConfig, Limits, Locations, PartialResults, RetentionConfig, TlsConfig
from .http import (Admission, BodyLimit, Upload, check_uploads, decode, http_error, parse_id, parse_int, parse_time,
                   parse_vector, uploads)
from .listings import Listing, ListingStore
from .photos import PhotoStore, photo_hash
from .resolver import make_resolver
from .router import Router
from .security import check_bind, load_token, token_ok

log = logging.getLogger(__name__)
WEB = Path(__file__).resolve().parent / "web"
SPEC_ENV = "SPNAS_GATEWAY_SPEC"


@dataclasses.dataclass
class GatewaySpec:
    """Everything a gateway worker needs (a JSON file, so uvicorn's worker processes can read it)."""

    bundles: list[str]  # newest first: the first one covering the catalogue is searched
    locations: Locations
    resolver: str = "dir:runs/serve/services"
    backend: str = "litert"
    threads: int = 1
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    limits: Limits = dataclasses.field(default_factory=Limits)
    auth: AuthConfig = dataclasses.field(default_factory=AuthConfig)
    tls: TlsConfig = dataclasses.field(default_factory=TlsConfig)
    delta: DeltaConfig = dataclasses.field(default_factory=DeltaConfig)
    retention: RetentionConfig = dataclasses.field(default_factory=RetentionConfig)
    partial: PartialResults = PartialResults.allow
    about: dict[str, Any] = dataclasses.field(default_factory=dict)  # model and photos served (`spnas-serve`)

    def save(self, path: str | os.PathLike) -> Path:
        from spnas_core.files import write_json_atomic

        return write_json_atomic(path, dataclasses.asdict(self))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "GatewaySpec":
        d = json.loads(Path(path).read_text())
        kinds = {f.name: f.type for f in dataclasses.fields(cls)}
        types = {"locations": Locations, "limits": Limits, "auth": AuthConfig, "tls": TlsConfig,
                 "delta": DeltaConfig, "retention": RetentionConfig}
        out = {k: types[k](**v) if k in types else v for k, v in d.items() if k in kinds}
        out["partial"] = PartialResults[d["partial"]] if "partial" in d else PartialResults.allow
        return cls(**out)


class Gateway:
    """What the REST handlers do, off the event loop."""

    def __init__(self, spec: GatewaySpec, token: str | None = None,
                 embedder_factory: Callable[[str], Embedder] | None = None,
                 backends: Callable[[], list] | None = None, clock: Callable[[], float] = time.time) -> None:
        from export.bundle import bundle_id

        from .embedders import make_embedder

        self.spec, self.limits, self.token, self.clock = spec, spec.limits, token, clock
        self.store = ListingStore(spec.locations.store)
        self.photos = PhotoStore(spec.locations.photos)
        self.make = embedder_factory or (lambda path: make_embedder(spec.backend, path, spec.threads))
        self.paths = {bundle_id(b): b for b in spec.bundles}
        self._mine = {b: self.make(p) for b, p in self.paths.items()}  # the refresh thread's own embedders
        self.dims = {b: e.dim for b, e in self._mine.items()}
        self.grpc = backends is None
        backends = backends or GrpcBackends(make_resolver(spec.resolver), token, spec.tls, spec.limits.rpc_timeout_s)
        self.router = Router(self.store, self.photos, self._mine.__getitem__, list(self.paths), backends, spec.delta,
                             spec.retention, spec.limits.max_future_s, clock)
        self.pool = ThreadPoolExecutor(max_workers=spec.limits.threads, thread_name_prefix="gateway")
        self.admission = Admission(spec.limits.threads + spec.limits.queue, spec.limits.retry_after_s)
        self._local = threading.local()
        self._stop = threading.Event()
        self.refreshed = 0.0  # monotonic time of the last refresh that succeeded
        self.tried = 0.0      # ... and of the last one tried
        self.failures = 0
        self.last_error = ""
        self.resolver = getattr(backends, "resolver", None)

    def embedder(self, bundle: str) -> Embedder:
        """This thread's embedder of a bundle (interpreters are not thread-safe: one each)."""
        mine = self._local.__dict__.setdefault("embedders", {})
        if bundle not in mine:
            mine[bundle] = self.make(self.paths[bundle])
        return mine[bundle]

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Blocking work on a gateway thread, admitted or refused with 503."""
        with self.admission:
            return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def bundle(self) -> str:
        view = self.router.view or self.router.refresh()
        return view.bundle

    # ------------------------------------------------------------------ search
    def search_work(self, up: Upload | None, vec: np.ndarray | None, k: int, start: int | None, end: int | None
                    ) -> dict[str, Any]:
        t0 = time.perf_counter()
        bundle = self.bundle()
        img = decode(up, self.limits) if up is not None else None
        t1 = time.perf_counter()
        q = self.embedder(bundle).embed([img]) if img is not None else vec
        t2 = time.perf_counter()
        ans = self.router.search(q, k, start, end)
        if ans.missing and self.spec.partial is PartialResults.fail:
            raise http_error(503, f"no index answers for {', '.join(sorted(ans.missing))}; retry",
                             self.limits.retry_after_s)
        t3 = time.perf_counter()
        hits = [(int(i), float(s)) for i, s in zip(ans.ids[0], ans.scores[0]) if i >= 0]
        try:
            rows, details = self.store.get([i for i, _ in hits]), True
            results = [{"id": i, "score": s, "ts": rows[i].ts, "title": rows[i].title, "photo": f"/items/{i}/photo"}
                       for i, s in hits if i in rows]
        except StoreUnavailableError:  # the answer stands (as of change `seq`); its titles wait for the store
            details = False
            results = [{"id": i, "score": s, "ts": None, "title": None, "photo": f"/items/{i}/photo"} for i, s in hits]
        return {"results": results, "details": details, "versions": ans.versions, "delta": ans.delta,
                "missing": sorted(ans.missing), "partial": bool(ans.missing), "missing_detail": ans.missing,
                "seq": ans.seq, "bundle_id": bundle,
                "took_ms": {"decode": (t1 - t0) * 1e3, "embed": (t2 - t1) * 1e3, "search": (t3 - t2) * 1e3}}

    async def search(self, request: Request) -> JSONResponse:
        ctype = request.headers.get("content-type", "")
        up, vec = None, None
        if ctype.startswith("multipart/form-data"):
            form = await request.form(max_files=2, max_fields=8)
            ups = await uploads(form, "image")
            if len(ups) != 1:
                raise http_error(422, "multipart search needs one file field 'image'")
            check_uploads(ups, self.limits)
            up, params = ups[0], form
        elif ctype.startswith("application/json"):
            try:
                params = await request.json()
            except Exception:
                raise http_error(400, "body is not valid JSON") from None
            vec = parse_vector(params.get("vector") if isinstance(params, dict) else None, self.dims[self.bundle()])
        else:
            raise http_error(415, "send multipart/form-data with an 'image' file, or application/json with 'vector'")
        k = parse_int(params.get("k", 10), "k", 1, self.limits.max_k)
        start, end = parse_time(params.get("start"), "start"), parse_time(params.get("end"), "end")
        if start is not None and end is not None and start >= end:
            raise http_error(422, f"'start' ({start}) must be before 'end' ({end})")
        return JSONResponse(await self.run(self.search_work, up, vec, k, start, end))

    # ------------------------------------------------------------------ writes
    async def add_items(self, request: Request) -> dict[str, Any]:
        n_max = self.limits.max_items_per_request
        form = await request.form(max_files=n_max + 1, max_fields=3 * n_max + 8)
        ups = await uploads(form, "images")
        if not ups:
            raise http_error(422, "send one or more photos in the file field 'images'")
        if len(ups) > n_max:
            raise http_error(413, f"at most {n_max} photos per request")
        ids = [parse_id(x) for x in ",".join(str(x) for x in form.getlist("ids")).split(",") if x.strip()]
        if len(ids) != len(ups):
            raise http_error(422, f"{len(ups)} photos need {len(ups)} ids (comma-separated), got {len(ids)}")
        if len(set(ids)) != len(ids):
            raise http_error(422, "a listing id appears twice in this request")
        now = int(self.clock())
        raw_ts = ",".join(str(x) for x in form.getlist("ts"))
        ts = [parse_time(x, "ts") for x in raw_ts.split(",")] if raw_ts.strip() else [now] * len(ups)
        if len(ts) != len(ups) or any(t is None for t in ts):
            raise http_error(422, "'ts' must give one timestamp per photo (or be left out: now)")
        late = [t for t in ts if t > now + self.limits.max_future_s]  # type: ignore[operator]
        if late:
            raise http_error(422, f"timestamp {late[0]} is more than {self.limits.max_future_s} s in the future")
        titles = [str(t)[:200] for t in form.getlist("title")]
        if titles and len(titles) != len(ups):
            raise http_error(422, f"give one 'title' per photo or none ({len(ups)} photos, {len(titles)} titles)")
        check_uploads(ups, self.limits)
        return await self.run(self.add_work, ups, ids, ts, titles or [""] * len(ups))

    def add_work(self, ups: list[Upload], ids: list[int], ts: list[int], titles: list[str]) -> dict[str, Any]:
        bundle = self.bundle()
        hashes = [photo_hash(u.data) for u in ups]
        known = self.store.get(ids)  # refuse an id active with another photo before storing anything of it
        for i, h in zip(ids, hashes):
            o = known.get(i)
            if o is not None and o.active and o.photo != h:
                raise DuplicateIdError(f"listing {i} is already active with another photo (listed at {o.ts}); "
                                       f"delete it first or use another id")
        imgs = [decode(u, self.limits) for u in ups]
        vecs = self.embedder(bundle).embed(imgs)
        hashes = [self.photos.put(u.data, img) for u, img in zip(ups, imgs)]  # photos and embeddings first:
        self.store.cache(bundle, hashes, vecs)                                 # a listing never lacks them
        outcomes = self.store.add([Listing(i, t, h, title) for i, t, h, title in zip(ids, ts, hashes, titles)])
        self.router.catch_up()  # this worker answers with the write at once; the others at their next refresh
        return {"added": sum(o != "exists" for o in outcomes), "outcomes": dict(zip(map(str, ids), outcomes))}

    def delete_work(self, item_id: int, status: str) -> tuple[int, dict[str, Any]]:
        outcome = self.store.remove(item_id, status)
        self.router.catch_up()
        if outcome == "unknown":
            raise http_error(404, f"no listing {item_id}")
        return 200, {"deleted": True, "id": item_id, "already": outcome == "already", "status": status}

    # ------------------------------------------------------------------ status
    def discovery_stale_s(self) -> float | None:
        """How long the resolver's list of services may be behind (None: a resolver that reads it on every call)."""
        fn = getattr(self.resolver, "staleness_s", None)
        return round(float(fn()), 2) if callable(fn) else None

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Whether this worker can answer searches now (its own state only, never the whole catalogue's)."""
        view, now, d = self.router.view, time.monotonic(), self.spec.delta
        looping = now - self.tried <= max(5.0, 5 * d.refresh_s)
        age = now - self.refreshed if self.refreshed else float("inf")
        live = len(self.router.live) if now - self.router.live_at <= d.stale_after_s else 0
        why = []
        if view is None:
            why.append("no view of the catalogue yet")
        if not looping:
            why.append("the refresh loop has not run lately")
        if age > d.stale_after_s:
            why.append(f"the listing store has not been read for {age:.0f} s ({self.last_error or 'no refresh yet'})")
        if view is not None and view.missing and not live:
            why.append("no index service answers and the delta does not hold the catalogue")
        ok = not why
        return ok, {"ready": ok, "reasons": why, "refreshed_s_ago": round(age, 2) if age != float("inf") else None,
                    "backends": live, "versions": len(view.plan.pieces) if view else 0,
                    "delta": len(view.delta) if view else 0, "partial": bool(view and view.missing),
                    "missing": [list(m) for m in view.missing] if view else None,
                    "discovery_stale_s": self.discovery_stale_s(), "refresh_failures": self.failures}

    def metrics(self) -> str:
        """Prometheus text exposition of this worker's state."""
        ok, body = self.ready()
        stale = body["discovery_stale_s"]
        rows = [("spnas_gateway_ready", "1 when this worker answers searches", int(ok)),
                ("spnas_gateway_view_age_seconds", "age of this worker's view of the listing store",
                 body["refreshed_s_ago"] if body["refreshed_s_ago"] is not None else "+Inf"),
                ("spnas_gateway_backends", "index services answering SERVING", body["backends"]),
                ("spnas_gateway_planned_versions", "versions in the plan", body["versions"]),
                ("spnas_gateway_missing_parts", "parts of the catalogue no version or delta answers",
                 len(body["missing"] or [])),
                ("spnas_gateway_delta_listings", "listings held by the delta", body["delta"]),
                ("spnas_gateway_refresh_failures_total", "refreshes that failed", self.failures),
                ("spnas_gateway_discovery_stale_seconds", "how far the service discovery may be behind",
                 0 if stale is None else ("+Inf" if stale == float("inf") else stale))]
        out = []
        for name, doc, v in rows:
            kind = "counter" if name.endswith("_total") else "gauge"
            out += [f"# HELP {name} {doc}", f"# TYPE {name} {kind}", f"{name} {v}"]
        return "\n".join(out) + "\n"

    def versions(self, authorized: bool) -> dict[str, Any]:
        view = self.router.view or self.router.refresh()
        used = {p.version.version for p in view.plan.pieces}
        addr = (lambda r: r.ref.client.address) if (authorized and self.grpc) else (lambda r: None)
        return {"bundle_id": view.bundle, "seq": view.seq,
                "versions": [{**ready_json(r, addr(r)), "in_plan": r.version in used} for r in view.ready],
                "delta": {"listings": len(view.delta)}, "uncovered": [list(u) for u in view.plan.uncovered],
                "missing": [list(m) for m in view.missing], "addresses_shown": authorized}

    def refresh(self) -> None:
        """One refresh of the plan and the delta; a failure keeps the last view (counted, shown in /ready)."""
        self.tried = time.monotonic()
        try:
            self.router.refresh()
            self.refreshed, self.last_error = time.monotonic(), ""
        except Exception as e:  # the store or a service briefly away: keep the last view
            self.failures += 1
            self.last_error = str(e)[:200]
            log.warning("refreshing the plan and the delta failed: %s", e)

    def start(self) -> None:
        self.refresh()

        def loop() -> None:
            while not self._stop.wait(self.spec.delta.refresh_s):
                self.refresh()

        threading.Thread(target=loop, name="gateway-refresh", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.store.close()


ERROR_CODES = {DuplicateIdError: 409, StoreUnavailableError: 503, ImageTooLargeError: 413, ImageDecodeError: 400}


def create_app(spec: GatewaySpec, token: str | None = None, **kw: Any) -> Any:
    """The ASGI application: FastAPI behind the body limit. Reads are open; writes need the token."""
    from contextlib import asynccontextmanager

    gw = Gateway(spec, token, **kw)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        await asyncio.to_thread(gw.start)
        yield
        gw.stop()

    app = FastAPI(title="spnas photo search", version="3", lifespan=lifespan,
                  description="Shop-photo search over immutable FAISS index versions and a listing store.")
    app.state.gateway = gw
    _read_routes(app, gw, token)
    _write_routes(app, gw, token)

    @app.exception_handler(SpnasError)
    async def project_error(request: Request, exc: SpnasError) -> JSONResponse:
        code = next((c for t, c in ERROR_CODES.items() if isinstance(exc, t)),
                    422 if isinstance(exc, RetrievalError) else 400)
        headers = {"Retry-After": str(spec.limits.retry_after_s)} if code == 503 else None
        return JSONResponse(status_code=code, content={"detail": str(exc)}, headers=headers)

    return BodyLimit(app, spec.limits.max_body_bytes)


def _read_routes(app: FastAPI, gw: Gateway, token: str | None) -> None:
    """The open endpoints: the page, liveness, readiness, the versions, search and listing photos."""

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((WEB / "index.html").read_text(), headers={"Cache-Control": "no-cache"})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """The process is alive (answers at once, whatever else is running)."""
        return {"status": "ok", "bundle_id": gw.router.view.bundle if gw.router.view else None}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        """This worker can answer (its view is fresh, an index service answers): 200, else 503 with the reasons."""
        ok, body = gw.ready()
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(gw.metrics(), media_type="text/plain; version=0.0.4")

    @app.get("/versions")
    async def versions(request: Request) -> dict[str, Any]:
        """Ready versions and the plan; service addresses only with the token."""
        shown = token is not None and token_ok(request.headers.get("authorization"), token)
        return await asyncio.to_thread(gw.versions, shown)

    @app.get("/about")
    async def about() -> dict[str, Any]:
        """Which model (bundle, input size, embedding) and which photos (where from, how many) are served."""
        return {"bundle_id": gw.router.view.bundle if gw.router.view else None, **gw.spec.about}

    @app.post("/search")
    async def search(request: Request) -> JSONResponse:
        """Photo (multipart `image`) or unit vector (JSON `vector`) in; listings with scores out."""
        return await gw.search(request)

    @app.get("/items/{item_id}/photo")
    async def photo(item_id: str) -> Response:
        i = parse_id(item_id)
        row = (await asyncio.to_thread(gw.store.get, [i])).get(i)
        data = await asyncio.to_thread(gw.photos.thumbnail, row.photo) if row is not None and row.active else None
        if data is None:
            raise HTTPException(404, f"no photo for listing {item_id}")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})


def _write_routes(app: FastAPI, gw: Gateway, token: str | None) -> None:
    """The endpoints that change the listing store: each needs the gateway's bearer token."""

    def authorize(request: Request) -> None:
        if not token_ok(request.headers.get("authorization"), token):
            raise HTTPException(401, "this endpoint needs 'Authorization: Bearer <token>' (the token the gateway "
                                     "was started with)", headers={"WWW-Authenticate": "Bearer"})

    @app.post("/items")
    async def add_items(request: Request) -> dict[str, Any]:
        """Add listings: photos (`images`), comma-separated ids, optional timestamps and one `title` per photo."""
        authorize(request)
        return await gw.add_items(request)

    @app.delete("/items/{item_id}")
    async def delete_item(item_id: str, request: Request, status: str = "deleted") -> JSONResponse:
        """Remove a listing (sold or deleted); deleting again answers the same."""
        authorize(request)
        if status not in ("sold", "deleted"):
            raise http_error(422, "status is sold or deleted")
        code, body = await gw.run(gw.delete_work, parse_id(item_id), status)
        return JSONResponse(body, status_code=code)


def app_from_env() -> Any:
    """The app of one uvicorn worker, from the spec file named by $SPNAS_GATEWAY_SPEC."""
    spec = GatewaySpec.load(os.environ[SPEC_ENV])
    return create_app(spec, load_token(spec.auth))


def serve(spec: GatewaySpec, spec_path: str | os.PathLike) -> None:
    """Run the gateway with `spec.workers` worker processes until SIGINT / SIGTERM (blocking)."""
    import uvicorn

    check_bind(spec.host, load_token(spec.auth), "the gateway")
    spec.save(spec_path)
    os.environ[SPEC_ENV] = str(spec_path)
    uvicorn.run("retrieval.gateway:app_from_env", factory=True, host=spec.host, port=spec.port,
                workers=spec.workers, log_level="warning", timeout_graceful_shutdown=spec.limits.shutdown_grace_s)

