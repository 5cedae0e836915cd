"""Where spnas keeps what it makes outside a run folder: unpacked data sets, caches, user tables.

Nothing is written into the installed package, so a non-editable `pip install .` works:

- `$SPNAS_HOME` (default `$XDG_DATA_HOME/spnas`, i.e. `~/.local/share/spnas`): its `data/` holds
  unpacked data sets, `tables/` latency tables you measure or import, `cache/` decoded data and
  converted micro-models. `make` points it at `.spnas/` in the checkout.
- `$SPNAS_DATA` overrides the data folder alone, `$SPNAS_SHARED` the folder with the shared
  archives (default `../shared` beside the current folder or the checkout).
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "SPNAS_HOME"
DATA_ENV = "SPNAS_DATA"
SHARED_ENV = "SPNAS_SHARED"


def spnas_home() -> Path:
    """The user data folder (`$SPNAS_HOME`, else `$XDG_DATA_HOME/spnas`, else ~/.local/share/spnas)."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser().resolve()
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return (Path(xdg).expanduser() / "spnas").resolve()


def data_root() -> Path:
    """Where data set archives are unpacked (`$SPNAS_DATA`, else `<home>/data`)."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser().resolve()
    return spnas_home() / "data"


def cache_root() -> Path:
    """Decoded-data and micro-model caches (`<home>/cache`)."""
    return spnas_home() / "cache"


def user_tables_dir() -> Path:
    """Latency tables measured or imported by the user (`<home>/tables`); searched before shipped ones."""
    return spnas_home() / "tables"


def shared_dir() -> Path:
    """The folder with the shared data archives (`$SPNAS_SHARED`, else the first `../shared` found
    beside the current folder or the source checkout)."""
    if os.environ.get(SHARED_ENV):
        return Path(os.environ[SHARED_ENV]).expanduser().resolve()
    for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
        cand = (base / ".." / "shared").resolve()
        if (cand / "datasets").is_dir():
            return cand
    return (Path.cwd() / ".." / "shared").resolve()
