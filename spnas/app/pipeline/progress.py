"""One run-level progress line for `spnas-pipeline`: stages done of all, the one running, elapsed, ETA.

Stages differ in length (an export takes longer than a photo search), so the ETA sums, over the
stages still to come, the mean wall time of the stages of the same kind that ran in this run (a kind
not run yet counts as the mean of every stage that ran). Skipped stages count as done at no cost. Each
finished stage prints one line carrying the run's progress (`[    ran] train/x/s0 (12 s) 5/23, ETA
~3 min`), so a log shows it too; on a terminal a bar below it holds the whole run.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Any


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class RunProgress:
    """The run's stages by kind (`plan`), advanced as each one finishes; `eta_s` is the estimate left."""

    def __init__(self, plan: list[str] | None = None, bar: bool | None = None) -> None:
        self.todo: Counter[str] = Counter(plan or [])
        self.walls: dict[str, list[float]] = {}
        self.done = 0
        self.t0 = time.monotonic()
        self.current = ""
        self._bar: Any = None
        if bar if bar is not None else sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc="pipeline", unit="stage", file=sys.stderr, leave=False,
                             bar_format="{desc}: {n_fmt}/{total_fmt} stages |{bar}| {elapsed}{postfix}")

    @property
    def total(self) -> int:
        return self.done + sum(self.todo.values())

    def plan(self, kinds: list[str]) -> None:
        """More stages to come (known once the searches have run: the models, their seeds and exports)."""
        self.todo.update(kinds)
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.refresh()

    def start(self, stage: str) -> None:
        self.current = stage
        if self._bar is not None:
            self._bar.set_postfix_str(f"now {stage}, ETA {self.eta_text()}")

    def eta_s(self) -> float | None:
        """Seconds left: per kind to come, its mean wall time in this run (else the mean over all that ran)."""
        ran = [w for ws in self.walls.values() for w in ws]
        if not ran:
            return None
        overall = sum(ran) / len(ran)
        return sum(n * (sum(self.walls[k]) / len(self.walls[k]) if self.walls.get(k) else overall)
                   for k, n in self.todo.items())

    def eta_text(self) -> str:
        eta = self.eta_s()
        return "unknown until a stage has run" if eta is None else f"~{_clock(eta)}"

    def finish(self, stage: str, how: str, wall_s: float) -> str:
        """Count `stage` (kind/name) done; returns its line with the run's progress and ETA."""
        kind = stage.split("/", 1)[0]
        if self.todo[kind] > 0:
            self.todo[kind] -= 1
        self.done += 1
        if how != "skipped":
            self.walls.setdefault(kind, []).append(wall_s)
        line = (f"[{how:>7}] {stage} ({wall_s:.0f} s) {self.done}/{self.total}, "
                f"{_clock(time.monotonic() - self.t0)} elapsed, ETA {self.eta_text()}")
        if self._bar is not None:
            self._bar.write(line, file=sys.stdout)
            self._bar.total = self.total
            self._bar.update(1)
        else:
            print(line, flush=True)
        return line

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
