"""Attribution: a whole network's per-op profile mapped back to the op keys of its architecture.

A profile lists what the runtime ran, in run order: TFLite nodes (`CONV_2D`, `DEPTHWISE_CONV_2D`,
`PAD`, `ADD`, `HARD_SWISH`, ...) or a delegate's own operators (XNNPACK: `Convolution (NHWC, F32)
DWConv`, `Fully Connected (NC, F32) GEMM` for a 1x1 convolution, `HardSwish (NC)`, ...), with
activations fused or not and pads apart or folded. Names are the runtime's (`[Delegate]:7`), so the
mapping uses the one structure every runtime keeps: each inverted-residual block runs exactly one
depthwise convolution, and the layers around it are in network order.

- stem: everything up to its first convolution and the activations after it (a leading pad with it);
- block j: from its expansion convolution (the last convolution before its depthwise one, with the
  pads and activations between) to the entry before block j+1 starts: SE, projection, residual add;
- head, read from the end: the classifier is the last convolution/FC, then the hidden FC, the pool
  (a mean) and the 1x1 head convolution, each with the activations after it.

Layout entries before the stem (an input transpose or quantize) and after the classifier belong to no
key: they are returned as `unattributed`, never dropped, and the table counts them in its overhead.
A profile whose structure does not match the architecture (another number of depthwise
convolutions, no classifier) is refused with the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

from search_spaces import ArchSpec
from spnas_core.errors import InputError

from latency_tables.lookup.keys import ArchOp, ops_of
from latency_tables.profilers.base import OpEntry

_KINDS = [  # (kind, pattern on the node type), first match wins: depthwise before convolution
    ("dw", r"DEPTHWISE|DWConv|Depthwise"),
    ("conv", r"CONV_2D|Convolution|Conv2d|FULLY_CONNECTED|Fully ?Connected|GEMM|MatMul|BATCH_MATMUL|\bConv\b"),
    ("pool", r"\bMEAN\b|Mean|\bSUM\b|AVERAGE_POOL|Average ?Pool|Global ?Average|AvgPool|Reduce|REDUCE"),
    ("add", r"\bADD\b|\bAdd\b|ElementWiseAdd"),
    ("mul", r"\bMUL\b|Multiply|ElementWiseMultiply"),
    ("act", r"HARD_SWISH|HardSwish|Hardswish|RELU|ReLU|Relu|LOGISTIC|Sigmoid|Clamp|HardSigmoid|HARD_SIGMOID|TANH"),
    ("pad", r"\bPAD\b|Pad"),
    ("layout", r"TRANSPOSE|RESHAPE|SQUEEZE|EXPAND_DIMS|QUANTIZE|Copy|Transpose|Reshape|Squeeze|Convert|Quantize"),
]
_KIND_RE = [(k, re.compile(p)) for k, p in _KINDS]


def op_kind(node_type: str) -> str:
    """The coarse kind of a profile entry: dw, conv, pool, add, mul, act, pad, layout or other."""
    for kind, rx in _KIND_RE:
        if rx.search(node_type):
            return kind
    return "other"


@dataclass
class Attribution:
    """Per op of the architecture (network order) its time in ms and the profile entries it took."""

    arch: ArchSpec
    ops: list[ArchOp]
    ms: list[float]
    entries: list[list[int]]  # indices into the profile's entries, per op
    unattributed: list[OpEntry] = field(default_factory=list)

    @property
    def attributed_ms(self) -> float:
        return sum(self.ms)

    @property
    def unattributed_ms(self) -> float:
        return sum(e.ms for e in self.unattributed)


def attribute(arch: ArchSpec, entries: Sequence[OpEntry]) -> Attribution:
    """Map a profile's entries onto `ops_of(arch)` (see the module docstring)."""
    ops = ops_of(arch)
    kinds = [op_kind(e.node_type) for e in entries]
    n = len(entries)
    layers = arch.resolve()
    block_of = {layer.index: layer for layer in layers}
    ir_ops = [i for i, op in enumerate(ops) if op.key.startswith("expanded_conv-")]
    dws = [i for i, k in enumerate(kinds) if k == "dw"]
    if len(dws) != len(ir_ops):
        raise InputError(f"profile of {arch.name or 'the network'}: {len(dws)} depthwise convolutions for "
                         f"{len(ir_ops)} inverted-residual blocks; is it the profile of this architecture?")
    span: list[tuple[int, int]] = [(0, 0)] * len(ops)

    # head, from the end: each op takes its trailing activations/layout, then its own main entry
    end = n
    while end > 0 and kinds[end - 1] in ("layout", "other"):
        end -= 1
    trailing = list(range(end, n))
    head = [i for i, op in enumerate(ops) if op.block_index == -1 or
            (op.block_index >= 0 and block_of[op.block_index].block.kind in ("pool", "fc"))
            or op.key.startswith("Conv_1-")]
    for i in reversed(head):
        stop = end
        want = "pool" if ops[i].key.startswith("AvgPool2D-") else "conv"
        while end > 0 and kinds[end - 1] in ("act", "layout", "pad", "mul", "add"):
            end -= 1
        if end == 0 or kinds[end - 1] != want:
            raise InputError(f"profile of {arch.name or 'the network'}: expected a {want} entry for {ops[i].key} "
                             f"at position {end - 1} from the end, found '{entries[end - 1].node_type}'")
        end -= 1
        while end > 0 and want == "conv" and kinds[end - 1] == "pad":
            end -= 1
        span[i] = (end, stop)
    head_start = end

    # stem: leading layout entries are no layer's; the stem runs up to the first block
    start = 0
    while start < n and kinds[start] in ("layout", "other"):
        start += 1
    leading = list(range(0, start))

    # blocks: each starts at its expansion convolution (with its activation, however the runtime
    # spells it) before its depthwise one; a pad before the depthwise convolution is the block's
    starts = []
    for j, i in enumerate(ir_ops):
        layer = block_of[ops[i].block_index]
        s = dws[j]
        while s > start and kinds[s - 1] == "pad":
            s -= 1
        if layer.mid != layer.cin:
            while s > start and kinds[s - 1] in ("act", "mul", "add"):
                s -= 1
            if s <= start or kinds[s - 1] != "conv":
                raise InputError(f"profile of {arch.name or 'the network'}: block {ops[i].block_index} has no "
                                 f"expansion convolution before its depthwise one")
            s -= 1
        starts.append(s)
    stem = [i for i, op in enumerate(ops) if op.key.startswith("Conv-")]
    first = starts[0] if starts else head_start
    if stem:
        if "conv" not in kinds[start:first]:
            raise InputError(f"profile of {arch.name or 'the network'}: no stem convolution before the first block")
        span[stem[0]] = (start, first)
    elif first != start:
        raise InputError(f"profile of {arch.name or 'the network'}: {first - start} entries before the first block "
                         f"and no stem to hold them")
    bounds = starts + [head_start]
    for j, i in enumerate(ir_ops):
        span[i] = (bounds[j], bounds[j + 1])
    got = [list(range(a, b)) for a, b in span]
    ms = [sum(entries[k].ms for k in idx) for idx in got]
    return Attribution(arch, ops, ms, got, [entries[k] for k in leading + trailing])
