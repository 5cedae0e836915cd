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

One warm-up for every phone: the warm-up (weights only, latency term off) does not depend on any
table, so `run_warmup` runs it once and saves the exact state at its last step (weights, optimizer,
schedule, decisions, random-number streams, the open epoch's counters); `run_search(..., warmup=)`
forks from it and takes the same steps an unshared search of the same seed would take.

One net for a fleet: given several tables, the cost is the fleet's normalised latency
(`latency_tables.lookup.fleet.FleetLatency`: the max or the weighted sum of R_d / T_d, budget 1.0).

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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from latency_tables.lookup.fleet import FleetLatency
from latency_tables.lookup.predictor import SpaceLatency, predict_latency_ms
from latency_tables.lookup.table import LatencyTable, usable_tables
from nas.budget import Budget, majority_decision, plan_budget, threshold_lr_factor
from nas.config import FinalistProxy, LossForm, SearchConfig, StartRule, WarmupSampling
from nas.cost import SearchCost, TableCost, latency_loss, resolve_target_ms, target_verdict
from search_spaces import ArchSpec, SearchSpace
from search_spaces.config import ProxyConfig
from search_spaces.proxy import Proxy, proxy_for
from spnas_core.config import to_plain
from spnas_core.errors import ConfigError, RunStateError, TableError
from spnas_core.files import JsonLines, write_json_atomic
from spnas_core.versions import versions
from training.batches import iterate_batches
from training.checkpoints import atomic_torch_save, load_torch
from training.config import DataConfig, DistConfig, Runtime
from training.datasets import DataBundle
from training.devices import Compute, resolve_compute
from training.distributed import (
    DistEnv,
    all_reduce_sums,
    barrier,
    allreduce_gradients,
    broadcast_object,
    check_same_on_all_ranks,
    env_from_torchrun,
    per_rank_batch,
    process_group,
    rank_seed,
    unwrap,
    wrap_ddp,
)
from training.loop import evaluate, load_train_data
from training.optim import make_optimizer, param_groups, warmup_cosine
from training.runtime import epoch_generator, progress, seed_everything, set_threads

from .plots import plot_search
from .superkernel import SuperNet

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------- pure parts
def search_proxy(space: SearchSpace, resolution: int, width: float, num_classes: int, pc: ProxyConfig) -> Proxy:
    """The training geometry of every network of the space at the data resolution."""
    return proxy_for(space.largest(resolution, width, num_classes), resolution, pc.min_map, pc.drop.name,
                     pc.strides.name)


def predictions_on_all_tables(arch: ArchSpec, resolution: int) -> dict[str, float | None]:
    """Predicted latency of `arch` at the deployment resolution on every table found by name."""
    out: dict[str, float | None] = {}
    deploy = arch.replace(resolution=resolution)
    for name, table in usable_tables().items():  # a malformed file is reported once, not at every search
        try:
            out[name] = predict_latency_ms(deploy, table)
        except TableError as e:
            log.debug("no prediction on %s: %s", name, str(e).splitlines()[0])  # e.g. a table of other sizes
            out[name] = None
    return out


# ---------------------------------------------------------------------------------- the search state
WARMUP_FORMAT = "spnas.search-warmup/1"


@dataclass
class Search:
    """A search in progress: the supernet, its two optimizers and schedules, the cost term, the budget.

    `cost` is None while only the warm-up runs (no table is needed before the latency term starts)."""

    net: SuperNet  # the supernet itself: indicators, decisions, checkpoints
    model: nn.Module  # what the forward runs: `net` in DDP under torchrun, else `net`
    compute: Compute
    env: DistEnv
    opt_w: torch.optim.Optimizer
    opt_t: torch.optim.Optimizer
    sched_w: torch.optim.lr_scheduler.LambdaLR
    threshold_lr: Callable[[int], float]  # the thresholds' learning rate at a global step
    cost: SearchCost | None
    tables: list[LatencyTable]
    target: float | None  # ms for one device, 1.0 for a fleet, None without a budget
    budget: Budget
    step: int = 0  # global optimisation steps done
    start_epoch: int = 0
    wall_before: float = 0.0
    window: list[list[str]] = field(default_factory=list)  # per-step decisions of the decision window
    carry: dict[str, Any] | None = None  # a fork's open epoch: counters and random streams at its first step
    start: dict[str, Any] | None = None  # where the threshold decisions started (search.start), once they did
    seed: int = 0

    def checkpoint(self, epoch: int, wall: float) -> dict[str, Any]:
        return {"epoch": epoch, "step": self.step, "net": self.net.state_dict(), "opt_w": self.opt_w.state_dict(),
                "opt_t": self.opt_t.state_dict(), "sched_w": self.sched_w.state_dict(), "wall_s": wall,
                "window": self.window, "budget": self.budget.to_dict(), "scaler": self.compute.state_dict(),
                "start": self.start, "format": "spnas.search-checkpoint/2"}

    def load(self, st: dict[str, Any]) -> None:
        if st.get("budget", {}).get("total_steps") != self.budget.total_steps or st.get("format") != \
                "spnas.search-checkpoint/2":
            raise RunStateError("the checkpoint was written with another search budget or release; start a new "
                                "run_dir (or delete last.pt)")
        self._load_state(st)
        self.step, self.start_epoch = int(st["step"]), int(st["epoch"])
        self.wall_before, self.window = float(st.get("wall_s", 0.0)), [list(w) for w in st.get("window", [])]
        self.start = st.get("start")

    def _load_state(self, st: dict[str, Any]) -> None:
        """Weights, optimizers, schedule and scaler from a checkpoint or a warm-up. A threshold optimizer with
        no state (the thresholds never moved: a warm-up, or a run stopped inside it) is not loaded, so this
        run's own `search.thresholds` stand (one warm-up serves searches whose thresholds move differently);
        one that moved must be of this run's kind."""
        self.net.load_state_dict(st["net"])
        self.opt_w.load_state_dict(st["opt_w"])
        if st["opt_t"].get("state"):
            if set(st["opt_t"]["param_groups"][0]) != set(self.opt_t.state_dict()["param_groups"][0]):
                raise RunStateError("the saved run moved its thresholds with another optimizer than "
                                    "search.thresholds names; keep that setting, or start again for this one")
            self.opt_t.load_state_dict(st["opt_t"])
        self.sched_w.load_state_dict(st["sched_w"])
        self.compute.load_state_dict(st.get("scaler"))

    def fork_from(self, st: dict[str, Any]) -> None:
        """Continue from a shared warm-up's state (its budget must be this search's; the thresholds did not
        move in it, so this search's own threshold optimizer stands: `_load_state`)."""
        if st.get("format") != WARMUP_FORMAT or st.get("budget") != self.budget.to_dict():
            raise RunStateError("the shared warm-up was run with another search budget (steps, batch, warm-up "
                                "share) or release; run the warm-up again for these settings")
        self._load_state(st)
        self.step = int(st["step"])
        self.start_epoch = self.step // self.budget.steps_per_epoch
        self.wall_before = float(st.get("wall_s", 0.0))
        self.carry = st["carry"]


@dataclass(frozen=True)
class SearchJob:
    """What one search is asked to do: its settings, the space, the devices' tables (one, a fleet, or none
    for a warm-up alone), the training geometry, the name its winner takes (`spnas-<name>`), the seed and
    the DDP settings."""

    search: SearchConfig
    space: SearchSpace
    tables: tuple[LatencyTable, ...]
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    name: str = "search"
    seed: int = 0
    dist: DistConfig = field(default_factory=DistConfig)


def build_cost(job: SearchJob, num_classes: int) -> tuple[SearchCost | None, float | None]:
    """The cost term and its budget: one table (ms), a fleet (normalised, budget 1.0), or none."""
    scfg = job.search
    lats = [SpaceLatency(job.space, t, scfg.latency_resolution, scfg.width, num_classes) for t in job.tables]
    if not lats:
        return None, None
    if len(lats) == 1:
        target = resolve_target_ms(scfg, job.tables[0], num_classes)
        return TableCost(lats[0], target), target
    budgets = [resolve_target_ms(scfg, t, num_classes) for t in job.tables]
    if any(b is None for b in budgets):
        raise ConfigError("a fleet search needs a budget on every device: search.target_fraction_of (a fraction of "
                          "a reference net's latency on each table) or search.target_ms")
    return FleetLatency(lats, budgets, scfg.fleet_objective.name, scfg.fleet_weights), 1.0  # type: ignore[arg-type]


def build_search(job: SearchJob, data: DataBundle, compute: Compute | None = None,
                 env: DistEnv | None = None) -> Search:
    """Supernet under the proxy geometry (on the device, in DDP under torchrun), optimizers (weights vs
    thresholds), schedules, cost term and budget."""
    scfg = job.search
    compute = compute or Compute(torch.device("cpu"), None, True)
    env = env or DistEnv()
    cost, target = build_cost(job, data.num_classes)
    proxy = search_proxy(job.space, data.resolution, scfg.width, data.num_classes, job.proxy)
    net = compute.module(SuperNet(job.space, data.resolution, scfg.width, data.num_classes, scfg.dropout,
                                  scfg.threshold_init, proxy))
    budget = plan_budget(scfg, len(data.train), env.world_size)
    per_rank_batch(budget.batch_size, env, "search.batch_size")
    t_names = [n for n, _ in net.named_parameters() if n.rsplit(".", 1)[-1].startswith("t_")]
    model = wrap_ddp(net, env, compute.device, job.dist, ignore=t_names)  # thresholds stay out of DDP
    net = unwrap(model)
    w_groups = param_groups(net, scfg.weights.weight_decay, exclude=lambda n: n.rsplit(".", 1)[-1].startswith("t_"))
    opt_w = make_optimizer(w_groups, scfg.weights)
    opt_t = make_optimizer([{"params": net.threshold_parameters(), "weight_decay": 0.0}], scfg.thresholds)
    sched_w = torch.optim.lr_scheduler.LambdaLR(
        opt_w, warmup_cosine(budget.total_steps, min(budget.warmup_steps, budget.steps_per_epoch // 2)))
    factor = threshold_lr_factor(scfg.threshold_schedule, budget.warmup_steps, budget.total_steps - budget.window_steps)
    net.set_hysteresis(scfg.decision_hysteresis)
    return Search(net, model, compute, env, opt_w, opt_t, sched_w, lambda step: scfg.thresholds.lr * factor(step),
                  cost, list(job.tables), target, budget, seed=job.seed)


def search_step(s: Search, x: torch.Tensor, y: torch.Tensor, scfg: SearchConfig, crit: nn.Module,
                g: torch.Generator) -> dict[str, Any]:
    """One optimisation step (weights always; thresholds and the latency term after warm-up). Returns
    the step's CE, the cost of the path it used (None without a cost term), correct count and decisions."""
    searching = s.step >= s.budget.warmup_steps
    if searching and s.cost is None:
        raise RunStateError("the warm-up is over but this search has no latency table: a warm-up alone stops at "
                            "its last step (run_warmup)")
    if not searching and scfg.warmup_sampling in SAMPLED:
        return _sampled_step(s, x, y, scfg, crit, g)
    if searching and s.step == s.budget.warmup_steps and scfg.start is not StartRule.largest:
        s.start = broadcast_object(_start_point(s, scfg, x) if s.env.is_main else None, s.env)
        s.net.start_at(s.start["choices"], scfg.start_margin)
    drop = scfg.warmup_path_keep if (not searching and scfg.warmup_path_keep is not None) else None
    x, y = s.compute.batch(x), s.compute.labels(y)
    ind = s.net.indicators(path_keep=drop, g=g)  # once per step, outside DDP: identical on every rank
    with s.compute.autocast():
        logits = s.model(x, ind)
    logits = logits.float()
    ce = crit(logits, y)
    r = s.cost.expected(s.net.option_weights(ind)) if s.cost else None
    loss = ce + scfg.latency_lambda * latency_loss(r, scfg.loss, s.target, scfg.target_tolerance) if searching else ce
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
    return {"ce": ce.item(), "ms": r.item() if r is not None else None, "correct": int((logits.argmax(1) == y).sum()),
            "n": len(y), "choices": s.net.choices(ind) if drop is None else None, "searching": searching}


SAMPLED = (WarmupSampling.uniform, WarmupSampling.fair, WarmupSampling.sandwich)


def search_budget(s: Search, scfg: SearchConfig) -> float | None:
    """The cost a finished network may have: the target for a one-sided loss, the target plus its tolerance for a
    two-sided one, None without a target."""
    if s.target is None:
        return None
    if scfg.loss is LossForm.target_one_sided:
        return s.target
    return s.target * (1 + scfg.target_tolerance)


def _start_point(s: Search, scfg: SearchConfig, x: torch.Tensor) -> dict[str, Any]:
    """The network the threshold decisions start from (`search.start`), chosen without training."""
    from .start import deepest, proxy_start

    space = s.net.space
    if scfg.start is StartRule.deepest:
        return {"rule": "deepest", "choices": deepest(space)}
    budget = search_budget(s, scfg)
    assert s.cost is not None
    if budget is None:
        log.warning("search.start=proxy needs a budget (a target loss); starting from the largest network")
        return {"rule": "largest (no budget for start=proxy)", "choices": space.largest_choices()}
    xb = s.compute.batch(x[:64]).float().cpu() if x.dtype == torch.uint8 else x[:64].float().cpu()
    choices, scored = proxy_start(space, s.cost.of_choices, budget, xb, scfg.start_samples, s.seed, s.net.resolution,
                                  s.net.num_classes, s.net.width)
    log.info("threshold decisions start from %s (best of %d networks within %.4g by NASWOT and depth)",
             " ".join(choices), len(scored), budget)
    return {"rule": "proxy", "choices": choices, "budget": budget, "scored": scored[:10], "n": len(scored)}


def warmup_paths(space: SearchSpace, mode: WarmupSampling, g: torch.Generator, n_random: int = 2) -> list[list[str]]:
    """The paths one warm-up step trains (`search.warmup_sampling`), drawn from `g` (replayed on resume):
    uniform, one path; fair, one path per candidate, every layer taking each of its candidates once; sandwich,
    the largest, the smallest and `n_random` uniform paths (the largest first: the others distil from it)."""
    def pick(options: tuple[str, ...]) -> str:
        return options[int(torch.randint(len(options), (1,), generator=g))]

    if mode is WarmupSampling.uniform:
        return [[pick(sl.choices) for sl in space.slots]]
    if mode is WarmupSampling.fair:
        n = max(len(sl.choices) for sl in space.slots)
        orders = []
        for sl in space.slots:  # a layer with fewer candidates fills its last paths with random ones
            perm = [sl.choices[int(i)] for i in torch.randperm(len(sl.choices), generator=g)]
            orders.append(perm + [pick(sl.choices) for _ in range(n - len(perm))])
        return [[o[j] for o in orders] for j in range(n)]
    if mode is WarmupSampling.sandwich:
        return [space.largest_choices(), space.smallest_choices()] + \
            [[pick(sl.choices) for sl in space.slots] for _ in range(n_random)]
    raise ValueError(f"warm-up sampling {mode.name} draws no paths")


def _sampled_step(s: Search, x: torch.Tensor, y: torch.Tensor, scfg: SearchConfig, crit: nn.Module,
                  g: torch.Generator) -> dict[str, Any]:
    """A warm-up step on sampled paths (weights only): each path runs on its own weight slices (under DDP,
    the masked superkernel with hard decisions, so every rank's parameters all take part), one update from
    the paths' mean loss; with the sandwich rule the other paths learn the largest's soft predictions."""
    paths = warmup_paths(s.net.space, scfg.warmup_sampling, g, scfg.sandwich_random)
    x, y = s.compute.batch(x), s.compute.labels(y)
    loss = torch.zeros((), device=x.device)
    first: torch.Tensor | None = None
    soft: torch.Tensor | None = None
    for path in paths:
        route = s.net.indicators_for(path) if s.env.enabled else path
        with s.compute.autocast():
            logits = s.model(x, route)
        logits = logits.float()
        if soft is not None:
            loss = loss + torch.sum(-soft * torch.log_softmax(logits, 1), 1).mean()
        else:
            loss = loss + crit(logits, y)
        if first is None:
            first = logits
            if scfg.warmup_sampling is WarmupSampling.sandwich:
                soft = torch.softmax(first.detach(), 1)
    assert first is not None
    s.opt_w.zero_grad(set_to_none=True)
    s.compute.backward_and_step(loss / len(paths), [s.opt_w])  # the mean: one learning rate means one step size
    s.sched_w.step()
    s.step += 1
    ce = crit(first.detach(), y)
    ms = s.cost.of_choices(paths[0]) if s.cost else None
    return {"ce": ce.item(), "ms": ms, "correct": int((first.argmax(1) == y).sum()), "n": len(y), "choices": None,
            "searching": False}


@dataclass
class _EpochCounters:
    """What an epoch record sums over its steps (kept across a fork, so a forked epoch reads as an unshared one)."""

    n: int = 0
    correct: int = 0
    ce_sum: float = 0.0
    cost_sum: float = 0.0
    cost_n: int = 0
    prev: list[str] | None = None
    flips: list[int] | None = None

    def add(self, r: dict[str, Any], n_layers: int) -> None:
        self.n += r["n"]
        self.correct += r["correct"]
        self.ce_sum += r["ce"] * r["n"]
        if r["ms"] is not None:
            self.cost_sum += r["ms"] * r["n"]
            self.cost_n += r["n"]
        if r["choices"] is not None:
            self.flips = self.flips or [0] * n_layers
            if self.prev is not None:
                self.flips = [f + (a != c) for f, a, c in zip(self.flips, self.prev, r["choices"])]
            self.prev = r["choices"]


def _search_epoch(s: Search, data: DataBundle, job: SearchJob, epoch: int, crit: nn.Module,
                  stop_at: int | None = None, bar: Any = None,
                  on_step: Callable[[int, SuperNet], None] | None = None) -> dict[str, Any]:
    """The steps of one epoch (the last one may be partial; a warm-up alone stops at `stop_at`, a fork
    starts after the steps its warm-up took), advancing `bar` (the run's bar; None: a bar for this epoch);
    returns its log record (before validation)."""
    b = s.budget
    torch.manual_seed(rank_seed(job.seed, s.env, epoch))  # dropout masks per rank, replayable on resume
    g = epoch_generator(job.seed, epoch)
    g_drop = epoch_generator(job.seed, epoch, stream=1)
    first = epoch * b.steps_per_epoch
    done_here = s.step - first  # > 0 only in a fork's first epoch
    end = min(first + b.steps_per_epoch, b.total_steps, stop_at if stop_at is not None else b.total_steps)
    warm = s.step < b.warmup_steps
    own_bar = bar is None
    if own_bar:
        bar = progress(end - s.step if s.env.is_main else 0, f"search {job.name} {epoch + 1}/{b.epochs}"
                       f"{' (warm-up)' if warm else ''}")
    else:
        bar.set_description(f"search {job.name} epoch {epoch + 1}/{b.epochs}{' (warm-up)' if warm else ''}",
                            refresh=False)
    s.net.train()
    acc = _EpochCounters(flips=[0] * s.net.space.num_layers)
    t0 = time.perf_counter()
    batches = iterate_batches(data.train, b.batch_size, shuffle=True, generator=g, augment=job.search.augment,
                              drop_last=True, shard=s.env, normalize=False)
    for i, (x, y) in enumerate(batches):
        if i < done_here:
            continue  # drawn (the data order and augmentation are the unshared search's), already trained
        if i == done_here and s.carry is not None:
            acc = _restore_carry(s, g_drop)
        if first + i >= end:
            break
        r = search_step(s, x, y, job.search, crit, g_drop)
        if on_step is not None:
            on_step(s.step, s.net)
            s.net.train()
        acc.add(r, s.net.space.num_layers)
        if r["choices"] is not None and s.step > b.total_steps - b.window_steps:
            s.window.append(r["choices"])
        bar.update(1)
        bar.set_postfix(ce=f"{acc.ce_sum / acc.n:.3f}", acc=f"{acc.correct / acc.n:.3f}", refresh=False)
    if own_bar:
        bar.close()
    if stop_at is not None and s.step == stop_at and s.step % b.steps_per_epoch:
        s.carry = _open_epoch(acc, g_drop)  # the warm-up ends inside this epoch: what a fork needs to go on
    choices = s.net.choices()
    check_same_on_all_ranks(choices, s.env, "the layer decisions")
    n, correct, ce_sum = all_reduce_sums([acc.n, acc.correct, acc.ce_sum], s.env)  # global figures
    cost_sum, cost_n = all_reduce_sums([acc.cost_sum, acc.cost_n], s.env)
    return {"epoch": epoch + 1, "step": s.step, "searching": not warm or s.step > b.warmup_steps,
            "lambda": job.search.latency_lambda if s.step > b.warmup_steps else 0.0, "ce": ce_sum / max(1, n),
            "train_top1": correct / max(1, n),
            "predicted_ms": s.cost.of_choices(choices) if s.cost else None,
            "predicted_ms_by_table": s.cost.per_device_ms(choices) if s.cost else None,
            "mean_step_ms": cost_sum / cost_n if cost_n else None, "target_ms": s.target, "choices": choices,
            "flips": acc.flips, "threshold_lr": s.opt_t.param_groups[0]["lr"],
            "weight_lr": s.opt_w.param_groups[0]["lr"], "thresholds": s.net.threshold_values(),
            "epoch_s": time.perf_counter() - t0}


def _open_epoch(acc: _EpochCounters, g_drop: torch.Generator) -> dict[str, Any]:
    """The state of an epoch stopped between two steps: its counters and random-number streams."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return {"counters": vars(acc).copy(), "torch_rng": torch.get_rng_state(), "cuda_rng": cuda,
            "drop_rng": g_drop.get_state()}


def _restore_carry(s: Search, g_drop: torch.Generator) -> _EpochCounters:
    """A fork's first epoch: the warm-up's counters and random streams at the step the fork starts at."""
    carry, s.carry = s.carry, None
    torch.set_rng_state(carry["torch_rng"])
    if carry.get("cuda_rng") is not None:
        torch.cuda.set_rng_state_all(carry["cuda_rng"])
    g_drop.set_state(carry["drop_rng"])
    return _EpochCounters(**carry["counters"])


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
    """Cost of the smallest and the largest network of the space."""
    assert s.cost is not None
    space = s.net.space
    return s.cost.of_choices(space.smallest_choices()), s.cost.of_choices(space.largest_choices())


def _finish(s: Search, job: SearchJob, data: DataBundle, run_dir: Path, history: list[dict[str, Any]],
            wall: float) -> dict[str, Any]:
    """Majority decision, derived arch, supernet file, verdict, plots and `search_summary.json`."""
    scfg = job.search
    final = s.window or [s.net.choices()]
    choices, flips, agree = majority_decision(final)
    derived = list(choices)
    picked: dict[str, Any] | None = None
    if scfg.finalists.radius > 0:
        picked = broadcast_object(_pick_finalist(s, job, data, derived, final) if s.env.is_main else None, s.env)
        choices = picked["choices"]
    arch = s.net.derive(name=f"spnas-{job.name}", choices=choices)
    main = s.env.is_main
    if main:
        arch.save(run_dir / "arch.json")
        from training.distributed import revert_sync_batchnorm

        plain = revert_sync_batchnorm(s.net)  # the supernet file holds plain BatchNorm2d whatever the run used
        atomic_torch_save({"space": s.net.space.to_dict(), "resolution": s.net.resolution, "width": s.net.width,
                           "num_classes": s.net.num_classes,
                           "state_dict": {k: v.detach().cpu() for k, v in plain.state_dict().items()},
                           "choices": choices, "proxy": s.net.proxy.to_dict()}, run_dir / "supernet.pt")
    assert s.cost is not None
    cost = s.cost.of_choices(choices)
    smallest, largest = _space_extremes(s)
    fleet = isinstance(s.cost, FleetLatency)
    verdict = target_verdict(s.target, cost, scfg.target_tolerance, choices, smallest, largest, sum(flips),
                             scfg.latency_lambda, unit="x budget" if fleet else s.tables[0].unit,
                             ceiling=scfg.loss is LossForm.target_one_sided, loss=scfg.loss.name)
    provenance = "+".join(sorted({t.provenance for t in s.tables}))
    plots = plot_search(history, s.net.space, run_dir, f"{job.name} ({provenance} table{'s' if fleet else ''})") \
        if main else []
    summary = {
        "soc": job.name, "table": "+".join(t.device for t in s.tables), "table_provenance": provenance,
        "tables": [t.device for t in s.tables], "fleet": s.cost.describe() if fleet else None,  # type: ignore[union-attr]
        "cost": cost, "cost_unit": "x budget (fleet)" if fleet else s.tables[0].unit,
        "arch": arch.to_dict(), "arch_string": arch.to_string(), "choices": choices,
        "last_step_choices": s.net.choices(), "predicted_ms": None if fleet else cost,
        "predicted_ms_by_table": s.cost.per_device_ms(choices), "latency_resolution": scfg.latency_resolution,
        "predicted_ms_all_tables": predictions_on_all_tables(arch, scfg.latency_resolution),
        "loss": scfg.loss.name, "lambda": scfg.latency_lambda, "target_ms": None if fleet else s.target,
        "target": verdict,
        "decision": {"rule": "majority over the last epoch's steps", "window_steps": len(final),
                     "flips": flips, "agreement": agree},
        "derived_choices": derived, "finalists": picked, "start": s.start,
        "budget": s.budget.to_dict(), "proxy": s.net.proxy.to_dict(),
        "proxy_description": s.net.proxy.describe(s.net.space.largest(data.resolution, scfg.width, data.num_classes)),
        "val_top1": history[-1]["val_top1"] if history else None, "search_wall_s": wall, "data": data.summary(),
        "seed": job.seed, "plots": plots, "versions": versions(), "compute": s.compute.describe(),
        "world_size": s.env.world_size,
    }
    if main:
        write_json_atomic(run_dir / "search_summary.json", summary)
    if verdict["met"] is False:
        log.warning("search for %s missed its budget: %s", job.name, verdict["reason"])
    return summary


def _pick_finalist(s: Search, job: SearchJob, data: DataBundle, derived: list[str],
                   window: list[list[str]]) -> dict[str, Any]:
    """The best network around the derived one within the budget (`nas.finalists`), with every finalist's
    figures; the derived network itself when none fits."""
    from .finalists import naswot_of_choices, neighbourhood, rank_finalists, repair_to_budget
    from .ranking import RankingImages

    fcfg = job.search.finalists
    assert s.cost is not None
    budget = search_budget(s, job.search)
    if budget is None:
        budget = s.cost.of_choices(derived)
    n = min(len(data.val), fcfg.recal_images + fcfg.eval_images)
    images = RankingImages.from_split(data.val, min(fcfg.recal_images, n // 2), n - min(fcfg.recal_images, n // 2),
                                      seed=job.seed)
    t0 = time.perf_counter()
    centre, repairs = repair_to_budget(s.net, derived, s.cost.of_choices, budget, images)
    if repairs:
        log.info("%s ended over its budget (%.4g > %.4g): %d single-layer changes bring it within", job.name,
                 s.cost.of_choices(derived), budget, repairs)
    cands = neighbourhood(s.net.space, centre, fcfg.radius)
    extra = list(window) + ([s.start["choices"]] if s.start else [])
    for w in extra:  # the decision window's networks and the start network, if not already there
        if list(w) not in cands:
            cands.append(list(w))
    cands = cands[: fcfg.max_candidates]
    proxy = None
    if fcfg.proxy is not FinalistProxy.none:
        x = images.recal[:64] if len(images.recal) >= 64 else images.held_out[:64]
        proxy = naswot_of_choices(s.net.space, data.resolution, data.num_classes, x, job.seed, s.net.width)
    ranked = rank_finalists(s.net, cands, s.cost.of_choices, budget, images, proxy,
                            depth={FinalistProxy.naswot_depth: "then_cost", FinalistProxy.naswot_layers: "layers"}
                            .get(fcfg.proxy, False), supernet=fcfg.supernet)
    if not ranked:
        log.warning("no finalist of %s fits the budget %.4g: the derived network stays the winner", job.name, budget)
        return {"choices": derived, "budget": budget, "n": 0, "ranked": [], "repairs": repairs,
                "wall_s": time.perf_counter() - t0}
    log.info("finalists of %s: %d within the budget %.4g, best %s (derived %s)", job.name, len(ranked), budget,
             " ".join(ranked[0].choices), " ".join(derived))
    return {"choices": list(ranked[0].choices), "budget": budget, "n": len(ranked), "radius": fcfg.radius,
            "repairs": repairs, "centre": centre,
            "proxy": fcfg.proxy.name, "ranked": [f.to_dict() for f in ranked[:20]],
            "derived_rank": next((i + 1 for i, f in enumerate(ranked) if list(f.choices) == derived), None),
            "wall_s": time.perf_counter() - t0}


# ---------------------------------------------------------------------------------- entry points
def run_search(search: SearchConfig, space: SearchSpace, table: LatencyTable | str | Sequence[LatencyTable | str],
               data: DataConfig | DataBundle, run_dir: str | Path, *, proxy: ProxyConfig | None = None,
               name: str | None = None, seed: int = 0, resume: bool = False, runtime: Runtime | None = None,
               warmup: str | Path | None = None) -> dict[str, Any]:
    """Run (or resume, `resume=True`) a Single-Path NAS search of `space` against a device's latency
    `table` (a `LatencyTable`, a table name or path) or a fleet's (a list of them: the cost is the fleet's
    normalised latency, `search.fleet_objective`), on `data` (a `DataConfig`, decoded here, or data already
    decoded into RAM), writing into `run_dir`; alone or on every rank under torchrun. `warmup`: the
    `warmup.pt` of `run_warmup` with the same settings and seed: the search forks from it instead of
    running its own warm-up. `name` names the device in logs and the winner (`spnas-<name>`; default: the
    table's device, or `fleet`). Returns the summary: derived arch, latencies, verdict, accuracy."""
    runtime = runtime or Runtime()
    refs = [table] if isinstance(table, (LatencyTable, str, Path)) else list(table)
    tables = tuple(t if isinstance(t, LatencyTable) else LatencyTable.load(t) for t in refs)
    if not tables:
        raise ConfigError("run_search needs a latency table (or several, for a fleet)")
    default_name = tables[0].device if len(tables) == 1 else "fleet"
    job = SearchJob(search, space, tables, proxy or ProxyConfig(), name or default_name, seed, runtime.dist)
    return _with_runtime(runtime, data, seed, lambda d, compute, env: _run(job, d, Path(run_dir), resume, compute,
                                                                            env, warmup))


def run_warmup(search: SearchConfig, space: SearchSpace, data: DataConfig | DataBundle, run_dir: str | Path, *,
               proxy: ProxyConfig | None = None, seed: int = 0, runtime: Runtime | None = None,
               on_step: Callable[[int, SuperNet], None] | None = None) -> Path:
    """The warm-up steps alone (weights only, latency term off: no table needed), saved exactly as they
    end (`warmup.pt`) so every device's search, and a fleet's, forks from the same supernet. Resumable
    from its per-epoch checkpoint like a search; returns the path of `warmup.pt`. `on_step(step, supernet)`
    runs after every optimisation step on the main process (e.g. to score the supernet's ranking at chosen
    steps as it trains; it must leave the supernet as it found it, as `nas.ranking` does)."""
    runtime = runtime or Runtime()
    job = SearchJob(search, space, (), proxy or ProxyConfig(), "warm-up", seed, runtime.dist)
    return _with_runtime(runtime, data, seed, lambda d, compute, env: _run_warmup(job, d, Path(run_dir), compute,
                                                                                   env, on_step))


def _with_runtime(runtime: Runtime, data: DataConfig | DataBundle, seed: int,
                  fn: Callable[[DataBundle, Compute, DistEnv], Any]) -> Any:
    env = env_from_torchrun()
    compute = resolve_compute(runtime.device, runtime.amp, local_rank=env.local_rank)  # a clear error before any data
    with process_group(runtime.dist, compute.device, env) as env:
        set_threads(runtime.threads)
        seed_everything(seed)
        if isinstance(data, DataConfig):
            data = load_train_data(data, seed, env)
        if not isinstance(data, DataBundle):
            raise ConfigError("the search decodes its data into RAM (its proxy sets are small): use data.loader=memory")
        return fn(data, compute, env)


def _start(job: SearchJob, data: DataBundle, run_dir: Path, compute: Compute, env: DistEnv,
           log_name: str) -> tuple[Search, JsonLines]:
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / "config.json", {"search": to_plain(job.search), "space": job.space.to_dict(),
                                                    "tables": [t.device for t in job.tables],
                                                    "proxy": to_plain(job.proxy), "name": job.name,
                                                    "seed": job.seed, "data": data.summary()})
    s = build_search(job, data, compute, env)
    for note in s.budget.notes:
        log.info("search budget: %s", note)
    for warning in s.budget.warnings if env.is_main else ():
        log.warning("%s", warning)
    return s, JsonLines(run_dir / log_name)


def _epochs(s: Search, job: SearchJob, data: DataBundle, run_dir: Path, log_file: JsonLines, compute: Compute,
            env: DistEnv, stop_at: int | None = None, on_step: Callable[[int, SuperNet], None] | None = None) -> float:
    """Run epochs from `s.start_epoch` (until the budget, or `stop_at` steps), checkpointing each, under one
    bar for the whole run (steps of every epoch, rate and ETA; not one that vanishes each epoch)."""
    crit = nn.CrossEntropyLoss(label_smoothing=job.search.label_smoothing)
    t0 = time.perf_counter()
    end = stop_at if stop_at is not None else s.budget.total_steps
    epoch = s.start_epoch
    bar = progress(max(0, end - s.step) if env.is_main else 0, f"search {job.name}", unit="step")
    try:
        while s.step < end:
            rec = _search_epoch(s, data, job, epoch, crit, stop_at, bar, on_step if env.is_main else None)
            if s.carry is not None:  # a warm-up alone stopped inside this epoch: the fork finishes and logs it
                break
            rec["val_top1"] = evaluate(s.net, data.val, job.search.eval_batch_size, compute=compute, env=env)["top1"]
            epoch += 1
            if env.is_main:
                log_file.append(rec)
                atomic_torch_save(s.checkpoint(epoch, s.wall_before + time.perf_counter() - t0), run_dir / "last.pt")
            log.debug("search %s epoch %d/%d (step %d/%d): ce %.3f val %.3f cost %s | %s", job.name, epoch,
                      s.budget.epochs, s.step, s.budget.total_steps, rec["ce"], rec["val_top1"],
                      "n/a" if rec["predicted_ms"] is None else f"{rec['predicted_ms']:.3f}", " ".join(rec["choices"]))
    finally:
        bar.close()
    return s.wall_before + time.perf_counter() - t0


def _run(job: SearchJob, data: DataBundle, run_dir: Path, resume: bool, compute: Compute, env: DistEnv,
         warmup: str | Path | None) -> dict[str, Any]:
    s, log_file = _start(job, data, run_dir, compute, env, "search_log.jsonl")
    if warmup is not None and not (run_dir / "last.pt").exists():
        _fork(s, Path(warmup), log_file, env)
    else:
        _resume_or_start(s, run_dir, log_file, resume)
    wall = _epochs(s, job, data, run_dir, log_file, compute, env)
    history = broadcast_object(log_file.read() if env.is_main else None, env)
    return _finish(s, job, data, run_dir, history, wall)


def _fork(s: Search, warmup: Path, log_file: JsonLines, env: DistEnv) -> None:
    """Start from a shared warm-up: its state, and its finished epochs' records with this cost's figures."""
    st = broadcast_object(load_torch(warmup, "shared warm-up") if env.is_main else None, env)
    s.fork_from(st)
    if env.is_main:
        records = []
        for rec in st["log"]:
            cost = s.cost.of_choices(rec["choices"]) if s.cost else None  # type: ignore[union-attr]
            records.append({**rec, "predicted_ms": cost, "target_ms": s.target, "forked_from": str(warmup),
                            "predicted_ms_by_table": s.cost.per_device_ms(rec["choices"]) if s.cost else None})
        log_file.truncate_to(records)
    log.info("forked from the shared warm-up %s at step %d", warmup, s.step)


def _run_warmup(job: SearchJob, data: DataBundle, run_dir: Path, compute: Compute, env: DistEnv,
                on_step: Callable[[int, SuperNet], None] | None = None) -> Path:
    out = run_dir / "warmup.pt"
    if broadcast_object(out.exists(), env):
        return out
    s, log_file = _start(job, data, run_dir, compute, env, "warmup_log.jsonl")
    _resume_or_start(s, run_dir, log_file, resume=True)
    warm = s.budget.warmup_steps
    wall = _epochs(s, job, data, run_dir, log_file, compute, env, stop_at=warm, on_step=on_step)
    if env.is_main:
        atomic_torch_save({**s.checkpoint(s.step // s.budget.steps_per_epoch, wall), "format": WARMUP_FORMAT,
                           "carry": s.carry, "log": log_file.read()}, out)
        (run_dir / "last.pt").unlink(missing_ok=True)  # the warm-up is done: warmup.pt is its result
    barrier(env)
    return out
