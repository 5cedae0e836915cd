"""A per-device latency model of one op: what a mobile CPU spends its time on, fitted to measurements.

An op (one table row) is decomposed into the TFLite kernels it runs: 1x1 convolutions, a depthwise
convolution, the stem's full convolution, GEMVs (squeeze-excite, hidden FC, logits) and elementwise
kernels that are not fused into a convolution (h-swish, the SE scale, the residual add, pooling).
Each op becomes nine features in three groups:

    compute   pw_macs, dw_macs, conv_macs, fc_macs       (M multiply-accumulates per kernel type)
    memory    act_mb (activation + weight bytes every kernel moves), spill_mb (bytes of kernels whose
              working set exceeds the last-level cache, i.e. DRAM traffic), dw_in_m (depthwise
              input elements: strided reads), ew_m (elementwise elements)
    dispatch  kernels (how many kernels the interpreter dispatches)

and a device is a non-negative vector `theta` (ms per unit of each feature): latency = sum theta_f
x_f. Fitted to a device's measured rows it says where that device loses time (Pixel 1: strided
depthwise reads and elementwise traffic; Note10: GEMVs and bytes), which is what makes the ops of
one network rank differently on different phones. Features come from shapes alone, so the model
answers any op (any class count, width or resolution), not only the rows someone measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from search_spaces import ResolvedLayer
from spnas_core.errors import TableError

F32 = 4  # bytes per float32 element

COMPUTE = ("pw_macs", "dw_macs", "conv_macs", "fc_macs")
MEMORY = ("act_mb", "spill_mb", "dw_in_m", "ew_m")
DISPATCH = ("kernels",)
FEATURES: tuple[str, ...] = COMPUTE + MEMORY + DISPATCH
GROUP_OF = {**{f: "compute" for f in COMPUTE}, **{f: "memory" for f in MEMORY}, **{f: "dispatch" for f in DISPATCH}}


@dataclass(frozen=True)
class Kernel:
    """One TFLite kernel: its type, multiply-accumulates and the float32 elements it reads and writes."""

    kind: str  # pw | dw | conv | fc | ew
    macs: float = 0.0
    in_elems: float = 0.0
    out_elems: float = 0.0
    weight_elems: float = 0.0

    @property
    def bytes(self) -> float:
        return F32 * (self.in_elems + self.out_elems + self.weight_elems)


def _ew(n_in: float, n_out: float) -> Kernel:
    return Kernel("ew", 0.0, n_in, n_out, 0.0)


def mbconv_kernels(hin: int, win: int, cin: int, cout: int, mid: int, kernel: int, stride: int, *,
                   se_hidden: int = 0, hswish: bool = False, residual: bool = False,
                   always_expand: bool = False) -> list[Kernel]:
    """An inverted residual: 1x1 expand (skipped when mid == cin, as MobileNets and TFLite do, unless
    `always_expand`: FBNet blocks keep it), depthwise, optional SE, 1x1 project, optional add."""
    hout, wout = -(-hin // stride), -(-win // stride)
    a_in, a_out = hin * win, hout * wout
    out: list[Kernel] = []
    if mid != cin or always_expand:
        out.append(Kernel("pw", a_in * cin * mid, a_in * cin, a_in * mid, cin * mid))
        if hswish:
            out.append(_ew(a_in * mid, a_in * mid))
    out.append(Kernel("dw", a_out * mid * kernel * kernel, a_in * mid, a_out * mid, mid * kernel * kernel))
    if hswish:
        out.append(_ew(a_out * mid, a_out * mid))
    if se_hidden:
        out.append(_ew(a_out * mid, mid))  # squeeze: global mean
        out.append(Kernel("fc", 2 * mid * se_hidden, mid, mid, 2 * mid * se_hidden))  # reduce + expand GEMVs
        out.append(_ew(a_out * mid, a_out * mid))  # excite: scale every element
    out.append(Kernel("pw", a_out * mid * cout, a_out * mid, a_out * cout, mid * cout))
    if residual:
        out.append(_ew(2 * a_out * cout, a_out * cout))
    return out


def conv_kernels(hin: int, win: int, cin: int, cout: int, kernel: int, stride: int, hswish: bool = False
                 ) -> list[Kernel]:
    """A full convolution (stem) or a 1x1 head convolution, with its h-swish when not fused."""
    hout, wout = -(-hin // stride), -(-win // stride)
    kind = "pw" if kernel == 1 else "conv"
    out = [Kernel(kind, hout * wout * cin * cout * kernel * kernel, hin * win * cin, hout * wout * cout,
                  cin * cout * kernel * kernel)]
    if hswish:
        out.append(_ew(hout * wout * cout, hout * wout * cout))
    return out


def pool_kernels(hin: int, win: int, c: int) -> list[Kernel]:
    """Global average pooling."""
    return [_ew(hin * win * c, c)]


def fc_kernels(cin: int, cout: int, hswish: bool = False) -> list[Kernel]:
    """A fully connected layer (GEMV at batch 1): MobileNetV3's hidden FC or the logits."""
    out = [Kernel("fc", cin * cout, cin, cout, cin * cout)]
    if hswish:
        out.append(_ew(cout, cout))
    return out


def kernels_of_layer(layer: ResolvedLayer, op: str) -> list[Kernel]:
    """The kernels of one spnas op (a `ResolvedLayer` as `keys.layer_of_key` rebuilds it)."""
    b = layer.block
    hs = b.kind in ("ir", "conv", "fc") and b.activation == "hs"
    if op == "expanded_conv":
        return mbconv_kernels(layer.hin, layer.win, layer.cin, layer.cout, layer.mid, b.kernel or 1, b.stride or 1,
                              se_hidden=layer.se_hidden, hswish=hs, residual=layer.residual)
    if op in ("Conv", "Conv_1"):
        return conv_kernels(layer.hin, layer.win, layer.cin, layer.cout, b.kernel or 1, b.stride or 1, hs)
    if op == "Projection":  # 1x1 conv + BN (folded), no activation
        return conv_kernels(layer.hin, layer.win, layer.cin, layer.cout, 1, b.stride or 1, False)
    if op == "AvgPool2D":
        return pool_kernels(layer.hin, layer.win, layer.cin)
    if op in ("Conv_2", "Logits"):
        return fc_kernels(layer.cin, layer.cout, hs and op == "Conv_2")
    raise TableError(f"no cost model for op '{op}'")


def kernels_of_key(key: str) -> list[Kernel]:
    """The kernels of the op an op key describes."""
    from latency_tables.lookup.keys import layer_of_key, parse_op_key

    return kernels_of_layer(layer_of_key(key), str(parse_op_key(key)["op"]))


def features(kernels: Iterable[Kernel], cache_kb: float) -> np.ndarray:
    """The feature vector (order: `FEATURES`) of a kernel list on a device with `cache_kb` of last-level cache."""
    x = dict.fromkeys(FEATURES, 0.0)
    limit = cache_kb * 1024.0
    for k in kernels:
        if k.kind in ("pw", "dw", "conv", "fc"):
            x[f"{k.kind}_macs"] += k.macs / 1e6
        if k.kind == "dw":
            x["dw_in_m"] += k.in_elems / 1e6
        if k.kind == "ew":
            x["ew_m"] += max(k.in_elems, k.out_elems) / 1e6
        x["act_mb"] += k.bytes / 1e6
        if k.bytes > limit:
            x["spill_mb"] += k.bytes / 1e6
        x["kernels"] += 1.0
    return np.array([x[f] for f in FEATURES], dtype=float)


# ---------------------------------------------------------------------------------- the model
@dataclass
class DeviceModel:
    """Latency of any op on one device: `scale * sum_f theta_f * x_f(op, cache_kb)`, plus a per-shape
    correction where the phone the model comes from measured that shape (`corrections`: measured /
    modeled of the plain op, i.e. without SE and h-swish). What the features miss about a
    convolution shape (its kernel's tile fit, a slow path) goes with the shape: `op_ms(op) =
    model(op) + (c - 1) * model(plain op)`, so SE and h-swish keep their modeled increments."""

    theta: dict[str, float]
    cache_kb: float
    scale: float = 1.0
    name: str = ""
    corrections: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.theta) - set(FEATURES)
        if unknown:
            raise TableError(f"device model '{self.name}': unknown features {sorted(unknown)}; known: {FEATURES}")
        self.theta = {f: float(self.theta.get(f, 0.0)) for f in FEATURES}
        if any(v < 0 or not math.isfinite(v) for v in self.theta.values()):
            raise TableError(f"device model '{self.name}': coefficients must be finite and >= 0, got {self.theta}")

    @property
    def vector(self) -> np.ndarray:
        return np.array([self.theta[f] for f in FEATURES])

    def kernels_ms(self, kernels: Sequence[Kernel]) -> float:
        return float(self.scale * features(kernels, self.cache_kb) @ self.vector)

    def op_ms(self, key: str) -> float:
        """Latency (ms) of the op an op key describes."""
        v = self.kernels_ms(kernels_of_key(key))
        if self.corrections:
            plain = plain_key(key)
            c = self.corrections.get(plain)
            if c is not None:
                v += (c - 1.0) * (v if plain == key else self.kernels_ms(kernels_of_key(plain)))
        return v

    def total_ms(self, keys: Iterable[str]) -> float:
        return sum(self.op_ms(k) for k in keys)

    def breakdown(self, kernels: Sequence[Kernel]) -> dict[str, float]:
        """ms per feature group (compute / memory / dispatch) of an op."""
        x = features(kernels, self.cache_kb) * self.vector * self.scale
        out = {"compute": 0.0, "memory": 0.0, "dispatch": 0.0}
        for f, v in zip(FEATURES, x):
            out[GROUP_OF[f]] += float(v)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"theta_ms_per_unit": dict(self.theta), "units": UNITS, "cache_kb": self.cache_kb,
                "scale": self.scale, "name": self.name, "corrections": dict(sorted(self.corrections.items()))}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DeviceModel":
        try:
            return cls(dict(d["theta_ms_per_unit"]), float(d["cache_kb"]), float(d.get("scale", 1.0)),
                       str(d.get("name", "")), {str(k): float(v) for k, v in (d.get("corrections") or {}).items()})
        except (KeyError, TypeError, ValueError) as e:
            raise TableError(f"malformed device model in a table's meta ({e}); regenerate the table with "
                             f"`spnas-profile model`") from None


def plain_key(key: str) -> str:
    """The key without squeeze-excite and h-swish (`-se:0`, `-hs:0`): the shape a correction belongs to."""
    return key.replace("-se:1", "-se:0").replace("-hs:1", "-hs:0")


UNITS = {"pw_macs": "M MACs", "dw_macs": "M MACs", "conv_macs": "M MACs", "fc_macs": "M MACs",
         "act_mb": "MB moved", "spill_mb": "MB moved by kernels larger than the cache", "dw_in_m": "M elements",
         "ew_m": "M elements", "kernels": "kernels"}


# ---------------------------------------------------------------------------------- fitting
@dataclass(frozen=True)
class Measured:
    """One measured op of a device: its kernels, the measured latency and where it comes from."""

    label: str
    kernels: tuple[Kernel, ...]
    ms: float
    source: str = ""
    key: str | None = None  # the spnas op key, where the op is one spnas can express


@dataclass
class FitResult:
    """A fitted device model with its in-sample residuals."""

    model: DeviceModel
    rows: list[Measured]
    predicted: list[float]
    prior_weight: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def rel_errors(self) -> np.ndarray:
        m = np.array([r.ms for r in self.rows])
        return (np.array(self.predicted) - m) / m

    def summary(self) -> dict[str, Any]:
        from scipy.stats import kendalltau

        e = self.rel_errors
        m = np.array([r.ms for r in self.rows])
        return {"n": len(self.rows), "mape_pct": float(np.mean(np.abs(e)) * 100),
                "max_abs_err_pct": float(np.max(np.abs(e)) * 100),
                "kendall_tau": float(kendalltau(self.predicted, m)[0]),
                "within_10pct": float(np.mean(np.abs(e) <= 0.10))}


def fit_device(rows: Sequence[Measured], cache_kb: float, name: str = "", prior: DeviceModel | None = None,
               prior_weight: float = 0.0, prior_features: Sequence[str] | None = None) -> FitResult:
    """Non-negative least squares on relative errors: min sum ((x.theta - t) / t)^2, theta >= 0.

    Relative errors weigh a 0.3 ms op as much as a 30 ms one (both decide rankings). With a `prior`,
    each coefficient is also pulled towards the prior's (scaled to this device by the median ratio of
    the measured rows to the prior's predictions) with `prior_weight` per row; `prior_features`
    limits that pull to the features this device's rows cannot determine (Pixel 1 and Pixel 3
    measured no squeeze-excite and one GEMV each), the others follow the data alone.
    """
    from scipy.optimize import nnls

    if len(rows) < len(FEATURES):
        raise TableError(f"fitting '{name}' needs at least {len(FEATURES)} measured ops, got {len(rows)}")
    X = np.array([features(r.kernels, cache_kb) for r in rows])
    t = np.array([r.ms for r in rows])
    A, b = X / t[:, None], np.ones_like(t)
    notes = []
    if prior is not None and prior_weight > 0:
        p = prior.vector * prior.scale
        pred = X @ p
        s = float(np.median(t / np.maximum(pred, 1e-12)))
        target = s * p
        # One penalty row per feature: (theta_f - target_f) / target_f weighs like a relative error of
        # one measured row, times sqrt(prior_weight * rows) (features whose target is 0 are left free).
        idx = [FEATURES.index(f) for f in (prior_features if prior_features is not None else FEATURES)
               if target[FEATURES.index(f)] > 0]
        w = math.sqrt(prior_weight * len(rows))
        P = np.zeros((len(idx), len(FEATURES)))
        for r, i in enumerate(idx):
            P[r, i] = w / target[i]
        A = np.vstack([A, P])
        b = np.concatenate([b, np.full(len(idx), w)])
        which = ", ".join(prior_features) if prior_features is not None else "all coefficients"
        notes.append(f"{which} pulled towards {prior.name or 'the prior'} x {s:.3f} (weight {prior_weight} per row)")
    theta, _ = nnls(A, b)
    model = DeviceModel(dict(zip(FEATURES, theta)), cache_kb, 1.0, name)
    return FitResult(model, list(rows), list(X @ theta), prior_weight, notes)


def scale_to(model: DeviceModel, keys: Sequence[str], target_ms: float) -> DeviceModel:
    """The same model with `scale` set so the ops `keys` sum to `target_ms` (e.g. MobileNetV2's
    published latency)."""
    base = DeviceModel(dict(model.theta), model.cache_kb, 1.0, model.name, dict(model.corrections))
    total = base.total_ms(keys)
    if total <= 0:
        raise TableError(f"device model '{model.name}' predicts {total} ms for the calibration network")
    return DeviceModel(dict(model.theta), model.cache_kb, target_ms / total, model.name, dict(model.corrections))
