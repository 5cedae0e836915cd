"""The architecture language: one short string per block, decoded into a `Block`.

The grammar follows timm's `_efficientnet_builder` strings (a kind, then `_`-separated
tokens), restricted to what mobile inverted-residual networks need:

=====================  ==========================================================
``conv_k3_c16_s2_hs``  convolution + BN + activation (stem, or the 1x1 head conv)
``ir_k5_e6_c40_s2_se_hs``  inverted residual: kernel, expansion ratio, output channels,
                       stride, squeeze-excite, activation
``skip``               identity (a layer the search dropped); may carry ``c``/``s``
                       tokens naming the shape it stands in for, which are validated
``proj_c64_s2``        the identity where the shape changes: 1x1 convolution + BN, no
                       activation (NAS-Bench-Macro's skip at a stage's first layer)
``pool``               global average pooling
``fc_c1280_hs``        fully connected hidden layer after pooling (MobileNetV3 head)
=====================  ==========================================================

Activation tokens: ``re`` (ReLU, the default and omitted when printing), ``r6``
(ReLU6, MobileNetV2), ``hs`` (h-swish). The final classifier ("Logits") is implicit:
its width is the architecture's ``num_classes``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from spnas_core.errors import ArchSpecError

KINDS = ("conv", "ir", "skip", "proj", "pool", "fc")
ACTIVATIONS = {"re": "ReLU", "r6": "ReLU6", "hs": "h-swish"}
DEFAULT_ACT = "re"


@dataclass(frozen=True)
class Block:
    """One block of the grammar; channel counts are nominal (before the width multiplier)."""

    kind: str
    kernel: int | None = None
    expansion: float | None = None
    channels: int | None = None
    stride: int | None = None
    se: bool = False
    act: str | None = None

    # ------------------------------------------------------------------ string form
    @classmethod
    def parse(cls, text: str, index: int | None = None) -> "Block":
        """Decode one block string; errors name the block and the offending token."""
        where = f"block {index} '{text}'" if index is not None else f"block '{text}'"
        if not isinstance(text, str) or not text.strip():
            raise ArchSpecError(f"{where}: empty block string")
        parts = text.strip().split("_")
        kind = parts[0]
        if kind not in KINDS:
            raise ArchSpecError(
                f"{where}: unknown block kind '{kind}' (expected one of {', '.join(KINDS)})"
            )
        fields: dict[str, object] = {}
        for tok in parts[1:]:
            key, value = _decode_token(tok, where)
            if key in fields:
                raise ArchSpecError(f"{where}: token '{tok}' repeats '{key}'")
            fields[key] = value
        block = cls(kind=kind, **fields)  # type: ignore[arg-type]
        block.check(where)
        return block

    def __str__(self) -> str:
        parts = [self.kind]
        if self.kernel is not None:
            parts.append(f"k{self.kernel}")
        if self.expansion is not None:
            parts.append(f"e{fmt_float(self.expansion)}")
        if self.channels is not None:
            parts.append(f"c{self.channels}")
        if self.stride is not None:
            parts.append(f"s{self.stride}")
        if self.se:
            parts.append("se")
        if self.act is not None and self.act != DEFAULT_ACT:
            parts.append(self.act)
        return "_".join(parts)

    # ------------------------------------------------------------------ checks
    def check(self, where: str) -> None:
        """Reject tokens that make no sense for this block kind."""
        k = self.kind
        if k in ("conv", "ir"):
            if self.kernel is None:
                raise ArchSpecError(f"{where}: '{k}' needs a kernel token like k3")
            if self.kernel < 1 or self.kernel % 2 == 0:
                raise ArchSpecError(
                    f"{where}: kernel {self.kernel} must be odd and >= 1 (same padding needs a centre)"
                )
            if self.channels is None:
                raise ArchSpecError(f"{where}: '{k}' needs an output channel token like c40")
            if self.stride is None:
                raise ArchSpecError(f"{where}: '{k}' needs a stride token s1 or s2")
        if k == "ir":
            if self.expansion is None:
                raise ArchSpecError(f"{where}: 'ir' needs an expansion token like e6")
            if not (self.expansion >= 1.0) or not math.isfinite(self.expansion):
                raise ArchSpecError(f"{where}: expansion {self.expansion} must be >= 1")
        elif self.expansion is not None:
            raise ArchSpecError(f"{where}: expansion is only meaningful on 'ir' blocks")
        if k == "proj":
            if self.channels is None or self.stride is None:
                raise ArchSpecError(f"{where}: 'proj' needs an output channel and a stride token, like proj_c64_s2")
            if self.act is not None:
                raise ArchSpecError(f"{where}: 'proj' is linear (1x1 conv + BN); it takes no activation")
        if k == "fc" and self.channels is None:
            raise ArchSpecError(f"{where}: 'fc' needs an output width token like c1280")
        if k in ("skip", "proj", "pool", "fc") and self.kernel is not None:
            raise ArchSpecError(f"{where}: '{k}' takes no kernel")
        if self.channels is not None and self.channels <= 0:
            raise ArchSpecError(f"{where}: channels must be positive, got {self.channels}")
        if self.stride is not None and self.stride not in (1, 2):
            raise ArchSpecError(f"{where}: stride must be 1 or 2, got {self.stride}")
        if k in ("pool", "fc") and self.stride is not None:
            raise ArchSpecError(f"{where}: '{k}' takes no stride")
        if k == "pool" and self.channels is not None:
            raise ArchSpecError(f"{where}: 'pool' keeps its input channels; drop the c token")
        if k == "skip" and self.stride not in (None, 1):
            raise ArchSpecError(
                f"{where}: 'skip' cannot have stride {self.stride}: an identity cannot downsample"
            )
        if self.se and k != "ir":
            raise ArchSpecError(f"{where}: squeeze-excite ('se') is only supported on 'ir' blocks")
        if self.act is not None and k in ("skip", "pool"):
            raise ArchSpecError(f"{where}: '{k}' has no activation")

    @property
    def activation(self) -> str:
        """Activation token with the default filled in."""
        return self.act or DEFAULT_ACT


_TOKEN = re.compile(r"^([kecs])(\d+(?:\.\d+)?)$")


def _decode_token(tok: str, where: str) -> tuple[str, object]:
    if tok == "se":
        return "se", True
    if tok in ACTIVATIONS:
        return "act", tok
    m = _TOKEN.match(tok)
    if not m:
        raise ArchSpecError(
            f"{where}: unknown token '{tok}' (expected k<int>, e<ratio>, c<int>, s<int>, se, "
            f"or an activation: {', '.join(ACTIVATIONS)})"
        )
    letter, num = m.groups()
    if letter == "e":
        return "expansion", float(num)
    if "." in num:
        raise ArchSpecError(f"{where}: token '{tok}' must be an integer")
    return {"k": "kernel", "c": "channels", "s": "stride"}[letter], int(num)


def fmt_float(x: float) -> str:
    """Shortest exact text of a ratio: 6.0 -> '6', 2.5 -> '2.5', 3.67 -> '3.67'."""
    if float(x).is_integer():
        return str(int(x))
    return repr(float(x))


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of `divisor`, never more than 10% down (MobileNet rule)."""
    min_value = min_value or divisor
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new
