"""`spnas-profile`: build latency tables (measure, model, import) and validate them.

    spnas-profile                                  # measure the host table with the local profiler
    spnas-profile device=adb soc=sd845 profile.serial=XYZ profile.benchmark_binary=./benchmark_model
    spnas-profile validate                         # whole networks vs the host table's prediction
    spnas-profile model                            # write the modeled Snapdragon tables
    spnas-profile import source.path=lut.yaml source.format=ofa source.expand=channels

Micro-models are converted with the export stage's converter (`export.tflite.convert_to_tflite`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import torch

from export.tflite import convert_to_tflite
from latency_tables import keys as K
from latency_tables.micro import MicroModelCache
from latency_tables.modeled import SOCS, calibrate, host_spec, modeled_table, with_target
from latency_tables.predictor import fit_overhead, op_sum_ms, predict_latency_ms
from latency_tables.profilers import AdbProfiler, LocalProfiler, Profiler, Timing, cpu_model, profile_keys
from latency_tables.table import LatencyTable
from latency_tables.validate import error_metrics, sample_validation_archs, scatter_plot
from search_spaces import ArchSpec, SearchSpace, build_model
from search_spaces.reference import REFERENCE_NETS
from spnas.config import ExpandMeaning, ProfileAppConfig, ProfileDevice, TableFormat, to_plain
from spnas.errors import ConfigError
from spnas.files import write_json_atomic
from spnas.paths import cache_root, user_tables_dir
from training.runtime import versions

log = logging.getLogger(__name__)


def host_device_name() -> str:
    """`host-<cpu slug>`, the file name of this machine's measured table."""
    slug = re.sub(r"[^a-z0-9]+", "-", cpu_model().lower().replace("(r)", "").replace("(tm)", "")).strip("-")
    return f"host-{slug or 'cpu'}"


def make_profiler(cfg: ProfileAppConfig, device: ProfileDevice | None = None) -> Profiler:
    """The local (LiteRT on this CPU) or adb (benchmark_model on a phone) profiler of a config."""
    p = cfg.profile
    device = device or cfg.device
    if device is ProfileDevice.local:
        cpus = p.cpus
        if cpus == "auto":
            import os

            cpus = [max(os.sched_getaffinity(0))]
        elif cpus is not None and not (isinstance(cpus, list) and all(isinstance(c, int) for c in cpus)):
            raise ConfigError(f"profile.cpus={cpus!r}: use auto, null or a list of core numbers like [1]")
        return LocalProfiler(threads=p.threads, cpus=cpus, warmup_runs=p.warmup_runs, num_runs=p.num_runs,
                             min_time_s=p.min_time_s)
    return AdbProfiler(p.serial, p.benchmark_binary, adb=p.adb, taskset_mask=p.taskset_mask or cfg.soc.taskset_mask,
                       threads=p.threads, warmup_runs=p.warmup_runs, num_runs=p.num_runs,
                       enable_op_profiling=p.enable_op_profiling, expected_abi=cfg.soc.abi, remote_dir=p.remote_dir)


def table_keys(space: SearchSpace, resolutions: list[int], classes: list[int], width: float = 1.0) -> list[str]:
    """Every key the space and the reference nets need at the configured resolutions and class counts."""
    keys: set[str] = set()
    for r in resolutions:
        keys.update(K.ops_of_space(space, r, width, classes))
        keys.update(K.ops_of_references(r, classes))
    return sorted(keys)


def whole_model_path(arch: ArchSpec, cache_dir: Path | None = None) -> Path:
    """The whole network as .tflite (deterministic random weights), cached by its arch string."""
    cache_dir = cache_dir or cache_root() / "whole"
    h = hashlib.sha256(arch.to_string().encode()).hexdigest()[:20]
    path = cache_dir / f"{h}.tflite"
    if not path.exists():
        with torch.random.fork_rng():
            torch.manual_seed(int(h[:8], 16))
            model = build_model(arch).eval()
            sample = torch.randn(1, arch.in_channels, arch.resolution, arch.resolution)
        convert_to_tflite(model, sample, path)
    return path


def measure_whole(archs: list[ArchSpec], profiler: Profiler, passes: int = 1, desc: str = "whole networks"
                  ) -> list[Timing]:
    """End-to-end latency of whole networks, in `passes` interleaved rounds keeping each net's fastest."""
    from tqdm import tqdm

    paths = [whole_model_path(a) for a in tqdm(archs, desc="convert", unit="net", dynamic_ncols=True)]
    best: list[Timing | None] = [None] * len(archs)
    for p in range(passes):
        for i in tqdm(range(len(archs)), desc=f"{desc} pass {p + 1}/{passes}", unit="net", dynamic_ncols=True):
            t = profiler.measure(paths[i])
            if best[i] is None or t.value < best[i].value:  # type: ignore[union-attr]
                best[i] = t
    return best  # type: ignore[return-value]


def _space(cfg: ProfileAppConfig) -> SearchSpace:
    return SearchSpace.from_dict(to_plain(cfg.space))


# ---------------------------------------------------------------------------------- commands
def cmd_measure(cfg: ProfileAppConfig) -> LatencyTable:
    """Profile every key into `<SPNAS_HOME>/tables/<device>.json`, then fit the constant overhead."""
    profiler = make_profiler(cfg)
    local = cfg.device is ProfileDevice.local
    if local:
        name = cfg.table_name or host_device_name()
        soc_name = "host CPU"
    else:
        name = cfg.table_name or f"{cfg.soc.name}-measured"
        soc_name = cfg.soc.soc
        profiler.connect()  # type: ignore[attr-defined]
    out = Path(cfg.out or user_tables_dir() / f"{name}.json")
    keys = table_keys(_space(cfg), list(cfg.resolutions), list(cfg.num_classes))
    meta = {"device": name, "soc": soc_name, "provenance": "measured", "date": time.strftime("%Y-%m-%d"),
            "resolutions": list(cfg.resolutions), "num_classes": list(cfg.num_classes), "versions": versions(),
            **profiler.describe()}
    cache = MicroModelCache(convert_to_tflite, cfg.micro_cache or cache_root() / "micro")
    passes = cfg.profile.passes
    meta["statistic"] = (f"p10 of invoke times, fastest of {passes} passes" if local
                         else "benchmark_model average")
    res = profile_keys(keys, profiler, cache.get, out, meta, resume=cfg.resume, force=cfg.force, passes=passes)
    table = res.table
    if cfg.fit_overhead:
        refs = [ref(resolution=224) for ref in REFERENCE_NETS.values()]
        timings = measure_whole(refs, profiler, passes, "overhead fit")
        fit = fit_overhead(table, [(a, t.value) for a, t in zip(refs, timings)])
        table.meta["overhead_ms"] = fit["overhead_ms"]
        table.meta["overhead_fit"] = {k: v for k, v in fit.items()}
        table.save(out)
    log.info("table %s: %d ops (%d measured now, %d kept); overhead %.3f ms", out, len(table), len(res.measured),
             len(res.skipped), table.overhead_ms)
    print(f"wrote {out}: {len(table)} ops, {len(res.measured)} measured this run, "
          f"overhead {table.overhead_ms:.3f} ms")
    return table


def cmd_model(cfg: ProfileAppConfig) -> list[Path]:
    """Write the modeled Snapdragon tables (roofline, calibrated on MobileNetV2)."""
    resolutions = list(cfg.resolutions)
    keys = table_keys(_space(cfg), resolutions, list(cfg.num_classes))
    names = cfg.model_socs or list(SOCS)
    unknown = [n for n in names if n not in SOCS]
    if unknown:
        raise ConfigError(f"model_socs: no SoC model for {unknown}; known: {', '.join(SOCS)}")
    written = []
    for n in names:
        table = modeled_table(SOCS[n], keys, resolutions)
        path = table.save(Path(cfg.out_dir or user_tables_dir()) / f"{n}.json")
        ref = predict_latency_ms(REFERENCE_NETS["mobilenet_v2"](), table)
        print(f"wrote {path}: {len(table)} ops; MobileNetV2 224 predicted {ref:.2f} ms "
              f"(published {SOCS[n].calibration_ms} ms)")
        written.append(path)
    return written


def cmd_import(cfg: ProfileAppConfig) -> Path:
    """Import a Single-Path NAS JSON or an OFA / ProxylessNAS YAML table."""
    from latency_tables.importers import import_ofa_yaml, import_spnas_json

    src = cfg.source
    if not src.path:
        raise ConfigError("spnas-profile import needs source.path=<file> and source.format=spnas|ofa")
    device = src.device or Path(src.path).stem
    if src.format is TableFormat.spnas:
        table = import_spnas_json(src.path, _space(cfg), src.resolution, src.num_classes, device)
    else:
        table = import_ofa_yaml(src.path, "channels" if src.expand is ExpandMeaning.channels else "ratio", device)
    out = table.save(Path(src.out or user_tables_dir() / f"{device}.json"))
    print(f"wrote {out}: {len(table)} ops imported")
    return out


def cmd_validate(cfg: ProfileAppConfig) -> dict[str, Any]:
    """Whole networks measured on this CPU vs the host table's predictions; and the roofline check."""
    vcfg = cfg.validate
    profiler = make_profiler(cfg, ProfileDevice.local)
    table = LatencyTable.load(vcfg.table)
    space = _space(cfg)
    res = vcfg.resolution
    archs = sample_validation_archs(space, vcfg.num_archs, vcfg.seed, res)
    archs += [ref(resolution=res) for ref in REFERENCE_NETS.values()]
    out_dir = Path(vcfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    passes = cfg.profile.passes
    rows = []
    for arch, t in zip(archs, measure_whole(archs, profiler, passes, "validate")):
        rows.append({"name": arch.name, "arch": arch.to_string(), "measured_ms": t.value,
                     "measured_median_ms": t.median_ms, "measured_std_ms": t.std_ms,
                     "predicted_ms": predict_latency_ms(arch, table), "op_sum_ms": op_sum_ms(arch, table)})
    pred = [r["predicted_ms"] for r in rows]
    meas = [r["measured_ms"] for r in rows]
    metrics = error_metrics(pred, meas)
    png = scatter_plot(pred, meas, out_dir / "validate_scatter.png",
                       f"{table.device}: table prediction vs measured (LiteRT, {profiler.threads} thread)",  # type: ignore[attr-defined]
                       [r["name"] for r in rows], metrics)
    # The modeling method on this CPU: fit the roofline on MobileNetV2 alone, predict the rest.
    mbv2 = next(r for r in rows if r["name"] == "mobilenet_v2")
    spec = with_target(host_spec(mbv2["measured_ms"]), mbv2["measured_ms"])
    model = calibrate(spec)
    row_keys = sorted(table.ops)
    roof_rows = error_metrics([model.op_ms(k) for k in row_keys], [table.ms(k) for k in row_keys])
    roof_nets = error_metrics([model.total_ms([op.key for op in K.ops_of(ArchSpec.from_string(r["arch"]))])
                               for r in rows], meas)
    result = {"table": table.device, "metrics": metrics, "roofline_vs_table_rows": roof_rows,
              "roofline_vs_whole_networks": roof_nets, "roofline_scale": model.scale, "rows": rows,
              "scatter_png": str(png), "threads": profiler.threads}  # type: ignore[attr-defined]
    write_json_atomic(out_dir / "validate.json", result)
    print(json.dumps({"table": table.device, **metrics}, indent=1))
    return result


COMMANDS = {"measure": cmd_measure, "model": cmd_model, "import": cmd_import, "validate": cmd_validate}


def run(cfg: ProfileAppConfig) -> Any:
    """Run the config's `command`."""
    return COMMANDS[cfg.command.name](cfg)
