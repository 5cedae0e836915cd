"""Single-Path NAS with a device's latency table as the cost term (`spnas-search`).

Per step: the superkernel's STE indicators drive both the forward pass (one path) and the
differentiable latency R (bilinear in the four table rows of each layer, read at the deployment
resolution); the loss is CE + lambda * log R (paper form) or a target form. Weights and
thresholds have their own optimizers; the latency term and threshold updates are off during the
warm-up epochs. Each epoch appends loss, accuracy, predicted latency and every layer's decision
to `search_log.jsonl` and writes an atomic checkpoint, so `resume=true` continues a killed search.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from latency_tables.predictor import SpaceLatency, predict_latency_ms
from latency_tables.table import LatencyTable, available_tables
from search_spaces import ArchSpec, SearchSpace, reference
from spnas.config import LossForm, SearchAppConfig, SearchConfig, to_plain
from spnas.errors import ConfigError, RunStateError, TableError
from spnas.files import JsonLines, write_json_atomic
from training.batches import iterate_batches, num_batches
from training.checkpoints import atomic_torch_save, load_torch
from training.datasets import DataBundle, load_data
from training.loop import evaluate
from training.optim import make_optimizer, param_groups, warmup_cosine
from training.runtime import epoch_generator, progress, seed_everything, set_threads, versions

from .plots import plot_search
from .superkernel import SuperNet

log = logging.getLogger(__name__)


def latency_loss(r_ms: torch.Tensor, form: LossForm, target_ms: float | None) -> torch.Tensor:
    """The latency term (before lambda): log R, |log(R/T)|, or max(0, log(R/T))."""
    if form is LossForm.log:
        return torch.log(r_ms)
    if target_ms is None or target_ms <= 0:
        raise ConfigError(f"search.loss={form.name} needs search.target_ms > 0")
    ratio = torch.log(r_ms / target_ms)
    if form is LossForm.target:
        return ratio.abs()
    return torch.clamp(ratio, min=0)


def resolve_target_ms(scfg: SearchConfig, table: LatencyTable, num_classes: int) -> float | None:
    """The budget T: `search.target_ms`, or a fraction of a reference net's latency on this table."""
    if scfg.target_ms is not None:
        return float(scfg.target_ms)
    if scfg.target_fraction_of is None:
        return None
    ref = reference(scfg.target_fraction_of.arch, resolution=scfg.latency_resolution, num_classes=num_classes)
    return float(scfg.target_fraction_of.fraction) * predict_latency_ms(ref, table)


def predictions_on_all_tables(arch: ArchSpec, resolution: int) -> dict[str, float | None]:
    """Predicted latency of `arch` at the deployment resolution on every shipped table."""
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


@dataclass
class _Search:
    """A search in progress: the supernet, its two optimizers, the schedule and the latency model."""

    net: SuperNet
    opt_w: torch.optim.Optimizer
    opt_t: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    latency: SpaceLatency
    table: LatencyTable
    target_ms: float | None
    steps: int
    start_epoch: int = 0
    wall_before: float = 0.0

    def checkpoint(self, epoch: int, wall: float) -> dict[str, Any]:
        return {"epoch": epoch, "net": self.net.state_dict(), "opt_w": self.opt_w.state_dict(),
                "opt_t": self.opt_t.state_dict(), "sched": self.sched.state_dict(), "wall_s": wall}

    def load(self, st: dict[str, Any]) -> None:
        self.net.load_state_dict(st["net"])
        self.opt_w.load_state_dict(st["opt_w"])
        self.opt_t.load_state_dict(st["opt_t"])
        self.sched.load_state_dict(st["sched"])
        self.start_epoch, self.wall_before = int(st["epoch"]), float(st.get("wall_s", 0.0))


def _build(cfg: SearchAppConfig, data: DataBundle) -> _Search:
    """Supernet, optimizers (weights vs thresholds), schedule, latency model and budget."""
    scfg = cfg.search
    space = SearchSpace.from_dict(to_plain(cfg.space))
    table = LatencyTable.load(cfg.soc.table)
    latency = SpaceLatency(space, table, scfg.latency_resolution, scfg.width, data.num_classes)
    net = SuperNet(space, data.resolution, scfg.width, data.num_classes, scfg.dropout, scfg.threshold_init)
    net.to(memory_format=torch.channels_last)
    thresholds = set(id(p) for p in net.threshold_parameters())
    w_groups = param_groups(net, scfg.weights.weight_decay, exclude=lambda n: n.rsplit(".", 1)[-1].startswith("t_"))
    assert not any(id(p) in thresholds for g in w_groups for p in g["params"])
    opt_w = make_optimizer(w_groups, scfg.weights)
    opt_t = make_optimizer([{"params": net.threshold_parameters(), "weight_decay": 0.0}], scfg.thresholds)
    steps = num_batches(len(data.train), scfg.batch_size, drop_last=True)
    if scfg.max_steps_per_epoch:
        steps = min(steps, scfg.max_steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt_w, warmup_cosine(scfg.epochs * steps, int(0.5 * steps)))
    return _Search(net, opt_w, opt_t, sched, latency, table, resolve_target_ms(scfg, table, data.num_classes), steps)


def _resume_or_start(s: _Search, run_dir: Path, log_file: JsonLines, resume: bool) -> None:
    ckpt = run_dir / "last.pt"
    if not ckpt.exists():
        log_file.truncate_to([])
        return
    if not resume:
        raise RunStateError(f"{run_dir} already holds a search checkpoint; pass resume=true to continue it, "
                            f"or choose another run_dir")
    s.load(load_torch(ckpt, "search checkpoint"))
    log_file.truncate_to([r for r in log_file.read() if r.get("epoch", 0) <= s.start_epoch])
    log.info("resumed search at epoch %d", s.start_epoch)


def _search_epoch(s: _Search, data: DataBundle, cfg: SearchAppConfig, epoch: int,
                  crit: nn.Module) -> dict[str, Any]:
    """One epoch of joint weight / threshold steps; returns its log record (before validation)."""
    scfg = cfg.search
    torch.manual_seed(cfg.seed * 1_000_003 + epoch)
    g = epoch_generator(cfg.seed, epoch)
    searching = epoch >= scfg.warmup_epochs
    lam = scfg.latency_lambda if searching else 0.0
    s.net.train()
    bar = progress(s.steps, f"search {cfg.soc.name} {epoch + 1}/{scfg.epochs}{'' if searching else ' (warm-up)'}")
    n = correct = 0
    ce_sum = lat_sum = 0.0
    t0 = time.perf_counter()
    for step, (x, y) in enumerate(iterate_batches(data.train, scfg.batch_size, shuffle=True, generator=g,
                                                  augment=scfg.augment, drop_last=True)):
        if step >= s.steps:
            break
        ind = s.net.indicators()
        logits = s.net(x, ind)
        ce = crit(logits, y)
        r = s.latency.expected_ms(_stack(ind, "keep"), _stack(ind, "kernel"), _stack(ind, "expand"))
        loss = ce + lam * latency_loss(r, scfg.loss, s.target_ms) if lam > 0 else ce
        s.opt_w.zero_grad(set_to_none=True)
        s.opt_t.zero_grad(set_to_none=True)
        loss.backward()
        s.opt_w.step()
        if searching:
            s.opt_t.step()
        s.sched.step()
        n += len(y)
        correct += int((logits.argmax(1) == y).sum())
        ce_sum += ce.item() * len(y)
        lat_sum += r.item() * len(y)
        bar.update(1)
        bar.set_postfix(ce=f"{ce_sum / n:.3f}", acc=f"{correct / n:.3f}", ms=f"{r.item():.1f}", refresh=False)
    bar.close()
    choices = s.net.choices()
    return {"epoch": epoch + 1, "searching": searching, "lambda": lam, "ce": ce_sum / max(1, n),
            "train_top1": correct / max(1, n), "predicted_ms": s.latency.of_choices(choices),
            "mean_step_ms": lat_sum / max(1, n), "target_ms": s.target_ms, "choices": choices,
            "thresholds": s.net.threshold_values(), "epoch_s": time.perf_counter() - t0}


def _finish(s: _Search, cfg: SearchAppConfig, data: DataBundle, run_dir: Path, history: list[dict[str, Any]],
            wall: float) -> dict[str, Any]:
    """Derived arch, supernet file, plots and `search_summary.json`."""
    scfg = cfg.search
    arch = s.net.derive(name=f"spnas-{cfg.soc.name}")
    arch.save(run_dir / "arch.json")
    atomic_torch_save({"space": s.net.space.to_dict(), "resolution": s.net.resolution, "width": s.net.width,
                       "num_classes": s.net.num_classes, "state_dict": s.net.state_dict(),
                       "choices": s.net.choices()}, run_dir / "supernet.pt")
    plots = plot_search(history, s.net.space, run_dir, f"{cfg.soc.name} ({s.table.provenance} table)")
    summary = {
        "soc": cfg.soc.name, "table": s.table.device, "table_provenance": s.table.provenance,
        "arch": arch.to_dict(), "arch_string": arch.to_string(), "choices": s.net.choices(),
        "predicted_ms": s.latency.of_choices(s.net.choices()), "latency_resolution": scfg.latency_resolution,
        "predicted_ms_all_tables": predictions_on_all_tables(arch, scfg.latency_resolution),
        "loss": scfg.loss.name, "lambda": scfg.latency_lambda, "target_ms": s.target_ms, "epochs": scfg.epochs,
        "warmup_epochs": scfg.warmup_epochs, "val_top1": history[-1]["val_top1"] if history else None,
        "search_wall_s": wall, "data": data.summary(), "seed": cfg.seed, "plots": plots, "versions": versions(),
    }
    write_json_atomic(run_dir / "search_summary.json", summary)
    return summary


def run_search(cfg: SearchAppConfig, data: DataBundle | None = None) -> dict[str, Any]:
    """Run (or resume) a search; returns the summary (derived arch, latencies, accuracy)."""
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    set_threads(cfg.threads)
    seed_everything(cfg.seed)
    data = data if data is not None else load_data(cfg.data, cfg.seed)
    write_json_atomic(run_dir / "config.json", to_plain(cfg))
    s = _build(cfg, data)
    log_file = JsonLines(run_dir / "search_log.jsonl")
    _resume_or_start(s, run_dir, log_file, cfg.resume)
    crit = nn.CrossEntropyLoss(label_smoothing=cfg.search.label_smoothing)
    t0 = time.perf_counter()
    for epoch in range(s.start_epoch, cfg.search.epochs):
        rec = _search_epoch(s, data, cfg, epoch, crit)
        rec["val_top1"] = evaluate(s.net, data.val, cfg.search.eval_batch_size)["top1"]
        log_file.append(rec)
        log.info("search epoch %d/%d: ce %.3f val %.3f predicted %.2f ms on %s | %s", epoch + 1, cfg.search.epochs,
                 rec["ce"], rec["val_top1"], rec["predicted_ms"], s.table.device, " ".join(rec["choices"]))
        atomic_torch_save(s.checkpoint(epoch + 1, s.wall_before + time.perf_counter() - t0), run_dir / "last.pt")
    return _finish(s, cfg, data, run_dir, log_file.read(), s.wall_before + time.perf_counter() - t0)
