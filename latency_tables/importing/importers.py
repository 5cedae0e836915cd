"""Importers for latency tables published by other projects; an import reproduces its source's predictions.

- **Single-Path NAS runtime model** (JSON, `enyac-group/single-path-nas` `pixel1_runtime_model.json`):
  ``{"<layer>": {"0": .., "1": .., "2": .., "3": ..}}`` with one row per MBConv block of the
  paper's MnasNet-like space (22 blocks; the first and last are fixed, index order k3e3, k3e6, k5e3,
  k5e6). The official model (`singlepath_supernet.py`, `superkernel.py`) predicts
  ``19.5999 ms + sum over the 20 searchable layers of R(choice)``, with a skipped layer at 0 and
  k3e3 estimated as ``R(k5e3) * R(k3e6) / R(k5e6)`` (the superkernel's 3x3 ratio applied to the
  3-expansion half), never the measured index 0. The import keeps one row per layer (`-block:<i>`
  keys: layers with the same shape keep their own figures) and the fixed part as one group row, so
  a network of the space predicts exactly what the official code computes. `k3e3="measured"` uses
  the file's index-0 figures instead.
- **OFA / ProxylessNAS** (YAML, `han-cai/files`): ``<op key>: {count, mean, std | var}``. The
  flavour is read from the keys: OFA MobileNetV3 tables carry `se:`/`hs:` fields, and their stem
  (`Conv`), final expand (`Conv_1`) and feature mix (`Conv_2`) use h-swish; ProxylessNAS tables use
  ReLU6 and a `Logits` row over the last feature map (pooling + FC), imported as one group row.
  `expand` is the ratio in ProxylessNAS tables and the expanded channel count in OFA's; the
  meaning is inferred from the rows, and required when the rows allow both.

Parsing is strict: a truncated or malformed file is an error naming the file and line (or layer);
the format is read from the content; nothing is returned (or written) on error.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from pathlib import Path
from typing import Any, Literal

from search_spaces import SearchSpace
from search_spaces.grammar import fmt_float
from spnas_core.errors import InputNotFoundError, OpKeyError, TableError

from latency_tables.importing.completeness import missing_parts
from latency_tables.lookup.costmodel import fc_kernels, pool_kernels
from latency_tables.lookup.keys import ops_of, parse_op_key
from latency_tables.lookup.table import LatencyTable, OpStats

log = logging.getLogger(__name__)

SPNAS_CHOICES = ("k3_e3", "k3_e6", "k5_e3", "k5_e6")  # index "0", "1", "2", "3" of the official files
SPNAS_OFFICIAL_FIXED_MS = 19.5999  # singlepath_supernet.py: "rest of runtime (stem, head, logits, block0, block21)"
# The classifier's share of that fixed part, used only to swap the class count (1000 classes reproduce
# the official figure whatever it is): the Pixel 1 ProxylessNAS table's Logits row (pooling 7x7x1280 +
# FC 1280->1000, 0.3096 ms) apportioned to the FC by the bytes each moves.
SPNAS_CLASSIFIER_MS = 0.295

Format = Literal["spnas", "ofa"]


# ---------------------------------------------------------------------------------- reading
def read_source(path: str | os.PathLike) -> str:
    """The file's text; a missing, empty or undecodable file is an error naming it."""
    p = Path(path)
    if not p.is_file():
        raise InputNotFoundError(f"table to import {p} does not exist")
    try:
        text = p.read_text()
    except UnicodeDecodeError as e:
        raise TableError(f"{p}: not a text file ({e.reason} at byte {e.start})") from None
    if not text.strip():
        raise TableError(f"{p} is empty")
    return text


def detect_format(text: str, path: str | os.PathLike = "<table>") -> Format:
    """`spnas` for a Single-Path NAS runtime JSON, `ofa` for an OFA / ProxylessNAS YAML, from the content."""
    head = text.lstrip()
    if head.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            if re.search(r"-input:\d", text[:2000]):
                return "ofa"  # a YAML flow mapping of op keys
            raise TableError(f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg}); the file looks truncated "
                             f"or edited: re-download it") from None
        if isinstance(data, dict) and data and any("-input:" in str(k) for k in data):
            return "ofa"
        if isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values()):
            return "spnas"  # layer -> {choice -> ms}; its keys are checked (0..N-1) by the importer
        raise TableError(f"{path}: a JSON object, but neither a Single-Path NAS runtime model (layer index -> "
                         f"choice index -> ms) nor an OFA/ProxylessNAS table (op key -> stats)")
    if re.search(r"^\s*['\"]?(expanded_conv|Conv|Conv_1|Conv_2|AvgPool2D|Logits)-input:", text, re.M):
        return "ofa"
    raise TableError(f"{path}: neither a Single-Path NAS runtime JSON nor an OFA/ProxylessNAS YAML table "
                     f"(no op keys like 'expanded_conv-input:...' found)")


def check_format(path: str | os.PathLike, text: str, requested: str | None, *, warn: bool = True) -> Format:
    """The content's format; a requested format that disagrees is an error, a file extension that
    disagrees a warning (`warn=False` for a caller whose importer checks the file again: one warning)."""
    found = detect_format(text, path)
    names = {"spnas": "a Single-Path NAS runtime JSON", "ofa": "an OFA/ProxylessNAS YAML table"}
    if requested and requested != "auto" and requested != found:
        raise TableError(f"{path} is {names[found]}, but source.format={requested} was given; drop source.format "
                         f"(the format is read from the content) or pass source.format={found}")
    suffix = Path(path).suffix.lower()
    expected = {".json": "spnas", ".yaml": "ofa", ".yml": "ofa"}.get(suffix)
    if expected and expected != found and warn:
        log.warning("%s: the name says %s but the content is %s; importing it as the content says",
                    path, names[expected], names[found])
    return found


# ---------------------------------------------------------------------------------- Single-Path NAS
def import_spnas_json(path: str | os.PathLike, space: SearchSpace, resolution: int = 224, num_classes: int = 1000,
                      device: str = "spnas-import", k3e3: Literal["estimate", "measured"] = "estimate",
                      fixed_ms: float | None = None, classifier_ms: float = SPNAS_CLASSIFIER_MS) -> LatencyTable:
    """The runtime model of a Single-Path NAS JSON over `space`'s searchable layers, per layer.

    A file with `space.num_layers + 2` rows is the official form (its first and last rows are the
    fixed blocks, inside the fixed part: `fixed_ms`, by default the official 19.5999 ms); one with
    `space.num_layers` rows has searchable layers only (a fixed part only if `fixed_ms` is given).
    """
    rows = _spnas_rows(path)
    n = len(rows)
    if n == space.num_layers + 2:
        fixed_rows, searchable = [0, n - 1], rows[1:-1]
        fixed_ms = SPNAS_OFFICIAL_FIXED_MS if fixed_ms is None else fixed_ms
    elif n == space.num_layers:
        fixed_rows, searchable = [], rows
    else:
        raise TableError(f"{path} has {n} layers, but space '{space.name}' has {space.num_layers} searchable "
                         f"layers ({space.num_layers + 2} with its fixed first and last blocks); the file belongs to "
                         f"another space (the official Pixel 1 file is space=spnas_mnasnet)")
    ops = _spnas_layer_ops(space, searchable, resolution, num_classes, k3e3)
    meta = _meta(device, f"Single-Path NAS runtime model {Path(path).name}", [resolution])
    meta["per_block_rows"] = True
    meta["space"] = space.name
    meta["method"].update({
        "format": "spnas", "k3e3": k3e3,
        "k3e3_rule": "R(k5e3) * R(k3e6) / R(k5e6) (official superkernel)" if k3e3 == "estimate"
        else "the file's measured index-0 row",
        "skip_ms": 0.0,
        "layers_in_file": n,
        "unused_fixed_block_rows": {str(i): rows[i] for i in fixed_rows},
    })
    if fixed_ms is not None:
        meta["groups"] = [_spnas_fixed_group(space, resolution, num_classes, fixed_ms, classifier_ms)]
    meta["complete"] = fixed_ms is not None
    return LatencyTable(meta, ops)


def _spnas_rows(path: str | os.PathLike) -> list[list[float]]:
    """The file's rows in layer order, each [k3e3, k3e6, k5e3, k5e6] in ms; any gap or odd value is an error."""
    text = read_source(path)
    check_format(path, text, "spnas")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise TableError(f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict) or not data:
        raise TableError(f"{path}: expected an object of layer index -> {{choice index -> ms}}")
    n = len(data)
    want = {str(i) for i in range(n)}
    if set(data) != want:
        odd = sorted(set(data) - want, key=str)
        gone = sorted(want - set(data), key=int)
        raise TableError(f"{path}: layer keys must be 0..{n - 1}; unexpected {odd}, missing {gone} (a renamed or "
                         f"dropped layer would shift every following row)")
    return [_spnas_row(path, i, data[str(i)]) for i in range(n)]


def _spnas_row(path: str | os.PathLike, i: int, row: Any) -> list[float]:
    if not isinstance(row, dict):
        raise TableError(f"{path}: layer {i}: expected {{\"0\": ms, ..., \"3\": ms}}, got {type(row).__name__}")
    missing = [c for c in ("0", "1", "2", "3") if c not in row]
    if missing:
        raise TableError(f"{path}: layer {i} lacks choice(s) {missing} (0 k3e3, 1 k3e6, 2 k5e3, 3 k5e6)")
    extra = sorted(set(row) - {"0", "1", "2", "3"})
    if extra:
        raise TableError(f"{path}: layer {i} has unknown choice(s) {extra}; the format has 0..3")
    vals = []
    for c in ("0", "1", "2", "3"):
        v = row[c]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise TableError(f"{path}: layer {i} choice {c}: {v!r} is not a latency in ms (a positive number)")
        vals.append(float(v))
    return vals


def _spnas_layer_ops(space: SearchSpace, searchable: list[list[float]], resolution: int, num_classes: int,
                     k3e3: str) -> dict[str, OpStats]:
    """One row per (layer, choice), keyed `<op key>-block:<i>` so layers of the same shape keep their own figures."""
    ops: dict[str, OpStats] = {}
    keys_by_choice = {c: {op.block_index: op.key for op in ops_of(space.decode([c] * space.num_layers, resolution,
                                                                               1.0, num_classes))}
                      for c in SPNAS_CHOICES}
    for slot, r in zip(space.slots, searchable):
        est = r[2] * r[1] / r[3]
        values = {"k3_e3": est if k3e3 == "estimate" else r[0], "k3_e6": r[1], "k5_e3": r[2], "k5_e6": r[3]}
        for choice in SPNAS_CHOICES:
            if choice in slot.choices:
                ops[f"{keys_by_choice[choice][slot.block_index]}-block:{slot.block_index}"] = OpStats(values[choice],
                                                                                                     0.0, 1)
    return ops


def _spnas_fixed_group(space: SearchSpace, resolution: int, num_classes: int, fixed_ms: float,
                       classifier_ms: float) -> dict[str, Any]:
    """The fixed part (stem, first and last blocks, head, classifier) as one group row, its classifier share
    rescaled for another class count."""
    arch = space.decode([SPNAS_CHOICES[0]] * space.num_layers, resolution, 1.0, num_classes)
    slot_blocks = {s.block_index for s in space.slots}
    fixed_ops = [op for op in ops_of(arch) if op.block_index not in slot_blocks]
    cls = [op.key for op in fixed_ops if op.block_index == -1]
    return {"name": "Single-Path NAS fixed part (stem, first and last blocks, head, classifier)",
            "keys": [op.key for op in fixed_ops if op.block_index != -1],
            "classifier": {"key": cls[0], "ms": classifier_ms},
            "ms": float(fixed_ms), "std_ms": 0.0, "source": f"official runtime model constant {fixed_ms} ms"}


# ---------------------------------------------------------------------------------- OFA / ProxylessNAS
def import_ofa_yaml(path: str | os.PathLike, expand: Literal["auto", "ratio", "channels"] = "auto",
                    device: str = "ofa-import", stem_kernel: int = 3, head_kernel: int = 1,
                    allow_partial: bool = False) -> LatencyTable:
    """Rows from an OFA / ProxylessNAS YAML table, re-keyed to spnas op keys (see the module docstring).

    A table that does not price a whole network (cut short at a row boundary, or trimmed by hand) is
    an error naming what is missing (`latency_tables.importing.completeness`); `allow_partial=True` imports the
    rows that are there, lists what is missing in `meta.missing` and says so."""
    text = read_source(path)
    check_format(path, text, "ofa")
    entries = _strict_yaml_rows(path, text)
    flavour = "ofa-mbv3" if any(k.startswith("expanded_conv") and "-se:" in k for k, *_ in entries) else "proxylessnas"
    meaning = _expand_meaning(path, entries, expand)
    missing = missing_parts([k for k, *_ in entries], meaning)
    if missing and not allow_partial:
        raise TableError(f"{path}: {len(entries)} rows that do not make a whole table: {'; '.join(missing)}. The file "
                         f"looks cut short (re-download it), or pass source.allow_partial=true to import only these "
                         f"rows (networks that need the missing ones cannot be predicted)")
    if missing:
        log.warning("%s: importing a partial table (source.allow_partial=true): %s", path, "; ".join(missing))
    hs_fixed = 1 if flavour == "ofa-mbv3" else 0
    ops: dict[str, OpStats] = {}
    origin: dict[str, str] = {}
    groups: list[dict[str, Any]] = []
    skipped: list[str] = []
    for key, line, stats in entries:
        f = parse_op_key(key)  # already checked
        op = f["op"]
        if op == "Logits" and _spatial(f["input"]):
            groups.append(_pool_logits_group(key, f, stats, line, Path(path).name))
            continue
        try:
            new_key = _rekey(f, meaning, stem_kernel, head_kernel, hs_fixed)
        except OpKeyError:
            skipped.append(key)
            continue
        if new_key in ops:
            raise TableError(f"{path}:{line}: '{key}' and '{origin[new_key]}' both become '{new_key}'")
        ops[new_key] = stats
        origin[new_key] = key
    if skipped:
        log.warning("%s: %d row(s) with no spnas equivalent left out (first: %s)", path, len(skipped), skipped[0])
    if not ops and not groups:
        raise TableError(f"{path}: no row has an spnas equivalent")
    meta = _meta(device, f"{'Once-for-All MobileNetV3' if flavour == 'ofa-mbv3' else 'ProxylessNAS'} YAML "
                         f"{Path(path).name}", sorted({_input_res(k) for k in ops if k.startswith("Conv-")}))
    meta["method"].update({"format": "ofa", "flavour": flavour, "expand": meaning,
                           "stem_head_activation": "h-swish (hs:1)" if hs_fixed else "ReLU6 (hs:0)"})
    meta["skipped_rows"] = skipped
    meta["complete"] = not missing
    meta["missing"] = missing
    if groups:
        meta["groups"] = groups
    return LatencyTable(meta, ops)


def _strict_yaml_rows(path: str | os.PathLike, text: str) -> list[tuple[str, int, OpStats]]:
    """(key, line, stats) per row; any malformed, duplicated or incomplete row is an error with its line."""
    import yaml

    if not text.endswith("\n"):
        last = text.rstrip("\n").splitlines()[-1] if text.strip() else ""
        raise TableError(f"{path}:{len(text.splitlines())}: the file ends inside a line ('{last[-60:]}'): it looks "
                         f"truncated (re-download it); a complete table ends with a newline")
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        raise TableError(f"{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(root, yaml.MappingNode) or not root.value:
        raise TableError(f"{path}: expected a mapping of op key -> {{count, mean, std}}")
    out: list[tuple[str, int, OpStats]] = []
    seen: dict[str, int] = {}
    for knode, vnode in root.value:
        line = knode.start_mark.line + 1
        key = str(knode.value)
        if key in seen:
            raise TableError(f"{path}:{line}: row '{key}' repeats the row of line {seen[key]}")
        seen[key] = line
        try:
            parse_op_key(key)
        except OpKeyError as e:
            raise TableError(f"{path}:{line}: {e}") from None
        if not isinstance(vnode, yaml.MappingNode):
            raise TableError(f"{path}:{line}: row '{key}' must map to {{count, mean, std}}")
        fields: dict[str, tuple[Any, int]] = {}
        for fk, fv in vnode.value:
            fl = fk.start_mark.line + 1
            if not isinstance(fv, yaml.ScalarNode):
                raise TableError(f"{path}:{fl}: row '{key}' field '{fk.value}' is not a number")
            fields[str(fk.value)] = (yaml.safe_load(fv.value) if fv.value else None, fl)
        unknown = sorted(set(fields) - {"count", "mean", "std", "var"})
        if unknown:
            raise TableError(f"{path}:{line}: row '{key}' has unknown field(s) {unknown} (expected count, mean, std "
                             f"or var)")
        for need in ("count", "mean"):
            if need not in fields:
                raise TableError(f"{path}:{line}: row '{key}' has no '{need}'; the file looks truncated or edited")
        if "std" not in fields and "var" not in fields:
            raise TableError(f"{path}:{line}: row '{key}' has neither 'std' nor 'var'; the file looks truncated")
        count, cl = fields["count"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise TableError(f"{path}:{cl}: row '{key}': count {count!r} must be a whole number >= 1")
        mean = _nonneg(path, key, "mean", *fields["mean"])
        std = (_nonneg(path, key, "std", *fields["std"]) if "std" in fields
               else math.sqrt(_nonneg(path, key, "var", *fields["var"])))
        out.append((key, line, OpStats(mean, std, count)))
    return out


def _nonneg(path: Any, key: str, name: str, v: Any, line: int) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)) or v < 0:
        raise TableError(f"{path}:{line}: row '{key}': {name} {v!r} is not a non-negative number")
    return float(v)


def _expand_meaning(path: Any, entries: list[tuple[str, int, OpStats]], requested: str) -> str:
    """`ratio` or `channels` for the rows' `expand:` field: inferred, or checked against `requested`."""
    rows = []
    for key, line, _ in entries:
        if key.startswith("expanded_conv-"):
            f = parse_op_key(key)
            rows.append((key, line, float(f["input"][2]), float(f["expand"])))  # type: ignore[index]
    if not rows:
        return requested if requested != "auto" else "ratio"
    # A ratio is small (MobileNet-style blocks use 1..8); a channel count is a whole number >= the input's.
    ratio_ok = [e <= 8 for _k, _l, _c, e in rows]
    chan_ok = [e >= c and float(e).is_integer() for _k, _l, c, e in rows]
    can_ratio, can_chan = all(ratio_ok), all(chan_ok)
    if requested != "auto":
        ok = can_ratio if requested == "ratio" else can_chan
        if not ok:
            bad = next(r for r, good in zip(rows, ratio_ok if requested == "ratio" else chan_ok) if not good)
            raise TableError(f"{path}:{bad[1]}: source.expand={requested}, but row '{bad[0]}' has expand:{bad[3]:g} "
                             f"with {bad[2]:g} input channels, which is not a {requested[:-1] if requested == 'channels' else requested}; "
                             f"this table's expand is {'the expanded channel count (channels)' if can_chan else 'the ratio'}")
        return requested
    if can_ratio and not can_chan:
        return "ratio"
    if can_chan and not can_ratio:
        return "channels"
    if can_ratio and can_chan:
        raise TableError(f"{path}: every expand value fits both meanings (ratio and expanded channel count); "
                         f"pass source.expand=ratio (ProxylessNAS) or source.expand=channels (OFA MobileNetV3)")
    bad = next(r for r, a, b in zip(rows, ratio_ok, chan_ok) if not (a or b))
    raise TableError(f"{path}:{bad[1]}: row '{bad[0]}': expand:{bad[3]:g} with {bad[2]:g} input channels is "
                     f"neither a ratio nor an expanded channel count")


def _spatial(shape: Any) -> bool:
    return isinstance(shape, tuple) and len(shape) == 3 and (shape[0] > 1 or shape[1] > 1)


def _pool_logits_group(key: str, f: dict[str, Any], stats: OpStats, line: int, fname: str) -> dict[str, Any]:
    """ProxylessNAS's `Logits-input:HxWxC-output:N` (pooling + FC) as one group row; the FC's share (by
    bytes moved) is what a classifier for another class count rescales."""
    h, w, c = f["input"]
    out = f["output"]
    n = out[-1] if isinstance(out, tuple) else int(out)
    pool = sum(k.bytes for k in pool_kernels(h, w, c))
    fc = sum(k.bytes for k in fc_kernels(c, n))
    return {"name": f"pooling + logits ({key})", "keys": [f"AvgPool2D-input:{h}x{w}x{c}"],
            "classifier": {"key": f"Logits-input:1x1x{c}-output:{n}", "ms": stats.mean_ms * fc / (fc + pool)},
            "ms": stats.mean_ms, "std_ms": stats.std_ms, "count": stats.count, "source": f"{fname}:{line} '{key}'"}


def _input_res(key: str) -> int:
    return int(key.split("input:")[1].split("x")[0])


def _rekey(f: dict[str, Any], expand: str, stem_kernel: int, head_kernel: int, hs_fixed: int) -> str:
    op = f["op"]
    if op == "expanded_conv":
        hin, win, cin = f["input"]
        hout, wout, cout = f["output"]
        e = float(f["expand"])
        ratio = round(e / cin if expand == "channels" else e, 2)
        return (f"expanded_conv-input:{hin}x{win}x{cin}-output:{hout}x{wout}x{cout}-expand:{fmt_float(ratio)}"
                f"-kernel:{f['kernel']}-stride:{f['stride']}-idskip:{f.get('idskip', 0)}-se:{f.get('se', 0)}"
                f"-hs:{f.get('hs', 0)}")
    if op in ("Conv", "Conv_1"):
        hin, win, cin = f["input"]
        hout, wout, cout = f["output"]
        k = f.get("kernel", stem_kernel if op == "Conv" else head_kernel)
        s = f.get("stride", max(1, round(hin / hout)))
        return f"{op}-input:{hin}x{win}x{cin}-output:{hout}x{wout}x{cout}-kernel:{k}-stride:{s}-hs:{f.get('hs', hs_fixed)}"
    if op == "AvgPool2D":
        hin, win, cin = f["input"]
        return f"AvgPool2D-input:{hin}x{win}x{cin}"
    if op == "Conv_2":
        return f"Conv_2-input:1x1x{f['input'][-1]}-output:1x1x{f['output'][-1]}-hs:{f.get('hs', hs_fixed)}"
    if op == "Logits":
        out = f["output"]
        n = out[-1] if isinstance(out, tuple) else out
        return f"Logits-input:1x1x{f['input'][-1]}-output:{n}"
    raise OpKeyError(f"no spnas equivalent for op '{op}'")


def import_table(path: str | os.PathLike, fmt: str = "auto", **kw: Any) -> LatencyTable:
    """Import either format, read from the content (`fmt` only checks it)."""
    text = read_source(path)
    found = check_format(path, text, fmt, warn=False)  # the importer below warns once
    if found == "spnas":
        return import_spnas_json(path, **kw)
    return import_ofa_yaml(path, **{k: v for k, v in kw.items() if k in ("expand", "device", "allow_partial")})


def _meta(device: str, source: str, resolutions: list[int]) -> dict[str, Any]:
    return {"device": device, "soc": "", "provenance": "imported", "runtime": "imported", "runtime_version": "",
            "threads": 1, "date": time.strftime("%Y-%m-%d"), "overhead_ms": 0.0, "complete": False,
            "resolutions": [r for r in resolutions if r], "method": {"source": source}}
