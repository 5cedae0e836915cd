"""The search's budget, threshold schedule, decision rule and verdict (pure functions)."""

from __future__ import annotations

import math

import pytest

from nas.config import SearchConfig, ThresholdSchedule
from nas.budget import majority_decision, plan_budget, threshold_lr_factor
from nas.cost import target_verdict


def test_budget_is_in_steps_and_small_sets_get_smaller_batches():
    cfg = SearchConfig(steps=240, warmup_fraction=0.25, min_threshold_updates=200)
    big = plan_budget(cfg, 45_000)
    assert big.batch_size == 128 and big.steps_per_epoch == 351 and big.epochs == 1
    assert big.total_steps == 260 and big.threshold_updates == 200  # the floor on threshold updates
    small = plan_budget(cfg, 325)  # a folder of 10 product classes: 2 steps per epoch at batch 128 before
    assert small.batch_size == 40 and small.steps_per_epoch == 8 and small.epochs == math.ceil(260 / 8)
    assert small.threshold_updates >= 200 and len(small.notes) == 2
    assert small.window_steps == 20  # at least decision_window_min_steps


def test_threshold_lr_is_off_in_warmup_then_decays_to_zero():
    f = threshold_lr_factor(ThresholdSchedule.cosine, 10, 110)  # warm-up 10 steps, settled at 110
    assert f(0) == f(9) == 0 and f(10) == pytest.approx(0.1)
    assert f(19) == pytest.approx(0.5 * (1 + math.cos(math.pi * 9 / 100)))  # ramp done, cosine under way
    assert f(60) == pytest.approx(0.5)
    assert f(109) < 0.001 and f(110) == pytest.approx(0)
    assert threshold_lr_factor(ThresholdSchedule.constant, 10, 110)(100) == 1


def test_decision_is_the_majority_over_the_window():
    window = [["k5_e6", "skip"], ["k3_e3", "skip"], ["k3_e3", "k3_e3"], ["k3_e3", "skip"], ["k5_e6", "skip"]]
    choices, flips, agree = majority_decision(window)
    assert choices == ["k3_e3", "skip"] and flips == [2, 2] and agree == [0.6, 0.8]
    assert majority_decision([["a"], ["b"]])[0] == ["b"]  # a tie goes to the latest


def test_verdict_says_plainly_when_a_search_misses_its_budget():
    assert target_verdict(50.0, 51.0, 0.03, [], 20.0, 90.0, 0, 1.0)["met"] is True
    v = target_verdict(50.0, 60.0, 0.03, [], 20.0, 90.0, 0, 1.0)
    assert v["met"] is False and "above the budget" in v["reason"] and v["off_pct"] == pytest.approx(20)
    assert "below the smallest" in target_verdict(10.0, 20.0, 0.03, [], 20.0, 90.0, 0, 1.0)["reason"]
    assert "above the largest" in target_verdict(120.0, 90.0, 0.03, [], 20.0, 90.0, 0, 1.0)["reason"]
    assert "still changing" in target_verdict(50.0, 45.0, 0.03, [], 20.0, 90.0, 3, 1.0)["reason"]


def test_a_ceiling_budget_lands_below_it_and_misses_only_far_below():
    """loss=target_one_sided: the budget is a ceiling; ending a little under it is landing, not a miss."""
    v = target_verdict(45.0, 43.2, 0.03, [], 8.0, 105.0, 0, 1.0, ceiling=True)
    assert v["met"] is True and "within it" in v["reason"]
    assert target_verdict(45.0, 43.2, 0.03, [], 8.0, 105.0, 0, 1.0)["met"] is False  # a point target misses
    assert target_verdict(45.0, 30.0, 0.03, [], 8.0, 105.0, 0, 1.0, ceiling=True)["met"] is False
    assert target_verdict(45.0, 47.0, 0.03, [], 8.0, 105.0, 0, 1.0, ceiling=True)["met"] is False


def test_the_settling_warning_counts_the_steps_where_thresholds_learn():
    """Ground truth saw decisions collapse at 40 threshold-learning steps and settle at 80 (docs/groundtruth.md);
    the decision window (threshold rate 0) adds none, so it is left out of the count. The NAS-Bench-Macro preset
    keeps 80 and a short window."""
    import spnas

    preset = spnas.compose("search", ["experiment=nasbench_macro"]).search  # 320 warm-up, 80 learning, 8 window
    b = plan_budget(preset, 45_000)
    assert (b.warmup_steps, b.total_steps - b.warmup_steps - b.window_steps, b.window_steps) == (320, 80, 8)
    assert not b.warnings
    long_window = SearchConfig(steps=500, warmup_fraction=0.8, min_threshold_updates=100, decision_window_steps=40)
    w = plan_budget(long_window, 45_000).warnings
    assert len(w) == 1 and "60 threshold-learning steps" in w[0] and "the last 40 the decision window" in w[0]
