"""The covering design: the fewest whole networks that contain every op key of a table `k` times.

A table built from whole-network profiles (benchmark_model's op profiling, Qualcomm AI Hub) reads
each key's time out of the networks that contain it; this module picks those networks.

Each network of a space holds one choice per searchable layer. Layers whose keys are the same
(the layers after the first of a stage: same shape, stride 1) form a *group*: one network can show
up to `len(group)` distinct choices of it, a group of one layer only one. So a group with `c`
choices and `s` layers needs at least `max(k, ceil(k * c / min(s, c)))` networks, and the largest
of these bounds (with the classifier as a group of one for the class counts asked for) is reached:
each group's choices are laid out cyclically, `k` rounds, and cut into networks of `min(s, c)`
distinct choices. Keys the space cannot express (the reference nets' own layers) come from the
reference networks themselves, each profiled once per class count its classifier keys need.
Every design is checked against the keys the networks really contain (`ops_of`).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from search_spaces import SKIP, ArchSpec, SearchSpace
from search_spaces.reference import REFERENCE_NETS
from spnas_core.errors import TableError

from latency_tables.lookup.keys import ops_of


@dataclass
class CoveringDesign:
    """The networks to profile, and how often each key appears among them."""

    networks: list[ArchSpec]
    k: int
    coverage: dict[str, int] = field(default_factory=dict)  # key -> networks containing it
    reference_keys: list[str] = field(default_factory=list)  # keys only the reference nets give (covered once)
    lower_bound: int = 0  # fewest space networks any design needs for this k

    @property
    def space_networks(self) -> int:
        return sum(1 for a in self.networks if not a.name.startswith("ref-"))

    def uncovered(self, keys: Iterable[str]) -> list[str]:
        return sorted(k for k in keys if self.coverage.get(k, 0) == 0)

    def summary(self) -> dict[str, object]:
        counts = Counter(self.coverage.values())
        return {"networks": len(self.networks), "space_networks": self.space_networks,
                "reference_networks": len(self.networks) - self.space_networks, "k": self.k,
                "lower_bound_space_networks": self.lower_bound, "keys": len(self.coverage),
                "coverage_histogram": {str(n): c for n, c in sorted(counts.items())},
                "names": [a.name for a in self.networks]}


def coverage_of(networks: Sequence[ArchSpec]) -> dict[str, int]:
    """Key -> number of networks that contain it (a key twice in one network counts once)."""
    c: Counter[str] = Counter()
    for a in networks:
        c.update({op.key for op in ops_of(a)})
    return dict(c)


def _slot_groups(space: SearchSpace, resolution: int, width: float) -> list[list[int]]:
    """Searchable layers grouped by the keys their choices give (identical key sets: one group)."""
    base = [space.choices[0]] * space.num_layers
    by_keys: dict[tuple[str, ...], list[int]] = {}
    for s in space.slots:
        keys = []
        for c in space.choices:
            arch = space.decode(base[:s.index] + [c] + base[s.index + 1:], resolution, width)
            keys.append(next(op.key for op in ops_of(arch) if op.block_index == s.block_index))
        by_keys.setdefault(tuple(keys), []).append(s.index)
    return list(by_keys.values())


def lower_bound(space: SearchSpace, k: int, n_classes: int = 1, resolution: int = 224, width: float = 1.0) -> int:
    """Fewest networks of one resolution that contain every choice key of `space` (and each of
    `n_classes` classifiers) in `k` distinct networks."""
    c = len(space.choices)
    bounds = [max(k, math.ceil(k * c / min(len(g), c))) for g in _slot_groups(space, resolution, width)]
    bounds.append(k * n_classes)
    return max(bounds)


def space_cover(space: SearchSpace, k: int = 2, resolution: int = 224, classes: Sequence[int] = (1000,),
                width: float = 1.0, prefix: str = "cover") -> list[ArchSpec]:
    """Networks of `space` at one resolution containing every choice key and every classifier of
    `classes` in at least `k` distinct networks; as few as `lower_bound` says any design needs."""
    if k < 1:
        raise TableError(f"covering k={k}: every key must appear at least once (k >= 1)")
    c = len(space.choices)
    n = lower_bound(space, k, len(classes), resolution, width)
    choices = [[SKIP if s.skippable else space.choices[0] for s in space.slots] for _ in range(n)]
    for g in _slot_groups(space, resolution, width):
        per_net = min(len(g), c)
        seq = [space.choices[j % c] for j in range(k * c)]
        for j, choice in enumerate(seq):
            net, pos = divmod(j, per_net)
            choices[net][g[pos]] = choice
    cls = [classes[j % len(classes)] for j in range(n)]
    return [space.decode(ch, resolution, width, cls[j], name=f"{prefix}-{resolution}-{j:02d}")
            for j, ch in enumerate(choices)]


def design(space: SearchSpace, keys: Iterable[str], k: int = 2, resolutions: Sequence[int] = (224,),
           classes: Sequence[int] = (1000,), width: float = 1.0) -> CoveringDesign:
    """The whole networks to profile for a table with `keys`: the space's covering networks at each
    resolution, then the reference nets for keys the space cannot express (each once per class
    count its classifier keys need). Raises when a key is covered by none of them."""
    keys = sorted(set(keys))
    nets: list[ArchSpec] = []
    for r in resolutions:
        nets += space_cover(space, k, r, classes, width)
    have = coverage_of(nets)
    rest = [key for key in keys if key not in have]
    ref_keys: list[str] = []
    for r in resolutions:
        for name, make in REFERENCE_NETS.items():
            for j, n in enumerate(classes):
                arch = make(resolution=r, num_classes=n)
                own = {op.key for op in ops_of(arch)}
                needed = own & set(rest) - set(coverage_of(nets))
                if needed and (j == 0 or any(x.startswith("Logits-") for x in needed)):
                    nets.append(arch.replace(name=f"ref-{name}-{r}-{n}"))
                    ref_keys += sorted(needed)
    cov = coverage_of(nets)
    missing = [key for key in keys if key not in cov]
    if missing:
        raise TableError(f"no network of space '{space.name}' or the reference nets contains {len(missing)} key(s), "
                         f"e.g. {missing[0]}; such keys can only be measured as micro-models (spnas-profile)")
    lb = len(resolutions) * lower_bound(space, k, len(classes), resolutions[0], width)
    return CoveringDesign(nets, k, {key: cov[key] for key in keys}, sorted(set(ref_keys)), lb)


def brute_force_minimum(space: SearchSpace, keys: Iterable[str], k: int, resolution: int, max_n: int = 6,
                        num_classes: int = 1000) -> int | None:
    """The fewest networks covering `keys` k times, by exhaustive search over multisets of the space's
    networks (small spaces only: the check that `space_cover` is minimal)."""
    import itertools

    keys = set(keys)
    archs = [space.decode(list(ch), resolution, 1.0, num_classes)
             for ch in itertools.product(*[s.choices for s in space.slots])]
    sets = [frozenset(op.key for op in ops_of(a)) for a in archs]
    sets = list(dict.fromkeys(sets))
    for n in range(1, max_n + 1):
        for combo in itertools.combinations(range(len(sets)), n):
            cnt: Counter[str] = Counter()
            for i in combo:
                cnt.update(sets[i])
            if all(cnt[key] >= k for key in keys):
                return n
    return None
