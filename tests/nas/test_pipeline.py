"""The pipeline on a tiny real subset: a killed search resumes, the report is built from the stage
outputs, and a re-run with nothing changed skips every stage."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from latency_tables.predictor import predict_latency_ms
from latency_tables.table import LatencyTable
from search_spaces import ArchSpec
from search_spaces.proxy import Proxy, _min_input_map

from ..conftest import compose

ROOT = Path(__file__).resolve().parents[2]


def _overrides(tmp: Path, cifar_root: Path, grocery_root: Path) -> list[str]:
    return ["experiment=demo", "socs=[sd845]", "baselines=[mobilenet_v2]", f"run_dir={tmp / 'run'}",
            f"data.root={cifar_root}", "data.train_limit=400", "data.test_limit=100",
            f"data.cache_dir={tmp / 'cache'}", f"retrieval.data.root={grocery_root}",
            "retrieval.data.train_limit=160", "retrieval.data.test_limit=60", "retrieval.data.val_limit=20",
            f"retrieval.data.cache_dir={tmp / 'cache'}", "retrieval.latency_queries=10",
            "search.steps=22", "search.warmup_fraction=0", "search.min_threshold_updates=0", "search.batch_size=32",
            "train.epochs=1",
            "train.batch_size=32", "export.latency.mediapipe_runs=5", "export.latency.onnx_runs=5", "threads=2",
            "finetune.resolution=64", "finetune.recipe.epochs=1", "finetune.recipe.batch_size=32",
            "retrieval.bootstrap=200"]


def test_pipeline_resume_report_and_cache(cifar_root, grocery_root, tmp_path):
    from spnas.app.pipeline import run_pipeline

    ov = _overrides(tmp_path, cifar_root, grocery_root)
    run = tmp_path / "run"
    # 1. a pipeline killed in the middle of its search ...
    p = subprocess.Popen([str(Path(sys.executable).parent / "spnas-pipeline"), *ov], cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not (run / "search" / "sd845" / "last.pt").exists():
        assert p.poll() is None and time.time() < deadline, "pipeline ended before its first search checkpoint"
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert json.loads((run / "search" / "sd845" / "stage.json").read_text())["status"] == "running"
    # 2. ... resumes that stage when re-run
    cfg = compose("pipeline", ov)
    report = run_pipeline(cfg)
    how = {e["stage"]: e["how"] for e in report["provenance"]["stages"]}
    assert how["search/sd845"] == "resumed"
    assert how["train/spnas-sd845"] == "ran" and how["export/mobilenet_v2"] == "ran"
    log = [json.loads(line) for line in (run / "search" / "sd845" / "search_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    # 3. the report: files, structure, and numbers taken from the stage outputs
    for f in ("report.md", "report.json", "report.csv", "accuracy_vs_latency.png", "winner_decisions.png",
              "latency_breakdown.png"):
        assert (run / f).stat().st_size > 200, f
    rows = {r["model"]: r for r in report["rows"]}
    assert set(rows) == {"spnas-sd845", "mobilenet_v2"}
    for name, r in rows.items():
        summary = json.loads((run / "train" / name / "summary.json").read_text())
        assert r["top1"] == summary["test_top1"] and r["params"] == summary["params"]
        manifest = json.loads((run / "export" / name / "bundle" / "manifest.json").read_text())
        assert r["measured_cpu_ms"] == manifest["latency"]["deploy_resolution"]["fp32_1_thread_p10_ms"]
        assert r["fp32_bytes"] == manifest["files"]["model_fp32.tflite"]["bytes"]
        ret = json.loads((run / "retrieval" / name / "retrieval_eval.json").read_text())
        assert r["recall@10"] == ret["results"]["train"]["fine"]["recall@10"]
        arch = ArchSpec.from_string(summary["arch_string"]).replace(resolution=224)
        assert r["predicted_ms"] == pytest.approx(predict_latency_ms(arch, LatencyTable.load("sd845")))
        # one proxy for every model compared: trained at 32 px with every layer >= 4x4 ...
        proxy = Proxy.from_dict(summary["proxy"])
        assert proxy.resolution == 32 and proxy.min_map == 4 and len(proxy.dropped) == 2
        assert _min_input_map(proxy.apply(arch)) >= 4
        # ... while the bundle and the latency keys keep the design strides
        exported = ArchSpec.load(run / "export" / name / "bundle" / "arch.json")
        assert exported.replace(resolution=32, num_classes=10).to_string() == summary["arch_string"]
        # the exported embedder is the one fine-tuned on the product photos (same recipe for every model)
        ft = json.loads((run / "finetune" / name / "summary.json").read_text())
        assert exported.resolution == ft["resolution"] == 64 and exported.num_classes == 81
        assert manifest["embedding"] == {**ft["embedding"], "normalized": True} and manifest["embedding"]["dim"] == 128
        for k, v in r.items():
            if r["kind"] == "baseline" and k in ("target_ms", "on_target", "target_note"):
                continue  # a baseline has no search budget
            assert v is not None and v == v, k  # no placeholders, no NaN
    w = rows["spnas-sd845"]
    assert w["d_latency_pct"] == pytest.approx(100 * (w["predicted_ms"] / rows["mobilenet_v2"]["predicted_ms"] - 1))
    assert report["headline"][0]["soc"] == "sd845" and "met" in report["headline"][0]
    md = (run / "report.md").read_text()
    assert "| sd845 | spnas-sd845 |" in md and "modeled" in md and "MET" in md.upper()
    assert "## Against the seed's table" in md and "| sd845 (2018) |" in md and "+2.7 | +2% |" in md
    assert rows["spnas-sd845"]["on_target"] in (True, False) and rows["spnas-sd845"]["target_note"]
    # 4. nothing changed: every stage is skipped
    t = time.perf_counter()
    again = run_pipeline(compose("pipeline", ov))
    assert all(e["how"] == "skipped" for e in again["provenance"]["stages"])
    assert time.perf_counter() - t < 30
    assert again["rows"] == report["rows"]
    # 5. a changed input redoes only what depends on it
    third = run_pipeline(compose("pipeline", ov + ["retrieval.factory=HNSW32"]))
    how = {e["stage"]: e["how"] for e in third["provenance"]["stages"]}
    assert how["retrieval/mobilenet_v2"] == "ran" and how["export/mobilenet_v2"] == "skipped"
