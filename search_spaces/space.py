"""The MobileNetV3-derived search space, as data.

Macro structure of MobileNetV3-Large (stem, a fixed e1 block, five stages with their channels,
repeats, strides, SE and activations, then the 960/1280 head). Every searchable layer picks one
of k3e3, k3e6, k5e3, k5e6 (the Single-Path NAS candidates); layers after the first of a stage may
also be `skip` (the identity). The space is plain data so a Hydra config can define another one.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Sequence

from .arch import ArchSpec
from .choices import SKIP, ChoiceSet, SkipKind, option_order, parse_choice
from .grammar import ArchSpecError, Block

# The Single-Path NAS candidates of a searchable layer (the MobileNetV3 space's and the paper's).
DEFAULT_CHOICES = ("k3_e3", "k3_e6", "k5_e3", "k5_e6")
CHOICE_ORDER = (*DEFAULT_CHOICES, SKIP)  # display order of the default candidates (plots, reports)


@dataclass(frozen=True)
class Stage:
    """A run of searchable layers sharing output channels, SE and activation."""

    channels: int
    repeats: int
    stride: int
    se: bool = False
    act: str = "re"


@dataclass(frozen=True)
class LayerSlot:
    """One searchable layer: where it sits and what it may become."""

    index: int  # position among searchable layers
    block_index: int  # position in the architecture's block list
    stage: int
    position: int  # 0 = first layer of its stage
    channels: int
    stride: int
    se: bool
    act: str
    skip: SkipKind
    choices: tuple[str, ...]

    @property
    def skippable(self) -> bool:
        """Whether `skip` is one of this layer's choices (the identity, or a projection where the shape changes)."""
        return self.skip is not SkipKind.none

    def block(self, choice: str) -> Block:
        """The grammar block this slot becomes for a choice such as 'k5_e6' or 'skip'."""
        if choice == SKIP:
            if not self.skippable:
                raise ArchSpecError(
                    f"searchable layer {self.index} (stage {self.stage}, first of its stage) "
                    f"cannot be 'skip': it changes stride or channels"
                )
            if self.skip is SkipKind.projection:
                return Block("proj", channels=self.channels, stride=self.stride)
            return Block("skip")
        k, e = parse_choice(choice)
        return Block(
            "ir", kernel=k, expansion=float(e), channels=self.channels, stride=self.stride,
            se=self.se, act=self.act if self.act != "re" else None,
        )


@dataclass(frozen=True)
class SearchSpace:
    """Stem, fixed blocks, searchable stages and head: decodes choices to `ArchSpec`s."""

    name: str
    stem: str
    fixed: tuple[str, ...]
    stages: tuple[Stage, ...]
    head: tuple[str, ...]
    choices: tuple[str, ...] = DEFAULT_CHOICES
    allow_skip: bool = True
    first_skip: str = "none"  # what skipping a stage's first layer means: none | projection
    slots: tuple[LayerSlot, ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        ChoiceSet.of(tuple(self.choices))  # refuses a candidate set no single path can hold
        if self.first_skip not in (SkipKind.none.name, SkipKind.projection.name):
            raise ArchSpecError(f"space '{self.name}': first_skip must be 'none' or 'projection', got "
                                f"'{self.first_skip}'")
        slots = []
        block_index = 1 + len(self.fixed)
        for si, st in enumerate(self.stages):
            for pos in range(st.repeats):
                skip = SkipKind.none
                if self.allow_skip:  # later layers keep the stage's shape; its first one follows first_skip
                    skip = SkipKind.identity if pos > 0 else SkipKind[self.first_skip]
                slots.append(
                    LayerSlot(
                        len(slots), block_index, si, pos, st.channels,
                        st.stride if pos == 0 else 1, st.se, st.act, skip,
                        tuple(self.choice_set.options) + ((SKIP,) if skip is not SkipKind.none else ()),
                    )
                )
                block_index += 1
        object.__setattr__(self, "slots", tuple(slots))

    @property
    def choice_set(self) -> ChoiceSet:
        """The structure of the candidates (grid or chain) and the superkernel's decision ladder."""
        return ChoiceSet.of(tuple(self.choices))

    @property
    def options(self) -> tuple[str, ...]:
        """Every candidate a layer of this space may take, `skip` last (the cost tables' and plots' order)."""
        return option_order(self.choices)

    # ------------------------------------------------------------------ data form
    @classmethod
    def from_config(cls, cfg: Any) -> "SearchSpace":
        """Build from a typed `space/` config (`search_spaces.config.SpaceConfig`)."""
        from spnas_core.config import to_plain

        return cls.from_dict(to_plain(cfg))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SearchSpace":
        """Build from a Hydra `space/` config (plain dict)."""
        try:
            return cls(
                name=str(d["name"]),
                stem=str(d["stem"]),
                fixed=tuple(d.get("fixed", ())),
                stages=tuple(Stage(**dict(s)) for s in d["stages"]),
                head=tuple(d["head"]),
                choices=tuple(d.get("choices") or DEFAULT_CHOICES),
                allow_skip=bool(d.get("allow_skip", True)),
                first_skip=str(d.get("first_skip", "none")),
            )
        except (KeyError, TypeError) as e:
            raise ArchSpecError(
                f"search space config is malformed ({e}); it needs name, stem, stages "
                f"(channels, repeats, stride, se, act) and head"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain data (the `space/` config form), e.g. to store beside a supernet checkpoint."""
        return {"name": self.name, "stem": self.stem, "fixed": list(self.fixed),
                "stages": [dict(channels=s.channels, repeats=s.repeats, stride=s.stride, se=s.se, act=s.act)
                           for s in self.stages],
                "head": list(self.head), "choices": list(self.choices), "allow_skip": self.allow_skip,
                "first_skip": self.first_skip}

    # ------------------------------------------------------------------ queries
    def enumerate_layer_choices(self) -> list[tuple[str, ...]]:
        """The candidate list of every searchable layer, in order."""
        return [s.choices for s in self.slots]

    @property
    def num_layers(self) -> int:
        """Number of searchable layers."""
        return len(self.slots)

    def num_architectures(self) -> int:
        """How many distinct architectures the space holds."""
        return math.prod(len(s.choices) for s in self.slots)

    def decode(
        self,
        choices: Sequence[str],
        resolution: int = 224,
        width: float = 1.0,
        num_classes: int = 1000,
        name: str = "",
    ) -> ArchSpec:
        """Turn one choice per searchable layer into an `ArchSpec`."""
        if len(choices) != self.num_layers:
            raise ArchSpecError(
                f"space '{self.name}' has {self.num_layers} searchable layers, got {len(choices)} choices"
            )
        blocks: list[Block | str] = [self.stem, *self.fixed]
        for slot, c in zip(self.slots, choices):
            if c not in slot.choices:
                raise ArchSpecError(
                    f"searchable layer {slot.index}: '{c}' is not one of {', '.join(slot.choices)}"
                )
            blocks.append(slot.block(c))
        blocks.extend(self.head)
        return ArchSpec.from_blocks(blocks, resolution, width, num_classes, name=name)

    def encode(self, arch: ArchSpec) -> list[str]:
        """Inverse of `decode`: the choice of each searchable layer; errors if `arch` is not in the space."""
        n_fixed = 1 + len(self.fixed)
        expected = n_fixed + self.num_layers + len(self.head)
        if len(arch.blocks) != expected:
            raise ArchSpecError(
                f"architecture has {len(arch.blocks)} blocks; space '{self.name}' has {expected}"
            )
        out = []
        for slot in self.slots:
            b = arch.blocks[slot.block_index]
            choice = SKIP if b.kind in ("skip", "proj") else f"k{b.kernel}_e{_int_or_none(b.expansion)}"
            if choice not in slot.choices or str(slot.block(choice)) != str(b):
                raise ArchSpecError(
                    f"block {slot.block_index} '{b}' is not a choice of searchable layer {slot.index}"
                )
            out.append(choice)
        return out

    def sample(
        self, rng: random.Random, resolution: int = 224, width: float = 1.0, num_classes: int = 1000
    ) -> ArchSpec:
        """A uniformly random architecture of the space."""
        return self.decode([rng.choice(s.choices) for s in self.slots], resolution, width, num_classes)

    def largest(self, resolution: int = 224, width: float = 1.0, num_classes: int = 1000) -> ArchSpec:
        """Every layer its largest candidate (the superkernel's starting point and the largest network)."""
        big = self.choice_set.largest
        return self.decode([big] * self.num_layers, resolution, width, num_classes, name="largest")

    def smallest_choices(self) -> list[str]:
        """The cheapest network's choices: `skip` wherever allowed, else the smallest candidate."""
        return [SKIP if s.skippable else self.choice_set.smallest for s in self.slots]

    def largest_choices(self) -> list[str]:
        return [self.choice_set.largest] * self.num_layers


def _int_or_none(x: float | None) -> str:
    if x is None:
        return "?"
    return str(int(x)) if float(x).is_integer() else repr(x)


MOBILENET_V3_LARGE_SPACE = SearchSpace(
    name="mbv3_large",
    stem="conv_k3_c16_s2_hs",
    fixed=("ir_k3_e1_c16_s1",),
    stages=(
        Stage(24, 2, 2, se=False, act="re"),
        Stage(40, 3, 2, se=True, act="re"),
        Stage(80, 4, 2, se=False, act="hs"),
        Stage(112, 2, 1, se=True, act="hs"),
        Stage(160, 3, 2, se=True, act="hs"),
    ),
    head=("conv_k1_c960_s1_hs", "pool", "fc_c1280_hs"),
)


# The Single-Path NAS paper's space (Stamoulis et al. 2019, Fig. 2; enyac-group/single-path-nas
# nas-search/supernet_macro.py): MnasNet's macro structure with ReLU and no SE. 22 MBConv blocks:
# the first (k3 e1, 16) and the last (k3 e6, 320) are fixed, the 20 between them pick k3/k5 x e3/e6,
# and every layer after the first of its group may be skipped. The stem, both fixed blocks, the
# 1280 head and the classifier are the official runtime model's fixed part (19.5999 ms on a Pixel 1).
SPNAS_MNASNET_SPACE = SearchSpace(
    name="spnas_mnasnet",
    stem="conv_k3_c32_s2",
    fixed=("ir_k3_e1_c16_s1",),
    stages=(
        Stage(24, 4, 2),
        Stage(40, 4, 2),
        Stage(80, 4, 2),
        Stage(96, 4, 1),
        Stage(192, 4, 2),
    ),
    head=("ir_k3_e6_c320_s1", "conv_k1_c1280_s1", "pool"),
)


def default_space() -> SearchSpace:
    """The MobileNetV3-Large-derived space (14 searchable layers, 2.0e9 architectures)."""
    return MOBILENET_V3_LARGE_SPACE
