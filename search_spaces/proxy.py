"""Proxy geometry: how a network is trained below its deployment resolution.

An ImageNet network trained on 32x32 images with its design strides ends in a 1x1 map: its last
stages see 2x2 or 1x1 inputs, where a 5x5 kernel's outer ring only ever touches zero padding. The
accuracy loss then cannot see those layers' decisions, and every model compared is crippled by the
proxy in its own way. A `Proxy` names the stride-2 blocks that are trained at stride 1 so that every
layer's input map stays at least `min_map` pixels wide; the parameters are the same (a stride
changes no weight shape and, at a stage's first block, no residual), so the weights trained under
the proxy load into the deployed network unchanged. The deployed geometry (the design's strides, at
the deployment resolution) is what the latency tables and the exporters see.

Rule (`drop="last"`, the default): drop the stride of the *last* stride-2 blocks first, as few as
needed. At 32 px this drops two strides of MobileNetV2 / MobileNetV3 and their searched variants,
so every searchable layer of the space sees >= 4x4 (the late stages cost 4-16x more compute, the
early ones nothing more). `drop="first"` drops the stem's and the first stages' strides instead
(the usual CIFAR adaptation; every layer 4-16x the compute).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from spnas_core.errors import ArchSpecError

from .arch import ArchSpec


@dataclass(frozen=True)
class Proxy:
    """Training geometry: input resolution and the blocks trained at stride 1 instead of 2."""

    resolution: int
    dropped: tuple[int, ...] = ()  # block indices whose stride 2 is trained as stride 1
    min_map: int = 4

    def apply(self, arch: ArchSpec) -> ArchSpec:
        """The network as trained: `arch` at the proxy resolution with the dropped strides at 1."""
        blocks = list(arch.blocks)
        for i in self.dropped:
            if blocks[i].stride != 2:
                raise ArchSpecError(f"proxy drops the stride of block {i} '{blocks[i]}', which is not stride 2; "
                                 f"the proxy was computed for another architecture")
            blocks[i] = replace(blocks[i], stride=1)
        return ArchSpec.from_blocks(blocks, self.resolution, arch.width, arch.num_classes, arch.name,
                                    arch.in_channels)

    def to_dict(self) -> dict[str, Any]:
        return {"resolution": self.resolution, "dropped_strides": list(self.dropped), "min_map": self.min_map}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Proxy":
        return cls(int(d["resolution"]), tuple(int(i) for i in d.get("dropped_strides", ())),
                   int(d.get("min_map", 4)))

    def describe(self, arch: ArchSpec | None = None) -> str:
        """E.g. '32 px, strides of blocks 7, 13 trained at 1 (every layer >= 4x4)'."""
        if not self.dropped:
            return f"{self.resolution} px, design strides"
        names = ", ".join(f"{i} ({arch.blocks[i]})" if arch else str(i) for i in self.dropped)
        return f"{self.resolution} px, stride of block(s) {names} trained at 1 (every layer >= {self.min_map}x{self.min_map})"


def _min_input_map(arch: ArchSpec) -> int:
    """The smallest input map any conv / inverted-residual block sees."""
    return min(min(layer.hin, layer.win) for layer in arch.resolve() if layer.block.kind in ("conv", "ir", "proj"))


def proxy_for(arch: ArchSpec, resolution: int, min_map: int = 4, drop: str = "last",
              strides: str = "auto") -> Proxy:
    """The proxy of `arch` at `resolution`: with `strides="auto"`, drop as few stride-2 blocks as needed
    (last ones first, or first ones first) so that every block's input is >= `min_map` wide;
    `strides="design"` keeps every stride."""
    if drop not in ("last", "first"):
        raise ArchSpecError(f"proxy drop order must be 'last' or 'first', got '{drop}'")
    if strides == "design":
        return Proxy(resolution, (), min_map)
    at = arch.replace(resolution=resolution)
    s2 = [i for i, b in enumerate(at.blocks) if b.kind in ("conv", "ir", "proj") and b.stride == 2]
    order = list(reversed(s2)) if drop == "last" else s2
    dropped: list[int] = []
    current = at
    while _min_input_map(current) < min_map and order:
        dropped.append(order.pop(0))
        current = Proxy(resolution, tuple(sorted(dropped)), min_map).apply(at)
    return Proxy(resolution, tuple(sorted(dropped)), min_map)
