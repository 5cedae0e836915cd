"""The architecture language: block grammar, `ArchSpec`, the search space, reference nets, builder.

The grammar, the space and the reference nets are plain Python; the builder (`model.py`) needs torch and is
imported on first use of one of its names, so composing a config (`--help`, `--cfg job`, a config error)
does not pay for loading torch.
"""

from __future__ import annotations

from spnas_core.lazy import lazy_names

from .arch import ArchSpec, ResolvedLayer
from .grammar import ArchSpecError, Block, make_divisible
from .reference import REFERENCE_NETS, mobilenet_v2, mobilenet_v3_large, mobilenet_v3_small, reference
from .space import SKIP, LayerSlot, SearchSpace, Stage, default_space

_MODEL_NAMES = ("EmbeddingNet", "Net", "build_for_weights", "build_layer", "build_model", "count_macs",
                "count_params", "embedding_info")
__getattr__ = lazy_names(__name__, dict.fromkeys(_MODEL_NAMES, ".model"), globals())

__all__ = [
    "ArchSpec", "ArchSpecError", "Block", "EmbeddingNet", "LayerSlot", "Net", "build_for_weights", "embedding_info", "REFERENCE_NETS", "ResolvedLayer",
    "SKIP", "SearchSpace", "Stage", "build_layer", "build_model", "count_macs", "count_params",
    "default_space", "make_divisible", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
    "reference",
]

