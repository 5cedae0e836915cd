"""Latency prediction from a table: the sum of an architecture's op rows plus a fitted constant,
and the differentiable form the Single-Path NAS search uses."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from search_spaces import ArchSpec, SearchSpace
from spnas_core.errors import TableError

from latency_tables.lookup.keys import ops_of
from latency_tables.lookup.table import LatencyTable


def predict_latency_ms(arch: ArchSpec, table: LatencyTable) -> float:
    """Predicted end-to-end latency (ms): `table.predict(arch)`, the sum of the arch's cost rows + the
    table's fitted overhead."""
    return table.predict(arch)


def latency_breakdown(arch: ArchSpec, table: LatencyTable) -> list[dict[str, Any]]:
    """Per-term rows of a prediction (block index, block string, key, ms, source), for reports and plots.

    `source` is `table` (a row), `model` (computed on demand), `estimate` or `group` (one figure for
    several ops; its `block_index` is None)."""
    out = []
    for r in table.cost_rows(ops_of(arch)):
        if r.block_index is None:
            block = "group"
        else:
            block = str(arch.blocks[r.block_index]) if r.block_index >= 0 else "logits"
        out.append({"block_index": r.block_index, "block": block, "key": r.key, "ms": r.ms, "source": r.source,
                    "note": r.note})
    return out


def op_sum_ms(arch: ArchSpec, table: LatencyTable) -> float:
    """Sum of op rows (times the row scale) without the overhead (what `fit_calibration` relates to measurements)."""
    return sum(r.ms for r in table.cost_rows(ops_of(arch)))


def fit_calibration(table: LatencyTable, measured: Sequence[tuple[ArchSpec, float]],
                    scale_range: tuple[float, float] = (0.8, 1.5)) -> dict[str, Any]:
    """Fit `measured ~ row_scale * sum(rows) + overhead_ms` on whole networks (relative least squares,
    then once more without points beyond 3 MADs of the residuals).

    An op timed alone runs with its weights and activations hot in cache and pays one interpreter
    invocation of its own; inside a network neither holds, which a constant alone cannot express
    (large networks were predicted low, small ones high). Fit it on networks no validation judges
    the table by. With fewer than 4 networks, or a scale outside `scale_range`, only the constant is
    fitted: the median of measured - sum(rows), which one noisy measurement cannot move."""
    import numpy as np

    if not measured:
        raise TableError("fit_calibration needs (arch, measured ms) pairs")
    x = np.array([op_sum_ms(a, table) / table.row_scale for a, _ in measured])  # raw row sums
    y = np.array([ms for _, ms in measured])
    names = [a.name or a.to_string()[:60] for a, _ in measured]
    keep = np.ones(len(y), dtype=bool)
    scale, overhead = 1.0, float(np.median(y - x))
    if len(y) >= 4:
        for _ in range(2):
            A = np.vstack([x[keep], np.ones(keep.sum())]).T / y[keep, None]
            (a, b), *_ = np.linalg.lstsq(A, np.ones(keep.sum()), rcond=None)
            r = (a * x + b - y) / y
            # floor: residuals within a few percent are timing noise, never outliers
            mad = max(float(np.median(np.abs(r - np.median(r)))), 0.005)
            keep = np.abs(r - np.median(r)) <= 3 * 1.4826 * mad
        if scale_range[0] <= a <= scale_range[1]:
            scale, overhead = float(a), float(b)
    pred = scale * x + overhead
    return {"row_scale": scale, "overhead_ms": overhead, "n": len(y), "archs": names,
            "arch_strings": [a.to_string() for a, _ in measured], "op_sums_ms": x.tolist(),
            "measured_ms": y.tolist(), "rel_residuals": ((pred - y) / y).tolist(),
            "used": [bool(k) for k in keep], "residuals_ms": (y - x).tolist()}


class SpaceLatency:
    """A search space's table rows arranged for differentiable latency.

    `rows[l, o]` is the table latency of searchable layer l as candidate o of `space.options` (every
    candidate, then `skip`: 0 for the identity, the projection's row where skipping changes the shape, 0
    where layer l cannot take o); `fixed_ms` is every row that does not depend on a choice (stem, fixed
    blocks, head, logits) plus the table's overhead. The superkernel's option weights (one 1 per layer for
    hard decisions, straight-through gradients otherwise) read it as R = fixed + sum_lo W[l, o] rows[l, o].
    """

    def __init__(self, space: SearchSpace, table: LatencyTable, resolution: int = 224, width: float = 1.0,
                 num_classes: int = 1000) -> None:
        self.space = space
        self.table = table
        self.options = space.options
        cs = space.choice_set
        self.kernels, self.expansions = list(cs.kernels), list(cs.expansions)
        self.resolution, self.width, self.num_classes = resolution, width, num_classes
        rows = torch.zeros(space.num_layers, len(self.options), dtype=torch.float64)
        slot_blocks = {s.block_index: li for li, s in enumerate(space.slots)}
        fixed: list[float] = []
        for oi, option in enumerate(self.options):
            picks = [option if option in sl.choices else sl.choices[0] for sl in space.slots]
            arch = space.decode(picks, resolution, width, num_classes)
            fixed_here = 0.0
            for r in table.cost_rows(ops_of(arch)):
                li = slot_blocks.get(r.block_index) if r.block_index is not None else None
                if li is not None:
                    if picks[li] == option:
                        rows[li, oi] = r.ms
                else:
                    fixed_here += r.ms  # stem, fixed blocks, head, classifier, group rows
            fixed.append(fixed_here)
        if max(fixed) - min(fixed) > 1e-9 * max(1.0, max(fixed)):
            raise TableError(f"table '{table.device}': the fixed part of space '{space.name}' changes with the "
                             f"searchable choices ({min(fixed):.4f}..{max(fixed):.4f} ms); a group row of the table "
                             f"covers a searchable layer")
        self.fixed_ms = fixed[0] + table.overhead_ms
        self.rows = rows

    def expected(self, weights: torch.Tensor) -> torch.Tensor:
        """R = fixed + sum over layers and candidates of weight x row (`weights`: [layers, len(options)]);
        with hard 0/1 weights this equals `predict_latency_ms` of the derived architecture."""
        r = self.rows.to(device=weights.device, dtype=weights.dtype)
        return self.fixed_ms + (weights * r).sum()

    def expected_ms(self, keep: torch.Tensor, use_big_k: torch.Tensor, use_big_e: torch.Tensor) -> torch.Tensor:
        """The paper's grid of two kernels x two expansions, from its three indicators per layer:
        R = fixed + sum_l keep_l [(1-e)((1-k) R(ks,es) + k R(kb,es)) + e((1-k) R(ks,eb) + k R(kb,eb))]
        (keep = 1 where skip is not allowed)."""
        cs = self.space.choice_set
        if cs.structure != "grid" or len(cs.kernels) != 2 or len(cs.expansions) != 2:
            raise TableError(f"expected_ms(keep, kernel, expand) is the 2 x 2 grid's form; space "
                             f"'{self.space.name}' has choices {list(self.space.choices)}: use expected(weights)")
        one = torch.ones_like(keep)
        w = torch.stack([torch.stack(cs.option_weights({"keep": keep[li], "kernel": use_big_k[li],
                                                         "expand": use_big_e[li]}, True, one[li]))
                         for li in range(len(keep))])
        return self.expected(w)

    def of_choices(self, choices: Sequence[str]) -> float:
        """Latency of one choice per layer (hard decisions)."""
        total = self.fixed_ms
        for li, c in enumerate(choices):
            total += float(self.rows[li, self.options.index(c)])
        return total
