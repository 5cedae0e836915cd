"""Sweeps (Optuna, SQLite, Pareto CSV/PNG, continued on re-run) and retraining a derived arch with init=inherit."""

import csv

import optuna
import pytest
import torch

from ..conftest import compose


def test_sweep_over_lambda_writes_pareto_and_continues(cifar_root, tmp_path):
    from dataclasses import replace

    from spnas.app.jobs import commands

    data = [f"data.root={cifar_root}", "data.train_limit=320", "data.test_limit=50", f"data.cache_dir={tmp_path / 'c'}"]
    search = ["search.steps=18", "search.warmup_fraction=0", "search.min_threshold_updates=0", "search.batch_size=32",
              "search.finalists.radius=0"]  # the finalists step is tested in test_retrain_inherits_superkernel_weights
    cfg = compose("sweep", ["soc=sd808", *data, *search, f"run_dir={tmp_path / 'sweep'}", "sweep.n_trials=2",
                            "sweep.population=2", "sweep.retrain_epochs=1", "train.min_steps=0", "train.batch_size=32"])
    s = commands.sweep(cfg)
    run = tmp_path / "sweep"
    assert (run / "study.db").exists() and (run / "pareto.png").stat().st_size > 1000
    rows = list(csv.DictReader(open(run / "pareto.csv")))
    assert len(rows) == 2 and any(r["pareto"] == "True" for r in rows)
    for r in rows:
        assert 0 <= float(r["accuracy"]) <= 1 and float(r["predicted_ms"]) > 0 and r["arch"].startswith("r32")
    # trials are searches with the trial's parameter, each in its own folder with its own arch and a short retrain
    for t in s["trials"]:
        assert (run / "trials" / f"{t['trial']:03d}" / "arch.json").exists()
        assert (run / "trials" / f"{t['trial']:03d}" / "retrain" / "metrics.jsonl").exists()
    study = optuna.load_study(study_name=s["study"], storage=s["storage"])
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    # a re-run with a larger budget continues the same study
    cfg = replace(cfg, sweep=replace(cfg.sweep, n_trials=3))
    s2 = commands.sweep(cfg)
    assert len(s2["trials"]) == 3
    assert {t["trial"] for t in s["trials"]} <= {t["trial"] for t in s2["trials"]}


def test_retrain_inherits_superkernel_weights(cifar_root, tmp_path):
    from nas.superkernel import SuperNet, extract_fixed_net
    from search_spaces import ArchSpec, SearchSpace
    from spnas.app.jobs import commands
    from spnas_core.errors import ConfigError
    from training.checkpoints import load_model_file

    data = [f"data.root={cifar_root}", "data.train_limit=320", "data.test_limit=50", f"data.cache_dir={tmp_path / 'c'}"]
    scfg = compose("search", ["soc=sd845", *data, "search=demo", "search.steps=9", "search.warmup_fraction=0",
                              "search.min_threshold_updates=0",
                              "search.batch_size=32", f"run_dir={tmp_path / 's'}"])
    commands.search(scfg)
    arch_path = tmp_path / "s" / "arch.json"
    tcfg = compose("train", ["data=cifar10", *data, f"arch={arch_path}", "init=inherit",
                             f"supernet={tmp_path / 's' / 'supernet.pt'}", "train.epochs=1", "train.min_steps=0", "train.lr=0",
                             "train.warmup_epochs=0", "train.batch_size=32", f"run_dir={tmp_path / 't'}"])
    commands.train(tcfg)
    model, arch, _ = load_model_file(tmp_path / "t" / "model.pt")
    assert arch.to_string() == ArchSpec.load(arch_path).to_string()
    blob = torch.load(tmp_path / "s" / "supernet.pt", weights_only=True)
    sup = SuperNet(SearchSpace.from_dict(blob["space"]), blob["resolution"], blob["width"], blob["num_classes"])
    sup.load_state_dict(blob["state_dict"])
    # the winner's own slices (a finalists pick can differ from the decisions `extract_fixed_net(sup)` reads)
    ref = extract_fixed_net(sup, sup.space.encode(ArchSpec.load(arch_path))).state_dict()
    got = model.state_dict()
    # with lr = 0 only BN running statistics move during the epoch: every weight is the superkernel's
    for k, v in ref.items():
        if "running" not in k and "num_batches" not in k:
            assert torch.allclose(got[k], v), k
    with pytest.raises(ConfigError, match="supernet"):  # at compose time, before any data is decoded
        compose("train", ["data=cifar10", *data, f"arch={arch_path}", "init=inherit", f"run_dir={tmp_path / 'u'}"])
