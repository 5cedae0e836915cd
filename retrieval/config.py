"""Typed settings of the photo-search backend (Hydra structured configs; each layer keeps its config beside its code): where
the listing store, photos and artifact repository live, how versions are built, kept and searched,
and the serving limits and security. `spnas/app/serving/config.py` composes them into commands.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Optional

from spnas_core.config import opt
from spnas_core.errors import ConfigError


class Backend(enum.Enum):
    """An embedder backend of `retrieval.embedders`."""

    mediapipe = "MediaPipe Tasks ImageEmbedder on embedder.tflite"
    litert = "LiteRT interpreter on embedder.tflite"
    onnx = "ONNX Runtime on model.onnx"
    torch = "PyTorch on weights.pt"


class Granularity(enum.Enum):
    """The calendar unit of an index version (the deck's hourly, daily and monthly batch jobs)."""

    hour = "one hour of listings (period YYYY-MM-DDTHH, UTC)"
    day = "one day (period YYYY-MM-DD)"
    month = "one month (period YYYY-MM)"


class PartialResults(enum.Enum):
    """What a search does when part of its window has no index service answering."""

    allow = "answer from what did answer and name the missing periods ('missing' in the response)"
    fail = "answer 503 naming the missing periods"


def _positive(prefix: str, obj: object, names: tuple[str, ...], lo: float = 1) -> None:
    for k in names:
        if getattr(obj, k) < lo:
            raise ConfigError(f"{prefix}.{k}={getattr(obj, k)}: must be >= {lo}")


@dataclass
class Locations:
    """Where the data lives; unset entries are derived from the serving root (`root`)."""

    store: Optional[str] = opt(None, "listing store URL: sqlite:///<file> (default <root>/listings.sqlite) or "
                                     "postgresql://user@host/db")
    repository: Optional[str] = opt(None, "artifact repository of index versions, any fsspec URL (default "
                                          "file://<root>/repository)")
    photos: Optional[str] = opt(None, "content-addressed photo store, any fsspec URL (default file://<root>/photos)")
    cache: Optional[str] = opt(None, "local folder of versions fetched from a remote repository (default "
                                     "<root>/versions)")

    def resolve(self, root: str) -> "Locations":
        """Every location filled in under `root`."""
        from pathlib import Path

        r = Path(root).expanduser().resolve()
        return Locations(store=self.store or f"sqlite:///{r / 'listings.sqlite'}",
                         repository=self.repository or f"file://{r / 'repository'}",
                         photos=self.photos or f"file://{r / 'photos'}", cache=self.cache or str(r / "versions"))


@dataclass
class FactoryConfig:
    """FAISS index chosen by a version's size (FAISS `index_factory` strings)."""

    flat_below: int = opt(100_000, "exact Flat index below this many listings")
    hnsw_up_to: int = opt(1_000_000, "HNSW up to this many; above, IVF-PQ re-ranked exactly from vectors on disk")
    hnsw_m: int = opt(32, "HNSW neighbours per node")
    ef_construction: int = opt(40, "HNSW build depth")
    train_sample: int = opt(200_000, "IVF-PQ: listings sampled (seeded) to train the coarse quantizer and PQ")
    nlist_per_sqrt: float = opt(1.0, "IVF-PQ: inverted lists per square root of the listings (rounded to a power "
                                     "of two: 4096 at 1e7)")
    pq_m: int = opt(32, "IVF-PQ: bytes of PQ code per listing (sub-quantizers of 8 bits)")
    opq: bool = opt(False, "IVF-PQ: an OPQ rotation in front of the PQ")
    seed: int = opt(0, "seed of the training sample")

    def __post_init__(self) -> None:
        _positive("factory", self, ("flat_below", "hnsw_up_to", "hnsw_m", "ef_construction", "train_sample", "pq_m"))
        if self.nlist_per_sqrt <= 0:
            raise ConfigError(f"factory.nlist_per_sqrt={self.nlist_per_sqrt}: must be > 0")
        if self.hnsw_up_to < self.flat_below:
            raise ConfigError(f"factory.hnsw_up_to={self.hnsw_up_to} is below factory.flat_below={self.flat_below}")


@dataclass
class SearchParams:
    """Query-time knobs of an index service, and its caps."""

    efSearch: int = opt(64, "HNSW search depth")  # noqa: N815 - FAISS's own name
    nprobe: int = opt(32, "IVF lists visited")
    k_factor: int = opt(64, "IVF-PQ: k * k_factor candidates re-ranked exactly (PQ32 codes of dense real-like "
                            "embeddings need many: bench_index_compressed in docs/benchmarks.md), up to 1e6 "
                            "listings searched; above, it grows (k_factor_growth)")
    k_factor_growth: float = opt(0.5, "IVF-PQ: above 1e6 listings searched the re-rank depth is k_factor x "
                                      "(n / 1e6) ** k_factor_growth (more listings crowd more near neighbours "
                                      "within the PQ codes' error: measured recall@10 0.985 at 1e6 with 64, "
                                      "0.917 at 1e7 with 64, 0.972 with 200); 0 keeps k_factor fixed")
    exact_below: int = opt(20_000, "a window holding at most this many listings is searched exactly on its "
                                   "(contiguous, time-ordered) rows")
    max_queries: int = opt(64, "queries per Search call, refused above")
    max_k: int = opt(1000, "largest k of a Search call")

    def __post_init__(self) -> None:
        _positive("search", self, ("efSearch", "nprobe", "k_factor", "max_queries", "max_k"))
        _positive("search", self, ("exact_below", "k_factor_growth"), 0)

    def rerank_depth(self, n: int) -> int:
        """Candidates re-ranked exactly per result when n listings are searched: k_factor up to 1e6, then
        growing as (n / 1e6) ** k_factor_growth, so recall holds as a version grows (a 1e7 month: 203)."""
        return max(1, math.ceil(self.k_factor * max(1.0, n / 1e6) ** self.k_factor_growth))


@dataclass
class RetentionConfig:
    """How many periods of each granularity keep their versions; the rest are removed."""

    months: int = opt(12, "months kept (older listings leave the search)")
    days: int = opt(62, "days kept (a finished month is served by its days until its month version exists)")
    hours: int = opt(48, "hours kept")
    incomplete_after_s: int = opt(3600, "remove files of a build that never wrote its manifest after this long")

    def __post_init__(self) -> None:
        _positive("retention", self, ("months", "days", "hours"))
        _positive("retention", self, ("incomplete_after_s",), 0)


@dataclass
class BuildConfig:
    """Batch builds of index versions."""

    factory: FactoryConfig = opt(factory=FactoryConfig, help="FAISS index by size")
    rebuild_changed: float = opt(0.01, "build-due rebuilds a finished period once this share of its listings "
                                       "changed since its version (until then deletes apply at query time)")
    embed_batch: int = opt(64, "photos embedded per batch when a build finds missing embeddings")
    verify: bool = opt(True, "build-due first verifies (sha256) the newest version of each period of its "
                             "granularities in the repository and builds a corrupt one again")
    tmp_dir: Optional[str] = opt(None, "scratch folder of a build (default: $TMPDIR); a compressed month writes "
                                       "its float16 vectors there: 2 * dim bytes a listing")

    def __post_init__(self) -> None:
        if not 0 <= self.rebuild_changed <= 1:
            raise ConfigError(f"build.rebuild_changed={self.rebuild_changed}: a share between 0 and 1")
        _positive("build", self, ("embed_batch",))


@dataclass
class DeltaConfig:
    """The gateway's small in-memory index of listings no ready version holds yet."""

    refresh_s: float = opt(1.0, "how often each gateway worker reads the listing store's changes")
    max_listings: int = opt(200_000, "listings the delta may hold; older uncovered periods beyond it are "
                                     "reported missing (build them: spnas-index build-due)")
    stale_after_s: float = opt(30.0, "a gateway worker stays ready while its view of the store is at most this "
                                     "old (it answers from its last view while the store is briefly away)")

    def __post_init__(self) -> None:
        if self.refresh_s <= 0 or self.max_listings < 1 or self.stale_after_s < self.refresh_s:
            raise ConfigError("delta.refresh_s must be > 0, delta.max_listings >= 1 and delta.stale_after_s >= "
                              "delta.refresh_s")


@dataclass
class Limits:
    """Request limits of the REST gateway."""

    max_bytes: int = opt(8 << 20, "largest upload, bytes")
    max_pixels: int = opt(24_000_000, "largest decoded image, pixels")
    max_items_per_request: int = opt(64, "photos per /items request")
    max_k: int = opt(100, "largest k of a search")
    max_body_bytes: int = opt(32 << 20, "largest request body, refused (413) before it is read")
    max_request_pixels: int = opt(48_000_000, "decoded pixels per request, summed over its photos (read from "
                                              "the headers before anything is decoded)")
    threads: int = opt(4, "threads decoding, embedding and calling the index services (off the event loop)")
    queue: int = opt(32, "requests waiting for a thread before new ones get 503 with Retry-After")
    retry_after_s: int = opt(1, "Retry-After of a 503")
    rpc_timeout_s: float = opt(5.0, "deadline of one gRPC call to an index service")
    max_future_s: int = opt(300, "how far in the future a listing's timestamp may be (clock skew)")
    shutdown_grace_s: int = opt(10, "on SIGTERM, requests in flight get this long to finish")

    def __post_init__(self) -> None:
        _positive("limits", self, ("max_bytes", "max_pixels", "max_items_per_request", "max_k", "max_body_bytes",
                                   "max_request_pixels", "threads"))
        if self.max_bytes > self.max_body_bytes:
            raise ConfigError(f"limits.max_bytes={self.max_bytes} is larger than limits.max_body_bytes="
                              f"{self.max_body_bytes}: one photo could never arrive")
        if self.max_pixels > self.max_request_pixels:
            raise ConfigError(f"limits.max_pixels={self.max_pixels} is larger than limits.max_request_pixels="
                              f"{self.max_request_pixels}")
        if self.queue < 0 or self.rpc_timeout_s <= 0 or self.retry_after_s < 0 or self.max_future_s < 0:
            raise ConfigError("limits.queue, limits.retry_after_s and limits.max_future_s must be >= 0 and "
                              "limits.rpc_timeout_s > 0")


@dataclass
class AuthConfig:
    """Bearer token of the writing REST endpoints and of every gRPC call to the index services."""

    token_env: str = opt("SPNAS_SERVE_TOKEN", "environment variable holding the token")
    token_file: Optional[str] = opt(None, "file holding the token (wins over the variable)")


@dataclass
class TlsConfig:
    """TLS of the index services (plaintext only on loopback). A service needs `cert`, `key` and `ca`; a
    client (the gateway) needs `ca` alone, and `client_cert`/`client_key` where the services ask for them
    (`mutual`): it never holds the services' private key."""

    cert: Optional[str] = opt(None, "PEM certificate the index services present (enables TLS on a service)")
    key: Optional[str] = opt(None, "PEM private key of that certificate (services only)")
    ca: Optional[str] = opt(None, "PEM CA a client verifies the services with (enables TLS on a client); with "
                                  "mutual, the CA a service verifies clients with")
    mutual: bool = opt(False, "services require a client certificate signed by `ca`")
    client_cert: Optional[str] = opt(None, "mutual TLS: the certificate the gateway presents")
    client_key: Optional[str] = opt(None, "mutual TLS: its private key")
    server_name: Optional[str] = opt(None, "name to check in the services' certificate (default: the host)")

    def __post_init__(self) -> None:
        if bool(self.cert) != bool(self.key):
            raise ConfigError("tls.cert and tls.key go together")
        if self.cert and not self.ca:
            raise ConfigError("tls.cert needs tls.ca: the CA the gateway verifies the services' certificate with")
        if bool(self.client_cert) != bool(self.client_key):
            raise ConfigError("tls.client_cert and tls.client_key go together")
        if self.client_cert and not self.ca:
            raise ConfigError("tls.client_cert needs tls.ca: the CA the services' certificate is verified with")
        if self.mutual and not (self.cert and self.client_cert and self.client_key):
            raise ConfigError("tls.mutual=true needs tls.cert, tls.key, tls.ca, tls.client_cert and tls.client_key")
