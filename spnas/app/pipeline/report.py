"""The pipeline report: `report.md`, `report.json`, `report.csv` and PNGs, built only from the stage outputs.

One row per model (winners, search repeats, random controls, the baselines width-scaled to the winners'
latency, the reference nets): mean and 95% interval (over seeds and test images) of proxy top-1,
fine-tuned top-1 and photo-search recall@1, and the predicted latency on every table. Per winner:
where it landed against its latency target, the paired verdicts against its random controls (as a
population) and each reference, Holm-adjusted over the report (`spnas.app.pipeline.evidence`), every difference
also with an interval over the test photos; the search's spread over search seeds; the budget check
that says when the comparison ranks the budget rather than the architectures; the paper's per-SoC
table with ours beside it; the fleet winner beside each per-SoC winner on every table; the exported
models at the resolution they ship at; a caveat on the data given (how small its test split is,
whether it was photographed apart); provenance.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from latency_tables.lookup.table import LatencyTable
from search_spaces import ArchSpec
from spnas.app.pipeline.config import PipelineAppConfig
from spnas_core.errors import TableError
from spnas_core.files import write_bytes_atomic, write_json_atomic
from spnas_core.versions import versions

from spnas.app.pipeline import evidence as E
from spnas.app.pipeline.report_md import markdown
from spnas.app.pipeline.report_plots import make_plots

BASELINE = "mobilenet_v2"
FLEET = "fleet"
PHRASE = {"beats": "beats", "loses to": "loses to", "not distinguishable from": "is not distinguishable from"}

# The paper's own result (Single-Path NAS, Stamoulis et al. 2019, per-device searches on ImageNet against
# MobileNetV2 1.0): winner minus MobileNetV2, in top-1 points and latency percent; with the SoC's
# generation (year of release) the paper's table orders them by. (JSON keys say "seed_": the paper the
# project was seeded from.)
SEED_DELTAS: dict[str, dict[str, float]] = {
    "sd801": {"year": 2014, "top1_pts": 0.1, "latency_pct": -30.0},
    "sd808": {"year": 2015, "top1_pts": 1.3, "latency_pct": -30.0},
    "sd670": {"year": 2018, "top1_pts": 1.4, "latency_pct": -18.0},
    "sd845": {"year": 2018, "top1_pts": 2.7, "latency_pct": 2.0},
}


def _arch(m: Any, resolution: int) -> ArchSpec | None:
    rec = next(iter(m.seeds.values()), {}).get("train")
    return ArchSpec.from_string(rec["arch_string"]).replace(resolution=resolution) if rec else None


def _predict(table: LatencyTable, arch: ArchSpec | None) -> float | None:
    try:
        return table.predict(arch) if arch is not None else None
    except TableError:
        return None


def _fleet_cost(fleet: dict[str, Any] | None, latency: dict[str, float | None]) -> float | None:
    """A model's cost under the fleet winner's objective and budgets (None without a fleet search)."""
    if not fleet or any(latency.get(d) is None for d in fleet["devices"]):
        return None
    ratios = [latency[d] / b for d, b in zip(fleet["devices"], fleet["budgets_ms"])]  # type: ignore[operator]
    return max(ratios) if fleet["objective"] == "max" else sum(w * r for w, r in zip(fleet["weights"], ratios))


def model_rows(cfg: PipelineAppConfig, models: dict[str, Any], tables: dict[str, LatencyTable],
               fleet: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per model: what it is, its latency on every table, its figures over seeds."""
    res = cfg.search.latency_resolution
    rows = []
    for m in models.values():
        arch = _arch(m, res)
        first = next(iter(m.seeds.values()), {})
        latency = {soc: _predict(t, arch) for soc, t in tables.items()}
        rows.append({
            "model": m.name, "kind": m.kind, "soc": m.soc, "roles": m.roles, "arch": first.get("train", {}).get(
                "arch_string"), "latency_ms": latency, "fleet_cost": _fleet_cost(fleet, latency),
            "params": first.get("train", {}).get("params"), "macs_224": first.get("train", {}).get(
                "macs_at_deploy_resolution"), "stats": E.summarize(m.seeds), "seeds": sorted(m.seeds),
            "curve_rise_pts": E.curve_rise(m.seeds), "record": m.record,
            "export": m.exported, "budget": first.get("train", {}).get("budget"),
        })
    return rows


def _cost(row: dict[str, Any], winner: dict[str, Any]) -> float | None:
    """A model's cost as the winner's search priced it: ms on its SoC's table, or the fleet cost."""
    return row["fleet_cost"] if winner["soc"] == FLEET else row["latency_ms"].get(winner["soc"])


ONE_SEED = E.ONE_SEED
POPULATION = "random nets"  # the comparison row of a winner against its random controls as a population


def comparisons(rows: list[dict[str, Any]], models: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Per winner: its random controls as a population (winner minus their mean, the nets a factor of the
    interval), each random net (descriptive: no verdict), the baselines scaled to its latency and every
    reference net, each difference paired by seed key and test image. Verdicts (proxy top-1 only) are
    Holm-adjusted over every winner's comparisons (`E.family_verdicts`)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for w in (r for r in rows if r["kind"] == "spnas"):
        mine = [r for r in rows if r["kind"] in ("random", "scaled") and any(w["model"] in role for role in r["roles"])]
        refs = [r for r in rows if r["kind"] in ("baseline", "family") and r not in mine]
        randoms = [r for r in mine if r["kind"] == "random"]
        wseeds = models[w["model"]].seeds
        out[w["model"]] = []
        if randoms:
            costs = [_cost(r, w) for r in randoms]
            out[w["model"]].append({
                "model": POPULATION, "kind": "population", "matched": True, "members": [r["model"] for r in randoms],
                "cost": sum(costs) / len(costs) if None not in costs else None, "winner_cost": _cost(w, w),
                "verdict_on": True, "diff": E.against_population(wseeds, [models[r["model"]].seeds for r in randoms])})
        for r in mine + refs:
            out[w["model"]].append({
                "model": r["model"], "kind": r["kind"], "matched": r in mine, "cost": _cost(r, w),
                "winner_cost": _cost(w, w), "verdict_on": r["kind"] != "random",
                "diff": E.compare(wseeds, models[r["model"]].seeds),
                "photos": E.photo_intervals(wseeds, models[r["model"]].seeds)})
    return out


def apply_family(cmp: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Holm over every top-1 verdict of the report (population, width-scaled and reference rows of every
    winner); the single random nets' differences are descriptive and carry none."""
    family = [c["diff"][E.VERDICT_METRIC] for cs in cmp.values() for c in cs
              if c["verdict_on"] and E.VERDICT_METRIC in c["diff"]]
    info = E.family_verdicts(family)
    for cs in cmp.values():
        for c in cs:
            for metric, d in c["diff"].items():
                if metric != E.VERDICT_METRIC or not c["verdict_on"] or d.get("ci_low") is None:
                    d["verdict"] = None  # shown with its interval (none for one seed), no verdict
    return info


def families(rows: list[dict[str, Any]], baselines: list[str], models: dict[str, Any]
             ) -> dict[str, list[tuple[float, dict[int, Any]]]]:
    """Each reference net's (width, top-1 sample) points: 1.0, its width-scaled copies and extra widths."""
    out: dict[str, list[tuple[float, dict[int, Any]]]] = {}
    for b in baselines:
        pts = {}
        for r in rows:
            if not r["stats"].get("top1") or r["arch"] is None:
                continue
            if r["model"] == b or (r["kind"] in ("scaled", "family") and r["model"].startswith(f"{b}-w")):
                pts[ArchSpec.from_string(r["arch"]).width] = E.seed_samples(models[r["model"]].seeds, "top1")
        out[b] = sorted(pts.items(), key=lambda p: p[0])
    return out


def landing(w: dict[str, Any]) -> dict[str, Any]:
    """Where a winner landed against its search's latency target: target, landed, off, met, and why not."""
    t = w["record"].get("target") or {}
    return {"target": t.get("target_ms"), "landed": t.get("predicted_ms", _cost(w, w)), "off_pct": t.get("off_pct"),
            "tolerance_pct": t.get("tolerance_pct"), "met": t.get("met"), "reason": t.get("reason", "")}


def headline(rows: list[dict[str, Any]], cmp: dict[str, list[dict[str, Any]]], budget: dict[str, Any]
             ) -> list[dict[str, Any]]:
    """Per winner, in words: where it landed, and what it beats, loses to, or cannot be told apart from."""
    out = []
    for w in (r for r in rows if r["kind"] == "spnas"):
        lines, verdicts = [], {}
        for c in cmp[w["model"]]:
            d = c["diff"].get("top1")
            if d is None or not c["verdict_on"]:
                continue
            verdicts[c["model"]] = d["verdict"] if len(d["seeds"]) > 1 else ONE_SEED
            lines.append(E.verdict_line(w["model"], c["model"], d))
        pop = next((c for c in cmp[w["model"]] if c["kind"] == "population"), None)
        out.append({"soc": w["soc"], "winner": w["model"], "cost": _cost(w, w),
                    "cost_unit": "x budget" if w["soc"] == FLEET else "ms", "verdicts": verdicts, "lines": lines,
                    "random": _population_summary(pop), "landing": landing(w), "budget_ranks": budget["ranks"],
                    "text": _headline_text(w, cmp[w["model"]], verdicts, budget)})
    return out


def _population_summary(pop: dict[str, Any] | None) -> dict[str, Any] | None:
    if pop is None or "top1" not in pop["diff"]:
        return None
    d = pop["diff"]["top1"]
    return {"n": len(pop["members"]), "members": pop["members"], "mean_diff": d["mean"], "ci_low": d["ci_low"],
            "ci_high": d["ci_high"], "percentile": d.get("percentile"), "above": sum(x > 0 for x in d["per_net"]),
            "verdict": d["verdict"], "p_holm": d.get("p_holm"), "note": d.get("note", "")}


def _diff_words(d: dict[str, Any]) -> str:
    if d.get("ci_low") is None:
        return f"{100 * d['mean']:+.2f} pts top-1"
    return f"{100 * d['mean']:+.2f} [{100 * d['ci_low']:+.2f}, {100 * d['ci_high']:+.2f}] pts top-1"


def _headline_text(w: dict[str, Any], cmp: list[dict[str, Any]], verdicts: dict[str, str],
                   budget: dict[str, Any]) -> str:
    parts = []
    unit = "x budget" if w["soc"] == FLEET else "ms"
    for c in cmp:
        d = c["diff"].get("top1")
        if d is None or d.get("mean") is None:
            continue
        if c["kind"] == "population":
            n = len(c["members"])
            above = sum(x > 0 for x in d["per_net"])
            head = f"is above {above} of {n} random net{'s' if n != 1 else ''} at its latency"
            if d.get("ci_low") is None:
                parts.append(f"{head}; against their mean {_diff_words(d)}")
            else:
                parts.append(f"{head}; {PHRASE[verdicts[c['model']]]} their mean ({_diff_words(d)})")
        elif c["kind"] in ("scaled", "baseline") and c["model"] in verdicts:
            where = "" if c["matched"] else ", " + _fmt(c["cost"], ".4g") + " " + unit
            p = (c.get("photos") or {}).get("top1")
            over = "" if p is None else f"; {photo_ci_text(p)}"
            if d.get("ci_low") is None:
                parts.append(f"vs {c['model']} {_diff_words(d)}{where}{over}")
            else:
                parts.append(f"{PHRASE[verdicts[c['model']]]} {c['model']} ({_diff_words(d)}{where}{over})")
    if not any(c["kind"] in ("population", "scaled") for c in cmp):
        parts.insert(0, "has no random or width-scaled control in this run (see controls.socs, controls.random)")
    text = f"{w['soc']}: the winner ({_fmt(_cost(w, w), '.4g')} {unit}) " + ("; ".join(parts) or "has no control")
    ctl = (w["record"].get("controls") or {})
    notes = [ctl.get("draw", {}).get("note")] + [f"{c['name']}: {c['note']}" for c in ctl.get("scaled", []) if c["note"]]
    pop = next((c for c in cmp if c["kind"] == "population"), None)
    if pop is not None and pop["diff"].get("top1", {}).get("note"):
        notes.append(pop["diff"]["top1"]["note"])
    if any(d.get("mean") is not None and d.get("ci_low") is None and len(d.get("seeds") or []) < 2
           for d in (c["diff"].get("top1") or {} for c in cmp)):
        notes.insert(0, ONE_SEED)
    if any(notes):
        text += " (" + "; ".join(dict.fromkeys(n for n in notes if n)) + ")"
    if not budget["ranks"]:
        text += " [budget-limited: " + "; ".join(budget["reasons"]) + "]"
    return text


def search_spread(rows: list[dict[str, Any]], models: dict[str, Any], cmp: dict[str, list[dict[str, Any]]]
                  ) -> list[dict[str, Any]]:
    """Per device searched with several seeds: each search seed's winner (cost, where it landed, top-1 over
    the training seeds, how many of the primary winner's random nets it is above) and the spread between
    them (range of cost and of mean top-1; each repeat minus the primary winner, paired, descriptive)."""
    out = []
    for w in (r for r in rows if r["kind"] == "spnas"):
        reps = [r for r in rows if r["kind"] == "repeat" and r["soc"] == w["soc"]]
        if not reps:
            continue
        pop = next((c for c in cmp.get(w["model"], []) if c["kind"] == "population"), None)
        members = [models[n].seeds for n in pop["members"]] if pop else []
        entries = []
        for r in [w, *reps]:
            e = {"model": r["model"], "search_seed": r["record"].get("search_seed"), "cost": _cost(r, w),
                 "landing": landing(r), "top1": r["stats"].get("top1"),
                 "supernet_val_top1": r["record"].get("val_top1"), "arch": r["arch"]}
            if members:
                p = E.against_population(models[r["model"]].seeds, members, ["top1"]).get("top1")
                e["above_random"] = sum(x > 0 for x in p["per_net"]) if p else None
                e["n_random"] = len(members)
            if r is not w:
                e["minus_primary"] = E.compare(models[r["model"]].seeds, models[w["model"]].seeds, ["top1"]).get("top1")
                if e["minus_primary"]:
                    e["minus_primary"]["verdict"] = None  # descriptive
            entries.append(e)
        costs = [e["cost"] for e in entries if e["cost"] is not None]
        tops = [e["top1"]["mean"] for e in entries if e["top1"] and e["top1"].get("mean") is not None]
        out.append({"soc": w["soc"], "searches": entries,
                    "cost_range": [min(costs), max(costs)] if costs else None,
                    "top1_range": [min(tops), max(tops)] if tops else None,
                    "same_arch": len({e["arch"] for e in entries}) == 1})
    return out


def seed_table(rows: list[dict[str, Any]], cmp: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The paper's layout: per SoC (by generation), winner and MobileNetV2 with intervals, beside the paper's deltas."""
    out = []
    base = next((r for r in rows if r["model"] == BASELINE), None)
    wins = sorted((r for r in rows if r["kind"] == "spnas" and r["soc"] != FLEET),
                  key=lambda r: (SEED_DELTAS.get(r["soc"], {}).get("year", 9999), r["soc"]))
    for w in wins:
        if base is None:
            continue
        c = next((c for c in cmp[w["model"]] if c["model"] == BASELINE), None)
        seed = SEED_DELTAS.get(w["soc"], {})
        wl, bl = w["latency_ms"].get(w["soc"]), base["latency_ms"].get(w["soc"])
        out.append({"soc": w["soc"], "year": seed.get("year"), "winner_top1": w["stats"].get("top1"),
                    "winner_ms": wl, "mbv2_top1": base["stats"].get("top1"), "mbv2_ms": bl,
                    "d_top1": (c or {}).get("diff", {}).get("top1"),
                    "d_top1_photos": ((c or {}).get("photos") or {}).get("top1"),  # the interval over test photos
                    "d_latency_pct": 100 * (wl / bl - 1) if wl and bl else None,
                    "seed_d_top1_pts": seed.get("top1_pts"), "seed_d_latency_pct": seed.get("latency_pct")})
    return out


def fleet_view(rows: list[dict[str, Any]], fleet: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    """Every winner's latency on each fleet device's table, against that device's budget."""
    if not fleet:
        return None
    out = []
    for w in (r for r in rows if r["kind"] == "spnas"):
        ms = {d: w["latency_ms"].get(d) for d in fleet["devices"]}
        over = [d for d, b in zip(fleet["devices"], fleet["budgets_ms"]) if ms[d] is not None and ms[d] > b]
        out.append({"winner": w["model"], "ms": ms, "fleet_cost": w["fleet_cost"], "over_budget_on": over,
                    "top1": w["stats"].get("top1")})
    return out


def _fmt(v: Any, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def photo_ci_text(p: dict[str, Any]) -> str:
    """`[-3.1, +51.2] over 35 test photos` (points), the interval a difference has from the test photos alone."""
    return f"[{100 * p['ci_low']:+.1f}, {100 * p['ci_high']:+.1f}] over {p['n_photos']} test photos"


TEST_FROM_TEXT = {
    "same_folder_split": ("a random {pct:.0%} of each class of the same folder as the training photos: shots of the "
                          "same scenes, so these figures flatter the model for photos taken elsewhere (optimistic); "
                          "photos from another shoot as data.test_root=<folder> (or a <root>/{{train,test}}/<class>/ "
                          "layout) measure that"),
    "test_folder": "your test folder (<root>/test/<class>/), kept apart from the training photos",
    "test_root": "the held-out folder data.test_root, photographed apart from the training photos",
}


def data_caveat(cfg: PipelineAppConfig, data: dict[str, Any]) -> str | None:
    """What the report must say about the data a user gave (not a preset's caveat about CIFAR-10): how much one
    test and one validation photo weigh, and whether the test photos were taken apart from the training ones."""
    if cfg.data.kind.name != "folder" or not data:
        return None
    n_test, n_val = data.get("test") or 0, data.get("val") or 0
    parts = [f"Your photos ({data.get('name')}, {data.get('num_classes')} classes, {data.get('train')} train / "
             f"{n_val} validation / {n_test} test)."]
    if n_test:
        parts.append(f"One test photo is {100 / n_test:.1f} points of top-1" +
                     (f" and one validation photo {100 / n_val:.1f} points" if n_val else "") +
                     ": every difference below carries an interval over the test photos, and one seed decides "
                     "nothing.")
    src = TEST_FROM_TEXT.get(data.get("test_from", ""))
    if src:
        parts.append("The test photos are " + src.format(pct=cfg.data.test_fraction) + ".")
    if data.get("skipped_images"):
        parts.append(f"{data['skipped_images']} unreadable image(s) were skipped (e.g. "
                     f"{', '.join(Path(p).name for p in data.get('skipped_examples', [])[:3])}).")
    return " ".join(parts)


def write_report(run_dir: Path, cfg: PipelineAppConfig, models: dict[str, Any], events: list[dict[str, Any]],
                 devices: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """report.json, report.md, report.csv and the PNGs, from the stage outputs only (`devices`: what
    `pipeline.prepare_devices` found per SoC: the table's fingerprint, its spot check, or why it was skipped)."""
    names = list(dict.fromkeys([*cfg.socs, *cfg.search.fleet]))
    tables = {s: LatencyTable.load(cfg.soc_configs[s].table) for s in names}  # read once, used throughout
    fleet = next((m.record.get("fleet") for m in models.values() if m.kind == "spnas" and m.soc == FLEET), None)
    rows = model_rows(cfg, models, tables, fleet)
    cmp = comparisons(rows, models)
    family = apply_family(cmp)
    budget = E.budget_check(families(rows, cfg.baselines, models),
                            {r["model"]: E.curve_rises(models[r["model"]].seeds) for r in rows}, cfg.report.rising_pts)
    budget["short_runs"] = short_runs(models)
    head = headline(rows, cmp, budget)
    prov = provenance(cfg, models, tables, events, devices)
    plots = make_plots(run_dir, cfg, models, rows, tables)
    note = cfg.report.note if not cfg.report.note_data or cfg.report.note_data == cfg.data.name else ""
    report = {"experiment": cfg.experiment_name, "note": note, "data_caveat": data_caveat(cfg, prov["data"]),
              "resolution": resolution_record(cfg), "seeds": list(cfg.seeds),
              "headline": head, "family": family, "budget": budget, "rows": rows, "comparisons": cmp,
              "search_spread": search_spread(rows, models, cmp),
              "seed_table": seed_table(rows, cmp), "fleet": fleet_view(rows, fleet), "fleet_objective": fleet,
              "provenance": prov, "plots": plots,
              "winners": {r["model"]: r["arch"] for r in rows if r["kind"] == "spnas"}}
    write_json_atomic(run_dir / "report.json", report)
    write_bytes_atomic(run_dir / "report.md", markdown(cfg, report).encode())
    write_bytes_atomic(run_dir / "report.csv", seed_csv(models, rows).encode())
    return report


def short_runs(models: dict[str, Any]) -> list[str]:
    """The warnings of runs too short to learn (a floor lowered by the user), once each: train, fine-tune."""
    out: list[str] = []
    for m in models.values():
        for rec in m.seeds.values():
            for stage in ("train", "finetune"):
                for w in ((rec.get(stage) or {}).get("budget") or {}).get("warnings", []):
                    if w not in out:
                        out.append(w)
    return out


def resolution_record(cfg: PipelineAppConfig) -> dict[str, Any]:
    """The input size every model ships at (fine-tuning, export, embedder) and the one the tables are read at."""
    ship = cfg.finetune.resolution if cfg.finetune.enabled and cfg.finetune.resolution else cfg.data.resolution
    return {"ships_at": ship, "latency_at": cfg.search.latency_resolution, "proxy": cfg.data.resolution,
            "one_resolution": ship == cfg.search.latency_resolution}


def seed_csv(models: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """One line per (model, seed): the raw figures the intervals are computed from."""
    buf = io.StringIO()
    w = csv.writer(buf)
    socs = sorted({s for r in rows for s in r["latency_ms"]})
    w.writerow(["model", "kind", "soc", "seed", *E.METRICS, *[f"ms_{s}" for s in socs], "params"])
    for r in rows:
        for seed, rec in sorted(models[r["model"]].seeds.items()):
            vals = [E.seed_values({seed: rec}, k).get(seed) for k in E.METRICS]
            w.writerow([r["model"], r["kind"], r["soc"] or "", seed, *vals, *[r["latency_ms"][s] for s in socs],
                        r["params"]])
    return buf.getvalue()


def provenance(cfg: PipelineAppConfig, models: dict[str, Any], tables: dict[str, LatencyTable],
               events: list[dict[str, Any]], devices: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    """Where every number comes from: tables, devices, data, proxy, recipe, budgets, versions, stages."""
    any_seed = next((rec for m in models.values() for rec in m.seeds.values()), {})
    return {
        "versions": versions(), "search_seed": cfg.seed, "seeds": list(cfg.seeds), "stages": events,
        "data": any_seed.get("train", {}).get("data", {}),
        "proxy": (f"{cfg.data.resolution} px, {cfg.proxy.strides.name} strides (the fewest stride-2 blocks, "
                  f"{cfg.proxy.drop.name} first, trained at stride 1 so every layer sees >= "
                  f"{cfg.proxy.min_map}x{cfg.proxy.min_map})"),
        "train_budget": any_seed.get("train", {}).get("budget"),
        "finetune_budget": (any_seed.get("finetune") or {}).get("budget"),
        "retrieval_split": (any_seed.get("retrieval") or {}).get("split", "n/a"),
        "finetune": (f"fine-tuned as a {cfg.finetune.embedding_dim}-d embedder ({cfg.finetune.loss.name}, "
                     f"{cfg.finetune.resolution} px) on its train split" if cfg.finetune.enabled
                     else "evaluated as trained on the proxy (no fine-tuning)"),
        "tables": {n: {"provenance": t.provenance, "soc": t.meta.get("soc"), "date": t.meta.get("date"),
                       "runtime": t.meta.get("runtime"), "method": (t.meta.get("method") or {}).get("name"),
                       "device": t.device} for n, t in tables.items()},
        "devices": devices or {},
        "controls": {m.name: m.record for m in models.values() if m.kind in ("random", "scaled")},
        "random_draws": {m.name: (m.record.get("controls") or {}).get("draw") for m in models.values()
                         if m.kind == "spnas" and (m.record.get("controls") or {}).get("draw")},
        "search_seeds": sorted({m.record.get("search_seed") for m in models.values()
                                if m.kind in ("spnas", "repeat") and m.record.get("search_seed") is not None}),
    }
