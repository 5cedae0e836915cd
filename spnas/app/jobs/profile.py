"""`spnas-profile`: build latency tables (measure, model, import) and validate them.

    spnas-profile                                  # measure this machine (table named by its CPU fingerprint)
    spnas-profile device=adb soc=sd845 profile.serial=XYZ profile.benchmark_binary=./benchmark_model
    spnas-profile validate                         # whole networks vs the host table's prediction
    spnas-profile model                            # derive the Snapdragon tables from the public measurements
    spnas-profile import source.path=pixel1_runtime_model.json space=spnas_mnasnet
    spnas-profile wholenet resolutions=[224] num_classes=[1000]     # a table from ~11 whole-network op profiles
    spnas-profile wholenet device=aihub aihub.chipset=qualcomm-snapdragon-845 soc=sd845

The workflows live in `latency_tables` (`host` for this machine's tables, `profiling`, `importers`,
`modeled`); this command wires them to its config and injects the export stage's converter
(`export.tflite.convert_to_tflite`), so table rows and shipped models come from the same conversion.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from export.tflite import convert_to_tflite
from latency_tables.config import ProfileDevice
from latency_tables.measuring.host import (
    host_device_name,
    measure_table,
    overhead_archs,
    start_from_shipped,
    table_keys,
    validate_table,
)
from latency_tables.modelling.modeled import SPECS, fit_measured, modeled_table
from latency_tables.lookup.predictor import predict_latency_ms
from latency_tables.profilers import Profiler
from latency_tables.profilers.factory import make_op_profiler as build_op_profiler
from latency_tables.profilers.factory import make_profiler as build_profiler
from latency_tables.lookup.table import LatencyTable
from search_spaces import SearchSpace
from search_spaces.reference import REFERENCE_NETS
from spnas.app.jobs.config import ProfileAppConfig
from spnas_core.errors import ConfigError
from spnas_core.paths import user_tables_dir
from spnas_core.versions import versions

log = logging.getLogger(__name__)


def make_profiler(cfg: ProfileAppConfig, device: ProfileDevice | None = None) -> Profiler:
    """The local (LiteRT on this CPU) or adb (benchmark_model on a phone) profiler of a config."""
    return build_profiler(device or cfg.device, cfg.profile, cfg.soc)


def _space(cfg: ProfileAppConfig) -> SearchSpace:
    return SearchSpace.from_config(cfg.space)


# ---------------------------------------------------------------------------------- measure
def cmd_measure(cfg: ProfileAppConfig) -> LatencyTable:
    """Profile every key into `<SPNAS_HOME>/tables/<device>.json`, then fit the calibration."""
    profiler = make_profiler(cfg)
    local = cfg.device is ProfileDevice.local
    if local:
        name = cfg.table_name or host_device_name(cfg.profile.threads)
        soc_name = "host CPU"
    else:
        name = cfg.table_name or f"{cfg.soc.name}-measured"
        soc_name = cfg.soc.soc
        profiler.connect()  # type: ignore[attr-defined]
    out = Path(cfg.out or user_tables_dir() / f"{name}.json")
    space = _space(cfg)
    keys = table_keys(space, list(cfg.resolutions), list(cfg.num_classes))
    meta = {"device": name, "soc": soc_name, "provenance": "measured", "date": time.strftime("%Y-%m-%d"),
            "resolutions": list(cfg.resolutions), "num_classes": list(cfg.num_classes), "versions": versions(),
            **profiler.describe()}
    if local and cfg.resume:  # resuming a shipped table of this machine: start from its rows
        start_from_shipped(name, out, cfg.profile.threads)
    fit_on = overhead_archs(space) if cfg.fit_overhead else None
    return measure_table(keys, profiler, out, meta, convert_to_tflite, resume=cfg.resume, force=cfg.force,
                         passes=cfg.profile.passes, fit_on=fit_on,
                         micro_cache=Path(cfg.micro_cache) if cfg.micro_cache else None,
                         retry_refused=cfg.profile.retry_refused)


# ---------------------------------------------------------------------------------- model / import
def cmd_model(cfg: ProfileAppConfig) -> list[Path]:
    """Derive the Snapdragon tables: fit each measured phone, map to each SoC, scale to MobileNetV2."""
    from latency_tables.validating.grounding import validation_summary
    from search_spaces.spaces import SPACES

    resolutions = list(cfg.resolutions)
    keys: set[str] = set()
    for space in SPACES.values():
        keys.update(table_keys(space, resolutions, list(cfg.num_classes)))
    names = cfg.model_socs or list(SPECS)
    unknown = [n for n in names if n not in SPECS]
    if unknown:
        raise ConfigError(f"model_socs: no SoC model for {unknown}; known: {', '.join(SPECS)}")
    fits = fit_measured()
    tables = {n: modeled_table(SPECS[n], fits, sorted(keys), resolutions) for n in SPECS}
    summary = validation_summary(fits, tables)
    written = []
    for n in names:
        t = tables[n]
        t.meta["method"]["validation"] = _table_validation(summary, n)
        path = t.save(Path(cfg.out_dir or user_tables_dir()) / f"{n}.json")
        ref = predict_latency_ms(REFERENCE_NETS["mobilenet_v2"](), t)
        print(f"wrote {path}: {len(t)} ops (others on demand); MobileNetV2 224 predicted {ref:.2f} ms "
              f"(published {SPECS[n].calibration_ms} ms)")
        written.append(path)
    return written


def _table_validation(summary: dict[str, Any], soc: str) -> dict[str, Any]:
    """The validation figures a table's meta carries (the benchmark has the details)."""
    base = SPECS[soc].base
    lodo = [r for r in summary["leave_one_device_out"] if r["held_out"] == base]
    nets = [r for r in summary["whole_network"] if r["model"] == base]
    shared = summary["shared_keys"][soc]
    tau_min = min(r["kendall_tau"] for r in lodo) if lodo else None
    pooled = next((r for r in lodo if r["mapping"].startswith("pooled")), None)
    worst = max((abs(r["ratio_err_pct"]) for r in nets), default=None)
    return {
        "benchmark": "python -m bench.bench_modeled_tables (docs/benchmarks.md)",
        "leave_one_device_out": {"held_out": base, "pooled_others_tau": pooled and pooled["kendall_tau"],
                                 "pooled_others_mape_pct": pooled and pooled["mape_pct"], "min_tau": tau_min,
                                 "target_tau": summary["held_out_tau_target"],
                                 "met": bool(pooled and pooled["kendall_tau"] >= summary["held_out_tau_target"])},
        "whole_network_ratios": {"phone": base, "n": len(nets), "max_abs_err_pct": worst,
                                 "within_target": sum(abs(r["ratio_err_pct"]) <= summary["whole_network_target_pct"]
                                                      for r in nets),
                                 "target_pct": summary["whole_network_target_pct"],
                                 "met": worst is not None and worst <= summary["whole_network_target_pct"]},
        "shared_keys": {**shared, "target_pct": summary["shared_key_target_pct"],
                        "met": bool(shared.get("n")) and shared["max_abs_err_pct"] <= summary["shared_key_target_pct"]},
    }


def cmd_import(cfg: ProfileAppConfig) -> Path:
    """Import a Single-Path NAS JSON or an OFA / ProxylessNAS YAML table (the format is read from the content)."""
    from latency_tables.importing.importers import check_format, import_ofa_yaml, import_spnas_json, read_source

    src = cfg.source
    if not src.path:
        raise ConfigError("spnas-profile import needs source.path=<file> (a Single-Path NAS JSON or an "
                          "OFA/ProxylessNAS YAML)")
    device = src.device or Path(src.path).stem
    fmt = check_format(src.path, read_source(src.path), src.format.name, warn=False)  # the importer warns once
    if fmt == "spnas":
        table = import_spnas_json(src.path, _space(cfg), src.resolution, src.num_classes, device, src.k3e3.name,
                                  src.fixed_ms, src.classifier_ms)
    else:
        table = import_ofa_yaml(src.path, src.expand.name, device,  # type: ignore[arg-type]
                                allow_partial=src.allow_partial)
    out = table.save(Path(src.out or user_tables_dir() / f"{device}.json"))
    print(f"wrote {out}: {len(table)} rows imported ({table.meta['method'].get('flavour', fmt)})")
    return out


# ---------------------------------------------------------------------------------- validate
def cmd_validate(cfg: ProfileAppConfig) -> dict[str, Any]:
    """Whole networks measured on this CPU vs the table's predictions (`latency_tables.measuring.host.validate_table`)."""
    table = LatencyTable.load(cfg.validate.table)
    result = validate_table(table, _space(cfg), cfg.validate, make_profiler(cfg, ProfileDevice.local),
                            convert_to_tflite)
    print(json.dumps({"table": table.device, "absolute": result["metrics"],
                      "speed_factor": result["speed"] and result["speed"]["factor"],
                      "at_this_speed": result["metrics_at_speed"]}, indent=1))
    return result


# ---------------------------------------------------------------------------------- whole-network profiles
def make_op_profiler(cfg: ProfileAppConfig, jobs_file: Path) -> Any:
    """The whole-network op profiler of a config (`latency_tables.profilers.factory.make_op_profiler`); a
    phone over adb is connected first."""
    prof = build_op_profiler(cfg.device, cfg.profile, cfg.soc, cfg.aihub, jobs_file)
    if cfg.device is ProfileDevice.adb:
        prof.connect()  # type: ignore[attr-defined]
    return prof


def cmd_wholenet(cfg: ProfileAppConfig) -> Any:
    """A table from whole-network op profiles: the covering design's networks (every key in
    `wholenet.k` of them), converted once, profiled per op, attributed (`latency_tables.measuring.wholenet`)."""
    from latency_tables.measuring.covering import design
    from latency_tables.measuring.host import whole_model_path
    from latency_tables.measuring.wholenet import device_runs, profile_design, profiles_dir

    space = _space(cfg)
    res = cfg.wholenet.resolution or cfg.resolutions[0]
    classes = list(cfg.num_classes)
    keys = table_keys(space, [res], classes)
    d = design(space, keys, cfg.wholenet.k, [res], classes)
    runs = device_runs(d, len(keys), 16 if cfg.fit_overhead else 0)
    print(f"covering design: {len(d.networks)} networks ({d.space_networks} of space '{space.name}', "
          f"{len(d.networks) - d.space_networks} reference nets) hold all {len(keys)} keys at {res} px, each in >= "
          f"{cfg.wholenet.k} network(s) where the space has it; micro-models would need {runs['micro_model_runs']} "
          f"device runs ({runs['ratio']:.1f}x as many)")
    if cfg.wholenet.dry_run:
        for a in d.networks:
            print(f"  {a.name}: {a.to_string()}")
        return d
    if cfg.device is ProfileDevice.local:
        name = cfg.table_name or f"{host_device_name(cfg.profile.threads)}-wholenet"
        soc_name = "host CPU"
    elif cfg.device is ProfileDevice.adb:
        name, soc_name = cfg.table_name or f"{cfg.soc.name}-wholenet", cfg.soc.soc
    else:
        name = cfg.table_name or f"{cfg.soc.name if cfg.soc.name != 'host' else 'aihub'}-aihub"
        soc_name = cfg.aihub.chipset or cfg.aihub.device or ""
    out = Path(cfg.out or user_tables_dir() / f"{name}.json")
    profiler = make_op_profiler(cfg, profiles_dir(out) / "aihub_jobs.json")
    meta = {"device": name, "soc": soc_name, "resolutions": [res], "num_classes": classes, "versions": versions(),
            **profiler.describe()}
    result = profile_design(d, profiler, lambda a: whole_model_path(a, convert_to_tflite), out, meta,
                            resume=cfg.resume, force=cfg.force)
    t = result.table
    learned = {k: v for k, v in profiler.describe().items() if k in ("aihub_device", "chipset")}
    if learned:  # AI Hub says which phone it gave once a job has run
        t.meta.update(learned)
        t.save(out)
    w = t.meta["wholenet"]
    print(f"wrote {out}: {len(t)} rows from {w['networks']} whole-network profiles ({len(result.profiled)} this run, "
          f"{len(result.reused)} reused), overhead {t.overhead_ms:.3f} ms, complete={t.meta['complete']}; judge it "
          f"with `spnas-profile validate validate.table={out}`")
    return t


COMMANDS = {"measure": cmd_measure, "model": cmd_model, "import": cmd_import, "validate": cmd_validate,
            "wholenet": cmd_wholenet}


def run(cfg: ProfileAppConfig) -> Any:
    """Run the config's `command`."""
    return COMMANDS[cfg.command.name](cfg)
