"""Settings every `spnas-<command>` has (`RunConfig`: seed, threads, torch device, mixed precision, the
multi-process settings); each room's command configs extend it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from spnas_core.config import opt
from training.config import AmpMode, DistConfig, Runtime


@dataclass
class RunConfig:
    """Settings every command has."""

    seed: int = opt(0, "seed of data order, augmentation and initialisation")
    threads: Optional[int] = opt(None, "torch intra-op threads (null: torch's default)")
    device: str = opt("auto", "auto | cpu | cuda | cuda:N (auto: the first CUDA GPU if there is one, else cpu; "
                              "under torchrun each rank takes cuda:LOCAL_RANK)")
    amp: AmpMode = opt(AmpMode.auto, "auto | off | bf16 | fp16")
    dist: DistConfig = opt(factory=DistConfig, help="multi-process settings (under torchrun)")

    def __post_init__(self) -> None:
        self.runtime()  # device and amp checked at compose time (training.config.Runtime)

    def runtime(self) -> Runtime:
        """The library's view of these settings (what `train_model`, `run_search`, ... take)."""
        return Runtime(device=self.device, amp=self.amp, threads=self.threads, dist=self.dist)
