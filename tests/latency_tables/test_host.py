"""`host` means this machine: fingerprints, the profile-now path, the stale-table check."""

import dataclasses
import json

import pytest

from latency_tables.lookup.fingerprint import Fingerprint, host_slug, machine_fingerprint, table_fingerprint
from latency_tables.lookup.table import HostTableMismatch, LatencyTable, OpStats, host_table_name, resolve_table_path

from .conftest import SMALL_KEYS


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty SPNAS_HOME, and no shipped host table in the way (the shipped folder is swapped for an empty one)."""
    import latency_tables.lookup.table as T

    monkeypatch.setenv("SPNAS_HOME", str(tmp_path / "home"))
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    monkeypatch.setattr(T, "DATA_DIR", shipped)
    return tmp_path / "home"


def _host_table(fp: Fingerprint, keys, ms=0.5) -> LatencyTable:
    meta = {"device": host_slug(fp), "soc": "host CPU", "provenance": "measured", "runtime": "LiteRT", "threads": 1,
            "date": "2026-01-01", "fingerprint": fp.to_dict()}
    return LatencyTable(meta, {k: OpStats(ms, 0.01, 10) for k in keys})


def test_fingerprint_names_what_decides_op_costs():
    fp = machine_fingerprint(1)
    assert fp.cpu_model and fp.cores >= 1 and fp.runtime_version and fp.threads == 1
    assert fp.caches_kb, "cache sizes from sysfs"
    assert Fingerprint.from_dict(json.loads(json.dumps(fp.to_dict()))) == fp
    assert not fp.differences(machine_fingerprint(1))
    other = dataclasses.replace(fp, isa=tuple(f for f in fp.isa if f != "avx2") + ("sve",), caches_kb={"L2": 1})
    diffs = " ".join(other.differences(fp))
    assert "isa" in diffs and "caches_kb" in diffs
    assert host_slug(fp).endswith(fp.id) and host_slug(fp) != host_slug(other)


def test_a_table_of_another_machine_is_never_host(home):
    here = machine_fingerprint(1)
    foreign = dataclasses.replace(here, cpu_model="AMD EPYC 7B13", isa=("avx", "avx2", "fma"), caches_kb={"L2": 512})
    _host_table(foreign, SMALL_KEYS).save(home / "tables" / f"{host_slug(foreign)}.json")
    assert host_table_name() is None
    with pytest.raises(HostTableMismatch) as e:
        LatencyTable.load("host")
    msg = str(e.value)
    assert here.describe() in msg and foreign.describe() in msg, "both fingerprints are named"
    assert "spnas-profile" in msg and "if_no_table=profile" in msg
    assert e.value.exit_code == 4
    # the same machine's table is found, under any name
    _host_table(here, SMALL_KEYS).save(home / "tables" / "host-mine.json")
    assert host_table_name() == "host-mine"
    assert resolve_table_path("host").name == "host-mine.json"


def test_prepare_soc_error_skip_and_profile_now(home, micro_cache, monkeypatch):
    import latency_tables.measuring.host as P
    import spnas
    from export.tflite import convert_to_tflite
    from latency_tables.config import MissingTablePolicy, StaleCheck
    from search_spaces import default_space

    cfg = spnas.compose("search", ["soc=host"])
    soc = dataclasses.replace(cfg.soc, stale_check=StaleCheck.off)
    with pytest.raises(HostTableMismatch):
        P.prepare_soc(soc, default_space(), 224, 10, convert_to_tflite)
    skipped, info = P.prepare_soc(dataclasses.replace(soc, if_no_table=MissingTablePolicy.skip), default_space(), 224, 10,
                                  convert_to_tflite)
    assert skipped is None and "skipped" in info
    # profile now: a small op subset (the search's keys are replaced by three real ones), no overhead fit
    monkeypatch.setattr(P.K, "ops_of_space", lambda *a, **k: SMALL_KEYS[:3])
    monkeypatch.setattr(P.K, "ops_of_references", lambda *a, **k: [])
    monkeypatch.setattr(P, "overhead_archs", lambda *a, **k: [])
    monkeypatch.setattr(P, "MicroModelCache", lambda conv, d: micro_cache)
    prof = P.ProfilerConfig(warmup_runs=1, num_runs=5, min_time_s=0.01, repeats=2, passes=1)
    ready, info = P.prepare_soc(dataclasses.replace(soc, if_no_table=MissingTablePolicy.profile), default_space(), 224,
                                10, convert_to_tflite, prof, progress=False)
    path = home / "tables" / f"{host_slug(machine_fingerprint(1))}.json"
    assert ready is not None and ready.table == str(path) and path.is_file() and info["profiled_now"]
    t = LatencyTable.load("host")
    assert set(t.ops) == set(SMALL_KEYS[:3]) and table_fingerprint(t.meta) == machine_fingerprint(1)
    assert t.meta["statistic"]["name"] == "fastest_run_mean" and t.meta["complete"] is True
    assert info["fingerprint"]["id"] == machine_fingerprint(1).id


class _OnceThenSame:
    """LocalProfiler that times each file for real once and then returns that timing again: the stale check
    compares the table with one fixed measurement, so a neighbour test loading these 2 cores between two
    timings (seen in CI: 0.76 ms, then 1.13 ms for one network) cannot read as drift or hide the injected one."""

    def __init__(self, profiler):
        self.profiler, self.seen = profiler, {}

    def measure(self, tflite):
        if str(tflite) not in self.seen:
            self.seen[str(tflite)] = self.profiler.measure(tflite)
        return self.seen[str(tflite)]

    def describe(self):
        return self.profiler.describe()


def test_stale_check_warns_on_injected_drift_and_refuses_when_asked(home, caplog, monkeypatch):
    import latency_tables.measuring.host as P
    from export.tflite import convert_to_tflite
    from latency_tables.config import ProfilerConfig, SocConfig, StaleCheck
    from latency_tables.profilers import LocalProfiler

    # A tiny whole network measured now (for real, once); a table whose rows add up to 1.5x that measurement
    # (an injected drift). The check's own profiler is the LocalProfiler the config asks for, holding that timing.
    from search_spaces import mobilenet_v3_small

    archs = [mobilenet_v3_small(resolution=96, num_classes=10)]  # ~1 ms: long enough to time steadily
    prof = ProfilerConfig(warmup_runs=2, num_runs=20, min_time_s=0.05, repeats=2)
    from latency_tables.lookup.keys import ops_of

    profiler = _OnceThenSame(LocalProfiler(warmup_runs=2, num_runs=20, min_time_s=0.05, repeats=2))
    built = []
    real_local_profiler = P.local_profiler

    def local_profiler(cfg):
        built.append(real_local_profiler(cfg))
        assert isinstance(built[-1], LocalProfiler)
        return profiler

    monkeypatch.setattr(P, "local_profiler", local_profiler)
    measured = P.measure_whole(archs, profiler, convert_to_tflite, 1, progress=False)[0].value
    keys = [op.key for op in ops_of(archs[0])]
    table = _host_table(machine_fingerprint(1), keys, ms=1.5 * measured / len(keys))
    soc = SocConfig(name="host", table="host", stale_check=StaleCheck.warn, stale_tolerance=0.2)
    caplog.set_level("WARNING")
    res = P.check_table(table, soc, convert_to_tflite, prof, archs)
    assert res is not None and res["drift"] == pytest.approx(0.5) and "warning" in res and built
    assert "force=true" in caplog.text and table.device in caplog.text
    with pytest.raises(P.StaleTableError, match="re-profile|Re-profile"):
        P.check_table(table, dataclasses.replace(soc, stale_check=StaleCheck.refuse), convert_to_tflite, prof, archs)
    # within tolerance: no warning
    soc_loose = dataclasses.replace(soc, stale_tolerance=0.9)
    assert "warning" not in P.check_table(table, soc_loose, convert_to_tflite, prof, archs)


def test_pipeline_never_presents_another_machines_table_as_this_cpu(home):
    """The pipeline resolves `host` before any data is decoded: no matching table -> error naming both
    fingerprints, or (if_no_table=skip) the host leaves the run and the report says why."""
    import spnas
    from spnas.app.pipeline.run import prepare_devices

    here = machine_fingerprint(1)
    foreign = dataclasses.replace(here, cpu_model="AMD EPYC 7B13", isa=("avx", "avx2", "fma"), caches_kb={"L2": 512})
    _host_table(foreign, SMALL_KEYS).save(home / "tables" / f"{host_slug(foreign)}.json")
    cfg = spnas.compose("pipeline", ["socs=[sd845,host]", "soc_configs.host.if_no_table=error"])
    with pytest.raises(HostTableMismatch):
        prepare_devices(cfg)
    cfg = spnas.compose("pipeline", ["socs=[sd845,host]", "soc_configs.host.if_no_table=skip"])
    ran, devices = prepare_devices(cfg)
    assert ran.socs == ["sd845"] and "skipped" in devices["host"] and foreign.describe() in devices["host"]["skipped"]
    assert ran.soc_configs["sd845"].table == "sd845"
    # this machine's table: resolved to its file, fingerprint named for the report
    _host_table(here, SMALL_KEYS).save(home / "tables" / "host-mine.json")
    cfg = spnas.compose("pipeline", ["socs=[host]", "soc_configs.host.stale_check=off"])
    ran, devices = prepare_devices(cfg)
    assert ran.soc_configs["host"].table.endswith("host-mine.json")
    assert devices["host"]["fingerprint_text"] == here.describe()


def test_resume_of_a_shipped_table_of_this_machine_starts_from_its_rows(home, tmp_path):
    """`spnas-profile table_name=<shipped host table> resume=true` (what the stale check suggests) copies
    the shipped rows into the user's tables and measures only what is missing, never from scratch."""
    import latency_tables.measuring.host as H
    import latency_tables.lookup.table as T
    import spnas
    from spnas.app.jobs import profile as P

    cfg = spnas.compose("profile", ["resume=true", "fit_overhead=false", "resolutions=[32]", "num_classes=[10]"])
    keys = H.table_keys(P._space(cfg), [32], [10])
    here = machine_fingerprint(cfg.profile.threads)
    name = host_slug(here)
    _host_table(here, keys, ms=0.123).save(T.DATA_DIR / f"{name}.json")
    t = P.cmd_measure(spnas.compose("profile", ["resume=true", "fit_overhead=false", "resolutions=[32]",
                                                "num_classes=[10]", f"table_name={name}"]))
    out = home / "tables" / f"{name}.json"
    assert out.is_file() and len(t) == len(keys) and all(r.value == 0.123 for r in t.ops.values())


def test_report_names_the_table_fingerprint_and_spot_check_or_why_a_device_was_left_out():
    from spnas.app.pipeline.report_md import _device_line

    assert _device_line("host", {"skipped": "no table matches"}) == "**host skipped**: no table matches"
    chk = {"drift": 0.153, "rows": [{"name": "mobilenet_v2"}, {"name": "mobilenet_v3_small"}], "warning": "x"}
    line = _device_line("host", {"table": "host-x", "fingerprint_text": "CPU Z (avx2)", "stale_check": chk})
    assert line.startswith("host: table `host-x` measured on CPU Z (avx2); spot check on this machine")
    assert "+15.3% over mobilenet_v2, mobilenet_v3_small (WARNING" in line
