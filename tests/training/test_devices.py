"""Devices and mixed precision: CPU where no GPU exists, a one-line error for `device=cuda` without a
GPU, and the autocast / grad-scaler path exercised on this CPU in bfloat16."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spnas_core.errors import ConfigError
from training.config import AmpMode
from training.devices import Compute, DeviceUnavailableError, resolve_amp_dtype, resolve_compute, resolve_device

ROOT = Path(__file__).resolve().parents[2]
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")


@no_gpu
def test_cuda_without_a_gpu_is_one_clear_line(tmp_path):
    r = subprocess.run([str(Path(sys.executable).parent / "spnas-train"), "device=cuda", "data=cifar10",
                        "data.root=/nonexistent", f"run_dir={tmp_path / 'r'}"], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 2  # a config the machine cannot honour, caught before the data is even looked at
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert lines[0].startswith("spnas-train: error: device=cuda: PyTorch sees no CUDA GPU")
    assert "use device=cpu or device=auto" in lines[0]


@no_gpu
def test_device_resolution_on_this_machine():
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    for spec in ("cuda", "cuda:1"):
        with pytest.raises(DeviceUnavailableError, match=f"device={spec}: PyTorch sees no CUDA GPU"):
            resolve_device(spec)
    assert issubclass(DeviceUnavailableError, ConfigError)
    assert resolve_amp_dtype(AmpMode.auto, torch.device("cpu")) is None  # fp32 on the CPU unless asked
    assert resolve_amp_dtype(AmpMode.bf16, torch.device("cpu")) is torch.bfloat16
    with pytest.raises(ConfigError, match="amp=fp16 needs a CUDA device"):
        resolve_amp_dtype(AmpMode.fp16, torch.device("cpu"))


def test_config_checks_device_and_amp():
    import spnas

    with pytest.raises(ConfigError, match="device=gpu: use auto, cpu, cuda or cuda:N"):
        spnas.compose("train", ["device=gpu"])
    with pytest.raises(ConfigError, match="amp=fp16 needs a CUDA device"):
        spnas.compose("train", ["device=cpu", "amp=fp16"])
    cfg = spnas.compose("search", ["device=cuda:1", "amp=bf16"])
    assert cfg.device == "cuda:1" and cfg.amp is AmpMode.bf16 and cfg.dist.sync_bn


def test_compute_sends_bytes_and_normalises_like_the_cpu_path():
    from training.batches import to_tensor

    x = torch.randint(0, 256, (4, 8, 8, 3), dtype=torch.uint8)
    got = Compute(torch.device("cpu")).batch(x)
    assert torch.equal(got, to_tensor(x)) and got.is_contiguous(memory_format=torch.channels_last)


def test_bf16_autocast_trains_on_this_cpu(cifar_root, tmp_path):
    """amp=bf16 runs the autocast path end to end (forward in bfloat16, loss and optimizer in fp32)."""
    import json

    import spnas
    from spnas.app.jobs import commands

    compute = resolve_compute("cpu", AmpMode.bf16)
    conv = torch.nn.Conv2d(3, 4, 3)
    with compute.autocast():
        assert conv(torch.randn(1, 3, 8, 8)).dtype is torch.bfloat16
    cfg = spnas.compose("train", ["arch=mobilenet_v3_small", "data=cifar10", f"data.root={cifar_root}",
                                  "data.train_limit=512", "data.test_limit=64", f"data.cache_dir={tmp_path / 'c'}",
                                  "train.epochs=3", "train.min_steps=0", "train.batch_size=32", "train.lr=0.05", "device=cpu", "amp=bf16",
                                  f"run_dir={tmp_path / 'run'}"])
    s = commands.train(cfg)
    assert s["compute"] == {"device": "cpu", "amp": "bfloat16", "channels_last": True}
    m = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["train_loss"] == r["train_loss"] and r["train_loss"] < 5 for r in m)  # finite, sane
    assert m[-1]["train_loss"] < m[0]["train_loss"]  # it learns (7 steps of 2 epochs were too few to show it)
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert "scaler" in ckpt and all(v.dtype == torch.float32 for v in ckpt["model"].values() if v.is_floating_point())
