"""The README's own-images command on a folder of 8 product classes (it used to stop at once: the tables
held classifier rows only for 10, 43, 81 and 1000 classes)."""

import shutil
from pathlib import Path

import pytest

from latency_tables.predictor import predict_latency_ms
from latency_tables.table import LatencyTable
from search_spaces import ArchSpec


def _eight_classes(grocery_root: Path, dst: Path, per_class: int = 14) -> Path:
    """8 Grocery product classes copied into `dst/<class>/*.jpg` (the README's own-photos layout)."""
    classes = sorted(p for p in (grocery_root / "train" / "Fruit").iterdir() if p.is_dir())[:8]
    for c in classes:
        files = sorted(c.rglob("*.jpg"))[:per_class]
        (dst / c.name).mkdir(parents=True)
        for f in files:
            shutil.copy(f, dst / c.name / f.name)
    return dst


def test_readme_own_images_command_on_8_classes(grocery_root, tmp_path):
    """`spnas-pipeline experiment=demo data=folder data.root=... data.resolution=96 socs=[sd845]` at a tiny budget."""
    from spnas.app.pipeline import run_pipeline

    from ..conftest import compose

    photos = _eight_classes(grocery_root, tmp_path / "photos")
    run = tmp_path / "run"
    cfg = compose("pipeline", [
        "experiment=demo", "data=folder", f"data.root={photos}", "data.resolution=96", "socs=[sd845]",
        f"run_dir={run}", "baselines=[mobilenet_v2]", f"data.cache_dir={tmp_path / 'cache'}",
        "search.steps=4", "search.warmup_fraction=0", "search.min_threshold_updates=0", "search.batch_size=16", "train.epochs=1", "train.batch_size=16",
        f"retrieval.data.root={grocery_root}", "retrieval.data.train_limit=80", "retrieval.data.test_limit=30",
        "retrieval.data.val_limit=10", f"retrieval.data.cache_dir={tmp_path / 'cache'}", "retrieval.latency_queries=5",
        "export.latency.mediapipe_runs=3", "export.latency.onnx_runs=3", "export.latency.deploy_resolution=null",
        "threads=2"])
    report = run_pipeline(cfg)
    assert (run / "report.md").stat().st_size > 200
    arch = ArchSpec.load(run / "search" / "sd845" / "arch.json")
    assert arch.num_classes == 8
    table = LatencyTable.load("sd845")
    assert "Logits-input:1x1x1280-output:8" not in table.ops  # computed by the table's model, marked so
    assert predict_latency_ms(arch.replace(resolution=224), table) > 0
    assert table.source_of("Logits-input:1x1x1280-output:8") == "model"
    assert any(h["soc"] == "sd845" for h in report["headline"])
