"""How the gateway finds index services: a `Resolver` names the addresses of services that may be up.

The gateway asks each address for its health (`grpc.health.v1`) and, once, for what it serves
(`Info`: bundle, granularity, period, version, snapshot); it plans only with services that answer
SERVING. A resolver therefore needs to know nothing about versions, only where services are:

    DirectoryResolver(folder)   services started with an announce folder write `<version>-<port>.json`
                                there while they serve and touch it every `follow_s` (a heartbeat); one
                                whose heartbeat stopped (killed) is ignored after `stale_s`, its file
                                removed after `remove_after_s` (one machine: `spnas-serve`, benchmarks)
    StaticResolver(file)        a YAML/JSON file `{"services": ["10.0.0.7:50051", ...]}`
    KubernetesResolver          `kubernetes[:<namespace>]`: the ready endpoints of the index services'
                                EndpointSlices, listed and watched (retrieval.k8s.resolver; deploy/)
    "<module>:<Class>"          your own class, built without arguments

The interface and its contract are declared in `retrieval.interface.Resolver` (every resolver here
subclasses it).
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from spnas_core.errors import ConfigError

from .interface import Resolver




def _alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
        return True
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError, OverflowError):
        return True  # someone else's process, or not a pid we can judge: trust the heartbeat


def announcements(folder: str | Path, max_age_s: float) -> list[tuple[dict[str, Any], float, Path]]:
    """(announcement, age in seconds, file) of every announcement in `folder` touched within `max_age_s`."""
    out = []
    now = time.time()
    for p in sorted(Path(folder).glob("*.json")):
        try:
            age = now - p.stat().st_mtime
            if age <= max_age_s:
                out.append((json.loads(p.read_text()), age, p))
        except (OSError, ValueError):
            continue  # being written or removed
    return out


def announced_versions(folder: str | Path | None, keep_s: float = 600.0) -> set[tuple]:
    """Versions (`VersionInfo.ref`) that services announced in `folder` within `keep_s`: those running and
    those killed lately, which their supervisor may restart. Retention keeps them."""
    if folder is None or not Path(folder).is_dir():
        return set()
    return {tuple(a["ref"]) for a, _, _ in announcements(folder, keep_s) if isinstance(a.get("ref"), list)}


class DirectoryResolver(Resolver):
    """The announcements of running services in one folder: those whose heartbeat is at most `stale_s`
    old and whose process (on this host) is alive; files older than `remove_after_s` are removed."""

    def __init__(self, folder: str | Path, stale_s: float = 15.0, remove_after_s: float = 600.0) -> None:
        self.folder, self.stale_s, self.remove_after_s = Path(folder), stale_s, remove_after_s
        self.host = socket.gethostname()

    def addresses(self) -> list[str]:
        out = []
        now = time.time()
        for p in sorted(self.folder.glob("*.json")):
            try:
                age = now - p.stat().st_mtime
                if age > self.remove_after_s:
                    p.unlink(missing_ok=True)  # a service killed long ago: nobody withdraws it but us
                    continue
                a = json.loads(p.read_text())
                if age > self.stale_s or (a.get("host") == self.host and not _alive(a.get("pid"))):
                    continue
                out.append(str(a["address"]))
            except (OSError, ValueError, KeyError):
                continue  # being written or removed
        return out


class StaticResolver(Resolver):
    """A fixed list of addresses in a YAML or JSON file, re-read on every call."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def addresses(self) -> list[str]:
        import yaml

        return [str(a) for a in (yaml.safe_load(self.path.read_text()) or {}).get("services", [])]


def make_resolver(spec: str) -> Resolver:
    """`dir:<folder>`, `file:<path>`, `kubernetes[:<namespace>]` or `<module>:<Class>`."""
    kind, _, arg = spec.partition(":")
    if kind == "kubernetes":
        from .k8s.resolver import KubernetesResolver

        return KubernetesResolver(arg or None)
    if kind == "dir" and arg:
        return DirectoryResolver(arg)
    if kind == "file" and arg:
        return StaticResolver(arg)
    if kind and arg and "/" not in spec:
        try:
            return getattr(importlib.import_module(kind), arg)()
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"resolver '{spec}': {e}") from None
    raise ConfigError(f"resolver must be dir:<folder>, file:<path>, kubernetes[:<namespace>] or <module>:<Class>; "
                      f"got '{spec}'")
