"""The declared profiler interface (nn-Meter's `backends/interface.py` idea): what every profiler
measures (`Timing`), the one statistic a table row holds, and the `Profiler` protocol. Implementations:
`local.py` (LiteRT on this CPU), `adb.py` (benchmark_model on a phone)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from spnas_core.errors import DeviceError

from latency_tables.lookup.table import OpStats

STATISTIC = "fastest_run_mean"
STATISTIC_HELP = ("mean of the timed invocations of one run (benchmark_model's `avg`), the fastest of `repeats` "
                  "runs: a run hit by a slow episode of a shared machine or a throttling phone is discarded")


@dataclass(frozen=True)
class Timing:
    """Latency statistics of one model in milliseconds.

    `mean_ms`, `std_ms`, `count` are those of the fastest run (the table statistic, the same on this
    CPU and on a phone); `run_means_ms` lists every run's mean; median / min / p10 of the invocations
    are informational where the profiler sees single invocations (this CPU)."""

    mean_ms: float
    std_ms: float
    count: int
    median_ms: float | None = None
    min_ms: float | None = None
    p10_ms: float | None = None
    run_means_ms: tuple[float, ...] = ()

    def stats(self) -> OpStats:
        return OpStats(self.mean_ms, self.std_ms, self.count, self.median_ms, self.p10_ms)

    @property
    def value(self) -> float:
        """The table statistic: the fastest run's mean."""
        return self.mean_ms


def fastest_run(runs: list[Timing]) -> Timing:
    """The run with the lowest mean, carrying every run's mean."""
    if not runs:
        raise DeviceError("no timed runs")
    best = min(runs, key=lambda t: t.mean_ms)
    return Timing(best.mean_ms, best.std_ms, best.count, best.median_ms, best.min_ms, best.p10_ms,
                  tuple(t.mean_ms for t in runs))


@runtime_checkable
class Profiler(Protocol):
    """Times a .tflite file on one device and says where it ran: the extension point of every measured table.

    Contract:
    - `measure(tflite)` runs the model on the device `repeats` times (after its warm-up) and returns
      one `Timing` whose `value` (`mean_ms`) is the table statistic (`STATISTIC`: the fastest run's
      mean, `fastest_run`); it raises `spnas_core.errors.DeviceError` (or a kind of it: a phone that
      went away is `DeviceDisconnected`, resumable) when the device cannot run it, never returns a
      partial figure.
    - `describe()` returns what a table's `meta` records of the measurement: runtime and version,
      threads, cores used, the runs (`statistic_meta`) and, for this CPU, the fingerprint.
    - A profiler is built from its config by `latency_tables.profilers.factory.make_profiler`.
    Implementations: `local.LocalProfiler` (LiteRT on this CPU), `adb.AdbProfiler` (benchmark_model on
    a phone), and the whole-network op profilers below, which also time a whole file.
    """

    def measure(self, tflite: str | os.PathLike) -> Timing: ...

    def describe(self) -> dict[str, Any]: ...


def statistic_meta(repeats: int, num_runs: int, warmup_runs: int) -> dict[str, Any]:
    """How a table's rows were reduced to one figure (the same on this CPU and on a phone)."""
    return {"name": STATISTIC, "repeats": repeats, "timed_runs": num_runs, "warmup_runs": warmup_runs,
            "meaning": STATISTIC_HELP}


@dataclass(frozen=True)
class OpEntry:
    """One entry of a per-op profile, in run order: the runtime's node type (`CONV_2D`, `Convolution
    (NHWC, F32) IGEMM`, ...), its name, and its average time in milliseconds."""

    node_type: str
    name: str
    ms: float


@dataclass(frozen=True)
class OpProfile:
    """A whole network's per-op profile: its entries in run order, its end-to-end latency (ms) and
    where it was measured (runtime, compute unit, device...)."""

    entries: tuple[OpEntry, ...]
    total_ms: float
    source: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"entries": [[e.node_type, e.name, e.ms] for e in self.entries], "total_ms": self.total_ms,
                "source": self.source}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "OpProfile":
        return cls(tuple(OpEntry(str(t), str(n), float(ms)) for t, n, ms in d["entries"]), float(d["total_ms"]),
                   dict(d.get("source") or {}))


@runtime_checkable
class OpProfiler(Protocol):
    """Profiles a whole .tflite network per op: the extension point of tables built from whole networks.

    Contract:
    - `profile_ops(tflite)` returns the network's `OpProfile`: every entry the runtime ran, in run
      order, with its average time, and the end-to-end latency; `source` says where (runtime, compute
      unit, device). It raises `DeviceError` (or a kind of it) when the device cannot profile it.
    - `describe()` as for `Profiler`.
    Implementations: `adb.AdbProfiler` (benchmark_model's op profiling), `aihub.AiHubProfiler`
    (Qualcomm AI Hub), `litert_ops.LiteRtOpProfiler` (LiteRT's profiler on this CPU).
    """

    def profile_ops(self, tflite: str | os.PathLike) -> OpProfile: ...

    def describe(self) -> dict[str, Any]: ...
