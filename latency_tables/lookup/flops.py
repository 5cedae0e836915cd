"""`flops`: multiply-adds as a cost table, for searches judged against FLOPs-budgeted ground truth.

NAS-Bench-Macro, and most mobile NAS papers, state budgets in FLOPs: multiply-adds of convolutions and
fully connected layers (`search_spaces.counts`). This table answers every op key with that count, in
millions, so the search, its controls and every prediction use FLOPs exactly where they would use a
device's latency (`soc=flops`, `LatencyTable.load("flops")`). Its unit is "MFLOPs", not ms; it has no
overhead and nothing to measure.
"""

from __future__ import annotations

from latency_tables.lookup.table import FLOPS_NAME as NAME, FLOPS_UNIT as UNIT, MacsTable

__all__ = ["MacsTable", "NAME", "UNIT"]
