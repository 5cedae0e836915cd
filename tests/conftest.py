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
    from spnas.paths import shared_dir as _shared

    d = _shared()
    if not (d / "datasets").is_dir():
        _missing(f"shared data folder {d}/datasets not found (set SPNAS_SHARED)")
    return d


@pytest.fixture(scope="session")
def cifar_root(shared_dir: Path) -> Path:
    """The CIFAR-10 JPEG tree, unpacked from the shared archive on first use."""
    from spnas.paths import data_root
    from training.datasets import unpack_shared

    root = unpack_shared("cifar10", data_root())
    if root is None:
        _missing(f"{shared_dir}/datasets/cifar10-jpg.tar.gz not found")
    return root


@pytest.fixture(scope="session")
def grocery_root(shared_dir: Path) -> Path:
    """The Grocery Store tree, unpacked from the shared archive on first use."""
    from spnas.paths import data_root
    from training.datasets import unpack_shared

    root = unpack_shared("grocery", data_root())
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


@pytest.fixture(scope="session")
def postgres_admin_url():
    """The admin URL of a real PostgreSQL server: a throwaway cluster for the session (tests/postgres.py)."""
    from .postgres import postgres_server

    with postgres_server(_missing) as url:
        yield url


def compose(config: str, overrides: list[str]):
    """The typed config of a command, composed from the project's configs/ as the CLIs compose it."""
    import spnas

    return spnas.compose(config, overrides)


def fmnist_args(root: Path, tmp: Path) -> list[str]:
    """Overrides for a small real Fashion-MNIST subset (fast to train to a confident model)."""
    return ["data=fashion_mnist", f"data.root={root}", "data.train_limit=6000", "data.test_limit=500",
            f"data.cache_dir={tmp / 'cache'}"]


def _train_small(tmp: Path, data_args: list[str], arch: str, name: str, epochs: int = 2) -> Path:
    from training.loop import train_model

    cfg = compose("train", [f"arch={arch}", *data_args, f"train.epochs={epochs}", "train.batch_size=64",
                            f"run_dir={tmp / name}"])
    train_model(cfg)
    return tmp / name / "model.pt"


@pytest.fixture(scope="session")
def small_model(fashion_mnist_root, tmp_path_factory) -> Path:
    """MobileNetV3-Small trained briefly on real Fashion-MNIST images (32x32): a model.pt."""
    tmp = tmp_path_factory.mktemp("mbv3s")
    return _train_small(tmp, fmnist_args(fashion_mnist_root, tmp), "mobilenet_v3_small", "mbv3s")


@pytest.fixture(scope="session")
def small_bundle(small_model, fashion_mnist_root, tmp_path_factory) -> Path:
    """The exported bundle of `small_model`, latency measured (a short run)."""
    from spnas.app.export_job import run_export

    tmp = tmp_path_factory.mktemp("bundle")
    cfg = compose("export", [f"checkpoint={small_model}", *fmnist_args(fashion_mnist_root, tmp),
                             f"out_dir={tmp / 'bundle'}", "export.int8_eval_images=500", "export.latency.passes=1",
                             "export.latency.threads=[1]", "export.latency.mediapipe_runs=10",
                             "export.latency.onnx_runs=10", "export.latency.deploy_resolution=64",
                             # a 2-epoch model's near-tied logits flip under int8 (0.94-0.97 agreement seen on
                             # 64 images): the bundle must carry int8 here, so the gate is set below that spread
                             "export.int8=required", "export.tolerances.int8_min_agreement=0.9"])
    run_export(cfg)
    return tmp / "bundle"
