"""Fixtures of the photo-search tests: a seeded one-machine deployment (`spnas-serve`'s own start:
listing store, builds, in-process index services, the gateway on a free port, a token from a file),
and a catalogue of synthetic listings with cached embeddings for the fast tests."""

from __future__ import annotations

import io
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import httpx
import numpy as np
import pytest

from ..conftest import compose


def wait_for(cond: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll `cond` until it returns something truthy (no fixed sleeps: a condition awaited)."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def jpeg(img: np.ndarray) -> bytes:
    from PIL import Image

    b = io.BytesIO()
    Image.fromarray(img).save(b, "JPEG", quality=90)
    return b.getvalue()


# ---------------------------------------------------------------------------------- synthetic catalogue
class FakeEmbedder:
    """An embedder for tests that never embeds: every vector comes from the embedding cache."""

    def __init__(self, dim: int = 16, bundle: str = "f" * 64) -> None:
        self.dim, self.bundle_sha256, self.name = dim, bundle, "fake"

    def embed(self, images, progress=None):  # pragma: no cover - a build that embeds is a test failure
        raise AssertionError("the fake embedder was asked to embed: an embedding was missing from the cache")


def unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@dataclass
class Catalogue:
    store: Any
    repo: Any
    embedder: FakeEmbedder
    ids: np.ndarray
    ts: np.ndarray
    vecs: np.ndarray
    photos: list[str]

    def vector(self, listing_id: int) -> np.ndarray:
        return self.vecs[int(np.flatnonzero(self.ids == listing_id)[0])]


def make_catalogue(tmp: Path, n: int, start: int, span_s: int, dim: int = 16, seed: int = 0,
                   repository: str | None = None, bundle: str = "f" * 64, store: str | None = None) -> Catalogue:
    """n listings with times spread over [start, start + span_s), photos hashed, embeddings cached."""
    from retrieval.listings import ListingStore
    from retrieval.versions import Repository

    store = ListingStore(store or f"sqlite:///{tmp / 'listings.sqlite'}")
    rng = np.random.default_rng(seed)
    ids = rng.choice(2**40, size=n, replace=False).astype(np.int64)
    ts = start + rng.integers(0, span_s, n)
    vecs = unit(n, dim, seed)
    photos = [f"{seed:04d}{i:060d}" for i in range(n)]
    store.load(ids, ts, photos, [f"listing {i}" for i in ids])
    store.cache(bundle, photos, vecs)
    return Catalogue(store, Repository(repository or f"file://{tmp / 'repository'}"), FakeEmbedder(dim, bundle), ids,
                     ts, vecs, photos)


def fake_bundle(tmp: Path) -> tuple[Path, str]:
    """A folder that is a bundle as far as its identity goes (a manifest and an embedder file), for
    gateways whose embedder is a `FakeEmbedder`; returns (folder, bundle id)."""
    import json

    from export.bundle import BUNDLE_FORMAT, bundle_id
    from spnas_core.files import sha256_file

    b = tmp / "bundle"
    b.mkdir(parents=True, exist_ok=True)
    (b / "embedder.tflite").write_bytes(b"not a model: the fake embedder reads the embedding cache")
    (b / "manifest.json").write_text(json.dumps({"format": BUNDLE_FORMAT, "files": {"embedder.tflite": {
        "sha256": sha256_file(b / "embedder.tflite"), "size": (b / "embedder.tflite").stat().st_size}}}))
    return b, bundle_id(b)


# ---------------------------------------------------------------------------------- a deployment
class Deployment:
    """`spnas.app.serving.serve.start` with handles to its parts."""

    def __init__(self, cfg: Any, token: str, clock: Callable[[], float] = time.time) -> None:
        from spnas.app.serving.serve import start

        self.cfg, self.token = cfg, token
        self.started = clock()  # when it was seeded and built: what its plan holds depends on the time of day
        self.s = start(cfg, clock=clock)
        self.url, self.store, self.embedder, self.repo = self.s.url, self.s.store, self.s.embedder, self.s.repo
        self.wait_ready()

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/ready", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float = 60) -> None:
        wait_for(self.ready, timeout, "the deployment to be ready")

    def close(self) -> None:
        self.s.stop()


def serve_overrides(bundle: Path, grocery_root: Path, tmp: Path, token_file: Path, n: int = 240) -> list[str]:
    return [f"bundle={bundle}", "data=grocery", f"data.root={grocery_root}", f"data.train_limit={n}", "data.test_limit=20",
            "data.val_limit=10", f"data.cache_dir={tmp / 'cache'}", f"root={tmp / 'serve'}", "port=0",
            f"auth.token_file={token_file}", "seed_times=spread", "seed_hours=30", "limits.rpc_timeout_s=2",
            "delta.refresh_s=0.2"]


def make_token(tmp: Path) -> tuple[str, Path]:
    token = secrets.token_hex(16)
    p = tmp / "token"
    p.write_text(token + "\n")
    return token, p


@pytest.fixture(scope="module")
def deployment(small_bundle: Path, grocery_root: Path, tmp_path_factory: Any):
    """A seeded deployment: 240 Grocery train photos as listings over the past 30 hours, their finished
    hours (and days) built into versions, each served by an index service, the gateway on top."""
    tmp = tmp_path_factory.mktemp("serve")
    token, tf = make_token(tmp)
    d = Deployment(compose("serve", serve_overrides(small_bundle, grocery_root, tmp, tf) +
                           ["limits.max_bytes=150000", "limits.max_pixels=4000000",
                            "limits.max_request_pixels=6000000", "limits.max_body_bytes=2000000"]), token)
    yield d
    d.close()
