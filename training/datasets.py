"""Real image data for search, training, calibration and retrieval evaluation.

Every source is decoded once into uint8 NHWC arrays at the configured resolution (resized the
way MediaPipe resizes, see `spnas_core.images`, after honouring the photo's EXIF orientation) and cached
under `<SPNAS_HOME>/cache/data/`, so epochs run from memory. The cache key is the data set's
*content* (`data_key`: the file list with sizes and modification times, not the folder's path) plus
every setting that changes the arrays; the cache is a plain `.npz` (no pickled objects). Corrupt or
truncated files are skipped with a warning and counted (`DataBundle.skipped`), never a crash halfway
through an epoch. Sets too large for RAM stream from their files instead (`training.streaming`),
split by the same listing code (`list_splits`).

Sources:
- ``folder``: ``root/<class>/<image>``, or ``root/{train,val,test}/<class>/<image>`` (plus an optional
  ``root/gallery/<class>/<image>`` of catalogue images, the retrieval gallery)
- ``cifar10``: the CIFAR-10 JPEG tree (``train/`` and ``test/`` class folders)
- ``grocery``: Grocery Store lists (``train.txt``/``val.txt``/``test.txt``, fine or coarse labels)
  with the iconic catalogue images as the ``gallery`` split
- ``fashion_mnist``: the four official IDX ``.gz`` files
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import logging
import os
import struct
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from spnas_core.config import to_plain
from spnas_core.errors import DataNotFoundError, ImageDecodeError, InputError
from spnas_core.images import RESIZE_METHOD, decode_rgb, resize_like_mediapipe
from spnas_core.paths import cache_root, data_root, shared_dir
from training.config import DataConfig, DataKind, SmallClasses

log = logging.getLogger(__name__)

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

# Where each data set comes from, for the "how to get it" half of a missing-data error.
HOW_TO_GET = {
    "cifar10": "run `make data` (unpacks ../shared/datasets/cifar10-jpg.tar.gz into <SPNAS_HOME>/data), "
    "or point data.root at a folder with train/<class>/*.jpg and test/<class>/*.jpg",
    "grocery": "run `make data` (unpacks ../shared/datasets/grocery-store-128.tar.gz into <SPNAS_HOME>/data), "
    "or point data.root at a copy of the Grocery Store Dataset (train.txt, test.txt, classes.csv)",
    "fashion_mnist": "run `sudo apt-get install -y dataset-fashion-mnist` (installs the IDX files in "
    f"{FASHION_MNIST_DIR}), or point data.root at a folder holding the four *-idx*-ubyte.gz files",
    "folder": "point data.root at a folder of class subfolders (root/<class>/<image>.jpg)",
}

ARCHIVES = {"cifar10": "cifar10-jpg.tar.gz", "grocery": "grocery-store-128.tar.gz"}


def unpack_shared(kind: str, dest: Path | None = None) -> Path | None:
    """Unpack a data set archive from the shared folder into `dest` (default `data_dir()`).

    Extracts to a temporary folder and renames, so an interrupted unpack leaves nothing half done.
    Returns the extracted root, or None when the archive is not there.
    """
    name = ARCHIVES.get(kind)
    if name is None:
        return None
    archive = shared_dir() / "datasets" / name
    if not archive.is_file():
        return None
    dest = Path(dest or data_root())
    root_name = name.removesuffix(".tar.gz")
    final = dest / root_name
    if final.exists():
        return final
    tmp = dest / f".{root_name}.partial"
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    log.info("unpacking %s into %s", archive, dest)
    with tarfile.open(archive) as tf:
        tf.extractall(tmp, filter="data")
    os.replace(tmp / root_name, final)
    tmp.rmdir()
    return final


# ---------------------------------------------------------------------------------- containers
@dataclass
class Split:
    """Decoded images of one split: uint8 NHWC at the data set resolution, labels, source ids."""

    images: np.ndarray
    labels: np.ndarray
    ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: Sequence[int] | np.ndarray) -> "Split":
        idx = np.asarray(idx, dtype=np.int64)
        return Split(self.images[idx], self.labels[idx], [self.ids[i] for i in idx] if self.ids else [])


@dataclass
class DataBundle:
    """All splits of one data set plus what was skipped while decoding it."""

    name: str
    resolution: int
    classes: list[str]
    train: Split
    val: Split
    test: Split
    gallery: Split | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    coarse_classes: list[str] | None = None
    coarse_of_fine: list[int] | None = None
    test_from: str = "data_set_split"  # where the test split comes from (TEST_* below): the report words it

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def summary(self) -> dict[str, Any]:
        """Sizes and skip count, for run summaries and reports."""
        return {
            "name": self.name,
            "resolution": self.resolution,
            "num_classes": self.num_classes,
            "train": len(self.train),
            "val": len(self.val),
            "test": len(self.test),
            "gallery": len(self.gallery) if self.gallery is not None else 0,
            "skipped_images": len(self.skipped),
            "skipped_examples": [p for p, _ in self.skipped[:10]],
            "test_from": self.test_from,
        }


# ---------------------------------------------------------------------------------- decoding
def decode_photo(path: str | Path) -> np.ndarray:
    """Decode an image file to uint8 RGB the way a person sees it (EXIF orientation applied by
    `spnas_core.images.decode_rgb`, as MediaPipe's loader applies it): one decoder for both loaders."""
    return decode_rgb(path)


_WARNED: set[str] = set()  # unreadable files already warned about in this process


def _decode_files(
    paths: Sequence[str], resolution: int, desc: str, skipped: list[tuple[str, str]]
) -> tuple[np.ndarray, np.ndarray]:
    """Decode and resize files; returns (images, kept index). Bad files are warned about and skipped."""
    from tqdm import tqdm

    def one(p: str) -> np.ndarray | str:
        try:
            return resize_like_mediapipe(decode_photo(p), resolution)
        except ImageDecodeError as e:
            return str(e)

    out = np.empty((len(paths), resolution, resolution, 3), dtype=np.uint8)
    keep: list[int] = []
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        it = pool.map(one, paths, chunksize=64)
        for i, r in enumerate(tqdm(it, total=len(paths), desc=desc, unit="img", leave=False,
                                   disable=len(paths) < 2000)):
            if isinstance(r, str):
                if paths[i] not in _WARNED:  # one warning per file per process (the pipeline decodes a folder twice)
                    _WARNED.add(paths[i])
                    log.warning("skipping unreadable image %s", r)
                skipped.append((paths[i], r))
            else:
                out[len(keep)] = r
                keep.append(i)
    return out[: len(keep)], np.asarray(keep, dtype=np.int64)


def _balanced_limit(labels: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """Indices of at most `limit` items, classes as balanced as possible, chosen by `seed`."""
    n = len(labels)
    if limit is None or limit >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    by_class: dict[int, list[int]] = {}
    for i in perm:
        by_class.setdefault(int(labels[i]), []).append(int(i))
    chosen: list[int] = []
    queues = [by_class[c] for c in sorted(by_class)]
    depth = 0
    while len(chosen) < limit:
        progressed = False
        for q in queues:
            if depth < len(q) and len(chosen) < limit:
                chosen.append(q[depth])
                progressed = True
        if not progressed:
            break
        depth += 1
    return np.sort(np.asarray(chosen, dtype=np.int64))


def carve_val(labels: np.ndarray, cfg: DataConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and val indices of a set without a val split: `val_fraction` of each class carved out of train,
    val then bounded by `val_limit` (class-balanced). The carved share's other images stay out of train, so
    train is the same with or without the limit."""
    tr, va = split_train_val(labels, cfg.val_fraction, seed)
    return tr, va[_balanced_limit(labels[va], cfg.val_limit, seed)]


def split_train_val(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified train/val split of indices from a seed."""
    rng = np.random.default_rng(seed + 7919)
    train_idx, val_idx = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n_val = int(round(len(idx) * val_fraction))
        val_idx.extend(idx[:n_val].tolist())
        train_idx.extend(idx[n_val:].tolist())
    return np.sort(np.asarray(train_idx, dtype=np.int64)), np.sort(np.asarray(val_idx, dtype=np.int64))


def _list_folder(root: Path) -> tuple[list[str], np.ndarray, list[str]]:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataNotFoundError(f"{root} has no class subfolders; {HOW_TO_GET['folder']}")
    paths, labels = [], []
    for ci, c in enumerate(classes):
        for p in sorted((root / c).rglob("*")):
            if p.suffix.lower() in IMAGE_EXTS and p.is_file():
                paths.append(str(p))
                labels.append(ci)
    if not paths:
        raise DataNotFoundError(f"{root} has class folders but no images ({', '.join(sorted(IMAGE_EXTS))})")
    return paths, np.asarray(labels, dtype=np.int64), classes


def _require_root(kind: str, root: Path, must_have: Sequence[str] = ()) -> Path:
    if not root.exists() and kind in ARCHIVES and root.name == ARCHIVES[kind].removesuffix(".tar.gz"):
        unpack_shared(kind, root.parent)  # the shared archive is there: unpack it on first use
    missing = [m for m in must_have if not (root / m).exists()]
    if not root.exists() or missing:
        what = "does not exist" if not root.exists() else f"lacks {', '.join(missing)}"
        raise DataNotFoundError(f"data set '{kind}': {root} {what}. To get it: {HOW_TO_GET[kind]}")
    return root


# ---------------------------------------------------------------------------------- sources
def _limits(cfg: DataConfig) -> dict[str, int | None]:
    return {"train": cfg.train_limit, "val": cfg.val_limit, "test": cfg.test_limit}


# Where a data set's test split comes from (`DataBundle.test_from`): the report words each one.
TEST_SAME_FOLDER = "same_folder_split"  # a random share of each class of one folder: the same shoot as train
TEST_FOLDER = "test_folder"  # root/test/<class>/ beside root/train/<class>/
TEST_ROOT = "test_root"  # data.test_root: a separate folder (a held-out shoot)
TEST_DATA_SET = "data_set_split"  # a published data set's own test split


@dataclass
class Listing:
    """The files of a data set, split and limited, before any decoding (shared by both loaders)."""

    classes: list[str]
    splits: dict[str, tuple[list[str], np.ndarray]]
    gallery: tuple[list[str], np.ndarray] | None = None
    coarse_classes: list[str] | None = None
    coarse_of_fine: list[int] | None = None
    test_from: str = TEST_DATA_SET


def min_class_size(test_fraction: float) -> int:
    """The fewest photos a class of an unsplit folder needs so that the per-class split puts at least one
    in test and one in train (`split_train_val` rounds each class's share)."""
    n = 2
    while int(round(n * test_fraction)) < 1 or n - int(round(n * test_fraction)) < 1:
        n += 1
    return n


def check_classes(root: Path, classes: list[str], sources: dict[str, tuple[list[str], np.ndarray]],
                  policy: SmallClasses, need: dict[str, int]) -> tuple[list[str], dict[str, tuple[list[str], np.ndarray]]]:
    """Refuse a folder a classifier cannot be trained and tested on: fewer than 2 classes, or a class with
    fewer photos in a split than `need` (split -> count, e.g. {"all": 3} before an automatic split). With
    `policy=exclude` such classes are left out (warned about, relabelled); returns (classes, sources)."""
    if len(classes) < 2:
        raise InputError(f"{root} has {len(classes)} class folder{'s' if len(classes) != 1 else ''} "
                         f"({', '.join(classes) or 'none'}): a classifier needs at least 2 classes; put each "
                         f"product's photos in its own folder: {root}/<class>/<image>.jpg")
    short: dict[str, str] = {}
    for ci, c in enumerate(classes):
        for split, n_need in need.items():
            labels = np.concatenate([sources[s][1] for s in sources]) if split == "all" else sources[split][1]
            have = int((labels == ci).sum())
            if have < n_need:
                short[c] = f"{have} photo{'s' if have != 1 else ''}{'' if split == 'all' else ' in ' + split}"
                break
    if not short:
        return classes, sources
    what = "; ".join(f"{c}: {why}" for c, why in short.items())
    rule = ", ".join(f"{n} in {s}" if s != "all" else f"{n} per class" for s, n in need.items())
    if policy is SmallClasses.refuse:
        raise InputError(f"{root}: {len(short)} class{'es' if len(short) > 1 else ''} with too few photos for "
                         f"the train and test splits ({what}; the splits need {rule}): add photos, or leave "
                         f"{'them' if len(short) > 1 else 'it'} out with data.small_classes=exclude")
    keep = [c for c in classes if c not in short]
    if len(keep) < 2:
        raise InputError(f"{root}: only {len(keep)} class{'es' if len(keep) != 1 else ''} would be left after "
                         f"excluding {what}: a classifier needs at least 2; add photos")
    log.warning("%s: leaving out %d class%s with too few photos (%s; the splits need %s; data.small_classes="
                "exclude)", root, len(short), "es" if len(short) > 1 else "", what, rule)
    new_index = {classes.index(c): i for i, c in enumerate(keep)}
    out = {}
    for s, (paths, labels) in sources.items():
        idx = [i for i, l in enumerate(labels) if int(l) in new_index]
        out[s] = ([paths[i] for i in idx], np.asarray([new_index[int(labels[i])] for i in idx], dtype=np.int64))
    return keep, out


def _list_folder_like(cfg: DataConfig, seed: int) -> Listing:
    kind = cfg.kind.name
    root = _require_root(kind, Path(cfg.root))
    has_splits = (root / "train").is_dir() and any((root / s).is_dir() for s in ("test", "val"))
    test_root = Path(os.path.expanduser(cfg.test_root)).resolve() if cfg.test_root else None
    if test_root is not None and not test_root.is_dir():
        raise DataNotFoundError(f"data.test_root={test_root} does not exist; give a folder of the same classes "
                                f"(<class>/<image>.jpg) photographed apart from data.root")
    if has_splits:
        train_paths, train_labels, classes = _list_folder(root / "train")
        sources = {"train": (train_paths, train_labels)}
        for s in ("val", "test"):
            if (root / s).is_dir() and not (s == "test" and test_root is not None):
                p, l, c2 = _list_folder(root / s)
                if c2 != classes:
                    raise DataNotFoundError(f"{root / s} has different classes from {root / 'train'}")
                sources[s] = (p, l)
        test_from = TEST_FOLDER if "test" in sources and cfg.kind is DataKind.folder else TEST_DATA_SET
    elif test_root is not None:
        paths, labels, classes = _list_folder(root)
        sources = {"train": (paths, labels)}
    else:
        paths, labels, classes = _list_folder(root)
        if cfg.kind is DataKind.folder:  # refuse or exclude small classes before the split hides them
            classes, ((paths, labels),) = _checked_all(root, classes, paths, labels, cfg)
        rest, test_idx = split_train_val(labels, cfg.test_fraction, seed + 1)
        sources = {
            "train": ([paths[i] for i in rest], labels[rest]),
            "test": ([paths[i] for i in test_idx], labels[test_idx]),
        }
        test_from = TEST_SAME_FOLDER
    if test_root is not None:
        p, l, c2 = _list_folder(test_root)
        if c2 != classes:
            raise DataNotFoundError(f"data.test_root={test_root} has classes {c2[:8]} but {root} has {classes[:8]}: "
                                    f"the held-out photos must be of the same classes (the same folder names)")
        sources["test"] = (p, l)
        test_from = TEST_ROOT
    listed = list(classes)
    if cfg.kind is DataKind.folder and (has_splits or test_root is not None):
        classes, sources = check_classes(root, classes, sources, cfg.small_classes,
                                         {"train": 1, "test": 1} if "test" in sources else {"train": 1})
    limits = _limits(cfg)
    out: dict[str, tuple[list[str], np.ndarray]] = {}
    for s, (paths, labels) in sources.items():
        pick = _balanced_limit(labels, limits.get(s), seed)
        out[s] = ([paths[i] for i in pick], labels[pick])
    gallery = None
    if has_splits and (root / "gallery").is_dir():  # catalogue images: root/gallery/<class>/*, any subset of classes
        gp, gl, gc = _list_folder(root / "gallery")
        unknown = sorted(set(gc) - set(listed))
        if unknown:
            raise DataNotFoundError(f"{root / 'gallery'} has classes that {root / 'train'} lacks: {unknown[:5]}")
        keep = [i for i in range(len(gp)) if gc[gl[i]] in classes]  # classes left out stay out of the gallery
        gallery = ([gp[i] for i in keep], np.asarray([classes.index(gc[gl[i]]) for i in keep], dtype=np.int64))
    return Listing(classes, out, gallery, test_from=test_from)


def _checked_all(root: Path, classes: list[str], paths: list[str], labels: np.ndarray, cfg: DataConfig
                 ) -> tuple[list[str], tuple[tuple[list[str], np.ndarray]]]:
    """`check_classes` on an unsplit folder: every class needs enough photos for the per-class test split."""
    classes, src = check_classes(root, classes, {"all": (paths, labels)}, cfg.small_classes,
                                 {"all": min_class_size(cfg.test_fraction)})
    return classes, (src["all"],)


def _list_grocery(cfg: DataConfig, seed: int) -> Listing:
    root = _require_root("grocery", Path(cfg.root), ["train.txt", "test.txt", "classes.csv"])
    level = cfg.label_level.name
    fine_names: dict[int, str] = {}
    coarse_names: dict[int, str] = {}
    coarse_of: dict[int, int] = {}
    iconic: dict[int, str] = {}
    with open(root / "classes.csv", newline="") as f:
        for row in csv.DictReader(f):
            fid = int(row["Class ID (int)"])
            cid = int(row["Coarse Class ID (int)"])
            fine_names[fid] = row["Class Name (str)"]
            coarse_names[cid] = row["Coarse Class Name (str)"]
            coarse_of[fid] = cid
            iconic[fid] = row["Iconic Image Path (str)"].lstrip("/")
    fine_list = [fine_names[i] for i in sorted(fine_names)]
    coarse_list = [coarse_names[i] for i in sorted(coarse_names)]
    coarse_of_fine = [coarse_of[i] for i in sorted(fine_names)]

    def read_list(name: str) -> tuple[list[str], np.ndarray]:
        paths, labels = [], []
        with open(root / name) as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                parts = [p.strip() for p in line.split(",")]
                if len(parts) < 3:
                    raise InputError(f"{root / name}:{line_no}: expected 'path, fine_id, coarse_id'")
                paths.append(str(root / parts[0]))
                labels.append(int(parts[1]) if level == "fine" else int(parts[2]))
        return paths, np.asarray(labels, dtype=np.int64)

    limits = _limits(cfg)
    splits: dict[str, tuple[list[str], np.ndarray]] = {}
    for s in ("train", "val", "test"):
        if not (root / f"{s}.txt").exists():
            continue
        paths, labels = read_list(f"{s}.txt")
        pick = _balanced_limit(labels, limits[s], seed)
        splits[s] = ([paths[i] for i in pick], labels[pick])
    # gallery: one catalogue image per fine class (label at the configured level)
    fids = sorted(iconic)
    gpaths = [str(root / iconic[f]) for f in fids]
    glabels = np.asarray([f if level == "fine" else coarse_of[f] for f in fids], dtype=np.int64)
    return Listing(fine_list if level == "fine" else coarse_list, splits, (gpaths, glabels), coarse_list,
                   coarse_of_fine)


LISTERS = {DataKind.folder: _list_folder_like, DataKind.cifar10: _list_folder_like, DataKind.grocery: _list_grocery}


def list_splits(cfg: DataConfig, seed: int) -> Listing:
    """Train / val / test file lists of an image-file data set: limits applied, and val carved out of
    train (stratified, by `seed`) when the set has no val split. Both loaders start from this."""
    if cfg.kind not in LISTERS:
        raise InputError(f"data set kind '{cfg.kind.name}' is not a set of image files; it cannot be listed")
    listing = LISTERS[cfg.kind](cfg, seed)
    if "test" not in listing.splits and "val" in listing.splits:
        listing.splits["test"] = listing.splits["val"]  # ImageNet layout (train/ + val/): results are reported on val
    if "val" not in listing.splits:
        paths, labels = listing.splits["train"]
        tr, va = carve_val(labels, cfg, seed)
        listing.splits["train"] = ([paths[i] for i in tr], labels[tr])
        listing.splits["val"] = ([paths[i] for i in va], labels[va])
    return listing


def _load_listed(cfg: DataConfig, seed: int, skipped: list) -> dict[str, Any]:
    listing = list_splits(cfg, seed)
    out: dict[str, Any] = {"classes": listing.classes, "coarse_classes": listing.coarse_classes,
                           "coarse_of_fine": listing.coarse_of_fine, "test_from": listing.test_from}
    parts = dict(listing.splits)
    if listing.gallery is not None:
        parts["gallery"] = listing.gallery
    for s, (paths, labels) in parts.items():
        imgs, keep = _decode_files(paths, cfg.resolution, f"{cfg.kind.name}:{s}", skipped)
        out[s] = Split(imgs, labels[keep], [paths[i] for i in keep])
    return out


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise InputError(f"{path}: too short for an IDX file")
    magic = struct.unpack(">I", data[:4])[0]
    ndim = magic & 0xFF
    if (magic >> 8) != 0x08:
        raise InputError(f"{path}: not an unsigned-byte IDX file (magic {magic:#x})")
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise InputError(f"{path}: truncated IDX file ({body.size} of {int(np.prod(dims))} bytes)")
    return body.reshape(dims)


FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]


def _load_fashion_mnist(cfg: DataConfig, seed: int, skipped: list) -> dict[str, Any]:
    root = Path(cfg.root)
    names = {
        "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }

    def find(stem: str) -> Path:
        for cand in (root / f"{stem}.gz", root / stem):
            if cand.exists():
                return cand
        raise DataNotFoundError(
            f"data set 'fashion_mnist': {root} lacks {stem}.gz. To get it: {HOW_TO_GET['fashion_mnist']}"
        )

    if not root.exists():
        raise DataNotFoundError(
            f"data set 'fashion_mnist': {root} does not exist. To get it: {HOW_TO_GET['fashion_mnist']}"
        )
    res = cfg.resolution
    out: dict[str, Any] = {"classes": list(FASHION_CLASSES)}
    limits = _limits(cfg)
    for s, (img_stem, lab_stem) in names.items():
        images = _read_idx(find(img_stem))
        labels = _read_idx(find(lab_stem)).astype(np.int64)
        if len(images) != len(labels):
            raise InputError(f"fashion_mnist {s}: {len(images)} images but {len(labels)} labels")
        pick = _balanced_limit(labels, limits[s], seed)
        grey = images[pick]
        rgb = np.empty((len(pick), res, res, 3), dtype=np.uint8)
        for i, g in enumerate(grey):
            rgb[i] = resize_like_mediapipe(np.repeat(g[:, :, None], 3, axis=2), res)
        out[s] = Split(rgb, labels[pick], [f"{s}:{int(i)}" for i in pick])
    return out


LOADERS = {DataKind.folder: _load_listed, DataKind.cifar10: _load_listed, DataKind.grocery: _load_listed,
           DataKind.fashion_mnist: _load_fashion_mnist}
CACHE_VERSION = 6  # 6: val_limit bounds a carved val; 5: test_from recorded; 4: content-keyed, EXIF orientation
# honoured, val carved from the listing

# Settings that change neither the images nor how training sees them: left out of content keys (the
# loader stays in: a stream draws its augmentation per image, the in-RAM path per batch).
_NOT_CONTENT = ("root", "cache_dir", "workers")


def tree_fingerprint(root: str | Path) -> str:
    """Content key of a folder: every file's relative path, size and modification time (hidden files
    and folders skipped). Moving or copying the folder with its times keeps it; editing any file's
    bytes, adding or removing one changes it. Cheap: one stat per file, no reading."""
    root = Path(root)
    h = hashlib.sha256()
    if root.is_file():
        st = root.stat()
        h.update(f"{root.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:20]
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = os.path.relpath(dirpath, root)
        for f in sorted(filenames):
            if f.startswith("."):
                continue
            try:
                st = os.stat(os.path.join(dirpath, f))
            except OSError:  # a file removed while listing: the next listing sees the change
                continue
            h.update(f"{rel}/{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def data_key(cfg: DataConfig) -> dict[str, Any]:
    """What a data set *is*, for stage and cache keys: its settings that change the images plus the
    content fingerprint of its files (not the path they happen to live at)."""
    root = Path(os.path.expanduser(str(cfg.root))).resolve()
    if cfg.kind.name in ARCHIVES and not root.exists():
        _require_root(cfg.kind.name, root)  # unpack on first use (or say how to get it)
    if not root.exists():
        raise DataNotFoundError(f"data set '{cfg.kind.name}': {root} does not exist. To get it: "
                                f"{HOW_TO_GET[cfg.kind.name]}")
    plain = {k: v for k, v in to_plain(cfg).items() if k not in _NOT_CONTENT}
    return {**plain, "content": tree_fingerprint(root), "resize": RESIZE_METHOD}


def _cache_key(cfg: DataConfig, seed: int) -> str:
    blob = json.dumps({"data": data_key(cfg), "seed": seed, "v": CACHE_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def load_data(cfg: DataConfig, seed: int = 0, cache_dir: str | Path | None = None) -> DataBundle:
    """Load (or fetch from the decode cache) the data set a `data/` config describes."""
    from dataclasses import replace

    cfg = replace(cfg, root=str(Path(os.path.expanduser(str(cfg.root))).resolve()))
    cache_dir = Path(cache_dir or cfg.cache_dir or cache_root() / "data")
    cache = cache_dir / f"{cfg.kind.name}-{_cache_key(cfg, seed)}.npz"
    if cache.exists():
        try:
            return _read_cache(cache, cfg.root)
        except Exception as e:  # a damaged cache is rebuilt, not fatal
            log.warning("ignoring damaged data cache %s (%s)", cache, e)
    skipped: list[tuple[str, str]] = []
    parts = LOADERS[cfg.kind](cfg, seed, skipped)
    train = parts["train"]
    if "val" in parts:
        val = parts["val"]
    else:
        tr_idx, va_idx = carve_val(train.labels, cfg, seed)
        train, val = train.subset(tr_idx), train.subset(va_idx)
    bundle = DataBundle(
        name=cfg.name, resolution=cfg.resolution, classes=list(parts["classes"]),
        train=train, val=val, test=parts["test"], gallery=parts.get("gallery"), skipped=skipped,
        coarse_classes=parts.get("coarse_classes"), coarse_of_fine=parts.get("coarse_of_fine"),
        test_from=parts.get("test_from", TEST_DATA_SET),
    )
    _write_cache(cache, bundle, cfg.root)
    return bundle


def _write_cache(path: Path, b: DataBundle, root: str) -> None:
    from spnas_core.files import atomic_path

    arrays: dict[str, Any] = {}
    for s in ("train", "val", "test", "gallery"):
        sp = getattr(b, s)
        if sp is None:
            continue
        arrays[f"{s}_images"] = sp.images
        arrays[f"{s}_labels"] = sp.labels
        arrays[f"{s}_ids"] = np.asarray(sp.ids, dtype=np.str_)
    meta = {"name": b.name, "resolution": b.resolution, "classes": b.classes, "skipped": b.skipped,
            "coarse_classes": b.coarse_classes, "coarse_of_fine": b.coarse_of_fine, "root": str(root),
            "test_from": b.test_from}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def _read_cache(path: Path, root: str) -> DataBundle:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(z["meta"].tobytes().decode())
        # the key is the content, not the path: a moved copy hits this cache, and its ids (file paths the
        # exporter and retrieval re-read) must point into the folder the caller named
        old = meta.get("root")
        moved = old is not None and old != str(root)

        def here(i: str) -> str:
            return str(root) + i[len(old):] if moved and (i == old or i.startswith(old + os.sep)) else i

        splits = {}
        for s in ("train", "val", "test", "gallery"):
            if f"{s}_images" in z:
                splits[s] = Split(z[f"{s}_images"], z[f"{s}_labels"], [here(str(i)) for i in z[f"{s}_ids"]])
    return DataBundle(
        name=meta["name"], resolution=meta["resolution"], classes=meta["classes"],
        train=splits["train"], val=splits["val"], test=splits["test"], gallery=splits.get("gallery"),
        skipped=[(here(str(x[0])), str(x[1])) for x in meta["skipped"]], coarse_classes=meta.get("coarse_classes"),
        coarse_of_fine=meta.get("coarse_of_fine"), test_from=meta.get("test_from", TEST_DATA_SET),
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m training.datasets unpack`: unpack the shared archives into `<SPNAS_HOME>/data`."""
    import argparse

    ap = argparse.ArgumentParser(description="prepare spnas data sets")
    ap.add_argument("command", choices=["unpack"])
    ap.add_argument("--dest", default=None)
    args = ap.parse_args(argv)
    ok = True
    for kind in ARCHIVES:
        got = unpack_shared(kind, Path(args.dest) if args.dest else None)
        if got is None:
            print(f"{kind}: archive {shared_dir() / 'datasets' / ARCHIVES[kind]} not found "
                  f"(set SPNAS_SHARED to the folder holding datasets/); tests that need it will skip")
            ok = os.environ.get("CI", "").lower() != "true"
        else:
            print(f"{kind}: {got}")
    fm = Path(FASHION_MNIST_DIR)
    print(f"fashion_mnist: {fm if fm.exists() else 'missing: ' + HOW_TO_GET['fashion_mnist']}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
