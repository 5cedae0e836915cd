"""Local profiler, benchmark_model output parsing, and the adb profiler against a fake adb (a test double)."""

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from latency_tables.profilers import (
    AdbProfiler, BenchmarkOutputError, DeviceDisconnected, LocalProfiler, WrongABIError, elf_abi,
    parse_benchmark_output, profile_keys)
from latency_tables.table import LatencyTable

from .conftest import SMALL_KEYS

FAKE_ADB = Path(__file__).with_name("fake_adb.py")

NEW = """Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=8211 curr=7702 min=7650 max=8810 avg=7801.23 std=95
Inference timings in us: Init: 3405, First inference: 9011, Warmup (avg): 8000.5, Inference (avg): 7801.23
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime."""
OLD = """count=100 first=5012 curr=4990 min=4900 max=5300 avg=5003.5 std=41
Average inference timings in us: Warmup: 5100.2, Init: 2901, Inference: 5003.5"""
TIMINGS = """============================== Summary by node type ==============================
Timings (microseconds): count=40 first=1210 curr=1190 min=1180 max=1302 avg=1201.75 std=22
Memory (bytes): count=0
31 nodes observed
Timings (microseconds): count=40 first=11 curr=10 min=9 max=12 avg=10.5 std=1"""


@pytest.mark.parametrize("text,mean,std,count", [(NEW, 7.80123, 0.095, 50), (OLD, 5.0035, 0.041, 100),
                                                 (TIMINGS, 1.20175, 0.022, 40)])
def test_parse_all_three_benchmark_model_forms(text, mean, std, count):
    t = parse_benchmark_output(text)
    assert t.mean_ms == pytest.approx(mean) and t.std_ms == pytest.approx(std) and t.count == count


def test_parse_garbage_is_a_clear_error():
    with pytest.raises(BenchmarkOutputError, match="no latency"):
        parse_benchmark_output("Segmentation fault\n")


def test_local_profiler_measures_and_pins(small_models):
    cpu = max(os.sched_getaffinity(0))
    p = LocalProfiler(threads=1, cpus=[cpu], warmup_runs=2, num_runs=10, min_time_s=0.05)
    before = os.sched_getaffinity(0)
    t = p.measure(small_models[SMALL_KEYS[1]])
    assert t.count >= 10 and t.median_ms > 0 and t.std_ms >= 0
    assert os.sched_getaffinity(0) == before, "affinity restored after measuring"
    d = p.describe()
    assert d["threads"] == 1 and d["cores_used"] == str(cpu) and d["runtime_version"]


# ---------------------------------------------------------------------------------- fake adb
def _elf(path: Path, machine: int, ei_class: int) -> Path:
    header = bytearray(64)
    header[:4] = b"\x7fELF"
    header[4] = ei_class
    header[5] = 1  # little endian
    header[18:20] = machine.to_bytes(2, "little")
    path.write_bytes(bytes(header) + b"fake benchmark_model body")
    return path


@pytest.fixture
def phone(tmp_path, monkeypatch):
    """A fake adb on a temp path plus its state folder; returns a factory for profilers."""
    adb = tmp_path / "adb"
    adb.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE_ADB} \"$@\"\n")
    adb.chmod(adb.stat().st_mode | stat.S_IEXEC)
    state = tmp_path / "phone"
    monkeypatch.setenv("FAKE_ADB_STATE", str(state))
    binary = _elf(tmp_path / "benchmark_model", 0xB7, 2)

    def make(**kw):
        return AdbProfiler("FAKE0845", kw.pop("binary", binary), adb=str(adb), taskset_mask="f0", num_runs=5,
                           warmup_runs=1, **kw)

    make.state = state
    return make


def _calls(state: Path) -> list[dict]:
    return [json.loads(line) for line in (state / "calls.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("fmt", ["new", "old", "timings"])
def test_adb_happy_path_each_output_form(phone, small_models, micro_cache, tmp_path, monkeypatch, fmt):
    monkeypatch.setenv("FAKE_ADB_FORMAT", fmt)
    prof = phone(expected_abi="arm64-v8a")
    info = prof.connect()
    assert info["soc"] == "SDM845" and info["governors"][0] == "schedutil"
    assert info["max_freq_khz"][7] == 2803200
    meta = {"device": "sd845-measured", "soc": "Snapdragon 845", "provenance": "measured",
            "date": "x", **prof.describe()}
    res = profile_keys(SMALL_KEYS, prof, micro_cache.get, tmp_path / "t.json", meta, progress=False)
    t = LatencyTable.load(tmp_path / "t.json")
    assert set(t.ops) == set(SMALL_KEYS) and t.meta["complete"] is True
    assert t.meta["benchmark_sha256"] == prof.binary_sha256 and len(prof.binary_sha256) == 64
    assert all(s.mean_ms > 0 for s in t.ops.values())
    runs = [c for c in _calls(phone.state) if "shell" in c and "--graph=" in c["shell"]]
    assert len(runs) == len(SMALL_KEYS)
    assert all(c["shell"].startswith("taskset f0 /data/local/tmp/spnas/benchmark_model --graph=") for c in runs)
    assert all("--enable_op_profiling=true" in c["shell"] and "--num_threads=1" in c["shell"] for c in runs)
    assert sorted(res.measured) == sorted(SMALL_KEYS)


def test_adb_disconnect_keeps_partial_table_and_resume_measures_the_rest(phone, small_models, micro_cache,
                                                                        tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_DISCONNECT_AFTER", "2")
    out = tmp_path / "t.json"
    meta = {"device": "sd845-measured", "soc": "Snapdragon 845", "provenance": "measured", "date": "x"}
    prof = phone()
    with pytest.raises(DeviceDisconnected) as e:
        profile_keys(SMALL_KEYS, prof, micro_cache.get, out, {**meta, **prof.describe()}, progress=False)
    assert "resume=true" in str(e.value) and str(out) in str(e.value)
    partial = LatencyTable.load(out)
    assert len(partial) == 2 and partial.meta["complete"] is False
    # plug the phone back in and resume: only the two missing keys are measured
    (phone.state / "disconnected").unlink()
    monkeypatch.setenv("FAKE_ADB_DISCONNECT_AFTER", "-1")
    (phone.state / "benchmark_runs").write_text("0")
    prof2 = phone()
    with pytest.raises(FileExistsError, match="resume=true"):
        profile_keys(SMALL_KEYS, prof2, micro_cache.get, out, meta, progress=False)
    res = profile_keys(SMALL_KEYS, prof2, micro_cache.get, out, {**meta, **prof2.describe()}, resume=True,
                       progress=False)
    assert len(res.measured) == 2 and set(res.skipped) == set(partial.ops)
    assert int((phone.state / "benchmark_runs").read_text()) == 2
    full = LatencyTable.load(out)
    assert set(full.ops) == set(SMALL_KEYS) and full.meta["complete"] is True
    for k in partial.ops:
        assert full.ops[k] == partial.ops[k], "rows measured before the disconnect are kept as they were"


def test_adb_wrong_abi(phone, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_ABI", "armeabi-v7a")  # a 32-bit Snapdragon 801 phone
    with pytest.raises(WrongABIError, match="built for arm64-v8a"):
        phone().connect()
    with pytest.raises(WrongABIError, match="expects arm64-v8a"):
        phone(expected_abi="arm64-v8a").connect()
    arm32 = _elf(tmp_path / "bm32", 0x28, 1)
    assert elf_abi(arm32) == "armeabi-v7a"
    assert phone(binary=arm32, expected_abi="armeabi-v7a").connect()["abi"] == "armeabi-v7a"
    not_elf = tmp_path / "script.sh"
    not_elf.write_text("#!/bin/sh\n")
    with pytest.raises(WrongABIError, match="not an ELF"):
        phone(binary=not_elf).connect()


def test_adb_unknown_serial_is_disconnected(phone, tmp_path):
    prof = phone()
    prof.serial = "NOPE"
    with pytest.raises(DeviceDisconnected, match="not connected|disconnected"):
        prof.connect()


def test_adb_missing_binary_or_serial(tmp_path):
    with pytest.raises(FileNotFoundError, match="benchmark_model"):
        AdbProfiler("X", tmp_path / "missing")
    with pytest.raises(ValueError, match="serial"):
        AdbProfiler("", tmp_path / "missing")
