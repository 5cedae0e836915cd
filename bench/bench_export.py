"""Export benchmark: MobileNetV2 vs a search winner, trained by the same pipeline run, through the full
export (fp32 + int8 TFLite, ONNX, MediaPipe embedder): export time, file sizes, and every latency of
the manifest (LiteRT 1 and 2 threads, benchmark_litert_model cross-check, MediaPipe end to end,
ONNX Runtime, fp32 at 224) next to the table predictions.

    python -m bench.bench_export [--run runs/pipeline/demo] [--models mobilenet_v2 spnas-sd845]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from bench.common import record


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="runs/pipeline/demo", help="a pipeline run whose train/<model>/model.pt to export")
    ap.add_argument("--models", nargs="+", default=["mobilenet_v2", "spnas-sd845"])
    args = ap.parse_args()
    import spnas
    from spnas.app.jobs import commands

    run = Path(args.run)
    rows: list[dict[str, Any]] = []
    for name in args.models:
        ckpt = run / "train" / name / "model.pt"
        if not ckpt.exists():
            raise SystemExit(f"{ckpt} not found: run `spnas-pipeline` first (or pass --run)")
        with tempfile.TemporaryDirectory() as tmp:
            cfg = spnas.compose("export", [f"checkpoint={ckpt}", "data=cifar10", "data.train_limit=10000",
                                           "data.test_limit=2000", f"out_dir={tmp}/bundle",
                                           # measure int8 even where the pipeline's agreement gate
                                           # would not ship it; the agreement column says which
                                           "export.int8=required", "export.tolerances.int8_min_agreement=0"])
            m = commands.export(cfg)
        lat = m["latency"]
        cpu = lat["cpu"]
        f = m["files"]
        preds = {k: v.get("predicted_ms") for k, v in lat["table_predictions"].items()}
        rows.append({
            "model": name, "export_s": round(m["export_seconds"]["total"], 1),
            "fp32_MB": round(f["model_fp32.tflite"]["bytes"] / 1e6, 2), "int8_MB": round(f["model_int8.tflite"]["bytes"] / 1e6, 2),
            "onnx_MB": round(f["model.onnx"]["bytes"] / 1e6, 2),
            "fp32_1T_ms": round(cpu["model_fp32.tflite"]["1_thread"]["p10_ms"], 3),
            "fp32_2T_ms": round(cpu["model_fp32.tflite"]["2_thread"]["p10_ms"], 3),
            "int8_1T_ms": round(cpu["model_int8.tflite"]["1_thread"]["p10_ms"], 3),
            "int8_2T_ms": round(cpu["model_int8.tflite"]["2_thread"]["p10_ms"], 3),
            "bench_tool_fp32_ms": lat["benchmark_litert_model"]["model_fp32.tflite"]["median_ms"],
            "mediapipe_e2e_ms": round(lat["mediapipe_embedder_end_to_end"]["median_ms"], 3),
            "onnxrt_1T_ms": round(lat["onnxruntime_1_thread"]["median_ms"], 3),
            "fp32_224_1T_ms": round(lat["deploy_resolution"]["fp32_1_thread_p10_ms"], 3),
            **{f"pred_{k}_ms": round(v, 2) if v else None for k, v in preds.items()},
            "int8_top1_drop": round(m["int8"]["top1_drop"], 4), "int8_agreement": round(m["int8"]["top1_agreement"], 4),
        })
    record("bench_export", "Export: MobileNetV2 vs the search winner (32x32 CIFAR-10 models; 224 where marked)", rows,
           notes=f"Models from `{args.run}` (same data and training budget). CPU latencies are the local profiler's "
                 "p10 (LiteRT, XNNPACK) at the model's 32x32 input unless marked 224; bench_tool is "
                 "`python -m ai_edge_litert.tools.benchmark_litert_model` (median); MediaPipe e2e is ImageEmbedder.embed "
                 "on a real photo including its resize; pred_* are table predictions at 224. int8 is built and measured "
                 "whatever its agreement with fp32 (the pipeline ships it only at >= 0.95). int8 measured as is: on "
                 "x86 it may be slower than float (quantize/dequantize islands around h-swish and SE).")


if __name__ == "__main__":
    main()
