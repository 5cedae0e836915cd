"""Batches for training and evaluation from in-RAM splits: uint8 NHWC arrays in, batches out.

Data order and augmentation come from an explicit `torch.Generator`, so a resumed epoch replays
exactly the batches of an uninterrupted one. Under DDP (`shard=`) the order and the augmentation
draws are made for the *global* batch on every rank and each rank keeps its slice, so N ranks see
exactly the images one process would (a DistributedSampler that is also exact for augmentation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from spnas_core.images import MEAN_RGB, STD_RGB
from training.config import AugmentConfig

from .datasets import Split
from .distributed import SINGLE, DistEnv, shard_slice

_MEAN = torch.tensor(MEAN_RGB).view(1, 3, 1, 1)
_STD = torch.tensor(STD_RGB).view(1, 3, 1, 1)


def to_tensor(images_uint8_nhwc: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> normalised float32 NCHW (the training input)."""
    x = torch.as_tensor(images_uint8_nhwc).permute(0, 3, 1, 2).float()
    return (x - _MEAN) / _STD


@dataclass
class AugmentDraw:
    """The random choices of one batch's augmentation (crop offsets, flips), drawn before applying."""

    oy: torch.Tensor | None
    ox: torch.Tensor | None
    flip: torch.Tensor | None

    def __getitem__(self, s: slice) -> "AugmentDraw":
        return AugmentDraw(*(None if t is None else t[s] for t in (self.oy, self.ox, self.flip)))


def draw_augment(n: int, g: torch.Generator, crop_padding: int = 0, hflip: bool = False) -> AugmentDraw:
    """Crop offsets and flips for n images, in the generator order `augment_batch` has always used."""
    oy = ox = flip = None
    if crop_padding > 0:
        oy = torch.randint(0, 2 * crop_padding + 1, (n,), generator=g)
        ox = torch.randint(0, 2 * crop_padding + 1, (n,), generator=g)
    if hflip:
        flip = torch.rand(n, generator=g) < 0.5
    return AugmentDraw(oy, ox, flip)


def apply_augment(x: torch.Tensor, d: AugmentDraw, crop_padding: int = 0) -> torch.Tensor:
    """Random crop with zero padding and horizontal flip on a uint8 NHWC batch (vectorised)."""
    n, h, w, _ = x.shape
    if d.oy is not None and crop_padding > 0:
        p = crop_padding
        padded = torch.zeros((n, h + 2 * p, w + 2 * p, x.shape[3]), dtype=x.dtype)
        padded[:, p : p + h, p : p + w] = x
        rows = (d.oy[:, None] + torch.arange(h)[None, :])  # [n, h]
        cols = (d.ox[:, None] + torch.arange(w)[None, :])  # [n, w]
        x = padded[torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    if d.flip is not None:
        x = torch.where(d.flip[:, None, None, None], x.flip(2), x)
    return x


def augment_batch(x: torch.Tensor, g: torch.Generator, crop_padding: int = 0, hflip: bool = False) -> torch.Tensor:
    """Random crop with zero padding and horizontal flip on a uint8 NHWC batch (vectorised)."""
    return apply_augment(x, draw_augment(x.shape[0], g, crop_padding, hflip), crop_padding)


def iterate_batches(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    augment: AugmentConfig | None = None,
    drop_last: bool = False,
    shard: DistEnv = SINGLE,
    normalize: bool = True,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (batch, labels); order and augmentation come from `generator`.

    `batch_size` is the global batch: with `shard` (a DDP rank) this rank yields its slice of each
    global batch. `normalize=False` yields uint8 NHWC (8x fewer bytes to a GPU; `Compute.batch`
    normalises there); True yields normalised float NCHW on the CPU."""
    n = len(split)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    images = torch.from_numpy(split.images)
    labels = torch.from_numpy(split.labels)
    stop = n - (n % batch_size) if drop_last and n >= batch_size else n
    augmenting = augment is not None and (augment.crop_padding > 0 or augment.hflip)
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        mine = shard_slice(len(idx), shard)
        xb = images[idx[mine]]
        if augmenting:
            draw = draw_augment(len(idx), generator or torch.default_generator, augment.crop_padding, augment.hflip)
            xb = apply_augment(xb, draw[mine], augment.crop_padding)
        yield (to_tensor(xb) if normalize else xb), labels[idx[mine]]


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """How many batches `iterate_batches` yields for n items."""
    if drop_last and n >= batch_size:
        return n // batch_size
    return (n + batch_size - 1) // batch_size
