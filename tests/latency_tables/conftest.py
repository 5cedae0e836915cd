"""Micro-models and public measurements shared by the latency-table tests."""

import os
from pathlib import Path

import pytest

# Small real op keys (32x32 network shapes) so conversion stays quick.
SMALL_KEYS = [
    "Conv-input:32x32x3-output:16x16x16-kernel:3-stride:2-hs:1",
    "expanded_conv-input:8x8x24-output:4x4x40-expand:3-kernel:5-stride:2-idskip:0-se:1-hs:0",
    "expanded_conv-input:2x2x80-output:2x2x80-expand:6-kernel:3-stride:1-idskip:1-se:0-hs:1",
    "AvgPool2D-input:1x1x960",
]


@pytest.fixture(scope="session")
def micro_cache(tmp_path_factory):
    from export.tflite import convert_to_tflite
    from latency_tables.measuring.micro import MicroModelCache

    return MicroModelCache(convert_to_tflite, tmp_path_factory.mktemp("micro"))


@pytest.fixture(scope="session")
def small_models(micro_cache) -> dict[str, Path]:
    return {k: micro_cache.get(k) for k in SMALL_KEYS}


@pytest.fixture(scope="session")
def latency_data() -> Path:
    """`<shared>/latency-data`: the public phone measurements (skipped outside CI when absent, failed in CI)."""
    from latency_tables.modelling.sources import latency_data_dir

    d = latency_data_dir()
    if not (d / "published_latencies.csv").is_file():
        msg = f"public latency measurements not found in {d} (set SPNAS_SHARED)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {msg}")
        pytest.skip(msg)
    return d
