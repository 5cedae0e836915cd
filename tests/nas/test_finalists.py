"""The finalists step's rankers (`nas.finalists.rank_finalists`), on hand-made candidates with known answers."""

from __future__ import annotations

import pytest

import spnas
from nas.config import FinalistProxy
from nas.finalists import average_ranks, neighbourhood, rank_finalists
from search_spaces import SearchSpace

# four candidates of a 3-layer space: choices, cost, training-free score
CANDS = {
    "A": (["k3_e3", "k3_e3", "skip"], 10.0, 5.0),
    "B": (["k5_e6", "k3_e3", "skip"], 12.0, 1.0),
    "D": (["k3_e3", "k5_e6", "skip"], 11.0, 4.0),
    "C": (["k3_e3", "skip", "skip"], 5.0, 3.0),
}
BY_CHOICES = {tuple(c): (cost, score) for c, cost, score in CANDS.values()}


def _rank(depth: bool | str, budget: float = 20.0) -> list[str]:
    ranked = rank_finalists(None, [c for c, _, _ in CANDS.values()], lambda c: BY_CHOICES[tuple(c)][0], budget,
                            None, lambda c: BY_CHOICES[tuple(c)][1], depth=depth, supernet=False)
    names = {tuple(c): n for n, (c, _, _) in CANDS.items()}
    return [names[f.choices] for f in ranked]


def test_depth_then_cost_lets_cost_outvote_the_proxy_among_networks_of_one_depth():
    # depth-then-cost ranks B 1, D 2, A 3, C 4; the proxy A 1, D 2, C 3, B 4: means A 2, D 2, B 2.5, C 3.5,
    # the tie A/D goes to the costlier, D
    assert _rank(True) == ["D", "A", "B", "C"]
    assert _rank("then_cost") == ["D", "A", "B", "C"]


def test_layers_tie_networks_of_one_depth_so_the_proxy_orders_them():
    # layers: A, B, D tie at rank 2, C 4; with the proxy's ranks: A 1.5, D 2, B 3, C 3.5
    assert _rank("layers") == ["A", "D", "B", "C"]


def test_the_budget_and_bad_settings():
    assert _rank("layers", budget=10.5) == ["A", "C"]
    with pytest.raises(ValueError, match="depth='deep'"):
        _rank("deep")
    with pytest.raises(ValueError, match="at least one ranker"):
        rank_finalists(None, [CANDS["A"][0]], lambda c: 1.0, 2.0, None, None, depth=False, supernet=False)
    assert average_ranks([3.0, 1.0, 3.0]) == [1.5, 3.0, 1.5]


def test_the_nasbench_macro_preset_ranks_three_changes_around_the_centre_by_naswot_and_layers():
    cfg = spnas.compose("search", ["experiment=nasbench_macro"])
    f = cfg.search.finalists
    assert (f.radius, f.proxy, f.supernet) == (3, FinalistProxy.naswot_layers, False)
    space = SearchSpace.from_config(cfg.space)
    centre = ["k3_e3"] * 8
    two = neighbourhood(space, centre, 2)
    # 1 + 8 layers x 2 alternatives + C(8, 2) pairs x 2 x 2 alternatives, each once
    assert len(two) == 1 + 16 + 28 * 4 == len({tuple(c) for c in two}) and two[0] == centre
    three = neighbourhood(space, centre, f.radius)
    # ... + C(8, 3) triples x 2 x 2 x 2 alternatives; the smaller neighbourhood first, in the same order
    assert len(three) == len(two) + 56 * 8 == len({tuple(c) for c in three}) and three[:len(two)] == two


def test_every_space_ranks_finalists_by_default_and_the_paper_preset_does_not():
    """What won on ground truth is the default on the MobileNetV3 space too (docs/groundtruth.md, "What carried
    over"); search=paper keeps the paper's rule; a step that ranks by nothing is refused when configured."""
    from spnas_core.errors import ConfigError

    f = spnas.compose("search", []).search.finalists
    assert (f.radius, f.proxy, f.supernet) == (1, FinalistProxy.naswot_layers, False)
    assert f.recal_images == 0  # one pass per candidate, common layers once: ranks as recalibrating does
    assert spnas.compose("search", ["search=paper"]).search.finalists.radius == 0
    with pytest.raises(ConfigError, match="ranks by nothing"):
        spnas.compose("search", ["search.finalists.proxy=none"])
    assert spnas.compose("search", ["search.finalists.proxy=none", "search.finalists.radius=0"]).search.finalists


def test_naswot_of_choices_is_shared_by_searches_of_one_seed_and_images(monkeypatch):
    """Searches of one seed for several budgets (the harness's, the pipeline's phones) score a network once:
    equal space, seed and images share the memo; another seed or other images do not."""
    import torch

    import nas.proxies
    from nas.finalists import naswot_of_choices

    space = SearchSpace.from_config(spnas.compose("search", ["experiment=nasbench_macro"]).space)
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    calls = []
    real = nas.proxies.naswot_scores
    monkeypatch.setattr(nas.proxies, "naswot_scores", lambda archs, *a: calls.append(len(archs)) or real(archs, *a))
    net = ["k3_e3"] * 8
    a = naswot_of_choices(space, 32, 10, x, seed=7)(net)
    assert naswot_of_choices(space, 32, 10, x.clone(), seed=7)(net) == a and calls == [1]
    assert a == nas.proxies.score_arch(space.decode(net, 32, 1.0, 10), "naswot", x, 7)
    naswot_of_choices(space, 32, 10, x, seed=8)(net)
    naswot_of_choices(space, 32, 10, x + 1, seed=7)(net)
    assert calls == [1, 1, 1]


def test_the_finalists_are_scored_by_naswot_together_and_as_one_by_one(monkeypatch):
    """rank_finalists hands all its candidates to the memoised scorer at once (one prefix tree); the scores
    and so the order are those of scoring each network alone."""
    import torch

    import nas.proxies
    from nas.finalists import naswot_of_choices, neighbourhood, rank_finalists

    space = SearchSpace.from_config(spnas.compose("search", ["experiment=nasbench_macro"]).space)
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    centre = ["k3_e3", "skip", "k5_e6", "k3_e3", "skip", "k3_e3", "k5_e6", "skip"]
    cands = neighbourhood(space, centre, 1)
    proxy = naswot_of_choices(space, 32, 10, x, seed=11)
    batches = []
    real = nas.proxies.naswot_scores
    monkeypatch.setattr(nas.proxies, "naswot_scores", lambda archs, *a: batches.append(len(archs)) or real(archs, *a))
    ranked = rank_finalists(None, cands, lambda c: 0.0, 1.0, None, proxy, supernet=False)
    assert batches == [len(cands)]  # one tree over every candidate
    alone = {tuple(c): nas.proxies.score_arch(space.decode(c, 32, 1.0, 10), "naswot", x, 11) for c in cands}
    assert {f.choices: f.proxy for f in ranked} == alone
    assert [f.choices for f in ranked] == sorted(alone, key=lambda c: -alone[c])
