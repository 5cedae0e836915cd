"""`report.md` from `report.json`'s content: headline verdicts first, then the evidence behind them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spnas.app.config import PipelineAppConfig

from .evidence import METRICS


def _f(v: Any, spec: str = ".3f") -> str:
    return "n/a" if v is None else format(v, spec)


def _ci(s: dict[str, Any] | None, scale: float = 1.0, spec: str = ".3f") -> str:
    """`0.412 [0.398, 0.426]` (mean and 95% interval over seeds), or the lone value of one seed."""
    if not s or s.get("mean") is None:
        return "n/a"
    mean = format(scale * s["mean"], spec)
    if s.get("ci_low") is None:
        return f"{mean} (1 seed)"
    return f"{mean} [{format(scale * s['ci_low'], spec)}, {format(scale * s['ci_high'], spec)}]"


def _diff(d: dict[str, Any] | None, photos: dict[str, Any] | None = None) -> str:
    """`+2.10 [+0.40, +3.80]` over seeds, then `photos [-3.1, +6.0]`: the interval the test photos alone give."""
    if not d or d.get("mean") is None:
        return "n/a"
    ci = "" if d.get("ci_low") is None else f" [{100 * d['ci_low']:+.2f}, {100 * d['ci_high']:+.2f}]"
    ph = "" if not photos else f"; photos [{100 * photos['ci_low']:+.1f}, {100 * photos['ci_high']:+.1f}]"
    return f"{100 * d['mean']:+.2f}{ci}{ph}"


def markdown(cfg: PipelineAppConfig, rep: dict[str, Any]) -> str:
    """report.md."""
    lines = _intro(cfg, rep) + _headline(rep) + _budget(rep) + _per_winner(rep) + _models(rep)
    lines += _seed_layout(rep) + _fleet(rep) + _exports(rep) + _plots(rep) + _provenance(rep)
    return "\n".join(lines) + "\n"


def _intro(cfg: PipelineAppConfig, rep: dict[str, Any]) -> list[str]:
    prov = rep["provenance"]
    d = prov["data"]
    tb = prov.get("train_budget") or {}
    rs = rep.get("resolution") or {}
    res, ship = rs.get("latency_at", cfg.search.latency_resolution), rs.get("ships_at")
    out = [f"# spnas report: {cfg.experiment_name}", ""]
    if rep.get("note"):
        out += [f"> {rep['note']}", ""]
    if rep.get("data_caveat"):
        out += [f"> {rep['data_caveat']}", ""]
    size = (f"every model ships at {ship}x{ship} (fine-tuned, exported, timed) and its latency on the tables is "
            f"read at {res}x{res}: one resolution per model" if ship == res else
            f"latency on the tables at {res}x{res} (search.latency_resolution: the search priced networks at this "
            f"size); every model ships at {ship}x{ship} (fine-tuned, exported): its own latency at that size is under "
            f"\"Exported models\"")
    skipped = (f"; {d['skipped_images']} unreadable image(s) skipped" if d.get("skipped_images") else "")
    out += [f"Data: {d.get('name')} at {d.get('resolution')}x{d.get('resolution')} ({d.get('train')} train / "
            f"{d.get('val')} val / {d.get('test')} test images{skipped}); {size}. Every model trained with one "
            f"recipe ({tb.get('total_steps', 'n/a')} steps at batch {tb.get('batch_size', 'n/a')}, "
            f"{tb.get('epochs', 'n/a')} epochs) under one proxy ({prov['proxy']}), once per seed "
            f"{prov['seeds']}, then {prov['finetune']}; photo search on {prov.get('retrieval_split', 'n/a')} with each "
            f"model's fine-tuned embedder. Intervals are 95% Student-t over seeds; differences are paired by seed, "
            f"and each also has a 95% paired bootstrap interval over the test photos (\"photos [...]\").", ""]
    return out


def _headline(rep: dict[str, Any]) -> list[str]:
    out = ["## Headline", ""]
    for h in rep["headline"]:
        out.append(f"- **{h['text']}**")
    return out + [""]


def _budget(rep: dict[str, Any]) -> list[str]:
    b = rep["budget"]
    out = ["## Does this budget rank capacity?", ""]
    out.append("Yes: every reference family is ordered by width at the end, and the models had stopped improving (the "
               f"last-quarter rise of validation top-1, within its 95% interval over runs, at most {b['rising_pts']:g} "
               "points)." if b["ranks"] else
               "**No: the comparison is budget-limited.** " + "; ".join(b["reasons"]) + ". Verdicts below rank "
               "training speed at this budget as much as capacity.")
    for w in b.get("short_runs") or []:
        out += ["", f"**Too short to learn:** {w}."]
    out += ["", "| family | widths | mean top-1 | Kendall tau | ordered |", "|---|---|---|---|---|"]
    for name, o in b["families"].items():
        ordered = ("too few widths to tell" if o.get("too_few") else "yes" if o["ordered"] else "no")
        tau = "n/a" if o.get("too_few") else _f(o["kendall_tau"], ".2f")
        out.append(f"| {name} | {', '.join(f'{w:g}' for w in o['widths'])} | "
                   f"{', '.join(f'{a:.3f}' for a in o['top1'])} | {tau} | {ordered} |")
    return out + [""]


def _per_winner(rep: dict[str, Any]) -> list[str]:
    out = ["## Each winner against its controls", "",
           "Paired over seeds, winner minus model, in points (95% interval over seeds; then \"photos\": the 95% "
           "paired bootstrap interval over the test photos); a verdict needs a seed interval that excludes 0. Cost: ms "
           "on the winner's table (a fleet: its normalised cost, 1.0 = at budget)."]
    for h in rep["headline"]:
        out += ["", f"### {h['winner']}", "", "| model | role | cost | Δ proxy top-1 | Δ fine-tuned top-1 | Δ R@1 "
                "train gallery | Δ R@1 catalogue | verdict (top-1) |", "|---|---|---|---|---|---|---|---|"]
        for c in rep["comparisons"][h["winner"]]:
            d, p = c["diff"], c.get("photos") or {}
            out.append(f"| {c['model']} | {c['kind']}{' (matched)' if c['matched'] else ''} | {_f(c['cost'], '.4g')} "
                       f"| {_diff(d.get('top1'), p.get('top1'))} | {_diff(d.get('finetune_top1'), p.get('finetune_top1'))}"
                       f" | {_diff(d.get('r1_train'), p.get('r1_train'))} | "
                       f"{_diff(d.get('r1_catalogue'), p.get('r1_catalogue'))} | {h['verdicts'].get(c['model'], 'n/a')} |")
    return out


def _models(rep: dict[str, Any]) -> list[str]:
    socs = sorted({s for r in rep["rows"] for s in r["latency_ms"]})
    res = (rep.get("resolution") or {}).get("latency_at", 224)
    out = ["", "## Every model", "", f"Mean [95% interval] over seeds; latency on each table at {res}x{res}.", "",
           "| model | kind | " + " | ".join(f"ms {s}" for s in socs) + " | " +
           " | ".join(label for _, label in METRICS.values()) + f" | params | MACs ({res}) |",
           "|---|---|" + "---|" * (len(socs) + len(METRICS) + 2)]
    for r in rep["rows"]:
        st = r["stats"]
        out.append(f"| {r['model']} | {r['kind']} | " + " | ".join(_f(r["latency_ms"][s], ".2f") for s in socs) +
                   " | " + " | ".join(_ci(st.get(k)) for k in METRICS) +
                   f" | {_f(r['params'] and r['params'] / 1e6, '.2f')} M | {_f(r['macs_224'] and r['macs_224'] / 1e6, '.0f')} M |")
    return out + [""]


def _seed_layout(rep: dict[str, Any]) -> list[str]:
    out = ["## Against the paper's table", "",
           "Per SoC by generation, the winner against MobileNetV2 1.0 on the same table, beside the deltas the "
           "Single-Path NAS paper (Stamoulis et al., 2019) reports for its own per-device searches (ImageNet, 8-epoch "
           "search, full training). Ours come from this run's proxy and budget, with 95% intervals over seeds (and over "
           "the test photos): compare directions, not magnitudes.", "", "| SoC (year) | winner top-1 | winner ms | MobileNetV2 top-1 | "
           "MobileNetV2 ms | Δ top-1 (pts) | Δ latency | paper's Δ top-1 | paper's Δ latency |",
           "|---|---|---|---|---|---|---|---|---|"]
    for t in rep["seed_table"]:
        out.append(f"| {t['soc']} ({_f(t['year'], 'd')}) | {_ci(t['winner_top1'])} | {_f(t['winner_ms'], '.2f')} | "
                   f"{_ci(t['mbv2_top1'])} | {_f(t['mbv2_ms'], '.2f')} | {_diff(t['d_top1'], t.get('d_top1_photos'))} | "
                   f"{_f(t['d_latency_pct'], '+.1f')}% | {_f(t['seed_d_top1_pts'], '+.1f')} | "
                   f"{_f(t['seed_d_latency_pct'], '+.0f')}% |")
    return out + [""]


def _fleet(rep: dict[str, Any]) -> list[str]:
    if not rep.get("fleet"):
        return []
    fo = rep["fleet_objective"]
    devs = fo["devices"]
    out = ["## One net for a fleet", "", f"Objective: {fo['objective']} of R_d / T_d over {', '.join(devs)} (budgets "
           + ", ".join(f"{d} {b:.1f} ms" for d, b in zip(devs, fo["budgets_ms"])) + "). Each winner on every table:",
           "", "| winner | " + " | ".join(f"{d} ms" for d in devs) + " | fleet cost | over budget on | top-1 |",
           "|---|" + "---|" * (len(devs) + 3)]
    for f in rep["fleet"]:
        out.append(f"| {f['winner']} | " + " | ".join(_f(f["ms"][d], ".2f") for d in devs) +
                   f" | {_f(f['fleet_cost'], '.3f')} | {', '.join(f['over_budget_on']) or 'none'} | {_ci(f['top1'])} |")
    return out + [""]


def _exports(rep: dict[str, Any]) -> list[str]:
    """Each exported model at the size it ships at: its input, the size the tables are read at, its measured
    latency on this CPU and its bundle."""
    ex = [r for r in rep["rows"] if r.get("export")]
    if not ex:
        return []
    out = ["## Exported models", "", "| model | input (px) | tables read at (px) | fp32 ms on this CPU (1 thread, at "
           "its input) | fp32 MB | bundle |", "|---|---|---|---|---|---|"]
    for r in ex:
        e = r["export"]
        res = e.get("resolution") or {}
        out.append(f"| {r['model']} | {e.get('input_size')} | {res.get('latency_tables', e.get('input_size'))} | "
                   f"{_f(e.get('measured_native_ms'), '.2f')} | {_f(e.get('fp32_bytes') and e['fp32_bytes'] / 1e6, '.2f')}"
                   f" | {e.get('bundle')} |")
    return out + [""]


def _plots(rep: dict[str, Any]) -> list[str]:
    return ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in rep["plots"]] + [""]


def _provenance(rep: dict[str, Any]) -> list[str]:
    prov = rep["provenance"]
    out = ["## Provenance", "", "| table | device | provenance | method | SoC | date |", "|---|---|---|---|---|---|"]
    for n, t in prov["tables"].items():
        out.append(f"| {n} | {t['device']} | {t['provenance']} | {t.get('method') or t.get('runtime') or ''} | "
                   f"{t.get('soc')} | {t.get('date')} |")
    for soc, info in prov.get("devices", {}).items():
        out += ["", _device_line(soc, info)] if "skipped" in info or info.get("fingerprint_text") else []
    out += ["", "Controls: " + "; ".join(f"{n}: {r.get('off_pct', 0):+.1f}% from its winner's cost"
                                          + (f" ({r['note']})" if r.get("note") else "")
                                          for n, r in prov.get("controls", {}).items()), ""]
    out += [f"Search seed {prov['search_seed']}; training seeds {prov['seeds']}. Versions: " +
            ", ".join(f"{k} {v}" for k, v in prov["versions"].items()), "", "| stage | this run | wall time (s) |",
            "|---|---|---|"]
    for e in prov["stages"]:
        out.append(f"| {e['stage']} | {e['how']} | {e['wall_s']:.0f} |")
    return out


def _device_line(soc: str, info: dict[str, Any]) -> str:
    """What `pipeline.prepare_devices` found for one device: why it was left out, or its table's
    fingerprint and spot check."""
    if "skipped" in info:
        return f"**{soc} skipped**: {info['skipped']}"
    line = f"{soc}: table `{info.get('table')}` measured on {info['fingerprint_text']}"
    if info.get("profiled_now"):
        line += " (profiled in this run)"
    chk = info.get("stale_check")
    if chk:
        names = ", ".join(r["name"] for r in chk["rows"])
        line += f"; spot check on this machine: median drift {chk['drift'] * 100:+.1f}% over {names}"
        if chk.get("warning"):
            line += " (WARNING: beyond tolerance)"
    return line
