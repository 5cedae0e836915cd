"""Validation at this machine's current speed: calibration networks re-measured among the validated
ones say how fast the machine runs now relative to when the table was calibrated."""

import json
from pathlib import Path

import pytest

import latency_tables.measuring.host as H
import spnas
import spnas.app.jobs.profile as P
from latency_tables.lookup.predictor import predict_latency_ms
from latency_tables.profilers import Timing
from latency_tables.lookup.table import DATA_DIR, LatencyTable

SHIPPED = sorted(DATA_DIR.glob("host-*.json"))


def _calibrated(tmp_path, used=None):
    """The shipped host table with a calibration whose 16 networks measured exactly as predicted."""
    assert SHIPPED, "latency_tables/data ships this project's host table"
    table = LatencyTable.load(SHIPPED[0])
    cfg = spnas.compose("profile", [])
    archs = H.overhead_archs(P._space(cfg))
    ms = [predict_latency_ms(a, table) for a in archs]
    table.meta["overhead_fit"] = {"arch_strings": [a.to_string() for a in archs], "measured_ms": ms,
                                  "used": used or [True] * len(ms), "n": len(ms)}
    path = tmp_path / "host-test.json"
    table.save(path)
    return path, archs, ms


def test_speed_probes_spread_over_the_calibration_range_and_leave_outliers_out(tmp_path):
    used = [True] * 16
    used[3] = False
    path, archs, ms = _calibrated(tmp_path, used)
    table = LatencyTable.load(path)
    probes = H.speed_probes(table, 6)
    assert [a.name for a, _ in probes] == [f"probe-{j}" for j in range(6)]
    then = [m for _, m in probes]
    assert then == sorted(then)
    kept = sorted(m for m, u in zip(ms, used) if u)
    assert then[0] == kept[0] and then[-1] == kept[-1], "the smallest and the largest calibration networks"
    assert archs[3].to_string() not in {a.to_string() for a, _ in probes}, "an outlier of the fit is no probe"
    del table.meta["overhead_fit"]["arch_strings"]  # a table fitted before arch strings were kept
    assert H.speed_probes(table, 6) == []
    assert H.speed_probes(LatencyTable.load(path), 0) == []


def test_validate_says_how_to_get_probes_for_a_table_without_them(tmp_path, monkeypatch, caplog):
    path, _, _ = _calibrated(tmp_path)
    table = LatencyTable.load(path)
    del table.meta["overhead_fit"]["arch_strings"]
    table.save(path)

    def fake_measure_whole(archs, profiler, convert, passes=1, desc="", progress=True):
        return [Timing(1.0, 0.01, 10, 1.0, 1.0, 1.0, (1.0,)) for _ in archs]

    monkeypatch.setattr(H, "measure_whole", fake_measure_whole)
    cfg = spnas.compose("profile", ["command=validate", f"validate.table={path}", "validate.num_archs=4",
                                    f"validate.out_dir={tmp_path / 'out'}"])
    with caplog.at_level("WARNING"):
        r = P.cmd_validate(cfg)
    assert r["speed"] is None and r["metrics_at_speed"] is None
    assert "resume=true" in caplog.text and "speed probes" in caplog.text


def test_interleave_spreads_probes_through_each_pass():
    archs = list(range(10))
    combined, order = H.interleave(archs, ["a", "b"])  # type: ignore[arg-type]
    assert combined == ["a", 0, 1, 2, 3, 4, "b", 5, 6, 7, 8, 9]
    assert order == [10, 0, 1, 2, 3, 4, 11, 5, 6, 7, 8, 9]
    assert H.interleave(archs, [])[0] == archs  # type: ignore[arg-type]


def test_speed_factor_is_a_median_one_probe_cannot_move():
    assert H.speed_factor([1.1, 2.2, 3.3], [1.0, 2.0, 3.0]) == pytest.approx(1.1)
    assert H.speed_factor([1.1, 2.2, 9.0, 4.4, 5.5], [1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(1.1)
    with pytest.raises(H.TableError):
        H.speed_factor([], [])


def test_validate_judges_the_table_at_this_machines_speed(tmp_path, monkeypatch):
    """The machine runs 8% slower than at calibration: the absolute figures show the bias, the figures
    at this speed show the table's own error (here +-1%), and the factor found is the 8%."""
    path, _, _ = _calibrated(tmp_path)
    table = LatencyTable.load(path)
    calls = []

    def fake_measure_whole(archs, profiler, convert, passes=1, desc="", progress=True):
        calls.append([a.name for a in archs])
        assert passes == 7, "validate.passes, not the row profiler's passes"
        out = []
        for i, a in enumerate(archs):
            noise = 1.0 if a.name.startswith("probe") else (1.01 if i % 2 else 0.99)
            ms = predict_latency_ms(a, table) * 1.08 * noise
            out.append(Timing(ms, 0.01, 10, ms, ms, ms, (ms,)))
        return out

    monkeypatch.setattr(H, "measure_whole", fake_measure_whole)
    cfg = spnas.compose("profile", ["command=validate", f"validate.table={path}", "validate.num_archs=8",
                                    f"validate.out_dir={tmp_path / 'out'}", "validate.speed_probes=4",
                                    "validate.passes=7"])
    r = P.cmd_validate(cfg)
    assert len(calls) == 1 and sum(n.startswith("probe") for n in calls[0]) == 4
    assert calls[0][0] == "probe-0", "a probe opens each pass; the others are spread through it"
    assert r["speed"]["factor"] == pytest.approx(1.08)
    assert r["metrics"]["bias_pct"] == pytest.approx(-100 * (1 - 1 / 1.08), abs=0.5)
    assert r["metrics_at_speed"]["mape_pct"] == pytest.approx(1.0, abs=0.05)
    assert r["metrics_at_speed"]["within_10pct"] == 1.0
    assert not any(row["name"].startswith("probe") for row in r["rows"]), "probes are not validated"
    saved = json.loads((tmp_path / "out" / "validate.json").read_text())
    assert saved["speed"]["factor"] == pytest.approx(1.08) and (tmp_path / "out" / "validate_scatter.png").exists()


def test_validate_passes_and_probes_are_checked_at_compose_time():
    with pytest.raises(spnas.ConfigError, match="validate.passes=0"):
        spnas.compose("profile", ["command=validate", "validate.passes=0"])
