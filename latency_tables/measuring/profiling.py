"""Profiling a table: every op key's micro-model measured by any `Profiler`, saved after each key
(a phone that disconnects loses nothing), repeated in interleaved passes, resumable, with a skip
list for ops the binary refuses."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from spnas_core.errors import DeviceDisconnected, DeviceError, ModelRefusedError, RunStateError
from spnas_core.files import write_json_atomic

from latency_tables.profilers.base import Profiler
from latency_tables.lookup.table import LatencyTable

log = logging.getLogger(__name__)


@dataclass
class ProfileResult:
    table: LatencyTable
    measured: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # kept from an earlier run (resume)
    refused: dict[str, str] = field(default_factory=dict)  # key -> why the binary could not run it


def profile_keys(keys: Iterable[str], profiler: Profiler, model_for_key: Callable[[str], Path],
                 out_path: str | os.PathLike, meta: dict[str, Any], *, resume: bool = False,
                 force: bool = False, progress: bool = True, passes: int = 1, retry_refused: bool = False
                 ) -> ProfileResult:
    """Measure every key's micro-model into the table at `out_path`, saving after each key.

    With `passes > 1` every key is measured again in later passes, minutes apart, and each row keeps
    its fastest pass: a slow episode (seconds long) then spoils a row only if it hits it in every pass.
    The passes each row has had are recorded (`meta.passes`), so a run cut short in pass 2 of 3 and
    resumed finishes the missing passes, and the table is `complete` only when every row has them all.

    A model the binary cannot run (`ModelRefusedError`) goes on the table's skip list
    (`meta.refused_ops`, with the binary's words) and the run continues; a resumed run leaves those
    keys alone unless `retry_refused`. When every op is refused there is no table to hold that list:
    it is kept beside it (`<table>.refused.json`) and a resume reads it from there. With `resume`,
    keys already in an existing table are kept. Without it, an existing table is refused unless
    `force`. A `DeviceDisconnected` error (in any pass) saves the partial table and says how to resume.
    """
    out_path = Path(out_path)
    keys = list(dict.fromkeys(keys))
    passes = max(1, int(passes))
    table, refused = _open_table(out_path, meta, resume=resume, force=force, retry_refused=retry_refused)
    done = _passes_done(table, passes)
    table.meta["passes"] = {"target": passes, "done": done}
    todo = [k for k in table.missing(keys) if k not in refused]
    done_before = [k for k in keys if k in table.ops]
    measured: list[str] = []
    refused_now: dict[str, str] = {}

    def save() -> None:
        if table.ops:
            table.meta["date"] = time.strftime("%Y-%m-%d")
            table.save(out_path)

    try:
        for key in tqdm_or_list(todo, progress, f"profile {table.device}"):
            try:
                timing = profiler.measure(model_for_key(key))
            except ModelRefusedError as e:
                refused[key] = refused_now[key] = e.one_line()
                log.warning("skipping %s: %s", key, e.one_line())
                continue
            table.ops[key] = timing.stats()
            done[key] = 1
            measured.append(key)
            save()
        for p in range(2, passes + 1):
            again = [k for k in keys if k in table.ops and done.get(k, 0) < p]
            for key in tqdm_or_list(again, progress, f"profile {table.device} pass {p}/{passes}"):
                new = profiler.measure(model_for_key(key)).stats()
                if new.value < table.ops[key].value:
                    table.ops[key] = new
                done[key] = p
                save()
    except DeviceDisconnected as e:
        save()
        short = sum(1 for k in keys if k in table.ops and done.get(k, 0) < passes)
        raise DeviceDisconnected(
            f"{e}. Profiled {len(measured)} of {len(todo)} missing keys this run ({short} row(s) still short of "
            f"{passes} passes); the partial table is saved in {out_path}. Reconnect the phone and re-run with "
            f"resume=true to measure only the rest.") from None
    table.meta["complete"] = not table.missing(keys) and all(done.get(k, 0) >= passes for k in keys)
    if refused:
        log.warning("%d op(s) the binary could not run are listed in meta.refused_ops of %s", len(refused), out_path)
    if not table.ops:
        side = refused_path(out_path)
        if refused:
            write_json_atomic(side, {"refused_ops": refused, "keys": keys})
        raise DeviceError(f"no op could be measured: the binary refused all {len(refused)} "
                          f"(e.g. {next(iter(refused.values()), '')}); the list is kept in {side} (a resume skips "
                          f"them; retry_refused=true tries them again with a newer binary)")
    table.save(out_path)
    refused_path(out_path).unlink(missing_ok=True)
    return ProfileResult(table, measured, done_before, refused_now)


def refused_path(out_path: Path) -> Path:
    """Where the refused ops are kept while the table has no row to carry them."""
    return out_path.with_name(out_path.name + ".refused.json")


def _passes_done(table: LatencyTable, passes: int) -> dict[str, int]:
    """Passes each row already has: the recorded ones; rows of a table from before passes were recorded
    count as having them all (such a run re-measured nothing it kept, and neither does a resume)."""
    rec = table.meta.get("passes") if isinstance(table.meta.get("passes"), dict) else {}
    done = {k: int(v) for k, v in (rec.get("done") or {}).items() if k in table.ops}
    default = 1 if rec else passes
    for k in table.ops:
        done.setdefault(k, default)
    return done


def _open_table(out_path: Path, meta: dict[str, Any], *, resume: bool, force: bool,
                retry_refused: bool) -> tuple[LatencyTable, dict[str, str]]:
    """The table to fill (the existing one on resume, else a new one) and its skip list of refused ops."""
    if out_path.exists() and not (resume or force):
        raise RunStateError(f"{out_path} exists; pass resume=true to measure only its missing keys, "
                            f"or force=true to measure everything again")
    if out_path.exists() and resume:
        table = LatencyTable.load(out_path)
        table.meta.update({k: v for k, v in meta.items() if k not in ("date", "passes")})
    else:
        table = LatencyTable(dict(meta), {})
    refused: dict[str, str] = {}
    if resume and not retry_refused:
        refused = dict(table.meta.get("refused_ops") or {})
        side = refused_path(out_path)
        if side.exists():
            refused.update(json.loads(side.read_text()).get("refused_ops") or {})
    table.meta["complete"] = False
    table.meta["refused_ops"] = refused
    return table, refused


def tqdm_or_list(items: list[str], progress: bool, desc: str) -> Iterable[str]:
    if not progress:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="op", dynamic_ncols=True)
