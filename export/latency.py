"""A bundle's latency on this CPU, as `ExportLatencyConfig` says: every .tflite artifact at each thread
count (the fastest of `passes`), a cross-check with LiteRT's own `benchmark_litert_model`, the MediaPipe
ImageEmbedder end to end, ONNX Runtime, and the fp32 model again at the deployment resolution.

The LiteRT timer is injected (`TfliteTimer`: the latency tables' local profiler), so export knows
nothing of tables or profilers; the job that exports adds the tables' predictions
(`spnas.app.jobs.export`).
"""

from __future__ import annotations

import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from export.config import ExportLatencyConfig
from export.deploy import DeployModel
from export.tflite import convert_to_tflite
from search_spaces import ArchSpec

log = logging.getLogger(__name__)

# (a .tflite file, threads) -> its timing on this CPU: an object with `value` (the statistic the fastest
# pass is chosen by), `p10_ms`, `median_ms`, `mean_ms` and `std_ms` (`latency_tables.profilers.Timing`).
TfliteTimer = Callable[[Path, int], Any]
ARTIFACTS = ("model_fp32.tflite", "model_int8.tflite", "embedder.tflite")


def measure_latency(work: Path, net: torch.nn.Module, arch: ArchSpec, image: np.ndarray, lcfg: ExportLatencyConfig,
                    time_tflite: TfliteTimer) -> dict[str, Any]:
    """Latency of every artifact of the bundle folder `work` on this CPU (`image`: an original photo for
    the MediaPipe task; `net`: the weights, for the deployment resolution)."""
    out: dict[str, Any] = {"cpu": {}, "deploy_resolution": None}
    passes = lcfg.passes
    for threads in lcfg.threads:
        for f in ARTIFACTS:
            if not (work / f).exists():
                continue
            best = min((time_tflite(work / f, int(threads)) for _ in range(passes)), key=lambda t: t.value)
            out["cpu"].setdefault(f, {})[f"{threads}_thread"] = {
                "p10_ms": best.p10_ms, "median_ms": best.median_ms, "mean_ms": best.mean_ms, "std_ms": best.std_ms}
    if lcfg.benchmark_tool:
        out["benchmark_litert_model"] = {f: _bench_tool(work / f, 1, 50) for f in ("model_fp32.tflite",
                                         "model_int8.tflite") if (work / f).exists()}
    out["mediapipe_embedder_end_to_end"] = _mediapipe_latency(work, image, lcfg.mediapipe_runs)
    out["onnxruntime_1_thread"] = _onnx_latency(work, arch, lcfg.onnx_runs)
    out["deploy_resolution"] = _deploy_latency(net, arch, lcfg, time_tflite)
    return out


def _bench_tool(path: Path, threads: int, runs: int) -> dict[str, Any] | None:
    """Cross-check with `python -m ai_edge_litert.tools.benchmark_litert_model` (ships in the wheel)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        r = subprocess.run([sys.executable, "-m", "ai_edge_litert.tools.benchmark_litert_model", "--model", str(path),
                            "--num_threads", str(threads), "--num_runs", str(runs), "--warmup_runs", "10",
                            "--result_json", str(out)], capture_output=True, text=True, timeout=600)
        if r.returncode != 0 or not out.exists():
            log.warning("benchmark_litert_model failed on %s: %s", path.name, r.stderr[-300:])
            return None
        lat = json.loads(out.read_text())["latency"]
        return {"median_ms": lat.get("median_ms"), "avg_ms": lat.get("avg_ms"), "p5_ms": lat.get("p5_ms"),
                "num_runs": lat.get("num_runs")}


def _mediapipe_latency(work: Path, image: np.ndarray, runs: int) -> dict[str, Any]:
    """MediaPipe end to end: the task API call on an original-size image, resize included."""
    from export.mediapipe_tasks import MediaPipeEmbedder

    mp = MediaPipeEmbedder(work / "embedder.tflite")
    try:
        for _ in range(5):
            mp.embed_one(image)
        ts = []
        for _ in range(runs):
            t = time.perf_counter()
            mp.embed_one(image)
            ts.append((time.perf_counter() - t) * 1e3)
    finally:
        mp.close()
    return {"median_ms": statistics.median(ts), "p10_ms": float(np.percentile(ts, 10)),
            "image_size": list(image.shape[:2])}


def _onnx_latency(work: Path, arch: ArchSpec, runs: int) -> dict[str, Any]:
    """ONNX Runtime, 1 thread, on random input of the model's size."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(work / "model.onnx"), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, arch.resolution, arch.resolution, 3), dtype=np.float32)
    name = sess.get_inputs()[0].name
    for _ in range(5):
        sess.run(None, {name: x})
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, {name: x})
        ts.append((time.perf_counter() - t) * 1e3)
    return {"median_ms": statistics.median(ts), "p10_ms": float(np.percentile(ts, 10))}


def _deploy_latency(net: torch.nn.Module, arch: ArchSpec, lcfg: ExportLatencyConfig,
                    time_tflite: TfliteTimer) -> dict[str, Any] | None:
    """The same weights at the deployment resolution the tables are read at (fp32, 1 thread)."""
    dres = lcfg.deploy_resolution
    if not dres or int(dres) == arch.resolution:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        p = convert_to_tflite(DeployModel(net, "logits").eval(), torch.rand(1, 3, int(dres), int(dres)),
                              Path(tmp) / "deploy.tflite")
        best = min((time_tflite(p, 1) for _ in range(lcfg.passes)), key=lambda t: t.value)
    return {"resolution": int(dres), "fp32_1_thread_p10_ms": best.p10_ms, "fp32_1_thread_median_ms": best.median_ms}
