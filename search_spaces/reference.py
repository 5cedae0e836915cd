"""Reference networks written in the block grammar (as torchvision builds them).

Published figures at 224x224 / 1000 classes, which `tests/search_spaces` asserts:
MobileNetV2 1.0: 3.4-3.5 M params / 300 M MACs; MobileNetV3-Large 1.0: 5.4 M / 219 M;
MobileNetV3-Small 1.0: 2.5 M / 56 M.
"""

from __future__ import annotations

from typing import Callable

from spnas_core.errors import ArchSpecError

from .arch import ArchSpec

MOBILENET_V2 = [
    "conv_k3_c32_s2_r6",
    "ir_k3_e1_c16_s1_r6",
    *["ir_k3_e6_c24_s2_r6", "ir_k3_e6_c24_s1_r6"],
    *["ir_k3_e6_c32_s2_r6"] + ["ir_k3_e6_c32_s1_r6"] * 2,
    *["ir_k3_e6_c64_s2_r6"] + ["ir_k3_e6_c64_s1_r6"] * 3,
    *["ir_k3_e6_c96_s1_r6"] * 3,
    *["ir_k3_e6_c160_s2_r6"] + ["ir_k3_e6_c160_s1_r6"] * 2,
    "ir_k3_e6_c320_s1_r6",
    "conv_k1_c1280_s1_r6",
    "pool",
]

MOBILENET_V3_LARGE = [
    "conv_k3_c16_s2_hs",
    "ir_k3_e1_c16_s1",
    "ir_k3_e4_c24_s2",
    "ir_k3_e3_c24_s1",
    "ir_k5_e3_c40_s2_se",
    "ir_k5_e3_c40_s1_se",
    "ir_k5_e3_c40_s1_se",
    "ir_k3_e6_c80_s2_hs",
    "ir_k3_e2.5_c80_s1_hs",
    "ir_k3_e2.3_c80_s1_hs",
    "ir_k3_e2.3_c80_s1_hs",
    "ir_k3_e6_c112_s1_se_hs",
    "ir_k3_e6_c112_s1_se_hs",
    "ir_k5_e6_c160_s2_se_hs",
    "ir_k5_e6_c160_s1_se_hs",
    "ir_k5_e6_c160_s1_se_hs",
    "conv_k1_c960_s1_hs",
    "pool",
    "fc_c1280_hs",
]

MOBILENET_V3_SMALL = [
    "conv_k3_c16_s2_hs",
    "ir_k3_e1_c16_s2_se",
    "ir_k3_e4.5_c24_s2",
    "ir_k3_e3.67_c24_s1",
    "ir_k5_e4_c40_s2_se_hs",
    "ir_k5_e6_c40_s1_se_hs",
    "ir_k5_e6_c40_s1_se_hs",
    "ir_k5_e3_c48_s1_se_hs",
    "ir_k5_e3_c48_s1_se_hs",
    "ir_k5_e6_c96_s2_se_hs",
    "ir_k5_e6_c96_s1_se_hs",
    "ir_k5_e6_c96_s1_se_hs",
    "conv_k1_c576_s1_hs",
    "pool",
    "fc_c1024_hs",
]


def mobilenet_v2(resolution: int = 224, width: float = 1.0, num_classes: int = 1000) -> ArchSpec:
    """MobileNetV2 (Sandler et al., 2018) in the grammar."""
    return ArchSpec.from_blocks(MOBILENET_V2, resolution, width, num_classes, name="mobilenet_v2")


def mobilenet_v3_large(
    resolution: int = 224, width: float = 1.0, num_classes: int = 1000
) -> ArchSpec:
    """MobileNetV3-Large (Howard et al., 2019) in the grammar."""
    return ArchSpec.from_blocks(
        MOBILENET_V3_LARGE, resolution, width, num_classes, name="mobilenet_v3_large"
    )


def mobilenet_v3_small(
    resolution: int = 224, width: float = 1.0, num_classes: int = 1000
) -> ArchSpec:
    """MobileNetV3-Small (Howard et al., 2019) in the grammar."""
    return ArchSpec.from_blocks(
        MOBILENET_V3_SMALL, resolution, width, num_classes, name="mobilenet_v3_small"
    )


REFERENCE_NETS: dict[str, Callable[..., ArchSpec]] = {
    "mobilenet_v2": mobilenet_v2,
    "mobilenet_v3_large": mobilenet_v3_large,
    "mobilenet_v3_small": mobilenet_v3_small,
}


def reference(name: str, **kwargs) -> ArchSpec:
    """A reference net by name; unknown names list the known ones."""
    try:
        return REFERENCE_NETS[name](**kwargs)
    except KeyError:
        raise ArchSpecError(
            f"unknown reference network '{name}'; known: {', '.join(REFERENCE_NETS)}"
        ) from None
