"""Public phone measurements (`../shared/latency-data`, see its README) as fit and validation data.

- `pixel3_fbnet`: HW-NAS-Bench's per-op FBNet table measured on a Pixel 3 (Snapdragon 845).
  Absolute values are slow for the SoC (runtime and threads undocumented): its relative costs are
  what is used. Grouped 1x1 convs (`_g2`) and skip rows are left out (no spnas op has them).
- `pixel1_proxyless`: ProxylessNAS's mobile lookup table, Pixel 1 (Snapdragon 821), TFLite.
- `note10_ofa`: Once-for-All's MobileNetV3 table for the Galaxy Note10 (SE, h-swish, 5 resolutions).
- `published_latencies`: whole networks per phone, runtime and thread count, with their sources.

Each measured row keeps the file and row number it came from, so a table's `meta` can cite them.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from spnas_core.errors import DataNotFoundError, InputError

from latency_tables.lookup.costmodel import Kernel, Measured, conv_kernels, fc_kernels, mbconv_kernels, pool_kernels

PIXEL3_FILE = "hwnasbench_fbnet_pixel3_perop.csv"
PIXEL1_FILE = "proxylessnas_mobile_lut_pixel1.csv"
NOTE10_FILE = "ofa_mbv3_lut_note10.csv"
NODE_PROFILE_FILE = "proxylessnas_mobile_tflite_node_profile.csv"
PUBLISHED_FILE = "published_latencies.csv"


def latency_data_dir() -> Path:
    """`<shared>/latency-data` (the public measurements; `$SPNAS_SHARED` moves the shared folder)."""
    from spnas_core.paths import shared_dir

    return shared_dir() / "latency-data"


def _rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    if not path.is_file():
        raise DataNotFoundError(f"{path} not found: the public latency measurements live in "
                                f"<shared>/latency-data (set SPNAS_SHARED to the shared folder)")
    with open(path, newline="") as f:
        return [(i + 2, r) for i, r in enumerate(csv.DictReader(f))]  # line 1 is the header


def _num(r: dict[str, str], col: str, path: Path, line: int) -> float:
    try:
        return float(r[col])
    except (KeyError, ValueError, TypeError):
        raise InputError(f"{path}:{line}: column '{col}' is not a number ({r.get(col)!r})") from None


# ---------------------------------------------------------------------------------- per-op tables
def pixel3_fbnet(folder: Path | None = None, dataset: str = "ImageNet") -> list[Measured]:
    """FBNet-space ops on the Pixel 3 (each distinct shape once; repeated layers share a row)."""
    path = (folder or latency_data_dir()) / PIXEL3_FILE
    out: list[Measured] = []
    seen: set[str] = set()
    for line, r in _rows(path):
        if r["dataset"] != dataset:
            continue
        op, layer = r["op"], r["layer"]
        h, cin, cout, s = int(r["input_hw"]), int(r["cin"]), int(r["cout"]), int(r["stride"])
        ms = _num(r, "pixel3_latency_ms", path, line)
        kernels: list[Kernel]
        if layer == "stem":
            kernels = conv_kernels(h, h, cin, cout, 3, s)
        elif layer == "head":
            kernels = conv_kernels(h, h, cin, cout, 1, 1)
        elif layer == "pool":
            kernels = pool_kernels(h, h, cin)
        elif layer == "fc":
            kernels = fc_kernels(cin, cout)
        elif op == "skip" or op.endswith("_g2"):
            continue
        else:
            e, k = int(r["expansion"]), int(r["kernel"])
            kernels = mbconv_kernels(h, h, cin, cout, cin * e, k, s, residual=(s == 1 and cin == cout),
                                     always_expand=True)
        if r["lut_key"] in seen:
            continue
        seen.add(r["lut_key"])
        key = None
        if layer.isdigit() and r["expansion"] not in ("", "1"):  # e1 FBNet blocks keep a 1x1 conv spnas drops
            ho = -(-h // s)
            key = (f"expanded_conv-input:{h}x{h}x{cin}-output:{ho}x{ho}x{cout}-expand:{r['expansion']}"
                   f"-kernel:{r['kernel']}-stride:{s}-idskip:{int(s == 1 and cin == cout)}-se:0-hs:0")
        out.append(Measured(r["lut_key"], tuple(kernels), ms, f"{PIXEL3_FILE}:{line}", key))
    return out


def pixel1_proxyless(folder: Path | None = None) -> list[Measured]:
    """ProxylessNAS mobile-space ops on the Pixel 1 (mean of ~150-1000 runs each)."""
    path = (folder or latency_data_dir()) / PIXEL1_FILE
    out = []
    for line, r in _rows(path):
        h, cin, cout = int(r["input_hw"]), int(r["cin"]), int(r["cout"])
        ms = _num(r, "latency_mean_ms", path, line)
        lt = r["layer_type"]
        key = None
        if lt == "Conv":
            kernels = conv_kernels(h, h, cin, cout, 3, 2)
            key = f"Conv-input:{h}x{h}x{cin}-output:{-(-h // 2)}x{-(-h // 2)}x{cout}-kernel:3-stride:2-hs:0"
        elif lt == "Conv_1":
            kernels = conv_kernels(h, h, cin, cout, 1, 1)
            key = f"Conv_1-input:{h}x{h}x{cin}-output:{h}x{h}x{cout}-kernel:1-stride:1-hs:0"
        elif lt == "Logits":  # ProxylessNAS's Logits row is pooling + FC
            kernels = pool_kernels(h, h, cin) + fc_kernels(cin, cout)
        else:
            e, k, s = float(r["expand_ratio"]), int(r["kernel"]), int(r["stride"])
            kernels = mbconv_kernels(h, h, cin, cout, round(cin * e), k, s, residual=r["id_skip"] == "1")
            ho = -(-h // s)
            key = (f"expanded_conv-input:{h}x{h}x{cin}-output:{ho}x{ho}x{cout}-expand:{e:g}-kernel:{k}-stride:{s}"
                   f"-idskip:{int(r['id_skip'] == '1')}-se:0-hs:0")
        out.append(Measured(r["lut_key"], tuple(kernels), ms, f"{PIXEL1_FILE}:{line}", key))
    return out


def note10_ofa(folder: Path | None = None, resolutions: tuple[int, ...] | None = None) -> list[Measured]:
    """Once-for-All MobileNetV3 ops on the Note10 (all five input sizes by default)."""
    path = (folder or latency_data_dir()) / NOTE10_FILE
    out = []
    for line, r in _rows(path):
        if resolutions and int(r["image_size"]) not in resolutions:
            continue
        h, cin, cout = int(r["input_hw"]), int(r["cin"]), int(r["cout"])
        ms = _num(r, "latency_mean_ms", path, line)
        lt = r["layer_type"]
        if lt == "Conv":
            kernels = conv_kernels(h, h, cin, cout, 3, 2, hswish=True)
        elif lt == "Conv_1":
            kernels = conv_kernels(h, h, cin, cout, 1, 1, hswish=True)
        elif lt == "AvgPool2D":
            kernels = pool_kernels(h, h, cin)
        elif lt == "Conv_2":
            kernels = fc_kernels(cin, cout, hswish=True)
        elif lt == "Logits":
            kernels = fc_kernels(cin, cout)
        else:
            mid = int(r["mid_channels"])
            se_hidden = _make_divisible(mid // 4) if r["se"] == "1" else 0
            kernels = mbconv_kernels(h, h, cin, cout, mid, int(r["kernel"]), int(r["stride"]), se_hidden=se_hidden,
                                     hswish=r["h_swish"] == "1", residual=r["id_skip"] == "1")
        out.append(Measured(f"{r['image_size']}:{r['lut_key']}", tuple(kernels), ms, f"{NOTE10_FILE}:{line}"))
    return out


def _make_divisible(v: float, d: int = 8) -> int:
    new = max(d, int(v + d / 2) // d * d)
    return new + d if new < 0.9 * v else new


@dataclass(frozen=True)
class MeasuredDevice:
    """A phone with public per-op measurements: what it is and how to read its rows."""

    name: str
    phone: str
    soc: str
    core: str
    clock_ghz: float
    fma_per_cycle: int  # fp32 NEON FMAs per cycle of one big core
    cache_kb: int  # last-level cache one big core sees
    dram_gb_s: float
    runtime: str
    file: str
    load: Callable[..., list[Measured]]
    published_phone: str  # the `phone` value of its rows in published_latencies.csv
    caveat: str = ""


MEASURED: dict[str, MeasuredDevice] = {
    "pixel3": MeasuredDevice(
        "pixel3", "Google Pixel 3", "Snapdragon 845", "Kryo 385 Gold (Cortex-A75)", 2.8, 8, 2048 + 256, 29.9,
        "undocumented (HW-NAS-Bench)", PIXEL3_FILE, pixel3_fbnet, "Google Pixel 3",
        "absolute values slow for an SD845 (runtime, threads undocumented): relative costs only"),
    "pixel1": MeasuredDevice(
        "pixel1", "Google Pixel 1", "Snapdragon 821", "Kryo (2.15 GHz performance cluster)", 2.15, 8, 1024, 29.8,
        "TFLite (ProxylessNAS)", PIXEL1_FILE, pixel1_proxyless, "Google Pixel 1",
        "two public copies of this table differ by up to ~40%; this is the one the official code downloads"),
    "note10": MeasuredDevice(
        "note10", "Samsung Galaxy Note10", "Snapdragon 855 or Exynos 9825 (not stated)", "Kryo 485 Gold / M4",
        2.84, 8, 2048, 34.1, "TFLite (Once-for-All)", NOTE10_FILE, note10_ofa, "Samsung Galaxy Note10",
        "SoC not stated by the source"),
}


# ---------------------------------------------------------------------------------- whole networks
@dataclass(frozen=True)
class Published:
    """One whole-network latency from published_latencies.csv."""

    phone: str
    soc: str
    network: str
    resolution: int | None
    runtime: str
    threads: str
    ms: float
    source: str
    line: int


def published_latencies(folder: Path | None = None) -> list[Published]:
    """Every row with a latency (rows without one, or with an unstated resolution, are kept out)."""
    path = (folder or latency_data_dir()) / PUBLISHED_FILE
    out = []
    for line, r in _rows(path):
        try:
            ms = float(r["latency_ms"])
        except (TypeError, ValueError):
            continue
        res = int(r["resolution"]) if r["resolution"].isdigit() else None
        out.append(Published(r["phone"], r["soc"], r["network"], res, r["runtime"], r["threads"], ms,
                             r["source"], line))
    return out


# ProxylessNAS-Mobile (the network of the node profile): stem 32, then (expand, kernel, stride, out channels)
# per block as the node names give them; widths from the ProxylessNAS mobile configuration.
PROXYLESS_MOBILE = [(1, 3, 1, 16), (3, 5, 2, 24), (3, 3, 1, 24), (3, 7, 2, 40), (3, 3, 1, 40), (3, 5, 1, 40),
                    (3, 5, 1, 40), (6, 7, 2, 80), (3, 5, 1, 80), (3, 5, 1, 80), (3, 5, 1, 80), (6, 5, 1, 96),
                    (3, 5, 1, 96), (3, 5, 1, 96), (3, 5, 1, 96), (6, 7, 2, 192), (6, 7, 1, 192), (3, 7, 1, 192),
                    (3, 7, 1, 192), (6, 7, 1, 320)]


def proxyless_mobile_blocks() -> list[str]:
    """ProxylessNAS-Mobile in the spnas grammar (ReLU6, 1280 head)."""
    blocks = ["conv_k3_c32_s2_r6"]
    blocks += [f"ir_k{k}_e{e}_c{c}_s{s}_r6" for e, k, s, c in PROXYLESS_MOBILE]
    return blocks + ["conv_k1_c1280_s1_r6", "pool"]


def pixel1_node_profile(folder: Path | None = None) -> list[Measured]:
    """The per-node TFLite profile of ProxylessNAS-Mobile (one phone core, 1 thread; the ProxylessNAS
    mobile target, a Pixel 1): one kernel per row, which separates 1x1, depthwise, add and GEMV costs."""
    path = (folder or latency_data_dir()) / NODE_PROFILE_FILE
    rows = _rows(path)
    out: list[Measured] = []
    h, c = 224, 3
    block = -1
    cin = mid = 0
    for line, r in rows:
        name, t = r["node_name"], r["node_type"]
        ms = _num(r, "avg_ms", path, line)
        if name.endswith("Conv/Relu6"):  # stem
            kernels = conv_kernels(h, h, 3, 32, 3, 2)
            h, c = 112, 32
        elif "/expanded_conv" in name:
            idx = int(name.split("/expanded_conv")[1].split("/")[0].lstrip("_") or 0)
            e, k, s, cout = PROXYLESS_MOBILE[idx]
            if idx != block:
                block, cin, mid = idx, c, c * e
            ho = -(-h // s)
            parts = name.split("/")
            part = next((x for x in ("expand", "depthwise", "project") if x in parts), "add")
            if part == "expand":
                kernels = [Kernel("pw", h * h * cin * mid, h * h * cin, h * h * mid, cin * mid)]
            elif part == "depthwise":
                kernels = [Kernel("dw", ho * ho * mid * k * k, h * h * mid, ho * ho * mid, mid * k * k)]
            elif part == "project":
                kernels = [Kernel("pw", ho * ho * mid * cout, ho * ho * mid, ho * ho * cout, mid * cout)]
                h, c = ho, cout
            elif t == "ADD":
                kernels = [Kernel("ew", 0, 2 * h * h * c, h * h * c, 0)]
            else:
                raise InputError(f"{path}:{line}: unexpected node '{name}'")
        elif name.endswith("Conv_1/Relu6"):
            kernels = conv_kernels(h, h, c, 1280, 1, 1)
            c = 1280
        elif t == "AVERAGE_POOL_2D":
            kernels = pool_kernels(h, h, c)
        elif "Logits/Conv2d_1c_1x1" in name:
            kernels = fc_kernels(c, 1000)
        elif t == "RESHAPE":
            continue
        else:
            raise InputError(f"{path}:{line}: unexpected node '{name}'")
        out.append(Measured(name, tuple(kernels), ms, f"{NODE_PROFILE_FILE}:{line}"))
    return out
