"""`flops`: multiply-adds as a cost table, for searches judged against FLOPs-budgeted ground truth.

NAS-Bench-Macro, and most mobile NAS papers, state budgets in FLOPs: multiply-adds of convolutions and
fully connected layers (`search_spaces.counts`). This table answers every op key with that count, in
millions, so the search, its controls and every prediction use FLOPs exactly where they would use a
device's latency (`soc=flops`, `LatencyTable.load("flops")`). Its unit is "MFLOPs", not ms; it has no
overhead and nothing to measure.
"""

from __future__ import annotations

from typing import Any

from search_spaces.counts import layer_params_macs
from spnas_core.errors import OpKeyError

from .keys import layer_of_key
from .table import LatencyTable, MissingOpsError

NAME = "flops"
UNIT = "MFLOPs"


class MacsTable(LatencyTable):
    """Every op's multiply-adds (millions), counted from the shape its key names."""

    def __init__(self) -> None:
        meta: dict[str, Any] = {
            "device": NAME, "soc": "multiply-adds", "provenance": "analytic", "unit": UNIT,
            "method": {"name": "multiply-adds counted from shapes (convolutions and fully connected layers; BN, "
                               "activations, pooling and adds free), as NAS-Bench-Macro counts FLOPs"},
            "overhead_ms": 0.0,
        }
        super().__init__(meta, {})

    def _derive(self, key: str) -> float:
        try:
            layer = layer_of_key(key)
        except OpKeyError:
            raise MissingOpsError(self.device, [key], "this key is not an op whose multiply-adds can be counted") \
                from None
        v = layer_params_macs(layer)[1] / 1e6
        self.derived[key] = (v, "model: multiply-adds counted from the key's shape")
        return v

    def how_to_fill(self, missing: list[str]) -> str:
        return "the flops table counts multiply-adds of the op keys spnas writes; these keys are not among them"

    def save(self, path: Any = None) -> Any:  # nothing measured: never written
        raise OpKeyError("the flops table is computed, not stored")
