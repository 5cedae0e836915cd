"""Where the threshold decisions start when the latency term switches on (`search.start`).

The paper starts every layer at its largest candidate (thresholds 0) and lets the cost term shrink
the network until it meets the budget: the order in which layers shrink or vanish is then decided by
straight-through gradients of a supernet that, on a CPU budget, ranks networks weakly (NAS-Bench-
Macro: tau 0.56 after 600 warm-up steps, `bench/bench_groundtruth.py`). Two training-free priors:

- `deepest`: every layer kept, at its smallest candidate (depth first: on NAS-Bench-Macro the number
  of layers alone ranks networks at tau 0.68);
- `proxy`: the best of `search.start_samples` random networks within the budget by the mean of their
  NASWOT rank and their depth rank (depth, then cost), scored on one batch of the search's images with
  one random initialisation: a network that is deep and whose activation patterns separate images.

The thresholds are then set so the decisions are that network (`SuperNet.start_at`), and the
threshold phase moves them from there.
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

import torch

from search_spaces import SKIP, SearchSpace

from .finalists import average_ranks, depth_of
from .proxies import naswot_scores


def deepest(space: SearchSpace) -> list[str]:
    """Every layer kept, at its smallest candidate."""
    return [space.choice_set.smallest] * space.num_layers


def sample_within(space: SearchSpace, cost: Callable[[Sequence[str]], float], budget: float, n: int,
                  rng: random.Random, max_draws: int = 100_000) -> list[list[str]]:
    """Up to `n` distinct networks drawn uniformly (one candidate per layer) whose cost is within `budget`."""
    out: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()
    for _ in range(max_draws):
        c = [rng.choice(sl.choices) for sl in space.slots]
        if tuple(c) in seen or cost(c) > budget:
            continue
        seen.add(tuple(c))
        out.append(c)
        if len(out) == n:
            break
    return out


def proxy_start(space: SearchSpace, cost: Callable[[Sequence[str]], float], budget: float, x: torch.Tensor,
                n: int, seed: int, resolution: int, num_classes: int, width: float = 1.0
                ) -> tuple[list[str], list[dict]]:
    """The best of `n` random networks within the budget by mean(NASWOT rank, depth rank); with every
    candidate's scores (for the search's summary). The largest network's choices when none fits."""
    cands = sample_within(space, cost, budget, n, random.Random(seed))
    if not cands:
        return space.largest_choices(), []
    naswot = naswot_scores([space.decode(c, resolution, width, num_classes) for c in cands], x, seed)
    depth = [depth_of(c) * 1e6 + cost(c) for c in cands]  # depth, then cost
    ranks = [(a + b) / 2 for a, b in zip(average_ranks(naswot), average_ranks(depth))]
    order = sorted(range(len(cands)), key=lambda i: (ranks[i], -cost(cands[i])))
    scored = [{"choices": cands[i], "naswot": naswot[i], "depth": depth_of(cands[i]), "cost": cost(cands[i]),
               "rank": ranks[i]} for i in order]
    return cands[order[0]], scored
