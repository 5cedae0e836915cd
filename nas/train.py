"""Train and evaluate a fixed architecture (a reference net or an `arch.json`): `spnas-train`.

Resumable: a checkpoint is written atomically after every epoch, data order, augmentation and
dropout are fixed by (seed, epoch), so `resume=true` reaches the same final weights as a run that
was never interrupted.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from search_spaces import ArchSpec, build_model, count_macs, count_params, reference
from search_spaces.reference import REFERENCE_NETS

from .data import DataBundle, Split, iterate_batches, load_data, num_batches
from .runtime import (
    JsonLines, atomic_torch_save, atomic_write_json, epoch_generator, load_torch, seed_everything, versions,
)

log = logging.getLogger(__name__)

CKPT_NAME = "last.pt"
MODEL_NAME = "model.pt"
MODEL_FORMAT = "spnas.model/1"


# ---------------------------------------------------------------------------------- arch
def resolve_arch(ref: str | ArchSpec, num_classes: int, resolution: int) -> ArchSpec:
    """A reference-net name or an `arch.json` path, re-targeted to the data's classes and resolution."""
    if isinstance(ref, ArchSpec):
        arch = ref
    elif str(ref) in REFERENCE_NETS:
        arch = reference(str(ref))
    else:
        arch = ArchSpec.load(ref)
    return arch.replace(num_classes=num_classes, resolution=resolution)


# ---------------------------------------------------------------------------------- optim
def param_groups(model: nn.Module, weight_decay: float, exclude: Callable[[str], bool] | None = None
                 ) -> list[dict[str, Any]]:
    """Weight decay on conv/linear weights only (not BN, biases), as MobileNet training does."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad or (exclude and exclude(name)):
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(groups: list[dict[str, Any]], cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """SGD (Nesterov momentum) or RMSProp (TF-style settings used by MobileNet / SPNAS)."""
    name = str(cfg.get("optimizer", "sgd")).lower()
    lr = float(cfg["lr"])
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=float(cfg.get("momentum", 0.9)),
                               nesterov=bool(cfg.get("nesterov", True)))
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, alpha=float(cfg.get("rmsprop_alpha", 0.9)),
                                   eps=float(cfg.get("rmsprop_eps", 1e-3)),
                                   momentum=float(cfg.get("momentum", 0.9)))
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr)
    raise ValueError(f"train.optimizer must be sgd, rmsprop or adam; got '{name}'")


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


# ---------------------------------------------------------------------------------- eval
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


def progress(total: int, desc: str):
    """A tqdm bar (rate and ETA shown) that stays quiet when not on a terminal-ish stream."""
    import sys

    from tqdm import tqdm

    tty = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit="batch", dynamic_ncols=True, leave=False,
                mininterval=0.5 if tty else 20.0, file=sys.stderr)


# ---------------------------------------------------------------------------------- checkpoints
def save_model(path: Path, model: nn.Module, arch: ArchSpec, data: DataBundle | dict[str, Any],
               extra: dict[str, Any] | None = None) -> Path:
    """The trained-weights file the exporter reads: weights + arch + data facts (atomic)."""
    data_info = data if isinstance(data, dict) else {
        "name": data.name, "resolution": data.resolution, "classes": data.classes}
    return atomic_torch_save({"format": MODEL_FORMAT, "arch": arch.to_dict(), "state_dict": model.state_dict(),
                              "data": data_info, **(extra or {})}, path)


def load_model_file(path: str | Path) -> tuple[nn.Module, ArchSpec, dict[str, Any]]:
    """Load a `model.pt` written by `save_model`; clear errors for corrupt or mismatched files."""
    blob = load_torch(path, "model checkpoint")
    if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path} is not an spnas model checkpoint (expected format {MODEL_FORMAT})")
    arch = ArchSpec.from_dict(blob["arch"])
    model = build_model(arch)
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not match its architecture ({str(e).splitlines()[0]})") from None
    return model.eval(), arch, blob


# ---------------------------------------------------------------------------------- the loop
def fit(
    model: nn.Module,
    data: DataBundle,
    tcfg: dict[str, Any],
    run_dir: Path,
    *,
    seed: int = 0,
    resume: bool = False,
    desc: str = "train",
) -> dict[str, Any]:
    """Train `model` for `tcfg.epochs`, checkpointing each epoch; returns the final summary."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if tcfg.get("channels_last", True):
        model.to(memory_format=torch.channels_last)  # 2-3x faster depthwise convs on CPU; inputs are NHWC already
    ckpt_path = run_dir / CKPT_NAME
    metrics = JsonLines(run_dir / "metrics.jsonl")
    epochs = int(tcfg["epochs"])
    bs = int(tcfg["batch_size"])
    steps_per_epoch = num_batches(len(data.train), bs, drop_last=True)
    limit = tcfg.get("max_steps_per_epoch")
    if limit:
        steps_per_epoch = min(steps_per_epoch, int(limit))
    opt = make_optimizer(param_groups(model, float(tcfg.get("weight_decay", 4e-5))), tcfg)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, warmup_cosine(epochs * steps_per_epoch, int(float(tcfg.get("warmup_epochs", 0)) * steps_per_epoch)))
    ema = ModelEMA(model, float(tcfg["ema_decay"])) if float(tcfg.get("ema_decay") or 0) > 0 else None
    crit = nn.CrossEntropyLoss(label_smoothing=float(tcfg.get("label_smoothing", 0.0)))
    start_epoch = 0
    wall_before = 0.0

    if ckpt_path.exists():
        if not resume:
            raise FileExistsError(
                f"{run_dir} already holds a checkpoint ({ckpt_path.name}); pass resume=true to continue it, "
                f"or choose another run_dir"
            )
        state = load_torch(ckpt_path)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if ema is not None and state.get("ema") is not None:
            ema.module.load_state_dict(state["ema"])
        start_epoch = int(state["epoch"])
        wall_before = float(state.get("wall_s", 0.0))
        metrics.truncate_to([r for r in metrics.read() if r.get("epoch", 0) <= start_epoch])
        log.info("resumed from %s at epoch %d", ckpt_path, start_epoch)
    elif resume:
        log.info("resume=true but %s has no checkpoint: starting from scratch", run_dir)
        metrics.truncate_to([])
    else:
        metrics.truncate_to([])

    t0 = time.perf_counter()
    aug = dict(tcfg.get("augment") or {})
    for epoch in range(start_epoch, epochs):
        torch.manual_seed(seed * 1_000_003 + epoch)  # dropout stream, replayable on resume
        g = epoch_generator(seed, epoch)
        model.train()
        bar = progress(steps_per_epoch, f"{desc} {epoch + 1}/{epochs}")
        seen = correct = 0
        loss_sum = 0.0
        te = time.perf_counter()
        for step, (x, y) in enumerate(iterate_batches(data.train, bs, shuffle=True, generator=g,
                                                      augment=aug, drop_last=True)):
            if step >= steps_per_epoch:
                break
            logits = model(x)
            loss = crit(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if tcfg.get("grad_clip"):
                nn.utils.clip_grad_norm_(model.parameters(), float(tcfg["grad_clip"]))
            opt.step()
            sched.step()
            if ema is not None:
                ema.update(model)
            seen += len(y)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += loss.item() * len(y)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", refresh=False)
        bar.close()
        train_s = time.perf_counter() - te
        eval_model = ema.module if ema is not None else model
        val = evaluate(eval_model, data.val, int(tcfg.get("eval_batch_size", 500)))
        rec = {"epoch": epoch + 1, "train_loss": loss_sum / max(1, seen), "train_top1": correct / max(1, seen),
               "val_top1": val["top1"], "val_top5": val["top5"], "val_loss": val["loss"],
               "lr": opt.param_groups[0]["lr"], "epoch_s": train_s, "images_per_s": seen / max(train_s, 1e-9)}
        metrics.append(rec)
        log.info("%s epoch %d/%d: loss %.4f train %.4f val %.4f (%.0f img/s)", desc, epoch + 1, epochs,
                 rec["train_loss"], rec["train_top1"], rec["val_top1"], rec["images_per_s"])
        atomic_torch_save({"epoch": epoch + 1, "model": model.state_dict(), "optimizer": opt.state_dict(),
                           "scheduler": sched.state_dict(), "ema": ema.module.state_dict() if ema else None,
                           "wall_s": wall_before + time.perf_counter() - t0}, ckpt_path)

    final = ema.module if ema is not None else model
    test = evaluate(final, data.test, int(tcfg.get("eval_batch_size", 500)))
    history = metrics.read()
    return {"model": final, "test": test, "history": history,
            "train_wall_s": wall_before + time.perf_counter() - t0}


def train(cfg: dict[str, Any], data: DataBundle | None = None) -> dict[str, Any]:
    """Everything `spnas-train` does: data, arch, fit, test, model file and `summary.json`.

    `data` skips decoding when the caller (the pipeline) already holds the data set."""
    run_dir = Path(cfg["run_dir"])
    seed = int(cfg.get("seed", 0))
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    seed_everything(seed)
    if data is None:
        data_cfg = dict(cfg["data"])
        data_cfg.setdefault("seed", seed)
        data = load_data(data_cfg)
    arch = resolve_arch(cfg["arch"], data.num_classes, data.resolution)
    tcfg = dict(cfg["train"])
    model = build_model(arch, dropout=float(tcfg.get("dropout", 0.2)))
    init = str(cfg.get("init", "scratch"))
    if init == "inherit":
        from .superkernel import inherit_weights  # imported lazily: only retraining needs the supernet

        if not cfg.get("supernet"):
            raise ValueError("init=inherit needs supernet=<path to the search's supernet.pt>")
        inherit_weights(model, arch, cfg["supernet"])
    elif init != "scratch":
        raise ValueError(f"init must be 'scratch' or 'inherit', got '{init}'")
    arch.save(run_dir / "arch.json")
    result = fit(model, data, tcfg, run_dir, seed=seed, resume=bool(cfg.get("resume", False)),
                 desc=arch.name or "train")
    final = result["model"]
    save_model(run_dir / MODEL_NAME, final, arch, data)
    deploy = arch.replace(resolution=int(cfg.get("latency_resolution", 224)))
    summary = {
        "arch": arch.to_dict(),
        "arch_string": arch.to_string(),
        "params": count_params(final),
        "macs": count_macs(final, arch.resolution, arch.in_channels),
        "macs_at_deploy_resolution": count_macs(build_model(deploy), deploy.resolution),
        "deploy_resolution": deploy.resolution,
        "test_top1": result["test"]["top1"],
        "test_top5": result["test"]["top5"],
        "test_loss": result["test"]["loss"],
        "val_top1": result["history"][-1]["val_top1"] if result["history"] else None,
        "epochs": int(tcfg["epochs"]),
        "train_wall_s": result["train_wall_s"],
        "images_per_s": (sum(r["images_per_s"] for r in result["history"]) / len(result["history"])
                         if result["history"] else None),
        "data": data.summary(),
        "seed": seed,
        "init": init,
        "versions": versions(),
    }
    atomic_write_json(run_dir / "summary.json", summary)
    return summary
