"""Profiling a table: every op key's micro-model measured by any `Profiler`, saved after each key
(a phone that disconnects loses nothing), repeated in interleaved passes, resumable, with a skip
list for ops the binary refuses."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from spnas_core.errors import DeviceDisconnected, DeviceError, ModelRefusedError, RunStateError

from .profilers.base import Profiler
from .table import LatencyTable

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

    With `passes > 1` the keys measured in this run are measured again in later passes, minutes
    apart, and each row keeps its fastest pass: a slow episode (seconds long) then spoils a row only
    if it hits it in every pass.

    A model the binary cannot run (`ModelRefusedError`) goes on the table's skip list
    (`meta.refused_ops`, with the binary's words) and the run continues; a resumed run leaves those
    keys alone unless `retry_refused`. With `resume`, keys already in an existing table are kept.
    Without it, an existing table is refused unless `force`. A `DeviceDisconnected` error (in any
    pass) saves the partial table and says how to resume.
    """
    out_path = Path(out_path)
    keys = list(dict.fromkeys(keys))
    table, refused = _open_table(out_path, meta, resume=resume, force=force, retry_refused=retry_refused)
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
            measured.append(key)
            save()
        for p in range(2, passes + 1):
            _repeat_pass(table, measured, profiler, model_for_key, f"profile {table.device} pass {p}/{passes}",
                         progress)
            save()
    except DeviceDisconnected as e:
        save()
        raise DeviceDisconnected(
            f"{e}. Profiled {len(measured)} of {len(todo)} missing keys this run; the partial table is saved in "
            f"{out_path}. Reconnect the phone and re-run with resume=true to measure only the rest.") from None
    table.meta["complete"] = not table.missing(keys)
    if refused:
        log.warning("%d op(s) the binary could not run are listed in meta.refused_ops of %s", len(refused), out_path)
    if not table.ops:
        raise DeviceError(f"no op could be measured ({len(refused)} refused, e.g. {next(iter(refused.values()), '')})")
    table.save(out_path)
    return ProfileResult(table, measured, done_before, refused_now)


def _open_table(out_path: Path, meta: dict[str, Any], *, resume: bool, force: bool,
                retry_refused: bool) -> tuple[LatencyTable, dict[str, str]]:
    """The table to fill (the existing one on resume, else a new one) and its skip list of refused ops."""
    if out_path.exists() and not (resume or force):
        raise RunStateError(f"{out_path} exists; pass resume=true to measure only its missing keys, "
                            f"or force=true to measure everything again")
    if out_path.exists() and resume:
        table = LatencyTable.load(out_path)
        table.meta.update({k: v for k, v in meta.items() if k not in ("date",)})
    else:
        table = LatencyTable(dict(meta), {})
    refused: dict[str, str] = dict(table.meta.get("refused_ops") or {}) if resume and not retry_refused else {}
    table.meta["complete"] = False
    table.meta["refused_ops"] = refused
    return table, refused


def _repeat_pass(table: LatencyTable, keys: list[str], profiler: Profiler, model_for_key: Callable[[str], Path],
                 desc: str, progress: bool) -> None:
    """Measure `keys` once more; each row keeps its fastest pass."""
    for key in tqdm_or_list(keys, progress, desc):
        new = profiler.measure(model_for_key(key)).stats()
        if new.value < table.ops[key].value:
            table.ops[key] = new


def tqdm_or_list(items: list[str], progress: bool, desc: str) -> Iterable[str]:
    if not progress:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="op", dynamic_ncols=True)
