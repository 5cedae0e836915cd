"""Export configs (Hydra group `export/`): int8 policy, parity tolerances, latency measurement."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional

from spnas_core.config import check_range, opt


class Int8Policy(enum.Enum):
    """What an export does about the int8 model."""

    disabled = "no int8 model"
    required = "an int8 model that misses its agreement tolerance refuses the whole export"
    fallback = "an int8 model that misses its tolerance is left out; the bundle ships float and says so"


@dataclass
class ExportTolerances:
    fp32_max_abs: float = opt(1.0e-4, "logits, torch vs TFLite fp32 (per unit of the largest logit when it is > 1)")
    onnx_max_abs: float = opt(1.0e-4, "logits (per unit of the largest, when > 1) and embedding, torch vs ONNX "
                                      "Runtime")
    mediapipe_min_cos: float = opt(0.999, "MediaPipe ImageEmbedder vs torch features")
    int8_min_agreement: float = opt(0.95, "top-1 agreement, int8 vs torch")


@dataclass
class ExportLatencyConfig:
    threads: list[int] = opt(factory=lambda: [1, 2], help="LiteRT thread counts to time")
    passes: int = opt(2, "timing passes; the fastest is kept")
    benchmark_tool: bool = opt(True, "cross-check with ai_edge_litert's benchmark_litert_model")
    mediapipe_runs: int = opt(50, "timed MediaPipe ImageEmbedder calls")
    onnx_runs: int = opt(50, "timed ONNX Runtime calls")
    deploy_resolution: Optional[int] = opt(None, "read the tables and also time the fp32 model at this input size "
                                                 "(null: the model's own input size, the size it ships at)")


@dataclass
class ExportConfig:
    """Export settings (config group `export/`)."""

    int8: Int8Policy = opt(Int8Policy.fallback, "disabled | required | fallback")
    calibration_images: int = opt(200, "real training images for int8 calibration")
    int8_eval_images: int = opt(2000, "test images for the int8 top-1 drop")
    parity_images: int = opt(64, "real test images for the parity checks (>= 32)")
    onnx_opset: int = opt(18, "ONNX opset (>= 17; 18 is the dynamo exporter's native opset)")
    measure_latency: bool = opt(True, "time every artifact on this CPU and add table predictions")
    tolerances: ExportTolerances = opt(factory=ExportTolerances, help="parity gates")
    latency: ExportLatencyConfig = opt(factory=ExportLatencyConfig, help="latency measurement")

    def __post_init__(self) -> None:
        check_range("export.onnx_opset", self.onnx_opset, 17, 30)
        check_range("export.parity_images", self.parity_images, 32, 100_000)
