"""LUT files: schema validation, missing-key errors, predictor, differentiable form."""

import copy
import json
import random

import pytest
import torch

from latency_tables.lookup.keys import ops_of, ops_of_space
from latency_tables.lookup.predictor import SpaceLatency, fit_calibration, latency_breakdown, predict_latency_ms
from latency_tables.lookup.table import LatencyTable, MissingOpsError, OpStats, TableError, available_tables
from search_spaces import SKIP, default_space, mobilenet_v2


def _table(keys, ms=1.0, overhead=0.0):
    meta = {"device": "t", "soc": "x", "provenance": "measured", "runtime": "r", "threads": 1, "date": "2026-01-01",
            "overhead_ms": overhead}
    return LatencyTable(meta, {k: OpStats(ms, 0.1, 10, ms) for k in keys})


def test_save_load_round_trip(tmp_path):
    arch = mobilenet_v2()
    t = _table([op.key for op in ops_of(arch)], 0.5, overhead=0.25)
    p = t.save(tmp_path / "t.json")
    back = LatencyTable.load(p)
    assert back.ops == t.ops and back.overhead_ms == 0.25
    assert predict_latency_ms(arch, back) == pytest.approx(0.5 * len(ops_of(arch)) + 0.25)
    assert len(latency_breakdown(arch, back)) == len(ops_of(arch))


GOOD = {"format": "spnas.lut/1",
        "meta": {"device": "d", "soc": "s", "provenance": "measured", "runtime": "r", "threads": 1, "date": "x"},
        "ops": {"AvgPool2D-input:7x7x960": {"mean_ms": 0.1, "std_ms": 0.01, "count": 5}}}


@pytest.mark.parametrize("mutate,where", [
    (lambda d: d.pop("meta"), "meta"),
    (lambda d: d["meta"].pop("provenance"), "provenance"),
    (lambda d: d["meta"].__setitem__("provenance", "guessed"), "meta/provenance"),
    (lambda d: d["ops"].__setitem__("AvgPool2D-input:7x7x960", {"mean_ms": -1, "std_ms": 0, "count": 1}), "mean_ms"),
    (lambda d: d["ops"].__setitem__("Banana-input:1", {"mean_ms": 1, "std_ms": 0, "count": 1}), "Banana"),
    (lambda d: d["ops"]["AvgPool2D-input:7x7x960"].pop("count"), "count"),
    (lambda d: d.__setitem__("ops", {}), "ops"),
])
def test_schema_rejects_malformed_tables(tmp_path, mutate, where):
    d = copy.deepcopy(GOOD)
    mutate(d)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(d))
    with pytest.raises(TableError) as e:
        LatencyTable.load(p)
    assert "bad.json" in str(e.value) and where.split("/")[0] in str(e.value)


def test_not_json_and_unknown_names(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("{")
    with pytest.raises(TableError, match="not valid JSON"):
        LatencyTable.load(p)
    with pytest.raises(FileNotFoundError, match="available"):
        LatencyTable.load("no-such-device")


def test_missing_keys_are_named_never_zero():
    arch = mobilenet_v2()
    keys = [op.key for op in ops_of(arch)]
    t = _table(keys[:-3])
    with pytest.raises(MissingOpsError) as e:
        predict_latency_ms(arch, t)
    for k in keys[-3:]:
        assert k in str(e.value)
    assert "resume=true" in str(e.value)


def test_fit_overhead_is_median_residual():
    """With fewer than 4 networks only the constant is fitted: the median residual."""
    arch = mobilenet_v2()
    t = _table([op.key for op in ops_of(arch)], 0.1)
    s = 0.1 * len(ops_of(arch))
    fit = fit_calibration(t, [(arch, s + 1.0), (arch, s + 2.0), (arch, s + 10.0)])
    assert fit["overhead_ms"] == pytest.approx(2.0) and fit["row_scale"] == 1.0


def test_differentiable_latency_matches_predictor_when_hard():
    space = default_space()
    table = LatencyTable.load("sd845")
    sl = SpaceLatency(space, table, 224, 1.0, 1000)
    rng = random.Random(0)
    for _ in range(50):
        choices = [rng.choice(s.choices) for s in space.slots]
        keep = torch.tensor([0.0 if c == SKIP else 1.0 for c in choices], dtype=torch.float64)
        k = torch.tensor([1.0 if c.startswith("k5") else 0.0 for c in choices], dtype=torch.float64)
        e = torch.tensor([1.0 if c.endswith("e6") else 0.0 for c in choices], dtype=torch.float64)
        r = sl.expected_ms(keep, k, e)
        assert float(r) == pytest.approx(predict_latency_ms(space.decode(choices, 224), table), rel=1e-9)
        assert sl.of_choices(choices) == pytest.approx(float(r), rel=1e-9)


def test_shipped_tables_exist_and_load():
    names = available_tables()
    for n in ("sd845", "sd670", "sd808", "sd801"):
        assert n in names
        t = LatencyTable.load(n)
        assert t.provenance == "modeled" and t.meta["method"]["sources"]
    hosts = [n for n in names if n.startswith("host-")]
    assert hosts, "the measured host table must be shipped"
    assert LatencyTable.load(hosts[0]).provenance == "measured"


def test_fit_calibration_scales_rows_and_drops_an_outlier():
    """Ops timed alone run hot in cache: a network costs row_scale x its rows + a constant, fitted on
    networks held out of any validation; one disturbed measurement does not move the fit."""
    space = default_space()
    rng = random.Random(1)
    archs = [space.sample(rng, 224) for _ in range(10)]
    keys = sorted(set(ops_of_space(space, 224)) | {op.key for a in archs for op in ops_of(a)})
    t = LatencyTable({"device": "t", "soc": "x", "provenance": "measured", "runtime": "r", "threads": 1,
                      "date": "x"}, {k: OpStats(0.05 + 0.01 * (i % 7), 0.0, 10) for i, k in enumerate(keys)})
    sums = [predict_latency_ms(a, t) for a in archs]
    measured = [1.2 * s + 0.3 for s in sums]
    measured[3] *= 1.5  # a slow episode
    fit = fit_calibration(t, list(zip(archs, measured)))
    assert fit["row_scale"] == pytest.approx(1.2, rel=1e-6) and fit["overhead_ms"] == pytest.approx(0.3, abs=1e-6)
    assert fit["used"][3] is False and sum(fit["used"]) == 9
    t.meta.update(row_scale=fit["row_scale"], overhead_ms=fit["overhead_ms"])
    assert predict_latency_ms(archs[0], t) == pytest.approx(measured[0], rel=1e-9)
    sl = SpaceLatency(space, t, 224, 1.0, 1000)
    choices = space.encode(archs[0])
    assert sl.of_choices(choices) == pytest.approx(measured[0], rel=1e-9)
    # too few networks: the constant alone
    few = fit_calibration(t, list(zip(archs[:3], measured[:3])))
    assert few["row_scale"] == 1.0
