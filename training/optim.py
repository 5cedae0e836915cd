"""Optimizers and schedules of the MobileNet recipe: decay on weights only, warm-up + cosine, EMA."""

from __future__ import annotations

import copy
import math
from typing import Any, Callable

import torch
from torch import nn

from training.config import OptimizerConfig, OptimizerKind


def param_groups(model: nn.Module, weight_decay: float, exclude: Callable[[str], bool] | None = None
                 ) -> list[dict[str, Any]]:
    """Weight decay on conv/linear weights only (not BN, biases), as MobileNet training does."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad or (exclude and exclude(name)):
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(groups: list[dict[str, Any]], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """SGD (Nesterov momentum), RMSProp (TF-style settings used by MobileNet / SPNAS) or Adam."""
    if cfg.optimizer is OptimizerKind.sgd:
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    if cfg.optimizer is OptimizerKind.rmsprop:
        return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=cfg.rmsprop_alpha, eps=cfg.rmsprop_eps,
                                   momentum=cfg.momentum)
    return torch.optim.Adam(groups, lr=cfg.lr)


def warmup_cosine(total_steps: int, warmup_steps: int, final_fraction: float = 0.0) -> Callable[[int], float]:
    """LR multiplier: linear warm-up, then cosine decay to `final_fraction` of the base LR."""
    total_steps = max(1, total_steps)

    def f(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * t))

    return f


class ModelEMA:
    """Exponential moving average of weights (buffers copied), evaluated instead of the raw model."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for e, m in zip(self.module.state_dict().values(), model.state_dict().values()):
            if e.dtype.is_floating_point:
                e.mul_(self.decay).add_(m.detach(), alpha=1 - self.decay)
            else:
                e.copy_(m)
