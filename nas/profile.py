"""`spnas-profile`: build latency tables (measure, model, import) and validate them.

    spnas-profile                                  # measure the host table with the local profiler
    spnas-profile device=adb soc=sd845 profile.serial=XYZ profile.benchmark_binary=./benchmark_model
    spnas-profile validate                         # whole networks vs the host table's prediction
    spnas-profile model                            # write the modeled Snapdragon tables
    spnas-profile import import.path=lut.yaml import.format=ofa import.expand=channels

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
from latency_tables.micro import MicroModelCache, default_cache_dir
from latency_tables.modeled import SOCS, calibrate, host_spec, modeled_table, with_target
from latency_tables.predictor import fit_overhead, op_sum_ms, predict_latency_ms
from latency_tables.profilers import AdbProfiler, LocalProfiler, Profiler, Timing, cpu_model, profile_keys
from latency_tables.table import DATA_DIR, LatencyTable
from latency_tables.validate import error_metrics, sample_validation_archs, scatter_plot
from search_spaces import ArchSpec, SearchSpace, build_model
from search_spaces.reference import REFERENCE_NETS

from .runtime import atomic_write_json, versions

log = logging.getLogger(__name__)


def host_device_name() -> str:
    """`host-<cpu slug>`, the file name of this machine's measured table."""
    slug = re.sub(r"[^a-z0-9]+", "-", cpu_model().lower().replace("(r)", "").replace("(tm)", "")).strip("-")
    return f"host-{slug or 'cpu'}"


def make_profiler(cfg: dict[str, Any]) -> Profiler:
    p = dict(cfg.get("profile") or {})
    device = cfg.get("device", "local")
    if device == "local":
        cpus = p.get("cpus")
        if cpus == "auto":
            import os

            cpus = [max(os.sched_getaffinity(0))]
        return LocalProfiler(threads=int(p.get("threads", 1)), cpus=cpus, warmup_runs=int(p.get("warmup_runs", 10)),
                             num_runs=int(p.get("num_runs", 50)), min_time_s=float(p.get("min_time_s", 0.3)))
    if device == "adb":
        soc = cfg.get("soc") or {}
        return AdbProfiler(p.get("serial"), p.get("benchmark_binary"), adb=p.get("adb", "adb"),
                           taskset_mask=p.get("taskset_mask", soc.get("taskset_mask")),
                           threads=int(p.get("threads", 1)), warmup_runs=int(p.get("warmup_runs", 10)),
                           num_runs=int(p.get("num_runs", 50)),
                           enable_op_profiling=bool(p.get("enable_op_profiling", True)),
                           expected_abi=soc.get("abi"), remote_dir=p.get("remote_dir", "/data/local/tmp/spnas"))
    raise ValueError(f"device must be 'local' or 'adb', got '{device}'")


def table_keys(space: SearchSpace, resolutions: list[int], classes: list[int], width: float = 1.0) -> list[str]:
    """Every key the space and the reference nets need at the configured resolutions and class counts."""
    keys: set[str] = set()
    for r in resolutions:
        keys.update(K.ops_of_space(space, r, width, classes))
        keys.update(K.ops_of_references(r, classes))
    return sorted(keys)


def whole_model_path(arch: ArchSpec, cache_dir: Path | None = None) -> Path:
    """The whole network as .tflite (deterministic random weights), cached by its arch string."""
    cache_dir = cache_dir or default_cache_dir().parent / "whole"
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


def _space(cfg: dict[str, Any]) -> SearchSpace:
    return SearchSpace.from_dict(cfg["space"])


# ---------------------------------------------------------------------------------- commands
def cmd_measure(cfg: dict[str, Any]) -> LatencyTable:
    """Profile every key into `latency_tables/data/<device>.json`, then fit the constant overhead."""
    profiler = make_profiler(cfg)
    device = cfg.get("device", "local")
    soc = cfg.get("soc") or {}
    if device == "local":
        name = cfg.get("table_name") or host_device_name()
        soc_name = "host CPU"
    else:
        name = cfg.get("table_name") or f"{soc.get('name', 'phone')}-measured"
        soc_name = soc.get("soc", "")
        profiler.connect()  # type: ignore[attr-defined]
    out = Path(cfg.get("out") or DATA_DIR / f"{name}.json")
    resolutions = [int(r) for r in cfg["resolutions"]]
    classes = [int(c) for c in cfg["num_classes"]]
    keys = table_keys(_space(cfg), resolutions, classes)
    meta = {"device": name, "soc": soc_name, "provenance": "measured", "date": time.strftime("%Y-%m-%d"),
            "resolutions": resolutions, "num_classes": classes, "versions": versions(), **profiler.describe()}
    cache = MicroModelCache(convert_to_tflite, cfg.get("micro_cache") or None)
    passes = int((cfg.get("profile") or {}).get("passes", 1))
    meta["statistic"] = (f"p10 of invoke times, fastest of {passes} passes" if device == "local"
                         else "benchmark_model average")
    res = profile_keys(keys, profiler, cache.get, out, meta, resume=bool(cfg.get("resume")),
                       force=bool(cfg.get("force")), passes=passes)
    table = res.table
    if cfg.get("fit_overhead", True):
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


def cmd_model(cfg: dict[str, Any]) -> list[Path]:
    """Write the modeled Snapdragon tables (roofline, calibrated on MobileNetV2)."""
    resolutions = [int(r) for r in cfg["resolutions"]]
    classes = [int(c) for c in cfg["num_classes"]]
    keys = table_keys(_space(cfg), resolutions, classes)
    names = cfg.get("model_socs") or list(SOCS)
    written = []
    for n in names:
        table = modeled_table(SOCS[n], keys, resolutions)
        path = table.save(Path(cfg.get("out_dir") or DATA_DIR) / f"{n}.json")
        ref = predict_latency_ms(REFERENCE_NETS["mobilenet_v2"](), table)
        print(f"wrote {path}: {len(table)} ops; MobileNetV2 224 predicted {ref:.2f} ms "
              f"(published {SOCS[n].calibration_ms} ms)")
        written.append(path)
    return written


def cmd_import(cfg: dict[str, Any]) -> Path:
    """Import a Single-Path NAS JSON or an OFA / ProxylessNAS YAML table."""
    from latency_tables.importers import import_ofa_yaml, import_spnas_json

    icfg = cfg.get("import") or {}
    path = icfg.get("path")
    if not path:
        raise ValueError("spnas-profile import needs import.path=<file> and import.format=spnas|ofa")
    fmt = icfg.get("format", "ofa")
    device = icfg.get("device") or Path(path).stem
    if fmt == "spnas":
        table = import_spnas_json(path, _space(cfg), int(icfg.get("resolution", 224)),
                                  int(icfg.get("num_classes", 1000)), device)
    elif fmt == "ofa":
        table = import_ofa_yaml(path, icfg.get("expand", "ratio"), device)
    else:
        raise ValueError(f"import.format must be spnas or ofa, got '{fmt}'")
    out = table.save(Path(icfg.get("out") or DATA_DIR / f"{device}.json"))
    print(f"wrote {out}: {len(table)} ops imported")
    return out


def cmd_validate(cfg: dict[str, Any]) -> dict[str, Any]:
    """Whole networks measured on this CPU vs the host table's predictions; and the roofline check."""
    vcfg = dict(cfg.get("validate") or {})
    profiler = make_profiler({**cfg, "device": "local"})
    table = LatencyTable.load(vcfg.get("table") or "host")
    space = _space(cfg)
    res = int(vcfg.get("resolution", 224))
    archs = sample_validation_archs(space, int(vcfg.get("num_archs", 50)), int(vcfg.get("seed", 0)), res)
    archs += [ref(resolution=res) for ref in REFERENCE_NETS.values()]
    out_dir = Path(vcfg.get("out_dir") or "bench/out/validate")
    out_dir.mkdir(parents=True, exist_ok=True)
    passes = int((cfg.get("profile") or {}).get("passes", 1))
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
    atomic_write_json(out_dir / "validate.json", result)
    print(json.dumps({"table": table.device, **metrics}, indent=1))
    return result


COMMANDS = {"measure": cmd_measure, "model": cmd_model, "import": cmd_import, "validate": cmd_validate}


def run(cfg: dict[str, Any]) -> Any:
    cmd = cfg.get("command", "measure")
    if cmd not in COMMANDS:
        raise ValueError(f"unknown spnas-profile command '{cmd}' (known: {', '.join(COMMANDS)})")
    return COMMANDS[cmd](cfg)
