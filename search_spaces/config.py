"""The search space and training-geometry configs (Hydra group `space/` and the `proxy` node), beside
the code that builds them (`search_spaces.space`, `search_spaces.proxy`)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from omegaconf import MISSING

from spnas_core.config import check_range, opt


class ProxyStrides(enum.Enum):
    auto = "drop as few stride-2 blocks as needed so every layer's input map is >= proxy.min_map"
    design = "train with the design strides whatever the resolution"


class DropOrder(enum.Enum):
    last = "drop the last stride-2 blocks first (cheapest on a CPU: the late stages grow, the early ones do not)"
    first = "drop the stem's and first stages' strides first (the usual CIFAR adaptation; 4-16x the compute)"


@dataclass
class ProxyConfig:
    """Training geometry below the deployment resolution (search_spaces.proxy): the same for every model
    compared; the deployed geometry (design strides at search.latency_resolution) is what is exported
    and what the latency tables price."""

    strides: ProxyStrides = opt(ProxyStrides.auto, "auto | design")
    min_map: int = opt(4, "with strides=auto: smallest input map any layer may see while training")
    drop: DropOrder = opt(DropOrder.last, "with strides=auto: which stride-2 blocks to train at stride 1 first")

    def __post_init__(self) -> None:
        check_range("proxy.min_map", self.min_map, 1, 64)


@dataclass
class StageConfig:
    channels: int = opt(MISSING, "output channels")
    repeats: int = opt(MISSING, "searchable layers in the stage")
    stride: int = opt(MISSING, "stride of its first layer")
    se: bool = opt(False, "squeeze-excite")
    act: str = opt("re", "activation: re | r6 | hs")


@dataclass
class SpaceConfig:
    """A search space (config group `space/`; defined once in search_spaces)."""

    name: str = opt(MISSING, "space name")
    stem: str = opt(MISSING, "stem block")
    fixed: list[str] = opt(factory=list, help="fixed blocks after the stem")
    stages: list[StageConfig] = opt(factory=list, help="searchable stages")
    head: list[str] = opt(factory=list, help="head blocks")
    choices: list[str] = opt(factory=list, help="candidate choices per layer, e.g. k3_e3")
    allow_skip: bool = opt(True, "layers after the first of a stage may be skipped")
    first_skip: str = opt("none", "what skipping a stage's first layer means: none (not allowed) | projection (a 1x1 "
                                  "conv + BN with its stride and channels, as NAS-Bench-Macro)")
