"""The latency term of the search loss and the verdict on where a search landed (pure functions).

One device: R is the table's differentiable latency (`latency_tables.lookup.predictor.SpaceLatency`) and
the budget T is in ms. A fleet (`latency_tables.lookup.fleet.FleetLatency`): R is the fleet's normalised
cost (max or weighted sum of R_d / T_d) and the budget is 1.0. The loss forms are the same for both.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import torch

from latency_tables.lookup.predictor import SpaceLatency, predict_latency_ms
from latency_tables.lookup.table import LatencyTable
from nas.config import LossForm, SearchConfig
from search_spaces import reference
from spnas_core.errors import ConfigError


@runtime_checkable
class SearchCost(Protocol):
    """The cost term of the search: the extension point through which a search prices its decisions.

    Contract:
    - `expected(weights)` is R of the superkernel's option weights ([layers, candidates], the rows
      summing to one; `SuperNet.option_weights`) as a differentiable scalar tensor, in the cost's own
      unit (ms for one table, "x budget" for a fleet);
    - `of_choices(choices)` is the same cost for hard decisions (one option name per searchable
      layer): what `expected` gives for 0/1 weights;
    - `per_device_ms(choices)` is each device's predicted latency in ms, by device name (`names`).
    The budget the loss compares R with is returned beside the cost by `nas.search.build_cost`.
    Implementations: `TableCost` (one device's table) and `latency_tables.lookup.fleet.FleetLatency`
    (several devices, normalised by their budgets; it matches the protocol without importing nas).
    """

    names: list[str]

    def expected(self, weights: torch.Tensor) -> torch.Tensor: ...

    def of_choices(self, choices: Sequence[str]) -> float: ...

    def per_device_ms(self, choices: Sequence[str]) -> dict[str, float]: ...


class TableCost(SearchCost):
    """One device's latency as the search's cost: R in ms against a budget in ms."""

    unit = "ms"

    def __init__(self, latency: SpaceLatency, target_ms: float | None) -> None:
        self.latency, self.target = latency, target_ms
        self.names = [latency.table.device]

    def expected(self, weights: torch.Tensor) -> torch.Tensor:
        """R of the superkernel's option weights ([layers, candidates]; `SuperNet.option_weights`)."""
        return self.latency.expected(weights)

    def of_choices(self, choices: Sequence[str]) -> float:
        return self.latency.of_choices(choices)

    def per_device_ms(self, choices: Sequence[str]) -> dict[str, float]:
        return {self.names[0]: self.latency.of_choices(choices)}


def latency_loss(r_ms: torch.Tensor, form: LossForm, target_ms: float | None, smooth: float = 0.0) -> torch.Tensor:
    """The latency term (before lambda): log R, |log(R/T)|, or max(0, log(R/T)).

    With `smooth` > 0 the target forms are Huber-smoothed within +-smooth of the budget (quadratic in
    log(R/T) there): the pull towards T fades as R reaches it, instead of a constant push that makes the
    decisions chatter around the budget."""
    if form is LossForm.log:
        return torch.log(r_ms)
    if target_ms is None or target_ms <= 0:
        raise ConfigError(f"search.loss={form.name} needs search.target_ms > 0")
    ratio = torch.log(r_ms / target_ms)
    if form is LossForm.target_one_sided:
        ratio = torch.clamp(ratio, min=0)
    a = ratio.abs()
    if smooth > 0:
        return torch.where(a < smooth, 0.5 * a * a / smooth, a - 0.5 * smooth)
    return a


def resolve_target_ms(scfg: SearchConfig, table: LatencyTable, num_classes: int) -> float | None:
    """The budget T: `search.target_ms`, or a fraction of a reference net's latency on this table."""
    if scfg.target_ms is not None:
        return float(scfg.target_ms)
    if scfg.loss is LossForm.log or scfg.target_fraction_of is None:
        return None
    ref = reference(scfg.target_fraction_of.arch, resolution=scfg.latency_resolution, num_classes=num_classes)
    return float(scfg.target_fraction_of.fraction) * predict_latency_ms(ref, table)


CEILING_SLACK = 0.15  # a ceiling search that ends more than 15% below its budget has left budget unused


def target_verdict(target_ms: float | None, predicted_ms: float, tolerance: float, choices: list[str],
                   smallest_ms: float, largest_ms: float, window_flips: int, lam: float,
                   unit: str = "ms", ceiling: bool = False, loss: str | None = None) -> dict[str, Any]:
    """Did the search land within `tolerance` of its budget? If not, the reason a user can act on (the
    advice depends on the loss form `loss` in use: `loss=target` is not suggested to a search that has it).

    With `ceiling` (loss=target_one_sided) the budget is a ceiling, not a point: anything within it up to
    `tolerance` above it lands; only a network below the budget by more than CEILING_SLACK has left budget
    unused (in a discrete space the next network up may not fit, so being somewhat below is no miss)."""
    if target_ms is None:
        return {"target_ms": None, "predicted_ms": predicted_ms, "met": None,
                "reason": "no latency budget (loss=log): the latency term only pushes down"}
    off = predicted_ms / target_ms - 1
    met = -CEILING_SLACK <= off <= tolerance if ceiling else abs(off) <= tolerance
    out = {"target_ms": target_ms, "predicted_ms": predicted_ms, "off_pct": 100 * off,
           "tolerance_pct": 100 * tolerance, "met": met, "ceiling": ceiling}
    if out["met"]:
        out["reason"] = (f"landed {100 * off:+.1f}% from the budget" + (" (a ceiling: within it)" if ceiling and off <= 0
                                                                         else ""))
    elif target_ms < smallest_ms * (1 - tolerance):
        out["reason"] = (f"the budget {target_ms:.3g} {unit} is below the smallest network of the space on this "
                         f"table ({smallest_ms:.3g} {unit}): raise the budget")
    elif target_ms > largest_ms * (1 + tolerance):
        out["reason"] = (f"the budget {target_ms:.3g} {unit} is above the largest network of the space on this "
                         f"table ({largest_ms:.3g} {unit}): every layer can take its largest choice")
    elif window_flips > 0:
        out["reason"] = (f"decisions were still changing in the last epoch ({window_flips} flips): give the search "
                         f"more steps (search.steps)")
    elif off > 0:
        out["reason"] = (f"ended {100 * off:+.1f}% above the budget: the accuracy term outweighed the latency term "
                         f"(latency_lambda {lam:g}); raise search.latency_lambda or search.steps")
    else:
        fix = ("lower search.latency_lambda" if loss == "target" else
               "use search.loss=target (it settles at the budget), or lower search.latency_lambda")
        out["reason"] = (f"ended {100 * off:+.1f}% below the budget: the latency term pushed past it "
                         f"(latency_lambda {lam:g}); {fix}")
    return out
