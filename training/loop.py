"""Train and evaluate a fixed architecture (a reference net or an `arch.json`).

Resumable: a checkpoint is written atomically after every epoch, data order, augmentation and
dropout are fixed by (seed, epoch), so `resume=true` reaches the same final weights as a run that
was never interrupted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from search_spaces import ArchSpec, build_model, count_macs, count_params, reference
from search_spaces.reference import REFERENCE_NETS
from spnas.config import InitKind, TrainAppConfig, TrainConfig
from spnas.errors import ConfigError, RunStateError
from spnas.files import JsonLines, write_json_atomic

from .batches import iterate_batches, num_batches
from .checkpoints import atomic_torch_save, load_torch, save_model
from .datasets import DataBundle, Split, load_data
from .optim import ModelEMA, make_optimizer, param_groups, warmup_cosine
from .runtime import epoch_generator, progress, seed_everything, set_threads, versions

log = logging.getLogger(__name__)

CKPT_NAME = "last.pt"
MODEL_NAME = "model.pt"


def resolve_arch(ref: str | Path | ArchSpec, num_classes: int, resolution: int) -> ArchSpec:
    """A reference-net name or an `arch.json` path, re-targeted to the data's classes and resolution."""
    if isinstance(ref, ArchSpec):
        arch = ref
    elif str(ref) in REFERENCE_NETS:
        arch = reference(str(ref))
    else:
        arch = ArchSpec.load(ref)
    return arch.replace(num_classes=num_classes, resolution=resolution)


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, batch_size: int = 500,
             forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, float]:
    """Top-1, top-5 and mean CE loss of `model` on a split."""
    was = model.training
    model.eval()
    fwd = forward or model
    n = correct1 = correct5 = 0
    loss_sum = 0.0
    for x, y in iterate_batches(split, batch_size):
        logits = fwd(x)
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        correct1 += int((top[:, 0] == y).sum())
        correct5 += int((top == y[:, None]).any(dim=1).sum())
        n += len(y)
    model.train(was)
    if n == 0:
        return {"top1": float("nan"), "top5": float("nan"), "loss": float("nan"), "n": 0}
    return {"top1": correct1 / n, "top5": correct5 / n, "loss": loss_sum / n, "n": n}


# ---------------------------------------------------------------------------------- the loop
@dataclass
class _Fit:
    """Everything one training run holds between epochs (what a checkpoint saves)."""

    model: nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    ema: ModelEMA | None
    steps_per_epoch: int
    start_epoch: int = 0
    wall_before: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def state(self, epoch: int, wall: float) -> dict[str, Any]:
        return {"epoch": epoch, "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "ema": self.ema.module.state_dict() if self.ema else None,
                "wall_s": wall}

    def load(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.module.load_state_dict(state["ema"])
        self.start_epoch = int(state["epoch"])
        self.wall_before = float(state.get("wall_s", 0.0))


def _setup(model: nn.Module, data: DataBundle, tcfg: TrainConfig) -> _Fit:
    if tcfg.channels_last:
        model.to(memory_format=torch.channels_last)  # 2-3x faster depthwise convs on CPU; inputs are NHWC already
    steps = num_batches(len(data.train), tcfg.batch_size, drop_last=True)
    if tcfg.max_steps_per_epoch:
        steps = min(steps, tcfg.max_steps_per_epoch)
    opt = make_optimizer(param_groups(model, tcfg.weight_decay), tcfg)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, warmup_cosine(tcfg.epochs * steps, int(tcfg.warmup_epochs * steps)))
    ema = ModelEMA(model, tcfg.ema_decay) if tcfg.ema_decay > 0 else None
    return _Fit(model, opt, sched, ema, steps)


def _resume_or_start(fit: _Fit, run_dir: Path, metrics: JsonLines, resume: bool) -> None:
    ckpt = run_dir / CKPT_NAME
    if ckpt.exists():
        if not resume:
            raise RunStateError(f"{run_dir} already holds a checkpoint ({ckpt.name}); pass resume=true to continue "
                                f"it, or choose another run_dir")
        fit.load(load_torch(ckpt))
        metrics.truncate_to([r for r in metrics.read() if r.get("epoch", 0) <= fit.start_epoch])
        log.info("resumed from %s at epoch %d", ckpt, fit.start_epoch)
        return
    if resume:
        log.info("resume=true but %s has no checkpoint: starting from scratch", run_dir)
    metrics.truncate_to([])


def _train_epoch(fit: _Fit, data: DataBundle, tcfg: TrainConfig, crit: nn.Module, g: torch.Generator,
                 desc: str) -> dict[str, float]:
    """One epoch of SGD steps; returns loss, accuracy and throughput."""
    model = fit.model
    model.train()
    bar = progress(fit.steps_per_epoch, desc)
    seen = correct = 0
    loss_sum = 0.0
    t0 = time.perf_counter()
    for step, (x, y) in enumerate(iterate_batches(data.train, tcfg.batch_size, shuffle=True, generator=g,
                                                  augment=tcfg.augment, drop_last=True)):
        if step >= fit.steps_per_epoch:
            break
        logits = model(x)
        loss = crit(logits, y)
        fit.opt.zero_grad(set_to_none=True)
        loss.backward()
        if tcfg.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        fit.opt.step()
        fit.sched.step()
        if fit.ema is not None:
            fit.ema.update(model)
        seen += len(y)
        correct += int((logits.argmax(1) == y).sum())
        loss_sum += loss.item() * len(y)
        bar.update(1)
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", refresh=False)
    bar.close()
    secs = time.perf_counter() - t0
    return {"train_loss": loss_sum / max(1, seen), "train_top1": correct / max(1, seen), "epoch_s": secs,
            "images_per_s": seen / max(secs, 1e-9)}


def fit(model: nn.Module, data: DataBundle, tcfg: TrainConfig, run_dir: Path, *, seed: int = 0,
        resume: bool = False, desc: str = "train") -> dict[str, Any]:
    """Train `model` for `tcfg.epochs`, checkpointing each epoch; returns the final model, test
    figures and history."""
    run_dir.mkdir(parents=True, exist_ok=True)
    state = _setup(model, data, tcfg)
    metrics = JsonLines(run_dir / "metrics.jsonl")
    _resume_or_start(state, run_dir, metrics, resume)
    crit = nn.CrossEntropyLoss(label_smoothing=tcfg.label_smoothing)
    t0 = time.perf_counter()
    for epoch in range(state.start_epoch, tcfg.epochs):
        torch.manual_seed(seed * 1_000_003 + epoch)  # dropout stream, replayable on resume
        rec = _train_epoch(state, data, tcfg, crit, epoch_generator(seed, epoch), f"{desc} {epoch + 1}/{tcfg.epochs}")
        val = evaluate(state.ema.module if state.ema else model, data.val, tcfg.eval_batch_size)
        rec = {"epoch": epoch + 1, **rec, "val_top1": val["top1"], "val_top5": val["top5"], "val_loss": val["loss"],
               "lr": state.opt.param_groups[0]["lr"]}
        metrics.append(rec)
        log.info("%s epoch %d/%d: loss %.4f train %.4f val %.4f (%.0f img/s)", desc, epoch + 1, tcfg.epochs,
                 rec["train_loss"], rec["train_top1"], rec["val_top1"], rec["images_per_s"])
        atomic_torch_save(state.state(epoch + 1, state.wall_before + time.perf_counter() - t0), run_dir / CKPT_NAME)
    final = state.ema.module if state.ema is not None else model
    return {"model": final, "test": evaluate(final, data.test, tcfg.eval_batch_size), "history": metrics.read(),
            "train_wall_s": state.wall_before + time.perf_counter() - t0}


# ---------------------------------------------------------------------------------- the job
InitWeights = Callable[[nn.Module, ArchSpec, str], None]


def train_model(cfg: TrainAppConfig, data: DataBundle | None = None,
                inherit: InitWeights | None = None) -> dict[str, Any]:
    """Everything `spnas-train` does: data, arch, fit, test, `model.pt` and `summary.json`.

    `data` skips decoding when the caller already holds the data set; `inherit(model, arch, supernet)`
    initialises from a search's supernet (init=inherit; the search package provides it)."""
    run_dir = Path(cfg.run_dir)
    set_threads(cfg.threads)
    seed_everything(cfg.seed)
    data = data if data is not None else load_data(cfg.data, cfg.seed)
    arch = resolve_arch(cfg.arch, data.num_classes, data.resolution)
    model = build_model(arch, dropout=cfg.train.dropout)
    if cfg.init is InitKind.inherit:
        if inherit is None or not cfg.supernet:
            raise ConfigError("init=inherit needs supernet=<the search's supernet.pt>")
        inherit(model, arch, cfg.supernet)
    arch.save(run_dir / "arch.json")
    result = fit(model, data, cfg.train, run_dir, seed=cfg.seed, resume=cfg.resume, desc=arch.name or "train")
    final = result["model"]
    save_model(run_dir / MODEL_NAME, final, arch, {"name": data.name, "resolution": data.resolution,
                                                   "classes": data.classes})
    deploy = arch.replace(resolution=cfg.latency_resolution)
    hist = result["history"]
    summary = {
        "arch": arch.to_dict(), "arch_string": arch.to_string(), "params": count_params(final),
        "macs": count_macs(final, arch.resolution, arch.in_channels),
        "macs_at_deploy_resolution": count_macs(build_model(deploy), deploy.resolution),
        "deploy_resolution": deploy.resolution, "test_top1": result["test"]["top1"],
        "test_top5": result["test"]["top5"], "test_loss": result["test"]["loss"],
        "val_top1": hist[-1]["val_top1"] if hist else None, "epochs": cfg.train.epochs,
        "train_wall_s": result["train_wall_s"],
        "images_per_s": sum(r["images_per_s"] for r in hist) / len(hist) if hist else None,
        "data": data.summary(), "seed": cfg.seed, "init": cfg.init.name, "versions": versions(),
    }
    write_json_atomic(run_dir / "summary.json", summary)
    return summary
