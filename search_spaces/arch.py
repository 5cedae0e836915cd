"""`ArchSpec`: a whole network in the block grammar, plus input resolution and width multiplier.

The same spec drives the PyTorch builder, the latency-table op keys and the exporters, so
`resolve()` (actual channel counts and feature-map sizes per layer) is computed here, once.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from spnas_core.errors import InputNotFoundError
from spnas_core.files import write_text_atomic

from .grammar import ArchSpecError, Block, fmt_float, make_divisible

ARCH_FORMAT = "spnas.arch/1"


@dataclass(frozen=True)
class ResolvedLayer:
    """One block with everything a builder or a cost model needs: real channels and shapes."""

    index: int
    block: Block
    cin: int
    cout: int
    hin: int
    win: int
    hout: int
    wout: int
    mid: int = 0  # expanded channels of an inverted residual
    se_hidden: int = 0  # squeeze-excite bottleneck width

    @property
    def residual(self) -> bool:
        """Whether an inverted residual adds its input (stride 1 and unchanged channels)."""
        return self.block.kind == "ir" and self.block.stride == 1 and self.cin == self.cout


@dataclass(frozen=True)
class ArchSpec:
    """A network: blocks (grammar strings decoded), input resolution, width multiplier, classes."""

    blocks: tuple[Block, ...]
    resolution: int = 224
    width: float = 1.0
    num_classes: int = 1000
    in_channels: int = 3
    name: str = field(default="", compare=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_blocks(
        cls,
        blocks: Iterable[str | Block],
        resolution: int = 224,
        width: float = 1.0,
        num_classes: int = 1000,
        name: str = "",
        in_channels: int = 3,
    ) -> "ArchSpec":
        """Build and validate a spec from block strings (or `Block`s)."""
        parsed = tuple(
            b if isinstance(b, Block) else Block.parse(b, i) for i, b in enumerate(blocks)
        )
        spec = cls(parsed, int(resolution), float(width), int(num_classes), int(in_channels), name)
        spec.validate()
        return spec

    def replace(self, **changes: Any) -> "ArchSpec":
        """A copy with some fields changed (validated)."""
        d = dict(
            blocks=self.blocks,
            resolution=self.resolution,
            width=self.width,
            num_classes=self.num_classes,
            name=self.name,
            in_channels=self.in_channels,
        )
        d.update(changes)
        return ArchSpec.from_blocks(**d)

    # ------------------------------------------------------------------ string form
    def to_string(self) -> str:
        """`r224 w1 n1000 | conv_k3_c16_s2_hs ir_... pool fc_c1280_hs` (name not included)."""
        head = f"r{self.resolution} w{fmt_float(self.width)} n{self.num_classes}"
        if self.in_channels != 3:
            head += f" i{self.in_channels}"
        return head + " | " + " ".join(str(b) for b in self.blocks)

    @classmethod
    def parse(cls, text: str, name: str = "") -> "ArchSpec":
        """An architecture from its string form (`to_string()`), validated; the API's spelling of
        `from_string`."""
        return cls.from_string(text, name)

    @classmethod
    def from_string(cls, text: str, name: str = "") -> "ArchSpec":
        """Inverse of `to_string`; a bare block list (no header) means r224 w1 n1000."""
        if "|" in text:
            head, body = text.split("|", 1)
        else:
            head, body = "", text
        opts: dict[str, Any] = {}
        for tok in head.split():
            key, val = tok[0], tok[1:]
            try:
                if key == "r":
                    opts["resolution"] = int(val)
                elif key == "w":
                    opts["width"] = float(val)
                elif key == "n":
                    opts["num_classes"] = int(val)
                elif key == "i":
                    opts["in_channels"] = int(val)
                else:
                    raise ValueError
            except ValueError:
                raise ArchSpecError(
                    f"architecture header token '{tok}' is not one of r<resolution>, w<width>, "
                    f"n<classes>, i<input channels>"
                ) from None
        return cls.from_blocks(body.split(), name=name, **opts)

    # ------------------------------------------------------------------ JSON form
    def to_dict(self) -> dict[str, Any]:
        """The `arch.json` content."""
        return {
            "format": ARCH_FORMAT,
            "name": self.name,
            "resolution": self.resolution,
            "width": self.width,
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "blocks": [str(b) for b in self.blocks],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ArchSpec":
        """Inverse of `to_dict`, with a clear error for anything that is not an arch.json."""
        if not isinstance(d, dict) or "blocks" not in d:
            raise ArchSpecError(
                "not an architecture: expected a JSON object with a 'blocks' list "
                f"(format {ARCH_FORMAT})"
            )
        fmt = d.get("format", ARCH_FORMAT)
        if fmt != ARCH_FORMAT:
            raise ArchSpecError(f"unsupported architecture format '{fmt}' (expected {ARCH_FORMAT})")
        if not isinstance(d["blocks"], list):
            raise ArchSpecError("'blocks' must be a list of block strings")
        return cls.from_blocks(
            d["blocks"],
            resolution=d.get("resolution", 224),
            width=d.get("width", 1.0),
            num_classes=d.get("num_classes", 1000),
            in_channels=d.get("in_channels", 3),
            name=d.get("name", ""),
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write `arch.json` atomically (temporary file, then rename)."""
        path = Path(path)
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ArchSpec":
        """Read an `arch.json`; a missing or malformed file gives an error naming it."""
        path = Path(path)
        if not path.is_file():
            raise InputNotFoundError(
                f"architecture file {path} does not exist; pass a reference net name "
                f"(mobilenet_v2, mobilenet_v3_large, mobilenet_v3_small) or the arch.json a search wrote"
            )
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ArchSpecError(f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg})") from None
        try:
            return cls.from_dict(data)
        except ArchSpecError as e:
            raise ArchSpecError(f"{path}: {e}") from None

    # ------------------------------------------------------------------ semantics
    def validate(self) -> None:
        """Check the block sequence describes a buildable network; raise naming the block."""
        if not self.blocks:
            raise ArchSpecError("architecture has no blocks")
        if self.resolution < 8:
            raise ArchSpecError(f"resolution {self.resolution} is too small (minimum 8)")
        if not (self.width > 0):
            raise ArchSpecError(f"width multiplier must be positive, got {self.width}")
        if self.num_classes < 1:
            raise ArchSpecError(f"num_classes must be >= 1, got {self.num_classes}")
        first = self.blocks[0]
        if first.kind != "conv":
            raise ArchSpecError(
                f"block 0 '{first}': a network must start with a stem 'conv' block"
            )
        pools = [i for i, b in enumerate(self.blocks) if b.kind == "pool"]
        if len(pools) != 1:
            raise ArchSpecError(
                f"a network needs exactly one 'pool' block before its classifier, found {len(pools)}"
            )
        p = pools[0]
        for i, b in enumerate(self.blocks):
            if i < p and b.kind == "fc":
                raise ArchSpecError(f"block {i} '{b}': 'fc' must come after 'pool'")
            if i > p and b.kind != "fc":
                raise ArchSpecError(
                    f"block {i} '{b}': only 'fc' blocks may follow 'pool' (feature maps are gone)"
                )
        self.resolve()  # shape checks (skip channels)

    def resolve(self) -> list[ResolvedLayer]:
        """Actual channels (width multiplier applied) and feature-map sizes of every block."""
        out: list[ResolvedLayer] = []
        c, h, w = self.in_channels, self.resolution, self.resolution
        for i, b in enumerate(self.blocks):
            if b.kind in ("conv", "ir"):
                cout = make_divisible(b.channels * self.width)  # type: ignore[operator]
                s = b.stride or 1
                k = b.kernel or 1
                pad = (k - 1) // 2
                ho = (h + 2 * pad - k) // s + 1
                wo = (w + 2 * pad - k) // s + 1
                mid = se_h = 0
                if b.kind == "ir":
                    mid = make_divisible(c * b.expansion)  # type: ignore[operator]
                    if b.se:
                        se_h = make_divisible(mid // 4)
                out.append(ResolvedLayer(i, b, c, cout, h, w, ho, wo, mid, se_h))
                c, h, w = cout, ho, wo
            elif b.kind == "proj":
                cout = make_divisible(b.channels * self.width)  # type: ignore[operator]
                s = b.stride or 1
                ho, wo = (h - 1) // s + 1, (w - 1) // s + 1
                out.append(ResolvedLayer(i, b, c, cout, h, w, ho, wo))
                c, h, w = cout, ho, wo
            elif b.kind == "skip":
                if b.channels is not None and make_divisible(b.channels * self.width) != c:
                    raise ArchSpecError(
                        f"block {i} '{b}': 'skip' cannot change channels "
                        f"({c} in, {make_divisible(b.channels * self.width)} out); "
                        f"an identity keeps its input shape"
                    )
                out.append(ResolvedLayer(i, b, c, c, h, w, h, w))
            elif b.kind == "pool":
                out.append(ResolvedLayer(i, b, c, c, h, w, 1, 1))
                h = w = 1
            elif b.kind == "fc":
                cout = make_divisible(b.channels * max(1.0, self.width))  # type: ignore[operator]
                out.append(ResolvedLayer(i, b, c, cout, 1, 1, 1, 1))
                c = cout
        return out

    @property
    def feature_dim(self) -> int:
        """Width of the pooled embedding `features(x)` returns."""
        return self.resolve()[-1].cout

    def __str__(self) -> str:
        return self.to_string()
