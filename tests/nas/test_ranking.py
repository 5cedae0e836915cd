"""Scoring networks inside the supernet (nas/ranking.py): the prefix-tree walk gives the per-path figures
bit for bit, and leaves the supernet as it found it."""

from __future__ import annotations

import random

import pytest
import torch

import spnas
from nas.ranking import RankingImages, score_paths
from nas.superkernel import SuperNet
from search_spaces import SearchSpace, default_space


def _space(name: str) -> SearchSpace:
    if name == "mobilenetv3":
        return default_space()
    return SearchSpace.from_config(spnas.compose("search", ["experiment=nasbench_macro"]).space)


def _paths(space: SearchSpace, n: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    paths = [[rng.choice(s.choices) for s in space.slots] for _ in range(n)]
    # shared prefixes of every length and an exact duplicate
    base = paths[0]
    for cut in range(1, len(base)):
        paths.append(base[:cut] + [rng.choice(s.choices) for s in space.slots[cut:]])
    return paths + [list(base)]


@pytest.mark.parametrize("name", ["nasbench_macro", "mobilenetv3"])
def test_the_prefix_tree_scores_every_path_as_running_it_whole(name):
    torch.manual_seed(0)
    space = _space(name)
    net = SuperNet(space, 32, 1.0, 10).to(memory_format=torch.channels_last)
    net.train()
    g = torch.Generator().manual_seed(1)
    images = RankingImages(torch.zeros(0, 3, 32, 32), torch.randn(40, 3, 32, 32, generator=g),
                           torch.randint(0, 10, (40,), generator=g))
    paths = _paths(space, 12, 2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    shared = score_paths(net, paths, images, batch_size=16)  # three batches, the last one short
    whole = score_paths(net, paths, images, batch_size=16, shared=False)
    assert [(s.choices, s.loss, s.top1) for s in shared] == [(s.choices, s.loss, s.top1) for s in whole]
    assert shared[0].loss == shared[-1].loss  # the duplicate
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and net.training


def test_a_path_of_the_wrong_length_is_refused():
    space = _space("nasbench_macro")
    net = SuperNet(space, 32, 1.0, 10)
    images = RankingImages(torch.zeros(0, 3, 32, 32), torch.randn(4, 3, 32, 32), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="one choice per searchable layer"):
        score_paths(net, [["k3_e3"] * 7], images)


def test_repair_takes_the_best_cheaper_single_layer_change_until_the_network_fits():
    """A search that ends over its budget (`nas.finalists.repair_to_budget`, which the default finalists step runs
    first): each round is one layer changed to a cheaper choice, the one the supernet scores best (the same
    figures as scoring each candidate whole), until the cost is within the budget."""
    from nas.finalists import repair_to_budget

    torch.manual_seed(0)
    space = _space("nasbench_macro")
    net = SuperNet(space, 32, 1.0, 10).to(memory_format=torch.channels_last)
    net.train()
    g = torch.Generator().manual_seed(2)
    images = RankingImages(torch.zeros(0, 3, 32, 32), torch.randn(24, 3, 32, 32, generator=g),
                           torch.randint(0, 10, (24,), generator=g))
    price = {c: float(i) for i, c in enumerate(space.slots[0].choices)}  # identity < k3_e3 < k5_e6 (0, 1, 2)
    cost = lambda ch: sum(price[c] for c in ch)  # noqa: E731
    largest = [max(s.choices, key=price.__getitem__) for s in space.slots]
    assert cost(largest) == 16.0
    fixed, rounds = repair_to_budget(net, largest, cost, 13.0, images)
    assert cost(fixed) <= 13.0 and rounds >= 2
    # replay: every round's change is the lowest held-out loss among the cheaper single-layer changes
    current = list(largest)
    for _ in range(rounds):
        options = [current[:i] + [c] + current[i + 1:] for i, s in enumerate(space.slots) for c in s.choices
                   if price[c] < price[current[i]]]
        whole = score_paths(net, options, images, shared=False)
        current = list(min(zip(options, whole), key=lambda p: p[1].loss)[0])
    assert current == fixed
    assert repair_to_budget(net, fixed, cost, 13.0, images) == (fixed, 0)  # a network that fits is kept
