"""The pipeline report on synthetic stage outputs (no training, seconds): what it says with one seed, where
each search landed, the search repeats, and which controls each winner's plot panel draws."""

from __future__ import annotations

import json

import numpy as np
import pytest

from search_spaces import default_space, mobilenet_v2
from spnas.app.pipeline.evidence import pack_bits
from spnas.app.pipeline.run import Model

from ..conftest import compose

N_TEST = 400


def _seeds(arch: str, p: float, seeds: list[int], rng: np.random.Generator) -> dict[int, dict]:
    """Stage outputs of one model: per seed, test top-1 with its per-image record, and a flat learning curve."""
    out = {}
    for s in seeds:
        c = (rng.random(N_TEST) < p).astype(np.uint8)
        out[s] = {"train": {"test_top1": float(c.mean()), "test_correct": pack_bits(c), "arch_string": arch,
                            "params": 1e6, "macs_at_deploy_resolution": 5e7,
                            "budget": {"total_steps": 100, "batch_size": 128, "epochs": 3},
                            "curve": [{"step": 25, "val_top1": p - 0.2}, {"step": 50, "val_top1": p - 0.05},
                                      {"step": 75, "val_top1": p}, {"step": 100, "val_top1": p}],
                            "data": {"name": "cifar10", "resolution": 32, "train": 5400, "val": 600,
                                     "test": N_TEST}}}
    return out


def _models(seeds: list[int], socs=("sd845", "sd808")) -> dict[str, Model]:
    """Two winners (one repeated with search seed 1), three random controls and a width-scaled MobileNetV2
    each, MobileNetV2 1.0."""
    rng = np.random.default_rng(0)
    space = default_space()
    models: dict[str, Model] = {}
    for k, soc in enumerate(socs):
        ch = [s.choices[(i + k) % len(s.choices)] for i, s in enumerate(space.slots)]
        a = space.decode(ch, 32, 1.0, 10, name=f"spnas-{soc}")
        target = {"target_ms": 50.0 + k, "predicted_ms": 52.0 + k, "off_pct": 4.0, "tolerance_pct": 3.0, "met": False,
                  "reason": "ended +4.0% above the budget: raise search.latency_lambda or search.steps"}
        rec = {"target": target, "search_seed": 0, "val_top1": 0.3,
               "controls": {"draw": {"target": 52.0, "tolerance": 0.02, "draws": 100, "accepted": 3, "note": "",
                                     "run_seed": 0, "seeds": [11, 12, 13]}, "scaled": []}}
        models[a.name] = Model(a.name, "spnas", soc, a, [f"winner {soc}"], record=rec,
                               seeds=_seeds(a.to_string(), 0.45, seeds, rng))
        a2 = space.decode([space.slots[0].choices[-1], *ch[1:]], 32, 1.0, 10, name=f"spnas-{soc}-s1")
        models[a2.name] = Model(a2.name, "repeat", soc, a2, [f"search of {soc} repeated with seed 1"],
                                record={**rec, "search_seed": 1}, seeds=_seeds(a2.to_string(), 0.44, seeds, rng))
        for i in range(3):
            ar = space.decode([s.choices[(j * (i + 2) + k) % len(s.choices)] for j, s in enumerate(space.slots)], 32,
                              1.0, 10, name=f"random-{soc}-{i}")
            models[ar.name] = Model(ar.name, "random", soc, ar, [f"random control of spnas-{soc}"],
                                    record={"seed": 11 + i, "off_pct": 0.5},
                                    seeds=_seeds(ar.to_string(), 0.42, seeds, rng))
        w = 0.7 + 0.1 * k
        am = mobilenet_v2(resolution=32, width=w, num_classes=10).replace(name=f"mobilenet_v2-w{w:g}")
        models[am.name] = Model(am.name, "scaled", soc, am, [f"mobilenet_v2 scaled to spnas-{soc}"],
                                record={"off_pct": 1.0, "note": ""}, seeds=_seeds(am.to_string(), 0.33, seeds, rng))
    models["mobilenet_v2"] = Model("mobilenet_v2", "baseline", None, "mobilenet_v2", ["reference net, width 1.0"],
                                   seeds=_seeds(mobilenet_v2(resolution=32, num_classes=10).to_string(), 0.4, seeds,
                                                rng))
    return models


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """report.md / report.json of the same models with one training seed and with three."""
    from spnas.app.pipeline.report import write_report

    out = {}
    for seeds in ([0], [0, 1, 2]):
        cfg = compose("pipeline", ["experiment=evidence", f"seeds=[{','.join(map(str, seeds))}]",
                                   "socs=[sd845,sd808]", "search.fleet=[]"])
        d = tmp_path_factory.mktemp(f"report{len(seeds)}")
        rep = write_report(d, cfg, _models(seeds), [], {})
        out[len(seeds)] = (cfg, rep, (d / "report.md").read_text(), json.loads((d / "report.json").read_text()))
    return out


def test_one_seed_gives_no_interval_and_no_verdict_in_report_md(reports):
    _, rep, md, _ = reports[1]
    head = md.split("## Headline", 1)[1].split("\n## ", 1)[0]
    assert "one seed: no interval, no verdict" in head.lower()
    for word in ("beats", "loses to", "is not distinguishable"):
        assert word not in head, f"one seed, yet the headline says '{word}'"
    per_winner = md.split("## Each winner against its controls", 1)[1].split("\n## ", 1)[0]
    assert "| one seed: no interval, no verdict |" in per_winner and "| beats |" not in per_winner
    assert "not even directions can be compared" in md and "compare directions, not" not in md
    # report.json alike: no verdict on any comparison, and the headline's verdicts say why
    assert all(c["diff"]["top1"]["verdict"] is None for cs in rep["comparisons"].values() for c in cs)
    assert {v for h in rep["headline"] for v in h["verdicts"].values()} == {"one seed: no interval, no verdict"}
    assert all(h["random"]["verdict"] is None and h["random"]["ci_low"] is None for h in rep["headline"])
    _, rep3, md3, _ = reports[3]
    assert "one seed" not in md3.split("## Headline", 1)[1].split("\n## ", 1)[0]
    assert "Holm" in md3 and f"over the {rep3['family']['m']} " in md3 and rep3["family"]["m"] == 6


def test_report_md_says_where_each_search_landed(reports):
    _, rep, md, _ = reports[3]
    landed = md.split("## Where each search landed", 1)[1].split("\n## ", 1)[0]
    assert "| spnas-sd845 | 50 ms | 52 ms | +4.0% | **no** (+-3%) | ended +4.0% above the budget" in landed
    assert "| spnas-sd808 | 51 ms | 53 ms |" in landed
    assert rep["headline"][0]["landing"]["met"] is False


def test_the_search_repeats_are_reported_as_the_searchs_spread(reports):
    _, rep, md, js = reports[3]
    spread = {s["soc"]: s for s in rep["search_spread"]}
    assert set(spread) == {"sd845", "sd808"}
    assert [e["model"] for e in spread["sd845"]["searches"]] == ["spnas-sd845", "spnas-sd845-s1"]
    rep1 = spread["sd845"]["searches"][1]
    assert rep1["search_seed"] == 1 and rep1["minus_primary"]["seeds"] == [0, 1, 2] and rep1["n_random"] == 3
    assert "## The search's own spread (search seeds)" in md
    assert "spnas-sd845-s1" not in rep["comparisons"], "a repeat is not a winner with controls of its own"
    assert not any(c["model"] == "spnas-sd845-s1" for cs in rep["comparisons"].values() for c in cs)


def test_each_plot_panel_draws_only_its_own_winners_controls(reports):
    """sd808's panel shows sd808's random nets and width-scaled net, never sd845's; the random nets have one
    legend entry; every point is a model of that panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spnas.app.pipeline.report_plots import draw_panel, panel_rows

    cfg, rep, _, _ = reports[3]
    rows = rep["rows"]
    for w in (r for r in rows if r["kind"] == "spnas"):
        shown = panel_rows(rows, w)
        names = {r["model"] for r in shown}
        other = "sd808" if w["soc"] == "sd845" else "sd845"
        assert {f"random-{w['soc']}-{i}" for i in range(3)} <= names
        assert not any(n.startswith(f"random-{other}") or n == f"spnas-{other}" for n in names), names
        assert f"spnas-{w['soc']}-s1" in names and f"spnas-{other}-s1" not in names
        fig, ax = plt.subplots()
        draw_panel(ax, cfg, rows, w)
        ys = sorted(round(float(c.lines[0].get_ydata()[0]), 6) for c in ax.containers
                    if len(c.lines[0].get_ydata()) == 1)
        want = sorted(round(r["stats"]["top1"]["mean"], 6) for r in shown)
        assert ys == want, "every point drawn is one of the panel's models"
        labels = ax.get_legend_handles_labels()[1]
        assert sum("random nets" in lb for lb in labels) == 1 and not any(lb.startswith("random-") for lb in labels)
        plt.close(fig)


def test_the_learning_curve_shading_is_the_window_the_check_reads(reports):
    from spnas.app.pipeline.evidence import rise_window
    from spnas.app.pipeline.report_plots import check_window

    _, rep, _, _ = reports[3]
    models = _models([0, 1, 2])
    curve = models["mobilenet_v2"].seeds[0]["train"]["curve"]
    assert check_window(models, rep["rows"]) == rise_window(curve) == (75, 100)
