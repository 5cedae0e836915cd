"""The last step of a search: rank the networks around the derived one, pick the best within the budget.

The threshold decisions settle on one network, steered by straight-through gradients that see one
path at a time. Around it lie networks the decisions nearly took: those within `radius` layer changes
(and every distinct network the decision window visited). Each is scored inside the trained supernet
(BatchNorm recalibrated per network, `nas.ranking`), optionally beside a training-free score
(`nas.proxies`), and the best one whose cost is within the budget is the winner. The supernet and the
proxy are combined by rank (the mean of each candidate's two ranks among the candidates), so neither
scale dominates. Every candidate's figures are recorded.

This is the "hybrid that ranks finalists by supernet and proxy" of the ground-truth harness
(`bench/bench_groundtruth.py`), where it is measured against the derived network alone.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from search_spaces import SKIP, SearchSpace

from .ranking import RankingImages, score_paths
from .superkernel import SuperNet


def neighbourhood(space: SearchSpace, choices: Sequence[str], radius: int) -> list[list[str]]:
    """Every network differing from `choices` in at most `radius` layers (`choices` first), each once."""
    out = [list(choices)]
    seen = {tuple(choices)}
    for r in range(1, radius + 1):
        for layers in itertools.combinations(range(len(choices)), r):
            alternatives = [[c for c in space.slots[li].choices if c != choices[li]] for li in layers]
            for picks in itertools.product(*alternatives):
                cand = list(choices)
                for li, c in zip(layers, picks):
                    cand[li] = c
                if tuple(cand) not in seen:
                    seen.add(tuple(cand))
                    out.append(cand)
    return out


def depth_of(choices: Sequence[str]) -> int:
    """Layers that are not skipped."""
    return sum(c != SKIP for c in choices)


def average_ranks(values: Sequence[float]) -> list[float]:
    """Average ranks, 1 = highest value."""
    order = sorted(range(len(values)), key=lambda i: -values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


@dataclass(frozen=True)
class Finalist:
    """One candidate: its choices, cost, supernet figures, proxy score and combined rank (1 = best)."""

    choices: tuple[str, ...]
    cost: float
    loss: float
    top1: float
    proxy: float | None
    rank: float

    def to_dict(self) -> dict[str, Any]:
        return {"choices": list(self.choices), "cost": self.cost, "supernet_loss": self.loss,
                "supernet_top1": self.top1, "proxy": self.proxy, "rank": self.rank}


def rank_finalists(net: SuperNet, candidates: Sequence[Sequence[str]], cost: Callable[[Sequence[str]], float],
                   budget: float, images: RankingImages, proxy: Callable[[Sequence[str]], float] | None = None,
                   batch_size: int = 256, depth: bool | str = False, supernet: bool = True) -> list[Finalist]:
    """Score the candidates whose cost is within `budget`; sorted best first. Each ranker orders the candidates
    (the supernet's held-out loss, lower better; the proxy's score, higher better; `depth=True` or `"then_cost"`:
    layers kept, then cost; `depth="layers"`: layers kept, networks of one depth tied, so the other rankers
    order them) and a candidate's rank is the mean of its ranks (ties: the costlier first).

    Why both depth forms: on NAS-Bench-Macro the layer count is a strong prior (tau 0.68 with the truth) and
    cost a weak one within a band (tau 0.1-0.2); breaking depth's ties by cost lets cost outvote NASWOT among
    networks of one depth, tying them leaves that order to NASWOT (docs/groundtruth.md)."""
    if depth not in (False, True, "then_cost", "layers"):
        raise ValueError(f"rank_finalists: depth={depth!r}; use False, True / 'then_cost' or 'layers'")
    fits = [list(c) for c in candidates if cost(c) <= budget]
    if not fits:
        return []
    columns = []
    scores = score_paths(net, fits, images, batch_size) if supernet else None
    if scores is not None:
        columns.append(average_ranks([-s.loss for s in scores]))
    many = getattr(proxy, "many", None)  # a batch scorer (NaswotOfChoices) scores all candidates in one pass
    prox = None if proxy is None else many(fits) if callable(many) else [proxy(c) for c in fits]
    if prox is not None:
        columns.append(average_ranks(prox))
    if depth == "layers":
        columns.append(average_ranks([float(depth_of(c)) for c in fits]))
    elif depth:
        columns.append(average_ranks([depth_of(c) * 1e6 + cost(c) for c in fits]))
    if not columns:
        raise ValueError("rank_finalists needs at least one ranker (the supernet, a proxy or depth)")
    ranks = [sum(col[i] for col in columns) / len(columns) for i in range(len(fits))]
    out = [Finalist(tuple(c), float(cost(c)), scores[i].loss if scores else float("nan"),
                    scores[i].top1 if scores else float("nan"), None if prox is None else prox[i], ranks[i])
           for i, c in enumerate(fits)]
    return sorted(out, key=lambda f: (f.rank, -f.cost))


def repair_to_budget(net: SuperNet, choices: Sequence[str], cost: Callable[[Sequence[str]], float], budget: float,
                     images: RankingImages, batch_size: int = 256, max_rounds: int = 64) -> tuple[list[str], int]:
    """A network within the budget near `choices`: while over it, take the single-layer change to a cheaper
    candidate whose network scores best inside the supernet (lowest held-out loss). Returns the network and
    the number of changes (0 when `choices` already fits). A search that ends over its budget (too few
    threshold steps, a budget below where the decisions settled) still yields a network that fits."""
    current = list(choices)
    rounds = 0
    while cost(current) > budget and rounds < max_rounds:
        here = cost(current)
        options = []
        for li, slot in enumerate(net.space.slots):
            for c in slot.choices:
                cand = current[:li] + [c] + current[li + 1:]
                if c != current[li] and cost(cand) < here:
                    options.append(cand)
        if not options:
            break
        scores = score_paths(net, options, images, batch_size)
        current = list(min(zip(options, scores), key=lambda p: p[1].loss)[0])
        rounds += 1
    return current, rounds


_NASWOT_MEMOS: "OrderedDict[tuple, dict[tuple[str, ...], float]]" = OrderedDict()
_NASWOT_MEMOS_KEPT = 8


class NaswotOfChoices:
    """NASWOT of the network a list of choices describes, memoised: `f(choices)` one, `f.many(list)` several
    over one prefix tree (`nas.proxies.naswot_scores`; `rank_finalists` asks for all its candidates at once)."""

    def __init__(self, space: SearchSpace, resolution: int, num_classes: int, x: torch.Tensor, seed: int,
                 width: float, memo: dict[tuple[str, ...], float]) -> None:
        self.space, self.resolution, self.num_classes, self.width = space, resolution, num_classes, width
        self.x, self.seed, self.memo = x, seed, memo

    def many(self, choices: Sequence[Sequence[str]]) -> list[float]:
        """The scores of every network in `choices`, the ones not in the memo computed together."""
        from .proxies import naswot_scores

        todo = list(dict.fromkeys(tuple(c) for c in choices if tuple(c) not in self.memo))
        if todo:
            archs = [self.space.decode(list(c), self.resolution, self.width, self.num_classes) for c in todo]
            self.memo.update(zip(todo, naswot_scores(archs, self.x, self.seed)))
        return [self.memo[tuple(c)] for c in choices]

    def __call__(self, choices: Sequence[str]) -> float:
        return self.many([choices])[0]


def naswot_of_choices(space: SearchSpace, resolution: int, num_classes: int, x: torch.Tensor, seed: int = 0,
                      width: float = 1.0) -> NaswotOfChoices:
    """A proxy for `rank_finalists`: NASWOT of the network `choices` describe (memoised).

    The memo is shared by every call with the same space, resolution, classes, width, seed and images (NASWOT
    is a pure function of them): searches of one seed for several budgets or phones in one process (the
    pipeline's, the ground-truth harness's) score a network their neighbourhoods share once."""
    xc = x.detach().cpu().contiguous()
    key = (json.dumps(space.to_dict(), sort_keys=True, default=str), resolution, num_classes, seed, width,
           tuple(xc.shape), str(xc.dtype), hashlib.sha256(xc.numpy().tobytes()).hexdigest())
    memo = _NASWOT_MEMOS.pop(key, None)
    if memo is None:
        memo = {}
    _NASWOT_MEMOS[key] = memo  # the most recent last
    while len(_NASWOT_MEMOS) > _NASWOT_MEMOS_KEPT:
        _NASWOT_MEMOS.popitem(last=False)
    return NaswotOfChoices(space, resolution, num_classes, x, seed, width, memo)
