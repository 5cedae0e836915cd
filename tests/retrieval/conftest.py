"""A supervised photo-search deployment on loopback for the retrieval tests: `spnas-serve`'s own start
(index service processes, the gateway process, seeding), a token from a file, ports from the OS."""

from __future__ import annotations

import io
import os
import secrets
import signal
import threading
import time
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


class Deployment:
    """`spnas.app.serve.start` plus a background supervisor loop; helpers to hurt it."""

    def __init__(self, cfg: Any, token: str, clock: Callable[[], float] = time.time, loop: bool = True) -> None:
        from spnas.app.serve import start

        self.cfg, self.token = cfg, token
        self.s = start(cfg, clock=clock)
        self.sup = self.s["supervisor"]
        self.store = self.s["store"]
        self.embedder = self.s["embedder"]
        self.url = self.s["url"]
        self._stop = threading.Event()
        self._loop = threading.Thread(target=self.sup.run, args=(self._stop,), daemon=True) if loop else None
        self.sup.wait_ready(90)
        if self._loop is not None:
            self._loop.start()
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

    def kill_service(self, key: str) -> int:
        pid = self.sup.service_pid(key)
        assert pid, f"no live service for {key}"
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not _alive(pid), 10, f"service {key} to die")
        return pid

    def kill_gateway(self) -> int:
        pid = self.sup.gateway_pid()
        assert pid
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not _alive(pid), 10, "the gateway to die")
        return pid

    def pause_supervisor(self) -> None:
        """Stop restarting what dies (to look at a deployment with a service down)."""
        self._stop.set()
        if self._loop is not None:
            self._loop.join(10)

    def resume_supervisor(self) -> None:
        self._stop = threading.Event()
        self._loop = threading.Thread(target=self.sup.run, args=(self._stop,), daemon=True)
        self._loop.start()

    def close(self) -> None:
        self._stop.set()
        if self._loop is not None and self._loop.is_alive():
            self._loop.join(10)
        self.sup.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a killed child stays a zombie until reaped: reap it if it is ours
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def serve_overrides(bundle: Path, grocery_root: Path, tmp: Path, token_file: Path, n: int = 240) -> list[str]:
    return [f"bundle={bundle}", f"data.root={grocery_root}", f"data.train_limit={n}", "data.test_limit=20",
            "data.val_limit=10", f"data.cache_dir={tmp / 'cache'}", f"index_dir={tmp / 'index'}", "port=0",
            "tick_s=0.2", f"auth.token_file={token_file}", "seed_hours=30", "limits.rpc_timeout_s=2"]


def make_token(tmp: Path) -> tuple[str, Path]:
    token = secrets.token_hex(16)
    p = tmp / "token"
    p.write_text(token + "\n")
    return token, p


@pytest.fixture(scope="module")
def deployment(small_bundle: Path, grocery_root: Path, tmp_path_factory: Any):
    """A seeded deployment (240 Grocery train photos as listings over the past 30 hours)."""
    tmp = tmp_path_factory.mktemp("serve")
    token, tf = make_token(tmp)
    d = Deployment(compose("serve", serve_overrides(small_bundle, grocery_root, tmp, tf) +
                           ["limits.max_bytes=150000", "limits.max_pixels=4000000",
                            "limits.max_request_pixels=6000000", "limits.max_body_bytes=2000000"]), token)
    yield d
    d.close()
