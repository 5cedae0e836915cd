"""What each `spnas-<command>` runs, given its composed config: the command config unpacked into the
plain arguments the library takes (its own layer's config, the space, the table, the data, the run
folder). The CLIs and the Python API (`spnas.search`, `spnas.train`, ...) both call these, so a
notebook and a command run the same code; the pipeline calls the library the same way.
"""

from __future__ import annotations

from typing import Any

from spnas.app.jobs.config import ExportAppConfig, SearchAppConfig, SweepAppConfig, TrainAppConfig
from spnas_core.errors import ConfigError
from training.datasets import DataBundle


def resolve_soc(cfg: SearchAppConfig | SweepAppConfig) -> Any:
    """`soc=host` is the table measured on this machine (by fingerprint; `soc.if_no_table`,
    `soc.stale_check`); any other device's table is used as named."""
    from export.tflite import convert_to_tflite
    from latency_tables.lookup.keys import DEPLOY_NUM_CLASSES
    from latency_tables.measuring.host import prepare_soc
    from search_spaces import SearchSpace

    soc, _ = prepare_soc(cfg.soc, SearchSpace.from_config(cfg.space), cfg.search.latency_resolution,
                         DEPLOY_NUM_CLASSES, convert_to_tflite)
    if soc is None:
        raise ConfigError("soc.if_no_table=skip leaves this command nothing to search for; use error or profile")
    return soc


def search(cfg: SearchAppConfig, data: DataBundle | None = None) -> dict[str, Any]:
    """`spnas-search`: resolve the device's table, then `nas.search.run_search`."""
    from nas.search import run_search
    from search_spaces import SearchSpace

    soc = resolve_soc(cfg)
    space = SearchSpace.from_config(cfg.space)
    if cfg.groundtruth.enabled and space.name != "nasbench_macro":
        raise ConfigError(f"groundtruth.enabled: only space=nasbench_macro has ground truth (this search's space is "
                          f"{space.name})")
    summary = run_search(cfg.search, space, soc.table, data if data is not None else cfg.data, cfg.run_dir,
                         proxy=cfg.proxy, name=cfg.soc.name, seed=cfg.seed, resume=cfg.resume, runtime=cfg.runtime())
    if cfg.groundtruth.enabled:
        summary["groundtruth"] = judge_by_groundtruth(cfg, summary, soc.table)
    return summary


def judge_by_groundtruth(cfg: SearchAppConfig, summary: dict[str, Any], table_ref: str) -> dict[str, Any]:
    """The winner looked up in NAS-Bench-Macro's table (`nas.groundtruth.judge_search`), added to the run's
    search_summary.json."""
    from pathlib import Path

    from latency_tables.lookup.table import LatencyTable
    from nas.groundtruth import NasBenchMacro, code_cost, judge_search
    from spnas_core.files import write_json_atomic
    from training.distributed import env_from_torchrun

    table = LatencyTable.load(table_ref)
    gt = NasBenchMacro.load(cfg.groundtruth.path)
    judged = judge_search(summary, gt, code_cost(table, cfg.search.latency_resolution))
    judged["unit"] = table.unit
    if env_from_torchrun().is_main:
        write_json_atomic(Path(cfg.run_dir) / "search_summary.json", {**summary, "groundtruth": judged})
    return judged


def train(cfg: TrainAppConfig, data: DataBundle | None = None) -> dict[str, Any]:
    """`spnas-train`: `training.loop.train_model` (init=inherit: from the search's supernet)."""
    from nas.superkernel import inherit_weights
    from training.config import InitKind
    from training.loop import train_model

    supernet = cfg.supernet if cfg.init is InitKind.inherit else None
    return train_model(cfg.arch, cfg.train, data if data is not None else cfg.data, cfg.run_dir, proxy=cfg.proxy,
                       seed=cfg.seed, resume=cfg.resume, runtime=cfg.runtime(), supernet=supernet,
                       inherit=inherit_weights, latency_resolution=cfg.latency_resolution)


def sweep(cfg: SweepAppConfig) -> dict[str, Any]:
    """`spnas-sweep`: `nas.sweep.run_sweep` on the device's table."""
    from nas.sweep import run_sweep
    from search_spaces import SearchSpace

    soc = resolve_soc(cfg)
    return run_sweep(cfg.sweep, cfg.search, cfg.train, SearchSpace.from_config(cfg.space), soc.table, cfg.data,
                     cfg.run_dir, proxy=cfg.proxy, name=cfg.soc.name, seed=cfg.seed, runtime=cfg.runtime())


def export(cfg: ExportAppConfig, data: DataBundle | None = None) -> dict[str, Any]:
    """`spnas-export`: `spnas.app.jobs.export.run_export` (conversion, parity, latency on every table)."""
    from spnas.app.jobs.export import run_export

    return run_export(cfg.export, cfg.checkpoint, data if data is not None else cfg.data, cfg.out_dir, arch=cfg.arch,
                      seed=cfg.seed, threads=cfg.threads)
