"""Train and evaluate a fixed architecture (a reference net or an `arch.json`).

Resumable: a checkpoint is written atomically after every epoch, data order, augmentation and
dropout are fixed by (seed, epoch), so `resume=true` reaches the same final weights as a run that
was never interrupted.

Runs on `device=auto|cpu|cuda|cuda:N` with mixed precision (`amp=`, see `training.devices`), from RAM
or streamed from files (`data.loader=stream`), and under `torchrun` as DistributedDataParallel
(`training.distributed`): `train.batch_size` is the global batch, the learning rate is for that
batch, every rank takes its slice of each global batch, and only rank 0 writes files.
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
from search_spaces.config import ProxyConfig
from search_spaces.proxy import proxy_for
from search_spaces.reference import REFERENCE_NETS
from spnas_core.errors import ConfigError, RunStateError
from spnas_core.files import JsonLines, write_json_atomic
from spnas_core.versions import versions

from .batches import iterate_batches
from .budget import MIN_TRAIN_STEPS, TrainPlan, plan_training
from .checkpoints import atomic_torch_save, load_torch, save_model
from .config import DataConfig, DataLoaderKind, DistConfig, Runtime, TrainConfig
from .datasets import DataBundle, Split, load_data
from .devices import Compute, resolve_compute
from .distributed import (
    SINGLE,
    DistEnv,
    all_reduce_sums,
    barrier,
    broadcast_object,
    check_same_on_all_ranks,
    current_env,
    env_from_torchrun,
    per_rank_batch,
    process_group,
    rank_seed,
    revert_sync_batchnorm,
    unwrap,
    weights_digest,
    wrap_ddp,
)
from .optim import ModelEMA, make_optimizer, param_groups, warmup_cosine
from .runtime import epoch_generator, progress, seed_everything, set_threads
from .streaming import StreamingData, StreamLoader, open_stream

TrainData = DataBundle | StreamingData

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


def load_train_data(cfg: DataConfig, seed: int, env: DistEnv = SINGLE) -> TrainData:
    """The data set as the loader setting says: decoded into RAM (rank 0 fills the cache, the other
    ranks then read it) or listed for streaming."""
    if cfg.loader is DataLoaderKind.stream:
        return open_stream(cfg, seed)
    if env.enabled and not env.is_main:
        barrier(env)  # wait for rank 0 to decode and cache; then this is a cache read
        return load_data(cfg, seed)
    data = load_data(cfg, seed)
    barrier(env)
    return data


def _model_compute(model: nn.Module) -> Compute:
    p = next(model.parameters(), None)
    return Compute(p.device if p is not None else torch.device("cpu"))


def eval_batches(split: Split | StreamLoader, batch_size: int, env: DistEnv) -> Any:
    """This rank's share of a split, `batch_size` images per rank per step (uint8 NHWC batches)."""
    if isinstance(split, StreamLoader):
        return split.epoch(0)
    return iterate_batches(split, batch_size * env.world_size, shard=env, normalize=False)


@torch.no_grad()
def evaluate(model: nn.Module, split: Split | StreamLoader, batch_size: int = 500,
             forward: Callable[[torch.Tensor], torch.Tensor] | None = None, *, compute: Compute | None = None,
             env: DistEnv | None = None, per_image: bool = False) -> dict[str, Any]:
    """Top-1, top-5 and mean CE loss of `model` on a split (an in-RAM `Split` or a streaming loader).

    Under DDP each rank evaluates its share and the counts are summed, so every rank gets the
    figures of the whole split. `per_image` adds `correct`: "1"/"0" per image in split order (top-1),
    which the report resamples for intervals over test images (one process only: None under DDP)."""
    env = env or current_env()
    compute = compute or _model_compute(model)
    was = model.training
    model.eval()
    fwd = forward or model
    n = correct1 = correct5 = 0
    loss_sum = 0.0
    hits: list[str] = []
    for x, y in eval_batches(split, batch_size, env):
        x, y = compute.batch(x), compute.labels(y)
        with compute.autocast():
            logits = fwd(x)
        logits = logits.float()
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        correct1 += int((top[:, 0] == y).sum())
        if per_image:
            hits.extend("1" if c else "0" for c in (top[:, 0] == y).tolist())
        correct5 += int((top == y[:, None]).any(dim=1).sum())
        n += len(y)
    model.train(was)
    n, correct1, correct5, loss_sum = all_reduce_sums([n, correct1, correct5, loss_sum], env)
    extra = {"correct": "".join(hits) if not env.enabled else None} if per_image else {}
    if n == 0:
        return {"top1": float("nan"), "top5": float("nan"), "loss": float("nan"), "n": 0, **extra}
    return {"top1": correct1 / n, "top5": correct5 / n, "loss": loss_sum / n, "n": int(n), **extra}


# ---------------------------------------------------------------------------------- the loop
@dataclass
class _Fit:
    """Everything one training run holds between epochs (what a checkpoint saves)."""

    model: nn.Module  # what steps run (a DDP wrapper under torchrun)
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    ema: ModelEMA | None
    steps_per_epoch: int
    compute: Compute
    env: DistEnv
    start_epoch: int = 0
    wall_before: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    plan: TrainPlan | None = None

    @property
    def net(self) -> nn.Module:
        """The model itself (unwrapped): what is saved and evaluated."""
        return unwrap(self.model)

    def state(self, epoch: int, wall: float) -> dict[str, Any]:
        return {"epoch": epoch, "model": self.net.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "ema": self.ema.module.state_dict() if self.ema else None,
                "scaler": self.compute.state_dict(), "wall_s": wall, "world_size": self.env.world_size}

    def load(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.module.load_state_dict(state["ema"])
        self.compute.load_state_dict(state.get("scaler"))
        self.start_epoch = int(state["epoch"])
        self.wall_before = float(state.get("wall_s", 0.0))


def _setup(model: nn.Module, plan: TrainPlan, tcfg: TrainConfig, compute: Compute, env: DistEnv,
           dcfg: DistConfig) -> _Fit:
    per_rank_batch(tcfg.batch_size, env, "train.batch_size")
    compute.module(model)  # device + channels-last (NHWC: 2-3x faster depthwise convs on CPU)
    model = wrap_ddp(model, env, compute.device, dcfg)  # before the optimizer: sync-BN makes new parameters
    opt = make_optimizer(param_groups(model, tcfg.weight_decay), tcfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(plan.total_steps, plan.warmup_steps))
    ema = ModelEMA(unwrap(model), tcfg.ema_decay) if tcfg.ema_decay > 0 else None
    return _Fit(model, opt, sched, ema, plan.steps_per_epoch, compute, env, plan=plan)


def _resume_or_start(fit: _Fit, run_dir: Path, metrics: JsonLines, resume: bool) -> None:
    """Rank 0 decides and reads the checkpoint; every rank loads the same state."""
    env = fit.env
    ckpt = run_dir / CKPT_NAME
    exists = broadcast_object(ckpt.exists(), env)
    if exists and not resume:
        raise RunStateError(f"{run_dir} already holds a checkpoint ({ckpt.name}); pass resume=true to continue "
                            f"it, or choose another run_dir")
    if exists:
        fit.load(broadcast_object(load_torch(ckpt) if env.is_main else None, env))
        if env.is_main:
            metrics.truncate_to([r for r in metrics.read() if r.get("epoch", 0) <= fit.start_epoch])
        log.info("resumed from %s at epoch %d", ckpt, fit.start_epoch)
        return
    if resume:
        log.info("resume=true but %s has no checkpoint: starting from scratch", run_dir)
    if env.is_main:
        metrics.truncate_to([])


def _train_batches(data: TrainData, tcfg: TrainConfig, fit: _Fit, seed: int, epoch: int,
                   loader: StreamLoader | None) -> Any:
    if loader is not None:
        return loader.epoch(epoch)
    return iterate_batches(data.train, tcfg.batch_size, shuffle=True, generator=epoch_generator(seed, epoch),
                           augment=tcfg.augment, drop_last=True, shard=fit.env, normalize=False)


def _train_epoch(fit: _Fit, batches: Any, tcfg: TrainConfig, crit: nn.Module, bar: Any,
                 n_steps: int | None = None) -> dict[str, float]:
    """One epoch of optimizer steps (`n_steps`, default a whole epoch) advancing the run's bar (one bar for
    the whole run: steps of all epochs, rate and ETA); returns loss, accuracy and throughput over all ranks."""
    model, compute = fit.model, fit.compute
    model.train()
    n_steps = fit.steps_per_epoch if n_steps is None else n_steps
    seen = 0
    correct = torch.zeros((), dtype=torch.int64, device=compute.device)  # summed on the device: no sync per step
    loss_sum = torch.zeros((), dtype=torch.float64, device=compute.device)
    clip = (model.parameters(), tcfg.grad_clip) if tcfg.grad_clip else None
    t0 = time.perf_counter()
    for step, (x, y) in enumerate(batches):
        if step >= n_steps:
            break
        x, y = compute.batch(x), compute.labels(y)
        with compute.autocast():
            logits = model(x)
            loss = crit(logits, y)
        fit.opt.zero_grad(set_to_none=True)
        compute.backward_and_step(loss, [fit.opt], clip=clip)
        fit.sched.step()
        if fit.ema is not None:
            fit.ema.update(fit.net)
        seen += len(y)
        correct += (logits.argmax(1) == y).sum()
        loss_sum += loss.detach().double() * len(y)
        if bar is not None:
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{float(loss_sum) / seen:.3f}", acc=f"{int(correct) / seen:.3f}", refresh=False)
    if compute.is_cuda:
        torch.cuda.synchronize(compute.device)
    secs = time.perf_counter() - t0
    seen, correct_n, loss_total = all_reduce_sums([seen, int(correct), float(loss_sum)], fit.env)
    return {"train_loss": loss_total / max(1, seen), "train_top1": correct_n / max(1, seen), "epoch_s": secs,
            "images_per_s": seen / max(secs, 1e-9)}


def fit(model: nn.Module, data: TrainData, tcfg: TrainConfig, run_dir: Path, *, seed: int = 0,
        resume: bool = False, desc: str = "train", compute: Compute | None = None, env: DistEnv | None = None,
        dcfg: DistConfig | None = None, criterion: nn.Module | None = None, key: str = "train",
        learns_after: int = MIN_TRAIN_STEPS) -> dict[str, Any]:
    """Train `model` for the plan's steps (`training.budget.plan_training`: `key` names the config node,
    `learns_after` the step count below which it warns), checkpointing each epoch; returns the final
    model (on the CPU), test figures and history. `compute` (device, AMP) defaults to fp32 on the CPU;
    `env` to the current process group (DDP under torchrun: every rank calls this, only rank 0 writes).
    `criterion` replaces the label-smoothed cross-entropy (e.g. a margin loss for embedders)."""
    compute = compute or Compute(torch.device("cpu"), None, tcfg.channels_last)
    env = env or current_env()
    dcfg = dcfg or DistConfig()
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    plan = plan_training(tcfg, len(data.train), env.world_size, key=key, learns_after=learns_after)
    for note in plan.notes:
        log.info("%s: %s", desc, note)
    for warning in plan.warnings if env.is_main else ():
        log.warning("%s: %s", desc, warning)
    tcfg = plan.apply(tcfg)
    state = _setup(model, plan, tcfg, compute, env, dcfg)
    metrics = JsonLines(run_dir / "metrics.jsonl")
    _resume_or_start(state, run_dir, metrics, resume)
    crit = criterion or nn.CrossEntropyLoss(label_smoothing=tcfg.label_smoothing)
    stream = isinstance(data, StreamingData)
    train_loader = StreamLoader(data, data.train, tcfg.batch_size, train=True, augment=tcfg.augment, env=env,
                                device=compute.device, max_steps=state.steps_per_epoch) if stream else None

    def split(which: str) -> Split | StreamLoader:
        if not stream:
            return getattr(data, which)
        return StreamLoader(data, getattr(data, which), tcfg.eval_batch_size * env.world_size, train=False, env=env,
                            device=compute.device)

    val_split = split("val")
    t0 = time.perf_counter()
    left = sum(plan.steps_in_epoch(e) for e in range(state.start_epoch, tcfg.epochs))
    bar = progress(left, f"{desc} ({plan.total_steps} steps)", unit="step") if env.is_main and left else None
    for epoch in range(state.start_epoch, tcfg.epochs):
        torch.manual_seed(rank_seed(seed, env, epoch))  # dropout stream per rank, replayable on resume
        rec = _train_epoch(state, _train_batches(data, tcfg, state, seed, epoch, train_loader), tcfg, crit,
                           bar, plan.steps_in_epoch(epoch))
        val = evaluate(state.ema.module if state.ema else state.net, val_split, tcfg.eval_batch_size,
                       compute=compute, env=env)
        rec = {"epoch": epoch + 1, "step": min(plan.total_steps, (epoch + 1) * plan.steps_per_epoch), **rec,
               "val_top1": val["top1"], "val_top5": val["top5"], "val_loss": val["loss"],
               "lr": state.opt.param_groups[0]["lr"]}
        if env.is_main:
            metrics.append(rec)
            atomic_torch_save(state.state(epoch + 1, state.wall_before + time.perf_counter() - t0),
                              run_dir / CKPT_NAME)
        log.debug("%s epoch %d/%d: loss %.4f train %.4f val %.4f (%.0f img/s)", desc, epoch + 1, tcfg.epochs,
                 rec["train_loss"], rec["train_top1"], rec["val_top1"], rec["images_per_s"])
        if env.enabled:  # replicas take identical steps; a mismatch is a bug to stop on, not to train through
            check_same_on_all_ranks(weights_digest(state.net), env, f"the weights after epoch {epoch + 1}")
        barrier(env)  # no rank runs ahead of the checkpoint it would resume from
    if bar is not None:
        bar.close()
    final = state.ema.module if state.ema is not None else state.net
    test = evaluate(final, split("test"), tcfg.eval_batch_size, compute=compute, env=env, per_image=True)
    final = revert_sync_batchnorm(final).to("cpu")
    history = broadcast_object(metrics.read() if env.is_main else None, env)
    return {"model": final, "test": test, "history": history,
            "train_wall_s": state.wall_before + time.perf_counter() - t0, "compute": compute.describe(),
            "world_size": env.world_size, "plan": plan.to_dict()}


# ---------------------------------------------------------------------------------- the job
InitWeights = Callable[[nn.Module, ArchSpec, str], None]


def train_model(arch: str | Path | ArchSpec, train: TrainConfig, data: DataConfig | TrainData,
                run_dir: str | Path, *, proxy: ProxyConfig | None = None, seed: int = 0, resume: bool = False,
                runtime: Runtime | None = None, supernet: str | Path | None = None,
                inherit: InitWeights | None = None, latency_resolution: int = 224) -> dict[str, Any]:
    """Train and test a fixed architecture: `model.pt`, `arch.json`, `metrics.jsonl`, `summary.json`.

    `arch` is a reference-net name, an `arch.json` or an `ArchSpec` (re-targeted to the data's classes
    and resolution); `data` a `DataConfig` (decoded here) or data already decoded; `proxy` the training
    geometry below the deployment resolution (the same for every model compared); `supernet` +
    `inherit(model, arch, supernet)` initialise from a search's supernet (the search package provides
    `inherit`). Under torchrun every rank runs this; rank 0 writes the files and every rank returns the
    summary."""
    runtime = runtime or Runtime()
    env = env_from_torchrun()
    # the device is checked first: `device=cuda` on a machine without one fails before any decoding
    compute = resolve_compute(runtime.device, runtime.amp, local_rank=env.local_rank,
                              channels_last=train.channels_last)
    job = _TrainJob(arch, train, Path(run_dir), proxy or ProxyConfig(), seed, resume, supernet, inherit,
                    latency_resolution)
    with process_group(runtime.dist, compute.device, env) as env:
        set_threads(runtime.threads)
        seed_everything(seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
        if isinstance(data, DataConfig):
            data = load_train_data(data, seed, env)
        return _train_model(job, data, compute, env, runtime.dist)


@dataclass(frozen=True)
class _TrainJob:
    arch: str | Path | ArchSpec
    train: TrainConfig
    run_dir: Path
    proxy: ProxyConfig
    seed: int
    resume: bool
    supernet: str | Path | None
    inherit: InitWeights | None
    latency_resolution: int


def _train_model(job: _TrainJob, data: TrainData, compute: Compute, env: DistEnv, dcfg: DistConfig) -> dict[str, Any]:
    run_dir, tcfg = job.run_dir, job.train
    arch = resolve_arch(job.arch, data.num_classes, data.resolution)
    pc = job.proxy
    proxy = proxy_for(arch, data.resolution, pc.min_map, pc.drop.name, pc.strides.name)
    model = build_model(proxy.apply(arch), dropout=tcfg.dropout)  # trained geometry; arch keeps the design's
    if job.supernet:
        if job.inherit is None:
            raise ConfigError("initialising from a supernet needs the search's `inherit` function "
                              "(nas.superkernel.inherit_weights)")
        job.inherit(model, arch, str(job.supernet))
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        arch.save(run_dir / "arch.json")
    result = fit(model, data, tcfg, run_dir, seed=job.seed, resume=job.resume, desc=arch.name or "train",
                 compute=compute, env=env, dcfg=dcfg)
    final = result["model"]
    if env.is_main:
        save_model(run_dir / MODEL_NAME, final, arch, {"name": data.name, "resolution": data.resolution,
                                                       "classes": data.classes}, {"proxy": proxy.to_dict()})
    deploy = arch.replace(resolution=job.latency_resolution)
    hist = result["history"]
    summary = {
        "arch": arch.to_dict(), "arch_string": arch.to_string(), "params": count_params(final),
        "macs": count_macs(final, arch.resolution, arch.in_channels),
        "macs_at_deploy_resolution": count_macs(build_model(deploy), deploy.resolution),
        "deploy_resolution": deploy.resolution, "test_top1": result["test"]["top1"],
        "test_top5": result["test"]["top5"], "test_loss": result["test"]["loss"],
        "test_correct": result["test"].get("correct"),  # per test image, for intervals over test images
        "val_top1": hist[-1]["val_top1"] if hist else None, "epochs": result["plan"]["epochs"],
        "budget": result["plan"], "curve": [{"step": r.get("step"), "val_top1": r["val_top1"]} for r in hist],
        "train_wall_s": result["train_wall_s"],
        "images_per_s": sum(r["images_per_s"] for r in hist) / len(hist) if hist else None,
        "data": data.summary(), "seed": job.seed, "init": "inherit" if job.supernet else "scratch",
        "versions": versions(), "proxy": proxy.to_dict(), "proxy_description": proxy.describe(arch),
        "compute": result["compute"], "world_size": result["world_size"],
    }
    if env.is_main:
        write_json_atomic(run_dir / "summary.json", summary)
    barrier(env)  # the files exist when any rank returns
    return summary
