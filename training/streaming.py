"""Streaming data: a `torch.utils.data.DataLoader` that decodes photos from their files on the fly.

For sets that do not fit in RAM (ImageNet-style folders): nothing is decoded ahead of time, worker
processes decode (EXIF orientation honoured) and transform each image, and batches arrive as uint8
NHWC tensors (`Compute.batch` normalises them on the device). The splits are the in-RAM path's
(`datasets.list_splits`), so the two loaders agree image for image.

Determinism: the order of every epoch is the in-RAM path's (`randperm` from (seed, epoch)), each
rank takes its slice of every global batch (`ShardedBatchSampler`), and each image's random crop
and flip come from a generator seeded by (seed, epoch, image index). Results are therefore the same
for any number of workers and of DDP ranks, and a resumed epoch replays exactly.

Transforms (`data.transform`), written on PIL + torch (torchvision 0.28.0's PyPI wheel is built
against CUDA torch and does not import beside the CPU build; these follow its definitions):
- `stretch`: the whole photo resized to data.resolution as MediaPipe resizes (the in-RAM arrays);
  training adds the same padded random crop and flip as the in-RAM path (`train.augment`).
- `imagenet`: training takes a random-resized crop (area fraction in [min_crop_scale, 1], aspect in
  [3/4, 4/3], torchvision's RandomResizedCrop algorithm) resized to the resolution, then a flip;
  evaluation resizes the short side to resolution / 0.875 and takes the centre crop.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from spnas_core.errors import ImageDecodeError
from spnas_core.images import resize_like_mediapipe
from training.config import AugmentConfig, DataConfig, DataKind, TransformKind

from .datasets import decode_photo, list_splits
from .distributed import SINGLE, DistEnv, shard_slice

log = logging.getLogger(__name__)

EVAL_CROP_FRACTION = 0.875  # resize to 256, crop 224: the ImageNet evaluation convention
RATIO = (3 / 4, 4 / 3)


# ---------------------------------------------------------------------------------- containers
@dataclass
class FileSplit:
    """One split as files and labels (nothing decoded)."""

    paths: list[str]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class StreamingData:
    """A data set read from its files while training (the streaming twin of `DataBundle`)."""

    name: str
    resolution: int
    classes: list[str]
    train: FileSplit
    val: FileSplit
    test: FileSplit
    cfg: DataConfig
    seed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "resolution": self.resolution, "num_classes": self.num_classes,
                "train": len(self.train), "val": len(self.val), "test": len(self.test), "gallery": 0,
                "loader": "stream", "transform": self.cfg.transform.name,
                "skipped_images": len(self.skipped), "skipped_examples": [p for p, _ in self.skipped[:10]]}


def open_stream(cfg: DataConfig, seed: int = 0) -> StreamingData:
    """List a folder / CIFAR-10 / Grocery data set for streaming (no decoding; seconds for millions)."""
    from dataclasses import replace
    from pathlib import Path

    if cfg.kind is DataKind.fashion_mnist:
        from spnas_core.errors import ConfigError

        raise ConfigError("data.loader=stream reads image files; fashion_mnist is IDX archives: use data.loader=memory")
    cfg = replace(cfg, root=str(Path(cfg.root).expanduser().resolve()))
    listing = list_splits(cfg, seed)
    sp = {s: FileSplit(list(p), np.asarray(l, dtype=np.int64)) for s, (p, l) in listing.splits.items()}
    empty = FileSplit([], np.zeros(0, dtype=np.int64))
    return StreamingData(cfg.name, cfg.resolution, list(listing.classes), sp["train"], sp.get("val", empty),
                         sp.get("test", empty), cfg, seed)


# ---------------------------------------------------------------------------------- transforms
def _sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The generator of one image's augmentation in one epoch: independent of worker and rank."""
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + epoch * 7_919 + index * 104_729 + 17) % (2**63))
    return g


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(1, generator=g))


def random_resized_crop_box(h: int, w: int, g: torch.Generator, scale: tuple[float, float],
                            ratio: tuple[float, float] = RATIO) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a random crop: torchvision's RandomResizedCrop.get_params."""
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * _uniform(g, *scale)
        aspect = math.exp(_uniform(g, *log_ratio))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (1,), generator=g))
            left = int(torch.randint(0, w - cw + 1, (1,), generator=g))
            return top, left, ch, cw
    in_ratio = w / h  # fallback: the central crop closest to the allowed aspect ratios
    if in_ratio < min(ratio):
        cw, ch = w, int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        ch, cw = h, int(round(h * max(ratio)))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def _resize_box(img: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """Crop `box` (top, left, h, w) and resize to size (h, w), bilinear with antialiasing (PIL)."""
    from PIL import Image

    top, left, bh, bw = box
    out = Image.fromarray(img).resize((size[1], size[0]), Image.Resampling.BILINEAR,
                                      box=(left, top, left + bw, top + bh))
    return np.asarray(out, dtype=np.uint8)


def _pad_crop_flip(img: np.ndarray, g: torch.Generator, augment: AugmentConfig) -> np.ndarray:
    """The in-RAM path's augmentation (zero-padded random crop, flip) on one image."""
    h, w, _ = img.shape
    p = augment.crop_padding
    if p > 0:
        oy, ox = (int(v) for v in torch.randint(0, 2 * p + 1, (2,), generator=g))
        padded = np.zeros((h + 2 * p, w + 2 * p, 3), np.uint8)
        padded[p:p + h, p:p + w] = img
        img = padded[oy:oy + h, ox:ox + w]
    if augment.hflip and float(torch.rand(1, generator=g)) < 0.5:
        img = img[:, ::-1]
    return img


@dataclass(frozen=True)
class Transform:
    """The per-image preprocessing of one loader (train or eval)."""

    kind: TransformKind
    resolution: int
    train: bool
    augment: AugmentConfig | None = None
    min_crop_scale: float = 0.08

    def __call__(self, img: np.ndarray, g: torch.Generator) -> np.ndarray:
        r = self.resolution
        if self.kind is TransformKind.stretch:
            out = resize_like_mediapipe(img, r)
            if self.train and self.augment is not None:
                out = _pad_crop_flip(out, g, self.augment)
            return out
        h, w = img.shape[:2]
        if self.train:
            box = random_resized_crop_box(h, w, g, (self.min_crop_scale, 1.0))
            out = _resize_box(img, box, (r, r))
            if self.augment is None or self.augment.hflip:
                out = out[:, ::-1] if float(torch.rand(1, generator=g)) < 0.5 else out
            return out
        short = int(round(r / EVAL_CROP_FRACTION))
        nh, nw = (short, max(r, int(round(w * short / h)))) if h <= w else (max(r, int(round(h * short / w))), short)
        resized = _resize_box(img, (0, 0, h, w), (nh, nw))
        top, left = (nh - r) // 2, (nw - r) // 2
        return resized[top:top + r, left:left + r]


# ---------------------------------------------------------------------------------- dataset / sampler
class FileDataset(Dataset):
    """Decodes and transforms one image per (index, epoch); unreadable files come back as None."""

    def __init__(self, split: FileSplit, transform: Transform, seed: int) -> None:
        self.split, self.transform, self.seed = split, transform, seed

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, item: tuple[int, int]) -> tuple[np.ndarray, int, int] | tuple[None, str, str]:
        index, epoch = item
        path = self.split.paths[index]
        try:
            img = decode_photo(path)
        except ImageDecodeError as e:
            return None, path, str(e)
        out = self.transform(img, _sample_generator(self.seed, epoch, index))
        return np.ascontiguousarray(out), int(self.split.labels[index]), index


class ShardedBatchSampler(Sampler):
    """Batches of (index, epoch): the global batch order of the in-RAM path, this rank's slice of each.

    `set_epoch(e)` before each epoch (it lives in the main process, so persistent workers follow)."""

    def __init__(self, n: int, global_batch: int, *, shuffle: bool, drop_last: bool, seed: int,
                 env: DistEnv = SINGLE, start_step: int = 0, max_steps: int | None = None) -> None:
        self.n, self.batch, self.shuffle, self.drop_last, self.seed, self.env = n, global_batch, shuffle, drop_last, seed, env
        self.epoch, self.start_step, self.max_steps = 0, start_step, max_steps

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _steps(self) -> int:
        full = self.n // self.batch if self.drop_last and self.n >= self.batch else -(-self.n // self.batch)
        return min(full, self.max_steps) if self.max_steps else full

    def __len__(self) -> int:
        return max(0, self._steps() - self.start_step)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        from .runtime import epoch_generator

        order = (torch.randperm(self.n, generator=epoch_generator(self.seed, self.epoch)) if self.shuffle
                 else torch.arange(self.n))
        for step in range(self.start_step, self._steps()):
            idx = order[step * self.batch:(step + 1) * self.batch]
            yield [(int(i), self.epoch) for i in idx[shard_slice(len(idx), self.env)]]


def _collate(items: Sequence[tuple[Any, Any, Any]]) -> dict[str, Any]:
    good = [it for it in items if it[0] is not None]
    bad = [(it[1], it[2]) for it in items if it[0] is None]
    if not good:
        return {"x": torch.zeros((0, 1, 1, 3), dtype=torch.uint8), "y": torch.zeros(0, dtype=torch.int64),
                "index": torch.zeros(0, dtype=torch.int64), "skipped": bad}
    return {"x": torch.from_numpy(np.stack([it[0] for it in good])),
            "y": torch.tensor([it[1] for it in good], dtype=torch.int64),
            "index": torch.tensor([it[2] for it in good], dtype=torch.int64), "skipped": bad}


def _worker_init(_: int) -> None:
    # every worker decodes one image at a time: intra-op threads would only fight the other workers
    import cv2

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


class StreamLoader:
    """An epoch-aware DataLoader over a `FileSplit`: `for x, y in loader.epoch(e)` (x uint8 NHWC).

    Unreadable files are skipped (the batch is one smaller), warned about once and counted in
    `skipped`, as the in-RAM path does at decode time."""

    def __init__(self, data: StreamingData, split: FileSplit, global_batch: int, *, train: bool,
                 augment: AugmentConfig | None = None, env: DistEnv = SINGLE, device: torch.device | None = None,
                 workers: int | None = None, max_steps: int | None = None) -> None:
        cfg = data.cfg
        self.transform = Transform(cfg.transform, data.resolution, train, augment if train else None,
                                   cfg.min_crop_scale)
        self.sampler = ShardedBatchSampler(len(split), global_batch, shuffle=train, drop_last=train, seed=data.seed,
                                           env=env, max_steps=max_steps)
        nw = cfg.workers if workers is None else workers
        self.loader = DataLoader(
            FileDataset(split, self.transform, data.seed), batch_sampler=self.sampler, num_workers=nw,
            collate_fn=_collate, pin_memory=device is not None and device.type == "cuda",
            persistent_workers=nw > 0 and train, prefetch_factor=4 if nw > 0 else None,
            worker_init_fn=_worker_init if nw > 0 else None)
        self.skipped = data.skipped
        self._warned: set[str] = set()

    def __len__(self) -> int:
        return len(self.sampler)

    def epoch(self, epoch: int = 0, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.sampler.set_epoch(epoch)
        self.sampler.start_step = start_step
        for b in self.loader:
            for path, why in b["skipped"]:
                if path not in self._warned:
                    self._warned.add(path)
                    self.skipped.append((path, why))
                    log.warning("skipping unreadable image %s", why)
            if len(b["y"]):
                yield b["x"], b["y"]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch(0)
