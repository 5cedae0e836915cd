"""How the gateway finds index services: a `Resolver` names the addresses of services that may be up.

The gateway asks each address for its health (`grpc.health.v1`) and, once, for what it serves
(`Info`: bundle, granularity, period, version, snapshot); it plans only with services that answer
SERVING. A resolver therefore needs to know nothing about versions, only where services are:

    DirectoryResolver(folder)   services started with an announce folder write `<version>-<port>.json`
                                there while they serve (one machine: `spnas-serve`, tests, benchmarks)
    StaticResolver(file)        a YAML/JSON file `{"services": ["10.0.0.7:50051", ...]}`
    KubernetesResolver          `kubernetes[:<namespace>]`: the ready endpoints of the index services'
                                EndpointSlices, listed and watched (retrieval.k8s.resolver; deploy/)
    "<module>:<Class>"          your own class, built without arguments

`addresses()` is called on every refresh of every gateway worker (each `delta.refresh_s`) from one
thread; a resolver whose listing is costly caches it.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Protocol

from spnas_core.errors import ConfigError


class Resolver(Protocol):
    def addresses(self) -> list[str]:
        """host:port of every index service that may be serving now."""
        ...


class DirectoryResolver:
    """The announcements of running services in one folder."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def addresses(self) -> list[str]:
        out = []
        for p in sorted(self.folder.glob("*.json")):
            try:
                out.append(str(json.loads(p.read_text())["address"]))
            except (OSError, ValueError, KeyError):
                continue  # being written or removed
        return out


class StaticResolver:
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
