"""`LocalProfiler`: the `ai-edge-litert` interpreter (XNNPACK) in this process, pinned to chosen cores
with `os.sched_setaffinity`, a warm-up then `repeats` timed runs; the fastest run's mean."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from spnas_core.errors import ConfigError
from spnas_core.native import quiet_native

from .base import Profiler, Timing, fastest_run, statistic_meta


class LocalProfiler(Profiler):
    """The LiteRT interpreter (XNNPACK) on this CPU."""

    def __init__(self, threads: int = 1, cpus: Iterable[int] | None = None, warmup_runs: int = 10,
                 num_runs: int = 50, min_time_s: float = 0.3, max_runs: int = 5000, repeats: int = 3) -> None:
        self.threads = int(threads)
        self.cpus = sorted(set(int(c) for c in cpus)) if cpus else None
        self.warmup_runs = int(warmup_runs)
        self.num_runs = int(num_runs)
        self.min_time_s = float(min_time_s)
        self.max_runs = int(max_runs)
        self.repeats = max(1, int(repeats))
        if self.cpus:
            avail = os.sched_getaffinity(0)
            bad = [c for c in self.cpus if c not in avail]
            if bad:
                raise ConfigError(f"profile.cpus {bad} are not available to this process (have {sorted(avail)})")

    def measure(self, tflite: str | os.PathLike) -> Timing:
        """`repeats` runs of at least `num_runs` invocations and `min_time_s` each, after a warm-up;
        the fastest run's mean (as `benchmark_model` runs on a phone, repeated)."""
        from ai_edge_litert.interpreter import Interpreter

        old = os.sched_getaffinity(0)
        if self.cpus:
            os.sched_setaffinity(0, self.cpus)
        try:
            with quiet_native():
                it = Interpreter(model_path=str(tflite), num_threads=self.threads)
                it.allocate_tensors()
            rng = np.random.default_rng(0)
            for d in it.get_input_details():
                if np.issubdtype(d["dtype"], np.floating):
                    x = rng.standard_normal(d["shape"]).astype(d["dtype"])
                else:
                    info = np.iinfo(d["dtype"])
                    x = rng.integers(info.min, info.max, size=d["shape"], endpoint=True).astype(d["dtype"])
                it.set_tensor(d["index"], x)
            for _ in range(self.warmup_runs):
                it.invoke()
            runs: list[Timing] = []
            for _ in range(self.repeats):
                times: list[float] = []
                start = time.perf_counter()
                while len(times) < self.max_runs and (
                        len(times) < self.num_runs or time.perf_counter() - start < self.min_time_s):
                    t = time.perf_counter_ns()
                    it.invoke()
                    times.append((time.perf_counter_ns() - t) / 1e6)
                runs.append(Timing(float(np.mean(times)), float(np.std(times)), len(times), float(np.median(times)),
                                   float(np.min(times)), float(np.percentile(times, 10))))
        finally:
            if self.cpus:
                os.sched_setaffinity(0, old)
        return fastest_run(runs)

    def describe(self) -> dict[str, Any]:
        from importlib import metadata

        from latency_tables.lookup.fingerprint import machine_fingerprint

        return {
            "runtime": "LiteRT interpreter (ai-edge-litert, XNNPACK delegate)",
            "runtime_version": metadata.version("ai-edge-litert"),
            "cpu_model": cpu_model(),
            "threads": self.threads,
            "cores_used": ",".join(map(str, self.cpus)) if self.cpus else "any",
            "warmup_runs": self.warmup_runs,
            "num_runs": self.num_runs,
            "min_time_s": self.min_time_s,
            "repeats": self.repeats,
            "statistic": statistic_meta(self.repeats, self.num_runs, self.warmup_runs),
            "fingerprint": machine_fingerprint(self.threads).to_dict(),
        }


def cpu_model() -> str:
    """The host CPU's model name (from /proc/cpuinfo)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()
