"""The package version (one place: pyproject.toml; read from the installed metadata)."""

from __future__ import annotations

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("spnas")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
