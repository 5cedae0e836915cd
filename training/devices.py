"""Where a run computes and in which precision: `device=auto|cpu|cuda|cuda:N` and `amp=auto|off|bf16|fp16`.

One `Compute` object per run holds the resolved device, the autocast dtype and the grad scaler, so the
training and search loops write one step for every device:

    compute = resolve_compute(cfg.device, cfg.amp, local_rank=env.local_rank)
    with compute.autocast():
        loss = crit(model(compute.batch(x)), y.to(compute.device))
    compute.backward_and_step(loss, [opt], clip=(model.parameters(), 5.0))

CPU stays the default where no GPU is visible; asking for CUDA without one is a `DeviceUnavailableError`
(a `ConfigError`, exit code 2) naming what PyTorch sees, before any data is decoded.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import torch

from spnas_core.errors import ConfigError
from spnas_core.images import MEAN_RGB, STD_RGB
from training.config import AmpMode

log = logging.getLogger(__name__)


class DeviceUnavailableError(ConfigError):
    """A `device=` setting this machine cannot honour (no CUDA GPU, or fewer than asked)."""


def _cuda_count() -> int:
    try:
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken driver install raises from inside CUDA's init: treat as no GPU
        return 0


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """`auto | cpu | cuda | cuda:N` -> a torch.device; under torchrun `auto`/`cuda` take cuda:LOCAL_RANK."""
    spec = str(spec).strip()
    if spec == "cpu":
        return torch.device("cpu")
    n = _cuda_count()
    if spec == "auto":
        return torch.device("cuda", local_rank % n) if n else torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if n == 0:
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise DeviceUnavailableError(
                f"device={spec}: PyTorch sees no CUDA GPU (torch {torch.__version__} is {build}); use device=cpu or "
                f"device=auto, or install a CUDA build of torch on a machine with an NVIDIA driver")
        index = int(spec.split(":", 1)[1]) if ":" in spec else local_rank
        if index >= n:
            raise DeviceUnavailableError(f"device={spec}: this machine has {n} CUDA GPU(s) (cuda:0..cuda:{n - 1}); "
                                         f"pick one of those or device=cuda (one per torchrun rank)")
        return torch.device("cuda", index)
    raise ConfigError(f"device={spec}: use auto, cpu, cuda or cuda:N")


def resolve_amp_dtype(mode: AmpMode, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `amp=` on `device` (None: float32)."""
    if mode is AmpMode.off:
        return None
    if mode is AmpMode.auto:
        if device.type != "cuda":
            return None  # CPU autocast is slower than fp32 for these convs on most x86 parts
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if mode is AmpMode.fp16:
        if device.type != "cuda":
            raise ConfigError("amp=fp16 needs a CUDA device (its grad scaler is CUDA-only): use amp=bf16 or amp=off")
        return torch.float16
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"amp=bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support; use amp=fp16 "
                          f"or amp=auto")
    return torch.bfloat16


_MEAN = torch.tensor(MEAN_RGB).view(1, 3, 1, 1)
_STD = torch.tensor(STD_RGB).view(1, 3, 1, 1)


@dataclass
class Compute:
    """A run's device, precision and grad scaler: what every step needs to run anywhere."""

    device: torch.device
    amp_dtype: torch.dtype | None = None
    channels_last: bool = True
    scaler: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._mean, self._std = _MEAN.to(self.device), _STD.to(self.device)  # once, not per batch
        if self.scaler is None:
            # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none
            self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype is torch.float16)

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def describe(self) -> dict[str, Any]:
        """Device facts for summaries: which device, which GPU, which precision."""
        out: dict[str, Any] = {"device": str(self.device), "amp": str(self.amp_dtype).replace("torch.", "")
                               if self.amp_dtype else "off", "channels_last": self.channels_last}
        if self.is_cuda:
            out["gpu"] = torch.cuda.get_device_name(self.device)
        return out

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed-precision context for forward and loss (a no-op in float32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def module(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move a model to the device, channels-last (NHWC: 2-3x faster depthwise convs on CPU, tensor cores on GPU)."""
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        """A batch onto the device: uint8 NHWC (or NCHW) is sent as bytes and normalised there; float is sent as is."""
        if x.dtype == torch.uint8:
            if x.shape[-1] == 3 and x.shape[1] != 3:
                x = x.permute(0, 3, 1, 2)  # NHWC bytes viewed as NCHW: already channels-last in memory
            x = x.to(self.device, non_blocking=True).float()
            x = (x - self._mean) / self._std
        else:
            x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def labels(self, y: torch.Tensor) -> torch.Tensor:
        return y.to(self.device, non_blocking=True)

    def backward_and_step(self, loss: torch.Tensor, optimizers: Iterable[torch.optim.Optimizer],
                          clip: tuple[Iterable[torch.nn.Parameter], float] | None = None,
                          before_step: Any = None) -> None:
        """Backward (scaled under fp16), optional all-reduce/clip hooks, then every optimizer's step.

        `before_step()` runs after the gradients exist and are unscaled (e.g. all-reducing the
        decision thresholds' gradients under DDP); `clip=(params, max_norm)` clips their norm."""
        opts = list(optimizers)
        self.scaler.scale(loss).backward()
        if before_step is not None or clip is not None:
            for o in opts:
                self.scaler.unscale_(o)
        if before_step is not None:
            before_step()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(list(clip[0]), clip[1])
        for o in opts:
            self.scaler.step(o)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        """The grad scaler's state (part of a resumable checkpoint)."""
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if state:
            self.scaler.load_state_dict(state)


def resolve_compute(device: str, amp: AmpMode, *, local_rank: int = 0, channels_last: bool = True) -> Compute:
    """The run's `Compute` from its `device=` and `amp=` settings (raises before any work is done)."""
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    compute = Compute(dev, resolve_amp_dtype(amp, dev), channels_last)
    log.info("compute: %s", compute.describe())
    return compute


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """`model.eval()` inside, the previous mode restored after."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)
