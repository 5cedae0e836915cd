"""Judging a search by ground truth: rank, percentile, regret and exact random controls, on a small table
with hand-computed answers; the benchmark file is refused with one line when truncated or foreign."""

import json

import pytest

from nas.groundtruth import (NasBenchMacro, Record, best_of_n, costliest, depth_then_cost, judge,
                             kendall_with_ci, random_controls)
from spnas_core.errors import InputError, InputNotFoundError


def _table() -> NasBenchMacro:
    # five networks: (accuracy, cost, codes that denote it)
    rows = {"11111111": (90.0, 40, 1), "22222222": (93.0, 100, 1), "10000000": (80.0, 10, 3),
            "11100000": (85.0, 20, 2), "21000000": (88.0, 30, 2)}
    return NasBenchMacro({c: Record(c, a, (a, a, a), 0, f, n) for c, (a, f, n) in rows.items()})


def cost(code: str) -> float:
    return float(_table()[code].flops)


def test_rank_percentile_and_regret_within_the_budget():
    t = _table()
    j = judge(t, "11100000", cost, 30)  # budget 30: 80 (10), 85 (20), 88 (30)
    assert (j.rank, j.n, j.best_code, j.within_budget) == (2, 3, "21000000", True)
    assert j.percentile == pytest.approx(200 / 3)
    assert j.regret == pytest.approx(3.0)
    assert j.top_pct == pytest.approx(200 / 3)
    assert "rank 2 of 3 within budget" in j.sentence() and "regret 3.00 points" in j.sentence()
    best = judge(t, "21000000", cost, 30)
    assert (best.rank, best.regret, best.percentile) == (1, 0.0, 100.0)
    over = judge(t, "11111111", cost, 30)  # a winner over its budget is flagged, judged among the budget's nets
    assert not over.within_budget and over.rank == 1 and "over budget" in over.sentence()


def test_best_of_n_is_the_exact_expected_maximum():
    # values 1, 2, 3 with weights 1, 1, 2 (shares 1/4, 1/4, 1/2): E[max of 2] = 1/16 + 2(1/4 - 1/16) + 3(1 - 1/4)
    assert best_of_n([1, 2, 3], [1, 1, 2], 2) == pytest.approx(1 / 16 + 2 * 3 / 16 + 3 * 3 / 4)
    assert best_of_n([1, 2, 3], [1, 1, 2], 1) == pytest.approx((1 + 2 + 6) / 4)  # the weighted mean
    assert best_of_n([5, 5, 7], [1, 1, 1], 3) == pytest.approx(5 * (2 / 3) ** 3 + 7 * (1 - (2 / 3) ** 3))


def test_random_controls_weight_networks_by_their_codes():
    c = random_controls(_table(), cost, 30, ns=(1, 10))
    # within 30: 80 (3 codes), 85 (2), 88 (2): a random code's network is 80 with probability 3/7
    assert c["n_within"] == 3 and c["best_of_1"] == pytest.approx((3 * 80 + 2 * 85 + 2 * 88) / 7)
    want10 = 80 * (3 / 7) ** 10 + 85 * ((5 / 7) ** 10 - (3 / 7) ** 10) + 88 * (1 - (5 / 7) ** 10)
    assert c["best_of_10"] == pytest.approx(want10) and c["best_of_10_rank"] == 1 + (want10 < 88)


def test_rules_without_training():
    t = _table()
    assert depth_then_cost(t, cost, 45) == "11111111"  # deepest within 45
    assert costliest(t, cost, 35) == "21000000"


def test_kendall_with_interval():
    r = kendall_with_ci([1, 2, 3, 4, 5, 6], [1, 3, 2, 4, 6, 5], n_boot=200)
    assert r["n"] == 6 and r["low"] <= r["tau"] <= r["high"] and r["tau"] == pytest.approx(11 / 15)  # 2 discordant pairs of 15


def test_the_real_table_loads(nasbench_macro_file):
    t = NasBenchMacro.load(nasbench_macro_file)
    assert len(t) == 3969 and t.complete()
    assert t["22212220"].mean_acc == pytest.approx(93.13, abs=0.01)
    assert t["20102010"] is t["20120010"]


def test_a_missing_truncated_or_foreign_file_is_refused_in_one_line(tmp_path, nasbench_macro_file):
    with pytest.raises(InputNotFoundError, match="does not exist"):
        NasBenchMacro.load(tmp_path / "none.json")
    cut = tmp_path / "cut.json"
    cut.write_text(nasbench_macro_file.read_text()[:5000])
    with pytest.raises(InputError) as e:
        NasBenchMacro.load(cut)
    assert "truncated" in str(e.value) and "\n" not in str(e.value)
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({"arch-1": {"acc": 0.9}}))
    with pytest.raises(InputError) as e:
        NasBenchMacro.load(foreign)
    assert "not a NAS-Bench-Macro table" in str(e.value) and "\n" not in str(e.value)
    lacking = tmp_path / "lacking.json"
    lacking.write_text(json.dumps({"00000000": {"mean_acc": 50}}))
    with pytest.raises(InputError, match="lacks one of"):
        NasBenchMacro.load(lacking)
