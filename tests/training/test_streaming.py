"""The streaming DataLoader path: same images and labels as the in-RAM path, EXIF orientation, the
ImageNet-style preset on a small folder of Grocery Store photos, determinism over workers and ranks."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from training.config import AugmentConfig, DataConfig, DataKind, DataLoaderKind, TransformKind
from training.datasets import decode_photo, load_data
from training.distributed import DistEnv
from training.streaming import StreamLoader, open_stream

CLASSES = ("Fruit/Apple/Golden-Delicious", "Vegetables/Carrots", "Packages/Milk/Arla-Standard-Milk")


def _save_with_orientation(src: Path, dst: Path, orientation: int) -> None:
    """A non-square crop of a real photo stored with an EXIF orientation tag (as phones store portraits)."""
    im = Image.open(src).convert("RGB")
    im = im.crop((0, 0, im.width, im.height * 3 // 4))
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.save(dst, quality=95, exif=exif.tobytes())


def _grocery_folder(grocery_root: Path, dest: Path, per_class: dict[str, int], exif_every: int = 4) -> Path:
    """dest/<split>/<class>/*.jpg from real Grocery photos; every `exif_every`-th carries an EXIF rotation."""
    k = 0
    for split, n in per_class.items():
        src_split = "val" if split == "val" else "train"
        for c in CLASSES:
            out = dest / split / c.split("/")[-1] if split != "flat" else dest / c.split("/")[-1]
            out.mkdir(parents=True, exist_ok=True)
            srcs = sorted((grocery_root / src_split / c).glob("*.jpg"))[:n]
            assert len(srcs) == n, (c, len(srcs))
            for p in srcs:
                k += 1
                if k % exif_every == 0:
                    _save_with_orientation(p, out / p.name, orientation=(6, 3, 8, 2, 5, 7, 4)[k % 7])
                else:
                    shutil.copy(p, out / p.name)
    return dest


def _gather(loader: StreamLoader, epoch: int = 0) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in loader.epoch(epoch)])
    return np.concatenate(xs), np.concatenate(ys)


def test_exif_orientation_is_honoured_like_pil(grocery_root, tmp_path):
    src = sorted((grocery_root / "train" / CLASSES[0]).glob("*.jpg"))[0]
    for o in range(1, 9):
        p = tmp_path / f"o{o}.jpg"
        _save_with_orientation(src, p, o)
        with Image.open(p) as im:
            want = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        got = decode_photo(p)
        assert got.shape == want.shape and np.array_equal(got, want), o
    assert decode_photo(tmp_path / "o6.jpg").shape[:2] == (128, 96)  # stored 96 high, seen 96 wide (portrait)


def test_stream_yields_the_in_ram_images_and_labels(grocery_root, tmp_path):
    root = _grocery_folder(grocery_root, tmp_path / "photos", {"flat": 14})
    (root / "Carrots" / "truncated.jpg").write_bytes((root / "Carrots").glob("*.jpg").__next__().read_bytes()[:300])
    cfg = DataConfig(name="g", kind=DataKind.folder, root=str(root), resolution=48, test_fraction=0.25,
                     cache_dir=str(tmp_path / "cache"))
    ram = load_data(cfg, seed=2)
    stream = open_stream(DataConfig(**{**cfg.__dict__, "loader": DataLoaderKind.stream, "workers": 2}), seed=2)
    for split in ("train", "val", "test"):
        loader = StreamLoader(stream, getattr(stream, split), 5, train=False)
        x, y = _gather(loader)
        want = getattr(ram, split)
        assert x.shape == want.images.shape and x.dtype == np.uint8, split
        assert np.array_equal(x, want.images), split  # byte for byte, EXIF-rotated photos included
        assert np.array_equal(y, want.labels), split
    assert {Path(p).name for p, _ in ram.skipped} == {Path(p).name for p, _ in stream.skipped} == {"truncated.jpg"}


def test_imagenet_preset_on_a_grocery_folder(grocery_root, tmp_path):
    import spnas

    root = _grocery_folder(grocery_root, tmp_path / "imnet", {"train": 12, "val": 4})
    cfg = spnas.compose("train", ["data=imagenet", f"data.root={root}", "data.workers=2"]).data
    assert (cfg.resolution, cfg.loader, cfg.transform) == (224, DataLoaderKind.stream, TransformKind.imagenet)
    data = open_stream(cfg, seed=1)
    assert (len(data.train), len(data.val), len(data.test)) == (36, 12, 12) and data.num_classes == 3
    aug = AugmentConfig(crop_padding=0, hflip=True)
    train = StreamLoader(data, data.train, 12, train=True, augment=aug)
    x0, y0 = _gather(train, epoch=0)
    assert x0.shape == (36, 224, 224, 3)
    # deterministic: the same epoch replays byte for byte with any number of workers ...
    x0b, y0b = _gather(StreamLoader(data, data.train, 12, train=True, augment=aug, workers=0), epoch=0)
    assert np.array_equal(x0, x0b) and np.array_equal(y0, y0b)
    # ... and another epoch draws other crops and another order
    x1, y1 = _gather(train, epoch=1)
    assert not np.array_equal(x0, x1)
    assert sorted(y0.tolist()) == sorted(y1.tolist())
    # two DDP ranks split every global batch: together they see exactly the single-process batches
    r0, r1 = (StreamLoader(data, data.train, 12, train=True, augment=aug, env=DistEnv(r, 2, r), workers=0)
              for r in (0, 1))
    for (a, ya), (b, yb), (c, yc) in zip(r0.epoch(0), r1.epoch(0), StreamLoader(data, data.train, 12, train=True,
                                                                                  augment=aug, workers=0).epoch(0)):
        assert len(ya) == len(yb) == 6
        assert np.array_equal(np.concatenate([a, b]), c.numpy()) and np.array_equal(np.concatenate([ya, yb]), yc)
    # evaluation: resize the short side to 256, centre-crop 224, no randomness
    val = StreamLoader(data, data.val, 5, train=False)
    v0, vy = _gather(val)
    v1, _ = _gather(val, epoch=3)
    assert v0.shape == (12, 224, 224, 3) and np.array_equal(v0, v1)
    first = decode_photo(data.val.paths[0])
    h, w = first.shape[:2]
    short = 256
    size = (short, round(w * short / h)) if h <= w else (round(h * short / w), short)
    big = np.asarray(Image.fromarray(first).resize(size[::-1], Image.Resampling.BILINEAR))
    top, left = (size[0] - 224) // 2, (size[1] - 224) // 2
    assert np.array_equal(v0[0], big[top:top + 224, left:left + 224])


def test_imagenet_preset_trains_from_the_stream(grocery_root, tmp_path):
    """spnas-train data=imagenet: a real (tiny) run decoding from the folder in worker processes."""
    import json

    import spnas
    from spnas.app.jobs import commands

    root = _grocery_folder(grocery_root, tmp_path / "imnet", {"train": 8, "val": 2})
    cfg = spnas.compose("train", ["data=imagenet", f"data.root={root}", "data.workers=2", "data.resolution=96",
                                  "arch=mobilenet_v3_small", "train.epochs=1", "train.min_steps=0", "train.batch_size=8",
                                  "train.eval_batch_size=6", "device=cpu", f"run_dir={tmp_path / 'run'}"])
    s = commands.train(cfg)
    assert s["data"]["loader"] == "stream" and s["data"]["train"] == 24 and s["data"]["test"] == 6
    assert 0.0 <= s["test_top1"] <= 1.0 and s["compute"]["device"] == "cpu"
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 1 and metrics[0]["images_per_s"] > 0


def test_stream_refuses_what_it_cannot_do():
    from spnas_core.errors import ConfigError

    with pytest.raises(ConfigError, match="fashion_mnist is four IDX archives"):
        DataConfig(name="f", kind=DataKind.fashion_mnist, root="/x", loader=DataLoaderKind.stream)
    with pytest.raises(ConfigError, match="add data.loader=stream"):
        DataConfig(name="f", kind=DataKind.folder, root="/x", transform=TransformKind.imagenet)
