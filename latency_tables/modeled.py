"""Modeled latency tables for SoCs no phone here can measure: a per-SoC roofline.

Each op key is decomposed into the TFLite kernels it runs (1x1 expand conv, depthwise conv,
squeeze-excite, 1x1 project conv, h-swish, residual add; stem conv, head convs, pooling, logits).
A kernel's time is

    max(MACs / (peak_MAC_s * eff[type]), bytes / bandwidth(working set)) + dispatch

where the peak comes from the big core's NEON FMA width and clock, the bandwidth is the cache
bandwidth when the kernel's working set fits the last-level cache the big core sees and the
SoC's DRAM bandwidth otherwise, and `eff[type]` is a per-kernel-type efficiency (depthwise,
pointwise, full conv, SE, elementwise). One scalar per SoC scales both throughputs so that
MobileNetV2 1.0 at 224 reproduces the float32 latency published for that SoC. Because compute,
bandwidth and cache size differ per SoC, ops are ranked differently per SoC: a table is not
another one scaled by a constant.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Iterable

from search_spaces import ResolvedLayer, mobilenet_v2

from .keys import layer_of_key, ops_of, parse_op_key
from .socs import SOCS as SOC_FACTS
from .socs import SPNAS_PAPER
from .table import LatencyTable, OpStats
from spnas.errors import TableError

F32 = 4  # bytes per float32 element

# Fraction of peak FMA throughput each kernel type reaches in TFLite/XNNPACK-style NEON kernels
# (GEMM-like pointwise convs run near peak; depthwise convs have little reuse; SE and logits are
# GEMV-shaped). Relative values follow the per-op breakdowns reported for MobileNets on ARM cores
# (e.g. Zhang et al., "nn-Meter", MobiSys 2021; Lai et al., "CMSIS-NN", 2018).
DEFAULT_EFFICIENCY = {"pointwise": 0.60, "conv": 0.35, "depthwise": 0.22, "fc": 0.15, "elementwise": 0.5}


@dataclass(frozen=True)
class SoCSpec:
    """Public facts about one SoC's big core and memory, plus the calibration target."""

    name: str
    soc: str
    core: str
    clock_ghz: float
    fma_per_cycle: int  # fp32 FMAs per cycle of the NEON units
    dram_gb_s: float  # theoretical DRAM bandwidth
    llc_kb: int  # last-level cache the big core can use
    cache_gb_s_per_ghz: float  # sustained cache bytes per cycle (GB/s per GHz)
    calibration_ms: float  # published MobileNetV2 1.0 224 float32 latency
    abi: str = "arm64-v8a"
    taskset_mask: str | None = None
    dispatch_us: float = 8.0  # per-kernel interpreter/dispatch overhead
    efficiency: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_EFFICIENCY))
    sources: tuple[str, ...] = ()

    @property
    def peak_gmac_s(self) -> float:
        return self.clock_ghz * self.fma_per_cycle

    @property
    def cache_gb_s(self) -> float:
        return self.clock_ghz * self.cache_gb_s_per_ghz


WIKI = "https://en.wikipedia.org/wiki/List_of_Qualcomm_Snapdragon_systems_on_chips"
SPNAS = f"{SPNAS_PAPER}; MobileNetV2 float32 latencies as given in the spnas issue tracker"


def _spec(name: str, core: str, clock_ghz: float, fma_per_cycle: int, dram_gb_s: float, llc_kb: int,
          cache_gb_s_per_ghz: float, sources: tuple[str, ...]) -> SoCSpec:
    """A roofline spec whose name, SoC, ABI, mask and calibration come from `latency_tables.socs`."""
    f = SOC_FACTS[name]
    assert f.mobilenet_v2_ms is not None
    return SoCSpec(name, f.soc, core, clock_ghz, fma_per_cycle, dram_gb_s, llc_kb, cache_gb_s_per_ghz,
                   f.mobilenet_v2_ms, abi=f.abi, taskset_mask=f.taskset_mask, sources=sources)


SOCS: dict[str, SoCSpec] = {
    "sd845": _spec("sd845", "Kryo 385 Gold (Cortex-A75 derivative)", 2.8, 8, 29.9, 2048 + 256, 16.0,
                   (WIKI, "Qualcomm Snapdragon 845 product brief (LPDDR4X 1866 MHz, 4x16-bit; 2 MB L3)",
                    "Arm Cortex-A75 software optimization guide (2x128-bit FMA pipes)", SPNAS)),
    "sd670": _spec("sd670", "Kryo 360 Gold (Cortex-A75 derivative)", 2.0, 8, 14.9, 1024 + 256, 16.0,
                   (WIKI, "Qualcomm Snapdragon 670 product brief (LPDDR4X 1866 MHz, 2x16-bit; 1 MB L3)",
                    "Arm Cortex-A75 software optimization guide (2x128-bit FMA pipes)", SPNAS)),
    "sd808": _spec("sd808", "Cortex-A57", 1.82, 4, 14.9, 1024, 8.0,
                   (WIKI, "Qualcomm Snapdragon 808 product brief (LPDDR3 933 MHz, 2x32-bit; 1 MB L2 A57 cluster)",
                    "Arm Cortex-A57 software optimization guide (2x64-bit FP/ASIMD pipes)", SPNAS)),
    "sd801": _spec("sd801", "Krait 400", 2.45, 4, 14.9, 2048, 8.0,
                   (WIKI, "Qualcomm Snapdragon 801 product brief (LPDDR3 933 MHz, 2x32-bit; 2 MB shared L2)",
                    "Krait microarchitecture: 128-bit NEON, VFPv4 FMA", SPNAS)),
}


@dataclass(frozen=True)
class Kernel:
    """One TFLite kernel of an op: its type, MACs and bytes moved."""

    kind: str
    macs: float
    bytes: float


def kernels_of(layer: ResolvedLayer, key_op: str) -> list[Kernel]:
    """The kernels an op runs, with MACs and float32 bytes (activations in + out, weights)."""
    b = layer.block
    hw_in, hw_out = layer.hin * layer.win, layer.hout * layer.wout
    out: list[Kernel] = []
    hs = b.kind in ("ir", "conv", "fc") and b.activation == "hs"
    if key_op == "expanded_conv":
        cin, mid, cout, k = layer.cin, layer.mid, layer.cout, b.kernel or 1
        if mid != cin:
            out.append(Kernel("pointwise", hw_in * cin * mid, F32 * (hw_in * cin + hw_in * mid + cin * mid)))
            if hs:
                out.append(Kernel("elementwise", hw_in * mid, F32 * 2 * hw_in * mid))
        out.append(Kernel("depthwise", hw_out * mid * k * k, F32 * (hw_in * mid + hw_out * mid + mid * k * k)))
        if hs:
            out.append(Kernel("elementwise", hw_out * mid, F32 * 2 * hw_out * mid))
        if b.se:
            h = layer.se_hidden
            out.append(Kernel("elementwise", hw_out * mid, F32 * hw_out * mid))  # pooling
            out.append(Kernel("fc", 2 * mid * h, F32 * (2 * mid * h + 2 * mid + h)))
            out.append(Kernel("elementwise", hw_out * mid, F32 * 2 * hw_out * mid))  # scale
        out.append(Kernel("pointwise", hw_out * mid * cout, F32 * (hw_out * mid + hw_out * cout + mid * cout)))
        if layer.residual:
            out.append(Kernel("elementwise", hw_out * cout, F32 * 3 * hw_out * cout))
    elif key_op in ("Conv", "Conv_1"):
        k = b.kernel or 1
        kind = "pointwise" if k == 1 else "conv"
        out.append(Kernel(kind, hw_out * layer.cin * layer.cout * k * k,
                          F32 * (hw_in * layer.cin + hw_out * layer.cout + layer.cin * layer.cout * k * k)))
        if hs:
            out.append(Kernel("elementwise", hw_out * layer.cout, F32 * 2 * hw_out * layer.cout))
    elif key_op == "AvgPool2D":
        out.append(Kernel("elementwise", hw_in * layer.cin, F32 * (hw_in * layer.cin + layer.cin)))
    elif key_op in ("Conv_2", "Logits"):
        out.append(Kernel("fc", layer.cin * layer.cout, F32 * (layer.cin * layer.cout + layer.cin + layer.cout)))
        if hs:
            out.append(Kernel("elementwise", layer.cout, F32 * 2 * layer.cout))
    else:
        raise TableError(f"no cost model for op '{key_op}'")
    return out


class RooflineModel:
    """Per-SoC roofline with a calibration scale on both throughputs."""

    def __init__(self, spec: SoCSpec, scale: float = 1.0) -> None:
        self.spec = spec
        self.scale = scale

    def kernel_ms(self, k: Kernel) -> float:
        s = self.spec
        compute_s = k.macs / (s.peak_gmac_s * 1e9 * s.efficiency[k.kind] * self.scale)
        bw = s.cache_gb_s if k.bytes <= s.llc_kb * 1024 else s.dram_gb_s
        memory_s = k.bytes / (bw * 1e9 * self.scale)
        return 1e3 * max(compute_s, memory_s) + s.dispatch_us / 1e3

    def op_ms(self, key: str) -> float:
        op = str(parse_op_key(key)["op"])
        return sum(self.kernel_ms(k) for k in kernels_of(layer_of_key(key), op))

    def total_ms(self, keys: Iterable[str]) -> float:
        return sum(self.op_ms(k) for k in keys)


def calibrate(spec: SoCSpec, target_ms: float | None = None, reference_keys: list[str] | None = None) -> RooflineModel:
    """Find the throughput scale that makes MobileNetV2 1.0 at 224 cost `target_ms` (bisection)."""
    target = float(target_ms if target_ms is not None else spec.calibration_ms)
    keys = reference_keys or [op.key for op in ops_of(mobilenet_v2())]
    lo, hi = 1e-4, 1e4
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        t = RooflineModel(spec, mid).total_ms(keys)
        if t > target:
            lo = mid
        else:
            hi = mid
    model = RooflineModel(spec, math.sqrt(lo * hi))
    floor = spec.dispatch_us / 1e3 * sum(len(kernels_of(layer_of_key(k), str(parse_op_key(k)["op"]))) for k in keys)
    if target <= floor:
        raise TableError(f"{spec.name}: calibration target {target} ms is below the dispatch floor {floor:.2f} ms")
    return model


def modeled_table(spec: SoCSpec, keys: Iterable[str], resolutions: list[int] | None = None) -> LatencyTable:
    """A `provenance: modeled` table for `keys`, calibrated on MobileNetV2, with its method in meta."""
    model = calibrate(spec)
    ref_keys = [op.key for op in ops_of(mobilenet_v2())]
    ops = {k: OpStats(model.op_ms(k), 0.0, 1) for k in sorted(set(keys) | set(ref_keys))}
    meta = {
        "device": spec.name,
        "soc": spec.soc,
        "provenance": "modeled",
        "runtime": "TFLite float32 (modeled)",
        "runtime_version": "",
        "threads": 1,
        "cores_used": spec.taskset_mask or "big core",
        "date": time.strftime("%Y-%m-%d"),
        "benchmark_binary": None,
        "benchmark_sha256": None,
        "overhead_ms": 0.0,
        "resolutions": resolutions or [224],
        "complete": True,
        "method": {
            "name": "roofline/1",
            "formula": "per kernel: max(MACs/(peak*eff[type]*scale), bytes/(bw*scale)) + dispatch; "
                       "bw = cache bandwidth if the kernel's bytes fit the LLC else DRAM bandwidth",
            "parameters": {k: v for k, v in asdict(spec).items() if k not in ("sources",)},
            "peak_gmac_s": spec.peak_gmac_s,
            "cache_gb_s": spec.cache_gb_s,
            "calibration": {"network": "mobilenet_v2 1.0 224 (1000 classes)", "target_ms": spec.calibration_ms,
                            "scale": model.scale, "predicted_ms": model.total_ms(ref_keys)},
            "sources": list(spec.sources),
        },
    }
    return LatencyTable(meta, ops)


def host_spec(calibration_ms: float, clock_ghz: float = 2.1, fma_per_cycle: int = 32, llc_kb: int = 2048,
              dram_gb_s: float = 20.0) -> SoCSpec:
    """A roofline spec for this x86 host (AVX-512: 2 FMA ports x 16 fp32 lanes), calibrated on a
    measured MobileNetV2 latency; used to check how well the modeling method predicts a real CPU."""
    return SoCSpec("host-roofline", "host CPU", "x86-64 AVX-512", clock_ghz, fma_per_cycle, dram_gb_s, llc_kb,
                   32.0, calibration_ms, abi="x86_64", dispatch_us=1.0,
                   sources=("/proc/cpuinfo (clock, AVX-512 flags)", "lscpu (L2 size)"))


def with_target(spec: SoCSpec, target_ms: float) -> SoCSpec:
    """The same SoC with another calibration target (e.g. a measured MobileNetV2 latency)."""
    return replace(spec, calibration_ms=float(target_ms))
