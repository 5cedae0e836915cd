"""Single-Path NAS with a device's latency table as the cost term (`spnas-search`).

Per step: the superkernel's STE indicators drive both the forward pass (one path) and the
differentiable latency R (bilinear in the four table rows of each layer, read at the deployment
resolution); the loss is CE + lambda * latency term (`latency_loss`). Weights and thresholds have
their own optimizers.

What makes the result evidence rather than noise:
- proxy geometry (`search_spaces.proxy`): below the deployment resolution the network trains with as
  few stride-2 blocks dropped as keep every searchable layer's input >= 4x4, so the accuracy loss sees
  every decision; the derived architecture keeps the design strides for the table and the export;
- a budget in optimisation steps (the data size sets the epochs; small sets get smaller batches and
  a floor of threshold updates), warm-up first (latency term and threshold updates off; optionally
  random path dropping as in the official code);
- decisions that settle: the thresholds' learning rate decays (cosine) over the searching steps, and
  the derived network is the majority decision over the last epoch, with every flip counted;
- a verdict: whether the search landed within `target_tolerance` of its budget, and if not, why.

Each epoch appends loss, accuracy, predicted latency, every decision statistic, threshold and margin
to `search_log.jsonl` and writes an atomic checkpoint, so `resume=true` continues a killed search.

Devices and processes (`training.devices`, `training.distributed`): `device=auto|cpu|cuda|cuda:N` with
mixed precision for the forward pass (the latency term stays float32); under `torchrun` the supernet
runs in DistributedDataParallel on each rank's slice of the global batch (`search.batch_size` is
global), BatchNorm over the global batch, the thresholds' gradients (outside DDP: they also receive
the latency term) all-reduced, so every rank takes identical decisions (checked every epoch); only
rank 0 writes.

The lambda convention: `search.latency_lambda` multiplies the latency term as written. The official
Single-Path NAS code multiplies log R by 1e3, so its lambda 0.020 is `latency_lambda=20` here with
`loss=log` (the `search=paper` preset).
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from latency_tables.predictor import SpaceLatency, predict_latency_ms
from latency_tables.table import LatencyTable, available_tables
from search_spaces import ArchSpec, SearchSpace, reference
from search_spaces.proxy import Proxy, proxy_for
from search_spaces.space import SKIP, parse_choice
from spnas.config import LossForm, ProxyConfig, SearchAppConfig, SearchConfig, ThresholdSchedule, to_plain
from spnas.errors import ConfigError, RunStateError, TableError
from spnas.files import JsonLines, write_json_atomic
from training.batches import iterate_batches
from training.checkpoints import atomic_torch_save, load_torch
from training.datasets import DataBundle
from training.devices import Compute, resolve_compute
from training.distributed import (
    DistEnv, all_reduce_sums, allreduce_gradients, broadcast_object, check_same_on_all_ranks, env_from_torchrun,
    per_rank_batch, process_group, rank_seed, unwrap, wrap_ddp,
)
from training.loop import evaluate, load_train_data
from training.optim import make_optimizer, param_groups, warmup_cosine
from training.runtime import epoch_generator, progress, seed_everything, set_threads, versions

from .plots import plot_search
from .superkernel import SuperNet

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------- pure parts
def latency_loss(r_ms: torch.Tensor, form: LossForm, target_ms: float | None, smooth: float = 0.0) -> torch.Tensor:
    """The latency term (before lambda): log R, |log(R/T)|, or max(0, log(R/T)).

    With `smooth` > 0 the target forms are Huber-smoothed within +-smooth of the budget (quadratic in
    log(R/T) there): the pull towards T fades as R reaches it, instead of a constant push that makes the
    decisions chatter around the budget."""
    if form is LossForm.log:
        return torch.log(r_ms)
    if target_ms is None or target_ms <= 0:
        raise ConfigError(f"search.loss={form.name} needs search.target_ms > 0")
    ratio = torch.log(r_ms / target_ms)
    if form is LossForm.target_one_sided:
        ratio = torch.clamp(ratio, min=0)
    a = ratio.abs()
    if smooth > 0:
        return torch.where(a < smooth, 0.5 * a * a / smooth, a - 0.5 * smooth)
    return a


def resolve_target_ms(scfg: SearchConfig, table: LatencyTable, num_classes: int) -> float | None:
    """The budget T: `search.target_ms`, or a fraction of a reference net's latency on this table."""
    if scfg.target_ms is not None:
        return float(scfg.target_ms)
    if scfg.loss is LossForm.log or scfg.target_fraction_of is None:
        return None
    ref = reference(scfg.target_fraction_of.arch, resolution=scfg.latency_resolution, num_classes=num_classes)
    return float(scfg.target_fraction_of.fraction) * predict_latency_ms(ref, table)


def search_proxy(space: SearchSpace, resolution: int, width: float, num_classes: int, pc: ProxyConfig) -> Proxy:
    """The training geometry of every network of the space at the data resolution."""
    return proxy_for(space.largest(resolution, width, num_classes), resolution, pc.min_map, pc.drop.name,
                     pc.strides.name)


@dataclass(frozen=True)
class Budget:
    """How long a search runs, derived from the config and the data size."""

    batch_size: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    epochs: int
    window_steps: int  # the final steps whose majority decision is the derived network
    notes: tuple[str, ...] = ()

    @property
    def threshold_updates(self) -> int:
        return self.total_steps - self.warmup_steps

    def to_dict(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "steps_per_epoch": self.steps_per_epoch,
                "total_steps": self.total_steps, "warmup_steps": self.warmup_steps, "epochs": self.epochs,
                "threshold_updates": self.threshold_updates, "decision_window_steps": self.window_steps,
                "notes": list(self.notes)}


def plan_budget(scfg: SearchConfig, n_train: int, world_size: int = 1) -> Budget:
    """Steps, epochs and batch size for `n_train` images: a small set gets a smaller batch (an epoch of
    at least `min_batches_per_epoch` steps) and at least `min_threshold_updates` searching steps. The
    batch is global: an adapted batch is rounded down to a multiple of the ranks."""
    if n_train < 1:
        raise ConfigError("the search's train split is empty: give the data set more images")
    notes = []
    bs = scfg.batch_size
    if n_train // bs < scfg.min_batches_per_epoch:
        bs = max(scfg.min_batch_size, n_train // scfg.min_batches_per_epoch)
        bs = max(1, min(bs, n_train))
        bs = max(world_size, bs - bs % world_size)
        notes.append(f"batch {scfg.batch_size} -> {bs} for {n_train} train images "
                     f"(>= {scfg.min_batches_per_epoch} steps per epoch)")
    spe = max(1, n_train // bs)
    warm = int(round(scfg.warmup_fraction * scfg.steps))
    total = scfg.steps
    if total - warm < scfg.min_threshold_updates:
        total = warm + scfg.min_threshold_updates
        notes.append(f"steps {scfg.steps} -> {total} to reach {scfg.min_threshold_updates} threshold updates")
    window = min(total - warm, max(spe, scfg.decision_window_min_steps))
    return Budget(bs, spe, total, warm, math.ceil(total / spe), window, tuple(notes))


def threshold_lr_factor(schedule: ThresholdSchedule, warmup: int, settle: int) -> Callable[[int], float]:
    """Multiplier of the thresholds' learning rate at a step: 0 in warm-up, then (cosine) a decay that
    reaches 0 at step `settle`, where the decision window starts; the window only trains the weights of
    the settled architecture and shows whether its decisions hold (constant: the base rate throughout)."""
    span = max(1, settle - warmup)
    ramp = max(1, span // 10)  # a short linear ramp: the first searching steps do not shock the decisions

    def f(step: int) -> float:
        if step < warmup:
            return 0.0
        if schedule is ThresholdSchedule.constant:
            return 1.0
        t = min(1.0, (step - warmup) / span)
        return min(1.0, (step - warmup + 1) / ramp) * 0.5 * (1 + math.cos(math.pi * t))

    return f


def majority_decision(window: list[list[str]]) -> tuple[list[str], list[int], list[float]]:
    """Per layer over the window's steps: the most frequent choice (ties: the latest), the number of
    flips (changes between consecutive steps) and the share of steps that agree with the majority."""
    if not window:
        raise ValueError("the decision window is empty")
    n_layers = len(window[0])
    choices, flips, agree = [], [], []
    for li in range(n_layers):
        seq = [w[li] for w in window]
        counts = Counter(seq)
        best = max(counts.values())
        pick = next(c for c in reversed(seq) if counts[c] == best)
        choices.append(pick)
        flips.append(sum(a != b for a, b in zip(seq, seq[1:])))
        agree.append(best / len(seq))
    return choices, flips, agree


def target_verdict(target_ms: float | None, predicted_ms: float, tolerance: float, choices: list[str],
                   smallest_ms: float, largest_ms: float, window_flips: int, lam: float) -> dict[str, Any]:
    """Did the search land within `tolerance` of its budget? If not, the reason a user can act on."""
    if target_ms is None:
        return {"target_ms": None, "predicted_ms": predicted_ms, "met": None,
                "reason": "no latency budget (loss=log): the latency term only pushes down"}
    off = predicted_ms / target_ms - 1
    out = {"target_ms": target_ms, "predicted_ms": predicted_ms, "off_pct": 100 * off,
           "tolerance_pct": 100 * tolerance, "met": abs(off) <= tolerance}
    if out["met"]:
        out["reason"] = f"landed {100 * off:+.1f}% from the budget"
    elif target_ms < smallest_ms * (1 - tolerance):
        out["reason"] = (f"the budget {target_ms:.1f} ms is below the smallest network of the space on this table "
                         f"({smallest_ms:.1f} ms): raise the budget")
    elif target_ms > largest_ms * (1 + tolerance):
        out["reason"] = (f"the budget {target_ms:.1f} ms is above the largest network of the space on this table "
                         f"({largest_ms:.1f} ms): every layer can take its largest choice")
    elif window_flips > 0:
        out["reason"] = (f"decisions were still changing in the last epoch ({window_flips} flips): give the search "
                         f"more steps (search.steps)")
    elif off > 0:
        out["reason"] = (f"ended {100 * off:+.1f}% above the budget: the accuracy term outweighed the latency term "
                         f"(latency_lambda {lam:g}); raise search.latency_lambda or search.steps")
    else:
        out["reason"] = (f"ended {100 * off:+.1f}% below the budget: the latency term pushed past it "
                         f"(latency_lambda {lam:g}); use loss=target, or lower search.latency_lambda")
    return out


def predictions_on_all_tables(arch: ArchSpec, resolution: int) -> dict[str, float | None]:
    """Predicted latency of `arch` at the deployment resolution on every table found by name."""
    out: dict[str, float | None] = {}
    deploy = arch.replace(resolution=resolution)
    for name in available_tables():
        try:
            out[name] = predict_latency_ms(deploy, LatencyTable.load(name))
        except TableError as e:
            log.warning("no prediction on %s: %s", name, str(e).splitlines()[0])
            out[name] = None
    return out


def _stack(ind: list[dict[str, torch.Tensor]], key: str) -> torch.Tensor:
    return torch.stack([i[key] for i in ind])


# ---------------------------------------------------------------------------------- the search state
@dataclass
class Search:
    """A search in progress: the supernet, its two optimizers and schedules, the latency model, budget."""

    net: SuperNet  # the supernet itself: indicators, decisions, checkpoints
    model: nn.Module  # what the forward runs: `net` in DDP under torchrun, else `net`
    compute: Compute
    env: DistEnv
    opt_w: torch.optim.Optimizer
    opt_t: torch.optim.Optimizer
    sched_w: torch.optim.lr_scheduler.LambdaLR
    threshold_lr: Callable[[int], float]  # the thresholds' learning rate at a global step
    latency: SpaceLatency
    table: LatencyTable
    target_ms: float | None
    budget: Budget
    step: int = 0  # global optimisation steps done
    start_epoch: int = 0
    wall_before: float = 0.0
    window: list[list[str]] = field(default_factory=list)  # per-step decisions of the decision window

    def checkpoint(self, epoch: int, wall: float) -> dict[str, Any]:
        return {"epoch": epoch, "step": self.step, "net": self.net.state_dict(), "opt_w": self.opt_w.state_dict(),
                "opt_t": self.opt_t.state_dict(), "sched_w": self.sched_w.state_dict(), "wall_s": wall,
                "window": self.window, "budget": self.budget.to_dict(), "scaler": self.compute.state_dict(),
                "format": "spnas.search-checkpoint/2"}

    def load(self, st: dict[str, Any]) -> None:
        if st.get("budget", {}).get("total_steps") != self.budget.total_steps or st.get("format") != \
                "spnas.search-checkpoint/2":
            raise RunStateError("the checkpoint was written with another search budget or release; start a new "
                                "run_dir (or delete last.pt)")
        self.net.load_state_dict(st["net"])
        self.opt_w.load_state_dict(st["opt_w"])
        self.opt_t.load_state_dict(st["opt_t"])
        self.sched_w.load_state_dict(st["sched_w"])
        self.compute.load_state_dict(st.get("scaler"))
        self.step, self.start_epoch = int(st["step"]), int(st["epoch"])
        self.wall_before, self.window = float(st.get("wall_s", 0.0)), [list(w) for w in st.get("window", [])]


def build_search(cfg: SearchAppConfig, data: DataBundle, compute: Compute | None = None,
                 env: DistEnv | None = None) -> Search:
    """Supernet under the proxy geometry (on the device, in DDP under torchrun), optimizers (weights vs
    thresholds), schedules, latency model and budget."""
    scfg = cfg.search
    compute = compute or Compute(torch.device("cpu"), None, True)
    env = env or DistEnv()
    space = SearchSpace.from_dict(to_plain(cfg.space))
    table = LatencyTable.load(cfg.soc.table)
    latency = SpaceLatency(space, table, scfg.latency_resolution, scfg.width, data.num_classes)
    proxy = search_proxy(space, data.resolution, scfg.width, data.num_classes, cfg.proxy)
    net = compute.module(SuperNet(space, data.resolution, scfg.width, data.num_classes, scfg.dropout,
                                  scfg.threshold_init, proxy))
    budget = plan_budget(scfg, len(data.train), env.world_size)
    per_rank_batch(budget.batch_size, env, "search.batch_size")
    t_names = [n for n, _ in net.named_parameters() if n.rsplit(".", 1)[-1].startswith("t_")]
    model = wrap_ddp(net, env, compute.device, cfg.dist, ignore=t_names)  # thresholds stay out of DDP
    net = unwrap(model)
    w_groups = param_groups(net, scfg.weights.weight_decay, exclude=lambda n: n.rsplit(".", 1)[-1].startswith("t_"))
    opt_w = make_optimizer(w_groups, scfg.weights)
    opt_t = make_optimizer([{"params": net.threshold_parameters(), "weight_decay": 0.0}], scfg.thresholds)
    sched_w = torch.optim.lr_scheduler.LambdaLR(
        opt_w, warmup_cosine(budget.total_steps, min(budget.warmup_steps, budget.steps_per_epoch // 2)))
    factor = threshold_lr_factor(scfg.threshold_schedule, budget.warmup_steps, budget.total_steps - budget.window_steps)
    net.set_hysteresis(scfg.decision_hysteresis)
    return Search(net, model, compute, env, opt_w, opt_t, sched_w, lambda step: scfg.thresholds.lr * factor(step),
                  latency, table, resolve_target_ms(scfg, table, data.num_classes), budget)


def search_step(s: Search, x: torch.Tensor, y: torch.Tensor, cfg: SearchAppConfig, crit: nn.Module,
                g: torch.Generator) -> dict[str, Any]:
    """One optimisation step (weights always; thresholds and the latency term after warm-up). Returns
    the step's CE, hard latency R, correct count and decisions (taken from the indicators it used)."""
    scfg = cfg.search
    searching = s.step >= s.budget.warmup_steps
    drop = scfg.warmup_path_keep if (not searching and scfg.warmup_path_keep is not None) else None
    x, y = s.compute.batch(x), s.compute.labels(y)
    ind = s.net.indicators(path_keep=drop, g=g)  # once per step, outside DDP: identical on every rank
    with s.compute.autocast():
        logits = s.model(x, ind)
    logits = logits.float()
    ce = crit(logits, y)
    r = s.latency.expected_ms(_stack(ind, "keep"), _stack(ind, "kernel"), _stack(ind, "expand"))  # float32
    loss = ce + scfg.latency_lambda * latency_loss(r, scfg.loss, s.target_ms, scfg.target_tolerance) if searching else ce
    s.opt_w.zero_grad(set_to_none=True)
    s.opt_t.zero_grad(set_to_none=True)
    for group in s.opt_t.param_groups:
        group["lr"] = s.threshold_lr(s.step) if searching else 0.0
    env = s.env
    s.compute.backward_and_step(loss, [s.opt_w, s.opt_t] if searching else [s.opt_w],
                                before_step=(lambda: allreduce_gradients(s.net.threshold_parameters(), env))
                                if env.enabled else None)
    if drop is None:
        s.net.commit(ind)
    s.sched_w.step()
    s.step += 1
    return {"ce": ce.item(), "ms": r.item(), "correct": int((logits.argmax(1) == y).sum()), "n": len(y),
            "choices": s.net.choices(ind) if drop is None else None, "searching": searching}


def _search_epoch(s: Search, data: DataBundle, cfg: SearchAppConfig, epoch: int, crit: nn.Module) -> dict[str, Any]:
    """The steps of one epoch (the last one may be partial); returns its log record (before validation)."""
    b = s.budget
    torch.manual_seed(rank_seed(cfg.seed, s.env, epoch))  # dropout masks per rank, replayable on resume
    g = epoch_generator(cfg.seed, epoch)
    g_drop = epoch_generator(cfg.seed, epoch, stream=1)
    n_steps = min(b.steps_per_epoch, b.total_steps - s.step)
    warm = s.step < b.warmup_steps
    bar = progress(n_steps if s.env.is_main else 0, f"search {cfg.soc.name} {epoch + 1}/{b.epochs}"
                   f"{' (warm-up)' if warm else ''}")
    s.net.train()
    n = correct = 0
    ce_sum = lat_sum = 0.0
    prev: list[str] | None = None
    flips = [0] * s.net.space.num_layers
    t0 = time.perf_counter()
    for i, (x, y) in enumerate(iterate_batches(data.train, b.batch_size, shuffle=True, generator=g,
                                               augment=cfg.search.augment, drop_last=True, shard=s.env,
                                               normalize=False)):
        if i >= n_steps:
            break
        r = search_step(s, x, y, cfg, crit, g_drop)
        n += r["n"]
        correct += r["correct"]
        ce_sum += r["ce"] * r["n"]
        lat_sum += r["ms"] * r["n"]
        if r["choices"] is not None:
            if prev is not None:
                flips = [f + (a != c) for f, a, c in zip(flips, prev, r["choices"])]
            prev = r["choices"]
            if s.step > b.total_steps - b.window_steps:
                s.window.append(r["choices"])
        bar.update(1)
        bar.set_postfix(ce=f"{ce_sum / n:.3f}", acc=f"{correct / n:.3f}", ms=f"{r['ms']:.1f}", refresh=False)
    bar.close()
    choices = s.net.choices()
    check_same_on_all_ranks(choices, s.env, "the layer decisions")
    n, correct, ce_sum, lat_sum = all_reduce_sums([n, correct, ce_sum, lat_sum], s.env)  # global figures
    return {"epoch": epoch + 1, "step": s.step, "searching": not warm or s.step > b.warmup_steps,
            "lambda": cfg.search.latency_lambda if s.step > b.warmup_steps else 0.0, "ce": ce_sum / max(1, n),
            "train_top1": correct / max(1, n), "predicted_ms": s.latency.of_choices(choices),
            "mean_step_ms": lat_sum / max(1, n), "target_ms": s.target_ms, "choices": choices, "flips": flips,
            "threshold_lr": s.opt_t.param_groups[0]["lr"], "weight_lr": s.opt_w.param_groups[0]["lr"],
            "thresholds": s.net.threshold_values(), "epoch_s": time.perf_counter() - t0}


def _resume_or_start(s: Search, run_dir: Path, log_file: JsonLines, resume: bool) -> None:
    """Rank 0 decides and reads the checkpoint; every rank loads the same state."""
    ckpt = run_dir / "last.pt"
    exists = broadcast_object(ckpt.exists(), s.env)
    if not exists:
        if s.env.is_main:
            log_file.truncate_to([])
        return
    if not resume:
        raise RunStateError(f"{run_dir} already holds a search checkpoint; pass resume=true to continue it, "
                            f"or choose another run_dir")
    s.load(broadcast_object(load_torch(ckpt, "search checkpoint") if s.env.is_main else None, s.env))
    if s.env.is_main:
        log_file.truncate_to([r for r in log_file.read() if r.get("epoch", 0) <= s.start_epoch])
    log.info("resumed search at epoch %d (step %d)", s.start_epoch, s.step)


def _space_extremes(s: Search) -> tuple[float, float]:
    """Latency of the smallest and the largest network of the space on this table."""
    key = lambda c: parse_choice(c)[::-1]  # noqa: E731 - expansion first, then kernel
    small = [SKIP if SKIP in sl.choices else min((c for c in sl.choices if c != SKIP), key=key)
             for sl in s.net.space.slots]
    big = [max((c for c in sl.choices if c != SKIP), key=key) for sl in s.net.space.slots]
    return s.latency.of_choices(small), s.latency.of_choices(big)


def _finish(s: Search, cfg: SearchAppConfig, data: DataBundle, run_dir: Path, history: list[dict[str, Any]],
            wall: float) -> dict[str, Any]:
    """Majority decision, derived arch, supernet file, verdict, plots and `search_summary.json`."""
    scfg = cfg.search
    final = s.window or [s.net.choices()]
    choices, flips, agree = majority_decision(final)
    arch = s.net.derive(name=f"spnas-{cfg.soc.name}", choices=choices)
    main = s.env.is_main
    if main:
        arch.save(run_dir / "arch.json")
        from training.distributed import revert_sync_batchnorm

        plain = revert_sync_batchnorm(s.net)  # the supernet file holds plain BatchNorm2d whatever the run used
        atomic_torch_save({"space": s.net.space.to_dict(), "resolution": s.net.resolution, "width": s.net.width,
                           "num_classes": s.net.num_classes,
                           "state_dict": {k: v.detach().cpu() for k, v in plain.state_dict().items()},
                           "choices": choices, "proxy": s.net.proxy.to_dict()}, run_dir / "supernet.pt")
    predicted = s.latency.of_choices(choices)
    smallest, largest = _space_extremes(s)
    verdict = target_verdict(s.target_ms, predicted, scfg.target_tolerance, choices, smallest, largest, sum(flips),
                             scfg.latency_lambda)
    plots = plot_search(history, s.net.space, run_dir, f"{cfg.soc.name} ({s.table.provenance} table)") if main else []
    summary = {
        "soc": cfg.soc.name, "table": s.table.device, "table_provenance": s.table.provenance,
        "arch": arch.to_dict(), "arch_string": arch.to_string(), "choices": choices,
        "last_step_choices": s.net.choices(), "predicted_ms": predicted,
        "latency_resolution": scfg.latency_resolution,
        "predicted_ms_all_tables": predictions_on_all_tables(arch, scfg.latency_resolution),
        "loss": scfg.loss.name, "lambda": scfg.latency_lambda, "target_ms": s.target_ms, "target": verdict,
        "decision": {"rule": "majority over the last epoch's steps", "window_steps": len(final),
                     "flips": flips, "agreement": agree},
        "budget": s.budget.to_dict(), "proxy": s.net.proxy.to_dict(),
        "proxy_description": s.net.proxy.describe(s.net.space.largest(data.resolution, scfg.width, data.num_classes)),
        "val_top1": history[-1]["val_top1"] if history else None, "search_wall_s": wall, "data": data.summary(),
        "seed": cfg.seed, "plots": plots, "versions": versions(), "compute": s.compute.describe(),
        "world_size": s.env.world_size,
    }
    if main:
        write_json_atomic(run_dir / "search_summary.json", summary)
    if verdict["met"] is False:
        log.warning("search for %s missed its budget: %s", cfg.soc.name, verdict["reason"])
    return summary


def run_search(cfg: SearchAppConfig, data: DataBundle | None = None) -> dict[str, Any]:
    """Run (or resume) a search on `cfg.device`, alone or on every rank under torchrun; returns the
    summary (derived arch, latencies, verdict, accuracy)."""
    env = env_from_torchrun()
    compute = resolve_compute(cfg.device, cfg.amp, local_rank=env.local_rank)  # a clear error before any data
    with process_group(cfg.dist, compute.device, env) as env:
        return _run_search(cfg, data, compute, env)


def _run_search(cfg: SearchAppConfig, data: DataBundle | None, compute: Compute, env: DistEnv) -> dict[str, Any]:
    run_dir = Path(cfg.run_dir)
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    set_threads(cfg.threads)
    seed_everything(cfg.seed)
    data = data if data is not None else load_train_data(cfg.data, cfg.seed, env)
    if not isinstance(data, DataBundle):
        raise ConfigError("the search decodes its data into RAM (its proxy sets are small): use data.loader=memory")
    if env.is_main:
        write_json_atomic(run_dir / "config.json", to_plain(cfg))
    s = build_search(cfg, data, compute, env)
    for note in s.budget.notes:
        log.info("search budget: %s", note)
    log_file = JsonLines(run_dir / "search_log.jsonl")
    _resume_or_start(s, run_dir, log_file, cfg.resume)
    crit = nn.CrossEntropyLoss(label_smoothing=cfg.search.label_smoothing)
    t0 = time.perf_counter()
    for epoch in range(s.start_epoch, s.budget.epochs):
        rec = _search_epoch(s, data, cfg, epoch, crit)
        rec["val_top1"] = evaluate(s.net, data.val, cfg.search.eval_batch_size, compute=compute, env=env)["top1"]
        if env.is_main:
            log_file.append(rec)
            atomic_torch_save(s.checkpoint(epoch + 1, s.wall_before + time.perf_counter() - t0), run_dir / "last.pt")
        log.info("search epoch %d/%d (step %d/%d): ce %.3f val %.3f predicted %.2f ms on %s | %s", epoch + 1,
                 s.budget.epochs, s.step, s.budget.total_steps, rec["ce"], rec["val_top1"], rec["predicted_ms"],
                 s.table.device, " ".join(rec["choices"]))
    history = broadcast_object(log_file.read() if env.is_main else None, env)
    return _finish(s, cfg, data, run_dir, history, s.wall_before + time.perf_counter() - t0)
