#!/usr/bin/env python3
"""TEST DOUBLE for `adb` (not the real Android Debug Bridge).

Emulates one Android phone so the adb profiler can be tested without hardware: `get-state`,
`push`, `shell getprop …`, `shell cat /sys/…/cpufreq/…`, and `shell [taskset MASK] …/benchmark_model
--graph=…`, which times the pushed .tflite with the local LiteRT interpreter and prints the result
in one of benchmark_model's output forms. Controlled by environment variables:

FAKE_ADB_STATE              folder holding the emulated phone filesystem and counters (required)
FAKE_ADB_SERIAL             the phone's serial (default FAKE0845)
FAKE_ADB_ABI                ro.product.cpu.abi (default arm64-v8a)
FAKE_ADB_FORMAT             new | old | timings (benchmark_model output form; default new)
FAKE_ADB_DISCONNECT_AFTER   after this many benchmark runs the phone "unplugs" (default never)
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
FORMAT = os.environ.get("FAKE_ADB_FORMAT", "new")
DISCONNECT_AFTER = int(os.environ.get("FAKE_ADB_DISCONNECT_AFTER", "-1"))
FS = STATE / "fs"
COUNTER = STATE / "benchmark_runs"
GONE = STATE / "disconnected"
LOG = STATE / "calls.jsonl"


def fail(msg: str) -> None:
    print(msg, file=sys.stderr)
    sys.exit(1)


def local(path: str) -> Path:
    return FS / path.lstrip("/")


def bench(args: list[str]) -> None:
    runs = int(COUNTER.read_text()) if COUNTER.exists() else 0
    if 0 <= DISCONNECT_AFTER <= runs:
        GONE.write_text("1")
        fail(f"error: device '{SERIAL}' not found")
    COUNTER.write_text(str(runs + 1))
    opts = dict(a[2:].split("=", 1) for a in args if a.startswith("--"))
    graph = local(opts["graph"])
    if not graph.exists():
        fail(f"ERROR: Could not open '{opts['graph']}'.")
    from ai_edge_litert.interpreter import Interpreter
    import numpy as np

    it = Interpreter(model_path=str(graph), num_threads=int(opts.get("num_threads", 1)))
    it.allocate_tensors()
    for d in it.get_input_details():
        it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    t0 = time.perf_counter()
    it.invoke()
    first = (time.perf_counter() - t0) * 1e6
    for _ in range(int(opts.get("warmup_runs", 1))):
        it.invoke()
    ts = []
    for _ in range(int(opts.get("num_runs", 50))):
        t = time.perf_counter()
        it.invoke()
        ts.append((time.perf_counter() - t) * 1e6)
    avg, std = float(np.mean(ts)), float(np.std(ts))
    line = (f"count={len(ts)} first={first:.0f} curr={ts[-1]:.0f} min={min(ts):.0f} max={max(ts):.0f} "
            f"avg={avg:.2f} std={std:.0f}")
    print("STARTING!\nLog parameter values verbosely: [0]")
    print(f"Graph: [{opts['graph']}]\nLoaded model {opts['graph']}\nThe input model file size (MB): 0.1")
    if FORMAT == "timings":
        print(f"Timings (microseconds): {line}\nMemory (bytes): count=0\n12 nodes observed")
        print(f"Timings (microseconds): count={len(ts)} first=10 curr=10 min=9 max=12 avg=10.5 std=1")
    else:
        print(f"Running benchmark for at least {len(ts)} iterations and at least 1 seconds\n{line}")
        if FORMAT == "old":
            print(f"Average inference timings in us: Warmup: {avg * 1.1:.2f}, Init: 3405, Inference: {avg:.2f}")
        else:
            print(f"Inference timings in us: Init: 3405, First inference: {first:.0f}, "
                  f"Warmup (avg): {avg * 1.1:.2f}, Inference (avg): {avg:.2f}")
    with open(LOG, "a") as f:
        f.write(json.dumps({"bench": args}) + "\n")


def shell(cmd: str) -> None:
    with open(LOG, "a") as f:
        f.write(json.dumps({"shell": cmd}) + "\n")
    parts = cmd.split()
    if parts[0] == "getprop":
        props = {"ro.product.cpu.abi": ABI,
                 "ro.product.cpu.abilist": "arm64-v8a,armeabi-v7a,armeabi" if ABI == "arm64-v8a" else ABI,
                 "ro.product.model": "Fake Pixel 3 (test double)", "ro.soc.model": "SDM845",
                 "ro.board.platform": "sdm845", "ro.build.version.release": "11"}
        print(props.get(parts[1], ""))
    elif parts[0] == "mkdir":
        local(parts[-1]).mkdir(parents=True, exist_ok=True)
    elif parts[0] == "chmod":
        pass
    elif cmd.startswith("ls -d /sys/devices/system/cpu/cpu"):
        print(8)
    elif parts[0] == "cat" and "cpufreq" in cmd:
        cpu = int(re.search(r"cpu(\d+)/", cmd).group(1))
        print("schedutil" if cmd.endswith("scaling_governor") else (2803200 if cpu >= 4 else 1766400))
    elif parts[0] == "taskset":
        bench(parts[2:][1:])
    elif parts[0].endswith("benchmark_model"):
        bench(parts[1:])
    else:
        fail(f"/system/bin/sh: {parts[0]}: not found")


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
            fail(f"error: device '{serial}' not found")
    if args[0] == "get-state":
        print("device")
    elif args[0] == "push":
        dst = local(args[2])
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(args[1], dst)
        print(f"{args[1]}: 1 file pushed.")
    elif args[0] == "shell":
        shell(" ".join(args[1:]))
    else:
        fail(f"adb: unknown command {args[0]}")


if __name__ == "__main__":
    main()
