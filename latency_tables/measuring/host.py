"""This machine's tables: measure them, calibrate them on whole networks, spot-check them before use,
and validate them at the machine's current speed.

`host` means this machine: the table whose CPU fingerprint matches it (`table.resolve_table_path`).
`prepare_soc` is what a search, a sweep or the pipeline calls before it reads a table: it finds
that table, profiles it now or leaves the device out as `soc.if_no_table` says, and spot-checks a
measured table against this machine (`soc.stale_check`).

Whole networks and micro-models are converted with an injected converter (the export stage's
`export.tflite.convert_to_tflite`, as `micro.py` takes it): the rows of a table, the networks that
calibrate and validate it and the shipped models all come out of the same litert-torch conversion,
and this package never imports the export stage.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import statistics
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from search_spaces import ArchSpec, SearchSpace, build_model
from search_spaces.reference import REFERENCE_NETS
from spnas_core.errors import SpnasError, TableError
from spnas_core.files import write_bytes_atomic
from spnas_core.paths import cache_root, user_tables_dir
from spnas_core.versions import versions

from latency_tables.lookup import keys as K
from latency_tables.config import MissingTablePolicy, ProfilerConfig, SocConfig, StaleCheck, ValidateConfig
from latency_tables.lookup.fingerprint import host_slug, machine_fingerprint, table_fingerprint
from latency_tables.measuring.micro import Converter, MicroModelCache
from latency_tables.lookup.predictor import fit_calibration, predict_latency_ms
from latency_tables.profilers import Profiler, Timing
from latency_tables.profilers.factory import local_profiler
from latency_tables.measuring.profiling import profile_keys
from latency_tables.lookup.table import HostTableMismatch, LatencyTable, resolve_table_path

log = logging.getLogger(__name__)

# The calibration (row scale + overhead constant) is fitted on these sampled architectures (a seed no
# validation run uses), never on the networks the validation then judges the table by.
OVERHEAD_SEED = 90_001
OVERHEAD_ARCHS = 16


def host_device_name(threads: int = 1) -> str:
    """`host-<cpu slug>-<fingerprint id>`, the file name of this machine's measured table."""
    return host_slug(machine_fingerprint(threads))


def table_keys(space: SearchSpace, resolutions: list[int], classes: list[int], width: float = 1.0) -> list[str]:
    """Every key the space and the reference nets need at the configured resolutions and class counts."""
    keys: set[str] = set()
    for r in resolutions:
        keys.update(K.ops_of_space(space, r, width, classes))
        keys.update(K.ops_of_references(r, classes))
    return sorted(keys)


# ---------------------------------------------------------------------------------- whole networks
def whole_model_path(arch: ArchSpec, convert: Converter, cache_dir: Path | None = None) -> Path:
    """The whole network as .tflite (deterministic random weights), cached by its arch string."""
    cache_dir = cache_dir or cache_root() / "whole"
    h = hashlib.sha256(arch.to_string().encode()).hexdigest()[:20]
    path = cache_dir / f"{h}.tflite"
    if not path.exists():
        with torch.random.fork_rng():
            torch.manual_seed(int(h[:8], 16))
            model = build_model(arch).eval()
            sample = torch.randn(1, arch.in_channels, arch.resolution, arch.resolution)
        convert(model, sample, path)
    return path


def measure_whole(archs: list[ArchSpec], profiler: Profiler, convert: Converter, passes: int = 1,
                  desc: str = "whole networks", progress: bool = True) -> list[Timing]:
    """End-to-end latency of whole networks, in `passes` interleaved rounds keeping each net's fastest."""
    from tqdm import tqdm

    paths = [whole_model_path(a, convert) for a in tqdm(archs, desc="convert", unit="net", dynamic_ncols=True,
                                                        disable=not progress)]
    best: list[Timing | None] = [None] * len(archs)
    for p in range(passes):
        for i in tqdm(range(len(archs)), desc=f"{desc} pass {p + 1}/{passes}", unit="net", dynamic_ncols=True,
                      disable=not progress):
            t = profiler.measure(paths[i])
            if best[i] is None or t.value < best[i].value:  # type: ignore[union-attr]
                best[i] = t
    return best  # type: ignore[return-value]


def overhead_archs(space: SearchSpace, resolution: int = 224) -> list[ArchSpec]:
    """The networks the calibration is fitted on: sampled with their own seed, so no network a
    validation run judges the table by (its sample and the reference nets) is among them."""
    from latency_tables.validating.validate import sample_validation_archs

    archs = sample_validation_archs(space, OVERHEAD_ARCHS, OVERHEAD_SEED, resolution)
    return [a.replace(name=f"overhead-{i:02d}") for i, a in enumerate(archs)]


# ---------------------------------------------------------------------------------- measure + calibrate
def calibrate(table: LatencyTable, archs: list[ArchSpec], profiler: Profiler, convert: Converter, passes: int = 1,
              progress: bool = True) -> dict[str, Any]:
    """Fit `measured = row_scale * sum(rows) + overhead_ms` on whole networks and write it into the
    table's meta (the caller saves): a table of ops timed alone misses what a network adds."""
    timings = measure_whole(archs, profiler, convert, passes, "calibration", progress)
    fit = fit_calibration(table, [(a, t.value) for a, t in zip(archs, timings)])
    table.meta["overhead_ms"] = fit["overhead_ms"]
    table.meta["row_scale"] = fit["row_scale"]
    table.meta["overhead_fit"] = {**fit, "note": "measured = row_scale * sum(rows) + overhead_ms, fitted on "
                                                 f"networks sampled with their own seed ({OVERHEAD_SEED}); none "
                                                 "of them is in a validation set"}
    return fit


def measure_table(keys: Iterable[str], profiler: Profiler, out: Path, meta: dict[str, Any], convert: Converter, *,
                  resume: bool, force: bool, passes: int, fit_on: list[ArchSpec] | None,
                  micro_cache: Path | None = None, retry_refused: bool = False, progress: bool = True) -> LatencyTable:
    """Profile `keys` into `out` (resumable, saved after every key), then calibrate on `fit_on`."""
    cache = MicroModelCache(convert, micro_cache or cache_root() / "micro")
    res = profile_keys(list(keys), profiler, cache.get, out, meta, resume=resume, force=force, passes=passes,
                       retry_refused=retry_refused, progress=progress)
    table = res.table
    if fit_on:
        calibrate(table, fit_on, profiler, convert, passes, progress)
        table.save(out)
    print(f"wrote {out}: {len(table)} ops, {len(res.measured)} measured this run, {len(res.refused)} refused, "
          f"overhead {table.overhead_ms:.3f} ms")
    return table


def start_from_shipped(name: str, out: Path, threads: int) -> bool:
    """Resuming a shipped table of this machine (what the stale check suggests): copy its rows to the
    user's `out` when its fingerprint matches this machine, so only missing keys are measured."""
    if out.exists():
        return False
    try:
        src: Path | None = resolve_table_path(name)
    except SpnasError:
        src = None
    if src is None or src.resolve() == out.resolve():
        return False
    fp = table_fingerprint(LatencyTable.load(src).meta)
    if fp is None or fp.differences(machine_fingerprint(threads)):
        return False
    log.info("resume: starting %s from the rows of %s (same machine fingerprint)", out, src)
    write_bytes_atomic(out, src.read_bytes())
    return True


def profile_host(keys: Iterable[str], profile: ProfilerConfig, convert: Converter, *, fit_on: list[ArchSpec] | None,
                 out_dir: Path | None = None, progress: bool = True) -> LatencyTable:
    """Measure this machine's table for `keys`, filed under its fingerprint (resumable: a killed run
    continues where it stopped, rows already there are kept)."""
    profiler = local_profiler(profile)
    name = host_device_name(profile.threads)
    out = (out_dir or user_tables_dir()) / f"{name}.json"
    meta = {"device": name, "soc": "host CPU", "provenance": "measured", "date": time.strftime("%Y-%m-%d"),
            "versions": versions(), **profiler.describe()}
    return measure_table(keys, profiler, out, meta, convert, resume=out.exists(), force=False,
                         passes=profile.passes, fit_on=fit_on, progress=progress)


# ---------------------------------------------------------------------------------- before use: the stale check
def spot_check(table: LatencyTable, profiler: Profiler, convert: Converter, archs: list[ArchSpec] | None = None,
               progress: bool = False) -> dict[str, Any]:
    """A few reference networks measured now against the table's predictions (seconds).

    `drift` is the median of prediction / measurement - 1: a table measured under other conditions
    (another CPU governor, a new runtime, a busier machine) shows as a drift of the same sign."""
    archs = archs or [make(resolution=224) for make in REFERENCE_NETS.values()]
    timings = measure_whole(archs, profiler, convert, 1, "stale check", progress)
    rows = [{"name": a.name, "predicted_ms": predict_latency_ms(a, table), "measured_ms": t.value}
            for a, t in zip(archs, timings)]
    for r in rows:
        r["rel_err"] = r["predicted_ms"] / r["measured_ms"] - 1.0
    return {"table": table.device, "rows": rows, "drift": float(statistics.median(r["rel_err"] for r in rows)),
            "checked": time.strftime("%Y-%m-%d %H:%M:%S")}


class StaleTableError(TableError):
    """A measured table that no longer predicts this machine (beyond `soc.stale_tolerance`)."""


def check_table(table: LatencyTable, soc: SocConfig, convert: Converter, profile: ProfilerConfig | None = None,
                archs: list[ArchSpec] | None = None) -> dict[str, Any] | None:
    """`soc.stale_check` on a table measured on this machine: warn or refuse on drift, saying how to re-profile."""
    if soc.stale_check is StaleCheck.off or table.provenance != "measured" or table_fingerprint(table.meta) is None:
        return None
    res = spot_check(table, local_profiler(profile or ProfilerConfig()), convert, archs)
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


def prepare_soc(soc: SocConfig, space: SearchSpace, resolution: int, num_classes: int, convert: Converter,
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
        if soc.name == "host":
            info.update(_foreign_table_note(soc.table))
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
        table = profile_host(keys, profile, convert, fit_on=overhead_archs(space, resolution), progress=progress)
        path = Path(table.path or "")
        info["profiled_now"] = True
    table = LatencyTable.load(path)
    fp = table_fingerprint(table.meta)
    info["table"] = table.device
    info["fingerprint"] = fp.to_dict() if fp else None
    info["fingerprint_text"] = fp.describe() if fp else "unknown"
    check = check_table(table, soc, convert, profile)
    if check is not None:
        info["stale_check"] = check
    return dataclasses.replace(soc, table=str(path)), info


def _foreign_table_note(table_ref: str) -> dict[str, Any]:
    """An explicit table for this machine: say so when it was measured elsewhere."""
    t = LatencyTable.load(table_ref)
    fp = table_fingerprint(t.meta)
    diff = fp.differences(machine_fingerprint(fp.threads)) if fp else ["no fingerprint"]
    if not diff:
        return {}
    log.warning("soc.table=%s was not measured on this machine (%s); its figures are not this CPU's",
                table_ref, "; ".join(diff))
    return {"foreign": diff}


# ---------------------------------------------------------------------------------- speed now vs at calibration
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


# ---------------------------------------------------------------------------------- validate on this machine
def validate_table(table: LatencyTable, space: SearchSpace, vcfg: ValidateConfig, profiler: Profiler,
                   convert: Converter) -> dict[str, Any]:
    """Whole networks (a seeded sample of `space` plus the reference nets) measured on this CPU against
    the table's predictions: absolute figures, and figures at this machine's current speed (speed
    probes among them), plus the fitted op model (the method behind the Snapdragon tables) checked
    where every row is measured. Writes validate.json and the scatter plot into `vcfg.out_dir`."""
    from spnas_core.files import write_json_atomic

    from latency_tables.validating.validate import error_metrics, sample_validation_archs

    res = vcfg.resolution
    # a sampled network the table was built or calibrated on (a whole-network table's profiled networks) is
    # left out; the reference nets stay (a whole-network table reads their own keys from them: said in meta)
    used = set((table.meta.get("overhead_fit") or {}).get("arch_strings") or [])
    archs = [a for a in sample_validation_archs(space, vcfg.num_archs, vcfg.seed, res) if a.to_string() not in used]
    archs += [ref(resolution=res) for ref in REFERENCE_NETS.values()]
    out_dir = Path(vcfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    probes = speed_probes(table, vcfg.speed_probes)
    if vcfg.speed_probes and not probes:
        log.warning("table '%s' has no calibration networks to use as speed probes (fitted before they were kept): "
                    "absolute figures only. Re-fit its calibration (~1.5 min): `spnas-profile table_name=%s "
                    "resume=true`", table.device, table.device)
    order_archs, order = interleave(archs, [a for a, _ in probes])
    measured = measure_whole(order_archs, profiler, convert, vcfg.passes, "validate")
    timing = [measured[order.index(i)] for i in range(len(order))]  # back to archs + probes order
    rows = [_validation_row(a, t, table) for a, t in zip(archs, timing)]
    meas = [r["measured_ms"] for r in rows]
    metrics = error_metrics([r["predicted_ms"] for r in rows], meas)
    speed, at_speed = _at_current_speed(rows, probes, [t.value for t in timing[len(archs):]])
    png = _validation_plot(rows, table, profiler, speed, at_speed or metrics, out_dir)
    fp = table_fingerprint(table.meta)
    result = {"table": table.device, "metrics": metrics, "metrics_at_speed": at_speed, "speed": speed,
              **_op_model_check(table, rows, fp), "rows": rows, "scatter_png": str(png),
              "threads": getattr(profiler, "threads", None), "passes": vcfg.passes,
              "statistic": table.meta.get("statistic"), "overhead_fit": table.meta.get("overhead_fit"),
              "fingerprint": fp.describe() if fp else None}
    write_json_atomic(out_dir / "validate.json", result)
    return result


def _validation_row(arch: ArchSpec, t: Timing, table: LatencyTable) -> dict[str, Any]:
    from latency_tables.lookup.predictor import op_sum_ms

    return {"name": arch.name, "arch": arch.to_string(), "measured_ms": t.value, "measured_median_ms": t.median_ms,
            "measured_std_ms": t.std_ms, "run_means_ms": list(t.run_means_ms),
            "predicted_ms": predict_latency_ms(arch, table), "op_sum_ms": op_sum_ms(arch, table)}


def _at_current_speed(rows: list[dict[str, Any]], probes: list[tuple[ArchSpec, float]], probe_now: list[float]
                      ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The speed factor from the probes and the error metrics of predictions scaled by it (None without probes)."""
    from latency_tables.validating.validate import error_metrics

    if not probes:
        return None, None
    factor = speed_factor(probe_now, [ms for _, ms in probes])
    speed = {"factor": factor, "probes": [{"name": a.name, "arch": a.to_string(), "calibration_ms": ms,
                                           "now_ms": now} for (a, ms), now in zip(probes, probe_now)],
             "meaning": "median of now / at calibration over calibration networks re-measured in this run "
                        "(none of them is validated); predictions x factor = the table at this machine's "
                        "current speed"}
    for r in rows:
        r["predicted_at_speed_ms"] = r["predicted_ms"] * factor
    return speed, error_metrics([r["predicted_at_speed_ms"] for r in rows], [r["measured_ms"] for r in rows])


def _validation_plot(rows: list[dict[str, Any]], table: LatencyTable, profiler: Profiler,
                     speed: dict[str, Any] | None, shown: dict[str, Any], out_dir: Path) -> Path:
    from latency_tables.validating.validate import scatter_plot

    title = f"{table.device}: table prediction vs measured (LiteRT, {getattr(profiler, 'threads', '?')} thread)"
    if speed:
        title += f"\nprediction x {speed['factor']:.3f} (this machine's speed vs at calibration)"
    return scatter_plot([r.get("predicted_at_speed_ms", r["predicted_ms"]) for r in rows],
                        [r["measured_ms"] for r in rows], out_dir / "validate_scatter.png", title,
                        [r["name"] for r in rows], shown)


def _op_model_check(table: LatencyTable, rows: list[dict[str, Any]], fp: Any) -> dict[str, Any]:
    """The per-device op model fitted to this table's rows, scaled to MobileNetV2's measurement, against
    the whole networks: how well the method behind the modeled tables does where the truth is known."""
    from latency_tables.lookup.costmodel import Measured, fit_device, kernels_of_key, scale_to
    from latency_tables.validating.validate import error_metrics

    fit_in = [Measured(k, tuple(kernels_of_key(k)), table.ms(k), "table row", k) for k in sorted(table.ops)]
    cache_kb = float((fp.caches_kb.get("L2") if fp else None) or 2048)
    fit = fit_device(fit_in, cache_kb, "this CPU")
    mbv2 = next(r for r in rows if r["name"] == "mobilenet_v2")
    model = scale_to(fit.model, [op.key for op in K.ops_of(ArchSpec.from_string(mbv2["arch"]))], mbv2["measured_ms"])
    nets = error_metrics([model.total_ms([op.key for op in K.ops_of(ArchSpec.from_string(r["arch"]))]) for r in rows],
                         [r["measured_ms"] for r in rows])
    return {"op_model_vs_table_rows": fit.summary(), "op_model_vs_whole_networks": nets}
