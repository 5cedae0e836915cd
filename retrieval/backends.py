"""Where a router's ready versions come from: index services over gRPC (the gateway), or versions
loaded in this process from a repository (`spnas.open_photo_index`, one machine without services)."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np

from .config import Granularity, SearchParams, TlsConfig
from .listings import ListingStore
from .planner import Ready
from .resolver import Resolver
from .service import Follower, IndexClient
from .version_index import VersionIndex
from .versions import Repository

log = logging.getLogger(__name__)


# Blocking calls on a shared pool: grpc's `.future()` starts a thread per call (a channel spin thread),
# which cost more than the search itself on a gateway fanning out to several versions.
_FANOUT = ThreadPoolExecutor(max_workers=32, thread_name_prefix="grpc-fanout")


class _Remote:
    def __init__(self, client: IndexClient) -> None:
        self.client = client

    def submit(self, q: np.ndarray, k: int, start: int, end: int, bundle: str, as_of: int
               ) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
        c = self.client
        fut = _FANOUT.submit(c.stub.Search, c.request(q, k, start, end, bundle, as_of), timeout=c.timeout,
                             metadata=c.metadata)
        return lambda: IndexClient.unpack(fut.result(), len(q), k)


class GrpcBackends:
    """The services a resolver names that answer SERVING, each asked what it serves on every refresh (an
    address may come back serving another version: a pod restarted, an IP reused)."""

    def __init__(self, resolver: Resolver, token: str | None = None, tls: TlsConfig | None = None,
                 timeout_s: float = 5.0) -> None:
        self.resolver, self.token, self.tls, self.timeout_s = resolver, token, tls or TlsConfig(), timeout_s
        self.clients: dict[str, IndexClient] = {}
        self.ready: dict[str, Ready] = {}
        self.refused: dict[str, str] = {}  # addresses not called, and why (e.g. plaintext beyond loopback)

    def __call__(self) -> list[Ready]:
        from grpc_health.v1 import health_pb2

        addrs = set(self.resolver.addresses())
        for a in set(self.clients) - addrs:
            self.clients.pop(a).close()
            self.ready.pop(a, None)
        for a in set(self.refused) - addrs:
            del self.refused[a]
        for a in addrs - set(self.clients) - set(self.refused):
            try:
                self.clients[a] = IndexClient(a, self.timeout_s, token=self.token, tls=self.tls)
            except Exception as e:  # one bad address drops that address only, never the others
                self.refused[a] = str(e)[:200]
                log.warning("index service address %s left out: %s", a, e)
        asks = {a: (c.health_stub.Check.future(health_pb2.HealthCheckRequest(), timeout=1.0),
                    _FANOUT.submit(c.info, 2.0)) for a, c in self.clients.items()}
        out = []
        for a, (health, info) in asks.items():
            try:
                if health.result().status != health_pb2.HealthCheckResponse.SERVING:
                    raise LookupError(a)
                i = info.result()
                r = Ready(i.bundle_id, Granularity[i.granularity], i.period, i.version, i.snapshot_seq, i.start_ts,
                          i.end_ts, self.ready[a].ref if a in self.ready else _Remote(self.clients[a]))
                self.ready[a] = r
                out.append(r)
            except Exception:  # down, starting or stopping
                self.ready.pop(a, None)
        return out


class _Local:
    def __init__(self, vi: VersionIndex, follower: Follower) -> None:
        self.vi, self.follower = vi, follower

    def submit(self, q: np.ndarray, k: int, start: int, end: int, bundle: str, as_of: int
               ) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
        self.follower.ensure(as_of)
        res = self.vi.search(q, k, start, end, as_of=as_of)
        return lambda: res


class LocalBackends:
    """The versions of a repository, loaded (memory-mapped) in this process, each following the store."""

    def __init__(self, repo: Repository, store: ListingStore, params: SearchParams, cache_dir: str) -> None:
        self.repo, self.store, self.params, self.cache_dir = repo, store, params, cache_dir
        self.loaded: dict[str, Ready] = {}

    def __call__(self) -> list[Ready]:
        from .versions import open_version

        infos = {v.url: v for v in self.repo.versions()}
        for url in set(self.loaded) - set(infos):
            del self.loaded[url]
        for url, info in infos.items():
            if url not in self.loaded:
                try:
                    vi = VersionIndex.load(*open_version(url, self.cache_dir), self.params)
                except Exception as e:
                    log.warning("version %s not loaded: %s", info.key, e)
                    continue
                f = Follower(vi, self.store)
                f.catch_up()
                self.loaded[url] = Ready(info.bundle_id, info.g, info.period, info.version, info.snapshot_seq,
                                         info.start_ts, info.end_ts, _Local(vi, f))
        return list(self.loaded.values())


def ready_json(r: Ready, address: Any = None) -> dict[str, Any]:
    d = {"bundle_id": r.bundle_id, "granularity": r.granularity.name, "period": r.period, "version": r.version,
         "snapshot_seq": r.snapshot_seq}
    if address is not None:
        d["address"] = address
    return d
