"""The pipeline on the README's own-images command (shared session run, `own_photos_pipeline`): a killed
search resumes; the controls, seeds and verdicts of the report come from the stage outputs; a re-run with
nothing changed skips every stage; a changed input redoes only what depends on it."""

import json
import shutil
import time

import pytest

from latency_tables.lookup.table import LatencyTable
from search_spaces import ArchSpec
from search_spaces.proxy import Proxy, _min_input_map
from nas.controls import control_seed
from spnas.app.pipeline.evidence import unpack_bits
from spnas_core.stats import population_difference

from ..conftest import compose


def test_a_killed_search_resumes_and_one_warmup_serves_it(own_photos_pipeline):
    ov, run, report, killed = own_photos_pipeline
    assert json.loads(killed)["status"] == "running"
    how = {e["stage"]: e["how"] for e in report["provenance"]["stages"]}
    assert how["warmup/shared"] in ("skipped", "ran") and how["search/sd845"] == "resumed"
    log = [json.loads(x) for x in (run / "search" / "sd845" / "search_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(1, len(log) + 1)) and len(log) >= 2
    assert (run / "warmup" / "shared" / "warmup.pt").is_file()


def test_the_report_compares_every_seed_of_every_control_from_the_stage_outputs(own_photos_pipeline):
    ov, run, report, _ = own_photos_pipeline
    for f in ("report.md", "report.json", "report.csv", "accuracy_vs_latency.png", "learning_curves.png",
              "winner_decisions.png", "latency_breakdown.png"):
        assert (run / f).stat().st_size > 200, f
    rows = {r["model"]: r for r in report["rows"]}
    kinds = {r["kind"] for r in rows.values()}
    assert {"spnas", "random", "scaled", "baseline"} <= kinds and "random-sd845-0" in rows
    controls = json.loads((run / "controls" / "sd845" / "controls.json").read_text())
    win_ms = rows["spnas-sd845"]["latency_ms"]["sd845"]
    assert abs(controls["random"][0]["cost"] / win_ms - 1) <= controls["tolerance"] == 0.5
    winner_choices = json.loads((run / "search" / "sd845" / "search_summary.json").read_text())["choices"]
    assert controls["random"][0]["seed"] == control_seed(0, 0, "sd845", winner_choices, 0), "seeded from the run"
    assert controls["draw"]["draws"] >= 1 and controls["draw"]["seeds"] == [controls["random"][0]["seed"]]
    for name, r in rows.items():
        assert r["seeds"] == [0, 1], name
        for seed in (0, 1):
            summary = json.loads((run / "train" / name / f"s{seed}" / "summary.json").read_text())
            assert r["stats"]["top1"]["per_seed"][seed] == summary["test_top1"]
            assert summary["budget"]["total_steps"] == 12 and summary["seed"] == seed
            ret = json.loads((run / "retrieval" / name / f"s{seed}" / "retrieval_eval.json").read_text())
            assert r["stats"]["r1_train"]["per_seed"][seed] == ret["results"]["train"]["fine"]["recall@1"]
        arch = ArchSpec.from_string(r["arch"]).replace(resolution=96)  # the size the model ships at (one resolution)
        assert r["latency_ms"]["sd845"] == pytest.approx(LatencyTable.load("sd845").predict(arch))
        proxy = Proxy.from_dict(summary["proxy"])  # one proxy for every model compared
        assert proxy.resolution == 96 and _min_input_map(proxy.apply(ArchSpec.from_string(r["arch"]))) >= 4
    # every model was tested image by image on the same test split; the per-image record is its test top-1
    stage = {n: {s: json.loads((run / "train" / n / f"s{s}" / "stage.json").read_text())["result"] for s in (0, 1)}
             for n in rows}
    for name, per_seed in stage.items():
        for seed, res in per_seed.items():
            assert res["test_correct"]["n"] == report["provenance"]["data"]["test"]
            assert unpack_bits(res["test_correct"]).mean() == pytest.approx(res["test_top1"], abs=1e-12), name
    # the winner against its random controls (one here) is the population difference of those records,
    # paired by seed key and test image
    pop = next(c for c in report["comparisons"]["spnas-sd845"] if c["kind"] == "population")
    samples = {n: {s: unpack_bits(r["test_correct"]) for s, r in per_seed.items()} for n, per_seed in stage.items()}
    want = population_difference(samples["spnas-sd845"], [samples["random-sd845-0"]])
    assert pop["members"] == ["random-sd845-0"] and pop["diff"]["top1"]["mean"] == pytest.approx(want["mean"])
    assert pop["diff"]["top1"]["ci_low"] == pytest.approx(want["ci_low"]) and want["n_items"] > 0
    assert pop["diff"]["top1"]["verdict"] in ("beats", "loses to", "not distinguishable from")
    single = next(c for c in report["comparisons"]["spnas-sd845"] if c["model"] == "random-sd845-0")
    assert single["matched"] and not single["verdict_on"] and single["diff"]["top1"]["verdict"] is None
    # exported: the winner and the 1.0 baseline (first seed), not the controls
    assert (run / "export" / "spnas-sd845" / "bundle" / "manifest.json").is_file()
    assert (run / "export" / "mobilenet_v2" / "bundle" / "manifest.json").is_file()
    assert not (run / "export" / "random-sd845-0").exists()
    md = (run / "report.md").read_text()
    assert "## Headline" in md and "## Does this budget rank capacity?" in md and "random net at its latency" in md
    assert "## Against the paper's table" in md and "| sd845 (2018) |" in md
    head = report["headline"][0]
    assert head["soc"] == "sd845" and head["random"]["n"] == 1 and "one random net" in head["random"]["note"]
    assert head["random"]["above"] == int(pop["diff"]["top1"]["per_net"][0] > 0)
    land = json.loads((run / "search" / "sd845" / "search_summary.json").read_text())["target"]
    assert f"| spnas-sd845 | {land['target_ms']:.4g} ms | {land['predicted_ms']:.4g} ms |" in md, "the landing verdict"
    assert report["budget"]["ranks"] is False, "a 12-step budget ranks nothing, and the report says so"
    assert "budget-limited" in head["text"]


def test_nothing_changed_skips_every_stage_and_a_change_redoes_only_its_dependents(own_photos_pipeline, tmp_path):
    from spnas.app.pipeline.run import run_pipeline

    ov, run, report, _ = own_photos_pipeline
    copy = tmp_path / "run"
    shutil.copytree(run, copy)  # stage keys hold contents, not paths: the copy is as finished as the original
    ov = [o for o in ov if not o.startswith("run_dir=")] + [f"run_dir={copy}"]
    t = time.perf_counter()
    again = run_pipeline(compose("pipeline", ov))
    assert all(e["how"] == "skipped" for e in again["provenance"]["stages"])
    assert time.perf_counter() - t < 60
    assert [r["stats"] for r in again["rows"]] == [r["stats"] for r in report["rows"]]
    third = run_pipeline(compose("pipeline", ov + ["retrieval.factory=HNSW32"]))
    how = {e["stage"]: e["how"] for e in third["provenance"]["stages"]}
    assert how["retrieval/mobilenet_v2/s0"] == "ran" and how["export/mobilenet_v2"] == "skipped"
    assert how["train/spnas-sd845/s1"] == "skipped"
    # export_socs=[]: no winner is exported (the demo exports only sd845's); the 1.0 baseline still is
    fourth = run_pipeline(compose("pipeline", ov + ["export_socs=[]"]))
    how = {e["stage"]: e["how"] for e in fourth["provenance"]["stages"]}
    assert "export/spnas-sd845" not in how and how["export/mobilenet_v2"] == "skipped"
    assert next(r for r in fourth["rows"] if r["model"] == "spnas-sd845")["export"] is None
