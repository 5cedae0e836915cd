"""Typed configuration: types and choices checked at compose time, did-you-mean, one source of truth."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import spnas
from nas.config import LossForm, SearchConfig
from spnas.app.cli.compose import APPS
from spnas_core.config import to_plain
from spnas_core.errors import ConfigError
from training.config import DataConfig, TrainConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("app", sorted(APPS))
def test_every_command_composes_to_its_dataclass(app):
    overrides = {"export": ["checkpoint=x.pt"], "retrieval_eval": ["bundle=b"], "serve": ["bundle=b"]}.get(app, [])
    cfg = spnas.compose(app, overrides)
    assert isinstance(cfg, APPS[app])
    for f in dataclasses.fields(cfg):  # nested groups are typed objects, never dicts
        v = getattr(cfg, f.name)
        if f.name in ("data", "search", "train", "export", "soc", "space"):
            if v is None and f.default is None:  # an optional group left unset (serve's data: the bundle's photos)
                continue
            assert dataclasses.is_dataclass(v), (app, f.name, type(v))


@pytest.mark.parametrize("overrides, key, words", [
    (["search.steps=abc"], "search.steps", ["Integer"]),
    (["search.loss=foo"], "search.loss", ["log", "target", "target_one_sided"]),
    (["data.resolution=big"], "data.resolution", ["Integer"]),
    (["search.weights.optimizer=lamb"], "search.weights.optimizer", ["sgd", "rmsprop", "adam"]),
    (["search.warmup_fraction=2"], "search.warmup_fraction", ["between"]),
    (["search.loss=target", "search.target_fraction_of=null"], "search.loss", ["search.target_ms"]),
])
def test_wrong_type_or_choice_fails_at_compose_time_naming_the_key(overrides, key, words):
    with pytest.raises(ConfigError) as e:
        spnas.compose("search", ["data.root=/nonexistent/never/decoded", *overrides])
    msg = str(e.value)
    assert key in msg and all(w in msg for w in words), msg
    assert "nonexistent" not in msg  # failed before any data was looked at


def test_did_you_mean_on_mistyped_keys_and_options():
    with pytest.raises(ConfigError, match=r"did you mean `search.latency_lambda`"):
        spnas.compose("search", ["search.lamda=0.1"])
    with pytest.raises(ConfigError, match=r"did you mean `search.latency_lambda`"):
        spnas.compose("search", ["+search.lamda=0.1"])  # `+` cannot smuggle unknown keys past the schema
    with pytest.raises(ConfigError, match=r"renamed: use `search.latency_lambda=0.1`"):
        spnas.compose("search", ["search.lambda=0.1"])
    with pytest.raises(ConfigError, match=r"no `soc` option named 'sd855' \(did you mean `sd845`"):
        spnas.compose("search", ["soc=sd855"])
    with pytest.raises(ConfigError, match=r"socs: unknown device 'sd855' \(did you mean `sd845`"):
        spnas.compose("pipeline", ["socs=[sd855]"])
    with pytest.raises(ConfigError, match=r"unknown reference net 'mobilenetv2' \(did you mean `mobilenet_v2`"):
        spnas.compose("pipeline", ["baselines=[mobilenetv2]"])
    with pytest.raises(ConfigError, match=r"replaced: use search.steps"):
        spnas.compose("search", ["search.epochs=3"])
    with pytest.raises(ConfigError, match="force takes stage kinds"):
        spnas.compose("pipeline", ["force=[serch]"])


def test_defaults_live_in_one_place():
    # the schema is the only place a default is written: presets hold overrides only
    for preset in CONFIGS.rglob("*.yaml"):
        text = preset.read_text()
        assert "label_smoothing" not in text and "weight_decay" not in text, preset
    assert not (CONFIGS / "search" / "default.yaml").exists() and not (CONFIGS / "train").exists()
    assert SearchConfig().label_smoothing == TrainConfig().label_smoothing  # they used to disagree (0.1 vs 0.0)
    # a composed config carries exactly the schema default when nothing overrides it
    assert spnas.compose("search").search.latency_lambda == SearchConfig().latency_lambda
    assert spnas.compose("search").search.loss is LossForm.target


def test_the_search_space_is_defined_once():
    from search_spaces.space import DEFAULT_CHOICES, MOBILENET_V3_LARGE_SPACE
    from search_spaces.spaces import SPACES

    assert not (CONFIGS / "space").exists()
    cfg = spnas.compose("search")
    assert to_plain(cfg.space) == MOBILENET_V3_LARGE_SPACE.to_dict()
    assert tuple(cfg.space.choices) == DEFAULT_CHOICES == MOBILENET_V3_LARGE_SPACE.choices
    from spnas.app.cli.compose import group_options

    assert set(SPACES) == set(group_options("space"))


def test_soc_facts_are_defined_once():
    from latency_tables.modelling import modeled
    from latency_tables.socs import SOCS, all_devices

    assert not (CONFIGS / "soc").exists()
    cfg = spnas.compose("pipeline")
    assert set(cfg.soc_configs) == set(all_devices())
    for name, facts in SOCS.items():
        soc = cfg.soc_configs[name]
        assert (soc.abi, soc.taskset_mask, soc.soc, soc.table) == (facts.abi, facts.taskset_mask, facts.soc, name)
        spec = modeled.SPECS[name]
        assert (spec.abi, spec.taskset_mask, spec.calibration_ms) == (facts.abi, facts.taskset_mask,
                                                                      facts.mobilenet_v2_ms)


def test_library_entry_points_take_their_layers_config_and_plain_arguments():
    """What the pipeline and a notebook call takes the layer's own config plus the space, table, data and
    run folder, never a command's config (`*AppConfig`)."""
    import importlib
    import inspect
    import pkgutil

    from nas.search import run_search
    from nas.sweep import run_sweep
    from training.datasets import load_data
    from training.loop import fit, train_model

    expect = {run_search: ["search", "space", "table", "data", "run_dir"],
              train_model: ["arch", "train", "data", "run_dir"],
              run_sweep: ["sweep", "search", "train", "space", "table", "data", "run_dir"],
              load_data: ["cfg"], fit: ["model", "data", "tcfg", "run_dir"]}
    for fn, params in expect.items():
        assert list(inspect.signature(fn).parameters)[:len(params)] == params, fn
    assert inspect.signature(run_search).parameters["search"].annotation == "SearchConfig"
    assert inspect.signature(train_model).parameters["train"].annotation == "TrainConfig"
    offenders = []
    for pkg in ("search_spaces", "latency_tables", "training", "nas", "export", "retrieval", "spnas_core"):
        root = importlib.import_module(pkg)
        for info in pkgutil.walk_packages(root.__path__, pkg + "."):
            if info.name.endswith(("_pb2", "_pb2_grpc")):
                continue
            mod = importlib.import_module(info.name)
            for name, fn in inspect.getmembers(mod, inspect.isfunction):
                if fn.__module__ == mod.__name__ and "AppConfig" in str(inspect.signature(fn)):
                    offenders.append(f"{info.name}.{name}")
    assert not offenders, f"library functions taking a command config: {offenders}"
    with pytest.raises(ConfigError, match="data.resolution"):
        DataConfig(root="x", resolution=2)


def test_controls_socs_names_winners_of_the_run():
    """`controls.socs` limits the controls to some winners (the demo: sd845); an unknown device is refused at
    compose time, with a suggestion; a known one the run does not search is ignored (the demo with socs=[host])."""
    cfg = spnas.compose("pipeline", ["experiment=demo"])
    assert cfg.controls.socs == ["sd845"]
    assert spnas.compose("pipeline", ["experiment=evidence"]).controls.socs is None  # every winner, the fleet too
    spnas.compose("pipeline", ["experiment=evidence", "controls.socs=[fleet]"])
    assert spnas.compose("pipeline", ["experiment=demo", "socs=[host]"]).controls.socs == ["sd845"]
    with pytest.raises(ConfigError, match="unknown device 'sd854'.*did you mean .sd845"):
        spnas.compose("pipeline", ["experiment=demo", "controls.socs=[sd854]"])


def test_export_socs_names_the_winners_exported():
    """The demo exports the sd845 winner only (time); by default every winner is; an unknown device is refused."""
    assert spnas.compose("pipeline", ["experiment=demo"]).export_socs == ["sd845"]
    assert spnas.compose("pipeline", ["experiment=evidence"]).export_socs == []  # the 1.0 baseline only (time)
    assert spnas.compose("pipeline", ["experiment=evidence_gpu"]).export_socs is None
    with pytest.raises(ConfigError, match="export_socs: unknown device 'sd80'.*did you mean"):
        spnas.compose("pipeline", ["experiment=demo", "export_socs=[sd80]"])
