"""Photo-search configs: embedder backends, request limits, tokens, TLS and approximate-search knobs."""

from __future__ import annotations

import enum
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


class PartialResults(enum.Enum):
    """What a search does when an index service it needs does not answer."""

    allow = "answer with the partitions that did and name the missing ones ('missing' in the response)"
    fail = "answer 503 naming the missing partitions"


@dataclass
class ServeLimits:
    max_bytes: int = opt(8 << 20, "largest upload, bytes")
    max_pixels: int = opt(24_000_000, "largest decoded image, pixels")
    max_items_per_request: int = opt(64, "photos per /items request")
    max_k: int = opt(100, "largest k of a search")
    max_body_bytes: int = opt(32 << 20, "largest request body, refused (413) before it is read")
    max_request_pixels: int = opt(48_000_000, "decoded pixels per request, summed over its photos (read from "
                                              "the headers before anything is decoded)")
    workers: int = opt(4, "threads decoding, embedding and calling the index services (off the event loop)")
    queue: int = opt(32, "requests waiting for a worker before new ones get 503 with Retry-After")
    retry_after_s: int = opt(1, "Retry-After of a 503 (saturated, or a partition briefly unavailable)")
    rpc_timeout_s: float = opt(5.0, "deadline of one gRPC call to an index service")
    max_future_s: int = opt(300, "how far in the future a listing's timestamp may be (clock skew)")

    def __post_init__(self) -> None:
        for k in ("max_bytes", "max_pixels", "max_items_per_request", "max_k", "max_body_bytes",
                  "max_request_pixels", "workers"):
            if getattr(self, k) < 1:
                raise ConfigError(f"limits.{k}={getattr(self, k)}: must be >= 1")
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
class ServeAuthConfig:
    """Bearer token of the mutating REST endpoints and of every gRPC call to the index services."""

    token_env: str = opt("SPNAS_SERVE_TOKEN", "environment variable holding the token")
    token_file: Optional[str] = opt(None, "file holding the token (wins over the variable)")


@dataclass
class GrpcTlsConfig:
    """TLS of the index services (plaintext on loopback when `cert` is unset)."""

    cert: Optional[str] = opt(None, "PEM certificate the index services present (enables TLS)")
    key: Optional[str] = opt(None, "PEM private key of that certificate")
    ca: Optional[str] = opt(None, "PEM CA the gateway verifies the services with (and, mutual, clients too)")
    mutual: bool = opt(False, "services require a client certificate signed by `ca`")
    client_cert: Optional[str] = opt(None, "mutual TLS: the certificate the gateway presents")
    client_key: Optional[str] = opt(None, "mutual TLS: its private key")
    server_name: Optional[str] = opt(None, "name to check in the services' certificate (default: the host)")

    def __post_init__(self) -> None:
        if bool(self.cert) != bool(self.key):
            raise ConfigError("tls.cert and tls.key go together")
        if self.cert and not self.ca:
            raise ConfigError("tls.cert needs tls.ca: the CA the gateway verifies the services' certificate with")
        if self.mutual and not (self.cert and self.client_cert and self.client_key):
            raise ConfigError("tls.mutual=true needs tls.cert, tls.key, tls.ca, tls.client_cert and tls.client_key")


@dataclass
class SearchParamsConfig:
    nprobe: int = opt(32, "IVF partitions probed")
    efSearch: int = opt(128, "HNSW search depth")  # noqa: N815 - FAISS's own name
    rerank: int = opt(4, "exact re-ranking of k * rerank PQ candidates")
