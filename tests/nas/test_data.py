"""Data loaders on real images: folder trees, CIFAR-10 JPEG, Grocery lists, Fashion-MNIST IDX."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from spnas_core.errors import DataNotFoundError
from training.batches import iterate_batches
from training.config import AugmentConfig, DataConfig, DataKind, LabelLevel
from training.datasets import load_data as _load_data
from training.datasets import split_train_val


def load_data(d: dict, cache_dir: Path):
    """`training.datasets.load_data` on a typed DataConfig built from a short dict (test shorthand)."""
    d = dict(d)
    seed = d.pop("seed", 0)
    kind = DataKind[d.pop("kind")]
    if "label_level" in d:
        d["label_level"] = LabelLevel[d["label_level"]]
    return _load_data(DataConfig(name=d.pop("name", kind.name), kind=kind, **d), seed, cache_dir=cache_dir)


def _tree_with_bad_files(cifar_root: Path, dest: Path, per_class: int = 20) -> Path:
    for cls in ("cat", "dog", "ship"):
        d = dest / cls
        d.mkdir(parents=True)
        for p in sorted((cifar_root / "train" / cls).glob("*.jpg"))[:per_class]:
            shutil.copy(p, d / p.name)
    good = sorted((dest / "cat").glob("*.jpg"))[0].read_bytes()
    (dest / "cat" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (dest / "dog" / "not-an-image.jpg").write_text("this is a text file, not a JPEG")
    (dest / "ship" / "empty.png").write_bytes(b"")
    return dest


def test_corrupt_images_are_skipped_and_counted(cifar_root, tmp_path, caplog):
    root = _tree_with_bad_files(cifar_root, tmp_path / "photos")
    cfg = {"kind": "folder", "name": "photos", "root": str(root), "resolution": 32, "test_fraction": 0.25}
    with caplog.at_level("WARNING"):
        data = load_data(cfg, cache_dir=tmp_path / "cache")
    assert len(data.skipped) == 3
    assert {Path(p).name for p, _ in data.skipped} == {"truncated.jpg", "not-an-image.jpg", "empty.png"}
    assert "skipping unreadable image" in caplog.text
    assert len(data.train) + len(data.val) + len(data.test) == 60
    assert data.summary()["skipped_images"] == 3
    # the decode cache remembers the skips
    again = load_data(cfg, cache_dir=tmp_path / "cache")
    assert len(again.skipped) == 3 and np.array_equal(again.train.images, data.train.images)


def test_training_epoch_survives_corrupt_images(cifar_root, tmp_path):
    """A run over a folder with corrupt files completes its epochs and reports the skips."""
    from spnas.app.jobs import commands

    from ..conftest import compose

    root = _tree_with_bad_files(cifar_root, tmp_path / "photos", per_class=12)
    cfg = compose("train", [f"run_dir={tmp_path / 'run'}", "arch=mobilenet_v3_small", "data=folder",
                            f"data.root={root}", "data.resolution=32", "data.test_fraction=0.25",
                            f"data.cache_dir={tmp_path / 'cache'}", "train.epochs=1", "train.min_steps=0", "train.batch_size=8",
                            "train.lr=0.05", "train.eval_batch_size=64"])
    s = commands.train(cfg)
    assert s["data"]["skipped_images"] == 3
    assert (tmp_path / "run" / "summary.json").exists()


def test_missing_root_names_path_and_remedy(tmp_path):
    for kind, word in (("cifar10", "make data"), ("grocery", "make data"), ("fashion_mnist", "apt-get"),
                       ("folder", "class subfolders")):
        root = tmp_path / f"no-{kind}"
        with pytest.raises(DataNotFoundError) as e:
            load_data({"kind": kind, "root": str(root), "resolution": 32}, cache_dir=tmp_path / "c")
        assert str(root) in str(e.value) and word in str(e.value)


def test_cifar10_tree_and_limits(cifar_root, tmp_path):
    cfg = {"kind": "cifar10", "root": str(cifar_root), "resolution": 32, "train_limit": 500,
           "test_limit": 200, "seed": 1}
    d = load_data(cfg, cache_dir=tmp_path)
    assert d.num_classes == 10 and d.classes[0] == "airplane"
    assert len(d.train) + len(d.val) == 500 and len(d.test) == 200
    assert np.bincount(d.test.labels, minlength=10).tolist() == [20] * 10  # balanced subset
    assert d.train.images.shape[1:] == (32, 32, 3) and d.train.images.dtype == np.uint8
    d2 = load_data({**cfg, "seed": 1}, cache_dir=tmp_path / "other")
    assert d2.train.ids == d.train.ids, "same seed, same split"


def test_val_limit_holds_where_val_is_carved_out_of_train(cifar_root, tmp_path):
    """CIFAR-10 has no val split: val is carved out of train, and `val_limit` must bound it (it was ignored,
    so a preset's 1000 validation images were 5000). Train stays the same with or without the limit."""
    cfg = {"kind": "cifar10", "root": str(cifar_root), "resolution": 32, "train_limit": 500, "test_limit": 100,
           "val_fraction": 0.2}
    full = load_data(cfg, cache_dir=tmp_path / "a")
    limited = load_data({**cfg, "val_limit": 30}, cache_dir=tmp_path / "b")
    assert len(full.val) == 100 and len(limited.val) == 30
    assert np.bincount(limited.val.labels, minlength=10).tolist() == [3] * 10  # class-balanced
    assert set(limited.val.ids) <= set(full.val.ids) and limited.train.ids == full.train.ids


def test_grocery_fine_coarse_and_gallery(grocery_root, tmp_path):
    fine = load_data({"kind": "grocery", "root": str(grocery_root), "resolution": 48, "train_limit": 162,
                      "test_limit": 81, "val_limit": 40}, cache_dir=tmp_path)
    assert fine.num_classes == 81 and len(fine.gallery) == 81
    assert sorted(fine.gallery.labels.tolist()) == list(range(81))
    coarse = load_data({"kind": "grocery", "root": str(grocery_root), "resolution": 48, "label_level": "coarse",
                        "test_limit": 81, "train_limit": 84, "val_limit": 42}, cache_dir=tmp_path)
    # classes.csv numbers 43 coarse classes (0..42; the upstream README says 42)
    n_coarse = len(set(fine.coarse_of_fine))
    assert coarse.num_classes == n_coarse == max(fine.coarse_of_fine) + 1
    assert coarse.test.labels.max() < n_coarse
    assert len(fine.coarse_of_fine) == 81


def test_fashion_mnist_idx_grey_to_rgb(fashion_mnist_root, tmp_path):
    d = load_data({"kind": "fashion_mnist", "root": str(fashion_mnist_root), "resolution": 32,
                   "train_limit": 1000, "test_limit": 100}, cache_dir=tmp_path)
    assert d.train.images.shape[1:] == (32, 32, 3)
    img = d.test.images[0]
    assert np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2])
    assert len(d.test) == 100 and d.num_classes == 10


def test_truncated_idx_is_reported(tmp_path):
    import gzip

    from training.datasets import _read_idx

    p = tmp_path / "x-idx3-ubyte.gz"
    with gzip.open(p, "wb") as f:
        f.write(bytes.fromhex("00000803") + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\0" * 100)
    with pytest.raises(ValueError, match="truncated"):
        _read_idx(p)


def test_split_is_deterministic_and_stratified():
    labels = np.repeat(np.arange(5), 40)
    a = split_train_val(labels, 0.25, seed=3)
    b = split_train_val(labels, 0.25, seed=3)
    c = split_train_val(labels, 0.25, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[1], c[1])
    assert np.bincount(labels[a[1]]).tolist() == [10] * 5


def test_batches_are_normalised_nchw(cifar_root, tmp_path):
    import torch

    d = load_data({"kind": "cifar10", "root": str(cifar_root), "resolution": 32, "train_limit": 100,
                   "test_limit": 10}, cache_dir=tmp_path)
    g = torch.Generator().manual_seed(0)
    x, y = next(iterate_batches(d.train, 16, shuffle=True, generator=g,
                                augment=AugmentConfig(crop_padding=4, hflip=True)))
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (16,)
    assert -3 < float(x.mean()) < 3
