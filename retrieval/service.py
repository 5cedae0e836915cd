"""gRPC index service: one version, read-only, plus the standard health service.

    spnas-index serve version=<folder | repository URL of a version>

The version is served from a private copy (a repository URL is copied into the cache first; a folder
is one already, e.g. what an initContainer fetched), verified against its manifest (a mismatch is
refused; with `source` the copy is fetched again) and opened memory-mapped; the service then follows
the listing store for listings removed or changed after the version's snapshot (`Follower`) and
reports SERVING through `grpc.health.v1` once it has caught up, NOT_SERVING while it stops; the
service name `liveness` is SERVING from start to stop (a liveness probe: the process answers).
While serving, the files' sizes are checked every `follow_s` and their sha256 every `verify_every_s`:
a copy that no longer matches is taken out (NOT_SERVING, `liveness` too, announcement withdrawn,
`corrupt` set, an error logged), so no answer comes from damaged bytes; `spnas-index serve` then exits
7 and its restart fetches the version again. On stop it turns NOT_SERVING first and gives requests in
flight `grace` seconds. Health stays open to probes without a token; every other call needs it when one is set.
With `health_port` the health service alone also answers in plaintext on that port, for probes that
speak no TLS (kubelet's); it carries no token and no data.
Errors map to codes a caller can act on: INVALID_ARGUMENT (bad queries, caps), FAILED_PRECONDITION
(another bundle; behind the listing store, which did not answer), UNAUTHENTICATED.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any, Callable

import numpy as np

from spnas_core.errors import IndexMismatchError, RetrievalError, SpnasError
from spnas_core.files import write_json_atomic

from .config import SearchParams, TlsConfig
from .listings import ListingStore
from .proto import load as load_stubs
from .security import TokenInterceptor, channel, check_grpc, is_loopback, server_credentials
from .version_index import VersionIndex

log = logging.getLogger(__name__)
pb, pb_grpc = load_stubs()
GRPC_OPTIONS = [("grpc.max_receive_message_length", 16 << 20), ("grpc.max_send_message_length", 16 << 20)]
SERVICE_NAME = "spnas.retrieval.v2.IndexService"
LIVENESS = "liveness"
NORM_TOLERANCE = 1e-3


def unit_vectors(data: bytes, dim: int, expected: int, max_rows: int) -> np.ndarray:
    """Packed float32 rows, finite and of unit length; `RetrievalError` otherwise."""
    if dim != expected:
        raise RetrievalError(f"queries have {dim} values; this version holds {expected}-d embeddings")
    if not data or len(data) % (4 * dim):
        raise RetrievalError(f"query bytes ({len(data)}) are not a whole number of {dim}-d float32 rows")
    q = np.frombuffer(data, "<f4").reshape(-1, dim)
    if len(q) > max_rows:
        raise RetrievalError(f"{len(q)} queries in one call; at most {max_rows} (search.max_queries)")
    if not np.isfinite(q).all():
        raise RetrievalError("a query holds NaN or infinity")
    norms = np.linalg.norm(q.astype(np.float64), axis=1)
    if (np.abs(norms - 1) > NORM_TOLERANCE).any():
        raise RetrievalError(f"query vectors must be L2-normalised (a query has length "
                             f"{norms[np.argmax(np.abs(norms - 1))]:.6g})")
    return np.ascontiguousarray(q)


class Follower:
    """Keeps a version's exclusions up to date with the listing store: every listing it holds that was
    removed or changed after its snapshot is excluded, with the change number that did it."""

    def __init__(self, vi: VersionIndex, store: ListingStore | None) -> None:
        self.vi, self.store = vi, store
        self.seen = vi.info.snapshot_seq if vi.info else 0
        self._lock = threading.Lock()

    def catch_up(self) -> None:
        """The changes since the snapshot, among this version's listings (once, at start). A large version
        reads the store's changes since its snapshot instead of asking about each of its listings."""
        if self.store is None:
            return
        if len(self.vi) > 100_000:
            self.poll()
            return
        with self._lock:  # before any poll: exclusions go in in change order
            ids, seqs, upto = self.store.changed_among(self.vi.ids, self.seen)
            self.vi.exclude(ids, seqs)
            self.seen = max(self.seen, upto)

    def poll(self) -> int:
        """Read the store's changes since last time; returns the change number now followed."""
        if self.store is None:
            return self.seen
        with self._lock:
            while True:
                rows, upto = self.store.changes(self.seen)
                if rows:
                    self.vi.exclude(np.array([r.id for r in rows], np.int64), np.array([r.seq for r in rows], np.int64))
                self.seen = max(self.seen, upto)
                if not rows or rows[-1].seq >= upto:
                    return self.seen

    def ensure(self, as_of: int) -> None:
        """Followed at least to `as_of` (reading the store now if needed), or FAILED_PRECONDITION: the store
        did not answer, or it has not reached that change (a request from the future is not answered as of now)."""
        if as_of > self.seen:
            try:
                self.poll()
            except SpnasError as e:
                raise Behind(f"this index service follows the listing store to change {self.seen}, the request "
                             f"needs {as_of}, and the store did not answer ({e})") from None
            if as_of > self.seen:
                raise Behind(f"the request asks for the listings as of change {as_of}; the listing store is at "
                             f"change {self.seen}: send a change number the store has reached") from None


class Behind(RetrievalError):
    pass


def _rpc(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: Any) -> Any:
        import grpc

        try:
            return fn(self, request, context)
        except (IndexMismatchError, Behind) as e:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        except RetrievalError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))

    return wrapper


class IndexServicer(pb_grpc.IndexServiceServicer):
    def __init__(self, vi: VersionIndex, follower: Follower, mmap: bool) -> None:
        self.vi, self.follower, self.mmap = vi, follower, mmap

    @_rpc
    def Search(self, request: Any, context: Any) -> Any:
        info, p = self.vi.info, self.vi.params
        if request.bundle_id != info.bundle_id:
            raise IndexMismatchError(f"version {info.key} holds embeddings of bundle {info.bundle_id[:12]}..., the "
                                     f"queries are from {request.bundle_id[:12] or 'no bundle'}...")
        if not 1 <= request.k <= p.max_k:
            raise RetrievalError(f"k must be between 1 and {p.max_k}, got {request.k}")
        q = unit_vectors(request.queries, request.dim, self.vi.dim, p.max_queries)
        as_of = request.as_of_seq if request.as_of_seq >= 0 else None
        if as_of is not None:
            self.follower.ensure(as_of)
        win = (request.start_ts, request.end_ts) if request.has_window else (None, None)
        scores, ids = self.vi.search(q, request.k, *win, as_of=as_of)
        return pb.SearchResponse(scores=scores.astype("<f4").tobytes(), ids=ids.astype("<i8").tobytes(),
                                 seen_seq=self.follower.seen)

    @_rpc
    def Info(self, request: Any, context: Any) -> Any:
        i = self.vi.info
        return pb.InfoResponse(bundle_id=i.bundle_id, granularity=i.granularity, period=i.period, version=i.version,
                               start_ts=i.start_ts, end_ts=i.end_ts, count=i.count, dim=i.dim, factory=i.factory,
                               snapshot_seq=i.snapshot_seq, seen_seq=self.follower.seen, excluded=self.vi.excluded,
                               mmap=self.mmap)


class IndexService:
    """A running service: the gRPC server, its health, the follower thread, its announcement."""

    def __init__(self, vi: VersionIndex, store: ListingStore | None, host: str = "127.0.0.1", port: int = 0, *,
                 token: str | None = None, tls: TlsConfig | None = None, announce_dir: str | os.PathLike | None = None,
                 follow_s: float = 1.0, threads: int = 8, mmap: bool = True, health_port: int | None = None,
                 verify_every_s: float = 3600.0) -> None:
        import grpc
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc

        tls = tls or TlsConfig()
        check_grpc(host, token, tls, f"the index service of {vi.info.key}")
        self.vi, self.follower, self.follow_s = vi, Follower(vi, store), follow_s
        self.health = health.HealthServicer()
        self.ready = threading.Event()
        self._set(False)
        self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads), options=GRPC_OPTIONS,
                                  interceptors=[TokenInterceptor(token)] if token else [])
        pb_grpc.add_IndexServiceServicer_to_server(IndexServicer(vi, self.follower, mmap), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        creds = server_credentials(tls)
        target = f"{host}:{port}"
        bound = self.server.add_secure_port(target, creds) if creds else self.server.add_insecure_port(target)
        if bound == 0:
            raise OSError(f"could not bind {target} for the index service of {vi.info.key}")
        self.address = f"{host}:{bound}"
        self.health_server, self.health_address = None, None
        if health_port is not None:
            self.health_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.health_server)
            hb = self.health_server.add_insecure_port(f"{host}:{health_port}")
            if hb == 0:
                raise OSError(f"could not bind {host}:{health_port} for the health service of {vi.info.key}")
            self.health_address = f"{host}:{hb}"
        self.announce_dir = Path(announce_dir) if announce_dir is not None else None
        self.verify_every_s = verify_every_s
        self.corrupt: str | None = None  # why the served copy was taken out, once it no longer matches
        self.failed = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _set(self, serving: bool) -> None:
        from grpc_health.v1 import health_pb2

        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)
        (self.ready.set if serving else self.ready.clear)()

    def start(self) -> "IndexService":
        """Start answering (NOT_SERVING), catch up with the store in the background, then SERVING."""
        self.server.start()
        if self.health_server is not None:
            self.health_server.start()
        self._thread = threading.Thread(target=self._follow, name=f"follow-{self.vi.info.version}", daemon=True)
        self._thread.start()
        if self.vi.folder is not None and self.verify_every_s > 0:
            threading.Thread(target=self._scrub, name=f"verify-{self.vi.info.version}", daemon=True).start()
        return self

    def take_out(self, why: str) -> None:
        """The served copy no longer matches its manifest: answer nothing more from it."""
        from grpc_health.v1 import health_pb2

        if self.corrupt is not None:
            return
        self.corrupt = why
        self._set(False)
        self.health.set(LIVENESS, health_pb2.HealthCheckResponse.NOT_SERVING)
        if self.announce_dir is not None:
            self.announcement().unlink(missing_ok=True)
        log.error("%s: taken out of service: %s", self.vi.info.key, why)
        self.failed.set()

    def _scrub(self) -> None:
        """Every `verify_every_s`: the sha256 of every served file (a corrupt copy is taken out)."""
        from spnas_core.errors import VersionCorruptError

        from .versions import verify

        while not self._stop.wait(self.verify_every_s) and self.corrupt is None:
            try:
                verify(self.vi.folder, self.vi.info)
            except VersionCorruptError as e:
                self.take_out(str(e))

    def _heartbeat(self) -> None:
        """Touch the announcement (a resolver ignores one that stopped beating), and check the files' sizes."""
        from .versions import sizes_ok

        if self.vi.folder is not None and not sizes_ok(self.vi.folder, self.vi.info):
            self.take_out(f"a file of {self.vi.info.key} in {self.vi.folder} changed size (truncated or replaced)")
            return
        if self.announce_dir is not None and self.ready.is_set():
            try:
                os.utime(self.announcement())
            except FileNotFoundError:
                self._announce()

    def _announce(self) -> None:
        import socket

        i = self.vi.info
        write_json_atomic(self.announcement(), {"address": self.address, "version": i.key, "ref": list(i.ref),
                                                "pid": os.getpid(), "host": socket.gethostname(),
                                                "started": time.time()})

    def _follow(self) -> None:
        delay = self.follow_s
        while not self._stop.is_set():
            try:
                self.follower.catch_up()
                break
            except SpnasError as e:
                log.warning("%s: catching up with the listing store failed (%s); retrying", self.vi.info.key, e)
                self._stop.wait(delay)
                delay = min(delay * 2, 30)
        if self._stop.is_set() or self.corrupt is not None:
            return
        self._set(True)
        if self.announce_dir is not None:
            self._announce()
        log.info("serving %s (%d listings, %s) on %s", self.vi.info.key, len(self.vi), self.vi.info.factory,
                 self.address)
        while not self._stop.wait(self.follow_s) and self.corrupt is None:
            self._heartbeat()
            try:
                self.follower.poll()
            except SpnasError as e:  # keep serving; a request that needs newer changes is refused meanwhile
                log.warning("%s: following the listing store failed (%s)", self.vi.info.key, e)

    def announcement(self) -> Path:
        assert self.announce_dir is not None
        return self.announce_dir / f"{self.vi.info.version}-{self.address.rsplit(':', 1)[1]}.json"

    def wait_serving(self, timeout: float = 60) -> None:
        if not self.ready.wait(timeout):
            raise TimeoutError(f"{self.vi.info.key} did not catch up with the listing store in {timeout:.0f} s")

    def stop(self, grace: float = 1.0, drain_s: float = 0.0) -> None:
        """NOT_SERVING (readiness fails, the announcement is withdrawn), `drain_s` more seconds of answering
        while gateways re-plan, then stop taking calls and give those in flight `grace` seconds."""
        from grpc_health.v1 import health_pb2

        self._stop.set()
        self._set(False)
        if self.announce_dir is not None:
            self.announcement().unlink(missing_ok=True)
        if drain_s > 0:
            time.sleep(drain_s)
        self.health.set(LIVENESS, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.server.stop(grace).wait()
        if self.health_server is not None:
            self.health_server.stop(0).wait()


class IndexClient:
    """A client of one index service (TLS and token as configured); calls raise grpc.RpcError."""

    def __init__(self, address: str, timeout_s: float = 5.0, *, token: str | None = None,
                 tls: TlsConfig | None = None) -> None:
        from grpc_health.v1 import health_pb2_grpc

        from spnas_core.errors import ConfigError

        tls = tls or TlsConfig()
        host = address.rsplit(":", 1)[0]
        if token and not tls.ca and not is_loopback(host):
            raise ConfigError(f"refusing to send the bearer token to {address} in plaintext: set tls.ca (the CA of "
                              f"the services' certificates)")
        self.address, self.timeout = address, timeout_s
        self.channel = channel(address, tls, GRPC_OPTIONS)
        self.stub = pb_grpc.IndexServiceStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def request(self, queries: np.ndarray, k: int, start: int | None, end: int | None, bundle: str,
                as_of: int | None = None) -> Any:
        q = np.atleast_2d(np.asarray(queries, "<f4"))
        return pb.SearchRequest(queries=q.tobytes(), dim=q.shape[1], k=k, bundle_id=bundle,
                                has_window=start is not None or end is not None,
                                start_ts=int(start if start is not None else -(2**62)),
                                end_ts=int(end if end is not None else 2**62),
                                as_of_seq=-1 if as_of is None else int(as_of))

    def search_future(self, request: Any) -> Any:
        return self.stub.Search.future(request, timeout=self.timeout, metadata=self.metadata)

    @staticmethod
    def unpack(r: Any, nq: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        return (np.frombuffer(r.scores, "<f4").reshape(nq, k), np.frombuffer(r.ids, "<i8").reshape(nq, k))

    def search(self, queries: np.ndarray, k: int, start: int | None = None, end: int | None = None,
               bundle: str = "", as_of: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        req = self.request(queries, k, start, end, bundle, as_of)
        return self.unpack(self.stub.Search(req, timeout=self.timeout, metadata=self.metadata),
                           len(req.queries) // (4 * req.dim), k)

    def info(self, timeout: float | None = None) -> Any:
        return self.stub.Info(pb.InfoRequest(), timeout=timeout or self.timeout, metadata=self.metadata)

    def serving(self, timeout: float = 1.0) -> bool:
        from grpc_health.v1 import health_pb2

        try:
            r = self.health_stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout)
            return r.status == health_pb2.HealthCheckResponse.SERVING
        except Exception:
            return False

    def close(self) -> None:
        self.channel.close()


def open_service(version: str, store_url: str | None, cache_dir: str, params: SearchParams, host: str, port: int,
                 source: str | None = None, **kw: Any) -> IndexService:
    """An index service (not started) for a version's repository URL or folder, copied into `cache_dir` and
    verified; or, with `source` (its repository URL), a folder that is that version's private copy (what
    an initContainer fetched): verified in place, and fetched again from `source` where it does not match."""
    from spnas_core.errors import InputNotFoundError, VersionCorruptError

    from .versions import fetch_url, open_version, read_local, verify

    if source and not Path(version).exists():
        fetch_url(source, version)
    if source and Path(version).is_dir():
        try:
            verify(Path(version), read_local(version))
        except (VersionCorruptError, InputNotFoundError) as e:
            if not source:
                raise
            log.warning("%s; fetching it again from %s", e, source)
            fetch_url(source, version)
        folder, info = Path(version), read_local(version)
    else:
        folder, info = open_version(version, cache_dir)  # copied and verified
    vi = VersionIndex.load(folder, info, params, check=False)
    return IndexService(vi, ListingStore(store_url) if store_url else None, host, port, **kw)

