"""gRPC index service: one partition of a `PartitionedStore` per service, plus grpc.health.v1.

Each running service announces itself by writing `<discovery_dir>/<partition>.json` (address, pid,
partition, bundle) atomically; the gateway's `DirectoryResolver` reads that folder. Replace the
resolver to discover services another way (the source design lists Kubernetes endpoints).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import numpy as np

from .partitions import PartitionedStore, key_range
from .proto import load as load_stubs
from spnas.errors import RetrievalError

log = logging.getLogger(__name__)
pb, pb_grpc, health_pb, health_grpc = load_stubs()


def _vectors(msgs: Any, dim: int) -> np.ndarray:
    arr = np.asarray([list(v.values) for v in msgs], dtype=np.float32)
    if arr.ndim != 2 or (len(arr) and arr.shape[1] != dim):
        raise RetrievalError(f"vectors must have {dim} values each")
    return arr.reshape(len(msgs), dim)


class IndexServicer(pb_grpc.IndexServiceServicer):
    """Search / Add / Delete / Stats on one partition; a lock serialises writes against reads."""

    def __init__(self, store: PartitionedStore, partition: str) -> None:
        self.store = store
        self.key = partition
        self.lock = threading.RLock()
        self.start_ts, self.end_ts = key_range(partition)

    def _check_bundle(self, sha: str, context: Any) -> bool:
        import grpc

        if sha and sha != self.store.bundle:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"partition {self.key} holds embeddings of bundle {self.store.bundle[:12]}..., "
                          f"the request's are from {sha[:12]}...")
        return True

    def Search(self, request: Any, context: Any) -> Any:
        import grpc

        self._check_bundle(request.bundle_sha256, context)
        try:
            q = _vectors(request.queries, self.store.dim)
        except ValueError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        k = max(1, min(int(request.k or 10), 1000))
        win = (request.start_ts, request.end_ts) if request.has_window else (None, None)
        with self.lock:
            idx = self.store.open(self.key, create_for=1)
            hits = idx.search(q, k, *win)
            dead = self.store.deleted()
        resp = pb.SearchResponse(partition=self.key)
        for i in range(len(q)):
            hl = resp.results.add()
            for j in range(k):
                x = int(hits.ids[i, j])
                if x >= 0 and x not in dead:
                    hl.hits.add(id=x, score=float(hits.scores[i, j]), ts=int(hits.ts[i, j]))
        return resp

    def Add(self, request: Any, context: Any) -> Any:
        import grpc

        self._check_bundle(request.bundle_sha256, context)
        try:
            v = _vectors(request.vectors, self.store.dim)
            ids = np.asarray(request.ids, np.int64)
            ts = np.asarray(request.ts, np.int64)
            if len(ts) and ((ts < self.start_ts) | (ts >= self.end_ts)).any():
                raise RetrievalError(f"timestamps outside partition {self.key} [{self.start_ts}, {self.end_ts})")
            with self.lock:
                self.store.add(ids, v, ts)
                n = len(self.store.open(self.key))
        except ValueError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        return pb.AddResponse(added=len(ids), count=n)

    def Delete(self, request: Any, context: Any) -> Any:
        with self.lock:
            idx = self.store.open(self.key, create_for=1)
            n = idx.delete(np.asarray(request.ids, np.int64))
            if n:
                idx.save(self.store.path(self.key))
        return pb.DeleteResponse(deleted=n)

    def Stats(self, request: Any, context: Any) -> Any:
        with self.lock:
            idx = self.store.open(self.key, create_for=1)
            return pb.StatsResponse(partition=self.key, count=len(idx), live=idx.live_count, factory=idx.factory,
                                    dim=idx.dim, bundle_sha256=idx.bundle_sha256, start_ts=self.start_ts,
                                    end_ts=self.end_ts)


class HealthServicer(health_grpc.HealthServicer):
    def Check(self, request: Any, context: Any) -> Any:
        return health_pb.HealthCheckResponse(status=health_pb.HealthCheckResponse.SERVING)


def serve_partition(store: PartitionedStore, partition: str, host: str = "127.0.0.1", port: int = 0,
                    discovery_dir: str | os.PathLike | None = None, workers: int = 4) -> tuple[Any, str]:
    """Start a gRPC server for one partition; returns (server, address)."""
    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers),
                         options=[("grpc.max_receive_message_length", 64 << 20),
                                  ("grpc.max_send_message_length", 64 << 20)])
    pb_grpc.add_IndexServiceServicer_to_server(IndexServicer(store, partition), server)
    health_grpc.add_HealthServicer_to_server(HealthServicer(), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"could not bind {host}:{port} for partition {partition}")
    server.start()
    address = f"{host}:{bound}"
    if discovery_dir is not None:
        announce(Path(discovery_dir), partition, address, store.bundle)
    log.info("index service for %s on %s", partition, address)
    return server, address


def announce(discovery_dir: Path, partition: str, address: str, bundle: str) -> Path:
    """Write `<dir>/<partition>.json` atomically (partition keys hold a '/', replaced by '_')."""
    discovery_dir.mkdir(parents=True, exist_ok=True)
    p = discovery_dir / f"{partition.replace('/', '_')}.json"
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(json.dumps({"partition": partition, "address": address, "pid": os.getpid(), "bundle": bundle}))
    os.replace(tmp, p)
    return p


class IndexClient:
    """A small client for one index service."""

    def __init__(self, address: str, timeout_s: float = 10.0) -> None:
        import grpc

        self.address = address
        self.channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 << 20),
                                                               ("grpc.max_send_message_length", 64 << 20)])
        self.stub = pb_grpc.IndexServiceStub(self.channel)
        self.health = health_grpc.HealthStub(self.channel)
        self.timeout = timeout_s

    def search(self, queries: np.ndarray, k: int, start_ts: int | None = None, end_ts: int | None = None,
               bundle: str = "") -> Any:
        req = pb.SearchRequest(k=k, bundle_sha256=bundle, has_window=start_ts is not None or end_ts is not None,
                               start_ts=int(start_ts if start_ts is not None else -(2**62)),
                               end_ts=int(end_ts if end_ts is not None else 2**62))
        for q in np.atleast_2d(queries):
            req.queries.add(values=q.tolist())
        return self.stub.Search(req, timeout=self.timeout)

    def add(self, ids: np.ndarray, vectors: np.ndarray, ts: np.ndarray, bundle: str = "") -> Any:
        req = pb.AddRequest(ids=[int(i) for i in ids], ts=[int(t) for t in ts], bundle_sha256=bundle)
        for v in vectors:
            req.vectors.add(values=np.asarray(v, np.float32).tolist())
        return self.stub.Add(req, timeout=self.timeout)

    def delete(self, ids: list[int]) -> Any:
        return self.stub.Delete(pb.DeleteRequest(ids=[int(i) for i in ids]), timeout=self.timeout)

    def stats(self) -> Any:
        return self.stub.Stats(pb.StatsRequest(), timeout=self.timeout)

    def healthy(self) -> bool:
        try:
            r = self.health.Check(health_pb.HealthCheckRequest(), timeout=self.timeout)
            return r.status == health_pb.HealthCheckResponse.SERVING
        except Exception:
            return False

    def close(self) -> None:
        self.channel.close()

