"""Importers for latency tables published by other projects.

- Single-Path NAS per-layer runtime JSON: ``{"<layer>": {"0": k3e3 ms, "1": k3e6, "2": k5e3, "3": k5e6}}``
  (the official code's index order), mapped onto a search space's searchable layers.
- OFA / ProxylessNAS YAML tables: ``expanded_conv-input:112x112x24-output:56x56x32-expand:…-kernel:5-
  stride:2-idskip:0[-se:0-hs:0]: {count, mean, std | var}``. ProxylessNAS writes the expansion
  ratio in ``expand``; OFA's MobileNetV3 tables write the expanded (mid) channel count.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Literal

from search_spaces import SearchSpace
from search_spaces.grammar import _fmt_float

from .keys import OpKeyError, ops_of, parse_op_key
from .table import LatencyTable, OpStats
from spnas.errors import TableError

SPNAS_CHOICES = ("k3_e3", "k3_e6", "k5_e3", "k5_e6")  # "0", "1", "2", "3"


def import_spnas_json(path: str | os.PathLike, space: SearchSpace, resolution: int = 224,
                      num_classes: int = 1000, device: str = "spnas-import") -> LatencyTable:
    """Rows for every searchable layer's four choices from a Single-Path NAS runtime JSON.

    Layer i of the file is searchable layer i of `space`; the fixed rows (stem, head, logits) are not
    in that format, so the table is partial (`meta.complete = false`) until merged or profiled.
    """
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict):
        raise TableError(f"{path}: expected an object of layer index -> {{choice index -> ms}}")
    layers = sorted(data, key=lambda s: int(s))
    if len(layers) != space.num_layers:
        raise TableError(f"{path} has {len(layers)} layers but space '{space.name}' has {space.num_layers} "
                         f"searchable layers; the file belongs to another space")
    ops: dict[str, list[float]] = {}
    for li, layer_id in enumerate(layers):
        row = data[layer_id]
        missing = [c for c in ("0", "1", "2", "3") if c not in row]
        if missing:
            raise TableError(f"{path}: layer {layer_id} lacks choice(s) {missing}")
        slot = space.slots[li]
        for idx, choice in enumerate(SPNAS_CHOICES):
            if choice not in slot.choices:
                continue
            choices = [c if j != li else choice for j, c in enumerate(_filler(space))]
            arch = space.decode(choices, resolution, 1.0, num_classes)
            key = next(op.key for op in ops_of(arch) if op.block_index == slot.block_index)
            ops.setdefault(key, []).append(float(row[str(idx)]))
    table_ops = {k: OpStats(sum(v) / len(v), _std(v), len(v)) for k, v in ops.items()}
    meta = _meta(device, f"Single-Path NAS runtime JSON {Path(path).name}", resolution)
    return LatencyTable(meta, table_ops)


def _filler(space: SearchSpace) -> list[str]:
    return [space.choices[0]] * space.num_layers


def _std(v: list[float]) -> float:
    if len(v) < 2:
        return 0.0
    m = sum(v) / len(v)
    return math.sqrt(sum((x - m) ** 2 for x in v) / len(v))


def import_ofa_yaml(path: str | os.PathLike, expand: Literal["ratio", "channels"] = "ratio",
                    device: str = "ofa-import", stem_kernel: int = 3, head_kernel: int = 1,
                    default_hs: int = 0) -> LatencyTable:
    """Rows from an OFA / ProxylessNAS YAML table, re-keyed to spnas op keys.

    `expand="ratio"` for ProxylessNAS tables, `"channels"` for OFA MobileNetV3 tables (mid channels).
    Keys without se/hs get ``se:0`` and ``hs:default_hs``; stem / head keys without kernel and stride
    get them from `stem_kernel` / `head_kernel` and the input/output sizes.
    """
    import yaml

    raw = yaml.safe_load(Path(path).read_text())
    if not isinstance(raw, dict) or not raw:
        raise TableError(f"{path}: expected a mapping of op key -> {{count, mean, std}}")
    ops: dict[str, OpStats] = {}
    skipped: list[str] = []
    for key, stats in raw.items():
        try:
            new_key = _rekey(str(key), expand, stem_kernel, head_kernel, default_hs)
        except OpKeyError:
            skipped.append(str(key))
            continue
        if not isinstance(stats, dict) or "mean" not in stats:
            raise TableError(f"{path}: row '{key}' has no 'mean'")
        std = float(stats["std"]) if "std" in stats else math.sqrt(float(stats.get("var", 0.0)))
        ops[new_key] = OpStats(float(stats["mean"]), std, int(stats.get("count", 1)))
    meta = _meta(device, f"OFA/ProxylessNAS YAML {Path(path).name} (expand as {expand})", None)
    meta["skipped_rows"] = skipped
    return LatencyTable(meta, ops)


def _rekey(key: str, expand: str, stem_kernel: int, head_kernel: int, default_hs: int) -> str:
    f = parse_op_key(key)
    op = f["op"]
    if op == "expanded_conv":
        hin, win, cin = f["input"]  # type: ignore[misc]
        hout, wout, cout = f["output"]  # type: ignore[misc]
        e = float(f["expand"])  # type: ignore[arg-type]
        ratio = e / cin if expand == "channels" else e
        ratio = round(ratio, 2)
        return (f"expanded_conv-input:{hin}x{win}x{cin}-output:{hout}x{wout}x{cout}-expand:{_fmt_float(ratio)}"
                f"-kernel:{f['kernel']}-stride:{f['stride']}-idskip:{f.get('idskip', 0)}-se:{f.get('se', 0)}"
                f"-hs:{f.get('hs', default_hs)}")
    if op in ("Conv", "Conv_1"):
        hin, win, cin = f["input"]  # type: ignore[misc]
        hout, wout, cout = f["output"]  # type: ignore[misc]
        k = f.get("kernel", stem_kernel if op == "Conv" else head_kernel)
        s = f.get("stride", max(1, round(hin / hout)))
        return (f"{op}-input:{hin}x{win}x{cin}-output:{hout}x{wout}x{cout}-kernel:{k}-stride:{s}"
                f"-hs:{f.get('hs', default_hs)}")
    if op == "AvgPool2D":
        hin, win, cin = f["input"]  # type: ignore[misc]
        return f"AvgPool2D-input:{hin}x{win}x{cin}"
    if op == "Conv_2":
        cin = f["input"][-1]  # type: ignore[index]
        cout = f["output"][-1]  # type: ignore[index]
        return f"Conv_2-input:1x1x{cin}-output:1x1x{cout}-hs:{f.get('hs', default_hs)}"
    if op == "Logits":
        cin = f["input"][-1]  # type: ignore[index]
        out = f["output"]
        n = out[-1] if isinstance(out, tuple) else out
        return f"Logits-input:1x1x{cin}-output:{n}"
    raise OpKeyError(f"no spnas equivalent for '{key}'")


def _meta(device: str, source: str, resolution: int | None) -> dict[str, Any]:
    return {"device": device, "soc": "", "provenance": "imported", "runtime": "imported", "runtime_version": "",
            "threads": 1, "date": time.strftime("%Y-%m-%d"), "overhead_ms": 0.0, "complete": False,
            "resolutions": [resolution] if resolution else [], "method": {"source": source}}
