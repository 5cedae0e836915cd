"""What a searchable layer may become, and how one single-path superkernel encodes it.

A space's candidates are inverted residuals named `k<kernel>_e<expansion>` (plus `skip`). The
Single-Path NAS superkernel holds one depthwise kernel of the largest size over the largest
expansion's channels; every smaller candidate is a subset of its weights (the inner kxk window,
the first channels). A candidate is chosen by a ladder of threshold decisions, each switching on
the next slice of weights:

- `grid`: every kernel with every expansion (`k3_e3 k3_e6 k5_e3 k5_e6`, the paper's space): one
  ladder of kernel rings (`kernel`, `kernel2`, ...) and one of channel groups (`expand`, ...),
  decided independently;
- `chain`: candidates that grow in kernel and expansion together (`k3_e3 k5_e6`, NAS-Bench-Macro):
  one ladder (`grow`, `grow2`, ...) whose step j switches on the ring and the channels candidate
  j adds;
- `keep`, where the layer may be skipped: the first channel group's weights against a threshold.

What skipping means is the slot's (`SkipKind`): the identity where the shape is unchanged, a 1x1
convolution + BN (`proj`) where a stage's first layer changes stride and channels, or not allowed.
Any other candidate set cannot be one single path and is refused, naming the candidates.

This module is the one place that knows the candidate set's structure: the superkernel, the
differentiable cost and the plots ask it (`ChoiceSet.of`), and `option_weights` turns a layer's
0/1 decisions into weights over its candidates (exactly one is 1 for hard decisions).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping, Sequence, TypeVar

from spnas_core.errors import ArchSpecError

SKIP = "skip"
T = TypeVar("T")


class SkipKind(enum.Enum):
    """What `skip` means at a searchable layer."""

    none = "the layer cannot be skipped"
    identity = "the input unchanged (stride 1, channels unchanged)"
    projection = "a 1x1 convolution + BN with the layer's stride and channels (the shape changes)"


def parse_choice(choice: str) -> tuple[int, int]:
    """'k5_e6' -> (5, 6)."""
    try:
        k, e = choice.split("_")
        assert k[0] == "k" and e[0] == "e"
        return int(k[1:]), int(e[1:])
    except (ValueError, AssertionError, IndexError):
        raise ArchSpecError(f"layer choice '{choice}' is not of the form k<kernel>_e<expansion>") from None


def choice_name(kernel: int, expansion: int) -> str:
    return f"k{kernel}_e{expansion}"


@dataclass(frozen=True)
class Step:
    """One threshold decision of the ladder: its name (the threshold is `t_<name>`) and what it switches on:
    the kernel ring from `kernel_from` to `kernel_to` and/or the channels of expansion `expand_from` to
    `expand_to` (a grid step moves one axis, a chain step may move both)."""

    name: str
    kernel_from: int
    kernel_to: int
    expand_from: int
    expand_to: int


@dataclass(frozen=True)
class ChoiceSet:
    """A space's candidate set (no `skip`): its kernels, expansions, structure and decision ladder."""

    options: tuple[str, ...]  # by kernel, then expansion (a chain: small to large)
    kernels: tuple[int, ...]
    expansions: tuple[int, ...]
    structure: str  # grid | chain
    steps: tuple[Step, ...]

    @staticmethod
    @lru_cache(maxsize=64)
    def of(choices: tuple[str, ...]) -> "ChoiceSet":
        """The structure of a candidate list; an error naming the candidates where it is no single path."""
        if not choices:
            raise ArchSpecError("a search space needs at least one layer choice (e.g. k3_e3)")
        if SKIP in choices:
            raise ArchSpecError("'skip' is not a layer choice of its own: it is decided per slot (the space's "
                                "allow_skip / first_skip)")
        if len(set(choices)) != len(choices):
            raise ArchSpecError(f"layer choices {list(choices)} repeat a candidate")
        pairs = sorted(parse_choice(c) for c in choices)
        ks = tuple(sorted({k for k, _ in pairs}))
        es = tuple(sorted({e for _, e in pairs}))
        for k in ks:
            if k % 2 == 0:
                raise ArchSpecError(f"layer choice kernel {k} must be odd (the inner window sits at the centre)")
        options = tuple(choice_name(k, e) for k, e in pairs)
        if len(pairs) == len(ks) * len(es):
            steps = tuple(Step(_ladder_name("kernel", i), ks[i - 1], ks[i], es[0], es[0]) for i in range(1, len(ks)))
            steps += tuple(Step(_ladder_name("expand", i), ks[0], ks[0], es[i - 1], es[i]) for i in range(1, len(es)))
            return ChoiceSet(options, ks, es, "grid", steps)
        if all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(pairs, pairs[1:])):
            steps = tuple(Step(_ladder_name("grow", i), pairs[i - 1][0], pairs[i][0], pairs[i - 1][1], pairs[i][1])
                          for i in range(1, len(pairs)))
            return ChoiceSet(options, ks, es, "chain", steps)
        raise ArchSpecError(
            f"layer choices {list(choices)} cannot share one single-path superkernel: use every kernel with every "
            f"expansion (a grid, e.g. k3_e3 k3_e6 k5_e3 k5_e6) or candidates that grow in both together (a chain, "
            f"e.g. k3_e3 k5_e6)")

    @property
    def largest(self) -> str:
        """The candidate holding every weight of the superkernel (largest kernel and expansion)."""
        return self.options[-1]

    @property
    def smallest(self) -> str:
        return self.options[0]

    def step_names(self, skippable: bool) -> tuple[str, ...]:
        """The decisions of a layer, in order: `keep` first where it may be skipped, then the ladder."""
        return (("keep",) if skippable else ()) + tuple(s.name for s in self.steps)

    # ------------------------------------------------------------------ decisions <-> candidates
    def levels(self, choice: str) -> tuple[int, int]:
        """(kernel level, expansion level) of a candidate: indices into `kernels` and `expansions`."""
        k, e = parse_choice(choice)
        return self.kernels.index(k), self.expansions.index(e)

    def decisions_for(self, choice: str, skippable: bool) -> dict[str, float]:
        """The 0/1 value of every decision that makes a layer `choice` (decisions past a 0 are set to 0)."""
        names = self.step_names(skippable)
        if choice == SKIP:
            if not skippable:
                raise ArchSpecError("this layer cannot be skipped")
            return {n: 0.0 for n in names}
        if choice not in self.options:
            raise ArchSpecError(f"'{choice}' is not one of the layer choices {', '.join(self.options)}")
        out = {"keep": 1.0} if skippable else {}
        if self.structure == "grid":
            ki, ei = self.levels(choice)
            for i in range(1, len(self.kernels)):
                out[_ladder_name("kernel", i)] = float(i <= ki)
            for i in range(1, len(self.expansions)):
                out[_ladder_name("expand", i)] = float(i <= ei)
        else:
            at = self.options.index(choice)
            for i in range(1, len(self.options)):
                out[_ladder_name("grow", i)] = float(i <= at)
        return out

    def choice_of(self, decisions: Mapping[str, float], skippable: bool) -> str:
        """The candidate hard decisions describe (a decision counts as on above 0.5)."""
        if skippable and decisions["keep"] < 0.5:
            return SKIP
        if self.structure == "grid":
            ki = _climb(decisions, "kernel", len(self.kernels))
            ei = _climb(decisions, "expand", len(self.expansions))
            return choice_name(self.kernels[ki], self.expansions[ei])
        return self.options[_climb(decisions, "grow", len(self.options))]

    def option_weights(self, decisions: Mapping[str, T], skippable: bool, one: T) -> list[T]:
        """Weights over `options + (skip,)` (skip last) as products of the decisions: keep x P(level).

        P(level i) = d_1 ... d_i (1 - d_{i+1}) along a ladder; a grid multiplies its two ladders. With hard
        0/1 decisions exactly one weight is 1; with straight-through decisions the weights carry gradients,
        which is what makes a cost table differentiable (`latency_tables.lookup.predictor.SpaceLatency`).
        Works on floats and on tensors (`one` is the 1 of that type)."""
        keep = decisions["keep"] if skippable else one
        if self.structure == "grid":
            pk = _ladder_probs(decisions, "kernel", len(self.kernels), one)
            pe = _ladder_probs(decisions, "expand", len(self.expansions), one)
            body = [keep * pk[self.kernels.index(k)] * pe[self.expansions.index(e)]  # type: ignore[operator]
                    for k, e in (parse_choice(c) for c in self.options)]
        else:
            p = _ladder_probs(decisions, "grow", len(self.options), one)
            body = [keep * q for q in p]  # type: ignore[operator]
        return body + [one - keep]  # type: ignore[operator]


def _ladder_name(axis: str, i: int) -> str:
    return axis if i == 1 else f"{axis}{i}"


def _climb(decisions: Mapping[str, float], axis: str, n: int) -> int:
    level = 0
    for i in range(1, n):
        if float(decisions[_ladder_name(axis, i)]) < 0.5:
            break
        level = i
    return level


def _ladder_probs(decisions: Mapping[str, T], axis: str, n: int, one: T) -> list[T]:
    """[P(level 0), ..., P(level n-1)] from the step decisions d_1..d_{n-1}."""
    out: list[T] = []
    reach = one
    for i in range(1, n):
        d = decisions[_ladder_name(axis, i)]
        out.append(reach * (one - d))  # type: ignore[operator]
        reach = reach * d  # type: ignore[operator]
    out.append(reach)
    return out


def option_order(choices: Sequence[str]) -> tuple[str, ...]:
    """Every candidate of a space small to large, then `skip`: the display and cost-table order."""
    return ChoiceSet.of(tuple(choices)).options + (SKIP,)
