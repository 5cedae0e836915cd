"""gRPC index service: one partition of a `PartitionedStore` per process, plus grpc.health.v1.

`spnas-serve` starts one service process per partition (as one pod per partition would run) with

    python -m retrieval.service --spec <services.json> --partition h/2026-11-26T15

Each service announces itself by writing `<discovery_dir>/<partition>.json` (address, pid, partition,
bundle) atomically; the gateway's `DirectoryResolver` reads that folder (replace the resolver to
discover services another way, e.g. Kubernetes endpoints). A service whose partition was retired by
a compaction withdraws its announcement and exits.

Every write is durable before it is answered (the partition's write-ahead log); errors map to gRPC
codes a client can act on: INVALID_ARGUMENT (bad vectors, ids, timestamps), ALREADY_EXISTS (an id
already live), FAILED_PRECONDITION (another embedding space; a partition sealed for compaction, retry),
NOT_FOUND (the partition was retired: ask its parent), UNAVAILABLE (the disk refused the write, nothing
changed), UNAUTHENTICATED (missing or wrong token).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import signal
import sys
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any, Callable

import numpy as np

from retrieval.config import GrpcTlsConfig, ServeAuthConfig
from spnas_core.errors import (
    DuplicateIdError,
    IndexMismatchError,
    IndexWriteError,
    PartitionClosedError,
    RetrievalError,
)
from spnas_core.files import write_json_atomic

from .index import SearchParams, check_vectors
from .partitions import PartitionedStore, key_range
from .proto import load as load_stubs
from .security import TokenInterceptor, channel, load_token, server_credentials

log = logging.getLogger(__name__)
pb, pb_grpc, health_pb, health_grpc = load_stubs()
GRPC_OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
MAX_K = 1000


@dataclasses.dataclass
class ServiceSpec:
    """What an index service process needs (written by the supervisor, read by `main`)."""

    index_dir: str
    bundle_sha256: str
    dim: int
    factory: str
    search_params: SearchParams
    checkpoint_wal_bytes: int
    grpc_host: str
    discovery_dir: str
    tls: GrpcTlsConfig
    auth: ServeAuthConfig

    def save(self, path: Path) -> Path:
        return write_json_atomic(path, dataclasses.asdict(self))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ServiceSpec":
        d = json.loads(Path(path).read_text())
        return cls(**{**d, "search_params": SearchParams(**d["search_params"]), "tls": GrpcTlsConfig(**d["tls"]),
                      "auth": ServeAuthConfig(**d["auth"])})

    def store(self) -> PartitionedStore:
        return PartitionedStore(self.index_dir, self.bundle_sha256, self.dim, self.factory, self.search_params,
                                checkpoint_wal_bytes=self.checkpoint_wal_bytes)


def pack(a: np.ndarray, dtype: str) -> bytes:
    return np.ascontiguousarray(a, dtype=dtype).tobytes()


def unpack_vectors(data: bytes, dim: int, expected_dim: int) -> np.ndarray:
    if dim != expected_dim:
        raise RetrievalError(f"vectors have {dim} values; this partition holds {expected_dim}-d embeddings")
    if len(data) % (4 * max(dim, 1)):
        raise RetrievalError(f"vector bytes ({len(data)}) are not a whole number of {dim}-d float32 rows")
    return check_vectors(np.frombuffer(data, "<f4").reshape(-1, dim), expected_dim)


def _rpc(fn: Callable) -> Callable:
    """Project errors become the gRPC status a caller can act on (never UNKNOWN)."""

    @functools.wraps(fn)
    def wrapper(self: "IndexServicer", request: Any, context: Any) -> Any:
        import grpc

        try:
            return fn(self, request, context)
        except DuplicateIdError as e:
            context.abort(grpc.StatusCode.ALREADY_EXISTS, str(e))
        except PartitionClosedError as e:
            retired = "retired" in str(e)
            context.abort(grpc.StatusCode.NOT_FOUND if retired else grpc.StatusCode.FAILED_PRECONDITION, str(e))
        except IndexWriteError as e:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(e))
        except IndexMismatchError as e:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        except RetrievalError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))

    return wrapper


class IndexServicer(pb_grpc.IndexServiceServicer):
    """The RPCs of one partition (thread-safe: the partition serialises writes, searches run side by side)."""

    def __init__(self, store: PartitionedStore, partition: str) -> None:
        self.store = store
        self.key = partition
        self.part = store.partition(partition)
        self.start_ts, self.end_ts = key_range(partition)

    def _check_bundle(self, sha: str) -> None:
        if not sha:
            raise RetrievalError("bundle_sha256 is required: the identity of the bundle that embedded the vectors")
        if sha != self.store.bundle:
            raise IndexMismatchError(f"partition {self.key} holds embeddings of bundle {self.store.bundle[:12]}..., "
                                     f"the request's are from {sha[:12]}...")

    @_rpc
    def Search(self, request: Any, context: Any) -> Any:
        self._check_bundle(request.bundle_sha256)
        q = unpack_vectors(request.queries, request.dim, self.store.dim)
        if not 1 <= request.k <= MAX_K:
            raise RetrievalError(f"k must be between 1 and {MAX_K}, got {request.k}")
        k = int(request.k)
        win = (request.start_ts, request.end_ts) if request.has_window else (None, None)
        hits = self.part.search(q, k, *win)
        resp = pb.SearchResponse(partition=self.key, absorbed=sorted(self.part.absorbed))
        for i in range(len(q)):
            hl = resp.results.add()
            for j in range(k):
                x = int(hits.ids[i, j])
                if x >= 0:
                    hl.hits.add(id=x, score=float(hits.scores[i, j]), ts=int(hits.ts[i, j]))
        return resp

    def _batch(self, request: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self._check_bundle(request.bundle_sha256)
        v = unpack_vectors(request.vectors, request.dim, self.store.dim)
        ids, ts = np.asarray(request.ids, np.int64), np.asarray(request.ts, np.int64)
        return ids, v, ts

    @_rpc
    def Add(self, request: Any, context: Any) -> Any:
        ids, v, ts = self._batch(request)
        n = self.part.add(ids, v, ts)
        return pb.AddResponse(added=n, count=len(self.part.view()))

    @_rpc
    def Prepare(self, request: Any, context: Any) -> Any:
        if not request.txn:
            raise RetrievalError("Prepare needs a transaction id")
        ids, v, ts = self._batch(request)
        return pb.AddResponse(added=self.part.prepare(request.txn, ids, v, ts), count=len(self.part.view()))

    @_rpc
    def Commit(self, request: Any, context: Any) -> Any:
        return pb.TxnResponse(applied=self.part.commit(request.txn))

    @_rpc
    def Abort(self, request: Any, context: Any) -> Any:
        return pb.TxnResponse(applied=self.part.abort(request.txn))

    @_rpc
    def InDoubt(self, request: Any, context: Any) -> Any:
        return pb.InDoubtResponse(txns=sorted(self.part.refresh().pending))

    @_rpc
    def Delete(self, request: Any, context: Any) -> Any:
        return pb.DeleteResponse(deleted=self.part.delete(np.asarray(request.ids, np.int64)))

    @_rpc
    def Stats(self, request: Any, context: Any) -> Any:
        s = self.part.stats()
        return pb.StatsResponse(partition=self.key, count=s.count, live=s.live, factory=s.factory, dim=self.store.dim,
                                bundle_sha256=self.store.bundle, start_ts=s.start_ts, end_ts=s.end_ts,
                                pending=s.pending, sealed=s.sealed, absorbed=s.absorbed, seq=s.seq,
                                wal_bytes=s.wal_bytes)

    @_rpc
    def Ids(self, request: Any, context: Any) -> Any:
        ids, _, ts = self.part.live()
        return pb.IdsResponse(ids=pack(ids, "<i8"), ts=pack(ts, "<i8"),
                              reserved=pack(self.part.reserved_ids(), "<i8"))


class HealthServicer(health_grpc.HealthServicer):
    def __init__(self, part: Any) -> None:
        self.part = part

    def Check(self, request: Any, context: Any) -> Any:
        ok = not self.part.retired
        return health_pb.HealthCheckResponse(status=health_pb.HealthCheckResponse.SERVING if ok
                                             else health_pb.HealthCheckResponse.NOT_SERVING)


def serve_partition(store: PartitionedStore, partition: str, host: str = "127.0.0.1", port: int = 0,
                    discovery_dir: str | os.PathLike | None = None, *, token: str | None = None,
                    tls: GrpcTlsConfig | None = None, workers: int = 8) -> tuple[Any, str]:
    """Start a gRPC server for one partition (TLS and a token when given); returns (server, address)."""
    import grpc

    interceptors = [TokenInterceptor(token)] if token else []
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=GRPC_OPTIONS,
                         interceptors=interceptors)
    servicer = IndexServicer(store, partition)
    pb_grpc.add_IndexServiceServicer_to_server(servicer, server)
    health_grpc.add_HealthServicer_to_server(HealthServicer(servicer.part), server)
    creds = server_credentials(tls or GrpcTlsConfig())
    target = f"{host}:{port}"
    bound = server.add_secure_port(target, creds) if creds is not None else server.add_insecure_port(target)
    if bound == 0:
        raise OSError(f"could not bind {target} for partition {partition}")
    server.start()
    address = f"{host}:{bound}"
    if discovery_dir is not None:
        announce(Path(discovery_dir), partition, address, store.bundle)
    log.info("index service for %s on %s%s", partition, address, " (TLS)" if creds is not None else "")
    return server, address


def announcement_path(discovery_dir: Path, partition: str) -> Path:
    return discovery_dir / f"{partition.replace('/', '_')}.json"


def announce(discovery_dir: Path, partition: str, address: str, bundle: str) -> Path:
    """Write `<dir>/<partition>.json` atomically (partition keys hold a '/', replaced by '_')."""
    return write_json_atomic(announcement_path(discovery_dir, partition),
                             {"partition": partition, "address": address, "pid": os.getpid(), "bundle": bundle,
                              "started": time.time()})


def withdraw(discovery_dir: Path, partition: str) -> None:
    """Remove this process's announcement (another process may have announced the key since)."""
    p = announcement_path(discovery_dir, partition)
    try:
        if json.loads(p.read_text()).get("pid") == os.getpid():
            p.unlink()
    except (OSError, ValueError):
        pass


class IndexClient:
    """A client for one index service (TLS and token as configured); calls raise grpc.RpcError."""

    def __init__(self, address: str, timeout_s: float = 10.0, *, token: str | None = None,
                 tls: GrpcTlsConfig | None = None) -> None:
        self.address = address
        self.channel = channel(address, tls or GrpcTlsConfig(), GRPC_OPTIONS)
        self.stub = pb_grpc.IndexServiceStub(self.channel)
        self.health = health_grpc.HealthStub(self.channel)
        self.timeout = timeout_s
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def _kw(self, timeout: float | None = None) -> dict[str, Any]:
        return {"timeout": timeout or self.timeout, "metadata": self.metadata}

    def search_request(self, queries: np.ndarray, k: int, start_ts: int | None = None, end_ts: int | None = None,
                       bundle: str = "") -> Any:
        q = np.atleast_2d(np.asarray(queries, np.float32))
        return pb.SearchRequest(queries=pack(q, "<f4"), dim=q.shape[1], k=k, bundle_sha256=bundle,
                                has_window=start_ts is not None or end_ts is not None,
                                start_ts=int(start_ts if start_ts is not None else -(2**62)),
                                end_ts=int(end_ts if end_ts is not None else 2**62))

    def search(self, queries: np.ndarray, k: int, start_ts: int | None = None, end_ts: int | None = None,
               bundle: str = "") -> Any:
        return self.stub.Search(self.search_request(queries, k, start_ts, end_ts, bundle), **self._kw())

    def search_future(self, request: Any) -> Any:
        return self.stub.Search.future(request, **self._kw())

    def add_request(self, ids: np.ndarray, vectors: np.ndarray, ts: np.ndarray, bundle: str = "",
                    txn: str = "") -> Any:
        v = np.atleast_2d(np.asarray(vectors, np.float32))
        return pb.AddRequest(ids=[int(i) for i in ids], ts=[int(t) for t in ts], vectors=pack(v, "<f4"),
                             dim=v.shape[1], bundle_sha256=bundle, txn=txn)

    def add(self, ids: np.ndarray, vectors: np.ndarray, ts: np.ndarray, bundle: str = "") -> Any:
        return self.stub.Add(self.add_request(ids, vectors, ts, bundle), **self._kw())

    def prepare(self, txn: str, ids: np.ndarray, vectors: np.ndarray, ts: np.ndarray, bundle: str = "") -> Any:
        return self.stub.Prepare(self.add_request(ids, vectors, ts, bundle, txn), **self._kw())

    def commit(self, txn: str) -> bool:
        return self.stub.Commit(pb.TxnRequest(txn=txn), **self._kw()).applied

    def abort(self, txn: str) -> bool:
        return self.stub.Abort(pb.TxnRequest(txn=txn), **self._kw()).applied

    def in_doubt(self) -> list[str]:
        return list(self.stub.InDoubt(pb.InDoubtRequest(), **self._kw()).txns)

    def delete(self, ids: list[int]) -> Any:
        return self.stub.Delete(pb.DeleteRequest(ids=[int(i) for i in ids]), **self._kw())

    def stats(self) -> Any:
        return self.stub.Stats(pb.StatsRequest(), **self._kw())

    def ids(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(live ids, their timestamps, reserved ids)."""
        r = self.stub.Ids(pb.IdsRequest(), **self._kw(max(self.timeout, 30.0)))
        return (np.frombuffer(r.ids, "<i8").copy(), np.frombuffer(r.ts, "<i8").copy(),
                np.frombuffer(r.reserved, "<i8").copy())

    def healthy(self, timeout_s: float | None = None) -> bool:
        try:
            r = self.health.Check(health_pb.HealthCheckRequest(), timeout=timeout_s or self.timeout)
            return r.status == health_pb.HealthCheckResponse.SERVING
        except Exception:
            return False

    def close(self) -> None:
        self.channel.close()


def main(argv: list[str] | None = None) -> None:
    """One index service process: serve a partition until SIGTERM or until the partition is retired."""
    ap = argparse.ArgumentParser(prog="python -m retrieval.service", description=__doc__.splitlines()[0])
    ap.add_argument("--spec", required=True, help="services.json written by spnas-serve")
    ap.add_argument("--partition", required=True, help="partition key, e.g. h/2026-11-26T15")
    ap.add_argument("--port", type=int, default=0, help="port (0: any free port)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"[%(asctime)s][service {args.partition}][%(levelname)s] %(message)s")
    try:
        import faiss

        faiss.omp_set_num_threads(1)  # one query per thread; the machine's cores go to concurrent requests
    except ImportError:  # pragma: no cover - faiss is a dependency
        pass
    spec = ServiceSpec.load(args.spec)
    store = spec.store()
    disc = Path(spec.discovery_dir)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    from .supervisor import watch_parent

    watch_parent(stop.set)
    server, _ = serve_partition(store, args.partition, spec.grpc_host, args.port, disc,
                                token=load_token(spec.auth), tls=spec.tls)
    retired = False
    while not stop.wait(1.0):
        if not store.exists(args.partition):
            log.info("partition %s was retired (rolled into a coarser one); stopping", args.partition)
            retired = True
            break
    server.stop(grace=2).wait()
    if retired:  # a stopped service keeps its announcement: its partition still exists and will be served again
        withdraw(disc, args.partition)


if __name__ == "__main__":
    main()
