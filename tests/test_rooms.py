"""Where things live (docs/design.md, "Folders"): loading a table needs no torch, every extension point has
one declared interface that its implementations subclass or match, and a SoC is added in one place."""

from __future__ import annotations

import ast
import inspect
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("spnas", "spnas_core", "nas", "training", "search_spaces", "latency_tables", "export", "retrieval",
            "configs")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_loading_a_table_does_not_import_torch():
    """A table is JSON and its key format is strings: loading one by name and reading rows and keys must not
    pay for torch (the micro-models that measure a key live in `latency_tables.measuring.micro`)."""
    code = ("import sys\n"
            "from latency_tables.lookup.table import LatencyTable, available_tables\n"
            "from latency_tables.lookup.keys import ops_of_references, parse_op_key\n"
            "t = LatencyTable.load('sd845')\n"
            "key = next(iter(t.ops))\n"
            "assert t.ms(key) > 0 and parse_op_key(key)['op']\n"
            "assert ops_of_references(224, [1000])\n"
            "assert available_tables()\n"
            "loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
            "assert not loaded, loaded[:5]\n")
    r = _run(code)
    assert r.returncode == 0, r.stderr[-2000:]


def _classes_defined(name: str) -> list[str]:
    """Every `class <name>` statement in the project's packages, as `path:line`."""
    out = []
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            if "proto" in p.parts:
                continue
            for node in ast.walk(ast.parse(p.read_text())):
                if isinstance(node, ast.ClassDef) and node.name == name:
                    out.append(f"{p.relative_to(ROOT)}:{node.lineno}")
    return out


def _implementations(module, method: str) -> list[type]:
    """The classes a module defines that implement `method` (the interface itself left out)."""
    return [c for _, c in inspect.getmembers(module, inspect.isclass)
            if c.__module__ == module.__name__ and method in vars(c) and not getattr(c, "_is_protocol", False)]


def _subclasses(c: type, interface: type) -> bool:
    """`c` names `interface` among its bases (issubclass() refuses protocols with data members)."""
    return interface in inspect.getmro(c)


def test_every_extension_point_is_declared_once():
    for name, where in (("Profiler", "latency_tables/profilers/base.py"),
                        ("OpProfiler", "latency_tables/profilers/base.py"),
                        ("Embedder", "retrieval/interface.py"), ("Resolver", "retrieval/interface.py"),
                        ("IndexFamily", "retrieval/interface.py"),
                        ("SearchCost", "nas/cost.py")):
        found = _classes_defined(name)
        assert len(found) == 1 and found[0].startswith(where + ":"), (name, found)


def test_profilers_subclass_their_declared_interface():
    from latency_tables.profilers import adb, aihub, litert_ops, local
    from latency_tables.profilers.base import OpProfiler, Profiler

    measuring = [c for m in (local, adb, aihub, litert_ops) for c in _implementations(m, "measure")]
    profiling = [c for m in (local, adb, aihub, litert_ops) for c in _implementations(m, "profile_ops")]
    assert {c.__name__ for c in measuring} == {"LocalProfiler", "AdbProfiler", "AiHubProfiler", "LiteRtOpProfiler"}
    assert {c.__name__ for c in profiling} == {"AdbProfiler", "AiHubProfiler", "LiteRtOpProfiler"}
    assert all(_subclasses(c, Profiler) for c in measuring), measuring
    assert all(_subclasses(c, OpProfiler) for c in profiling), profiling


def test_the_profiler_factory_builds_from_the_profiler_config():
    import pytest

    from latency_tables.config import ProfileDevice, ProfilerConfig
    from latency_tables.profilers.base import Profiler
    from latency_tables.profilers.factory import make_profiler
    from latency_tables.profilers.local import LocalProfiler
    from spnas_core.errors import ConfigError

    p = make_profiler(ProfileDevice.local, ProfilerConfig(threads=2, cpus=None, warmup_runs=3, num_runs=7,
                                                          min_time_s=0.1, repeats=4))
    assert isinstance(p, LocalProfiler) and isinstance(p, Profiler)
    assert (p.threads, p.cpus, p.warmup_runs, p.num_runs, p.min_time_s, p.repeats) == (2, None, 3, 7, 0.1, 4)
    with pytest.raises(ConfigError, match="wholenet"):
        make_profiler(ProfileDevice.aihub, ProfilerConfig())


def test_the_op_profiler_factory_builds_from_its_configs(tmp_path):
    import pytest

    from latency_tables.config import AiHubConfig, ProfileDevice, ProfilerConfig
    from latency_tables.profilers.aihub import AiHubProfiler
    from latency_tables.profilers.base import OpProfiler
    from latency_tables.profilers.factory import make_op_profiler
    from latency_tables.profilers.litert_ops import LiteRtOpProfiler
    from spnas_core.errors import ConfigError

    core = max(os.sched_getaffinity(0))
    p = make_op_profiler(ProfileDevice.local, ProfilerConfig(threads=2, cpus=[core], warmup_runs=3, num_runs=7,
                                                             repeats=4))
    assert isinstance(p, LiteRtOpProfiler) and isinstance(p, OpProfiler)
    assert (p.threads, p.cpus, p.warmup_runs, p.num_runs, p.repeats) == (2, [core], 3, 7, 4)
    hub = make_op_profiler(ProfileDevice.aihub, ProfilerConfig(), aihub=AiHubConfig(chipset="qualcomm-snapdragon-845"),
                           jobs_file=tmp_path / "jobs.json")
    assert isinstance(hub, AiHubProfiler) and hub.jobs_file == tmp_path / "jobs.json"
    with pytest.raises(ConfigError, match="needs a device"):
        make_op_profiler(ProfileDevice.aihub, ProfilerConfig(), aihub=AiHubConfig())


def test_embedders_one_interface_one_backend_list():
    from retrieval import embedders
    from retrieval.config import Backend
    from retrieval.interface import Embedder
    from spnas.app.jobs.retrieval_eval import CheckpointEmbedder

    assert embedders.BACKENDS == tuple(b.name for b in Backend)
    assert set(embedders.IMPLEMENTATIONS) == set(Backend)
    impls = _implementations(embedders, "__init__")
    assert {c.__name__ for c in impls} >= {"LiteRTEmbedder", "OnnxEmbedder", "TorchEmbedder", "MediaPipeImageEmbedder"}
    assert all(_subclasses(c, Embedder) for c in [*impls, CheckpointEmbedder]), impls


def test_resolvers_subclass_the_declared_resolver(tmp_path):
    from retrieval import resolver
    from retrieval.interface import Resolver
    from retrieval.k8s.resolver import KubernetesResolver

    impls = [*_implementations(resolver, "addresses"), KubernetesResolver]
    assert {c.__name__ for c in impls} == {"DirectoryResolver", "StaticResolver", "KubernetesResolver"}
    assert all(_subclasses(c, Resolver) for c in impls)
    assert isinstance(resolver.make_resolver(f"dir:{tmp_path}"), Resolver)


def test_index_families_subclass_the_declared_family():
    from retrieval import factory
    from retrieval.config import FactoryConfig
    from retrieval.interface import IndexFamily

    impls = _implementations(factory, "factory")
    assert {c.__name__ for c in impls} == {"FlatFamily", "HnswFamily", "IvfPqDiskFamily"}
    assert all(_subclasses(c, IndexFamily) for c in impls)
    assert [type(f) for f in factory.FAMILIES] == [factory.FlatFamily, factory.HnswFamily, factory.IvfPqDiskFamily]
    cfg = FactoryConfig()
    assert all(isinstance(f, IndexFamily) for f in factory.FAMILIES) and factory.FAMILIES[-1].fits(10**9, cfg)


def test_search_costs_match_the_declared_cost():
    from latency_tables.lookup.fleet import FleetLatency
    from latency_tables.lookup.predictor import SpaceLatency
    from latency_tables.lookup.table import LatencyTable
    from nas.cost import SearchCost, TableCost
    from search_spaces import default_space

    space = default_space()
    lats = [SpaceLatency(space, LatencyTable.load(n)) for n in ("sd845", "sd808")]
    assert _subclasses(TableCost, SearchCost) and isinstance(TableCost(lats[0], 20.0), SearchCost)
    assert isinstance(FleetLatency(lats, [20.0, 40.0]), SearchCost)


def test_a_soc_added_in_one_place_reaches_the_soc_group_and_the_pipeline_defaults():
    """`latency_tables.socs.SOCS` is the one list of SoCs: a record added there (and nowhere else) is a `soc`
    option, a known device of the pipeline and one of its default devices."""
    code = ("import dataclasses\n"
            "from latency_tables import socs\n"
            "socs.SOCS['sd999'] = socs.SocFacts('sd999', 'Snapdragon 999', 'big cores', 'arm64-v8a', 'f0', 50.0)\n"
            "from spnas.app.cli import compose as c\n"
            "from spnas.app.pipeline.config import PipelineAppConfig\n"
            "assert 'sd999' in c.group_options('soc'), c.group_options('soc')\n"
            "s = c.compose('search', ['soc=sd999'])\n"
            "assert (s.soc.name, s.soc.soc, s.soc.table, s.soc.taskset_mask) == "
            "('sd999', 'Snapdragon 999', 'sd999', 'f0'), s.soc\n"
            "p = c.compose('pipeline', ['socs=[sd999]'])\n"
            "assert p.soc_configs['sd999'].soc == 'Snapdragon 999' and p.socs == ['sd999']\n"
            "default = {f.name: f for f in dataclasses.fields(PipelineAppConfig)}['socs'].default_factory()\n"
            "assert 'sd999' in default, default\n")
    r = _run(code)
    assert r.returncode == 0, r.stderr[-2000:]


def test_a_subcommand_is_rewritten_from_its_commands_enum():
    from spnas.app.cli.main import subcommand_argv, subcommand_usage
    from spnas.app.jobs.config import ProfileCommand
    from spnas.app.serving.config import IndexCommand, ServeCommand

    assert subcommand_argv(["import", "source.path=x"], ProfileCommand) == ["command=import", "source.path=x"]
    assert subcommand_argv(["build-due", "bundle=b"], IndexCommand) == ["command=build_due", "bundle=b"]
    assert subcommand_argv(["gateway"], ServeCommand) == ["command=gateway"]
    assert subcommand_argv(["soc=sd845"], ProfileCommand) == ["soc=sd845"]
    assert subcommand_argv(["build"], None) == ["build"]
    assert subcommand_usage(IndexCommand) == "[build|build-due|serve|fetch|list|retain] "
    assert subcommand_usage(ServeCommand) == "[all|gateway] " and subcommand_usage(None) == ""
