"""Shared fixtures: real data sets from ../shared (or $SPNAS_SHARED) and Fashion-MNIST.

Outside CI a missing data set skips the tests that need it, with the reason; in CI (CI=true)
its absence fails them, so a broken CI setup cannot pass by skipping.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def built_once(tmp_path_factory, name: str, build: Callable[[Path], object]) -> Path:
    """A folder that one test process builds and every other reuses: `make test` runs two pytest-xdist workers,
    each with its own session, so a session fixture alone would train or export the same model twice. The first
    worker builds under a lock in the run's shared temp folder; the other waits for it and reuses the result."""
    import fcntl
    import shutil

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    d = root / f"shared-{name}"
    with open(root / f"shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (d / ".built").exists():
            shutil.rmtree(d, ignore_errors=True)  # a worker that failed half-way leaves a partial folder
            d.mkdir()
            build(d)
            (d / ".built").touch()
    return d


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared folder with the data set archives."""
    from spnas_core.paths import shared_dir as _shared

    d = _shared()
    if not (d / "datasets").is_dir():
        _missing(f"shared data folder {d}/datasets not found (set SPNAS_SHARED)")
    return d


@pytest.fixture(scope="session")
def cifar_root(shared_dir: Path) -> Path:
    """The CIFAR-10 JPEG tree, unpacked from the shared archive on first use."""
    from spnas_core.paths import data_root
    from training.datasets import unpack_shared

    root = unpack_shared("cifar10", data_root())
    if root is None:
        _missing(f"{shared_dir}/datasets/cifar10-jpg.tar.gz not found")
    return root


@pytest.fixture(scope="session")
def grocery_root(shared_dir: Path) -> Path:
    """The Grocery Store tree, unpacked from the shared archive on first use."""
    from spnas_core.paths import data_root
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


def fmnist_args(root: Path, tmp: Path, train_limit: int = 6000) -> list[str]:
    """Overrides for a small real Fashion-MNIST subset (fast to train to a confident model)."""
    return ["data=fashion_mnist", f"data.root={root}", f"data.train_limit={train_limit}", "data.test_limit=500",
            f"data.cache_dir={tmp / 'cache'}"]


def _train_small(tmp: Path, data_args: list[str], arch: str, name: str, epochs: int = 2, extra: tuple = ()) -> Path:
    from spnas.app.jobs import commands

    cfg = compose("train", [f"arch={arch}", *data_args, f"train.epochs={epochs}", "train.batch_size=64",
                            f"run_dir={tmp / name}", *extra])
    commands.train(cfg)
    return tmp / name / "model.pt"


@pytest.fixture(scope="session")
def small_model(fashion_mnist_root, tmp_path_factory) -> Path:
    """MobileNetV3-Small trained briefly on real Fashion-MNIST images (32x32): a model.pt."""
    d = built_once(tmp_path_factory, "mbv3s", lambda tmp: _train_small(
        tmp, fmnist_args(fashion_mnist_root, tmp), "mobilenet_v3_small", "mbv3s"))
    return d / "mbv3s" / "model.pt"


@pytest.fixture(scope="session")
def small_bundle(small_model, fashion_mnist_root, tmp_path_factory) -> Path:
    """The exported bundle of `small_model`, latency measured (a short run)."""
    d = built_once(tmp_path_factory, "bundle", lambda tmp: _export_small(small_model, fashion_mnist_root, tmp))
    return d / "bundle"


def _export_small(small_model: Path, fashion_mnist_root: Path, tmp: Path) -> None:
    from spnas.app.jobs import commands

    cfg = compose("export", [f"checkpoint={small_model}", *fmnist_args(fashion_mnist_root, tmp),
                             f"out_dir={tmp / 'bundle'}", "export.int8_eval_images=500", "export.latency.passes=1",
                             "export.latency.threads=[1]", "export.latency.mediapipe_runs=10",
                             "export.latency.onnx_runs=10", "export.latency.deploy_resolution=64",
                             # a 2-epoch model's near-tied logits flip under int8 (0.94-0.97 agreement seen on
                             # 64 images): the bundle must carry int8 here, so the gate is set below that spread
                             "export.int8=required", "export.tolerances.int8_min_agreement=0.9"])
    commands.export(cfg)


# ---------------------------------------------------------------------------------- one pipeline run for the suite
def product_photos(grocery_root: Path, dst: Path, n_classes: int = 7, per_class: int = 25) -> Path:
    """A user's folder of product photos: `n_classes` Grocery products copied into `dst/<class>/*.jpg` (the
    README's own-photos layout); 7 x 25 = 175 photos, as a user's 178, whose test split is 35 photos."""
    import shutil

    classes = sorted(p for p in (grocery_root / "train" / "Fruit").iterdir() if p.is_dir())[:n_classes]
    for c in classes:
        files = sorted(c.rglob("*.jpg"))[:per_class]
        (dst / c.name).mkdir(parents=True)
        for f in files:
            shutil.copy2(f, dst / c.name / f.name)  # with its time: the photo search lists it at that time
    return dst


def own_photos_overrides(photos: Path, run: Path, cache: Path) -> list[str]:
    """The README's own-images command (`experiment=demo data=folder data.root=... data.resolution=96
    socs=[sd845]`) at a tiny budget, with two seeds, one random control and the width-scaled MobileNetV2. (A
    12-step search keeps every layer at its largest choice, in the tail of the space's latency distribution:
    the random control's band is +-50% here; the +-2% of the default is tested in tests/nas/test_evidence.py.)"""
    return ["experiment=demo", "data=folder", f"data.root={photos}", "data.resolution=96", "socs=[sd845]",
            f"run_dir={run}", "baselines=[mobilenet_v2]", f"data.cache_dir={cache}", "seeds=[0,1]",
            "controls.random=1", "controls.tolerance=0.5", "search.steps=12", "search.warmup_fraction=0.5", "search.min_threshold_updates=0",
            "search.finalists.radius=0",  # a 12-step search ends over its budget; repairing it is tested in tests/nas
            "search.batch_size=16", "search.min_batch_size=8", "train.steps=12", "train.min_steps=0", "train.batch_size=16",
            "finetune.recipe.steps=6", "finetune.recipe.min_steps=0", "finetune.recipe.batch_size=16", "retrieval.latency_queries=5",
            "retrieval.bootstrap=200", "export.latency.mediapipe_runs=3", "export.latency.onnx_runs=3",
            "export.latency.deploy_resolution=null", "export.measure_latency=true", "threads=2"]


@pytest.fixture(scope="session")
def own_photos_pipeline(grocery_root, tmp_path_factory):
    """One pipeline run the slow tests share: the README's own-images command, killed in the middle of its
    search and run again (it resumes). Returns (overrides, run folder, run_pipeline's report, the killed search's
    stage.json)."""
    import pickle

    tmp = built_once(tmp_path_factory, "own_photos", lambda tmp: _run_own_photos(grocery_root, tmp))
    run = tmp / "run"
    ov = own_photos_overrides(tmp / "photos", run, tmp / "cache")
    return ov, run, pickle.loads((tmp / "report.pickle").read_bytes()), (tmp / "killed_stage.json").read_text()


def _run_own_photos(grocery_root: Path, tmp: Path) -> None:
    import pickle
    import signal
    import subprocess
    import sys
    import time

    from spnas.app.pipeline.run import run_pipeline

    photos = product_photos(grocery_root, tmp / "photos")
    run = tmp / "run"
    ov = own_photos_overrides(photos, run, tmp / "cache")
    p = subprocess.Popen([str(Path(sys.executable).parent / "spnas-pipeline"), *ov], cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not (run / "search" / "sd845" / "last.pt").exists():
        assert p.poll() is None and time.time() < deadline, "pipeline ended before its first search checkpoint"
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    (tmp / "killed_stage.json").write_text((run / "search" / "sd845" / "stage.json").read_text())
    (tmp / "report.pickle").write_bytes(pickle.dumps(run_pipeline(compose("pipeline", ov))))  # int seed keys kept


@pytest.fixture(scope="session")
def nasbench_macro_file(shared_dir: Path) -> Path:
    """NAS-Bench-Macro's table (`datasets/nas-bench-macro/nas-bench-macro_cifar10.json`)."""
    p = shared_dir / "datasets" / "nas-bench-macro" / "nas-bench-macro_cifar10.json"
    if not p.is_file():
        _missing(f"NAS-Bench-Macro file {p} not found")
    return p
