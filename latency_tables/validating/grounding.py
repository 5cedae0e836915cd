"""How well the modeled Snapdragon tables hold against measurements they were not fitted to.

- `leave_one_device_out`: each measured phone's per-op rows predicted from the *other* phones
  (their pooled fit, and each one alone mapped by `modeled.group_factors`), after one scale:
  per-op MAPE and Kendall tau. Target: held-out tau >= 0.85.
- `whole_network_checks`: published whole-network latencies of the same phone and source (one
  runtime, one thread setting) as ratios to an anchor network of that source, against the phone's
  fitted model. Target: ratio error <= 10%.
- `shared_key_checks`: a shipped table's rows at the op keys its base phone measured, after one
  scale. Target: every shared key within 10%.
- `ratio_table` / `pairwise_tau`: what separates the shipped tables (k5/k3, e6/e3, SE, h-swish cost
  ratios per layer of the search space; rank agreement of their rows).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from search_spaces import ArchSpec, SearchSpace, make_divisible, mobilenet_v3_large, mobilenet_v3_small
from search_spaces.space import SKIP

from latency_tables.lookup.costmodel import FEATURES, DeviceModel, Measured, features
from latency_tables.lookup.keys import ops_of, ops_of_references, ops_of_space
from latency_tables.modelling.modeled import SPECS, MeasuredFits, group_factors
from latency_tables.modelling.sources import MEASURED, Published, proxyless_mobile_blocks, published_latencies
from latency_tables.lookup.table import LatencyTable

TAU_TARGET = 0.85
RATIO_TARGET = 0.10
SHARED_KEY_TARGET = 0.10


def _tau(a: Iterable[float], b: Iterable[float]) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(list(a), list(b))[0])


def _scaled_errors(pred: np.ndarray, meas: np.ndarray) -> tuple[np.ndarray, float]:
    """Relative errors after the one scale that best matches them in log space (absolute speed of a
    device is what its published whole-network figure sets; per-op shape is what is tested)."""
    s = float(np.exp(np.median(np.log(meas / pred))))
    return (pred * s - meas) / meas, s


# ---------------------------------------------------------------------------------- leave one device out
def fit_pooled(groups: dict[str, tuple[list[Measured], float]], iters: int = 6) -> DeviceModel:
    """One model for several phones: per-phone speed scales and shared coefficients, alternately fitted."""
    from scipy.optimize import nnls

    scale = {n: 1.0 for n in groups}
    theta = np.zeros(len(FEATURES))
    for _ in range(iters):
        A, b = [], []
        for n, (rows, cache) in groups.items():
            X = np.array([features(r.kernels, cache) for r in rows])
            t = np.array([r.ms for r in rows])
            w = 1.0 / math.sqrt(len(rows))  # each phone weighs the same, whatever its row count
            A.append(X * scale[n] / t[:, None] * w)
            b.append(np.full(len(rows), w))
        theta, _ = nnls(np.vstack(A), np.concatenate(b))
        for n, (rows, cache) in groups.items():
            X = np.array([features(r.kernels, cache) for r in rows])
            t = np.array([r.ms for r in rows])
            p = X @ theta * scale[n]
            scale[n] *= float(np.exp(np.median(np.log(t / np.maximum(p, 1e-12)))))
    return DeviceModel(dict(zip(FEATURES, theta)), 0.0, 1.0, "pooled(" + ",".join(groups) + ")")


def _eval(model: DeviceModel, rows: list[Measured], cache_kb: float) -> dict[str, Any]:
    m = DeviceModel(dict(model.theta), cache_kb, 1.0, model.name)
    pred = np.array([m.kernels_ms(r.kernels) for r in rows])
    meas = np.array([r.ms for r in rows])
    err, s = _scaled_errors(np.maximum(pred, 1e-9), meas)
    return {"n": len(rows), "kendall_tau": _tau(pred, meas), "mape_pct": float(np.mean(np.abs(err)) * 100),
            "within_10pct": float(np.mean(np.abs(err) <= 0.10)), "scale": s}


def leave_one_device_out(fits: MeasuredFits) -> list[dict[str, Any]]:
    """Per held-out phone: the pooled fit of the others, and each other phone mapped by specs."""
    out = []
    names = list(fits.fits)
    for held in names:
        rows = fits.fits[held].rows
        cache = MEASURED[held].cache_kb
        others = {n: (fits.fits[n].rows, MEASURED[n].cache_kb) for n in names if n != held}
        pooled = fit_pooled(others)
        out.append({"held_out": held, "from": "+".join(others), "mapping": "pooled fit, no spec mapping",
                    **_eval(pooled, rows, cache)})
        for n in others:
            fac = group_factors(MEASURED[n], _as_target(held))
            m = fits.model(n)
            mapped = DeviceModel({f: m.theta[f] * fac[f] for f in FEATURES}, cache, 1.0, n)
            out.append({"held_out": held, "from": n, "mapping": f"{n} mapped by specs", **_eval(mapped, rows, cache)})
    return out


def _as_target(name: str) -> Any:
    d = MEASURED[name]

    @dataclass
    class _T:
        clock_ghz: float = d.clock_ghz
        fma_per_cycle: int = d.fma_per_cycle
        dram_gb_s: float = d.dram_gb_s
        abi: str = "arm64-v8a"

    return _T()


# ---------------------------------------------------------------------------------- whole networks
def mobilenet_v2_at(width: float = 1.0, resolution: int = 224) -> ArchSpec:
    """MobileNetV2 as TF-slim builds it at a width: channels scaled, the 1280 head kept for width <= 1."""
    c = lambda n: make_divisible(n * width)  # noqa: E731
    cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    blocks = [f"conv_k3_c{c(32)}_s2_r6"]
    for t, ch, n, s in cfg:
        blocks += [f"ir_k3_e{t}_c{c(ch)}_s{s if i == 0 else 1}_r6" for i in range(n)]
    blocks += [f"conv_k1_c{make_divisible(1280 * max(1.0, width))}_s1_r6", "pool"]
    return ArchSpec.from_blocks(blocks, resolution, 1.0, 1000, name=f"mobilenet_v2 {width:g} @{resolution}")


def mnasnet_a1_at(width: float = 1.0, resolution: int = 224) -> ArchSpec:
    """MnasNet-A1 (tensorflow/tpu mnasnet_models.py): channels scaled, the 1280 head kept.
    Its SE squeezes to 1/4 of the block's *input* channels; spnas's SE to 1/4 of the expanded ones."""
    c = lambda n: make_divisible(n * width)  # noqa: E731
    cfg = [(6, 3, 24, 2, 2, False), (3, 5, 40, 3, 2, True), (6, 3, 80, 4, 2, False), (6, 3, 112, 2, 1, True),
           (6, 5, 160, 3, 2, True), (6, 3, 320, 1, 1, False)]
    blocks = [f"conv_k3_c{c(32)}_s2", f"ir_k3_e1_c{c(16)}_s1"]
    for e, k, ch, n, s, se in cfg:
        blocks += [f"ir_k{k}_e{e}_c{c(ch)}_s{s if i == 0 else 1}{'_se' if se else ''}" for i in range(n)]
    blocks += ["conv_k1_c1280_s1", "pool"]
    return ArchSpec.from_blocks(blocks, resolution, 1.0, 1000, name=f"mnasnet_a1 {width:g} @{resolution}")


def published_network(row: Published) -> ArchSpec | None:
    """The spnas architecture of a published float network, or None (int8, minimalistic, not expressible)."""
    name = row.network
    if "8-bit" in name or "quant" in name or "int8" in name or "minimalistic" in name or row.resolution is None:
        return None
    r = row.resolution
    m = re.match(r"MobileNetV2 ([\d.]+)", name)
    if m:
        return mobilenet_v2_at(float(m.group(1)), r)
    m = re.match(r"MobileNetV3-(Large|Small) ([\d.]+)", name)
    if m:
        make = mobilenet_v3_large if m.group(1) == "Large" else mobilenet_v3_small
        return make(resolution=r, width=float(m.group(2)))
    m = re.match(r"MnasNet-A1 ([\d.]+)", name)
    if m:
        return mnasnet_a1_at(float(m.group(1)), r)
    if name.startswith("MnasNet (ProxylessNAS re-impl.)"):
        return mnasnet_a1_at(1.0, r)
    if name.startswith("ProxylessNAS-Mobile") and "1.4" not in name:
        return ArchSpec.from_blocks(proxyless_mobile_blocks(), r, 1.0, 1000, name="proxylessnas_mobile")
    return None


# (phone, source prefix, anchor network, anchor resolution, measured phone whose model predicts)
COMPARISONS = [
    ("Google Pixel 1", "tensorflow/models@0ba83cf0", "MobileNetV2 1.0", 224, "pixel1"),
    ("Google Pixel 1", "tensorflow/tpu@009812fb", "MnasNet-A1 1.0", 224, "pixel1"),
    ("Google Pixel 1 (per paper)", "mit-han-lab/proxylessnas@3cec3ed6", "MobileNetV2 1.0", 224, "pixel1"),
    ("Google Pixel 3", "tensorflow/models@0ba83cf0", "MobileNetV3-Large 1.0 (float)", 224, "pixel3"),
]


def whole_network_checks(fits: MeasuredFits, folder: Any = None) -> list[dict[str, Any]]:
    """Published ratios (network / anchor, same phone and source) against the phone's fitted model."""
    from pathlib import Path

    rows = published_latencies(Path(folder) if folder else None)
    out = []
    for phone, src, anchor, ares, dev in COMPARISONS:
        group = [r for r in rows if r.phone == phone and r.source.startswith(src)]
        anchor_row = next((r for r in group if r.network == anchor and r.resolution == ares), None)
        if anchor_row is None:
            continue
        model = DeviceModel(dict(fits.model(dev).theta), MEASURED[dev].cache_kb, 1.0, dev)
        a_arch = published_network(anchor_row)
        assert a_arch is not None
        a_pred = model.total_ms(op.key for op in ops_of(a_arch))
        for r in group:
            arch = published_network(r)
            if arch is None or r is anchor_row:
                continue
            pred = model.total_ms(op.key for op in ops_of(arch))
            pub_ratio, pred_ratio = r.ms / anchor_row.ms, pred / a_pred
            out.append({"phone": phone, "source": src, "network": r.network, "resolution": r.resolution,
                        "anchor": f"{anchor} @{ares}", "published_ms": r.ms, "published_ratio": pub_ratio,
                        "predicted_ratio": pred_ratio, "ratio_err_pct": (pred_ratio / pub_ratio - 1) * 100,
                        "model": dev, "line": r.line})
    return out


# ---------------------------------------------------------------------------------- shipped tables
def table_keys(resolution: int = 224) -> list[str]:
    """The keys a shipped table is checked on: every space's and the reference nets' at `resolution`."""
    from search_spaces.spaces import SPACES

    keys: set[str] = set(ops_of_references(resolution))
    for space in SPACES.values():
        keys.update(ops_of_space(space, resolution))
    return sorted(keys)


def shared_key_checks(table: LatencyTable, base: str, fits: MeasuredFits) -> dict[str, Any]:
    """The table's rows at the keys its base phone measured (one scale), and the phone's own ratios."""
    measured = {r.key: r.ms for r in fits.fits[base].rows if r.key}
    keys = [k for k in table_keys() if k in measured]
    if not keys:
        return {"n": 0}
    pred = np.array([table.ms(k) for k in keys])
    meas = np.array([measured[k] for k in keys])
    err, s = _scaled_errors(pred, meas)
    out: dict[str, Any] = {"n": len(keys), "keys": keys, "max_abs_err_pct": float(np.max(np.abs(err)) * 100),
                           "mape_pct": float(np.mean(np.abs(err)) * 100),
                           "within_10pct": float(np.mean(np.abs(err) <= SHARED_KEY_TARGET)), "scale": s,
                           "errors_pct": {k: float(e * 100) for k, e in zip(keys, err)}}
    pairs = _choice_pairs(keys)
    for name, (num, den) in {"k5/k3 at e6": ("k5e6", "k3e6"), "k5e6/k3e3": ("k5e6", "k3e3")}.items():
        ph, tb = [], []
        for p in pairs:
            if num in p and den in p:
                ph.append(measured[p[num]] / measured[p[den]])
                tb.append(table.ms(p[num]) / table.ms(p[den]))
        if ph:
            out[f"phone {name}"] = float(np.mean(ph))
            out[f"table {name}"] = float(np.mean(tb))
    return out


def _choice_pairs(keys: list[str]) -> list[dict[str, str]]:
    """Keys grouped by shape, indexed by choice ('k5e6' ...)."""
    groups: dict[str, dict[str, str]] = {}
    for k in keys:
        m = re.match(r"(expanded_conv-input:[^-]+-output:[^-]+)-expand:(\w+)-kernel:(\d)-(.*)", k)
        if m:
            groups.setdefault(m.group(1) + m.group(4), {})[f"k{m.group(3)}e{m.group(2)}"] = k
    return list(groups.values())


def ratio_table(tables: dict[str, LatencyTable], space: SearchSpace, resolution: int = 224) -> list[dict[str, Any]]:
    """Per table: mean over the space's layers of k5/k3 (at e3, e6), e6/e3 (at k3, k5), SE and h-swish
    (the same layer with / without) cost ratios, and k5e6/k3e3."""
    by_choice = {c: {op.block_index: op.key for op in ops_of(space.decode([c] * space.num_layers, resolution))}
                 for c in space.choices if c != SKIP}
    out = []
    for name, t in tables.items():
        acc: dict[str, list[float]] = {k: [] for k in ("k5/k3 e3", "k5/k3 e6", "e6/e3 k3", "e6/e3 k5", "k5e6/k3e3",
                                                        "SE", "h-swish")}
        for slot in space.slots:
            k = {c: by_choice[c][slot.block_index] for c in by_choice}
            ms = {c: t.ms(v) for c, v in k.items()}
            acc["k5/k3 e3"].append(ms["k5_e3"] / ms["k3_e3"])
            acc["k5/k3 e6"].append(ms["k5_e6"] / ms["k3_e6"])
            acc["e6/e3 k3"].append(ms["k3_e6"] / ms["k3_e3"])
            acc["e6/e3 k5"].append(ms["k5_e6"] / ms["k5_e3"])
            acc["k5e6/k3e3"].append(ms["k5_e6"] / ms["k3_e3"])
            base = k["k3_e6"]
            for label, field_, on, off in (("SE", "se", "se:1", "se:0"), ("h-swish", "hs", "hs:1", "hs:0")):
                with_, without = base.replace(off, on), base.replace(on, off)
                if t.answerable(with_) and t.answerable(without):
                    acc[label].append(t.ms(with_) / t.ms(without))
        out.append({"table": name, **{k: float(np.mean(v)) if v else float("nan") for k, v in acc.items()}})
    return out


def pairwise_tau(tables: dict[str, LatencyTable], keys: list[str]) -> dict[str, dict[str, float]]:
    """Kendall tau between every two tables' rows over `keys`."""
    vals = {n: [t.ms(k) for k in keys] for n, t in tables.items()}
    return {a: {b: _tau(vals[a], vals[b]) for b in tables} for a in tables}


def validation_summary(fits: MeasuredFits, tables: dict[str, LatencyTable], folder: Any = None) -> dict[str, Any]:
    """Every check above, with targets and whether each is met (what the tables' meta records)."""
    lodo = leave_one_device_out(fits)
    nets = whole_network_checks(fits, folder)
    pooled = [r for r in lodo if r["from"].count("+") or r["mapping"].startswith("pooled")]
    shared = {n: shared_key_checks(t, SPECS[n].base, fits) for n, t in tables.items()}
    return {
        "leave_one_device_out": lodo,
        "held_out_tau_min": min(r["kendall_tau"] for r in pooled),
        "held_out_tau_target": TAU_TARGET,
        "whole_network": nets,
        "whole_network_max_ratio_err_pct": max(abs(r["ratio_err_pct"]) for r in nets) if nets else None,
        "whole_network_target_pct": RATIO_TARGET * 100,
        "shared_keys": {n: {k: v for k, v in s.items() if k not in ("keys", "errors_pct")} for n, s in shared.items()},
        "shared_key_target_pct": SHARED_KEY_TARGET * 100,
    }
