"""Profilers: measure a .tflite file's latency on this CPU or on a phone over adb.

- `LocalProfiler`: the `ai-edge-litert` interpreter in this process, pinned to chosen cores with
  `os.sched_setaffinity`, warm-up runs then timed runs (median, mean, std, count).
- `AdbProfiler`: TFLite's `benchmark_model` binary (user-supplied) on a phone selected by serial,
  run under `taskset` on the big cores; all three output forms of benchmark_model are parsed.

`profile_keys` drives either over a list of op keys, saving the table after every key so a phone
that disconnects loses nothing, and `resume=true` measures only the missing keys.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import numpy as np

from spnas.errors import (
    BenchmarkOutputError, ConfigError, DeviceDisconnected, DeviceError, InputNotFoundError, RunStateError, WrongABIError,
)

from .table import LatencyTable, OpStats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Timing:
    """Latency statistics of one model in milliseconds."""

    mean_ms: float
    std_ms: float
    count: int
    median_ms: float | None = None
    min_ms: float | None = None
    p10_ms: float | None = None

    def stats(self) -> OpStats:
        return OpStats(self.mean_ms, self.std_ms, self.count, self.median_ms, self.p10_ms)

    @property
    def value(self) -> float:
        """The robust figure (p10 where available), as `OpStats.value`."""
        return self.stats().value


class Profiler(Protocol):
    """Anything that can time a .tflite file and describe where it ran."""

    def measure(self, tflite: str | os.PathLike) -> Timing: ...

    def describe(self) -> dict[str, Any]: ...


# ---------------------------------------------------------------------------------- local
class LocalProfiler:
    """The LiteRT interpreter (XNNPACK) on this CPU."""

    def __init__(self, threads: int = 1, cpus: Iterable[int] | None = None, warmup_runs: int = 10,
                 num_runs: int = 50, min_time_s: float = 0.3, max_runs: int = 5000) -> None:
        self.threads = int(threads)
        self.cpus = sorted(set(int(c) for c in cpus)) if cpus else None
        self.warmup_runs = int(warmup_runs)
        self.num_runs = int(num_runs)
        self.min_time_s = float(min_time_s)
        self.max_runs = int(max_runs)
        if self.cpus:
            avail = os.sched_getaffinity(0)
            bad = [c for c in self.cpus if c not in avail]
            if bad:
                raise ConfigError(f"profile.cpus {bad} are not available to this process (have {sorted(avail)})")

    def measure(self, tflite: str | os.PathLike) -> Timing:
        from ai_edge_litert.interpreter import Interpreter

        old = os.sched_getaffinity(0)
        if self.cpus:
            os.sched_setaffinity(0, self.cpus)
        try:
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
            times: list[float] = []
            start = time.perf_counter()
            while len(times) < self.max_runs and (
                    len(times) < self.num_runs or time.perf_counter() - start < self.min_time_s):
                t = time.perf_counter_ns()
                it.invoke()
                times.append((time.perf_counter_ns() - t) / 1e6)
        finally:
            if self.cpus:
                os.sched_setaffinity(0, old)
        return Timing(float(np.mean(times)), float(np.std(times)), len(times), float(np.median(times)),
                      float(np.min(times)), float(np.percentile(times, 10)))

    def describe(self) -> dict[str, Any]:
        from importlib import metadata

        return {
            "runtime": "LiteRT interpreter (ai-edge-litert, XNNPACK delegate)",
            "runtime_version": metadata.version("ai-edge-litert"),
            "cpu_model": cpu_model(),
            "threads": self.threads,
            "cores_used": ",".join(map(str, self.cpus)) if self.cpus else "any",
            "warmup_runs": self.warmup_runs,
            "num_runs": self.num_runs,
            "min_time_s": self.min_time_s,
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


# ---------------------------------------------------------------------------------- benchmark_model output
_NUM = r"([0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)"
_NEW = re.compile(r"Inference timings in us:.*?Inference \(avg\):\s*" + _NUM)
_OLD = re.compile(r"Average inference timings in us:.*?Inference:\s*" + _NUM)
_STATS = re.compile(r"count=(\d+)\s.*?avg=" + _NUM + r"\s+std=" + _NUM)
_TIMINGS = re.compile(r"Timings \(microseconds\):\s*count=(\d+)\s.*?avg=" + _NUM + r"\s+std=" + _NUM)


def parse_benchmark_output(text: str) -> Timing:
    """Read the timed-run latency from any of benchmark_model's three output forms.

    1. ``Inference timings in us: Init: …, First inference: …, Warmup (avg): …, Inference (avg): …``
    2. ``Average inference timings in us: Warmup: …, Init: …, Inference: …`` (older releases)
    3. ``Timings (microseconds): count=… first=… curr=… min=… max=… avg=… std=…``

    Std and count come from the run's ``count=… avg=… std=…`` line where one matches the average.
    """
    stats = [(int(c), float(a), float(s)) for c, a, s in _STATS.findall(text)]

    def with_stats(avg_us: float) -> Timing:
        for c, a, s in reversed(stats):
            if abs(a - avg_us) <= max(1e-6, 0.01 * avg_us):
                return Timing(avg_us / 1e3, s / 1e3, c)
        return Timing(avg_us / 1e3, 0.0, 1)

    m = _NEW.search(text)
    if m:
        return with_stats(float(m.group(1)))
    m = _OLD.search(text)
    if m:
        return with_stats(float(m.group(1)))
    timings = _TIMINGS.findall(text)
    if timings:
        c, a, s = timings[0]  # the first is the whole-model summary; per-node summaries follow
        return Timing(float(a) / 1e3, float(s) / 1e3, int(c))
    tail = "\n".join(text.strip().splitlines()[-5:])
    raise BenchmarkOutputError(f"no latency in benchmark_model output; last lines:\n{tail}")


# ---------------------------------------------------------------------------------- adb
ELF_ABIS = {(2, 0xB7): "arm64-v8a", (1, 0x28): "armeabi-v7a", (2, 0x3E): "x86_64", (1, 0x03): "x86"}


def elf_abi(path: str | os.PathLike) -> str:
    """Android ABI of an ELF executable from its header (class and machine)."""
    head = Path(path).read_bytes()[:20]
    if len(head) < 20 or head[:4] != b"\x7fELF":
        raise WrongABIError(f"{path} is not an ELF executable (is it the benchmark_model binary for Android?)")
    ei_class = head[4]
    machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    abi = ELF_ABIS.get((ei_class, machine))
    if abi is None:
        raise WrongABIError(f"{path}: unsupported ELF machine {machine:#x} (class {ei_class})")
    return abi


_DISCONNECT = re.compile(r"device '.*' not found|device offline|device unauthorized|no devices/emulators found|"
                         r"device not found|error: closed|protocol fault", re.I)


class AdbProfiler:
    """benchmark_model on an Android phone over adb."""

    def __init__(self, serial: str, benchmark_binary: str | os.PathLike, *, adb: str = "adb",
                 taskset_mask: str | None = None, threads: int = 1, warmup_runs: int = 10, num_runs: int = 50,
                 enable_op_profiling: bool = True, remote_dir: str = "/data/local/tmp/spnas",
                 expected_abi: str | None = None, timeout_s: float = 600.0) -> None:
        if not serial:
            raise ConfigError("device=adb needs a phone serial (see `adb devices`): profile.serial=<serial>")
        self.serial = serial
        self.binary = Path(benchmark_binary) if benchmark_binary else None
        if self.binary is None or not self.binary.is_file():
            raise InputNotFoundError(
                f"benchmark_model binary {benchmark_binary} not found; build or download TFLite's "
                f"benchmark_model for the phone's ABI and pass profile.benchmark_binary=<path>")
        self.adb = adb
        self.taskset_mask = taskset_mask or None
        self.threads = int(threads)
        self.warmup_runs = int(warmup_runs)
        self.num_runs = int(num_runs)
        self.enable_op_profiling = bool(enable_op_profiling)
        self.remote_dir = remote_dir.rstrip("/")
        self.expected_abi = expected_abi
        self.timeout_s = float(timeout_s)
        self.binary_sha256 = hashlib.sha256(self.binary.read_bytes()).hexdigest()
        self.device_info: dict[str, Any] = {}
        self._pushed: set[str] = set()
        self._connected = False

    # -- adb plumbing
    def _run(self, *args: str, check: bool = True) -> str:
        cmd = [self.adb, "-s", self.serial, *args]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout_s)
        except FileNotFoundError:
            raise InputNotFoundError(f"adb executable '{self.adb}' not found; install Android platform-tools "
                                    f"or pass profile.adb=<path to adb>") from None
        except subprocess.TimeoutExpired:
            raise DeviceDisconnected(f"adb {' '.join(args[:2])} timed out after {self.timeout_s:.0f} s") from None
        out = (r.stdout or "") + (r.stderr or "")
        if _DISCONNECT.search(out) and (r.returncode != 0 or "error:" in out):
            raise DeviceDisconnected(f"phone {self.serial} disconnected: {out.strip().splitlines()[-1]}")
        if check and r.returncode != 0:
            raise DeviceError(f"`{shlex.join(cmd)}` failed ({r.returncode}): {out.strip()[-500:]}")
        return r.stdout

    def shell(self, command: str, check: bool = True) -> str:
        return self._run("shell", command, check=check)

    def connect(self) -> dict[str, Any]:
        """Check the phone is there and the binary runs on it; push the binary; read device facts."""
        state = self._run("get-state", check=False).strip()
        if state != "device":
            raise DeviceDisconnected(f"phone {self.serial} is not connected (adb get-state: '{state or 'none'}'); "
                                     f"check the cable, USB debugging, and `adb devices`")
        abi = self.shell("getprop ro.product.cpu.abi").strip()
        abilist = self.shell("getprop ro.product.cpu.abilist", check=False).strip().split(",")
        if self.expected_abi and abi != self.expected_abi:
            raise WrongABIError(f"phone {self.serial} reports ABI {abi}, but this SoC config expects "
                                f"{self.expected_abi}; is the right phone selected?")
        bin_abi = elf_abi(self.binary)  # type: ignore[arg-type]
        if bin_abi != abi and bin_abi not in abilist:
            raise WrongABIError(f"benchmark binary {self.binary} is built for {bin_abi}, but phone {self.serial} "
                                f"runs {abi} (supported: {', '.join(a for a in abilist if a) or abi}); "
                                f"use the benchmark_model build for {abi}")
        self.shell(f"mkdir -p {self.remote_dir}")
        self._run("push", str(self.binary), f"{self.remote_dir}/benchmark_model")
        self.shell(f"chmod 755 {self.remote_dir}/benchmark_model")
        ncpu = self.shell("ls -d /sys/devices/system/cpu/cpu[0-9]* | wc -l", check=False).strip()
        governors, max_freqs = [], []
        for i in range(int(ncpu) if ncpu.isdigit() else 0):
            base = f"/sys/devices/system/cpu/cpu{i}/cpufreq"
            governors.append(self.shell(f"cat {base}/scaling_governor", check=False).strip())
            f = self.shell(f"cat {base}/cpuinfo_max_freq", check=False).strip()
            max_freqs.append(int(f) if f.isdigit() else None)
        self.device_info = {
            "model": self.shell("getprop ro.product.model", check=False).strip(),
            "soc": (self.shell("getprop ro.soc.model", check=False).strip()
                    or self.shell("getprop ro.board.platform", check=False).strip()),
            "abi": abi,
            "android": self.shell("getprop ro.build.version.release", check=False).strip(),
            "governors": governors,
            "max_freq_khz": max_freqs,
        }
        self._connected = True
        return self.device_info

    def measure(self, tflite: str | os.PathLike) -> Timing:
        if not self._connected:
            self.connect()
        tflite = Path(tflite)
        remote = f"{self.remote_dir}/{tflite.name}"
        if remote not in self._pushed:
            self._run("push", str(tflite), remote)
            self._pushed.add(remote)
        cmd = (f"{self.remote_dir}/benchmark_model --graph={remote} --num_threads={self.threads} "
               f"--warmup_runs={self.warmup_runs} --num_runs={self.num_runs} "
               f"--enable_op_profiling={'true' if self.enable_op_profiling else 'false'}")
        if self.taskset_mask:
            cmd = f"taskset {self.taskset_mask} {cmd}"
        return parse_benchmark_output(self.shell(cmd))

    def describe(self) -> dict[str, Any]:
        return {
            "runtime": "TFLite benchmark_model (adb)",
            "runtime_version": "",
            "benchmark_binary": str(self.binary),
            "benchmark_sha256": self.binary_sha256,
            "threads": self.threads,
            "cores_used": self.taskset_mask or "any",
            "warmup_runs": self.warmup_runs,
            "num_runs": self.num_runs,
            "serial": self.serial,
            "phone": self.device_info,
        }


# ---------------------------------------------------------------------------------- driver
@dataclass
class ProfileResult:
    table: LatencyTable
    measured: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def profile_keys(keys: Iterable[str], profiler: Profiler, model_for_key: Callable[[str], Path],
                 out_path: str | os.PathLike, meta: dict[str, Any], *, resume: bool = False,
                 force: bool = False, progress: bool = True, passes: int = 1) -> ProfileResult:
    """Measure every key's micro-model into the table at `out_path`, saving after each key.

    With `passes > 1` the keys measured in this run are measured again in later passes, minutes
    apart, and each row keeps its fastest pass: a shared machine's slow episodes (seconds long)
    then spoil a row only if they hit it in every pass.

    With `resume`, keys already in an existing table are kept and not re-measured. Without it, an
    existing table is refused unless `force` (so finished work is not overwritten by accident).
    A `DeviceDisconnected` error leaves the partial table on disk and says how to resume.
    """
    out_path = Path(out_path)
    keys = list(dict.fromkeys(keys))
    if out_path.exists() and not (resume or force):
        raise RunStateError(f"{out_path} exists; pass resume=true to measure only its missing keys, "
                              f"or force=true to measure everything again")
    if out_path.exists() and resume:
        table = LatencyTable.load(out_path)
        table.meta.update({k: v for k, v in meta.items() if k not in ("date",)})
    else:
        table = LatencyTable(dict(meta), {})
    todo = table.missing(keys)
    done_before = [k for k in keys if k in table.ops]
    table.meta["complete"] = False
    measured: list[str] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc=f"profile {table.device}", unit="op", dynamic_ncols=True)
    try:
        for key in todo:
            path = model_for_key(key)
            timing = profiler.measure(path)
            table.ops[key] = timing.stats()
            measured.append(key)
            table.meta["date"] = time.strftime("%Y-%m-%d")
            table.save(out_path)
            if bar:
                bar.update(1)
                bar.set_postfix_str(f"{timing.mean_ms:.3f} ms")
    except DeviceDisconnected as e:
        if table.ops:
            table.save(out_path)
        raise DeviceDisconnected(
            f"{e}. Profiled {len(measured)} of {len(todo)} missing keys this run; the partial table is saved in "
            f"{out_path}. Reconnect the phone and re-run with resume=true to measure only the rest.") from None
    finally:
        if bar:
            bar.close()
    for p in range(2, passes + 1):
        for key in tqdm_or_list(measured, progress, f"profile {table.device} pass {p}/{passes}"):
            timing = profiler.measure(model_for_key(key))
            old = table.ops[key]
            new = timing.stats()
            if new.value < old.value:
                table.ops[key] = new
        table.save(out_path)
    table.meta["complete"] = not table.missing(keys)
    table.save(out_path)
    return ProfileResult(table, measured, done_before)


def tqdm_or_list(items: list[str], progress: bool, desc: str) -> Iterable[str]:
    if not progress:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="op", dynamic_ncols=True)
