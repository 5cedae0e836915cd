"""Op keys: one latency-table row per layer shape and choice, in the OFA / ProxylessNAS style.

    expanded_conv-input:56x56x24-output:28x28x40-expand:6-kernel:5-stride:2-idskip:0-se:1-hs:1
    Conv-input:224x224x3-output:112x112x16-kernel:3-stride:2-hs:1          (stem)
    Conv_1-input:7x7x160-output:7x7x960-kernel:1-stride:1-hs:1             (head 1x1 conv)
    AvgPool2D-input:7x7x960
    Conv_2-input:1x1x960-output:1x1x1280-hs:1                              (MobileNetV3 hidden FC)
    Logits-input:1x1x1280-output:1000
    Projection-input:32x32x32-output:16x16x64-stride:2                     (1x1 conv + BN, no activation:
                                                                            a skip that changes shape)

`expand` is the ratio (ProxylessNAS convention); ReLU and ReLU6 share `hs:0` because TFLite fuses
both into the convolution at the same cost. A `skip` layer has no row: it costs nothing.

This module is the key format only (no torch): loading and reading a table never builds a layer. The
single-op PyTorch modules a key is measured with are in `latency_tables.measuring.micro`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from search_spaces import ArchSpec, Block, ResolvedLayer, SearchSpace, make_divisible
from search_spaces.grammar import fmt_float
from search_spaces.reference import REFERENCE_NETS
from spnas_core.errors import OpKeyError


OP_NAMES = ("expanded_conv", "Conv", "Conv_1", "Conv_2", "AvgPool2D", "Logits", "Projection")
# The classifier a network's latency is read at: ImageNet's 1000 classes, as the published tables and the
# SoCs' published MobileNetV2 latencies have it (a search on a 10-class proxy still ships a 1000-way head).
DEPLOY_NUM_CLASSES = 1000


def op_key(layer: ResolvedLayer, num_classes: int | None = None) -> str | None:
    """The table key of one resolved layer (None for `skip`)."""
    b = layer.block
    hs = int(b.activation == "hs") if b.kind in ("conv", "ir", "fc") else 0
    shape_in = f"{layer.hin}x{layer.win}x{layer.cin}"
    shape_out = f"{layer.hout}x{layer.wout}x{layer.cout}"
    if b.kind == "ir":
        return (f"expanded_conv-input:{shape_in}-output:{shape_out}-expand:{fmt_float(b.expansion)}"
                f"-kernel:{b.kernel}-stride:{b.stride}-idskip:{int(layer.residual)}-se:{int(b.se)}-hs:{hs}")
    if b.kind == "conv":
        name = "Conv" if layer.index == 0 else "Conv_1"
        return f"{name}-input:{shape_in}-output:{shape_out}-kernel:{b.kernel}-stride:{b.stride}-hs:{hs}"
    if b.kind == "proj":
        return f"Projection-input:{shape_in}-output:{shape_out}-stride:{b.stride}"
    if b.kind == "pool":
        return f"AvgPool2D-input:{shape_in}"
    if b.kind == "fc":
        return f"Conv_2-input:1x1x{layer.cin}-output:1x1x{layer.cout}-hs:{hs}"
    return None


def logits_key(cin: int, num_classes: int) -> str:
    """Key of the final classifier row."""
    return f"Logits-input:1x1x{cin}-output:{num_classes}"


@dataclass(frozen=True)
class ArchOp:
    """One costed op of an architecture: which block it came from and its key."""

    block_index: int  # -1 for the classifier
    key: str


def ops_of(arch: ArchSpec) -> list[ArchOp]:
    """Every costed op of an architecture, in network order (skips omitted, classifier last)."""
    out = []
    layers = arch.resolve()
    for layer in layers:
        k = op_key(layer)
        if k is not None:
            out.append(ArchOp(layer.index, k))
    out.append(ArchOp(-1, logits_key(layers[-1].cout, arch.num_classes)))
    return out


def ops_of_space(space: SearchSpace, resolution: int = 224, width: float = 1.0,
                 num_classes: int | Iterable[int] = 1000) -> list[str]:
    """All keys any architecture of the space can contain (every choice of every layer), sorted."""
    classes = [num_classes] if isinstance(num_classes, int) else list(num_classes)
    keys: set[str] = set()
    for c in space.options:  # every candidate, and skip (a projection's row where skipping changes the shape)
        picks = [c if c in sl.choices else sl.choices[0] for sl in space.slots]
        arch = space.decode(picks, resolution, width, classes[0])
        keys.update(op.key for op in ops_of(arch))
        for n in classes[1:]:
            keys.update(op.key for op in ops_of(arch.replace(num_classes=n)))
    return sorted(keys)


def ops_of_references(resolution: int = 224, num_classes: int | Iterable[int] = 1000) -> list[str]:
    """All keys of the reference networks (MobileNetV2, V3-Large, V3-Small)."""
    classes = [num_classes] if isinstance(num_classes, int) else list(num_classes)
    keys: set[str] = set()
    for make in REFERENCE_NETS.values():
        for n in classes:
            keys.update(op.key for op in ops_of(make(resolution=resolution, num_classes=n)))
    return sorted(keys)


# ---------------------------------------------------------------------------------- parsing
def parse_op_key(key: str) -> dict[str, object]:
    """Split a key into its op name and fields; shapes become (h, w, c) tuples."""
    if not isinstance(key, str) or "-" not in key:
        raise OpKeyError(f"'{key}' is not an op key (expected name-field:value-...)")
    name, *fields = key.split("-")
    out: dict[str, object] = {"op": name}
    for f in fields:
        if ":" not in f:
            raise OpKeyError(f"op key '{key}': field '{f}' has no ':'")
        k, v = f.split(":", 1)
        if k in ("input", "output"):
            dims = v.split("x")
            try:
                out[k] = tuple(int(d) for d in dims)
            except ValueError:
                raise OpKeyError(f"op key '{key}': bad shape '{v}'") from None
        elif k == "expand":
            out[k] = float(v)
        else:
            try:
                out[k] = int(v)
            except ValueError:
                raise OpKeyError(f"op key '{key}': field '{k}' must be an integer, got '{v}'") from None
    if name not in OP_NAMES:
        raise OpKeyError(f"op key '{key}': unknown op '{name}'")
    return out


def layer_of_key(key: str) -> ResolvedLayer:
    """Rebuild the `ResolvedLayer` a key describes (inverse of `op_key`, for micro-models and cost models)."""
    f = parse_op_key(key)
    op = f["op"]
    hin, win, cin = _shape3(f["input"], key)
    act = "hs" if f.get("hs", 0) else None
    if op == "expanded_conv":
        hout, wout, cout = _shape3(f["output"], key)
        e = float(f["expand"])  # type: ignore[arg-type]
        b = Block("ir", kernel=int(f["kernel"]), expansion=e, channels=cout, stride=int(f["stride"]),
                  se=bool(f.get("se", 0)), act=act)
        mid = make_divisible(cin * e)
        return ResolvedLayer(1, b, cin, cout, hin, win, hout, wout, mid, make_divisible(mid // 4) if b.se else 0)
    if op in ("Conv", "Conv_1"):
        hout, wout, cout = _shape3(f["output"], key)
        b = Block("conv", kernel=int(f["kernel"]), channels=cout, stride=int(f["stride"]), act=act)
        return ResolvedLayer(0 if op == "Conv" else 1, b, cin, cout, hin, win, hout, wout)
    if op == "Projection":
        hout, wout, cout = _shape3(f["output"], key)
        return ResolvedLayer(1, Block("proj", channels=cout, stride=int(f["stride"])), cin, cout, hin, win, hout, wout)
    if op == "AvgPool2D":
        return ResolvedLayer(1, Block("pool"), cin, cin, hin, win, 1, 1)
    if op == "Conv_2":
        cout = _shape3(f["output"], key)[2]
        return ResolvedLayer(1, Block("fc", channels=cout, act=act or "re"), cin, cout, 1, 1, 1, 1)
    if op == "Logits":
        out = f["output"]
        n = out[0] if isinstance(out, tuple) else int(out)  # type: ignore[arg-type]
        return ResolvedLayer(-1, Block("fc", channels=n), cin, n, 1, 1, 1, 1)
    raise OpKeyError(f"op key '{key}': unknown op '{op}'")


def _shape3(v: object, key: str) -> tuple[int, int, int]:
    if not isinstance(v, tuple) or len(v) != 3:
        raise OpKeyError(f"op key '{key}': expected an HxWxC shape, got {v}")
    return v  # type: ignore[return-value]
