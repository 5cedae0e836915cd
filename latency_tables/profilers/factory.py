"""The profiler of a config: `make_profiler(device, ProfilerConfig, SocConfig)` builds the local (LiteRT on
this CPU) or adb (benchmark_model on a phone) `Profiler`, and `make_op_profiler(...)` the whole-network
`OpProfiler` (LiteRT's op profiler, adb op profiling, Qualcomm AI Hub), from the layer's own configs, so
no command unpacks a profiler's settings by hand."""

from __future__ import annotations

import os

from latency_tables.config import AiHubConfig, ProfileDevice, ProfilerConfig, SocConfig
from latency_tables.profilers.adb import AdbProfiler
from latency_tables.profilers.base import OpProfiler, Profiler
from latency_tables.profilers.local import LocalProfiler
from latency_tables.socs import SOCS
from spnas_core.errors import ConfigError


def local_profiler(p: ProfilerConfig) -> LocalProfiler:
    """The LiteRT profiler on this CPU with a config's settings."""
    cpus = p.cpus
    if cpus == "auto":
        cpus = [max(os.sched_getaffinity(0))]
    elif cpus is not None and not (isinstance(cpus, list) and all(isinstance(c, int) for c in cpus)):
        raise ConfigError(f"profile.cpus={cpus!r}: use auto, null or a list of core numbers like [1]")
    return LocalProfiler(threads=p.threads, cpus=cpus, warmup_runs=p.warmup_runs, num_runs=p.num_runs,
                         min_time_s=p.min_time_s, repeats=p.repeats)


def adb_profiler(p: ProfilerConfig, soc: SocConfig | None) -> AdbProfiler:
    """benchmark_model on the phone `p.serial`, checked against the SoC it is meant to be (its ABI, the
    platforms it reports, its big cores as the default `taskset` mask)."""
    if soc is None:
        raise ConfigError("device=adb needs the SoC the phone has: soc=<name> (e.g. soc=sd845)")
    facts = SOCS.get(soc.name)
    return AdbProfiler(p.serial, p.benchmark_binary, adb=p.adb, taskset_mask=p.taskset_mask or soc.taskset_mask,
                       threads=p.threads, warmup_runs=p.warmup_runs, num_runs=p.num_runs, repeats=p.repeats,
                       enable_op_profiling=p.enable_op_profiling, expected_abi=soc.abi, soc=soc.name,
                       soc_platforms=facts.platforms if facts else (), allow_soc_mismatch=p.allow_soc_mismatch,
                       allow_abi_mismatch=p.allow_abi_mismatch, remote_dir=p.remote_dir)


def make_profiler(device: ProfileDevice, p: ProfilerConfig, soc: SocConfig | None = None) -> Profiler:
    """The single-op profiler of `device` (local | adb) with the settings of `p`; adb checks the phone
    against `soc`."""
    if device is ProfileDevice.local:
        return local_profiler(p)
    if device is ProfileDevice.aihub:
        raise ConfigError("device=aihub profiles whole networks, not single ops: use `spnas-profile wholenet "
                          "device=aihub aihub.chipset=qualcomm-snapdragon-845`")
    return adb_profiler(p, soc)


def make_op_profiler(device: ProfileDevice, p: ProfilerConfig, soc: SocConfig | None = None,
                     aihub: AiHubConfig | None = None, jobs_file: str | os.PathLike | None = None) -> OpProfiler:
    """The whole-network op profiler of `device`: LiteRT's profiler on this CPU (the settings of `p`),
    benchmark_model's op profiling over adb, or Qualcomm AI Hub (`aihub`; its jobs
    recorded in `jobs_file`, so a re-run reuses them)."""
    if device is ProfileDevice.local:
        from latency_tables.profilers.litert_ops import LiteRtOpProfiler

        lp = local_profiler(p)
        return LiteRtOpProfiler(threads=lp.threads, cpus=lp.cpus, warmup_runs=p.warmup_runs, num_runs=p.num_runs,
                                repeats=p.repeats)
    if device is ProfileDevice.adb:
        return adb_profiler(p, soc)
    from latency_tables.profilers.aihub import AiHubProfiler

    a = aihub or AiHubConfig()
    return AiHubProfiler(a.device, a.chipset, a.compute_unit, jobs_file)
