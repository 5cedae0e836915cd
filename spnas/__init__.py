"""spnas: hardware-aware Single-Path NAS for phones, as a Python API.

    import spnas
    cfg = spnas.compose("search", ["soc=sd808", "data=folder", "data.root=~/photos", "search.steps=600"])
    result = spnas.search(cfg)                    # -> SearchResult (arch, predicted latency, accuracy)
    table = spnas.load_table("sd845")
    table.predict(result.arch)                    # ms on the Snapdragon 845 table

Names are imported on first use, so `import spnas` is cheap. This package is the top floor (the API,
and `spnas.app`: the commands); the layers below never import it, and the neutral ground floor they
share (errors, files, paths, images, config helpers, statistics) is `spnas_core`.
See docs/api.md.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ._version import __version__

_API = {
    # configuration
    "compose": "spnas.api", "Config": "spnas.api",
    # architectures and tables
    "ArchSpec": "search_spaces", "SearchSpace": "search_spaces", "reference": "search_spaces",
    "load_table": "spnas.api", "LatencyTable": "latency_tables.lookup.table",
    # data, search, training, export, photo search
    "load_data": "spnas.api", "search": "spnas.api", "SearchResult": "spnas.api", "train": "spnas.api",
    "TrainResult": "spnas.api", "export": "spnas.api", "ExportResult": "spnas.api",
    "evaluate_retrieval": "spnas.api", "PhotoIndex": "spnas.api", "open_photo_index": "spnas.api",
    # errors
    "SpnasError": "spnas_core.errors", "ConfigError": "spnas_core.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'spnas' has no attribute '{name}'")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from latency_tables.lookup.table import LatencyTable
    from search_spaces import ArchSpec, SearchSpace, reference
    from spnas_core.errors import ConfigError, SpnasError

    from .api import (
        Config,
        ExportResult,
        PhotoIndex,
        SearchResult,
        TrainResult,
        compose,
        evaluate_retrieval,
        export,
        load_data,
        load_table,
        open_photo_index,
        search,
        train,
    )
