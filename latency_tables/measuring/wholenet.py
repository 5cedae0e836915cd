"""A latency table from a handful of whole-network profiles (benchmark_model's op profiling over adb,
Qualcomm AI Hub, the LiteRT profiler on this CPU).

1. `covering.design` picks the networks: every key of the table in `k` of them.
2. Each network is converted once (`host.whole_model_path`: cached by its content) and profiled per op
   by an `OpProfiler`; each profile is saved as it arrives (`<table>.profiles/<network>.json`), so a
   run that stops keeps what it has and a re-run profiles only the rest (an AI Hub profiler also
   reuses its submitted jobs).
3. `attribution.attribute` maps every profile's entries onto the network's op keys; a key's row is
   the median over the networks that contain it, with their spread in `meta.wholenet.spread`.
4. The overhead (`meta.overhead_ms`) is the median over networks of end-to-end latency minus the
   attributed entries: interpreter work no op owns, layout entries, the profiler's own cost. The
   networks and their end-to-end latencies are kept as the table's calibration networks
   (`meta.overhead_fit`), which `spnas-profile command=validate` re-measures as speed probes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from search_spaces import ArchSpec
from spnas_core.errors import DeviceDisconnected, InputError, RunStateError
from spnas_core.files import write_json_atomic

from latency_tables.measuring.attribution import Attribution, attribute
from latency_tables.measuring.covering import CoveringDesign
from latency_tables.profilers.base import OpProfile, OpProfiler
from latency_tables.lookup.table import LatencyTable, OpStats

log = logging.getLogger(__name__)

WholeModel = Callable[[ArchSpec], Path]  # arch -> its .tflite (converted once, cached by content)


@dataclass
class WholeNetResult:
    table: LatencyTable
    profiled: list[str] = field(default_factory=list)  # networks profiled in this run
    reused: list[str] = field(default_factory=list)  # profiles kept from an earlier run
    attributions: list[Attribution] = field(default_factory=list)


def profiles_dir(out_path: Path) -> Path:
    """Where the profiles of a table's networks are kept (beside the table)."""
    return out_path.with_name(out_path.stem + ".profiles")


def _profile_file(folder: Path, arch: ArchSpec) -> Path:
    h = hashlib.sha256(arch.to_string().encode()).hexdigest()[:16]
    return folder / f"{arch.name or 'net'}-{h}.json"


def build_table(attributions: Sequence[Attribution], profiles: Sequence[OpProfile], meta: dict[str, Any],
                keys: Sequence[str] | None = None) -> LatencyTable:
    """Rows (median over networks), spread and overhead from attributed profiles (pure: no device)."""
    samples: dict[str, list[tuple[float, str]]] = {}
    overheads, unattributed = [], []
    for at, prof in zip(attributions, profiles):
        # a key twice in one network (the layers of a stage) gives two samples: two positions
        for op, ms in zip(at.ops, at.ms):
            samples.setdefault(op.key, []).append((ms, at.arch.name))
        overheads.append(prof.total_ms - at.attributed_ms)
        unattributed.append({"network": at.arch.name, "ms": at.unattributed_ms,
                             "entries": [[e.node_type, e.name, e.ms] for e in at.unattributed]})
    ops: dict[str, OpStats] = {}
    spread: dict[str, Any] = {}
    for key, vals in samples.items():
        xs = [v for v, _ in vals]
        med = float(statistics.median(xs))
        sd = float(statistics.pstdev(xs)) if len(xs) > 1 else 0.0
        ops[key] = OpStats(med, sd, len(xs), med, None)
        spread[key] = {"n": len(xs), "networks": len({n for _, n in vals}), "min_ms": min(xs), "max_ms": max(xs)}
    m = dict(meta)
    m["overhead_ms"] = float(statistics.median(overheads)) if overheads else 0.0
    m["row_scale"] = 1.0
    m["overhead_fit"] = {
        "note": "overhead = median over the profiled networks of end-to-end latency - the entries attributed to "
                "op keys; rows are read inside whole networks, so no row scale is fitted",
        "archs": [at.arch.name for at in attributions], "arch_strings": [at.arch.to_string() for at in attributions],
        "measured_ms": [p.total_ms for p in profiles], "op_sums_ms": [at.attributed_ms for at in attributions],
        "residuals_ms": overheads, "used": [True] * len(profiles), "n": len(profiles),
        "overhead_ms": m["overhead_ms"], "row_scale": 1.0}
    missing = sorted(set(keys or []) - set(ops))
    where = sorted({json.dumps({k: p.source[k] for k in ("runtime", "compute_unit", "compute_units", "name", "chipset",
                                                          "serial", "soc") if p.source.get(k)}, sort_keys=True)
                    for p in profiles})
    m["wholenet"] = {**(m.get("wholenet") or {}), "networks": len(profiles), "profiles": len(profiles),
                     "measured_on": [json.loads(w) for w in where], "spread": spread,
                     "unattributed": unattributed, "missing": missing}
    m["complete"] = not missing
    return LatencyTable(m, ops)


def profile_design(design: CoveringDesign, profiler: OpProfiler, whole_model: WholeModel, out_path: str | Path,
                   meta: dict[str, Any], *, resume: bool = False, force: bool = False, progress: bool = True
                   ) -> WholeNetResult:
    """Profile every network of `design` (saving each profile as it arrives), attribute, write the table.

    Without `resume`, an existing table is refused unless `force`; with it, saved profiles are reused
    and only the remaining networks are profiled. A disconnect (or a failed job) keeps every profile
    so far and the table built from them, and says how to go on."""
    from tqdm import tqdm

    out_path = Path(out_path)
    folder = profiles_dir(out_path)
    if (out_path.exists() or folder.exists()) and not (resume or force):
        raise RunStateError(f"{out_path} (or its profiles in {folder}) exists; pass resume=true to profile only the "
                            f"networks still missing, or force=true to profile everything again")
    if force and not resume and folder.exists():
        for f in folder.glob("*.json"):
            f.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    keys = sorted(design.coverage)
    meta = {**meta, "provenance": "measured", "date": time.strftime("%Y-%m-%d"),
            "wholenet": {"method": "whole-network op profiles attributed to op keys (latency_tables.measuring.wholenet)",
                         "k": design.k, "design": design.summary(), "reference_keys": design.reference_keys,
                         "profiles_dir": str(folder)}}
    res = WholeNetResult(LatencyTable(meta, {}))
    done: list[tuple[ArchSpec, OpProfile]] = []

    def write() -> None:
        if not done:
            return
        ats = [attribute(a, p.entries) for a, p in done]
        table = build_table(ats, [p for _, p in done], meta, keys)
        table.meta["wholenet"]["profiles"] = len(done)
        table.save(out_path)
        res.table, res.attributions = table, ats

    try:
        for arch in tqdm(design.networks, desc="whole-network profiles", unit="net", disable=not progress):
            f = _profile_file(folder, arch)
            if f.exists():
                done.append((arch, OpProfile.from_dict(json.loads(f.read_text())["profile"])))
                res.reused.append(arch.name)
                continue
            prof = profiler.profile_ops(whole_model(arch))
            attribute(arch, prof.entries)  # a profile that cannot be attributed is refused before it is kept
            write_json_atomic(f, {"arch": arch.to_string(), "name": arch.name, "profile": prof.to_dict()})
            done.append((arch, prof))
            res.profiled.append(arch.name)
            write()
    except DeviceDisconnected as e:
        write()
        raise DeviceDisconnected(f"{e}. {len(done)} of {len(design.networks)} networks are profiled (kept in "
                                 f"{folder}); re-run with resume=true to profile only the rest.") from None
    if not done:
        raise InputError("the covering design holds no network")
    write()
    return res


def device_runs(design: CoveringDesign, micro_keys: int, calibration_networks: int, passes: int = 1
                ) -> dict[str, Any]:
    """How many models each path sends to the device: one per key plus the calibration networks for
    micro-models, one per covering network for whole-network profiles (each `passes` times)."""
    micro = (micro_keys + calibration_networks) * passes
    whole = len(design.networks) * passes
    return {"micro_model_runs": micro, "whole_network_runs": whole, "ratio": micro / whole if whole else None,
            "passes": passes, "micro_keys": micro_keys, "calibration_networks": calibration_networks,
            "covering_networks": len(design.networks)}
