"""Statistics every comparison shares (pure functions): bootstrap intervals over queries, paired
differences over the same queries or the same seeds, t-intervals over seeds, and a verdict that says
"not distinguishable" when the interval holds 0.

Two kinds of repetition, two tools:
- photo-search queries (hundreds per model): percentile bootstrap of the mean, and of the paired
  difference between two models on the same queries;
- training seeds (a handful per model): Student-t interval of the mean, and of the paired difference
  winner - control over the same seeds (seed s of both models shares data order and augmentation).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def bootstrap_ci(values: np.ndarray, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-query values (resampling queries)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def paired_difference(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, level: float = 0.95,
                      seed: int = 0) -> dict[str, float | bool]:
    """Mean of a - b over the same queries with a paired bootstrap interval; `differ` when the interval
    excludes 0 (the two models really rank differently on this query set)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired comparison needs the same queries ({a.shape} vs {b.shape})")
    lo, hi = bootstrap_ci(a - b, n_boot, level, seed)
    return {"difference": float((a - b).mean()) if len(a) else float("nan"), "ci_low": lo, "ci_high": hi,
            "differ": bool(lo > 0 or hi < 0)}


def t_quantile(level: float, dof: int) -> float:
    """The two-sided Student-t quantile for `level` with `dof` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, dof))


def mean_ci(values: Sequence[float], level: float = 0.95) -> dict[str, float | int | None]:
    """Mean over seeds with its Student-t interval (`ci_low`/`ci_high` None for a single value: one seed
    gives no interval, and nothing may be concluded from it)."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
    n = len(v)
    if n == 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "sd": None, "n": 0}
    mean = float(v.mean())
    if n == 1:
        return {"mean": mean, "ci_low": None, "ci_high": None, "sd": None, "n": 1}
    sd = float(v.std(ddof=1))
    half = t_quantile(level, n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "sd": sd, "n": n}


def paired_seed_difference(a: dict[int, float], b: dict[int, float], level: float = 0.95) -> dict[str, object]:
    """a - b over the seeds both have (a paired t-interval): `verdict` is "beats" when the interval is
    above 0, "loses to" when below, else "not distinguishable from" (also for fewer than 2 shared seeds)."""
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    ci = mean_ci(diffs, level)
    return {"seeds": seeds, "differences": diffs, **ci, "verdict": verdict(ci["ci_low"], ci["ci_high"])}


def verdict(ci_low: float | None, ci_high: float | None) -> str:
    """How an interval of a difference reads: "beats", "loses to" or "not distinguishable from"."""
    if ci_low is None or ci_high is None:
        return "not distinguishable from"
    if ci_low > 0:
        return "beats"
    if ci_high < 0:
        return "loses to"
    return "not distinguishable from"


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b between two rankings of the same items (nan for fewer than 2)."""
    if len(x) < 2:
        return float("nan")
    from scipy.stats import kendalltau

    return float(kendalltau(x, y).statistic)
