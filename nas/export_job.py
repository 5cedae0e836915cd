"""`spnas-export`: a trained model (model.pt from spnas-train, or a reference net) to a verified bundle
with measured latencies.

    spnas-export checkpoint=runs/train/x/model.pt data=cifar10 out_dir=runs/export/x
    spnas-export arch=mobilenet_v2 checkpoint=null data=cifar10      # untrained weights: latency only

Conversion and parity live in `export/`; this stage adds what needs the other packages: real data
for calibration and parity, and the local profiler + every shipped latency table for the latency
figures written into the manifest.
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
from typing import Any

import numpy as np
import torch

from export.bundle import ExportInputs, Tolerances, build_bundle
from export.deploy import DeployModel
from export.preprocess import ImageDecodeError, decode_rgb
from export.tflite import convert_to_tflite
from latency_tables.predictor import predict_latency_ms
from latency_tables.profilers import LocalProfiler
from latency_tables.table import LatencyTable, available_tables
from search_spaces import ArchSpec, build_model

from .data import DataBundle, load_data
from .runtime import versions
from .train import load_model_file, resolve_arch

log = logging.getLogger(__name__)


def load_for_export(cfg: dict[str, Any], data: DataBundle) -> tuple[torch.nn.Module, ArchSpec]:
    """The network to export: a model.pt (checked against `arch` if both are given) or a reference net."""
    ckpt = cfg.get("checkpoint")
    arch_ref = cfg.get("arch")
    if ckpt:
        model, arch, blob = load_model_file(ckpt)
        if arch_ref:
            want = resolve_arch(arch_ref, arch.num_classes, arch.resolution)
            if want.to_string() != arch.to_string():
                raise ValueError(f"checkpoint {ckpt} holds {arch.to_string()}\nbut arch={arch_ref} is "
                                 f"{want.to_string()}; pass the arch.json the checkpoint was trained with")
        if arch.num_classes != data.num_classes:
            raise ValueError(f"checkpoint {ckpt} has {arch.num_classes} classes but data '{data.name}' has "
                             f"{data.num_classes}; export with the data set the model was trained on")
        return model, arch
    if not arch_ref:
        raise ValueError("spnas-export needs checkpoint=<model.pt> (or arch=<reference net> for untrained weights)")
    arch = resolve_arch(arch_ref, data.num_classes, data.resolution)
    log.warning("exporting %s with untrained weights (no checkpoint): latency figures only", arch.name)
    torch.manual_seed(0)
    return build_model(arch).eval(), arch


def export_inputs(data: DataBundle, cfg: dict[str, Any]) -> ExportInputs:
    """Calibration (train), parity (test originals) and int8 evaluation (test) images."""
    n_cal = int(cfg.get("calibration_images", 200))
    n_par = int(cfg.get("parity_images", 64))
    n_eval = int(cfg.get("int8_eval_images", 2000))
    rng = np.random.default_rng(int(cfg.get("seed", 0)))
    cal_idx = np.sort(rng.choice(len(data.train), size=min(n_cal, len(data.train)), replace=False))
    test_idx = np.sort(rng.choice(len(data.test), size=min(n_eval, len(data.test)), replace=False))
    originals: list[np.ndarray] = []
    for i in test_idx[: max(n_par, 32)]:
        ident = data.test.ids[i] if data.test.ids else ""
        img = None
        if ident and Path(ident).is_file():
            try:
                img = decode_rgb(ident)
            except ImageDecodeError:
                img = None
        originals.append(img if img is not None else data.test.images[i])
        if len(originals) >= n_par:
            break
    return ExportInputs(labels=list(data.classes), calibration=data.train.images[cal_idx],
                        parity_originals=originals, eval_images=data.test.images[test_idx],
                        eval_labels=data.test.labels[test_idx], data_info=data.summary())


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


def measure_bundle_latency(work: Path, net: torch.nn.Module, arch: ArchSpec, image: np.ndarray,
                           cfg: dict[str, Any]) -> dict[str, Any]:
    """Latency of every artifact on this CPU, and the table predictions for every shipped device."""
    import onnxruntime as ort

    from export.mediapipe_tasks import MediaPipeEmbedder

    lcfg = dict(cfg.get("latency") or {})
    passes = int(lcfg.get("passes", 2))
    out: dict[str, Any] = {"cpu": {}, "deploy_resolution": None}
    for threads in lcfg.get("threads", [1, 2]):
        prof = LocalProfiler(threads=int(threads), warmup_runs=10, num_runs=50, min_time_s=0.3)
        for f in ("model_fp32.tflite", "model_int8.tflite", "embedder.tflite"):
            if not (work / f).exists():
                continue
            best = min((prof.measure(work / f) for _ in range(passes)), key=lambda t: t.value)
            out["cpu"].setdefault(f, {})[f"{threads}_thread"] = {
                "p10_ms": best.p10_ms, "median_ms": best.median_ms, "mean_ms": best.mean_ms, "std_ms": best.std_ms}
    if lcfg.get("benchmark_tool", True):
        out["benchmark_litert_model"] = {f: _bench_tool(work / f, 1, 50) for f in ("model_fp32.tflite",
                                         "model_int8.tflite") if (work / f).exists()}
    # MediaPipe end to end: the task API call on an original-size image, resize included
    mp = MediaPipeEmbedder(work / "embedder.tflite")
    try:
        for _ in range(5):
            mp.embed_one(image)
        ts = []
        for _ in range(int(lcfg.get("mediapipe_runs", 50))):
            t = time.perf_counter()
            mp.embed_one(image)
            ts.append((time.perf_counter() - t) * 1e3)
    finally:
        mp.close()
    out["mediapipe_embedder_end_to_end"] = {"median_ms": statistics.median(ts), "p10_ms": float(np.percentile(ts, 10)),
                                            "image_size": list(image.shape[:2])}
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(work / "model.onnx"), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, arch.resolution, arch.resolution, 3), dtype=np.float32)
    name = sess.get_inputs()[0].name
    for _ in range(5):
        sess.run(None, {name: x})
    ts = []
    for _ in range(int(lcfg.get("onnx_runs", 50))):
        t = time.perf_counter()
        sess.run(None, {name: x})
        ts.append((time.perf_counter() - t) * 1e3)
    out["onnxruntime_1_thread"] = {"median_ms": statistics.median(ts), "p10_ms": float(np.percentile(ts, 10))}
    # the same weights at the deployment resolution the tables are read at
    dres = lcfg.get("deploy_resolution")
    deploy = arch.replace(resolution=int(dres)) if dres else arch
    if dres and int(dres) != arch.resolution:
        with tempfile.TemporaryDirectory() as tmp:
            p = convert_to_tflite(DeployModel(net, "logits").eval(), torch.rand(1, 3, int(dres), int(dres)),
                                  Path(tmp) / "deploy.tflite")
            prof = LocalProfiler(threads=1, warmup_runs=10, num_runs=50, min_time_s=0.3)
            best = min((prof.measure(p) for _ in range(passes)), key=lambda t: t.value)
        out["deploy_resolution"] = {"resolution": int(dres), "fp32_1_thread_p10_ms": best.p10_ms,
                                    "fp32_1_thread_median_ms": best.median_ms}
    preds = {}
    for name in available_tables():
        try:
            t = LatencyTable.load(name)
            preds[name] = {"predicted_ms": predict_latency_ms(deploy, t), "provenance": t.provenance,
                           "resolution": deploy.resolution}
        except (ValueError, KeyError) as e:
            preds[name] = {"predicted_ms": None, "error": str(e).splitlines()[0]}
    out["table_predictions"] = preds
    return {"latency": out}


def run_export(cfg: dict[str, Any], data: DataBundle | None = None) -> dict[str, Any]:
    """Everything `spnas-export` does; returns the manifest."""
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    if data is None:
        dcfg = dict(cfg["data"])
        dcfg.setdefault("seed", int(cfg.get("seed", 0)))
        data = load_data(dcfg)
    ecfg = dict(cfg["export"])
    net, arch = load_for_export(cfg, data)
    inputs = export_inputs(data, {**ecfg, "seed": cfg.get("seed", 0)})
    tol = Tolerances(**dict(ecfg.get("tolerances") or {}))
    image = inputs.parity_originals[0]
    measure = bool(ecfg.get("measure_latency", True))
    manifest = build_bundle(
        net, arch, inputs, cfg["out_dir"], int8=bool(ecfg.get("int8", True)), opset=int(ecfg.get("onnx_opset", 18)),
        tol=tol, versions=versions(),
        extra_manifest=(lambda work: measure_bundle_latency(work, net, arch, image, ecfg)) if measure else None)
    return manifest
