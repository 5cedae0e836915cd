"""`LatencyTable`: one device's per-op latencies (`latency_tables/data/<device>.json`).

A table is `meta` (device, SoC, threads, runtime and version, benchmark binary and sha256, date,
provenance `measured` | `modeled` | `imported`, the fitted constant overhead, modeling method) plus
`ops` (op key -> mean_ms, std_ms, count, and median_ms / p10_ms where measured). Loading validates it
against `schema/lut.schema.json`; asking for a key the table lacks is an error that names the
missing keys, never a silent zero.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from spnas.errors import InputNotFoundError, TableError
from spnas.files import write_text_atomic

DATA_DIR = Path(__file__).resolve().parent / "data"
SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / "lut.schema.json"
LUT_FORMAT = "spnas.lut/1"


class MissingOpsError(TableError):
    """The table lacks rows an architecture needs."""

    def __init__(self, device: str, missing: list[str]) -> None:
        self.missing = missing
        shown = "\n  ".join(missing[:20]) + (f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else "")
        super().__init__(
            f"latency table '{device}' has no row for {len(missing)} op(s) this architecture needs:\n  {shown}\n"
            f"profile them with `spnas-profile device=... resume=true` (only missing keys are measured)"
        )


@dataclass(frozen=True)
class OpStats:
    """Latency statistics of one op, in milliseconds."""

    mean_ms: float
    std_ms: float
    count: int
    median_ms: float | None = None
    p10_ms: float | None = None

    @property
    def value(self) -> float:
        """The figure predictions use: the 10th percentile where measured (robust to a noisy
        machine's slow episodes), else the median, else the mean (modeled and imported rows)."""
        if self.p10_ms is not None:
            return self.p10_ms
        return self.median_ms if self.median_ms is not None else self.mean_ms

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mean_ms": self.mean_ms, "std_ms": self.std_ms, "count": self.count}
        if self.median_ms is not None:
            d["median_ms"] = self.median_ms
        if self.p10_ms is not None:
            d["p10_ms"] = self.p10_ms
        return d


@lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


class LatencyTable:
    """A device's latency lookup table."""

    def __init__(self, meta: dict[str, Any], ops: dict[str, OpStats], path: Path | None = None) -> None:
        self.meta = dict(meta)
        self.ops = dict(ops)
        self.path = path

    # ------------------------------------------------------------------ identity
    @property
    def device(self) -> str:
        return str(self.meta.get("device", "?"))

    @property
    def provenance(self) -> str:
        return str(self.meta.get("provenance", "?"))

    @property
    def overhead_ms(self) -> float:
        """Fitted constant per-inference overhead added to the sum of op rows."""
        return float(self.meta.get("overhead_ms", 0.0))

    def __contains__(self, key: str) -> bool:
        return key in self.ops

    def __len__(self) -> int:
        return len(self.ops)

    # ------------------------------------------------------------------ lookups
    def require(self, keys: Iterable[str]) -> None:
        """Raise `MissingOpsError` naming every key the table lacks."""
        missing = sorted({k for k in keys if k not in self.ops})
        if missing:
            raise MissingOpsError(self.device, missing)

    def ms(self, key: str) -> float:
        """Latency of one op; a missing key raises (naming it)."""
        try:
            return self.ops[key].value
        except KeyError:
            raise MissingOpsError(self.device, [key]) from None

    def predict(self, arch: Any) -> float:
        """Predicted end-to-end latency (ms) of an `ArchSpec` on this table (its input size as given)."""
        from .predictor import predict_latency_ms

        return predict_latency_ms(arch, self)

    def missing(self, keys: Iterable[str]) -> list[str]:
        """Keys not yet in the table (what a resumed profiling run still has to measure)."""
        return sorted({k for k in keys if k not in self.ops})

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        return {"format": LUT_FORMAT, "meta": self.meta,
                "ops": {k: self.ops[k].to_dict() for k in sorted(self.ops)}}

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Validate and write atomically (temporary name, then rename)."""
        path = Path(path or self.path or DATA_DIR / f"{self.device}.json")
        data = self.to_dict()
        validate_table_dict(data, str(path))
        write_text_atomic(path, json.dumps(data, indent=1) + "\n")
        self.path = path
        return path

    @classmethod
    def from_dict(cls, data: Any, where: str = "<table>") -> "LatencyTable":
        validate_table_dict(data, where)
        ops = {k: OpStats(float(v["mean_ms"]), float(v["std_ms"]), int(v["count"]),
                          float(v["median_ms"]) if "median_ms" in v else None,
                          float(v["p10_ms"]) if "p10_ms" in v else None)
               for k, v in data["ops"].items()}
        return cls(data["meta"], ops)

    @classmethod
    def load(cls, name_or_path: str | os.PathLike) -> "LatencyTable":
        """Load a table by device name (`sd845`, `host`) or path; malformed tables are rejected."""
        path = resolve_table_path(name_or_path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise TableError(f"latency table {path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg}); re-create or "
                             f"re-import it") from None
        t = cls.from_dict(data, str(path))
        t.path = path
        return t


def validate_table_dict(data: Any, where: str = "<table>") -> None:
    """Check a table against the JSON schema; the error names the first offending field."""
    import jsonschema

    try:
        jsonschema.validate(data, _schema())
    except jsonschema.ValidationError as e:
        loc = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise TableError(f"latency table {where} is malformed at {loc}: {e.message}") from None


def table_dirs() -> list[Path]:
    """Where tables are looked up by name: the user's tables (measured or imported), then the shipped ones."""
    from spnas.paths import user_tables_dir

    return [user_tables_dir(), DATA_DIR]


def available_tables() -> list[str]:
    """Device names of every table found by name (user tables and the shipped ones)."""
    return sorted({p.stem for d in table_dirs() if d.is_dir() for p in d.glob("*.json")})


def host_table_name() -> str | None:
    """A table measured on a host CPU (`host-<cpu>.json`), if any."""
    hosts = [n for n in available_tables() if n.startswith("host-")]
    return hosts[0] if hosts else None


def resolve_table_path(name_or_path: str | os.PathLike) -> Path:
    """`sd845` -> its file (user tables first, then shipped); `host` -> a host-<cpu> table; a path stays a path."""
    s = str(name_or_path)
    p = Path(s).expanduser()
    if p.suffix == ".json" or os.sep in s:
        if not p.is_file():
            raise InputNotFoundError(f"latency table {p} does not exist")
        return p
    if s == "host":
        h = host_table_name()
        if h is None:
            raise InputNotFoundError("no host table found; measure this CPU with `spnas-profile` (writes "
                                     "<SPNAS_HOME>/tables/host-<cpu>.json)")
        s = h
    for d in table_dirs():
        p = d / f"{s}.json"
        if p.is_file():
            return p
    raise InputNotFoundError(
        f"no latency table named '{s}' in {' or '.join(str(d) for d in table_dirs())} "
        f"(available: {', '.join(available_tables()) or 'none'})")
