"""The Python API behind `import spnas`: a small typed surface over the same code the CLIs run.

    import spnas
    cfg = spnas.compose("search", ["soc=sd845", "data=folder", "data.root=~/photos", "search.steps=600"])
    found = spnas.search(cfg)                                   # SearchResult
    trained = spnas.train(spnas.compose("train", [...]))       # TrainResult
    bundle = spnas.export(spnas.compose("export", [...]))      # ExportResult
    index = spnas.open_photo_index(bundle.path, "runs/index")   # PhotoIndex: add photos, search by photo
    spnas.load_table("sd845").predict(found.arch)              # ms

Every function takes the typed config `compose` returns (or builds one from `overrides`), so a
notebook and `spnas-<command>` run exactly the same code with the same defaults.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

from latency_tables.lookup.table import LatencyTable
from search_spaces import ArchSpec
from spnas.app.cli.compose import APPS
from spnas.app.jobs.config import ExportAppConfig, SearchAppConfig, TrainAppConfig
from spnas.app.pipeline.config import PipelineAppConfig
from spnas_core.errors import ConfigError
from training.config import DataConfig
from training.datasets import DataBundle

Config = Union[SearchAppConfig, TrainAppConfig, ExportAppConfig, PipelineAppConfig, Any]


def compose(app: str = "search", overrides: Sequence[str] = ()) -> Config:
    """The typed config of a command (`search`, `train`, `export`, `pipeline`, `sweep`, `profile`,
    `retrieval_eval`, `serve`, `index`) with Hydra overrides applied and checked; raises `ConfigError`."""
    from spnas.app.cli.compose import check_call
    from spnas.app.cli.compose import compose as _compose

    check_call(app, overrides)
    return _compose(app, list(overrides))


def _typed(cfg: Any, app: str, cls: type, overrides: Sequence[str]) -> Any:
    if cfg is None:
        return compose(app, overrides)
    if overrides:
        raise ConfigError("pass either a composed config or overrides, not both")
    if not isinstance(cfg, cls):
        raise ConfigError(f"expected a {cls.__name__} (spnas.compose('{app}', ...)), got {type(cfg).__name__}")
    return cfg


def load_table(name_or_path: str | os.PathLike) -> LatencyTable:
    """A latency table by device name (`sd845`, `host`, one you measured) or path; `.predict(arch)` gives ms."""
    return LatencyTable.load(name_or_path)


def load_data(data: DataConfig | str | os.PathLike, seed: int = 0, resolution: int | None = None) -> DataBundle:
    """Decode a data set: a `DataConfig`, or a photos folder (`<root>/<class>/*.jpg`, split into train /
    val / test unless it has `train/` and `test/` folders)."""
    if isinstance(data, DataConfig):
        cfg = data
    else:
        cfg = compose("train", ["data=folder", f"data.root={Path(data).expanduser().resolve()}"]).data
    if resolution is not None:
        from dataclasses import replace

        cfg = replace(cfg, resolution=resolution)
    from training.datasets import load_data as _load

    return _load(cfg, seed)


# ---------------------------------------------------------------------------------- search
@dataclass
class SearchResult:
    """A finished search: the derived architecture, its predicted latency and the supernet's accuracy."""

    arch: ArchSpec
    predicted_ms: float
    target_ms: float | None
    val_top1: float | None
    choices: list[str]
    table: str
    run_dir: Path
    summary: dict[str, Any]


def search(config: SearchAppConfig | None = None, *, train_data: DataBundle | str | os.PathLike | None = None,
           overrides: Sequence[str] = ()) -> SearchResult:
    """Run (or resume) a Single-Path NAS search. `train_data` may be a decoded `DataBundle` or a photos
    folder (decoded at `config.data.resolution`); by default the config's data set is loaded."""
    from spnas.app.jobs import commands

    cfg = _typed(config, "search", SearchAppConfig, overrides)
    data = _data_arg(train_data, cfg.data.resolution, cfg.seed)
    s = commands.search(cfg, data)
    return SearchResult(ArchSpec.from_dict(s["arch"]), s["predicted_ms"], s["target_ms"], s["val_top1"],
                        list(s["choices"]), s["table"], Path(cfg.run_dir), s)


def _data_arg(d: DataBundle | str | os.PathLike | None, resolution: int, seed: int) -> DataBundle | None:
    if d is None or isinstance(d, DataBundle):
        return d
    return load_data(d, seed=seed, resolution=resolution)


# ---------------------------------------------------------------------------------- train
@dataclass
class TrainResult:
    """A trained model: where `model.pt` is, and its test figures."""

    model_path: Path
    arch: ArchSpec
    test_top1: float
    test_top5: float
    run_dir: Path
    summary: dict[str, Any]


def train(config: TrainAppConfig | None = None, *, data: DataBundle | str | os.PathLike | None = None,
          arch: ArchSpec | str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> TrainResult:
    """Train (or resume) a fixed architecture: a reference net name, an `arch.json`, or an `ArchSpec`
    (e.g. `SearchResult.arch`)."""
    from dataclasses import replace

    from spnas.app.jobs import commands

    cfg = _typed(config, "train", TrainAppConfig, overrides)
    if arch is not None:
        if isinstance(arch, ArchSpec):
            path = Path(cfg.run_dir) / "requested_arch.json"
            arch.save(path)
            arch = path
        cfg = replace(cfg, arch=str(arch))
    s = commands.train(cfg, _data_arg(data, cfg.data.resolution, cfg.seed))
    run_dir = Path(cfg.run_dir)
    return TrainResult(run_dir / "model.pt", ArchSpec.from_dict(s["arch"]), s["test_top1"], s["test_top5"],
                       run_dir, s)


# ---------------------------------------------------------------------------------- export
@dataclass
class ExportResult:
    """A verified bundle (TFLite fp32 / int8, ONNX, MediaPipe embedder) and its manifest."""

    path: Path
    manifest: dict[str, Any]

    @property
    def int8_shipped(self) -> bool:
        return "model_int8.tflite" in self.manifest.get("files", {})


def export(config: ExportAppConfig | None = None, *, data: DataBundle | str | os.PathLike | None = None,
           overrides: Sequence[str] = ()) -> ExportResult:
    """Export a `model.pt` to a parity-checked bundle (nothing is written when a check fails)."""
    from spnas.app.jobs import commands

    cfg = _typed(config, "export", ExportAppConfig, overrides)
    m = commands.export(cfg, _data_arg(data, cfg.data.resolution, cfg.seed))
    return ExportResult(Path(cfg.out_dir), m)


def evaluate_retrieval(bundle: str | os.PathLike, data: DataBundle, backend: str = "litert",
                       factory: str = "Flat", latency_queries: int = 50) -> dict[str, Any]:
    """Recall@k / mAP@10 of a bundle's embedder on a data set with a catalogue gallery (Grocery Store)."""
    from retrieval.config import Backend
    from spnas.app.jobs.retrieval_eval import evaluate_bundle

    return evaluate_bundle(bundle, data, Backend[backend], factory, latency_queries)


# ---------------------------------------------------------------------------------- photo search
class PhotoIndex:
    """A bundle's embedder over a photo-search folder: a listing store, photos and index versions under
    `root`, searched in this process (versions memory-mapped, listings no version holds yet from the
    delta). `spnas-serve root=<root>` serves the same folder."""

    def __init__(self, bundle: str | os.PathLike, root: str | os.PathLike, backend: str = "litert") -> None:
        from retrieval.backends import LocalBackends
        from retrieval.config import DeltaConfig, Locations, RetentionConfig, SearchParams
        from retrieval.embedders import make_embedder
        from retrieval.listings import ListingStore
        from retrieval.photos import PhotoStore
        from retrieval.router import Router
        from retrieval.versions import Repository

        loc = Locations().resolve(str(root))
        self.embedder = make_embedder(backend, bundle, 1)
        self.store, self.photos, self.repo = ListingStore(loc.store), PhotoStore(loc.photos), Repository(loc.repository)
        self.router = Router(self.store, self.photos, lambda _: self.embedder, [self.embedder.bundle_sha256],
                             LocalBackends(self.repo, self.store, SearchParams(), loc.cache), DeltaConfig(),
                             RetentionConfig())

    def __len__(self) -> int:
        """Active listings."""
        from retrieval.periods import MAX_TS, MIN_TS

        return self.store.count(MIN_TS, MAX_TS + 1)

    def add(self, ids: Sequence[int], photos: Sequence[np.ndarray | str | os.PathLike],
            timestamps: Sequence[int] | None = None, titles: Sequence[str] | None = None) -> int:
        """Embed photos (arrays or file paths) and add them as listings; returns how many are new (adding
        an id again with the same photo changes nothing)."""
        from retrieval.listings import Listing

        raw = [_photo_bytes(p) for p in photos]
        imgs = [_photo(p) for p in photos]
        vecs = self.embedder.embed(imgs, progress=len(imgs) >= 512)
        hashes = [self.photos.put(b, im) for b, im in zip(raw, imgs)]
        self.store.cache(self.embedder.bundle_sha256, hashes, vecs)
        ts = list(timestamps) if timestamps is not None else [int(time.time())] * len(ids)
        out = self.store.add([Listing(int(i), int(t), h, (titles or [""] * len(ids))[j])
                              for j, (i, t, h) in enumerate(zip(ids, ts, hashes))])
        return sum(o != "exists" for o in out)

    def delete(self, item_id: int, status: str = "deleted") -> bool:
        """Remove a listing (sold or deleted); False when it was not active."""
        return self.store.remove(int(item_id), status) == "removed"

    def search(self, photo: np.ndarray | str | os.PathLike, k: int = 10) -> list[tuple[int, float]]:
        """The k most similar active listings as (id, score), best first."""
        q = self.embedder.embed([_photo(photo)], progress=False)
        self.router.refresh()
        ans = self.router.search(q, k)
        return [(int(i), float(s)) for i, s in zip(ans.ids[0], ans.scores[0]) if i >= 0]

    def build(self, now: int | None = None) -> dict[str, Any]:
        """Build every finished hour / day / month that needs a version (`spnas-index build-due`)."""
        from retrieval.build import build_due
        from retrieval.config import BuildConfig, RetentionConfig

        return build_due(self.store, self.photos, self.repo, self.embedder, BuildConfig(), RetentionConfig(), now)


def _photo(p: np.ndarray | str | os.PathLike) -> np.ndarray:
    from spnas_core.images import decode_rgb

    return p if isinstance(p, np.ndarray) else decode_rgb(Path(p))


def _photo_bytes(p: np.ndarray | str | os.PathLike) -> bytes:
    """What the photo store keeps: the file as it is, or an array as a PNG."""
    if not isinstance(p, np.ndarray):
        return Path(p).read_bytes()
    import io

    from PIL import Image

    b = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(p, np.uint8)).save(b, "PNG")
    return b.getvalue()


def open_photo_index(bundle: str | os.PathLike, root: str | os.PathLike, backend: str = "litert") -> PhotoIndex:
    """A `PhotoIndex` over `root` (created on first use) for the bundle's embedder."""
    return PhotoIndex(bundle, root, backend)


__all__ = ["APPS", "Config", "ExportResult", "PhotoIndex", "SearchResult", "TrainResult", "compose",
           "evaluate_retrieval", "export", "load_data", "load_table", "open_photo_index", "search", "train"]
