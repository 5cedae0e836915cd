"""Local profiler, benchmark_model output parsing, and the adb profiler against a fake adb (a test double)."""

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from latency_tables.profilers import STATISTIC, AdbProfiler, LocalProfiler, elf_abi, parse_benchmark_output
from latency_tables.measuring.profiling import profile_keys
from latency_tables.lookup.table import LatencyTable
from spnas_core.errors import (BenchmarkOutputError, DeviceDisconnected, DeviceError, ModelRefusedError, WrongABIError,
                               WrongSocError)

from .conftest import SMALL_KEYS

FAKE_ADB = Path(__file__).with_name("fake_adb.py")
# the table meta every fake-phone profile starts from
ADB_META = {"device": "sd845-measured", "soc": "Snapdragon 845", "provenance": "measured", "date": "x"}

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


# TF 1.x: no summary figure, the warm-up's count=1 line first, the timed run's line after "Running benchmark"
NO_STATS = """Running benchmark for at least 1 iterations and at least 0.5 seconds
count=1 curr=9512
Running benchmark for at least 50 iterations and at least 1 seconds
count=50 first=4100 curr=4050 min=3980 max=4400 avg=4061.5 std=52
Average inference timings in us: Warmup: 9512, Init: 2750, no stats: 50"""
CURRENT = "\n".join("INFO: " + ln for ln in NEW.splitlines())
OLD_ANDROID = OLD.replace("\n", "\r\n") + "\r\n"
FAILED_AFTER = NEW + "\nERROR: failed to invoke the interpreter at run 51\nBenchmarking failed."
REFUSED = """Loaded model /data/local/tmp/spnas/x.tflite
ERROR: Didn't find op for builtin opcode 'HARD_SWISH' version '1'
ERROR: Registration failed.
Failed to construct interpreter
Benchmarking failed."""


# TF 1.x with several warm-up runs: the warm-up block prints a full stats line of its own before the timed one,
# and the summary's "no stats:" figure is the timed average (a real output, cut to the timing lines)
TF1_WARMUP_STATS = """Initialized session in 4.171ms
Running benchmark for at least 10 iterations and at least 0.5 seconds
count=10 first=151002 curr=145911 min=144102 max=151002 avg=146548 std=2011
Running benchmark for at least 50 iterations and at least 1 seconds
count=50 first=134321 curr=133012 min=132001 max=138765 avg=133690 std=1234
Average inference timings in us: Warmup: 146548, Init: 4171, no stats: 133690"""


@pytest.mark.parametrize("text,mean,std,count", [
    (NEW, 7.80123, 0.095, 50), (OLD, 5.0035, 0.041, 100), (TIMINGS, 1.20175, 0.022, 40),
    (NO_STATS, 4.0615, 0.052, 50), (TF1_WARMUP_STATS, 133.690, 1.234, 50),
    (TF1_WARMUP_STATS.replace("no stats: 133690", "no stats: 50"), 133.690, 1.234, 50), (CURRENT, 7.80123, 0.095, 50), (OLD_ANDROID, 5.0035, 0.041, 100)])
def test_parse_every_benchmark_model_era(text, mean, std, count):
    t = parse_benchmark_output(text)
    assert t.mean_ms == pytest.approx(mean) and t.std_ms == pytest.approx(std) and t.count == count


def test_parse_refuses_failed_runs_and_names_refused_models():
    with pytest.raises(BenchmarkOutputError, match="no latency"):
        parse_benchmark_output("nothing useful\n")
    with pytest.raises(BenchmarkOutputError, match="Benchmarking failed|failed to invoke"):
        parse_benchmark_output(FAILED_AFTER)  # timings printed, then a failure: not a measurement
    with pytest.raises(ModelRefusedError, match="HARD_SWISH"):
        parse_benchmark_output(REFUSED)


def test_local_profiler_measures_and_pins(small_models):
    cpu = max(os.sched_getaffinity(0))
    p = LocalProfiler(threads=1, cpus=[cpu], warmup_runs=2, num_runs=10, min_time_s=0.05, repeats=3)
    before = os.sched_getaffinity(0)
    t = p.measure(small_models[SMALL_KEYS[1]])
    assert t.count >= 10 and t.median_ms > 0 and t.std_ms >= 0
    assert len(t.run_means_ms) == 3 and t.value == t.mean_ms == min(t.run_means_ms), "the fastest run's mean"
    assert os.sched_getaffinity(0) == before, "affinity restored after measuring"
    d = p.describe()
    assert d["threads"] == 1 and d["cores_used"] == str(cpu) and d["runtime_version"]
    assert d["statistic"]["name"] == STATISTIC and d["fingerprint"]["cpu_model"]


def test_micro_models_carry_no_layout_ops(micro_cache):
    """Each micro-model's op list holds only the layer's own ops: a whole network runs no TRANSPOSE
    between layers, so a row must not time one."""
    from export.tflite import op_histogram

    keys = SMALL_KEYS + ["Conv_1-input:2x2x160-output:2x2x960-kernel:1-stride:1-hs:1",
                         "Conv_2-input:1x1x960-output:1x1x1280-hs:1", "Logits-input:1x1x1280-output:8",
                         "expanded_conv-input:8x8x24-output:8x8x24-expand:6-kernel:5-stride:1-idskip:1-se:0-hs:0"]
    layout = {"TRANSPOSE", "RESHAPE", "GATHER", "SQUEEZE", "EXPAND_DIMS"}
    for key in keys:
        ops = op_histogram(micro_cache.get(key))
        assert not layout & set(ops), f"{key}: {dict(ops)}"
        assert ops, key
    pool = op_histogram(micro_cache.get("AvgPool2D-input:7x7x960"))
    assert set(pool) == {"MEAN"}, dict(pool)


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
        kw.setdefault("repeats", 1)
        return AdbProfiler("FAKE0845", kw.pop("binary", binary), adb=str(adb), taskset_mask="f0", num_runs=5,
                           warmup_runs=1, **kw)

    make.state = state
    return make


def _calls(state: Path) -> list[dict]:
    return [json.loads(line) for line in (state / "calls.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("era,fmt", [("current", "new"), ("tf2", "new"), ("tf2", "timings"), ("tf1", "nostats"),
                                     ("tf1", "old"), ("old", "old")])
def test_adb_every_era(phone, small_models, micro_cache, tmp_path, monkeypatch, era, fmt):
    """stdout or stderr-only output, CRLF line ends, `INFO:` prefixes, exit codes that lie (old Android)."""
    monkeypatch.setenv("FAKE_ADB_ERA", era)
    monkeypatch.setenv("FAKE_ADB_FORMAT", fmt)
    prof = phone(expected_abi="arm64-v8a", soc="sd845", soc_platforms=("sdm845",), repeats=2)
    info = prof.connect()
    assert info["soc"].lower() == "sdm845" and info["governors"][0] == "schedutil"
    assert info["max_freq_khz"][7] == 2803200
    meta = {**ADB_META, **prof.describe()}
    res = profile_keys(SMALL_KEYS, prof, micro_cache.get, tmp_path / "t.json", meta, progress=False)
    t = LatencyTable.load(tmp_path / "t.json")
    assert set(t.ops) == set(SMALL_KEYS) and t.meta["complete"] is True
    assert t.meta["benchmark_sha256"] == prof.binary_sha256 and len(prof.binary_sha256) == 64
    assert all(s.mean_ms > 0 for s in t.ops.values())
    runs = [c for c in _calls(phone.state) if "shell" in c and "--graph=" in c["shell"]]
    assert len(runs) == 2 * len(SMALL_KEYS), "repeats=2 runs per op"
    assert all(c["shell"].startswith("taskset f0 /data/local/tmp/spnas/benchmark_model --graph=") for c in runs)
    assert all("--enable_op_profiling=false" in c["shell"] and "--num_threads=1" in c["shell"] for c in runs)
    assert sorted(res.measured) == sorted(SMALL_KEYS)
    assert t.meta["benchmark_abi"] == "arm64-v8a" and t.meta["statistic"]["name"] == STATISTIC
    assert t.meta["phone"]["soc_matches_config"] is True


def test_adb_disconnect_keeps_partial_table_and_resume_measures_the_rest(phone, small_models, micro_cache,
                                                                        tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_DISCONNECT_AFTER", "2")
    out = tmp_path / "t.json"
    meta = ADB_META
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
    arm32 = _elf(tmp_path / "bm32", 0x28, 1)
    assert elf_abi(arm32) == "armeabi-v7a"
    assert phone(binary=arm32, expected_abi="armeabi-v7a").connect()["abi"] == "armeabi-v7a"
    not_elf = tmp_path / "script.sh"
    not_elf.write_text("#!/bin/sh\n")
    with pytest.raises(WrongABIError, match="not an ELF"):
        phone(binary=not_elf)


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


def test_adb_failure_after_timing_lines_is_not_stored(phone, small_models, micro_cache, tmp_path, monkeypatch):
    """Old Android returns exit 0 for everything: a run that printed timings and then failed must not count."""
    monkeypatch.setenv("FAKE_ADB_ERA", "old")
    monkeypatch.setenv("FAKE_ADB_FAIL_AFTER_TIMING", "1")
    prof = phone()
    with pytest.raises(BenchmarkOutputError, match="Benchmarking failed|failed to invoke"):
        prof.measure(small_models[SMALL_KEYS[0]])


def test_adb_refused_model_is_skipped_and_resume_continues(phone, small_models, micro_cache, tmp_path, monkeypatch):
    refused_key = SMALL_KEYS[1]
    monkeypatch.setenv("FAKE_ADB_REFUSE", micro_cache.path_for(refused_key).name)
    out = tmp_path / "t.json"
    meta = ADB_META
    prof = phone()
    res = profile_keys(SMALL_KEYS, prof, micro_cache.get, out, {**meta, **prof.describe()}, progress=False)
    t = LatencyTable.load(out)
    assert set(t.ops) == set(SMALL_KEYS) - {refused_key}, "the run went on past the refused model"
    assert refused_key in t.meta["refused_ops"] and "HARD_SWISH" in t.meta["refused_ops"][refused_key]
    assert t.meta["complete"] is False and list(res.refused) == [refused_key]
    # resume: nothing left to measure, the refused op is not retried (so resume never blocks on it)
    runs_before = int((phone.state / "benchmark_runs").read_text())
    res2 = profile_keys(SMALL_KEYS, phone(), micro_cache.get, out, meta, resume=True, progress=False)
    assert res2.measured == [] and int((phone.state / "benchmark_runs").read_text()) == runs_before
    # a newer binary: retry_refused measures it
    monkeypatch.delenv("FAKE_ADB_REFUSE")
    res3 = profile_keys(SMALL_KEYS, phone(), micro_cache.get, out, meta, resume=True, retry_refused=True,
                        progress=False)
    assert res3.measured == [refused_key] and LatencyTable.load(out).meta["complete"] is True


@pytest.mark.parametrize("silent", [False, True])
def test_adb_unplugged_mid_push_says_reconnect_and_resume(phone, small_models, micro_cache, tmp_path, monkeypatch,
                                                          silent):
    """`failed to read copy response: EOF` (or exit 255 with no text) is a disconnect, whatever pass it hits."""
    monkeypatch.setenv("FAKE_ADB_UNPLUG_ON_PUSH", "3")  # push 1 is the binary, 2 the first model, 3 the second
    if silent:
        monkeypatch.setenv("FAKE_ADB_SILENT_255", "1")
    out = tmp_path / "t.json"
    meta = ADB_META
    prof = phone()
    with pytest.raises(DeviceDisconnected) as e:
        profile_keys(SMALL_KEYS, prof, micro_cache.get, out, {**meta, **prof.describe()}, progress=False)
    msg = str(e.value)
    assert "get-state" in msg and "resume=true" in msg and "cable" in msg
    assert len(LatencyTable.load(out)) == 1


@pytest.mark.parametrize("blip", ["FAKE_ADB_BLIP_ON_PUSH=3", "FAKE_ADB_BLIP_ON_RUN=2"])
def test_adb_blip_mid_run_is_a_disconnect_even_when_the_phone_is_back(phone, small_models, micro_cache, tmp_path,
                                                                      monkeypatch, blip):
    """`error: device offline` or `failed to read copy response: EOF` in the middle of a run, with `get-state`
    answering `device` again right after: the command's result is lost, so it is a disconnect (resumable,
    with the resume hint), not a generic device error; the rerun with resume=true finishes the table."""
    var, n = blip.split("=")
    monkeypatch.setenv(var, n)
    out = tmp_path / "t.json"
    prof = phone()
    with pytest.raises(DeviceDisconnected) as e:
        profile_keys(SMALL_KEYS, prof, micro_cache.get, out, {**ADB_META, **prof.describe()}, progress=False)
    msg = str(e.value)
    assert "get-state now: 'device'" in msg and "resume=true" in msg
    assert ("device offline" if "RUN" in var else "failed to read copy response") in msg
    assert len(LatencyTable.load(out)) == 1, "the row measured before the blip is kept"
    monkeypatch.delenv(var)
    res = profile_keys(SMALL_KEYS, phone(), micro_cache.get, out, ADB_META, resume=True, progress=False)
    assert set(res.table.ops) == set(SMALL_KEYS) and len(res.measured) == len(SMALL_KEYS) - 1


def test_adb_disconnect_in_a_later_pass_keeps_the_table(phone, small_models, micro_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_DISCONNECT_AFTER", str(len(SMALL_KEYS) + 1))  # during pass 2
    out = tmp_path / "t.json"
    meta = ADB_META
    prof = phone()
    with pytest.raises(DeviceDisconnected, match="resume=true"):
        profile_keys(SMALL_KEYS, prof, micro_cache.get, out, {**meta, **prof.describe()}, passes=2, progress=False)
    assert set(LatencyTable.load(out).ops) == set(SMALL_KEYS)


def test_adb_refuses_a_phone_of_another_soc_unless_overridden(phone, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_SOC", "sdm670")
    with pytest.raises(WrongSocError, match="sdm670.*sd845|allow_soc_mismatch"):
        phone(soc="sd845", soc_platforms=("sdm845",)).connect()
    info = phone(soc="sd845", soc_platforms=("sdm845",), allow_soc_mismatch=True).connect()
    assert info["soc_matches_config"] is False


def test_adb_32_bit_userspace_on_a_64_bit_soc(phone, tmp_path, monkeypatch):
    """An SD808 phone shipped with 32-bit Android: the soc says arm64-v8a, the phone runs armeabi-v7a."""
    monkeypatch.setenv("FAKE_ADB_ABI", "armeabi-v7a")
    monkeypatch.setenv("FAKE_ADB_ABILIST", "armeabi-v7a,armeabi")
    monkeypatch.setenv("FAKE_ADB_SOC", "msm8992")
    arm32 = _elf(tmp_path / "bm32", 0x28, 1)
    info = phone(binary=arm32, expected_abi="arm64-v8a", soc="sd808", soc_platforms=("msm8992",)).connect()
    assert info["abi"] == "armeabi-v7a" and info["binary_abi"] == "armeabi-v7a"
    assert "armeabi-v7a userspace" in info["userspace_note"]
    with pytest.raises(WrongABIError, match="built for arm64-v8a"):
        phone(expected_abi="arm64-v8a", soc="sd808", soc_platforms=("msm8992",)).connect()


def test_host_and_phone_rows_use_the_same_statistic(phone, small_models):
    local = LocalProfiler(warmup_runs=1, num_runs=5, min_time_s=0.01, repeats=2).describe()["statistic"]
    adb = phone(repeats=2).describe()["statistic"]
    assert local == adb and local["name"] == STATISTIC


# ---------------------------------------------------------------------------------- issue 34: five adb defects
def test_adb_32_bit_binary_on_a_64_bit_phone_is_refused_unless_allowed(phone, tmp_path):
    """A 64-bit phone runs 32-bit binaries too (its abilist), but a 32-bit benchmark_model times 32-bit
    kernels: the phone's primary ABI is required unless allowed explicitly, and then recorded."""
    arm32 = _elf(tmp_path / "bm32", 0x28, 1)
    with pytest.raises(WrongABIError, match="built for armeabi-v7a.*runs arm64-v8a.*allow_abi_mismatch"):
        phone(binary=arm32).connect()
    prof = phone(binary=arm32, allow_abi_mismatch=True)
    info = prof.connect()
    assert "armeabi-v7a binary on a arm64-v8a phone" in info["abi_mismatch_allowed"]
    assert prof.describe()["phone"]["abi_mismatch_allowed"], "the table's meta says so"
    assert phone().connect()["abi_mismatch_allowed"] == ""


def test_adb_resume_after_a_disconnect_in_pass_2_finishes_the_missing_passes(phone, small_models, micro_cache,
                                                                             tmp_path, monkeypatch):
    n = len(SMALL_KEYS)
    monkeypatch.setenv("FAKE_ADB_DISCONNECT_AFTER", str(n + 1))  # pass 1 done, one key of pass 2
    out = tmp_path / "t.json"
    prof = phone()
    with pytest.raises(DeviceDisconnected, match="short of 3 passes"):
        profile_keys(SMALL_KEYS, prof, micro_cache.get, out, {**ADB_META, **prof.describe()}, passes=3,
                     progress=False)
    partial = LatencyTable.load(out)
    assert partial.meta["complete"] is False
    assert sorted(partial.meta["passes"]["done"].values()) == [1] * (n - 1) + [2]
    (phone.state / "disconnected").unlink()
    monkeypatch.setenv("FAKE_ADB_DISCONNECT_AFTER", "-1")
    (phone.state / "benchmark_runs").write_text("0")
    res = profile_keys(SMALL_KEYS, phone(), micro_cache.get, out, ADB_META, resume=True, passes=3, progress=False)
    full = LatencyTable.load(out)
    assert res.measured == [] and full.meta["complete"] is True
    assert full.meta["passes"] == {"target": 3, "done": {k: 3 for k in SMALL_KEYS}}
    assert int((phone.state / "benchmark_runs").read_text()) == 2 * n - 1, "only the missing passes were run"


def test_adb_refused_ops_are_kept_when_every_op_is_refused(phone, small_models, micro_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_REFUSE", ".tflite")  # an old binary that refuses every model
    out = tmp_path / "t.json"
    prof = phone(repeats=3)
    with pytest.raises(DeviceError, match="refused all 4.*refused.json"):
        profile_keys(SMALL_KEYS, prof, micro_cache.get, out, {**ADB_META, **prof.describe()}, progress=False)
    kept = json.loads((tmp_path / "t.json.refused.json").read_text())["refused_ops"]
    assert set(kept) == set(SMALL_KEYS) and all("HARD_SWISH" in v for v in kept.values())
    runs = int((phone.state / "benchmark_runs").read_text())
    with pytest.raises(DeviceError, match="refused all 4"):
        profile_keys(SMALL_KEYS, phone(repeats=3), micro_cache.get, out, ADB_META, resume=True, progress=False)
    assert int((phone.state / "benchmark_runs").read_text()) == runs, "a resume does not re-run refused ops"


def test_adb_a_binary_that_cannot_run_leads_with_its_exit_code(phone, small_models, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_NOEXEC", "1")
    with pytest.raises(BenchmarkOutputError) as e:
        phone().measure(small_models[SMALL_KEYS[0]])
    msg = str(e.value)
    assert msg.startswith("benchmark_model exited with 126 (not executable") and "no latency" not in msg
    assert "Permission denied" in msg


def test_a_misnamed_table_file_warns_once(tmp_path, caplog):
    import spnas
    from spnas.app.jobs.profile import cmd_import

    official = Path(__file__).with_name("fixtures") / "spnas_pixel1_runtime_model.json"
    renamed = tmp_path / "lut.yaml"
    renamed.write_text(official.read_text())
    cfg = spnas.compose("profile", ["command=import", f"source.path={renamed}", f"source.out={tmp_path / 'o.json'}",
                                    "space=spnas_mnasnet"])
    with caplog.at_level("WARNING"):
        cmd_import(cfg)
    assert sum("the name says" in r.getMessage() for r in caplog.records) == 1


def test_resuming_a_complete_table_from_before_passes_were_recorded_measures_nothing(tmp_path):
    """A table written before `meta.passes` existed is taken as having had all its passes (none re-measured)."""
    from latency_tables.profilers import Timing
    from latency_tables.lookup.table import OpStats

    class Counting:
        n = 0

        def measure(self, tflite):
            Counting.n += 1
            return Timing(1.0, 0.1, 5)

        def describe(self):
            return {}

    out = tmp_path / "t.json"
    meta = {**ADB_META, "runtime": "x", "threads": 1, "complete": False}
    LatencyTable(meta, {k: OpStats(1.0, 0.1, 5) for k in SMALL_KEYS}).save(out)
    res = profile_keys(SMALL_KEYS, Counting(), Path, out, ADB_META, resume=True, passes=3, progress=False)
    assert Counting.n == 0 and res.table.meta["complete"] is True
    assert res.table.meta["passes"]["done"] == {k: 3 for k in SMALL_KEYS}
