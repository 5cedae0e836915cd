"""Batches for training and evaluation: uint8 NHWC arrays in, normalised float NCHW tensors out.

Data order and augmentation come from an explicit `torch.Generator`, so a resumed epoch replays
exactly the batches of an uninterrupted one.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from spnas.config import AugmentConfig
from spnas.images import MEAN_RGB, STD_RGB

from .datasets import Split

_MEAN = torch.tensor(MEAN_RGB).view(1, 3, 1, 1)
_STD = torch.tensor(STD_RGB).view(1, 3, 1, 1)


def to_tensor(images_uint8_nhwc: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> normalised float32 NCHW (the training input)."""
    x = torch.as_tensor(images_uint8_nhwc).permute(0, 3, 1, 2).float()
    return (x - _MEAN) / _STD


def augment_batch(x: torch.Tensor, g: torch.Generator, crop_padding: int = 0, hflip: bool = False) -> torch.Tensor:
    """Random crop with zero padding and horizontal flip on a uint8 NHWC batch (vectorised)."""
    n, h, w, _ = x.shape
    if crop_padding > 0:
        p = crop_padding
        padded = torch.zeros((n, h + 2 * p, w + 2 * p, x.shape[3]), dtype=x.dtype)
        padded[:, p : p + h, p : p + w] = x
        oy = torch.randint(0, 2 * p + 1, (n,), generator=g)
        ox = torch.randint(0, 2 * p + 1, (n,), generator=g)
        rows = (oy[:, None] + torch.arange(h)[None, :])  # [n, h]
        cols = (ox[:, None] + torch.arange(w)[None, :])  # [n, w]
        x = padded[torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    if hflip:
        flip = torch.rand(n, generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(2), x)
    return x


def iterate_batches(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    augment: AugmentConfig | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (normalised NCHW float batch, labels); order and augmentation come from `generator`."""
    n = len(split)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    images = torch.from_numpy(split.images)
    labels = torch.from_numpy(split.labels)
    stop = n - (n % batch_size) if drop_last and n >= batch_size else n
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        xb = images[idx]
        if augment is not None and (augment.crop_padding > 0 or augment.hflip):
            xb = augment_batch(xb, generator or torch.default_generator, augment.crop_padding, augment.hflip)
        yield to_tensor(xb), labels[idx]


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """How many batches `iterate_batches` yields for n items."""
    if drop_last and n >= batch_size:
        return n // batch_size
    return (n + batch_size - 1) // batch_size


