"""One warm-up for every phone: a search forked from a shared warm-up takes exactly the steps an unshared
search with the same seed takes (the warm-up ends inside an epoch here, the hard case)."""

from __future__ import annotations

import torch

from latency_tables.lookup.table import LatencyTable
from nas.config import FinalistsConfig, SearchConfig
from nas.search import run_search, run_warmup
from search_spaces import default_space
from training.config import Runtime
from training.datasets import load_data

from ..conftest import compose


def _setup(cifar_root, tmp_path):
    cfg = compose("search", ["data=cifar10", f"data.root={cifar_root}", "data.train_limit=400", "data.test_limit=50",
                             f"data.cache_dir={tmp_path / 'cache'}"])
    data = load_data(cfg.data, 0)
    search = SearchConfig(steps=30, warmup_fraction=0.4, min_threshold_updates=0, batch_size=32, min_batch_size=8,
                          decision_window_min_steps=5, warmup_path_keep=0.6, dropout=0.1,
                          finalists=FinalistsConfig(radius=0),  # what is shared is the warm-up, tested here
                          thresholds=cfg.search.thresholds, weights=cfg.search.weights)
    return search, data


def test_a_forked_search_equals_an_unshared_one(cifar_root, tmp_path):
    search, data = _setup(cifar_root, tmp_path)
    space, rt = default_space(), Runtime(device="cpu", threads=2)
    table = LatencyTable.load("sd845")
    alone = run_search(search, space, table, data, tmp_path / "alone", name="sd845", seed=3, runtime=rt)
    b = alone["budget"]
    assert b["warmup_steps"] % b["steps_per_epoch"] != 0, "the warm-up must end inside an epoch for this test"
    warm = run_warmup(search, space, data, tmp_path / "warm", seed=3, runtime=rt)
    assert run_warmup(search, space, data, tmp_path / "warm", seed=3, runtime=rt) == warm, "done once, then reused"
    forked = run_search(search, space, table, data, tmp_path / "forked", name="sd845", seed=3, runtime=rt, warmup=warm)
    assert forked["choices"] == alone["choices"] and forked["cost"] == alone["cost"]
    a = torch.load(tmp_path / "alone" / "supernet.pt", weights_only=True)["state_dict"]
    f = torch.load(tmp_path / "forked" / "supernet.pt", weights_only=True)["state_dict"]
    assert a.keys() == f.keys() and all(torch.equal(a[k], f[k]) for k in a), "bit-identical weights and thresholds"
    # the logs agree too, but for the per-step cost the warm-up could not average (it had no table)
    la, lf = alone["decision"], forked["decision"]
    assert la == lf
    import json

    ra = [json.loads(x) for x in (tmp_path / "alone" / "search_log.jsonl").read_text().splitlines()]
    rf = [json.loads(x) for x in (tmp_path / "forked" / "search_log.jsonl").read_text().splitlines()]
    skip = {"mean_step_ms", "epoch_s", "forked_from"}
    assert [{k: v for k, v in r.items() if k not in skip} for r in ra] == \
           [{k: v for k, v in r.items() if k not in skip} for r in rf]
    fork_epoch = b["warmup_steps"] // b["steps_per_epoch"]
    assert all(r.get("forked_from") for r in rf[:fork_epoch]) and ra[fork_epoch]["mean_step_ms"] is not None


def test_one_warmup_serves_searches_whose_thresholds_move_differently(cifar_root, tmp_path):
    """The warm-up never moves the thresholds, so a search forked from it keeps its own threshold optimizer:
    a fork with RMSProp thresholds from an Adam warm-up equals that RMSProp search run alone (loading the
    warm-up's optimizer used to impose Adam's settings, or fail at the first threshold step)."""
    from dataclasses import replace

    from training.config import OptimizerKind

    search, data = _setup(cifar_root, tmp_path)
    space, rt = default_space(), Runtime(device="cpu", threads=2)
    table = LatencyTable.load("sd845")
    adam = replace(search.thresholds, optimizer=OptimizerKind.adam)
    rmsprop = replace(search.thresholds, optimizer=OptimizerKind.rmsprop, rmsprop_eps=1e-8, momentum=0.0, lr=0.02)
    warm = run_warmup(replace(search, thresholds=adam), space, data, tmp_path / "warm", seed=5, runtime=rt)
    other = replace(search, thresholds=rmsprop)
    alone = run_search(other, space, table, data, tmp_path / "alone", name="sd845", seed=5, runtime=rt)
    forked = run_search(other, space, table, data, tmp_path / "forked", name="sd845", seed=5, runtime=rt, warmup=warm)
    assert forked["choices"] == alone["choices"] and forked["cost"] == alone["cost"]
    a = torch.load(tmp_path / "alone" / "supernet.pt", weights_only=True)["state_dict"]
    f = torch.load(tmp_path / "forked" / "supernet.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], f[k]) for k in a), "bit-identical weights and thresholds"
    last = torch.load(tmp_path / "forked" / "last.pt", weights_only=False)["opt_t"]["param_groups"][0]
    assert "alpha" in last and "betas" not in last, "the fork's thresholds moved with RMSProp"
    # a run whose thresholds did move is resumed only with their optimizer: another is one clear error
    import pytest

    from spnas_core.errors import RunStateError

    with pytest.raises(RunStateError, match="another optimizer"):
        run_search(replace(search, thresholds=adam), space, table, data, tmp_path / "forked", name="sd845", seed=5,
                   runtime=rt, resume=True)
