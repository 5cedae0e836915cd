"""Shared fixtures: real data sets from ../shared (or $SPNAS_SHARED) and Fashion-MNIST.

Outside CI a missing data set skips the tests that need it, with the reason; in CI (CI=true)
its absence fails them, so a broken CI setup cannot pass by skipping.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared folder with the data set archives."""
    from nas.data import shared_dir as _shared

    d = _shared()
    if not (d / "datasets").is_dir():
        _missing(f"shared data folder {d}/datasets not found (set SPNAS_SHARED)")
    return d


@pytest.fixture(scope="session")
def cifar_root(shared_dir: Path) -> Path:
    """The CIFAR-10 JPEG tree, unpacked from the shared archive on first use."""
    from nas.data import data_dir, unpack_shared

    root = unpack_shared("cifar10", data_dir())
    if root is None:
        _missing(f"{shared_dir}/datasets/cifar10-jpg.tar.gz not found")
    return root


@pytest.fixture(scope="session")
def grocery_root(shared_dir: Path) -> Path:
    """The Grocery Store tree, unpacked from the shared archive on first use."""
    from nas.data import data_dir, unpack_shared

    root = unpack_shared("grocery", data_dir())
    if root is None:
        _missing(f"{shared_dir}/datasets/grocery-store-128.tar.gz not found")
    return root


@pytest.fixture(scope="session")
def fashion_mnist_root() -> Path:
    """Fashion-MNIST IDX files (Debian package dataset-fashion-mnist)."""
    d = Path(os.environ.get("SPNAS_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
    if not (d / "train-images-idx3-ubyte.gz").exists():
        _missing(f"Fashion-MNIST not found in {d} (apt-get install -y dataset-fashion-mnist)")
    return d
