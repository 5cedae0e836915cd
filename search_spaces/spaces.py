"""Every search space a config can name (`space=<name>`): each is defined once, in its own module."""

from __future__ import annotations

from .nasbench_macro import NASBENCH_MACRO_SPACE
from .space import MOBILENET_V3_LARGE_SPACE, SPNAS_MNASNET_SPACE, SearchSpace

SPACES: dict[str, SearchSpace] = {s.name: s for s in (MOBILENET_V3_LARGE_SPACE, SPNAS_MNASNET_SPACE,
                                                      NASBENCH_MACRO_SPACE)}
