"""Your own photos, end to end (the README's "Your own images" commands on a 175-photo folder of 7 Grocery
products, `own_photos_pipeline`): `spnas-train` learns (a step floor the folder's size cannot shrink), every
artefact of the pipeline has one resolution, a malformed override on a finished run loses nothing, degenerate
folders are refused, the report on a 35-photo test split carries intervals over the photos and says what the
split is worth, and the errors a user meets say what to do with the documented exit codes."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from spnas_core.errors import EXIT_CONFIG, EXIT_INPUT, EXIT_TABLE
from spnas_core.files import sha256_file

from ..conftest import compose


def _photos(ov: list[str]) -> Path:
    return Path(next(o.split("=", 1)[1] for o in ov if o.startswith("data.root=")))


def _cli(capsys, app: str, *args: str) -> subprocess.CompletedProcess:
    """`spnas-<app> args...` as the console script runs it (its `*_main` with these argv), in this process: the
    exit code, stdout and stderr a user sees (no interpreter start-up per call)."""
    from spnas.app.cli import main as cli

    main = getattr(cli, f"{app.removeprefix('spnas-').replace('-', '_')}_main")
    capsys.readouterr()
    old, sys.argv = sys.argv, [app, *args]
    code = 0
    try:
        main()
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return subprocess.CompletedProcess([app, *args], code, out.out, out.err)


def _error_line(r: subprocess.CompletedProcess, app: str) -> str:
    lines = [x for x in r.stderr.splitlines() if x.startswith(f"{app}: error:")]
    assert len(lines) == 1, r.stderr[-3000:]
    return lines[0]


# ---------------------------------------------------------------------------------- the README's commands
def test_readme_spnas_train_on_your_photos_learns(own_photos_pipeline, tmp_path, capsys, caplog):
    """`spnas-train arch=mobilenet_v2 data=folder data.root=... data.resolution=96` as the README writes it: 2
    optimisation steps (2 epochs at batch 128 on 126 photos) once gave chance; the step floor gives a model that
    learned. The floor is said once; per-epoch lines are DEBUG, not INFO."""
    ov, _, _, _ = own_photos_pipeline
    with caplog.at_level(logging.DEBUG):
        r = _cli(capsys, "spnas-train", "arch=mobilenet_v2", "data=folder", f"data.root={_photos(ov)}",
                 "data.resolution=96", f"run_dir={tmp_path / 'run'}", f"data.cache_dir={tmp_path / 'cache'}",
                 "threads=1")
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    chance = 1 / s["data"]["num_classes"]
    assert s["data"]["num_classes"] == 7 and s["data"]["test"] == 35
    assert s["budget"]["total_steps"] >= 120 and s["budget"]["batch_size"] == 16 and not s["budget"]["warnings"]
    assert s["test_top1"] >= chance + 0.25, f"test top-1 {s['test_top1']:.3f} vs chance {chance:.3f}: it did not learn"
    assert "test top-1" in r.stdout and str(tmp_path / "run") in r.stdout
    said = [x for x in caplog.records if "-> 120 steps (train.min_steps" in x.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.INFO  # the floor is said, once
    assert not [x for x in caplog.records if x.name == "training.loop" and " epoch " in x.getMessage()
                and x.levelno >= logging.INFO], "per-epoch lines are DEBUG (SPNAS_LOG=DEBUG shows them)"


def test_every_artefact_of_the_readme_pipeline_has_one_resolution(own_photos_pipeline):
    """Asked for 96 px: the fine-tuning, the exported TFLite and MediaPipe embedder, the latency the tables give
    and the report all say 96x96 (the demo preset once fine-tuned at 64 and quoted latency at 224)."""
    ov, run, report, _ = own_photos_pipeline
    assert report["resolution"] == {"ships_at": 96, "latency_at": 96, "proxy": 96, "one_resolution": True}
    for m in ("spnas-sd845", "mobilenet_v2"):
        ft = json.loads((run / "finetune" / m / "s0" / "summary.json").read_text())
        assert ft["resolution"] == 96 and ft["data"]["resolution"] == 96
        tr = json.loads((run / "train" / m / "s0" / "summary.json").read_text())
        assert tr["deploy_resolution"] == 96
        man = json.loads((run / "export" / m / "bundle" / "manifest.json").read_text())
        assert man["input"]["size"] == [96, 96] and man["arch"]["resolution"] == 96
        assert man["resolution"]["input"] == man["resolution"]["latency_tables"] == 96
        assert {p["resolution"] for p in man["latency"]["table_predictions"].values()} == {96}
        assert man["latency"]["deploy_resolution"] is None  # nothing timed at another size
        ret = json.loads((run / "retrieval" / m / "s0" / "retrieval_eval.json").read_text())
        assert ret["input_size"] == 96
        assert man["data_source"]["root"] == str(_photos(ov).resolve())  # what spnas-serve serves by default
    search = json.loads((run / "search" / "sd845" / "config.json").read_text())
    assert search["search"]["latency_resolution"] == 96  # the search priced networks at the size they ship at
    md = (run / "report.md").read_text()
    assert "ships at 96x96" in md and "224x224" not in md and "64x64" not in md


def test_a_malformed_table_override_on_a_finished_run_loses_nothing(own_photos_pipeline, tmp_path, capsys):
    """`soc_configs.sd845.table=<malformed>` on a finished run once deleted arch.json, supernet.pt, the search log
    and its plot, left stage.json at "running", then failed. Now: exit 4 naming the table, every finished file as
    it was, stage.json "failed" with the last good result, and the run without the override skips to it."""
    from spnas.app.pipeline.run import run_pipeline

    ov, run, _, _ = own_photos_pipeline
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    ov = [o for o in ov if not o.startswith("run_dir=")] + [f"run_dir={copy}"]
    search = copy / "search" / "sd845"
    before = {str(p.relative_to(search)): sha256_file(p) for p in search.rglob("*")
              if p.is_file() and p.name != "stage.json"}
    assert {"arch.json", "supernet.pt", "search_log.jsonl", "search_progress.png"} <= set(before)
    bad = tmp_path / "sd845-edited.json"
    bad.write_text('{"meta": {"device": "sd845"}, "ops": ["not", "rows"]}\n')
    r = _cli(capsys, "spnas-pipeline", *ov, f"soc_configs.sd845.table={bad}")
    assert r.returncode == EXIT_TABLE, r.stderr[-3000:]
    assert "malformed" in _error_line(r, "spnas-pipeline") and bad.name in _error_line(r, "spnas-pipeline")
    after = {str(p.relative_to(search)): sha256_file(p) for p in search.rglob("*")
             if p.is_file() and p.name != "stage.json"}
    assert after == before, "nothing finished was deleted or changed"
    st = json.loads((search / "stage.json").read_text())
    assert st["status"] == "failed" and "malformed" in st["error"] and st["last_good"]["status"] == "done"
    again = run_pipeline(compose("pipeline", ov))  # the run as it was: it continues from the finished stages
    assert all(e["how"] == "skipped" for e in again["provenance"]["stages"])
    assert json.loads((search / "stage.json").read_text())["status"] == "done"


def test_the_report_on_35_test_photos(own_photos_pipeline):
    """Differences on 35 test photos (one photo = 2.9 points) come with intervals over the photos; a family of two
    widths is not called ordered; the caveat is about the photos given (not the demo's CIFAR note) and says the
    same-shoot split flatters; the Single-Path NAS table is the paper's, not a "seed's"."""
    ov, run, report, _ = own_photos_pipeline
    for c in report["comparisons"]["spnas-sd845"]:
        if c["kind"] == "population":  # the random nets' mean: its interval counts them as a factor instead
            continue
        assert set(c["photos"]) >= {"top1", "finetune_top1", "r1_train"}, c["model"]
        for p in c["photos"].values():
            assert p["n_photos"] == 35 and p["ci_low"] <= p["mean"] <= p["ci_high"]
            assert p["ci_high"] - p["ci_low"] >= 1 / 35 or p["ci_low"] == p["ci_high"] == 0
    assert "over 35 test photos" in report["headline"][0]["text"]
    fam = report["budget"]["families"]["mobilenet_v2"]
    assert len(fam["widths"]) == 2 and fam["ordered"] is False and fam["too_few"] is True
    assert not report["note"], "the demo's note is about CIFAR-10"
    cav = report["data_caveat"]
    assert "35 test" in cav and "2.9 points" in cav and "optimistic" in cav and "data.test_root" in cav
    md = (run / "report.md").read_text()
    assert "CIFAR" not in md.split("## Headline")[0] and cav in md
    assert "## Against the paper's table" in md and "seed's" not in md
    assert "photos [" in md and "too few widths to tell" in md
    paper = md.split("## Against the paper's table")[1].split("\n## ")[0]
    assert "| sd845 (2018) |" in paper and "photos [" in paper, "the paper's table too: its difference has an interval"
    assert any("too short" in x.lower() or "fewer than" in x for x in report["budget"]["short_runs"])


# ---------------------------------------------------------------------------------- folders refused up front
def _folder(src: Path, dst: Path, counts: dict[str, int]) -> Path:
    for cls, n in counts.items():
        (dst / cls).mkdir(parents=True)
        for f in sorted((src / cls).glob("*.jpg"))[:n]:
            shutil.copy2(f, dst / cls / f.name)
    return dst


def test_one_class_and_one_image_class_folders_are_refused(own_photos_pipeline, tmp_path, capsys):
    from training.config import DataConfig, DataKind, SmallClasses
    from training.datasets import list_splits

    photos = _photos(own_photos_pipeline[0])
    classes = sorted(p.name for p in photos.iterdir())
    one = _folder(photos, tmp_path / "one", {classes[0]: 10})
    r = _cli(capsys, "spnas-train", "data=folder", f"data.root={one}", f"run_dir={tmp_path / 'r1'}")
    line = _error_line(r, "spnas-train")
    assert r.returncode == EXIT_INPUT and "1 class folder" in line and "at least 2" in line
    lone = _folder(photos, tmp_path / "lone", {classes[0]: 10, classes[1]: 10, classes[2]: 1})
    r = _cli(capsys, "spnas-pipeline", "experiment=demo", "data=folder", f"data.root={lone}", "socs=[sd845]",
             f"run_dir={tmp_path / 'r2'}")
    line = _error_line(r, "spnas-pipeline")
    assert r.returncode == EXIT_INPUT and f"{classes[2]}: 1 photo" in line and "data.small_classes=exclude" in line
    assert not (tmp_path / "r2" / "warmup").exists(), "refused before any stage ran"
    # the explicit option leaves the class out, with a line saying so
    listing = list_splits(DataConfig(root=str(lone), kind=DataKind.folder, small_classes=SmallClasses.exclude), 0)
    assert listing.classes == classes[:2] and all(len(p) for p, _ in listing.splits.values())
    # split folders: a class without a test photo is never evaluated, so it is refused too
    split = tmp_path / "split"
    _folder(photos, split / "train", {classes[0]: 5, classes[1]: 5})
    _folder(photos, split / "test", {classes[0]: 2, classes[1]: 0})
    with pytest.raises(Exception, match=f"{classes[1]}: 0 photos in test"):
        list_splits(DataConfig(root=str(split), kind=DataKind.folder), 0)


def test_a_held_out_shoot_is_the_test_split(own_photos_pipeline, tmp_path):
    """data.test_root: photos of the same products from another shoot are the test split (the report then does
    not call its figures optimistic)."""
    from spnas.app.pipeline.report import data_caveat
    from training.config import DataConfig, DataKind
    from training.datasets import list_splits

    ov, _, _, _ = own_photos_pipeline
    photos = _photos(ov)
    classes = sorted(p.name for p in photos.iterdir())
    other = _folder(photos, tmp_path / "other-shoot", {c: 3 for c in classes})
    listing = list_splits(DataConfig(root=str(photos), kind=DataKind.folder, test_root=str(other)), 0)
    assert listing.test_from == "test_root" and listing.classes == classes
    assert len(listing.splits["test"][0]) == 3 * len(classes)
    assert all(p.startswith(str(other)) for p in listing.splits["test"][0])
    assert not set(listing.splits["train"][0]) & set(listing.splits["test"][0])
    cfg = compose("pipeline", ["experiment=demo", "data=folder", f"data.root={photos}", f"data.test_root={other}"])
    text = data_caveat(cfg, {"name": "folder", "num_classes": 7, "train": 158, "val": 17, "test": 21,
                             "test_from": "test_root", "skipped_images": 1, "skipped_examples": ["/x/bad.jpg"]})
    assert "held-out" in text and "optimistic" not in text and "1 unreadable image(s) were skipped (e.g. bad.jpg)" in text


# ---------------------------------------------------------------------------------- budgets, tables, wording
def test_step_floors_that_a_folder_cannot_shrink():
    from nas.budget import plan_budget
    from nas.config import SearchConfig
    from training.budget import plan_training
    from training.config import FinetuneConfig, TrainConfig

    p = plan_training(TrainConfig(), 126)  # the README's spnas-train on a 175-photo folder: 2 epochs at batch 128
    assert (p.batch_size, p.total_steps, p.warnings) == (16, 120, ())
    assert p.epochs * p.steps_per_epoch >= 120 and p.lr == pytest.approx(0.1 * 16 / 128)
    assert plan_training(TrainConfig(), 45_000).total_steps == 2 * 351  # a large set: as before
    short = plan_training(TrainConfig(steps=12, min_steps=0, batch_size=16), 126)
    assert short.total_steps == 12 and "fewer than the 120" in short.warnings[0] and "train.min_steps" in short.warnings[0]
    ft = FinetuneConfig().recipe
    assert plan_training(ft, 140, key="finetune.recipe", learns_after=60).total_steps == 64  # 8 epochs of 8 steps
    assert ft.min_steps == 60
    assert "finetune.recipe.min_steps" in plan_training(
        FinetuneConfig(recipe=TrainConfig(steps=6, min_steps=0)).recipe, 140, key="finetune.recipe",
        learns_after=60).warnings[0]
    assert not plan_budget(SearchConfig(), 126).warnings
    assert "search.min_threshold_updates" in plan_budget(SearchConfig(steps=12, min_threshold_updates=0), 126).warnings[0]


def test_a_malformed_table_in_spnas_home_is_reported_once_and_kept_out_of_manifests(tmp_path, monkeypatch, caplog):
    from latency_tables.lookup.table import usable_tables
    from search_spaces import reference
    from spnas.app.jobs.export import table_predictions

    monkeypatch.setenv("SPNAS_HOME", str(tmp_path))
    (tmp_path / "tables").mkdir()
    broken = tmp_path / "tables" / "sd845-measured.json"
    broken.write_text('{"meta": {}, "ops": {"Conv": "fast"}}\n')
    with caplog.at_level(logging.WARNING):
        preds = table_predictions(reference("mobilenet_v2", resolution=96, num_classes=7))
        table_predictions(reference("mobilenet_v2", resolution=96, num_classes=7))
        usable_tables()
    assert "sd845-measured" not in preds and preds["sd845"]["predicted_ms"] > 0
    assert not any("malformed" in (p.get("error") or "") for p in preds.values())
    said = [r.getMessage() for r in caplog.records if "sd845-measured" in r.getMessage()]
    assert len(said) == 1 and "malformed" in said[0] and f"rm {broken}" in said[0] and "spnas-profile" in said[0]


def test_error_wording_and_exit_codes(tmp_path, capsys):
    """The small fixes: `spnas-pipeline soc=...` names `socs`; a missing table is a table error (exit 4, as the
    README says); the below-budget hint does not suggest the loss already in use; an unreadable photo is warned
    about once however often the folder is decoded."""
    from nas.cost import target_verdict

    r = _cli(capsys, "spnas-pipeline", "soc=sd855")
    line = _error_line(r, "spnas-pipeline")
    assert r.returncode == EXIT_CONFIG and "socs=[" in line and "sd845" in line and "Could not override" not in line
    r = _cli(capsys, "spnas-search", "soc.table=sd845-nonexistent", "data=folder", f"data.root={tmp_path}",
             f"run_dir={tmp_path / 's'}")
    line = _error_line(r, "spnas-search")
    assert r.returncode == EXIT_TABLE and "sd845-nonexistent" in line and "spnas-profile" in line
    below = dict(target_verdict(50.0, 40.0, 0.03, [], 20.0, 90.0, 0, 1.0, loss="target"))
    assert "loss=target" not in below["reason"] and "lower search.latency_lambda" in below["reason"]
    assert "search.loss=target" in target_verdict(50.0, 40.0, 0.03, [], 20.0, 90.0, 0, 1.0, loss="log")["reason"]


def test_an_unreadable_photo_is_warned_about_once(own_photos_pipeline, tmp_path, caplog):
    from training.config import DataConfig, DataKind
    from training.datasets import load_data

    photos = _photos(own_photos_pipeline[0])
    classes = sorted(p.name for p in photos.iterdir())[:2]
    folder = _folder(photos, tmp_path / "p", {c: 6 for c in classes})
    (folder / classes[0] / "truncated.jpg").write_bytes((folder / classes[0] / next(
        p.name for p in (folder / classes[0]).iterdir())).read_bytes()[:300])
    with caplog.at_level(logging.WARNING):
        for res in (32, 48):  # the pipeline decodes your folder twice: the proxy data and the photo collection
            b = load_data(DataConfig(root=str(folder), kind=DataKind.folder, resolution=res), 0, tmp_path / "c")
            assert b.summary()["skipped_images"] == 1
    assert sum("truncated.jpg" in r.getMessage() for r in caplog.records) == 1


def test_the_run_level_progress_line_has_an_eta_over_stages():
    from spnas.app.pipeline.progress import RunProgress

    p = RunProgress(["warmup", "search", "search"], bar=False)
    assert p.eta_text().startswith("unknown")
    p.finish("warmup/shared", "ran", 10.0)
    p.plan(["train", "export", "train"])
    line = p.finish("search/sd845", "ran", 30.0)
    assert "2/6" in line and "ETA ~" in line
    assert p.eta_s() == pytest.approx(30.0 + 2 * 20.0 + 20.0)  # a search like the last; unseen kinds: the mean
    p.finish("train/m/s0", "skipped", 0.0)  # a skipped stage costs nothing and teaches nothing
    assert p.eta_s() == pytest.approx(30.0 + 20.0 + 20.0)


def test_the_budget_check_is_not_fired_by_one_validation_image():
    """On 17 validation photos one photo is 5.9 points: one model of four gaining one photo in the last quarter
    once made the report say "budget-limited: still gained > 1 point". The rises are judged within their noise
    (pooled over the runs, a 95% interval against report.rising_pts): that is "cannot tell", not "rising"."""
    from spnas.app.pipeline import evidence as E

    one_photo = 100 / 17
    three = [(0.5, {0: 0.40}), (0.75, {0: 0.45}), (1.0, {0: 0.50})]  # width, its top-1 per seed
    b = E.budget_check({"mobilenet_v2": three}, {"a": [one_photo], "b": [0.0], "c": [0.0], "d": [0.0]}, 1.0)
    assert b["rise"]["state"] == "cannot tell" and not any("still improving in" in r for r in b["reasons"])
    assert "cannot be told" in " ".join(b["reasons"]) and "over 4 runs" in " ".join(b["reasons"])
    steady = {m: [one_photo * 2, one_photo * 2.2] for m in "abcd"}  # every run still rising: that is not noise
    assert E.budget_check({"mobilenet_v2": three}, steady, 1.0)["rise"]["state"] == "rising"
