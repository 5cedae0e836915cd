"""The pipeline report: `report.md`, `report.json`, `report.csv` and PNGs, built only from the stage outputs.

One row per model (winners, their random controls, the baselines width-scaled to their latency, the
reference nets): mean and 95% interval over seeds of proxy top-1, fine-tuned top-1 and photo-search
recall@1, and the predicted latency on every table. Per winner, the paired verdicts against each
control and reference (`spnas.app.evidence`), every difference also with an interval over the test
photos; the budget check that says when the comparison ranks the budget rather than the
architectures; the paper's per-SoC table with ours beside it; the fleet winner beside each per-SoC
winner on every table; the exported models at the resolution they ship at; a caveat on the data
given (how small its test split is, whether it was photographed apart); provenance.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from latency_tables.table import LatencyTable
from search_spaces import ArchSpec
from spnas.app.config import PipelineAppConfig
from spnas_core.errors import TableError
from spnas_core.files import write_bytes_atomic, write_json_atomic
from spnas_core.versions import versions

from . import evidence as E
from .report_md import markdown
from .report_plots import make_plots

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


def comparisons(rows: list[dict[str, Any]], models: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Per winner: its random controls, the baselines scaled to its latency, and every reference net, each
    with the paired difference winner - model over the seeds they share."""
    out: dict[str, list[dict[str, Any]]] = {}
    for w in (r for r in rows if r["kind"] == "spnas"):
        mine = [r for r in rows if r["kind"] in ("random", "scaled") and any(w["model"] in role for role in r["roles"])]
        refs = [r for r in rows if r["kind"] in ("baseline", "family") and r not in mine]
        out[w["model"]] = []
        for r in mine + refs:
            out[w["model"]].append({
                "model": r["model"], "kind": r["kind"], "matched": r in mine, "cost": _cost(r, w),
                "winner_cost": _cost(w, w), "diff": E.compare(models[w["model"]].seeds, models[r["model"]].seeds),
                "photos": E.photo_intervals(models[w["model"]].seeds, models[r["model"]].seeds)})
    return out


def families(rows: list[dict[str, Any]], baselines: list[str]) -> dict[str, list[tuple[float, float]]]:
    """Each reference net's (width, mean top-1) points: 1.0, its width-scaled copies and extra widths."""
    out: dict[str, list[tuple[float, float]]] = {}
    for b in baselines:
        pts = {}
        for r in rows:
            top1 = r["stats"].get("top1", {}).get("mean")
            if top1 is None or r["arch"] is None:
                continue
            if r["model"] == b or (r["kind"] in ("scaled", "family") and r["model"].startswith(f"{b}-w")):
                pts[ArchSpec.from_string(r["arch"]).width] = top1
        out[b] = sorted(pts.items())
    return out


def headline(rows: list[dict[str, Any]], cmp: dict[str, list[dict[str, Any]]], budget: dict[str, Any]
             ) -> list[dict[str, Any]]:
    """Per winner, in words: what it beats, loses to, or cannot be told apart from, and at what latency."""
    out = []
    for w in (r for r in rows if r["kind"] == "spnas"):
        lines, verdicts = [], {}
        for c in cmp[w["model"]]:
            d = c["diff"].get("top1")
            if d is None:
                continue
            verdicts[c["model"]] = d["verdict"] if len(d["seeds"]) > 1 else "not distinguishable from"
            lines.append(E.verdict_line(w["model"], c["model"], d))
        randoms = [c["model"] for c in cmp[w["model"]] if c["kind"] == "random"]
        tally = {v: sum(verdicts.get(r) == v for r in randoms) for v in ("beats", "loses to", "not distinguishable from")}
        out.append({"soc": w["soc"], "winner": w["model"], "cost": _cost(w, w),
                    "cost_unit": "x budget" if w["soc"] == FLEET else "ms", "verdicts": verdicts, "lines": lines,
                    "random_tally": tally, "budget_ranks": budget["ranks"],
                    "text": _headline_text(w, cmp[w["model"]], verdicts, tally, budget)})
    return out


def _headline_text(w: dict[str, Any], cmp: list[dict[str, Any]], verdicts: dict[str, str], tally: dict[str, int],
                   budget: dict[str, Any]) -> str:
    n = sum(tally.values())
    parts = []
    unit = "x budget" if w["soc"] == FLEET else "ms"
    if n:
        parts.append(f"beats {tally['beats']}, loses to {tally['loses to']} and is not distinguishable from "
                     f"{tally['not distinguishable from']} of {n} random nets at its latency")
    for c in cmp:
        if c["kind"] in ("scaled", "baseline") and c["model"] in verdicts:
            d = c["diff"]["top1"]
            p = (c.get("photos") or {}).get("top1")
            over = "" if p is None else f", {photo_ci_text(p)}"
            parts.append(f"{PHRASE[verdicts[c['model']]]} {c['model']} ({100 * d['mean']:+.2f} pts top-1{over}"
                         f"{'' if c['matched'] else ', ' + _fmt(c['cost'], '.4g') + ' ' + unit})")
    if not any(c["kind"] in ("random", "scaled") for c in cmp):
        parts.insert(0, "has no random or width-scaled control in this run (see controls.socs, controls.random)")
    text = f"{w['soc']}: the winner ({_fmt(_cost(w, w), '.4g')} {unit}) " + ("; ".join(parts) or "has no control")
    ctl = (w["record"].get("controls") or {})
    notes = [ctl.get("draw", {}).get("note")] + [f"{c['name']}: {c['note']}" for c in ctl.get("scaled", []) if c["note"]]
    if any(notes):
        text += " (" + "; ".join(n for n in notes if n) + ")"
    if not budget["ranks"]:
        text += " [budget-limited: " + "; ".join(budget["reasons"]) + "]"
    return text


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
    budget = E.budget_check(families(rows, cfg.baselines), {r["model"]: E.curve_rises(models[r["model"]].seeds)
                                                            for r in rows}, cfg.report.rising_pts)
    budget["short_runs"] = short_runs(models)
    head = headline(rows, cmp, budget)
    prov = provenance(cfg, models, tables, events, devices)
    plots = make_plots(run_dir, cfg, models, rows, tables)
    note = cfg.report.note if not cfg.report.note_data or cfg.report.note_data == cfg.data.name else ""
    report = {"experiment": cfg.experiment_name, "note": note, "data_caveat": data_caveat(cfg, prov["data"]),
              "resolution": resolution_record(cfg), "seeds": list(cfg.seeds),
              "headline": head, "budget": budget, "rows": rows, "comparisons": cmp,
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
    }
