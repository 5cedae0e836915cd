#!/usr/bin/env python3
"""TEST DOUBLE for `adb` (not the real Android Debug Bridge).

Emulates one Android phone so the adb profiler can be tested without hardware: `get-state`,
`push`, `shell getprop …`, `shell cat /sys/…/cpufreq/…`, and `shell [taskset MASK] …/benchmark_model
--graph=…`, which times the pushed .tflite with the local LiteRT interpreter and prints the result
the way a benchmark_model of the chosen era does. Controlled by environment variables:

FAKE_ADB_STATE              folder holding the emulated phone filesystem and counters (required)
FAKE_ADB_SERIAL             the phone's serial (default FAKE0845)
FAKE_ADB_ABI                ro.product.cpu.abi (default arm64-v8a)
FAKE_ADB_ABILIST            ro.product.cpu.abilist (default: arm64-v8a,armeabi-v7a,armeabi for arm64, else the ABI)
FAKE_ADB_SOC                ro.board.platform (default sdm845); FAKE_ADB_SOC_MODEL ro.soc.model (default SDM845,
                            empty on old Android)
FAKE_ADB_ERA                how benchmark_model and adb behave:
                              current    stdout, `INFO: `-prefixed lines, real exit codes (TF 2.x today)
                              tf2        stdout, plain lines, `Inference timings in us: … Inference (avg)`
                              tf1        everything on stderr, `Average inference timings in us: … no stats: …`
                              old        Android <= 6: stderr only, CRLF line ends, adb shell exits 0 for everything
FAKE_ADB_FORMAT             new | old | nostats | timings (the timing line form; default from the era)
FAKE_ADB_FAIL_AFTER_TIMING  1: print the timing lines, then `Benchmarking failed.` (exit 1; 0 on era old)
FAKE_ADB_REFUSE             a model whose remote name contains this is refused (`Didn't find op for builtin opcode`)
FAKE_ADB_DISCONNECT_AFTER   after this many benchmark runs the phone "unplugs" (default never)
FAKE_ADB_UNPLUG_ON_PUSH     the Nth push (1-based) dies mid-copy (`failed to read copy response: EOF`) and the
                            phone is gone
FAKE_ADB_SILENT_255         1: a lost phone answers shell commands with exit 255 and no text (adb's way)
FAKE_ADB_BLIP_ON_PUSH       the Nth push fails with `adb: error: failed to read copy response: EOF`, but the phone
                            stays (a cable that blinked: `get-state` answers `device` again at once)
FAKE_ADB_BLIP_ON_RUN        the Nth benchmark run answers `error: device offline` (exit 1), the phone stays
FAKE_ADB_NOEXEC             1: the pushed binary cannot be executed (`can't execute: Permission denied`, exit 126)
FAKE_ADB_OP_PROFILE         1: `--enable_op_profiling=true` prints the per-op summary of the model as the LiteRT
                            profiler on this CPU reports it (the summarizer benchmark_model itself uses)
"""

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

STATE = Path(os.environ["FAKE_ADB_STATE"])
SERIAL = os.environ.get("FAKE_ADB_SERIAL", "FAKE0845")
ABI = os.environ.get("FAKE_ADB_ABI", "arm64-v8a")
ABILIST = os.environ.get("FAKE_ADB_ABILIST") or ("arm64-v8a,armeabi-v7a,armeabi" if ABI == "arm64-v8a" else ABI)
ERA = os.environ.get("FAKE_ADB_ERA", "tf2")
FORMAT = os.environ.get("FAKE_ADB_FORMAT") or {"current": "new", "tf2": "new", "tf1": "nostats", "old": "old"}[ERA]
SOC = os.environ.get("FAKE_ADB_SOC", "sdm845")
SOC_MODEL = os.environ.get("FAKE_ADB_SOC_MODEL", "" if ERA == "old" else SOC.upper())
FAIL_AFTER = os.environ.get("FAKE_ADB_FAIL_AFTER_TIMING") == "1"
REFUSE = os.environ.get("FAKE_ADB_REFUSE", "")
DISCONNECT_AFTER = int(os.environ.get("FAKE_ADB_DISCONNECT_AFTER", "-1"))
UNPLUG_ON_PUSH = int(os.environ.get("FAKE_ADB_UNPLUG_ON_PUSH", "-1"))
SILENT_255 = os.environ.get("FAKE_ADB_SILENT_255") == "1"
BLIP_ON_PUSH = int(os.environ.get("FAKE_ADB_BLIP_ON_PUSH", "-1"))
BLIP_ON_RUN = int(os.environ.get("FAKE_ADB_BLIP_ON_RUN", "-1"))
NOEXEC = os.environ.get("FAKE_ADB_NOEXEC") == "1"
OP_PROFILE = os.environ.get("FAKE_ADB_OP_PROFILE") == "1"
FS = STATE / "fs"
COUNTER = STATE / "benchmark_runs"
PUSHES = STATE / "pushes"
GONE = STATE / "disconnected"
LOG = STATE / "calls.jsonl"


class Out:
    """What the emulated command prints, on the stream and with the line ends of the era."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, text: str) -> None:
        self.lines.extend(str(text).split("\n"))

    def flush(self, rc: int, stream: str = "") -> None:
        stream = stream or ("stderr" if ERA in ("tf1", "old") else "stdout")
        end = "\r\n" if ERA == "old" else "\n"
        text = end.join(self.lines) + (end if self.lines else "")
        (sys.stderr if stream == "stderr" else sys.stdout).write(text)
        sys.stdout.flush()
        sys.stderr.flush()
        sys.exit(0 if ERA == "old" else rc)  # Android <= 6: adb shell always exits 0


def gone(msg: str | None = None) -> None:
    if SILENT_255:
        sys.exit(255)
    print(msg or f"error: device '{SERIAL}' not found", file=sys.stderr)
    sys.exit(1)


def local(path: str) -> Path:
    return FS / path.lstrip("/")


def bench(args: list[str], out: Out) -> int:
    runs = int(COUNTER.read_text()) if COUNTER.exists() else 0
    if 0 <= DISCONNECT_AFTER <= runs:
        GONE.write_text("1")
        gone()
    COUNTER.write_text(str(runs + 1))
    if runs + 1 == BLIP_ON_RUN:
        print("error: device offline", file=sys.stderr)
        sys.exit(1)
    opts = dict(a[2:].split("=", 1) for a in args if a.startswith("--"))
    if NOEXEC:
        out("/system/bin/sh: /data/local/tmp/spnas/benchmark_model: can't execute: Permission denied")
        return 126
    graph = local(opts["graph"])
    info = "INFO: " if ERA == "current" else ""
    out("STARTING!")
    out(f"{info}Log parameter values verbosely: [0]")
    out(f"{info}Graph: [{opts['graph']}]")
    if not graph.exists():
        out(f"ERROR: Could not open '{opts['graph']}'.")
        return 1
    if REFUSE and REFUSE in opts["graph"]:
        out(f"{info}Loaded model {opts['graph']}")
        out("ERROR: Didn't find op for builtin opcode 'HARD_SWISH' version '1'. An older version of this builtin "
            "might be supported. Are you using an old TFLite binary with a newer model?")
        out("ERROR: Registration failed.")
        out("Failed to construct interpreter")
        out("Benchmarking failed.")
        return 1
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(graph), num_threads=int(opts.get("num_threads", 1)))
    it.allocate_tensors()
    for d in it.get_input_details():
        it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    t0 = time.perf_counter()
    it.invoke()
    first = (time.perf_counter() - t0) * 1e6
    warm = []
    for _ in range(int(opts.get("warmup_runs", 1))):
        t = time.perf_counter()
        it.invoke()
        warm.append((time.perf_counter() - t) * 1e6)
    ts = []
    for _ in range(int(opts.get("num_runs", 50))):
        t = time.perf_counter()
        it.invoke()
        ts.append((time.perf_counter() - t) * 1e6)
    avg, std = float(np.mean(ts)), float(np.std(ts))
    wavg = float(np.mean(warm or [first]))
    line = (f"count={len(ts)} first={first:.0f} curr={ts[-1]:.0f} min={min(ts):.0f} max={max(ts):.0f} "
            f"avg={avg:.2f} std={std:.0f}")
    out(f"{info}Loaded model {opts['graph']}")
    out(f"{info}The input model file size (MB): 0.1")
    if FORMAT == "timings":
        out(f"Timings (microseconds): {line}\nMemory (bytes): count=0\n12 nodes observed")
        out(f"Timings (microseconds): count={len(ts)} first=10 curr=10 min=9 max=12 avg=10.5 std=1")
    else:
        # the warm-up summary line comes first: a parser must take the timed run's line after it
        out(f"{info}Running benchmark for at least {len(warm) or 1} iterations and at least 0.5 seconds but "
            f"terminate if exceeding 150 seconds.")
        out(f"count={len(warm) or 1} first={first:.0f} curr={first:.0f} min={first:.0f} max={first:.0f} "
            f"avg={wavg * 3:.2f} std=0")
        out(f"{info}Running benchmark for at least {len(ts)} iterations and at least 1 seconds but terminate if "
            f"exceeding 150 seconds.")
        out(line)
        if FORMAT == "old":
            out(f"Average inference timings in us: Warmup: {wavg:.2f}, Init: 3405, Inference: {avg:.2f}")
        elif FORMAT == "nostats":
            out(f"Average inference timings in us: Warmup: {wavg:.2f}, Init: 3405, no stats: {len(ts)}")
        else:
            out(f"{info}Inference timings in us: Init: 3405, First inference: {first:.0f}, "
                f"Warmup (avg): {wavg:.2f}, Inference (avg): {avg:.2f}")
    if OP_PROFILE and opts.get("enable_op_profiling") == "true":
        # benchmark_model's layout: the TFLite nodes (one XNNPACK delegate node), then the delegate's own
        # operators; the operator table is the LiteRT profiler's real summary of this model on this CPU
        from latency_tables.profilers.litert_ops import LiteRtOpProfiler

        summary = LiteRtOpProfiler(num_runs=3, repeats=1, warmup_runs=1, profile_runs=5).profile_summary(graph)
        out("Operator-wise Profiling Info for Regular Benchmark Runs:")
        out("============================== Run Order ==============================")
        out("\t             [node type]\t  [start]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t"
            "[times called]\t[Name]")
        out(f"\t   TfLiteXNNPackDelegate\t    0.000\t{first / 1e3:9.3f}\t{avg / 1e3:9.3f}\t100.000%\t100.000%\t"
            f"     0.000\t        1\t[StatefulPartitionedCall:0]:64")
        out("")
        out("Delegate internal: ")
        out(summary)
    if FAIL_AFTER:
        out("ERROR: failed to invoke the interpreter at run 51: XNNPACK delegate failed to reshape")
        out("Benchmarking failed.")
        return 1
    with open(LOG, "a") as f:
        f.write(json.dumps({"bench": args}) + "\n")
    return 0


def shell(cmd: str) -> None:
    with open(LOG, "a") as f:
        f.write(json.dumps({"shell": cmd}) + "\n")
    out = Out()
    rc = 0
    # the profiler appends `; echo __spnas_rc=$?`: emulate the shell running both
    m = re.match(r"^(.*); echo __spnas_rc=\$\?$", cmd)
    inner = m.group(1) if m else cmd
    parts = inner.split()
    if parts[0] == "getprop":
        props = {"ro.product.cpu.abi": ABI, "ro.product.cpu.abilist": ABILIST,
                 "ro.product.model": "Fake Pixel 3 (test double)", "ro.soc.model": SOC_MODEL,
                 "ro.board.platform": SOC, "ro.hardware": "qcom", "ro.product.board": SOC,
                 "ro.build.version.release": "6.0.1" if ERA == "old" else "11"}
        out(props.get(parts[1], ""))
    elif parts[0] == "mkdir":
        local(parts[-1]).mkdir(parents=True, exist_ok=True)
    elif parts[0] == "chmod":
        pass
    elif inner.startswith("ls -d /sys/devices/system/cpu/cpu"):
        out("8")
    elif parts[0] == "cat" and "cpufreq" in inner:
        cpu = int(re.search(r"cpu(\d+)/", inner).group(1))
        out("schedutil" if inner.endswith("scaling_governor") else str(2803200 if cpu >= 4 else 1766400))
    elif parts[0] == "taskset":
        rc = bench(parts[2:][1:], out)
    elif parts[0].endswith("benchmark_model"):
        rc = bench(parts[1:], out)
    else:
        out(f"/system/bin/sh: {parts[0]}: not found")
        rc = 127
    if m:
        out(f"__spnas_rc={rc}")
        if ERA in ("tf1", "old"):
            # the echo goes to stdout while the binary wrote to stderr: emit both streams
            body, last = out.lines[:-1], out.lines[-1]
            end = "\r\n" if ERA == "old" else "\n"
            sys.stderr.write(end.join(body) + end)
            sys.stdout.write(last + end)
            sys.stdout.flush()
            sys.stderr.flush()
            sys.exit(0 if ERA == "old" else rc)
        out.flush(0, "stdout")
    out.flush(rc)


def main() -> None:
    args = sys.argv[1:]
    STATE.mkdir(parents=True, exist_ok=True)
    if args[:1] == ["devices"]:
        print("List of devices attached")
        if not GONE.exists():
            print(f"{SERIAL}\tdevice")
        return
    if args[:1] == ["-s"]:
        serial, args = args[1], args[2:]
        if serial != SERIAL or GONE.exists():
            if args[:1] == ["get-state"]:
                print(f"error: device '{serial}' not found", file=sys.stderr)
                sys.exit(1)
            gone()
    if args[0] == "get-state":
        print("device")
    elif args[0] == "push":
        n = (int(PUSHES.read_text()) if PUSHES.exists() else 0) + 1
        PUSHES.write_text(str(n))
        if n == BLIP_ON_PUSH:
            print("adb: error: failed to read copy response: EOF", file=sys.stderr)
            sys.exit(1)
        if n == UNPLUG_ON_PUSH:
            GONE.write_text("1")
            print(f"{args[1]}: 0 files pushed. 12.3 MB/s (40960 bytes in 0.003s)", file=sys.stderr)
            print("adb: error: failed to read copy response: EOF", file=sys.stderr)
            sys.exit(1)
        dst = local(args[2])
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(args[1], dst)
        print(f"{args[1]}: 1 file pushed.")
    elif args[0] == "shell":
        shell(" ".join(args[1:]))
    else:
        print(f"adb: unknown command {args[0]}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
