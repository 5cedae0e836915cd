"""Snapdragon tables derived from measured phones: a per-device latency model, mapped to each SoC.

Nobody here can run a Snapdragon 670, 808 or 801, and the public SD845 measurements come from a
runtime of unknown speed. So each shipped Snapdragon table is a *model*, grounded in measurements:

1. **Fit** a latency model (`costmodel`: MACs per kernel type, bytes in and out of cache, strided
   depthwise reads, elementwise traffic, kernel count) to each phone with public per-op data
   (`sources`): Pixel 3 (SD845, HW-NAS-Bench), Pixel 1 (SD821, ProxylessNAS), Note10 (OFA). The
   Pixel 1's GEMV and elementwise coefficients, which its block-level rows cannot separate, come
   from the per-node TFLite profile of ProxylessNAS-Mobile (one kernel per row).
2. **Map** each SoC to its nearest measured phone and adjust the three cost groups by public specs:
   compute by peak FMA rate (clock x FMA width), cache-level memory traffic by clock, DRAM traffic by
   DRAM bandwidth, kernel dispatch by clock; the cache size decides which kernels spill to DRAM; on
   32-bit ARM (armeabi-v7a) GEMM-type kernels (1x1 and full convs, GEMVs) run smaller register tiles.
   - sd845 <- Pixel 3: the same SoC, factors 1.
   - sd670 <- Pixel 3: Kryo 360 Gold is the SD845's core family at 2.0 GHz with 1 MB L3 (2 MB on the
     SD845) and a 2x16-bit LPDDR4X bus (4x16 on the SD845): compute x1.4, cache traffic x1.4, DRAM x2,
     smaller cache.
   - sd808 <- Pixel 1: Cortex-A57 (2x64-bit NEON pipes: 4 FMA/cycle) at 1.82 GHz, 1 MB L2, LPDDR3:
     the memory-bound Pixel 1 profile with half its FMA width.
   - sd801 <- Pixel 1: Krait 400 at 2.45 GHz, 2 MB L2, LPDDR3, 32-bit ARMv7 (16 NEON q registers:
     ruy's float GEMM tile is 8x4 instead of 8x8, 1.5x the loads per FMA).
3. **Scale** each model so MobileNetV2 1.0 at 224 costs the published float32 latency of the SoC.

Only the ratio of the group factors changes a table's ranking; the scale absorbs the rest. A
modeled table answers any op its model can express (any class count, width, resolution): rows it
ships are precomputed, others are computed on demand and marked so (`LatencyTable.derived`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from search_spaces import mobilenet_v2

from latency_tables.lookup.costmodel import COMPUTE, FEATURES, DeviceModel, FitResult, fit_device, scale_to
from latency_tables.lookup.keys import ops_of
from latency_tables.socs import SOCS as SOC_FACTS
from latency_tables.socs import SocFacts
from latency_tables.modelling.sources import MEASURED, MeasuredDevice
from latency_tables.lookup.table import LatencyTable, OpStats

METHOD = "fitted-op-model/1"
GEMM_FEATURES = ("pw_macs", "conv_macs", "fc_macs")
# Tile arithmetic intensity m*n/(m+n): 8x8 (arm64) = 4.0, 8x4 (armv7) = 2.67.
ARMV7_GEMM_FACTOR = 4.0 / (32 / 12)


@dataclass(frozen=True)
class SoCSpec:
    """Public facts of one SoC's big core and memory, its nearest measured phone and calibration."""

    name: str
    soc: str
    core: str
    base: str  # a key of `sources.MEASURED`
    clock_ghz: float
    fma_per_cycle: int
    cache_kb: int  # last-level cache the big core sees
    dram_gb_s: float
    calibration_ms: float  # published MobileNetV2 1.0 224 float32 latency
    abi: str = "arm64-v8a"
    mapping: str = ""
    sources: tuple[str, ...] = ()

    @property
    def peak_gmac_s(self) -> float:
        return self.clock_ghz * self.fma_per_cycle

    @property
    def taskset_mask(self) -> str | None:
        """The big-core mask (a SoC fact, from `latency_tables.socs`)."""
        return SOC_FACTS[self.name].taskset_mask


def spec_of(facts: SocFacts) -> SoCSpec:
    """The modeling spec of a SoC record that has one (`SocFacts.model`)."""
    m = facts.model
    if m is None or facts.mobilenet_v2_ms is None:
        raise ValueError(f"SoC {facts.name} has no model specs or no published MobileNetV2 latency")
    return SoCSpec(facts.name, facts.soc, m.core, m.base, m.clock_ghz, m.fma_per_cycle, m.cache_kb, m.dram_gb_s,
                   facts.mobilenet_v2_ms, facts.abi, m.mapping, m.sources)


# The SoCs that get a modeled table: every record of `latency_tables.socs.SOCS` with model specs.
SPECS: dict[str, SoCSpec] = {n: spec_of(f) for n, f in SOC_FACTS.items() if f.model is not None}


# ---------------------------------------------------------------------------------- fitting
# The Pixel 1 table times whole blocks only, so it cannot tell a GEMV or an elementwise kernel from
# the rest of a block (its one Logits row and its residual adds are explained equally well by either).
# The ProxylessNAS-Mobile per-node profile times each kernel alone on the same kind of phone: its fit
# sets those two coefficients, scaled to the Pixel 1 table (weight per row, see fit_device).
NODE_PRIOR_FEATURES = ("fc_macs", "ew_m")
NODE_PRIOR_WEIGHT = 0.3


@dataclass
class MeasuredFits:
    """The fitted model of every measured phone."""

    fits: dict[str, FitResult]
    folder: str = ""

    def model(self, name: str) -> DeviceModel:
        return self.fits[name].model


def fit_measured(folder: Any = None, devices: Iterable[str] | None = None) -> MeasuredFits:
    """Fit every measured phone's model to its public per-op rows."""
    from pathlib import Path

    from latency_tables.modelling.sources import pixel1_node_profile

    where = Path(folder) if folder else None
    fits: dict[str, FitResult] = {}
    for n in devices or MEASURED:
        d = MEASURED[n]
        if n == "pixel1":
            nodes = fit_device(pixel1_node_profile(where), d.cache_kb, "pixel1 per-node profile")
            fits[n] = fit_device(d.load(where), d.cache_kb, n, prior=nodes.model, prior_weight=NODE_PRIOR_WEIGHT,
                                 prior_features=NODE_PRIOR_FEATURES)
        else:
            fits[n] = fit_device(d.load(where), d.cache_kb, n)
    return MeasuredFits(fits, str(folder or ""))


# ---------------------------------------------------------------------------------- mapping
def group_factors(base: MeasuredDevice | SoCSpec, target: SoCSpec) -> dict[str, float]:
    """Multipliers per feature that move a model from `base`'s hardware to `target`'s (before scaling)."""
    compute = (base.clock_ghz * base.fma_per_cycle) / (target.clock_ghz * target.fma_per_cycle)
    cache = base.clock_ghz / target.clock_ghz
    dram = base.dram_gb_s / target.dram_gb_s
    out = {}
    for f in FEATURES:
        if f in COMPUTE:
            out[f] = compute
        elif f == "spill_mb":
            out[f] = dram
        else:  # cache-level traffic and dispatch run at the core clock
            out[f] = cache
    base_abi = getattr(base, "abi", "arm64-v8a")
    if target.abi == "armeabi-v7a" and base_abi != "armeabi-v7a":
        for f in GEMM_FEATURES:
            out[f] *= ARMV7_GEMM_FACTOR
    return out


def derive_model(spec: SoCSpec, fits: MeasuredFits) -> DeviceModel:
    """The SoC's model: its base phone's fit, mapped by `group_factors`, scaled to MobileNetV2."""
    base = MEASURED[spec.base]
    fit = fits.fits[spec.base]
    m = fit.model
    fac = group_factors(base, spec)
    mapped = DeviceModel({f: m.theta[f] * fac[f] for f in FEATURES}, spec.cache_kb, 1.0, spec.name,
                         measured_corrections(fit))
    return scale_to(mapped, [op.key for op in ops_of(mobilenet_v2())], spec.calibration_ms)


def measured_corrections(fit: FitResult) -> dict[str, float]:
    """measured / modeled at every op of the base phone that is an spnas op key: what the features
    miss about that op (its kernel's tile fit, a slow path) is a property of the op on that core
    family and goes with the model, so the base SoC's table reproduces its phone's rows exactly."""
    return {r.key: r.ms / p for r, p in zip(fit.rows, fit.predicted) if r.key and p > 0}


def modeled_table(spec: SoCSpec, fits: MeasuredFits, keys: Iterable[str], resolutions: list[int] | None = None,
                  validation: dict[str, Any] | None = None) -> LatencyTable:
    """A `provenance: modeled` table: rows for `keys` (and MobileNetV2), the model for everything else."""
    model = derive_model(spec, fits)
    ref_keys = [op.key for op in ops_of(mobilenet_v2())]
    ops = {k: OpStats(model.op_ms(k), 0.0, 1) for k in sorted(set(keys) | set(ref_keys))}
    base = MEASURED[spec.base]
    fit = fits.fits[spec.base]
    meta = {
        "device": spec.name,
        "soc": spec.soc,
        "provenance": "modeled",
        "runtime": "TFLite float32 (modeled)",
        "runtime_version": "",
        "threads": 1,
        "cores_used": SOC_FACTS[spec.name].taskset_mask or "big core",
        "date": time.strftime("%Y-%m-%d"),
        "benchmark_binary": None,
        "benchmark_sha256": None,
        "overhead_ms": 0.0,
        "resolutions": resolutions or [224],
        "complete": True,
        "method": {
            "name": METHOD,
            "summary": "per-device latency model fitted to public per-op phone measurements, mapped to this SoC "
                       "by public specs, scaled to its published MobileNetV2 latency; rows not listed are "
                       "computed from the model on demand",
            "model": model.to_dict(),
            "base_device": {"name": base.name, "phone": base.phone, "soc": base.soc, "core": base.core,
                            "runtime": base.runtime, "caveat": base.caveat},
            "mapping": {"note": spec.mapping, "group_factors": group_factors(base, spec),
                        "target": {k: v for k, v in asdict(spec).items() if k not in ("sources", "mapping")}},
            "fit": {"rows": f"{base.file} ({len(fit.rows)} ops: {fit.rows[0].source} ... {fit.rows[-1].source})",
                    "residuals": fit.summary(), "notes": fit.notes},
            "calibration": {"network": "mobilenet_v2 1.0 224 (1000 classes)", "target_ms": spec.calibration_ms,
                            "scale": model.scale, "predicted_ms": model.total_ms(ref_keys)},
            "sources": [f"{base.file} (../shared/latency-data)", *spec.sources],
            "validation": validation or {},
        },
    }
    return LatencyTable(meta, ops)


def model_of_table(table: LatencyTable) -> DeviceModel | None:
    """The device model a modeled table carries in its meta (None for measured / imported tables)."""
    method = table.meta.get("method") or {}
    if method.get("name") != METHOD or "model" not in method:
        return None
    return DeviceModel.from_dict(method["model"])


@dataclass
class SocTables:
    """The derived tables with the fits they came from."""

    tables: dict[str, LatencyTable] = field(default_factory=dict)
    fits: MeasuredFits | None = None
