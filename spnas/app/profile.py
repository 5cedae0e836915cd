"""`spnas-profile`: build latency tables (measure, model, import), validate them, and keep `host` honest.

    spnas-profile                                  # measure this machine (table named by its CPU fingerprint)
    spnas-profile device=adb soc=sd845 profile.serial=XYZ profile.benchmark_binary=./benchmark_model
    spnas-profile validate                         # whole networks vs the host table's prediction
    spnas-profile model                            # derive the Snapdragon tables from the public measurements
    spnas-profile import source.path=pixel1_runtime_model.json space=spnas_mnasnet

Micro-models are converted with the export stage's converter (`export.tflite.convert_to_tflite`).
`prepare_soc` is what a search (or the pipeline) calls before it reads a table: for `soc=host` it
finds the table measured on this machine (by fingerprint), profiles it now or skips it as
`soc.if_no_table` says, and spot-checks it against this machine (`soc.stale_check`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from export.tflite import convert_to_tflite
from latency_tables import keys as K
from latency_tables.costmodel import Measured, fit_device, kernels_of_key, scale_to
from latency_tables.fingerprint import host_slug, machine_fingerprint, table_fingerprint
from latency_tables.micro import MicroModelCache
from latency_tables.modeled import SOCS, fit_measured, modeled_table
from latency_tables.predictor import fit_calibration, op_sum_ms, predict_latency_ms
from latency_tables.profilers import AdbProfiler, LocalProfiler, Profiler, Timing, profile_keys
from latency_tables.socs import SOCS as SOC_FACTS
from latency_tables.table import HostTableMismatch, LatencyTable, host_mismatch, resolve_table_path
from latency_tables.validate import error_metrics, sample_validation_archs, scatter_plot
from search_spaces import ArchSpec, SearchSpace, build_model
from search_spaces.reference import REFERENCE_NETS
from spnas.config import (
    MissingTablePolicy, ProfileAppConfig, ProfileDevice, ProfilerConfig, SocConfig, StaleCheck, to_plain,
)
from spnas.errors import ConfigError, SpnasError, TableError
from spnas.files import write_bytes_atomic, write_json_atomic
from spnas.paths import cache_root, user_tables_dir
from training.runtime import versions

log = logging.getLogger(__name__)

# The calibration (row scale + overhead constant) is fitted on these sampled architectures (a seed no
# validation run uses), never on the networks the validation then judges the table by.
OVERHEAD_SEED = 90_001
OVERHEAD_ARCHS = 16


def host_device_name(threads: int = 1) -> str:
    """`host-<cpu slug>-<fingerprint id>`, the file name of this machine's measured table."""
    return host_slug(machine_fingerprint(threads))


def local_profiler(p: ProfilerConfig) -> LocalProfiler:
    """The LiteRT profiler on this CPU with a config's settings."""
    import os

    cpus = p.cpus
    if cpus == "auto":
        cpus = [max(os.sched_getaffinity(0))]
    elif cpus is not None and not (isinstance(cpus, list) and all(isinstance(c, int) for c in cpus)):
        raise ConfigError(f"profile.cpus={cpus!r}: use auto, null or a list of core numbers like [1]")
    return LocalProfiler(threads=p.threads, cpus=cpus, warmup_runs=p.warmup_runs, num_runs=p.num_runs,
                         min_time_s=p.min_time_s, repeats=p.repeats)


def make_profiler(cfg: ProfileAppConfig, device: ProfileDevice | None = None) -> Profiler:
    """The local (LiteRT on this CPU) or adb (benchmark_model on a phone) profiler of a config."""
    p = cfg.profile
    device = device or cfg.device
    if device is ProfileDevice.local:
        return local_profiler(p)
    facts = SOC_FACTS.get(cfg.soc.name)
    return AdbProfiler(p.serial, p.benchmark_binary, adb=p.adb, taskset_mask=p.taskset_mask or cfg.soc.taskset_mask,
                       threads=p.threads, warmup_runs=p.warmup_runs, num_runs=p.num_runs, repeats=p.repeats,
                       enable_op_profiling=p.enable_op_profiling, expected_abi=cfg.soc.abi, soc=cfg.soc.name,
                       soc_platforms=facts.platforms if facts else (), allow_soc_mismatch=p.allow_soc_mismatch,
                       remote_dir=p.remote_dir)


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


def measure_whole(archs: list[ArchSpec], profiler: Profiler, passes: int = 1, desc: str = "whole networks",
                  progress: bool = True) -> list[Timing]:
    """End-to-end latency of whole networks, in `passes` interleaved rounds keeping each net's fastest."""
    from tqdm import tqdm

    paths = [whole_model_path(a) for a in tqdm(archs, desc="convert", unit="net", dynamic_ncols=True,
                                               disable=not progress)]
    best: list[Timing | None] = [None] * len(archs)
    for p in range(passes):
        for i in tqdm(range(len(archs)), desc=f"{desc} pass {p + 1}/{passes}", unit="net", dynamic_ncols=True,
                      disable=not progress):
            t = profiler.measure(paths[i])
            if best[i] is None or t.value < best[i].value:  # type: ignore[union-attr]
                best[i] = t
    return best  # type: ignore[return-value]


def _space(cfg: ProfileAppConfig) -> SearchSpace:
    return SearchSpace.from_dict(to_plain(cfg.space))


def overhead_archs(space: SearchSpace, resolution: int = 224) -> list[ArchSpec]:
    """The networks the constant overhead is fitted on: sampled with their own seed, so no network a
    validation run judges the table by (its sample and the reference nets) is among them."""
    archs = sample_validation_archs(space, OVERHEAD_ARCHS, OVERHEAD_SEED, resolution)
    return [a.replace(name=f"overhead-{i:02d}") for i, a in enumerate(archs)]


# ---------------------------------------------------------------------------------- measure
def measure_table(keys: Iterable[str], profiler: Profiler, out: Path, meta: dict[str, Any], *, resume: bool,
                  force: bool, passes: int, fit_on: list[ArchSpec] | None, micro_cache: Path | None = None,
                  retry_refused: bool = False, progress: bool = True) -> LatencyTable:
    """Profile `keys` into `out` (resumable, saved after every key), then fit the overhead on `fit_on`."""
    cache = MicroModelCache(convert_to_tflite, micro_cache or cache_root() / "micro")
    res = profile_keys(list(keys), profiler, cache.get, out, meta, resume=resume, force=force, passes=passes,
                       retry_refused=retry_refused, progress=progress)
    table = res.table
    if fit_on:
        timings = measure_whole(fit_on, profiler, passes, "calibration", progress)
        fit = fit_calibration(table, [(a, t.value) for a, t in zip(fit_on, timings)])
        table.meta["overhead_ms"] = fit["overhead_ms"]
        table.meta["row_scale"] = fit["row_scale"]
        table.meta["overhead_fit"] = {**fit, "note": "measured = row_scale * sum(rows) + overhead_ms, fitted on "
                                                     f"networks sampled with their own seed ({OVERHEAD_SEED}); none "
                                                     "of them is in a validation set"}
        table.save(out)
    print(f"wrote {out}: {len(table)} ops, {len(res.measured)} measured this run, {len(res.refused)} refused, "
          f"overhead {table.overhead_ms:.3f} ms")
    return table


def cmd_measure(cfg: ProfileAppConfig) -> LatencyTable:
    """Profile every key into `<SPNAS_HOME>/tables/<device>.json`, then fit the constant overhead."""
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
    if local and cfg.resume and not out.exists():  # resuming a shipped table of this machine: start from its rows
        try:
            src: Path | None = resolve_table_path(name)
        except SpnasError:
            src = None
        if src is not None and src.resolve() != out.resolve():
            fp = table_fingerprint(LatencyTable.load(src).meta)
            if fp is not None and not fp.differences(machine_fingerprint(cfg.profile.threads)):
                log.info("resume: starting %s from the rows of %s (same machine fingerprint)", out, src)
                write_bytes_atomic(out, src.read_bytes())
    fit_on = overhead_archs(space) if cfg.fit_overhead else None
    return measure_table(keys, profiler, out, meta, resume=cfg.resume, force=cfg.force, passes=cfg.profile.passes,
                         fit_on=fit_on, micro_cache=Path(cfg.micro_cache) if cfg.micro_cache else None,
                         retry_refused=cfg.profile.retry_refused)


# ---------------------------------------------------------------------------------- host: fingerprint, stale check
def profile_host(keys: Iterable[str], profile: ProfilerConfig, *, fit_on: list[ArchSpec] | None,
                 out_dir: Path | None = None, progress: bool = True) -> LatencyTable:
    """Measure this machine's table for `keys`, filed under its fingerprint (resumable: a killed run
    continues where it stopped, rows already there are kept)."""
    profiler = local_profiler(profile)
    name = host_device_name(profile.threads)
    out = (out_dir or user_tables_dir()) / f"{name}.json"
    meta = {"device": name, "soc": "host CPU", "provenance": "measured", "date": time.strftime("%Y-%m-%d"),
            "versions": versions(), **profiler.describe()}
    return measure_table(keys, profiler, out, meta, resume=out.exists(), force=False, passes=profile.passes,
                         fit_on=fit_on, progress=progress)


def spot_check(table: LatencyTable, profiler: Profiler, archs: list[ArchSpec] | None = None,
               progress: bool = False) -> dict[str, Any]:
    """A few reference networks measured now against the table's predictions (seconds).

    `drift` is the median of prediction / measurement - 1: a table measured under other conditions
    (another CPU governor, a new runtime, a busier machine) shows as a drift of the same sign."""
    archs = archs or [make(resolution=224) for make in REFERENCE_NETS.values()]
    timings = measure_whole(archs, profiler, 1, "stale check", progress)
    rows = [{"name": a.name, "predicted_ms": predict_latency_ms(a, table), "measured_ms": t.value}
            for a, t in zip(archs, timings)]
    for r in rows:
        r["rel_err"] = r["predicted_ms"] / r["measured_ms"] - 1.0
    return {"table": table.device, "rows": rows, "drift": float(statistics.median(r["rel_err"] for r in rows)),
            "checked": time.strftime("%Y-%m-%d %H:%M:%S")}


class StaleTableError(TableError):
    """A measured table that no longer predicts this machine (beyond `soc.stale_tolerance`)."""


def check_table(table: LatencyTable, soc: SocConfig, profile: ProfilerConfig | None = None,
                archs: list[ArchSpec] | None = None) -> dict[str, Any] | None:
    """`soc.stale_check` on a table measured on this machine: warn or refuse on drift, saying how to re-profile."""
    if soc.stale_check is StaleCheck.off or table.provenance != "measured" or table_fingerprint(table.meta) is None:
        return None
    res = spot_check(table, local_profiler(profile or ProfilerConfig()), archs)
    if abs(res["drift"]) > soc.stale_tolerance:
        msg = (f"latency table '{table.device}' predicts this machine {res['drift'] * 100:+.1f}% off (median over "
               f"{', '.join(r['name'] for r in res['rows'])}; tolerance {soc.stale_tolerance * 100:.0f}%): it was "
               f"measured under other conditions. Re-fit its calibration (16 networks, ~1 min): `spnas-profile "
               f"table_name={table.device} resume=true`, or re-profile it: `... force=true`")
        if soc.stale_check is StaleCheck.refuse:
            raise StaleTableError(msg + " (or soc.stale_check=warn to go on)")
        log.warning("%s", msg)
        res["warning"] = msg
    return res


def prepare_soc(soc: SocConfig, space: SearchSpace, resolution: int, num_classes: int,
                profile: ProfilerConfig | None = None, progress: bool = True) -> tuple[SocConfig | None, dict[str, Any]]:
    """The SoC config a search or report should use, with `table` resolved to a file.

    `host` means this machine: the table whose fingerprint matches it. With none, `soc.if_no_table`
    decides: `error` (one message naming both fingerprints), `profile` (measure the keys this run
    needs now, filed under this machine's fingerprint; resumable) or `skip` (returns None). A
    measured table is spot-checked first (`soc.stale_check`). The dict says what happened (for
    summaries and the report: the table's fingerprint, the spot check)."""
    info: dict[str, Any] = {}
    profile = profile or ProfilerConfig()
    if soc.table != "host":
        if soc.name == "host":  # an explicit table for this machine: say so when it was measured elsewhere
            t = LatencyTable.load(soc.table)
            fp = table_fingerprint(t.meta)
            diff = fp.differences(machine_fingerprint(fp.threads)) if fp else ["no fingerprint"]
            if diff:
                log.warning("soc.table=%s was not measured on this machine (%s); its figures are not this CPU's",
                            soc.table, "; ".join(diff))
                info["foreign"] = diff
        return soc, info
    try:
        path = resolve_table_path("host")
    except HostTableMismatch as e:
        if soc.if_no_table is MissingTablePolicy.skip:
            log.warning("no latency table matches this machine; soc.if_no_table=skip leaves the host out")
            return None, {"skipped": str(e)}
        if soc.if_no_table is MissingTablePolicy.error:
            raise
        keys = sorted(set(K.ops_of_space(space, resolution, 1.0, [num_classes])) |
                      set(K.ops_of_references(resolution, [num_classes])))
        log.info("profiling this machine now: %d ops (%s)", len(keys), machine_fingerprint(profile.threads).describe())
        table = profile_host(keys, profile, fit_on=overhead_archs(space, resolution), progress=progress)
        path = Path(table.path or "")
        info["profiled_now"] = True
    table = LatencyTable.load(path)
    fp = table_fingerprint(table.meta)
    info["table"] = table.device
    info["fingerprint"] = fp.to_dict() if fp else None
    info["fingerprint_text"] = fp.describe() if fp else "unknown"
    check = check_table(table, soc, profile)
    if check is not None:
        info["stale_check"] = check
    return dataclasses.replace(soc, table=str(path)), info


# ---------------------------------------------------------------------------------- model / import
def cmd_model(cfg: ProfileAppConfig) -> list[Path]:
    """Derive the Snapdragon tables: fit each measured phone, map to each SoC, scale to MobileNetV2."""
    from latency_tables.grounding import validation_summary
    from search_spaces.space import SPACES

    resolutions = list(cfg.resolutions)
    keys: set[str] = set()
    for space in SPACES.values():
        keys.update(table_keys(space, resolutions, list(cfg.num_classes)))
    names = cfg.model_socs or list(SOCS)
    unknown = [n for n in names if n not in SOCS]
    if unknown:
        raise ConfigError(f"model_socs: no SoC model for {unknown}; known: {', '.join(SOCS)}")
    fits = fit_measured()
    tables = {n: modeled_table(SOCS[n], fits, sorted(keys), resolutions) for n in SOCS}
    summary = validation_summary(fits, tables)
    written = []
    for n in names:
        t = tables[n]
        t.meta["method"]["validation"] = _table_validation(summary, n)
        path = t.save(Path(cfg.out_dir or user_tables_dir()) / f"{n}.json")
        ref = predict_latency_ms(REFERENCE_NETS["mobilenet_v2"](), t)
        print(f"wrote {path}: {len(t)} ops (others on demand); MobileNetV2 224 predicted {ref:.2f} ms "
              f"(published {SOCS[n].calibration_ms} ms)")
        written.append(path)
    return written


def _table_validation(summary: dict[str, Any], soc: str) -> dict[str, Any]:
    """The validation figures a table's meta carries (the benchmark has the details)."""
    base = SOCS[soc].base
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
    from latency_tables.importers import check_format, import_ofa_yaml, import_spnas_json, read_source

    src = cfg.source
    if not src.path:
        raise ConfigError("spnas-profile import needs source.path=<file> (a Single-Path NAS JSON or an "
                          "OFA/ProxylessNAS YAML)")
    device = src.device or Path(src.path).stem
    fmt = check_format(src.path, read_source(src.path), src.format.name)
    if fmt == "spnas":
        table = import_spnas_json(src.path, _space(cfg), src.resolution, src.num_classes, device, src.k3e3.name,
                                  src.fixed_ms, src.classifier_ms)
    else:
        table = import_ofa_yaml(src.path, src.expand.name, device)  # type: ignore[arg-type]
    out = table.save(Path(src.out or user_tables_dir() / f"{device}.json"))
    print(f"wrote {out}: {len(table)} rows imported ({table.meta['method'].get('flavour', fmt)})")
    return out


# ---------------------------------------------------------------------------------- validate
def speed_probes(table: LatencyTable, k: int) -> list[tuple[ArchSpec, float]]:
    """`k` of the table's calibration networks (spread over their latency range, outliers left out)
    with the latency measured for them at calibration: re-measured beside other networks, they say
    how fast this machine runs now relative to then. Empty for a table fitted without arch strings."""
    fit = table.meta.get("overhead_fit") or {}
    strings, ms = fit.get("arch_strings"), fit.get("measured_ms")
    if k <= 0 or not strings or not ms or len(strings) != len(ms):
        return []
    used = fit.get("used") or [True] * len(ms)
    cand = sorted((float(m), s) for s, m, u in zip(strings, ms, used) if u)
    k = min(k, len(cand))
    if k == 0:
        return []
    idx = sorted({round(i * (len(cand) - 1) / max(k - 1, 1)) for i in range(k)})
    return [(ArchSpec.from_string(cand[i][1]).replace(name=f"probe-{j}"), cand[i][0]) for j, i in enumerate(idx)]


def interleave(archs: list[ArchSpec], extra: list[ArchSpec]) -> tuple[list[ArchSpec], list[int]]:
    """`extra` spread evenly among `archs` (so each pass measures them early, midway and late); the
    second list gives each position's index in archs + extra."""
    slots = {int(j * len(archs) / len(extra)): j for j in range(len(extra))} if extra else {}
    order: list[int] = []
    for i in range(len(archs)):
        if i in slots:
            order.append(len(archs) + slots[i])
        order.append(i)
    combined = archs + extra
    return [combined[i] for i in order], order


def speed_factor(now_ms: Sequence[float], then_ms: Sequence[float]) -> float:
    """This machine's latency level now relative to when the table was calibrated: the median of
    now / then over the speed probes (one noisy probe cannot move it)."""
    if not now_ms or len(now_ms) != len(then_ms):
        raise TableError("speed_factor needs the same non-empty probes measured now and then")
    return float(statistics.median(n / t for n, t in zip(now_ms, then_ms)))


def cmd_validate(cfg: ProfileAppConfig) -> dict[str, Any]:
    """Whole networks measured on this CPU vs the host table's predictions, and the fitted op model
    (the method behind the Snapdragon tables) checked on this CPU, where every row is measured."""
    vcfg = cfg.validate
    profiler = make_profiler(cfg, ProfileDevice.local)
    table = LatencyTable.load(vcfg.table)
    space = _space(cfg)
    res = vcfg.resolution
    archs = sample_validation_archs(space, vcfg.num_archs, vcfg.seed, res)
    archs += [ref(resolution=res) for ref in REFERENCE_NETS.values()]
    out_dir = Path(vcfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    passes = vcfg.passes
    probes = speed_probes(table, vcfg.speed_probes)
    if vcfg.speed_probes and not probes:
        log.warning("table '%s' has no calibration networks to use as speed probes (fitted before they were kept): "
                    "absolute figures only. Re-fit its calibration (~1.5 min): `spnas-profile table_name=%s "
                    "resume=true`", table.device, table.device)
    order_archs, order = interleave(archs, [a for a, _ in probes])
    measured = measure_whole(order_archs, profiler, passes, "validate")
    timing = [measured[order.index(i)] for i in range(len(order))]  # back to archs + probes order
    probe_now = [t.value for t in timing[len(archs):]]
    rows = []
    for arch, t in zip(archs, timing):
        rows.append({"name": arch.name, "arch": arch.to_string(), "measured_ms": t.value,
                     "measured_median_ms": t.median_ms, "measured_std_ms": t.std_ms,
                     "run_means_ms": list(t.run_means_ms),
                     "predicted_ms": predict_latency_ms(arch, table), "op_sum_ms": op_sum_ms(arch, table)})
    pred = [r["predicted_ms"] for r in rows]
    meas = [r["measured_ms"] for r in rows]
    metrics = error_metrics(pred, meas)
    speed: dict[str, Any] | None = None
    at_speed = None
    if probes:
        factor = speed_factor(probe_now, [ms for _, ms in probes])
        speed = {"factor": factor, "probes": [{"name": a.name, "arch": a.to_string(), "calibration_ms": ms,
                                               "now_ms": now} for (a, ms), now in zip(probes, probe_now)],
                 "meaning": "median of now / at calibration over calibration networks re-measured in this run "
                            "(none of them is validated); predictions x factor = the table at this machine's "
                            "current speed"}
        for r in rows:
            r["predicted_at_speed_ms"] = r["predicted_ms"] * factor
        at_speed = error_metrics([r["predicted_at_speed_ms"] for r in rows], meas)
    shown = at_speed or metrics
    title = f"{table.device}: table prediction vs measured (LiteRT, {profiler.threads} thread)"  # type: ignore[attr-defined]
    if speed:
        title += f"\nprediction x {speed['factor']:.3f} (this machine's speed vs at calibration)"
    png = scatter_plot([r.get("predicted_at_speed_ms", r["predicted_ms"]) for r in rows], meas,
                       out_dir / "validate_scatter.png", title, [r["name"] for r in rows], shown)
    fit_in = [Measured(k, tuple(kernels_of_key(k)), table.ms(k), "table row", k) for k in sorted(table.ops)]
    fp = table_fingerprint(table.meta)
    cache_kb = float((fp.caches_kb.get("L2") if fp else None) or 2048)
    fit = fit_device(fit_in, cache_kb, "this CPU")
    mbv2 = next(r for r in rows if r["name"] == "mobilenet_v2")
    model = scale_to(fit.model, [op.key for op in K.ops_of(ArchSpec.from_string(mbv2["arch"]))], mbv2["measured_ms"])
    model_nets = error_metrics([model.total_ms([op.key for op in K.ops_of(ArchSpec.from_string(r["arch"]))])
                                for r in rows], meas)
    result = {"table": table.device, "metrics": metrics, "metrics_at_speed": at_speed, "speed": speed,
              "op_model_vs_table_rows": fit.summary(),
              "op_model_vs_whole_networks": model_nets, "rows": rows, "scatter_png": str(png),
              "threads": profiler.threads, "passes": passes,  # type: ignore[attr-defined]
              "statistic": table.meta.get("statistic"), "overhead_fit": table.meta.get("overhead_fit"),
              "fingerprint": fp.describe() if fp else None}
    write_json_atomic(out_dir / "validate.json", result)
    print(json.dumps({"table": table.device, "absolute": metrics, "speed_factor": speed and speed["factor"],
                      "at_this_speed": at_speed}, indent=1))
    return result


COMMANDS = {"measure": cmd_measure, "model": cmd_model, "import": cmd_import, "validate": cmd_validate}


def run(cfg: ProfileAppConfig) -> Any:
    """Run the config's `command`."""
    return COMMANDS[cfg.command.name](cfg)
