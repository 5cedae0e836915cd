"""`spnas-search`: Single-Path NAS with a device's latency table as the cost term.

    spnas-search soc=sd845 data=cifar10 search.lambda=0.02 search.epochs=8

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
from pathlib import Path
from typing import Any

import torch
from torch import nn

from latency_tables.predictor import SpaceLatency, predict_latency_ms
from latency_tables.table import LatencyTable, available_tables
from search_spaces import ArchSpec, SearchSpace

from .data import DataBundle, iterate_batches, load_data, num_batches
from .runtime import JsonLines, atomic_torch_save, atomic_write_json, epoch_generator, load_torch, seed_everything, versions
from .superkernel import SuperNet
from .train import evaluate, make_optimizer, param_groups, progress, warmup_cosine

log = logging.getLogger(__name__)

LOSS_FORMS = ("log", "target", "target_one_sided")


def latency_loss(r_ms: torch.Tensor, form: str, target_ms: float | None) -> torch.Tensor:
    """The latency term (before lambda): log R, |log(R/T)|, or max(0, log(R/T))."""
    if form == "log":
        return torch.log(r_ms)
    if target_ms is None or target_ms <= 0:
        raise ValueError(f"search.loss={form} needs search.target_ms > 0")
    ratio = torch.log(r_ms / target_ms)
    if form == "target":
        return ratio.abs()
    if form == "target_one_sided":
        return torch.clamp(ratio, min=0)
    raise ValueError(f"search.loss must be one of {', '.join(LOSS_FORMS)}; got '{form}'")


def _stack(ind: list[dict[str, torch.Tensor]], key: str) -> torch.Tensor:
    return torch.stack([i[key] for i in ind])


def predictions_on_all_tables(arch: ArchSpec, resolution: int) -> dict[str, float | None]:
    """Predicted latency of `arch` at the deployment resolution on every shipped table."""
    out: dict[str, float | None] = {}
    deploy = arch.replace(resolution=resolution)
    for name in available_tables():
        try:
            out[name] = predict_latency_ms(deploy, LatencyTable.load(name))
        except (ValueError, KeyError) as e:
            log.warning("no prediction on %s: %s", name, str(e).splitlines()[0])
            out[name] = None
    return out


def search(cfg: dict[str, Any], data: DataBundle | None = None) -> dict[str, Any]:
    """Run (or resume) a search; returns the summary (derived arch, latencies, accuracy)."""
    run_dir = Path(cfg["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    seed = int(cfg.get("seed", 0))
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    seed_everything(seed)
    scfg = dict(cfg["search"])
    soc = dict(cfg["soc"])
    if data is None:
        data_cfg = dict(cfg["data"])
        data_cfg.setdefault("seed", seed)
        data = load_data(data_cfg)
    space = SearchSpace.from_dict(cfg["space"])
    table = LatencyTable.load(soc.get("table", soc["name"]))
    width = float(scfg.get("width", 1.0))
    lat_res = int(scfg.get("latency_resolution", 224))
    latency = SpaceLatency(space, table, lat_res, width, data.num_classes)
    form = str(scfg.get("loss", "log"))
    target = scfg.get("target_ms")
    if target is None and scfg.get("target_fraction_of"):
        # e.g. target 0.8 x MobileNetV2 on this device: a budget that follows the table
        from search_spaces import reference

        ref = reference(scfg["target_fraction_of"]["arch"], resolution=lat_res, num_classes=data.num_classes)
        target = float(scfg["target_fraction_of"]["fraction"]) * predict_latency_ms(ref, table)
    lam = float(scfg["lambda"])
    epochs, warm = int(scfg["epochs"]), int(scfg.get("warmup_epochs", 0))
    bs = int(scfg["batch_size"])

    net = SuperNet(space, data.resolution, width, data.num_classes, float(scfg.get("dropout", 0.0)),
                   float(scfg.get("threshold_init", 0.0)))
    net.to(memory_format=torch.channels_last)
    wcfg = dict(scfg["weights"])
    thresholds = set(id(p) for p in net.threshold_parameters())
    w_groups = param_groups(net, float(wcfg.get("weight_decay", 4e-5)),
                            exclude=lambda n: n.rsplit(".", 1)[-1].startswith("t_"))
    assert not any(id(p) in thresholds for g in w_groups for p in g["params"])
    opt_w = make_optimizer(w_groups, wcfg)
    tcfg = dict(scfg["thresholds"])
    opt_t = make_optimizer([{"params": net.threshold_parameters(), "weight_decay": 0.0}], tcfg)
    steps = num_batches(len(data.train), bs, drop_last=True)
    if scfg.get("max_steps_per_epoch"):
        steps = min(steps, int(scfg["max_steps_per_epoch"]))
    sched = torch.optim.lr_scheduler.LambdaLR(opt_w, warmup_cosine(epochs * steps, int(0.5 * steps)))
    crit = nn.CrossEntropyLoss(label_smoothing=float(scfg.get("label_smoothing", 0.1)))
    log_file = JsonLines(run_dir / "search_log.jsonl")
    ckpt = run_dir / "last.pt"
    start, wall_before = 0, 0.0
    if ckpt.exists():
        if not cfg.get("resume"):
            raise FileExistsError(f"{run_dir} already holds a search checkpoint; pass resume=true to continue it, "
                                  f"or choose another run_dir")
        st = load_torch(ckpt, "search checkpoint")
        net.load_state_dict(st["net"])
        opt_w.load_state_dict(st["opt_w"])
        opt_t.load_state_dict(st["opt_t"])
        sched.load_state_dict(st["sched"])
        start, wall_before = int(st["epoch"]), float(st.get("wall_s", 0.0))
        log_file.truncate_to([r for r in log_file.read() if r.get("epoch", 0) <= start])
        log.info("resumed search at epoch %d", start)
    else:
        log_file.truncate_to([])

    t0 = time.perf_counter()
    for epoch in range(start, epochs):
        torch.manual_seed(seed * 1_000_003 + epoch)
        g = epoch_generator(seed, epoch)
        searching = epoch >= warm
        lam_e = lam if searching else 0.0
        net.train()
        bar = progress(steps, f"search {soc['name']} {epoch + 1}/{epochs}{'' if searching else ' (warm-up)'}")
        n = correct = 0
        ce_sum = lat_sum = 0.0
        te = time.perf_counter()
        for step, (x, y) in enumerate(iterate_batches(data.train, bs, shuffle=True, generator=g,
                                                      augment=scfg.get("augment"), drop_last=True)):
            if step >= steps:
                break
            ind = net.indicators()
            logits = net(x, ind)
            ce = crit(logits, y)
            r = latency.expected_ms(_stack(ind, "keep"), _stack(ind, "kernel"), _stack(ind, "expand"))
            loss = ce + lam_e * latency_loss(r, form, target) if lam_e > 0 else ce
            opt_w.zero_grad(set_to_none=True)
            opt_t.zero_grad(set_to_none=True)
            loss.backward()
            opt_w.step()
            if searching:
                opt_t.step()
            sched.step()
            n += len(y)
            correct += int((logits.argmax(1) == y).sum())
            ce_sum += ce.item() * len(y)
            lat_sum += r.item() * len(y)
            bar.update(1)
            bar.set_postfix(ce=f"{ce_sum / n:.3f}", acc=f"{correct / n:.3f}", ms=f"{r.item():.1f}", refresh=False)
        bar.close()
        choices = net.choices()
        r_hard = latency.of_choices(choices)
        val = evaluate(net, data.val, int(scfg.get("eval_batch_size", 500)))
        rec = {"epoch": epoch + 1, "searching": searching, "lambda": lam_e, "ce": ce_sum / max(1, n),
               "train_top1": correct / max(1, n), "val_top1": val["top1"], "predicted_ms": r_hard,
               "mean_step_ms": lat_sum / max(1, n), "target_ms": target, "choices": choices,
               "thresholds": net.threshold_values(), "epoch_s": time.perf_counter() - te}
        log_file.append(rec)
        log.info("search epoch %d/%d: ce %.3f val %.3f predicted %.2f ms on %s | %s", epoch + 1, epochs, rec["ce"],
                 val["top1"], r_hard, table.device, " ".join(choices))
        atomic_torch_save({"epoch": epoch + 1, "net": net.state_dict(), "opt_w": opt_w.state_dict(),
                           "opt_t": opt_t.state_dict(), "sched": sched.state_dict(),
                           "wall_s": wall_before + time.perf_counter() - t0}, ckpt)

    history = log_file.read()
    arch = net.derive(name=f"spnas-{soc['name']}")
    arch.save(run_dir / "arch.json")
    atomic_torch_save({"space": space.to_dict(), "resolution": net.resolution, "width": net.width,
                       "num_classes": net.num_classes, "state_dict": net.state_dict(), "choices": net.choices()},
                      run_dir / "supernet.pt")
    preds = predictions_on_all_tables(arch, lat_res)
    plots = plot_search(history, space, run_dir, f"{soc['name']} ({table.provenance} table)")
    summary = {
        "soc": soc["name"], "table": table.device, "table_provenance": table.provenance,
        "arch": arch.to_dict(), "arch_string": arch.to_string(), "choices": net.choices(),
        "predicted_ms": latency.of_choices(net.choices()), "latency_resolution": lat_res,
        "predicted_ms_all_tables": preds, "loss": form, "lambda": lam, "target_ms": target,
        "epochs": epochs, "warmup_epochs": warm, "val_top1": history[-1]["val_top1"] if history else None,
        "search_wall_s": wall_before + time.perf_counter() - t0, "data": data.summary(), "seed": seed,
        "plots": plots, "versions": versions(),
    }
    atomic_write_json(run_dir / "search_summary.json", summary)
    return summary


CHOICE_COLORS = {"k3_e3": 0, "k3_e6": 1, "k5_e3": 2, "k5_e6": 3, "skip": 4}


def plot_search(history: list[dict[str, Any]], space: SearchSpace, run_dir: Path, title: str) -> list[str]:
    """Predicted latency over epochs, and every layer's decision over epochs (PNG)."""
    if not history:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    epochs = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(7, 6.5), gridspec_kw={"height_ratios": [1, 1.4]})
    a1.plot(epochs, [h["predicted_ms"] for h in history], "o-", label="predicted latency (derived arch)")
    if history[-1].get("target_ms"):
        a1.axhline(history[-1]["target_ms"], color="r", ls="--", label="target")
    a1.set_ylabel("ms")
    a1.set_xlabel("epoch")
    ax2 = a1.twinx()
    ax2.plot(epochs, [h["val_top1"] for h in history], "s-", color="tab:green", label="val top-1")
    ax2.set_ylabel("val top-1")
    a1.legend(loc="upper right", fontsize=7)
    a1.set_title(f"Single-Path NAS search: {title}", fontsize=9)
    names = list(CHOICE_COLORS)
    grid = [[CHOICE_COLORS.get(c, 0) for c in h["choices"]] for h in history]
    cmap = ListedColormap(["#c6dbef", "#6baed6", "#fdae6b", "#e6550d", "#eeeeee"])
    im = a2.imshow(list(map(list, zip(*grid))), aspect="auto", cmap=cmap, vmin=-0.5, vmax=4.5,
                   extent=(epochs[0] - 0.5, epochs[-1] + 0.5, space.num_layers - 0.5, -0.5))
    cb = fig.colorbar(im, ax=a2, ticks=range(5))
    cb.ax.set_yticklabels(names)
    a2.set_xlabel("epoch")
    a2.set_ylabel("searchable layer")
    fig.tight_layout()
    path = run_dir / "search_progress.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [str(path)]
