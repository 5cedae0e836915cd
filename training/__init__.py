"""Data sets, loaders and training of fixed architectures: train, retrain, evaluate, checkpoints.

Imports only `search_spaces` and the neutral `spnas` modules; the search package builds on it.
"""

from .batches import iterate_batches, num_batches, to_tensor
from .checkpoints import load_model_file, load_torch, save_model
from .datasets import DataBundle, Split, load_data
from .loop import evaluate, fit, resolve_arch, train_model

__all__ = ["DataBundle", "Split", "evaluate", "fit", "iterate_batches", "load_data", "load_model_file",
           "load_torch", "num_batches", "resolve_arch", "save_model", "to_tensor", "train_model"]
