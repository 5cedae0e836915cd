"""`LatencyTable`: one device's per-op latencies (`latency_tables/data/<device>.json`).

A table is `meta` (device, SoC, threads, runtime and version, benchmark binary and sha256, date,
provenance `measured` | `modeled` | `imported`, the fitted constant overhead, modeling method) plus
`ops` (op key -> mean_ms, std_ms, count, and median_ms / p10_ms where measured). Loading validates it
against `schema/lut.schema.json`; asking for a key the table lacks is an error that names the
missing keys, never a silent zero.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Sequence

from search_spaces.counts import layer_params_macs
from spnas_core.errors import InputNotFoundError, OpKeyError, TableError, TableNotFoundError
from spnas_core.files import write_text_atomic

from latency_tables.lookup.keys import layer_of_key, ops_of

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schema" / "lut.schema.json"
LUT_FORMAT = "spnas.lut/1"

log = logging.getLogger(__name__)


class MissingOpsError(TableError):
    """The table lacks rows an architecture needs (and cannot derive them)."""

    def __init__(self, device: str, missing: list[str], how: str = "") -> None:
        self.missing = missing
        shown = "\n  ".join(missing[:20]) + (f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else "")
        how = how or ("profile them with `spnas-profile device=... table_name=" + device +
                      " resume=true` (only missing keys are measured)")
        super().__init__(
            f"latency table '{device}' has no row for {len(missing)} op(s) this architecture needs:\n  {shown}\n{how}"
        )


@dataclass(frozen=True)
class CostRow:
    """One term of a prediction: which block (-1: classifier; None: a group of blocks), the key, ms, and
    where the figure comes from: `table` (a row), `model` (a modeled table's model, on demand),
    `estimate` (a documented estimate, e.g. another class count) or `group` (one measured figure for
    several ops, e.g. the Single-Path NAS fixed part or ProxylessNAS's pooling + logits row)."""

    block_index: int | None
    key: str
    ms: float
    source: str = "table"
    note: str = ""


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
        """The figure predictions use: `mean_ms`, which holds the table's statistic (`meta.statistic`:
        for measured tables the fastest run's mean, the same on this CPU and on a phone; median and
        p10 of single invocations are informational)."""
        return self.mean_ms

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
    """A device's latency lookup table.

    Rows are looked up by op key. Beyond its rows a table answers:
    - a *modeled* table (its `meta.method` carries a device model): any op the model can express,
      computed on demand and recorded in `derived` (source `model`);
    - any table: a classifier (`Logits`) for a class count it lacks, from its own Logits row of the
      same input width scaled by the GEMV's bytes (weights dominate a batch-1 GEMV; source `estimate`);
    - `meta.groups`: one figure for several ops together (a published table's fused rows);
    - `meta.per_block_rows`: rows keyed `<key>-block:<i>` that hold a per-position figure (a
      Single-Path NAS runtime model keeps one figure per layer even where layers share a shape).
    """

    def __init__(self, meta: dict[str, Any], ops: dict[str, OpStats], path: Path | None = None) -> None:
        self.meta = dict(meta)
        self.ops = dict(ops)
        self.path = path
        self.derived: dict[str, tuple[float, str]] = {}  # key -> (ms, how) for rows not in `ops`
        self._model: Any = None
        self._model_loaded = False

    # ------------------------------------------------------------------ identity
    @property
    def device(self) -> str:
        return str(self.meta.get("device", "?"))

    @property
    def provenance(self) -> str:
        return str(self.meta.get("provenance", "?"))

    @property
    def unit(self) -> str:
        """What a row and a prediction count: "ms" for every device table, "MFLOPs" for the `flops` table."""
        return str(self.meta.get("unit", "ms"))

    @property
    def overhead_ms(self) -> float:
        """Fitted constant per-inference overhead added to the sum of op rows."""
        return float(self.meta.get("overhead_ms", 0.0))

    @property
    def row_scale(self) -> float:
        """Fitted factor from an op timed alone to the same op inside a whole network (measured tables:
        a micro-model runs with its weights and activations hot in cache and pays one invocation of its
        own; `predictor.fit_calibration`); 1 where none was fitted."""
        return float(self.meta.get("row_scale", 1.0))

    @property
    def model(self) -> Any:
        """The `costmodel.DeviceModel` of a modeled table (None otherwise)."""
        if not self._model_loaded:
            from latency_tables.lookup.costmodel import DeviceModel

            method = self.meta.get("method") or {}
            self._model = DeviceModel.from_dict(method["model"]) if isinstance(method, dict) and \
                isinstance(method.get("model"), dict) else None
            self._model_loaded = True
        return self._model

    def __contains__(self, key: str) -> bool:
        return key in self.ops

    def __len__(self) -> int:
        return len(self.ops)

    # ------------------------------------------------------------------ lookups
    def answerable(self, key: str) -> bool:
        """Whether `ms(key)` returns a figure (a row, the model, or a class-count estimate)."""
        if key in self.ops or key in self.derived:
            return True
        try:
            self._derive(key)
            return True
        except MissingOpsError:
            return False

    def require(self, keys: Iterable[str]) -> None:
        """Raise `MissingOpsError` naming every key the table can neither look up nor derive."""
        missing = sorted({k for k in keys if not self.answerable(k)})
        if missing:
            raise MissingOpsError(self.device, missing, self.how_to_fill(missing))

    def ms(self, key: str) -> float:
        """Latency of one op in a network: its row (times `row_scale`), else (modeled tables, classifiers)
        a derived figure; else raise."""
        return self.raw_ms(key) * self.row_scale

    def raw_ms(self, key: str) -> float:
        """The op's figure as measured, modeled or estimated (before `row_scale`)."""
        row = self.ops.get(key)
        if row is not None:
            return row.value
        if key in self.derived:
            return self.derived[key][0]
        return self._derive(key)

    def source_of(self, key: str) -> str:
        """`table`, `model` or `estimate` (after `ms(key)`)."""
        if key in self.ops:
            return "table"
        return self.derived[key][1].split(":", 1)[0] if key in self.derived else "missing"

    def _derive(self, key: str) -> float:
        model = self.model
        if model is not None:
            try:
                v = model.op_ms(key)
            except (OpKeyError, TableError):
                raise MissingOpsError(self.device, [key], "this key is not an op the model can express") from None
            self.derived[key] = (v, "model: computed from the table's device model")
            return v
        if key.startswith("Logits-"):
            est = self._estimate_logits(key)
            if est is not None:
                v, ref = est
                self.derived[key] = (v, f"estimate: the table's {ref} scaled by GEMV bytes")
                return v
        raise MissingOpsError(self.device, [key], self.how_to_fill([key]))

    def _estimate_logits(self, key: str) -> tuple[float, str] | None:
        """A classifier row for another class count: the nearest Logits row (same input width first),
        scaled by the bytes the GEMV moves (weights + input + output)."""
        cin, n = _logits_shape(key)
        if cin is None:
            return None
        refs = [(k, *_logits_shape(k)) for k in self.ops if k.startswith("Logits-") and "-block:" not in k]
        refs = [r for r in refs if r[1] is not None]
        if not refs:
            return None
        refs.sort(key=lambda r: (r[1] != cin, abs(math.log((r[1] * r[2]) / (cin * n)))))  # type: ignore[operator]
        ref, rc, rn = refs[0]
        return self.ops[ref].value * _gemv_bytes(cin, n) / _gemv_bytes(rc, rn), ref  # type: ignore[arg-type]

    def how_to_fill(self, missing: list[str]) -> str:
        """What the user runs to get the missing rows, for this table's kind."""
        classes = sorted({n for k in missing for _c, n in [_logits_shape(k)] if n is not None})
        extra = f" 'num_classes=[1000,{','.join(map(str, classes))}]'" if classes else ""
        if self.provenance == "measured" and str(self.meta.get("runtime", "")).startswith("TFLite benchmark_model"):
            soc = self.meta.get("soc_name") or "<soc>"
            return (f"measure them on the phone: `spnas-profile device=adb soc={soc} profile.serial=<serial> "
                    f"profile.benchmark_binary=<benchmark_model> table_name={self.device} resume=true{extra}`")
        if self.provenance == "measured":
            return (f"measure them on this machine: `spnas-profile table_name={self.device} resume=true{extra}` "
                    f"(only missing keys are measured)")
        if self.provenance == "imported":
            return ("an imported table holds only the ops its source measured (its own space, input size and "
                    "classifier); search its own space at its input size, or merge measured rows into it")
        return "profile them with `spnas-profile device=... resume=true` (only missing keys are measured)"

    # ------------------------------------------------------------------ predictions
    def cost_rows(self, ops: Sequence[Any]) -> list[CostRow]:
        """The terms of a prediction for `keys.ArchOp`s (block index + key), in network order.

        Groups replace the ops they cover when all of them are present; per-block rows take
        precedence over shape rows. Missing ops raise `MissingOpsError` naming all of them.
        """
        ops = list(ops)
        rows: list[CostRow | None] = [None] * len(ops)
        covered: set[int] = set()
        for g in self.meta.get("groups") or []:
            hit = _match_group(g, ops, covered)
            if hit is None:
                continue
            idx, ms, note = hit
            covered.update(idx)
            rows[idx[0]] = CostRow(None, g.get("name") or " + ".join(ops[i].key for i in idx), ms, "group", note)
        per_block = bool(self.meta.get("per_block_rows"))
        missing: list[str] = []
        for i, op in enumerate(ops):
            if i in covered:
                continue
            key = op.key
            if per_block and op.block_index is not None and op.block_index >= 0:
                pk = f"{op.key}-block:{op.block_index}"
                if pk in self.ops:
                    key = pk
            if not self.answerable(key):
                missing.append(key)
                continue
            ms = self.ms(key)
            rows[i] = CostRow(op.block_index, key, ms, self.source_of(key),
                              self.derived[key][1] if key in self.derived else "")
        if missing:
            groups = self.meta.get("groups") or []
            hint = self.how_to_fill(missing)
            if groups:
                hint += ("; this table's group rows (" + ", ".join(str(g.get("name", "group")) for g in groups) +
                         ") count only when every op they cover is in the network")
            raise MissingOpsError(self.device, sorted(set(missing)), hint)
        return [r for r in rows if r is not None]

    def predict(self, arch: Any) -> float:
        """Predicted end-to-end latency (ms) of an `ArchSpec` on this table (its input size as given): the
        sum of its cost rows (times the row scale) plus the fitted overhead.

        Rows a table lacks but can derive (a modeled table's model, a classifier for another class
        count) are computed and marked in `derived`; anything else raises `MissingOpsError`."""
        return sum(r.ms for r in self.cost_rows(ops_of(arch))) + self.overhead_ms

    def missing(self, keys: Iterable[str]) -> list[str]:
        """Keys with no row yet (what a resumed profiling run still has to measure)."""
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
        """Load a table by device name (`sd845`, `host`, `flops` for multiply-adds) or path; malformed tables are
        rejected."""
        if str(name_or_path) == "flops":
            return MacsTable()
        path = resolve_table_path(name_or_path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise TableError(f"latency table {path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg}); re-create or "
                             f"re-import it") from None
        t = cls.from_dict(data, str(path))
        t.path = path
        return t


def _logits_shape(key: str) -> tuple[int | None, int | None]:
    """(input width, classes) of a `Logits-input:1x1x<c>-output:<n>` key; (None, None) otherwise."""
    if not key.startswith("Logits-input:"):
        return None, None
    try:
        shape, out = key[len("Logits-input:"):].split("-output:")
        return int(shape.split("x")[-1]), int(out.split("-")[0])
    except ValueError:
        return None, None


def _gemv_bytes(cin: int, n: int) -> float:
    return float(cin * n + cin + n)


def _match_group(group: dict[str, Any], ops: Sequence[Any], taken: set[int]) -> tuple[list[int], float, str] | None:
    """Indices of `ops` a group covers (all its keys present, not yet covered) and its figure.

    A group may name a `classifier` member ({key, ms}): an arch whose classifier has the same input
    width but another class count still matches, with that member's share rescaled by GEMV bytes."""
    keys = list(group.get("keys") or [])
    cls = group.get("classifier") or None
    idx: list[int] = []
    for k in keys:
        i = next((j for j, op in enumerate(ops) if op.key == k and j not in taken and j not in idx), None)
        if i is None:
            return None
        idx.append(i)
    ms = float(group["ms"])
    note = str(group.get("source", ""))
    if cls:
        cin, n0 = _logits_shape(cls["key"])
        j = next((j for j, op in enumerate(ops) if j not in taken and j not in idx and op.key.startswith("Logits-")
                  and _logits_shape(op.key)[0] == cin), None)
        if j is None:
            return None
        _c, n = _logits_shape(ops[j].key)
        if n != n0:
            share = float(cls["ms"])
            ms = ms - share + share * _gemv_bytes(cin, n) / _gemv_bytes(cin, n0)  # type: ignore[arg-type]
            note += f"; classifier share rescaled from {n0} to {n} classes by GEMV bytes"
        idx.append(j)
    return sorted(idx), ms, note


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
    from spnas_core.paths import user_tables_dir

    return [user_tables_dir(), DATA_DIR]


def available_tables() -> list[str]:
    """Device names of every table found by name (user tables and the shipped ones)."""
    return sorted({p.stem for d in table_dirs() if d.is_dir() for p in d.glob("*.json")})


_REPORTED: set[tuple[str, int, int]] = set()  # (path, size, mtime) of malformed tables already reported


def usable_tables() -> dict[str, "LatencyTable"]:
    """Every table found by name that loads (name -> table). A malformed file is left out and reported
    once per process (per file version), with the commands that fix or remove it: a broken file in
    `<SPNAS_HOME>/tables` must not warn at every stage nor land as an error entry in every manifest."""
    out: dict[str, LatencyTable] = {}
    for name in available_tables():
        try:
            out[name] = LatencyTable.load(name)
        except (TableError, OSError) as e:
            p = resolve_table_path(name)
            st = p.stat()
            if (str(p), st.st_size, st.st_mtime_ns) not in _REPORTED:
                _REPORTED.add((str(p), st.st_size, st.st_mtime_ns))
                log.warning("%s; it is left out of every prediction until it is fixed: re-measure it "
                            "(`spnas-profile table_name=%s force=true`), re-import it (`spnas-profile import "
                            "source.path=<the original file>`), or remove it (`rm %s`)",
                            str(e).splitlines()[0], name, p)
    return out


class HostTableMismatch(TableError):
    """No table measured on this machine: `host` would otherwise mean another machine's costs."""

    def __init__(self, message: str, here: Any, candidates: list[tuple[str, Any]]) -> None:
        super().__init__(message)
        self.here = here
        self.candidates = candidates


def host_tables() -> list[tuple[str, dict[str, Any]]]:
    """(name, meta) of every `host-*` table found by name (user tables first)."""
    out = []
    seen = set()
    for d in table_dirs():
        for p in sorted(d.glob("host-*.json")) if d.is_dir() else []:
            if p.stem in seen:
                continue
            seen.add(p.stem)
            try:
                meta = json.loads(p.read_text()).get("meta", {})
            except (OSError, json.JSONDecodeError, AttributeError):
                continue
            out.append((p.stem, meta))
    return out


def host_table_name(threads: int | None = None) -> str | None:
    """The host table whose fingerprint matches this machine (and `threads`, when given), if any."""
    from latency_tables.lookup.fingerprint import machine_fingerprint, table_fingerprint

    for name, meta in host_tables():
        fp = table_fingerprint(meta)
        if fp is None or (threads is not None and fp.threads != threads):
            continue
        if not fp.differences(machine_fingerprint(fp.threads)):
            return name
    return None


def host_mismatch(threads: int = 1) -> HostTableMismatch:
    """The error for `host` when no table matches: both fingerprints and how to measure this machine."""
    from latency_tables.lookup.fingerprint import host_slug, machine_fingerprint, table_fingerprint

    here = machine_fingerprint(threads)
    cands = [(n, table_fingerprint(m)) for n, m in host_tables()]
    lines = [f"no latency table was measured on this machine: {here.describe()}"]
    for n, fp in cands:
        if fp is None:
            lines.append(f"  {n}: measured before tables carried a fingerprint (CPU '{_meta_cpu(n)}'); not used")
        else:
            lines.append(f"  {n}: {fp.describe()}; differs in {'; '.join(fp.differences(here)) or 'threads'}")
    lines.append(f"measure this machine with `spnas-profile` (writes <SPNAS_HOME>/tables/{host_slug(here)}.json; "
                 f"resumable with resume=true), or let the run do it: soc.if_no_table=profile; "
                 f"soc.if_no_table=skip leaves the host out (spnas-pipeline: soc_configs.host.if_no_table=...)")
    return HostTableMismatch("\n".join(lines), here, cands)


def _meta_cpu(name: str) -> str:
    for n, m in host_tables():
        if n == name:
            return str(m.get("cpu_model", "?"))
    return "?"


def resolve_table_path(name_or_path: str | os.PathLike) -> Path:
    """`sd845` -> its file (user tables first, then shipped); `host` -> the host table whose fingerprint
    matches this machine (`HostTableMismatch` when none does); a path stays a path."""
    s = str(name_or_path)
    p = Path(s).expanduser()
    if p.suffix == ".json" or os.sep in s:
        if not p.is_file():
            raise TableNotFoundError(f"latency table {p} does not exist; give the path of a table file, or a "
                                     f"table's name (available: {', '.join(available_tables()) or 'none'})")
        return p
    if s == "host":
        h = host_table_name()
        if h is None:
            raise host_mismatch()
        s = h
    for d in table_dirs():
        p = d / f"{s}.json"
        if p.is_file():
            return p
    raise TableNotFoundError(
        f"no latency table named '{s}' in {' or '.join(str(d) for d in table_dirs())} "
        f"(available: {', '.join(available_tables()) or 'none'}); measure one with `spnas-profile`, import one "
        f"with `spnas-profile import source.path=<file>`, or name an available one")


# `flops`: multiply-adds as a cost table (MacsTable says why).
FLOPS_NAME = "flops"
FLOPS_UNIT = "MFLOPs"


class MacsTable(LatencyTable):
    """Every op's multiply-adds (millions), counted from the shape its key names: the `flops` table, for
    searches judged against FLOPs-budgeted ground truth. NAS-Bench-Macro, and most mobile NAS papers, state
    budgets in FLOPs (multiply-adds of convolutions and fully connected layers, `search_spaces.counts`), so
    the search, its controls and every prediction use this count exactly where they would use a device's
    latency (`soc=flops`, `LatencyTable.load("flops")`). Its unit is "MFLOPs", not ms; it has no overhead
    and nothing to measure."""

    def __init__(self) -> None:
        meta: dict[str, Any] = {
            "device": FLOPS_NAME, "soc": "multiply-adds", "provenance": "analytic", "unit": FLOPS_UNIT,
            "method": {"name": "multiply-adds counted from shapes (convolutions and fully connected layers; BN, "
                               "activations, pooling and adds free), as NAS-Bench-Macro counts FLOPs"},
            "overhead_ms": 0.0,
        }
        super().__init__(meta, {})

    def _derive(self, key: str) -> float:
        try:
            layer = layer_of_key(key)
        except OpKeyError:
            raise MissingOpsError(self.device, [key], "this key is not an op whose multiply-adds can be counted") \
                from None
        v = layer_params_macs(layer)[1] / 1e6
        self.derived[key] = (v, "model: multiply-adds counted from the key's shape")
        return v

    def how_to_fill(self, missing: list[str]) -> str:
        return "the flops table counts multiply-adds of the op keys spnas writes; these keys are not among them"

    def save(self, path: Any = None) -> Any:  # nothing measured: never written
        raise OpKeyError("the flops table is computed, not stored")
