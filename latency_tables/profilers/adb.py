"""`AdbProfiler`: TFLite's `benchmark_model` (user-supplied) on a phone selected by serial, under
`taskset` on the big cores, `repeats` times; ABI and SoC checks before anything is pushed, and every
adb failure classified: a phone that went away (or blinked) is `DeviceDisconnected`, resumable."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any, Iterable

from spnas_core.errors import (
    BenchmarkOutputError,
    ModelRefusedError,
    ConfigError,
    DeviceDisconnected,
    DeviceError,
    InputNotFoundError,
    WrongABIError,
    WrongSocError,
)

from .base import OpProfile, OpProfiler, Profiler, Timing, fastest_run, statistic_meta
from .parsers import line_at, output_tail, normalise_output, parse_benchmark_output, parse_op_profile

log = logging.getLogger(__name__)


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
        super().__init__(f"`{command}` exited with {rc} on the phone: {output_tail(output)}")


# What a shell's exit status says about a binary that did not run (the exit code leads every message).
EXIT_MEANINGS = {126: "not executable: permission denied (chmod 755, or a folder mounted noexec)",
                 127: "not found on the phone", 132: "illegal instruction: built for another CPU",
                 134: "aborted", 137: "killed (out of memory?)", 139: "segmentation fault"}


def _exit_error(e: RemoteCommandError, model: str) -> Exception:
    """The error for a benchmark run that exited non-zero: a refusal in the binary's own words stays a
    `ModelRefusedError` (the run goes on without that op); anything else leads with the exit code."""
    meaning = EXIT_MEANINGS.get(e.rc, "")
    head = f"benchmark_model exited with {e.rc}{f' ({meaning})' if meaning else ''} on {model}"
    try:
        parse_benchmark_output(e.output)
    except ModelRefusedError:
        raise
    except BenchmarkOutputError as pe:
        first = str(pe).split(";", 1)[0]
        if not first.startswith("no latency"):
            head += f": {first}"
    return BenchmarkOutputError(f"{head}; last lines:\n{output_tail(e.output)}")


class AdbProfiler(Profiler, OpProfiler):
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
                 allow_soc_mismatch: bool = False, allow_abi_mismatch: bool = False,
                 timeout_s: float = 600.0) -> None:
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
        self.allow_abi_mismatch = bool(allow_abi_mismatch)
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
        blip = _DISCONNECT.search(out)
        if blip:
            # adb's own words say the connection dropped during this command: whatever `get-state` answers
            # now (a phone that blinked is back at once), the command's result is lost; resume re-runs it.
            st = self.state()
            raise DeviceDisconnected(f"phone {self.serial} dropped the connection during `adb {' '.join(args[:2])}` "
                                     f"('{line_at(out, blip.start())}'; adb get-state now: '{st}'); {RECONNECT_HINT}")
        if r.returncode != 0:
            if r.returncode == 255 or not out.strip():
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
        abi_note = ""
        if self.binary_abi != abi:
            # A phone runs binaries of every ABI in its abilist, but a 32-bit benchmark_model on a 64-bit phone
            # times 32-bit kernels: the table would not be the phone's. Only the primary ABI is accepted unless
            # the caller says otherwise, and then the table's meta says so.
            runs = self.binary_abi in abilist
            msg = (f"benchmark binary {self.binary} is built for {self.binary_abi}, but phone {self.serial} runs "
                   f"{abi} (supported: {', '.join(abilist)})")
            if not runs or not self.allow_abi_mismatch:
                hint = (f"; use the benchmark_model build for {abi}" +
                        ("" if not runs else ", or pass profile.allow_abi_mismatch=true to time "
                                             f"{self.binary_abi} kernels anyway (recorded in the table's meta)"))
                raise WrongABIError(msg + hint)
            abi_note = f"{self.binary_abi} binary on a {abi} phone (allowed by profile.allow_abi_mismatch)"
            log.warning("%s", abi_note)
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
            "abi_mismatch_allowed": abi_note,
            "userspace_note": (f"{abi} userspace on a SoC configured as {self.expected_abi}"
                               if self.expected_abi and abi != self.expected_abi else ""),
            "android": self.shell("getprop ro.build.version.release", check=False).strip(),
            "governors": governors,
            "max_freq_khz": max_freqs,
        }
        self._connected = True
        return self.device_info

    def measure(self, tflite: str | os.PathLike, _keep: list[tuple[Timing, str]] | None = None) -> Timing:
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
                raise _exit_error(e, tflite.name) from None
            runs.append(parse_benchmark_output(out))
            if _keep is not None:
                _keep.append((runs[-1], out))
        return fastest_run(runs)

    def profile_ops(self, tflite: str | os.PathLike) -> OpProfile:
        """A whole network's per-op profile: benchmark_model with `--enable_op_profiling=true`, `repeats`
        runs, the profile of the fastest (its end-to-end figure is the run's timed average)."""
        was = self.enable_op_profiling
        self.enable_op_profiling = True
        outputs: list[tuple[Timing, str]] = []
        try:
            self.measure(tflite, _keep=outputs)
        finally:
            self.enable_op_profiling = was
        timing, text = min(outputs, key=lambda o: o[0].mean_ms)
        return OpProfile(tuple(parse_op_profile(text)), timing.mean_ms,
                         {"runtime": "TFLite benchmark_model --enable_op_profiling=true (adb)",
                          "compute_unit": "CPU", "serial": self.serial, "soc": self.device_info.get("soc"),
                          "threads": self.threads, "cores_used": self.taskset_mask or "any"})

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
