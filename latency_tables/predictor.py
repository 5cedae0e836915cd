"""Latency prediction from a table: the sum of an architecture's op rows plus a fitted constant,
and the differentiable form the Single-Path NAS search uses."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from search_spaces import SKIP, ArchSpec, SearchSpace
from search_spaces.space import parse_choice
from spnas_core.errors import TableError

from .keys import ops_of
from .table import LatencyTable


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

    For each searchable layer l, `rows[l][e][k]` is the table latency of expansion index e
    (small, large) and kernel index k (small, large); `fixed_ms` is every row that does not
    depend on a choice (stem, fixed blocks, head, logits) plus the table's overhead.
    """

    def __init__(self, space: SearchSpace, table: LatencyTable, resolution: int = 224, width: float = 1.0,
                 num_classes: int = 1000) -> None:
        kernels = sorted({parse_choice(c)[0] for c in space.choices})
        exps = sorted({parse_choice(c)[1] for c in space.choices})
        if len(kernels) != 2 or len(exps) != 2 or len(space.choices) != 4:
            raise TableError(
                f"the superkernel needs 2 kernels x 2 expansions per layer; space '{space.name}' has "
                f"choices {space.choices}")
        self.space = space
        self.table = table
        self.kernels, self.expansions = kernels, exps
        self.resolution, self.width, self.num_classes = resolution, width, num_classes
        rows = torch.zeros(space.num_layers, 2, 2, dtype=torch.float64)
        slot_blocks = {s.block_index: li for li, s in enumerate(space.slots)}
        fixed: list[float] = []
        for ei, e in enumerate(exps):
            for ki, k in enumerate(kernels):
                arch = space.decode([f"k{k}_e{e}"] * space.num_layers, resolution, width, num_classes)
                terms = table.cost_rows(ops_of(arch))
                fixed_here = 0.0
                for r in terms:
                    if r.block_index is not None and r.block_index in slot_blocks:
                        rows[slot_blocks[r.block_index], ei, ki] = r.ms
                    else:
                        fixed_here += r.ms  # stem, fixed blocks, head, classifier, group rows
                fixed.append(fixed_here)
        if max(fixed) - min(fixed) > 1e-9 * max(1.0, max(fixed)):
            raise TableError(f"table '{table.device}': the fixed part of space '{space.name}' changes with the "
                             f"searchable choices ({min(fixed):.4f}..{max(fixed):.4f} ms); a group row of the table "
                             f"covers a searchable layer")
        self.fixed_ms = fixed[0] + table.overhead_ms
        self.rows = rows

    def expected_ms(self, keep: torch.Tensor, use_big_k: torch.Tensor, use_big_e: torch.Tensor) -> torch.Tensor:
        """R = fixed + sum_l keep_l [(1-e)((1-k) R(ks,es) + k R(kb,es)) + e((1-k) R(ks,eb) + k R(kb,eb))].

        Indicator tensors have one entry per searchable layer (keep = 1 where skip is not allowed);
        with hard 0/1 indicators this equals `predict_latency_ms` of the derived architecture.
        """
        r = self.rows.to(device=keep.device, dtype=keep.dtype)
        k, e = use_big_k, use_big_e
        small_e = (1 - k) * r[:, 0, 0] + k * r[:, 0, 1]
        big_e = (1 - k) * r[:, 1, 0] + k * r[:, 1, 1]
        per_layer = keep * ((1 - e) * small_e + e * big_e)
        return self.fixed_ms + per_layer.sum()

    def of_choices(self, choices: Sequence[str]) -> float:
        """Latency of one choice per layer (hard decisions)."""
        total = self.fixed_ms
        for li, c in enumerate(choices):
            if c == SKIP:
                continue
            k, e = parse_choice(c)
            total += float(self.rows[li, self.expansions.index(e), self.kernels.index(k)])
        return total
