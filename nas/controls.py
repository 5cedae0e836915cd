"""The controls a search result is judged against (docs/design.md, "Evidence").

A winner is evidence about the search only beside networks of the same cost that the search did not
choose: architectures drawn uniformly from the same space at the winner's predicted latency (random
search's answer at that budget; Li & Talwalkar 2019, Yang et al. 2020), and the reference nets
width-scaled to that latency (what a practitioner would ship without searching). Both are pure
functions of the space, the cost (one table, or a fleet's normalised cost) and seeds.

The random controls are a sample: each of a winner's `controls.random` nets is drawn with its own seed,
derived from the run's seed, the winner (its name and architecture) and the draw's index
(`control_seed`), so another run, or another winner, draws other nets, and the seeds are recorded.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from search_spaces import ArchSpec, SearchSpace
from nas.config import ControlsConfig
from search_spaces.reference import REFERENCE_NETS
from spnas_core.errors import ArchSpecError, ConfigError, TableError

Cost = Callable[[ArchSpec], float]  # an architecture (at the deployment resolution) -> ms, or x budget for a fleet


@dataclass(frozen=True)
class RandomDraw:
    """Random architectures at a target cost: what was accepted and how many draws it took."""

    archs: list[ArchSpec]
    costs: list[float]
    target: float
    tolerance: float
    draws: int
    seed: int
    choices: list[list[str]] = field(default_factory=list)
    note: str = ""  # why fewer than asked were found

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "tolerance": self.tolerance, "draws": self.draws, "seed": self.seed,
                "note": self.note,
                "accepted": len(self.archs), "acceptance_rate": len(self.archs) / max(1, self.draws),
                "costs": self.costs, "choices": self.choices, "arch_strings": [a.to_string() for a in self.archs]}


def sample_at_cost(space: SearchSpace, cost_of_choices: Callable[[Sequence[str]], float], target: float, n: int,
                   seed: int, tolerance: float = 0.02, resolution: int = 224, width: float = 1.0,
                   num_classes: int = 1000, max_draws: int = 500_000, exclude: Sequence[Sequence[str]] = (),
                   strict: bool = True) -> RandomDraw:
    """`n` architectures drawn uniformly from `space` (each layer's choice uniform and independent) whose
    cost is within +-`tolerance` of `target` (seeded rejection sampling). `cost_of_choices` prices one
    choice per layer (e.g. `SpaceLatency.of_choices`, microseconds per draw). `exclude` (the winner's
    choices) is never accepted. When `max_draws` cannot fill the band (a target in the tail of the space's
    latency distribution, e.g. a winner that kept every layer at its largest choice), `strict` raises;
    otherwise the draws found are returned and `note` says why there are fewer."""
    if n < 0 or not 0 < tolerance < 1:
        raise ConfigError(f"controls: n={n} must be >= 0 and tolerance={tolerance} between 0 and 1")
    rng = random.Random(seed)
    skip = {tuple(c) for c in exclude}
    lo, hi = target * (1 - tolerance), target * (1 + tolerance)
    picked: list[list[str]] = []
    costs: list[float] = []
    draws = 0
    while len(picked) < n:
        if draws >= max_draws:
            if not strict:
                note = (f"only {len(picked)} of {n} random architectures fell within +-{100 * tolerance:.0f}% of "
                        f"{target:.4g} in {draws} draws (the target is in the tail of the space's latency distribution)")
                break
            raise TableError(f"only {len(picked)} of {n} random architectures of space '{space.name}' fell within "
                             f"+-{100 * tolerance:.0f}% of {target:.4g} in {draws} draws: the target is in the tail of "
                             f"the space's latency distribution; widen controls.tolerance or lower controls.random")
        choices = [rng.choice(s.choices) for s in space.slots]
        draws += 1
        c = cost_of_choices(choices)
        if lo <= c <= hi and tuple(choices) not in skip:
            picked.append(choices)
            costs.append(float(c))
            skip.add(tuple(choices))
    else:
        note = ""
    archs = [space.decode(c, resolution, width, num_classes, name=f"random-{i}") for i, c in enumerate(picked)]
    return RandomDraw(archs, costs, float(target), tolerance, draws, seed, picked, note)


@dataclass(frozen=True)
class ScaledReference:
    """A reference net at the width whose cost is nearest the target."""

    arch: ArchSpec
    name: str
    width: float
    cost: float
    target: float
    within: bool
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "width": self.width, "cost": self.cost,
                "target": self.target, "off_pct": 100 * (self.cost / self.target - 1), "within": self.within,
                "note": self.note, "arch_string": self.arch.to_string()}


def scale_reference(reference: str, cost: Cost, target: float, tolerance: float = 0.02, resolution: int = 224,
                    num_classes: int = 1000, lo: float = 0.1, hi: float = 2.0, iters: int = 40) -> ScaledReference:
    """The width multiplier at which `reference` costs `target`, found by bisection on the width.

    Channels round as the reference does (`make_divisible(c * width, 8)`), so cost is a step function of
    the width: bisection brackets the step that crosses the target, and the nearer of its two sides is
    kept. Within +-`tolerance` is the goal; when channel rounding allows no width that close, the nearest
    is returned and `note` says so."""
    make = REFERENCE_NETS.get(reference)
    if make is None:
        raise ConfigError(f"unknown reference net '{reference}'; known: {', '.join(REFERENCE_NETS)}")

    def at(w: float) -> tuple[ArchSpec, float]:
        a = make(resolution=resolution, width=w, num_classes=num_classes)
        return a, float(cost(a))

    a_lo, c_lo = at(lo)
    a_hi, c_hi = at(hi)
    if not c_lo <= target <= c_hi:
        w, (a, c) = (lo, (a_lo, c_lo)) if target < c_lo else (hi, (a_hi, c_hi))
        return _scaled(reference, a, w, c, target, tolerance,
                       f"the target lies outside widths {lo}..{hi} ({c_lo:.4g}..{c_hi:.4g}): nearest width {w}")
    for _ in range(iters):
        mid = (lo + hi) / 2
        a_mid, c_mid = at(mid)
        if c_mid < target:
            lo, a_lo, c_lo = mid, a_mid, c_mid
        else:
            hi, a_hi, c_hi = mid, a_mid, c_mid
        if _channels(a_lo) == _channels(a_hi) or hi - lo < 1e-4:
            break
    gap = (lo, c_lo, hi, c_hi)
    w, a, c = (lo, a_lo, c_lo) if abs(c_lo - target) <= abs(c_hi - target) else (hi, a_hi, c_hi)
    w = _round_width(w, make, resolution, num_classes, a)
    a = make(resolution=resolution, width=w, num_classes=num_classes)  # the same channels, a readable width
    within = abs(c / target - 1) <= tolerance
    where = (f"at width {gap[0]:.3f}" if f"{gap[0]:.3f}" == f"{gap[2]:.3f}"
             else f"between widths {gap[0]:.3f} and {gap[2]:.3f}")
    note = "" if within else (f"channel rounding allows no width within +-{100 * tolerance:.0f}%: {where} "
                              f"the cost jumps from {gap[1]:.4g} to {gap[3]:.4g} "
                              f"(channels round to multiples of 8); the nearest is {100 * (c / target - 1):+.1f}% "
                              f"(width {w:g})")
    return _scaled(reference, a, w, c, target, tolerance, note)


def _scaled(reference: str, arch: ArchSpec, w: float, c: float, target: float, tolerance: float,
            note: str) -> ScaledReference:
    name = f"{reference}-w{w:g}"
    return ScaledReference(arch.replace(name=name), name, w, c, target, abs(c / target - 1) <= tolerance, note)


def _channels(arch: ArchSpec) -> tuple[int, ...]:
    return tuple((layer.cout, layer.mid) for layer in arch.resolve())


def _round_width(w: float, make: Callable[..., ArchSpec], resolution: int, num_classes: int, arch: ArchSpec) -> float:
    """The shortest decimal width (2 to 5 places) that builds the same channels, so names read
    `mobilenet_v2-w0.78` rather than a bisection's 17 digits."""
    want = _channels(arch)
    for places in (2, 3, 4, 5):
        scale = 10 ** places
        for r in (round(w, places), math.floor(w * scale) / scale, math.ceil(w * scale) / scale):
            if r > 0 and _channels(make(resolution=resolution, width=r, num_classes=num_classes)) == want:
                return r
    return w


def width_family(reference: str, widths: Sequence[float], resolution: int = 224,
                 num_classes: int = 1000) -> list[ArchSpec]:
    """A reference net at fixed widths (named `<reference>-w<width>`): the family curve beside the scaled nets."""
    make = REFERENCE_NETS[reference]
    out = []
    for w in widths:
        if not math.isfinite(w) or w <= 0:
            raise ArchSpecError(f"reference width {w} must be > 0")
        out.append(make(resolution=resolution, width=float(w), num_classes=num_classes).replace(
            name=f"{reference}-w{float(w):g}"))
    return out




def control_seed(run_seed: int, controls_seed: int, winner: str, winner_choices: Sequence[str], index: int) -> int:
    """The seed of a winner's `index`-th random control: a hash of the run's seed, `controls.seed`, the
    winner's name and architecture, and the index (63 bits). The same run draws the same nets again (its
    stages stay cached); another run seed, another winner, or another draw of the same winner gets
    independent ones."""
    key = f"{run_seed}/{controls_seed}/{winner}/{'-'.join(winner_choices)}/{index}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") >> 1


def draw_controls(space: SearchSpace, cost_of_choices: Callable[[Sequence[str]], float], target: float,
                  seeds: Sequence[int], tolerance: float = 0.02, resolution: int = 224, width: float = 1.0,
                  num_classes: int = 1000, exclude: Sequence[Sequence[str]] = (),
                  max_draws: int = 200_000) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One architecture per seed, each drawn uniformly from `space` within +-`tolerance` of `target` by its
    own seeded rejection sampling (never one in `exclude`, never one drawn before). Returns each net (its
    seed, the draws it took, cost, choices) and what the whole draw took; a seed whose band `max_draws`
    cannot fill gives no net and `note` says so."""
    picked: list[dict[str, Any]] = []
    skip = [list(c) for c in exclude]
    total, missed = 0, []
    for seed in seeds:
        d = sample_at_cost(space, cost_of_choices, target, 1, seed, tolerance, resolution, width, num_classes,
                           max_draws=max_draws, exclude=skip, strict=False)
        total += d.draws
        if not d.archs:
            missed.append(seed)
            continue
        skip.append(d.choices[0])
        picked.append({"arch": d.archs[0], "cost": d.costs[0], "choices": d.choices[0], "seed": seed,
                       "draws": d.draws})
    note = "" if not missed else (
        f"{len(missed)} of {len(seeds)} random draws found no architecture within +-{100 * tolerance:g}% of "
        f"{target:.4g} in {max_draws} tries each (the target is in the tail of the space's latency distribution)")
    summary = {"target": float(target), "tolerance": tolerance, "draws": total, "seeds": list(seeds),
               "missed_seeds": missed, "accepted": len(picked), "acceptance_rate": len(picked) / max(1, total),
               "note": note}
    return picked, summary


def choose_controls(controls: ControlsConfig, space: SearchSpace, cost_of_choices: Callable[[Sequence[str]], float],
                    cost: Cost, target: float, winner_choices: Sequence[str], baselines: Sequence[str], name: str,
                    resolution: int = 224, width: float = 1.0, num_classes: int = 1000,
                    run_seed: int = 0) -> dict[str, Any]:
    """A winner's controls, as data (recorded in the run): `controls.random` nets of the space within
    +-`controls.tolerance` of `target` (never the winner itself), each drawn with its own seed derived from
    `run_seed` (`control_seed`), and each baseline width-scaled to it (when `controls.scale_baselines`)."""
    seeds = [control_seed(run_seed, controls.seed, name, winner_choices, i) for i in range(controls.random)]
    nets, draw = draw_controls(space, cost_of_choices, target, seeds, controls.tolerance, resolution, width,
                               num_classes, exclude=[list(winner_choices)])
    draw["run_seed"] = run_seed
    random_nets = [{"name": f"random-{name}-{i}", "arch_string": n["arch"].to_string(), "cost": n["cost"],
                    "choices": n["choices"], "seed": n["seed"], "draws": n["draws"], "target": target,
                    "off_pct": 100 * (n["cost"] / target - 1)} for i, n in enumerate(nets)]
    scaled, unscaled = [], []
    if controls.scale_baselines:
        for b in baselines:
            try:
                s = scale_reference(b, cost, target, controls.tolerance, resolution, num_classes)
            except TableError as e:  # a measured table holds the widths it was profiled for, no others
                unscaled.append({"reference": b, "note": f"no width-scaled {b}: {e.one_line()}"})
                continue
            scaled.append({**s.to_dict(), "reference": b})
    return {"winner": name, "target": target, "tolerance": controls.tolerance, "random": random_nets,
            "draw": draw, "scaled": scaled, "unscaled": unscaled}
