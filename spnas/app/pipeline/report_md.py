"""`report.md` from `report.json`'s content: headline verdicts first, then the evidence behind them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spnas.app.pipeline.config import PipelineAppConfig

from spnas.app.pipeline.evidence import METRICS, ONE_SEED


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
    ph = "" if not photos else f"; photos [{100 * photos['ci_low']:+.1f}, {100 * photos['ci_high']:+.1f}]"
    if d.get("ci_low") is None:
        return (f"{100 * d['mean']:+.2f} ({ONE_SEED})" if len(d.get("seeds") or []) < 2 else
                f"{100 * d['mean']:+.2f}") + ph
    return f"{100 * d['mean']:+.2f} [{100 * d['ci_low']:+.2f}, {100 * d['ci_high']:+.2f}]{ph}"


def markdown(cfg: PipelineAppConfig, rep: dict[str, Any]) -> str:
    """report.md."""
    lines = _intro(cfg, rep) + _headline(rep) + _landing(rep) + _budget(rep) + _per_winner(rep)
    lines += _spread(rep) + _models(rep) + _seed_layout(rep) + _fleet(rep) + _exports(rep) + _plots(rep)
    lines += _provenance(rep)
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
            f"model's fine-tuned embedder. Each difference also has a 95% paired bootstrap interval over the test "
            f"photos (\"photos [...]\").", "", _noise_line(rep), ""]
    return out


def _noise_line(rep: dict[str, Any]) -> str:
    """What the intervals count and how many verdicts the report draws."""
    fam = rep.get("family") or {}
    if len(rep["seeds"]) < 2:
        return (f"**One training seed: no interval, no verdict.** Every difference below is a single measurement; "
                f"training another seed moves a model by points, so none of them says which model is better.")
    return ("Intervals are 95% and count every noise the comparison has: the training seeds, the finite test set "
            "(differences are paired by seed key and by test image) and, against the random controls, the random "
            "nets drawn (a sample of the space at the winner's latency); Student-t at the degrees of freedom of "
            f"the least-repeated of them. Verdicts are drawn on proxy top-1 only, with {fam.get('rule', 'Holm')}: "
            "a verdict stands when its Holm-adjusted p-value is below 5%. The other metrics' intervals are "
            "unadjusted and carry no verdict.")


def _headline(rep: dict[str, Any]) -> list[str]:
    out = ["## Headline", ""]
    if len(rep["seeds"]) < 2:
        out += [f"**{ONE_SEED[0].upper()}{ONE_SEED[1:]}**: the differences below are single measurements.", ""]
    for h in rep["headline"]:
        out.append(f"- **{h['text']}**")
    return out + [""]


def _landing(rep: dict[str, Any]) -> list[str]:
    """Target vs landed latency, per winner (the search's own verdict)."""
    out = ["## Where each search landed", "", "| winner | target | landed | off | within tolerance | why |",
           "|---|---|---|---|---|---|"]
    for h in rep["headline"]:
        g = h.get("landing") or {}
        met = {True: "yes", False: "**no**", None: "no target"}[g.get("met")]
        out.append(f"| {h['winner']} | {_f(g.get('target'), '.4g')} {h['cost_unit']} | {_f(g.get('landed'), '.4g')} "
                   f"{h['cost_unit']} | {_f(g.get('off_pct'), '+.1f')}% | {met} (+-{_f(g.get('tolerance_pct'), 'g')}%)"
                   f" | {g.get('reason', '')} |")
    return out + [""]


def _budget(rep: dict[str, Any]) -> list[str]:
    b = rep["budget"]
    out = ["## Does this budget rank capacity?", ""]
    out.append("Yes: every reference family is ordered by width within its intervals, and the models had stopped "
               "improving in the last quarter of training." if b["ranks"] else
               "**No: the comparison is budget-limited.** " + "; ".join(b["reasons"]) + ". Verdicts below rank "
               "training speed at this budget as much as capacity.")
    for w in b.get("short_runs") or []:
        out += ["", f"**Too short to learn:** {w}."]
    if b.get("rule"):
        out += ["", f"The rule: {b['rule']}."]
    out += ["", "| family | widths | mean top-1 | Kendall tau | widest - narrowest (pts) | ordered |",
            "|---|---|---|---|---|---|"]
    for name, o in b["families"].items():
        ordered = ("too few widths to tell" if o.get("too_few") else "yes" if o["ordered"] else "no")
        tau = "n/a" if o.get("too_few") else _f(o["kendall_tau"], ".2f")
        out.append(f"| {name} | {', '.join(f'{w:g}' for w in o['widths'])} | "
                   f"{', '.join(f'{a:.3f}' for a in o['top1'])} | {tau} | "
                   f"{_diff(o.get('span'))} | {ordered} |")
    r = b.get("rise") or {}
    if r:
        band = "n/a" if r.get("ci_low") is None else f"{r['mean']:+.2f} [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]"
        out += ["", f"Last-quarter rise of validation top-1, pooled over {r.get('n', 0)} training runs: {band} points "
                f"against {r.get('rising_pts', b['rising_pts']):g}: **{r.get('state')}**."]
    return out + [""]


def _per_winner(rep: dict[str, Any]) -> list[str]:
    out = ["## Each winner against its controls", "",
           "Winner minus model, in points (95% interval), paired by seed and test image; then \"photos\": the 95% "
           "paired bootstrap interval over the test photos alone. The first row is the "
           "winner against the mean of its random controls (the random nets are a factor of that interval); "
           "the single random nets below it are descriptive (no verdict). A verdict (proxy top-1 only) stands "
           "when its Holm-adjusted p-value is below 5%. Cost: ms on the winner's table (a fleet: its normalised "
           "cost, 1.0 = at budget)."]
    for h in rep["headline"]:
        out += ["", f"### {h['winner']}", "", "| model | role | cost | Δ proxy top-1 | Δ fine-tuned top-1 | Δ R@1 "
                "train gallery | Δ R@1 catalogue | Holm p (top-1) | verdict (top-1) |",
                "|---|---|---|---|---|---|---|---|---|"]
        for c in rep["comparisons"][h["winner"]]:
            d, p = c["diff"], c.get("photos") or {}
            role = {"population": f"mean of {len(c.get('members', []))} random nets"}.get(c["kind"], c["kind"])
            ph = (d.get("top1") or {}).get("p_holm")
            verdict = h["verdicts"].get(c["model"], "n/a") if c["verdict_on"] else "descriptive"
            if c["verdict_on"] and len((d.get("top1") or {}).get("seeds") or []) < 2:
                verdict = ONE_SEED
            out.append(f"| {c['model']} | {role}{' (matched)' if c['matched'] else ''} | {_f(c['cost'], '.4g')} "
                       f"| {_diff(d.get('top1'), p.get('top1'))} | {_diff(d.get('finetune_top1'), p.get('finetune_top1'))}"
                       f" | {_diff(d.get('r1_train'), p.get('r1_train'))} | "
                       f"{_diff(d.get('r1_catalogue'), p.get('r1_catalogue'))} | {_f(ph, '.3f')} | {verdict} |")
        r = h.get("random")
        if r and r.get("percentile") is not None:
            out += ["", f"{h['winner']} is above {r['above']} of its {r['n']} random nets (percentile "
                        f"{r['percentile']:.0f}" + (f"; {r['note']}" if r.get("note") else "") + ")."]
    return out


def _spread(rep: dict[str, Any]) -> list[str]:
    """The search repeated with other seeds: how far its winners move."""
    if not rep.get("search_spread"):
        return []
    out = ["", "## The search's own spread (search seeds)", "",
           "Each device searched again with other seeds (each its own warm-up, on the same data): every winner "
           "retrained like the others. Δ is the repeat minus the run's winner (paired, descriptive)."]
    for sp in rep["search_spread"]:
        out += ["", f"### {sp['soc']}", "", "| winner | search seed | cost | landed | top-1 | above random nets | "
                "Δ top-1 vs the run's winner |", "|---|---|---|---|---|---|---|"]
        for e in sp["searches"]:
            g = e["landing"]
            above = "n/a" if e.get("above_random") is None else f"{e['above_random']} of {e['n_random']}"
            delta = _diff(e.get("minus_primary")) if "minus_primary" in e else "-"
            out.append(f"| {e['model']} | {e['search_seed']} | {_f(e['cost'], '.4g')} | "
                       f"{ {True: 'yes', False: 'no', None: 'n/a'}[g.get('met')]} ({_f(g.get('off_pct'), '+.1f')}%) | "
                       f"{_ci(e['top1'])} | {above} | {delta} |")
        cr, tr = sp["cost_range"], sp["top1_range"]
        out += ["", f"Spread over {len(sp['searches'])} searches: cost {_f(cr and cr[0], '.4g')}-"
                f"{_f(cr and cr[1], '.4g')}, mean top-1 {_f(tr and tr[0], '.3f')}-{_f(tr and tr[1], '.3f')}"
                + ("; every search derived the same network." if sp["same_arch"] else ".")]
    return out


def _models(rep: dict[str, Any]) -> list[str]:
    socs = sorted({s for r in rep["rows"] for s in r["latency_ms"]})
    res = (rep.get("resolution") or {}).get("latency_at", 224)
    out = ["", "## Every model", "", "Mean [95% interval over seeds and test items]; n/a where a model was not "
           f"fine-tuned or photo-searched (controls.photo_search); latency on each table at {res}x{res}.", "",
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
           "search, full training). "
           + ("Ours come from this run's proxy and budget with one training seed: no interval, so not even "
              "directions can be compared." if len(rep["seeds"]) < 2 else
              "Ours come from this run's proxy and budget, with 95% intervals (over seeds and the test photos): a "
              "direction can be compared only where our interval excludes 0; magnitudes cannot."), "",
           "| SoC (year) | winner top-1 | winner ms | MobileNetV2 top-1 | MobileNetV2 ms | "
           "Δ top-1 (pts) | Δ latency | paper's Δ top-1 | paper's Δ latency |", "|---|---|---|---|---|---|---|---|---|"]
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
                                          + (f", drawn with seed {r['seed']}" if r.get("seed") is not None else "")
                                          + (f" ({r['note']})" if r.get("note") else "")
                                          for n, r in prov.get("controls", {}).items()), ""]
    for w, d in (prov.get("random_draws") or {}).items():
        out += [f"Random draws for {w}: {d.get('accepted')} nets within +-{100 * d.get('tolerance', 0):g}% of "
                f"{_f(d.get('target'), '.4g')} in {d.get('draws')} draws (run seed {d.get('run_seed')}); "
                f"{d.get('note') or 'every seed found one'}.", ""]
    repeats = [s for s in prov.get("search_seeds") or [] if s != prov["search_seed"]]
    out += [f"Search seed {prov['search_seed']}" + (f" (searches repeated with seeds {repeats})" if repeats else "")
            + f"; training seeds {prov['seeds']}. Versions: " +
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
