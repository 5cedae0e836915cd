"""Data sets, loaders and training of fixed architectures: train, retrain, evaluate, checkpoints.

Imports only `search_spaces` and the neutral `spnas_core`; the search package builds on it. Names are
imported on first use, so `training.config` (what compose reads) does not load torch's training code.
"""

from __future__ import annotations

from spnas_core.lazy import lazy_names

_NAMES = {
    "iterate_batches": ".batches", "num_batches": ".batches", "to_tensor": ".batches",
    "load_model_file": ".checkpoints", "load_torch": ".checkpoints", "save_model": ".checkpoints",
    "DataBundle": ".datasets", "Split": ".datasets", "load_data": ".datasets",
    "evaluate": ".loop", "fit": ".loop", "resolve_arch": ".loop", "train_model": ".loop",
}

__all__ = sorted(_NAMES)

__getattr__ = lazy_names(__name__, _NAMES, globals())
