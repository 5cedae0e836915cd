"""The architecture language: block grammar, `ArchSpec`, the search space, reference nets, builder."""

from .arch import ArchSpec, ResolvedLayer
from .grammar import ArchSpecError, Block, make_divisible
from .model import EmbeddingNet, Net, build_for_weights, build_layer, build_model, count_macs, count_params, embedding_info
from .reference import REFERENCE_NETS, mobilenet_v2, mobilenet_v3_large, mobilenet_v3_small, reference
from .space import SKIP, LayerSlot, SearchSpace, Stage, default_space

__all__ = [
    "ArchSpec", "ArchSpecError", "Block", "EmbeddingNet", "LayerSlot", "Net", "build_for_weights", "embedding_info", "REFERENCE_NETS", "ResolvedLayer",
    "SKIP", "SearchSpace", "Stage", "build_layer", "build_model", "count_macs", "count_params",
    "default_space", "make_divisible", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
    "reference",
]
