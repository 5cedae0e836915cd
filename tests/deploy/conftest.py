"""deploy/ checked offline: `kubectl kustomize` renders it, `kubernetes-validate` validates every
built-in kind against the official schemas it ships, jsonschema validates custom resources against
their CRD, hadolint lints the Dockerfile. No cluster runs here (none is installable offline).

A missing tool skips its tests with the reason; in CI (CI=true) it fails them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..conftest import _missing

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAY = DEPLOY / "overlays" / "example"
K8S_VERSION = "1.30.0"  # the oldest API version the manifests target (CronJob timeZone, gRPC probes: GA)


def k8s_versions() -> list[str]:
    """1.30 and the newest schema version kubernetes-validate ships: the manifests validate at both."""
    try:
        from kubernetes_validate.utils import latest_version
    except ImportError:
        return [K8S_VERSION]
    return sorted({K8S_VERSION, latest_version()})


def missing(reason: str) -> None:
    """Skip with the reason; under CI=true fail instead (the suite's one rule: tests/conftest.py)."""
    _missing(reason)


def tool(name: str, hint: str) -> str:
    """A command-line tool from PATH or this Python's bin folder (pip-installed ones)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        missing(f"{name} not found ({hint})")
    return found


def kustomize(path: Path) -> list[dict[str, Any]]:
    kubectl = tool("kubectl", "kubectl >= 1.21 renders kustomize v4+; this machine kind ships one in /usr/bin")
    v = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True).stdout
    m = re.search(r"Kustomize Version: v(\d+)", v)
    if not m or int(m.group(1)) < 4:
        missing(f"kubectl's kustomize is older than v4 ({v.strip()!r}); the overlays use `patches`")
    r = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "Warning" not in r.stderr, r.stderr  # no deprecated fields
    return [d for d in yaml.safe_load_all(r.stdout) if d]


@pytest.fixture(scope="session")
def overlay() -> list[dict[str, Any]]:
    return kustomize(OVERLAY)


@pytest.fixture(scope="session")
def base() -> list[dict[str, Any]]:
    return kustomize(DEPLOY / "base")


@pytest.fixture(scope="session")
def kv() -> Any:
    try:
        import kubernetes_validate
    except ImportError:
        missing("kubernetes-validate is not installed (pip install -e '.[test]')")
    return kubernetes_validate


def base_files() -> list[dict[str, Any]]:
    """The base's manifests read as files (what the cadence and RBAC tests compare, without kubectl)."""
    out = []
    for p in sorted((DEPLOY / "base").glob("*.yaml")):
        if p.name != "kustomization.yaml":
            out += [d for d in yaml.safe_load_all(p.read_text()) if d]
    return out


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}
