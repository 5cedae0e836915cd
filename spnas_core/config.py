"""Config helpers every layer's typed config uses: fields with help texts, range checks, "did you
mean", and the plain-data view of a config (enums by name) that stage keys and summaries hash.

The configs themselves live beside their code (`search_spaces/config.py`, `training/config.py`,
`latency_tables/config.py`, `nas/config.py`, `export/config.py`, `retrieval/config.py`); the
command configs that compose them are in each room's `config.py` under `spnas/app/`. This module imports nothing from
the project but the errors.
"""

from __future__ import annotations

import enum
from dataclasses import field, fields, is_dataclass
from typing import Any

from omegaconf import MISSING

from .errors import ConfigError


def opt(default: Any = MISSING, help: str = "", *, factory: Any = None) -> Any:  # noqa: A002 - field help
    """A dataclass field with a help text (shown by `--help`)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


def did_you_mean(word: str, candidates: Any, n: int = 3) -> str:
    """' (did you mean `x`?)' for the closest candidates, or ''."""
    import difflib

    cands = [str(c) for c in candidates]
    close = difflib.get_close_matches(word, cands, n=n, cutoff=0.6)
    if not close:
        tail = word.rsplit(".", 1)[-1]
        close = [c for c in cands if tail and (c.endswith("." + tail) or c.endswith("_" + tail) or tail in c)][:n]
    if not close:
        return ""
    return " (did you mean " + " or ".join(f"`{c}`" for c in close) + "?)"


def check_range(key: str, v: float, lo: float, hi: float, hint: str = "") -> None:
    if not lo <= v <= hi:
        raise ConfigError(f"{key}={v}: must be between {lo} and {hi}" + (f" ({hint})" if hint else ""))


def field_help(cls: type, name: str) -> str:
    """The help text of a dataclass field ('' if none)."""
    for f in fields(cls):
        if f.name == name:
            return str(f.metadata.get("help", ""))
    return ""


def to_plain(obj: Any) -> Any:
    """A typed config as plain JSON-able data (enums by name), e.g. for stage hashes and summaries."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in fields(obj) if f.name != "defaults"}
    if isinstance(obj, enum.Enum):
        return obj.name
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj
