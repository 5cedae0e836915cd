"""Latency prediction from a table: the sum of an architecture's op rows plus a fitted constant,
and the differentiable form the Single-Path NAS search uses."""

from __future__ import annotations

import statistics
from typing import Any, Sequence

import torch

from search_spaces import SKIP, ArchSpec, SearchSpace
from search_spaces.space import parse_choice

from .keys import ops_of
from .table import LatencyTable
from spnas.errors import TableError


def predict_latency_ms(arch: ArchSpec, table: LatencyTable) -> float:
    """Predicted end-to-end latency: sum of the op rows + the table's fitted overhead."""
    keys = [op.key for op in ops_of(arch)]
    table.require(keys)
    return sum(table.ms(k) for k in keys) + table.overhead_ms


def latency_breakdown(arch: ArchSpec, table: LatencyTable) -> list[dict[str, Any]]:
    """Per-op rows of a prediction (block index, block string, key, ms), for reports and plots."""
    ops = ops_of(arch)
    table.require(op.key for op in ops)
    return [{"block_index": op.block_index,
             "block": str(arch.blocks[op.block_index]) if op.block_index >= 0 else "logits",
             "key": op.key, "ms": table.ms(op.key)} for op in ops]


def op_sum_ms(arch: ArchSpec, table: LatencyTable) -> float:
    """Sum of op rows without the overhead (what `fit_overhead` compares with measurements)."""
    keys = [op.key for op in ops_of(arch)]
    table.require(keys)
    return sum(table.ms(k) for k in keys)


def fit_overhead(table: LatencyTable, measured: Sequence[tuple[ArchSpec, float]]) -> dict[str, Any]:
    """Fit the constant per-inference overhead as the median residual (measured - op sum).

    The median keeps one noisy measurement from moving every prediction."""
    if not measured:
        raise TableError("fit_overhead needs at least one (arch, measured ms) pair")
    residuals = [ms - op_sum_ms(arch, table) for arch, ms in measured]
    c = float(statistics.median(residuals))
    return {"overhead_ms": c, "n": len(residuals), "archs": [a.name or a.to_string()[:60] for a, _ in measured],
            "residuals_ms": residuals}


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
        base = space.decode([f"k{kernels[0]}_e{exps[0]}"] * space.num_layers, resolution, width, num_classes)
        slot_blocks = {s.block_index for s in space.slots}
        fixed_keys = [op.key for op in ops_of(base) if op.block_index not in slot_blocks]
        table.require(fixed_keys)
        self.fixed_ms = sum(table.ms(k) for k in fixed_keys) + table.overhead_ms
        for ei, e in enumerate(exps):
            for ki, k in enumerate(kernels):
                arch = space.decode([f"k{k}_e{e}"] * space.num_layers, resolution, width, num_classes)
                by_block = {op.block_index: op.key for op in ops_of(arch)}
                keys = [by_block[s.block_index] for s in space.slots]
                table.require(keys)
                for li, key in enumerate(keys):
                    rows[li, ei, ki] = table.ms(key)
        self.rows = rows

    def expected_ms(self, keep: torch.Tensor, use_big_k: torch.Tensor, use_big_e: torch.Tensor) -> torch.Tensor:
        """R = fixed + sum_l keep_l [(1-e)((1-k) R(ks,es) + k R(kb,es)) + e((1-k) R(ks,eb) + k R(kb,eb))].

        Indicator tensors have one entry per searchable layer (keep = 1 where skip is not allowed);
        with hard 0/1 indicators this equals `predict_latency_ms` of the derived architecture.
        """
        r = self.rows.to(keep.dtype)
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
