"""One latency term for a fleet of phones: a product ships one model to many SoCs.

Each device d has its table's differentiable latency R_d (`SpaceLatency`) and its budget T_d. The
fleet's cost is normalised by the budgets, so 1.0 means "at budget":

- `max`: max_d R_d / T_d (the slowest phone, relative to its budget, decides);
- `weighted`: sum_d w_d R_d / T_d with sum_d w_d = 1 (e.g. market shares).

Both are as differentiable as one table's R (the max routes its gradient through the device that is
furthest over its budget, and every device's R depends on every layer's indicators).
"""

from __future__ import annotations

from typing import Sequence

import torch

from spnas_core.errors import ConfigError

from latency_tables.lookup.predictor import SpaceLatency

OBJECTIVES = ("max", "weighted")


class FleetLatency:
    """The normalised cost over several devices' tables of one search space."""

    def __init__(self, latencies: Sequence[SpaceLatency], budgets_ms: Sequence[float], objective: str = "max",
                 weights: Sequence[float] | None = None, names: Sequence[str] | None = None) -> None:
        if len(latencies) < 2:
            raise ConfigError("a fleet needs at least two devices' tables (search.fleet=[sd845, sd808, ...])")
        if len(budgets_ms) != len(latencies) or any(b <= 0 for b in budgets_ms):
            raise ConfigError("a fleet needs one positive latency budget per device")
        if objective not in OBJECTIVES:
            raise ConfigError(f"search.fleet_objective={objective}: use max or weighted")
        w = [1.0] * len(latencies) if weights is None else [float(x) for x in weights]
        if len(w) != len(latencies) or any(x < 0 for x in w) or sum(w) <= 0:
            raise ConfigError(f"search.fleet_weights={list(weights or [])}: one non-negative weight per device "
                              f"({len(latencies)}), not all zero")
        self.latencies = list(latencies)
        self.budgets_ms = [float(b) for b in budgets_ms]
        self.objective = objective
        self.weights = [x / sum(w) for x in w]
        self.names = list(names or [lat.table.device for lat in latencies])

    def expected(self, weights: torch.Tensor) -> torch.Tensor:
        """The fleet cost of the superkernel's option weights ([layers, candidates]; a scalar tensor, 1.0 = every
        device at its budget)."""
        ratios = torch.stack([lat.expected(weights) / b for lat, b in zip(self.latencies, self.budgets_ms)])
        if self.objective == "max":
            return ratios.max()
        return (ratios * torch.as_tensor(self.weights, dtype=ratios.dtype, device=ratios.device)).sum()

    def per_device_ms(self, choices: Sequence[str]) -> dict[str, float]:
        """Each device's predicted latency of one choice per layer."""
        return {n: lat.of_choices(choices) for n, lat in zip(self.names, self.latencies)}

    def of_choices(self, choices: Sequence[str]) -> float:
        """The fleet cost of hard decisions (what `expected` gives for 0/1 indicators)."""
        ratios = [lat.of_choices(choices) / b for lat, b in zip(self.latencies, self.budgets_ms)]
        if self.objective == "max":
            return max(ratios)
        return sum(w * r for w, r in zip(self.weights, ratios))

    def of_ms(self, ms_by_device: dict[str, float]) -> float:
        """The fleet cost of an architecture priced on every device (any network, not only the space's)."""
        ratios = [ms_by_device[n] / b for n, b in zip(self.names, self.budgets_ms)]
        return max(ratios) if self.objective == "max" else sum(w * r for w, r in zip(self.weights, ratios))

    def describe(self) -> dict[str, object]:
        return {"objective": self.objective, "devices": self.names, "budgets_ms": self.budgets_ms,
                "weights": self.weights}
