"""Profilers: measure a .tflite file's latency on this CPU or on a phone over adb.

- `LocalProfiler`: the `ai-edge-litert` interpreter in this process, pinned to chosen cores with
  `os.sched_setaffinity`, warm-up then `repeats` timed runs.
- `AdbProfiler`: TFLite's `benchmark_model` binary (user-supplied) on a phone selected by serial,
  run under `taskset` on the big cores, `repeats` times; every era of its output is parsed.

Both reduce a model to the same statistic (`STATISTIC`, named in a table's meta): the mean of one
run's timed invocations, the fastest of `repeats` runs. `profile_keys` drives either over a list of
op keys, saving the table after every key so a phone that disconnects loses nothing, and
`resume=true` measures only the missing keys.
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
    BenchmarkOutputError, ConfigError, DeviceDisconnected, DeviceError, InputNotFoundError, ModelRefusedError,
    RunStateError, WrongABIError, WrongSocError,
)

from .table import LatencyTable, OpStats

log = logging.getLogger(__name__)


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


class Profiler(Protocol):
    """Anything that can time a .tflite file and describe where it ran."""

    def measure(self, tflite: str | os.PathLike) -> Timing: ...

    def describe(self) -> dict[str, Any]: ...


# ---------------------------------------------------------------------------------- local
class LocalProfiler:
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

        from .fingerprint import machine_fingerprint

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


def statistic_meta(repeats: int, num_runs: int, warmup_runs: int) -> dict[str, Any]:
    """How a table's rows were reduced to one figure (the same on this CPU and on a phone)."""
    return {"name": STATISTIC, "repeats": repeats, "timed_runs": num_runs, "warmup_runs": warmup_runs,
            "meaning": STATISTIC_HELP}


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
_OLD_NO_STATS = re.compile(r"Average inference timings in us:.*?no stats:", re.S)
_STATS = re.compile(r"count=(\d+)\s.*?avg=" + _NUM + r"\s+std=" + _NUM)
_TIMINGS = re.compile(r"Timings \(microseconds\):\s*count=(\d+)\s.*?avg=" + _NUM + r"\s+std=" + _NUM)
_RUNNING = re.compile(r"Running benchmark for at least")
# Lines benchmark_model prints when it could not run the model; after them any timing lines are void.
_REFUSED = re.compile(r"Didn't find op for builtin opcode|Failed to construct interpreter|Failed to allocate tensors|"
                      r"Failed to invoke|Failed to apply .* delegate|Unsupported (?:data type|op)|"
                      r"Could not open '.*'|Failed to mmap model|is not a valid flatbuffer|"
                      r"Encountered unresolved custom op|Node number \d+ .* failed to (?:prepare|invoke)", re.I)
_FAILED = re.compile(r"Benchmarking failed|^ERROR:|Aborted|Segmentation fault|Fatal signal", re.I | re.M)


def normalise_output(text: str) -> str:
    """adb shells of old Android turn newlines into CRLF and some binaries prefix log lines (`INFO: `)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return re.sub(r"^(?:INFO|I\d{4} [\d:.]+\s+\d+ [\w.]+:\d+\]):?\s*", "", text, flags=re.M)


def parse_benchmark_output(text: str) -> Timing:
    """The timed-run latency from any era of benchmark_model's output (stdout and stderr together).

    1. ``Inference timings in us: Init: …, First inference: …, Warmup (avg): …, Inference (avg): …``
    2. ``Average inference timings in us: Warmup: …, Init: …, Inference: …`` (TF 1.x)
    3. ``Average inference timings in us: Warmup: …, Init: …, no stats: …`` (TF 1.x without a summary
       line): the timed run's ``count=… avg=… std=…`` line after ``Running benchmark for …``
    4. ``Timings (microseconds): count=… first=… curr=… min=… max=… avg=… std=…``

    A run that printed timings and then failed (``Benchmarking failed.``, an interpreter error) is
    refused: `ModelRefusedError` when the binary could not run this model, `BenchmarkOutputError`
    otherwise.
    """
    text = normalise_output(text)
    refused = _REFUSED.search(text)
    if refused:
        raise ModelRefusedError(f"benchmark_model refused the model: {_line_at(text, refused.start())}")
    failed = _FAILED.search(text)
    if failed:
        raise BenchmarkOutputError(f"benchmark_model failed: {_line_at(text, failed.start())}; last lines:\n"
                                   f"{_tail(text)}")
    stats = [(int(c), float(a), float(sd)) for c, a, sd in _STATS.findall(text)]

    def with_stats(avg_us: float) -> Timing:
        for c, a, sd in reversed(stats):
            if abs(a - avg_us) <= max(1e-6, 0.01 * avg_us):
                return Timing(avg_us / 1e3, sd / 1e3, c)
        return Timing(avg_us / 1e3, 0.0, 1)

    m = _NEW.search(text)
    if m:
        return with_stats(float(m.group(1)))
    m = _OLD.search(text)
    if m:
        return with_stats(float(m.group(1)))
    if _OLD_NO_STATS.search(text):
        run = _RUNNING.search(text)
        timed = _STATS.findall(text[run.end():]) if run else []
        if timed:
            c, a, sd = timed[0]
            return Timing(float(a) / 1e3, float(sd) / 1e3, int(c))
    timings = _TIMINGS.findall(text)
    if timings:
        c, a, sd = timings[0]  # the first is the whole-model summary; per-node summaries follow
        return Timing(float(a) / 1e3, float(sd) / 1e3, int(c))
    raise BenchmarkOutputError(f"no latency in benchmark_model output; last lines:\n{_tail(text)}")


def _line_at(text: str, pos: int) -> str:
    return text[text.rfind("\n", 0, pos) + 1:].split("\n", 1)[0].strip()


def _tail(text: str) -> str:
    return "\n".join(text.strip().splitlines()[-5:]) or "(no output)"


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
                         r"device not found|error: closed|protocol fault|failed to read copy response|"
                         r"failed to copy .*: (?:EOF|Broken pipe|Connection reset)|connection reset|"
                         r"adb: error: .*(?:EOF|closed)", re.I)
_RC = re.compile(r"^__spnas_rc=(\d+)[ \t]*$", re.M)
RECONNECT_HINT = ("check the cable and that USB debugging is authorised (`adb devices` lists it as `device`), "
                  "then re-run with resume=true: rows measured so far are kept")


class RemoteCommandError(DeviceError):
    """A command on the phone exited non-zero (its output is kept for the caller to explain)."""

    def __init__(self, command: str, rc: int, output: str) -> None:
        self.command, self.rc, self.output = command, rc, output
        super().__init__(f"`{command}` exited with {rc} on the phone: {_tail(output)}")


class AdbProfiler:
    """benchmark_model on an Android phone over adb.

    Old phones (Android 6 and earlier, typical of the Snapdragon 801 and many 808s) return exit code 0
    from `adb shell` whatever the command did, and TF 1.x-2.2 binaries print everything to stderr; so
    every shell command echoes its own exit code, and stdout and stderr are read together. A failing
    adb call is classified with `adb get-state`: a phone that is gone is `DeviceDisconnected`.
    """

    def __init__(self, serial: str, benchmark_binary: str | os.PathLike, *, adb: str = "adb",
                 taskset_mask: str | None = None, threads: int = 1, warmup_runs: int = 10, num_runs: int = 50,
                 repeats: int = 3, enable_op_profiling: bool = False, remote_dir: str = "/data/local/tmp/spnas",
                 expected_abi: str | None = None, soc: str | None = None, soc_platforms: Iterable[str] = (),
                 allow_soc_mismatch: bool = False, timeout_s: float = 600.0) -> None:
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
        self.repeats = max(1, int(repeats))
        self.enable_op_profiling = bool(enable_op_profiling)
        self.remote_dir = remote_dir.rstrip("/")
        self.expected_abi = expected_abi
        self.soc = soc
        self.soc_platforms = tuple(p.lower() for p in soc_platforms)
        self.allow_soc_mismatch = bool(allow_soc_mismatch)
        self.timeout_s = float(timeout_s)
        self.binary_sha256 = hashlib.sha256(self.binary.read_bytes()).hexdigest()
        self.binary_abi = elf_abi(self.binary)
        self.device_info: dict[str, Any] = {}
        self._pushed: set[str] = set()
        self._connected = False

    # -- adb plumbing
    def _adb(self, *args: str) -> subprocess.CompletedProcess:
        cmd = [self.adb, "-s", self.serial, *args]
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout_s)
        except FileNotFoundError:
            raise InputNotFoundError(f"adb executable '{self.adb}' not found; install Android platform-tools "
                                    f"or pass profile.adb=<path to adb>") from None
        except subprocess.TimeoutExpired:
            self._raise_if_gone(f"adb {' '.join(args[:2])} timed out after {self.timeout_s:.0f} s")
            raise DeviceError(f"adb {' '.join(args[:2])} timed out after {self.timeout_s:.0f} s with the phone "
                              f"still connected; is the phone throttling or the model too slow?") from None

    def state(self) -> str:
        """`adb get-state`: `device` when the phone is there and authorised."""
        try:
            r = subprocess.run([self.adb, "-s", self.serial, "get-state"], capture_output=True, text=True,
                               timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return "unknown"
        out = normalise_output((r.stdout or "") + (r.stderr or "")).strip()
        return out.splitlines()[-1].strip() if r.returncode == 0 and out else (out.splitlines()[-1] if out else "none")

    def _raise_if_gone(self, what: str) -> None:
        st = self.state()
        if st != "device":
            raise DeviceDisconnected(f"phone {self.serial} disconnected ({what}; adb get-state: '{st}'); "
                                     f"{RECONNECT_HINT}")

    def _run(self, *args: str, check: bool = True) -> str:
        r = self._adb(*args)
        out = normalise_output((r.stdout or "") + (r.stderr or ""))
        if r.returncode != 0 or _DISCONNECT.search(out):
            if _DISCONNECT.search(out) or r.returncode == 255 or not out.strip():
                last = out.strip().splitlines()[-1] if out.strip() else f"exit {r.returncode}, no output"
                self._raise_if_gone(last)
            if check and r.returncode != 0:
                raise DeviceError(f"`{shlex.join([self.adb, '-s', self.serial, *args])}` failed ({r.returncode}): "
                                  f"{out.strip()[-500:]}")
        return out

    def shell(self, command: str, check: bool = True) -> str:
        """Run a shell command on the phone; its own exit code is echoed, since old adb always returns 0."""
        out = self._run("shell", f"{command}; echo __spnas_rc=$?", check=check)
        # stdout and stderr arrive on two pipes (in any order): the marker is a line of its own somewhere
        marks = list(_RC.finditer(out))
        m = marks[-1] if marks else None
        body = (out[:m.start()] + out[m.end():]) if m else out
        rc = int(m.group(1)) if m else None
        if m is None and check:
            self._raise_if_gone("the shell command's exit code never came back")
        if check and rc not in (0, None):
            raise RemoteCommandError(command, rc, body)
        return body

    def connect(self) -> dict[str, Any]:
        """Check the phone is there, runs the binary, and is the configured SoC; push the binary; read facts."""
        state = self.state()
        if state != "device":
            raise DeviceDisconnected(f"phone {self.serial} is not connected (adb get-state: '{state or 'none'}'); "
                                     f"check the cable, USB debugging, and `adb devices`")
        abi = self.shell("getprop ro.product.cpu.abi").strip()
        abilist = [a for a in self.shell("getprop ro.product.cpu.abilist", check=False).strip().split(",") if a]
        abilist = abilist or [abi]
        if self.binary_abi not in abilist and self.binary_abi != abi:
            raise WrongABIError(f"benchmark binary {self.binary} is built for {self.binary_abi}, but phone "
                                f"{self.serial} runs {abi} (supported: {', '.join(abilist)}); use the "
                                f"benchmark_model build for {abi}")
        platforms = {k: self.shell(f"getprop {k}", check=False).strip()
                     for k in ("ro.soc.model", "ro.board.platform", "ro.hardware", "ro.product.board")}
        ident = " ".join(v for v in platforms.values() if v).lower()
        if self.soc_platforms:
            if not ident:
                log.warning("phone %s does not report its SoC; assuming it is the configured %s", self.serial, self.soc)
            elif not any(p in ident for p in self.soc_platforms):
                msg = (f"phone {self.serial} reports SoC '{ident}', but soc={self.soc} expects one of "
                       f"{', '.join(self.soc_platforms)}: its table would be filed under the wrong SoC")
                if not self.allow_soc_mismatch:
                    raise WrongSocError(msg + "; pick the right soc=, or pass profile.allow_soc_mismatch=true to "
                                              "profile it anyway (recorded in the table's meta)")
                log.warning("%s (allowed by profile.allow_soc_mismatch)", msg)
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
            "soc": platforms.get("ro.soc.model") or platforms.get("ro.board.platform") or platforms.get("ro.hardware"),
            "soc_properties": platforms,
            "soc_matches_config": (not self.soc_platforms or not ident
                                   or any(p in ident for p in self.soc_platforms)),
            "abi": abi,
            "abilist": abilist,
            "binary_abi": self.binary_abi,
            "userspace_note": (f"{abi} userspace on a SoC configured as {self.expected_abi}"
                               if self.expected_abi and abi != self.expected_abi else ""),
            "android": self.shell("getprop ro.build.version.release", check=False).strip(),
            "governors": governors,
            "max_freq_khz": max_freqs,
        }
        self._connected = True
        return self.device_info

    def measure(self, tflite: str | os.PathLike) -> Timing:
        """`repeats` runs of benchmark_model on the model; the fastest run's average (`Timing`)."""
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
        runs = []
        for _ in range(self.repeats):
            try:
                out = self.shell(cmd)
            except RemoteCommandError as e:
                parse_benchmark_output(e.output)  # raises with the binary's own words when it explains
                raise BenchmarkOutputError(f"benchmark_model exited with {e.rc} on {tflite.name}; last lines:\n"
                                           f"{_tail(e.output)}") from None
            runs.append(parse_benchmark_output(out))
        return fastest_run(runs)

    def describe(self) -> dict[str, Any]:
        return {
            "runtime": "TFLite benchmark_model (adb)",
            "runtime_version": "",
            "benchmark_binary": str(self.binary),
            "benchmark_sha256": self.binary_sha256,
            "benchmark_abi": self.binary_abi,
            "threads": self.threads,
            "cores_used": self.taskset_mask or "any",
            "warmup_runs": self.warmup_runs,
            "num_runs": self.num_runs,
            "repeats": self.repeats,
            "statistic": statistic_meta(self.repeats, self.num_runs, self.warmup_runs),
            "serial": self.serial,
            "soc_name": self.soc,
            "phone": self.device_info,
        }


# ---------------------------------------------------------------------------------- driver
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
    if out_path.exists() and not (resume or force):
        raise RunStateError(f"{out_path} exists; pass resume=true to measure only its missing keys, "
                            f"or force=true to measure everything again")
    if out_path.exists() and resume:
        table = LatencyTable.load(out_path)
        table.meta.update({k: v for k, v in meta.items() if k not in ("date",)})
    else:
        table = LatencyTable(dict(meta), {})
    refused: dict[str, str] = dict(table.meta.get("refused_ops") or {}) if resume else {}
    if retry_refused:
        refused = {}
    todo = [k for k in table.missing(keys) if k not in refused]
    done_before = [k for k in keys if k in table.ops]
    table.meta["complete"] = False
    table.meta["refused_ops"] = refused
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
                refused[key] = e.one_line()
                refused_now[key] = refused[key]
                log.warning("skipping %s: %s", key, e.one_line())
                continue
            table.ops[key] = timing.stats()
            measured.append(key)
            save()
        for p in range(2, passes + 1):
            for key in tqdm_or_list(measured, progress, f"profile {table.device} pass {p}/{passes}"):
                new = profiler.measure(model_for_key(key)).stats()
                if new.value < table.ops[key].value:
                    table.ops[key] = new
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


def tqdm_or_list(items: list[str], progress: bool, desc: str) -> Iterable[str]:
    if not progress:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="op", dynamic_ncols=True)
