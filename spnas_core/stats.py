"""Statistics every comparison shares (pure functions): bootstrap intervals over queries, paired
differences over the same queries or the same seeds, t-intervals over seeds, and a verdict that says
"not distinguishable" when the interval holds 0.

The repetitions a comparison has, and the tools for them:
- photo-search queries or test images (hundreds per model): percentile bootstrap of the mean, and of the
  paired difference between two models on the same queries (`paired_difference`);
- training seeds (a handful per model): Student-t interval of the mean (`mean_ci`), and of the paired
  difference winner - control over the same seeds (`paired_seed_difference`);
- all of them at once (`crossed_interval`, docs/design.md, "Evidence"): a difference measured on every
  (random net, training seed, test image) of a crossed design, whose interval counts each source of
  noise: the random nets drawn (the control is a sample of the space, not one net), the training seeds
  and the finite test set. `seed_image_difference` is the winner-vs-one-model case,
  `population_difference` the winner-vs-random-nets case;
- several verdicts in one report: Holm's step-down adjustment (`holm`), family-wise at 5%.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence, Union

import numpy as np

# seed -> the per-item values of one model on one metric (e.g. 1/0 per test image), or one number when
# only the seed's mean was recorded
Sample = Mapping[int, Union[float, Sequence[float], np.ndarray]]


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


def t_quantile(level: float, dof: float) -> float:
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


def kendall_test(x: Sequence[float], y: Sequence[float]) -> dict[str, float | int]:
    """Kendall's tau-b with its n and the two-sided p-value of no association (scipy's exact test for small
    n without ties): what a rank correlation over a dozen items can and cannot claim."""
    n = len(x)
    if n < 3:
        return {"tau": float("nan"), "p_value": float("nan"), "n": n}
    from scipy.stats import kendalltau

    r = kendalltau(x, y)
    return {"tau": float(r.statistic), "p_value": float(r.pvalue), "n": n}


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b between two rankings of the same items (nan for fewer than 2)."""
    if len(x) < 2:
        return float("nan")
    from scipy.stats import kendalltau

    return float(kendalltau(x, y).statistic)


# ---------------------------------------------------------------------------------- every noise at once
def crossed_interval(x: np.ndarray, level: float = 0.95) -> dict[str, Any]:
    """The mean of `x` with an interval that counts every factor it is crossed over.

    `x` has shape (nets, seeds, items): a paired difference (winner - control) for each random net of a
    population, each training seed both share, and each test image (or photo-search query) both were
    judged on; an axis of length 1 is a factor with one level (one net, one seed, or per-seed means with
    no per-item record). Each axis with two or more levels contributes the variance of the means along
    it divided by its length: s2_nets / R + s2_seeds / S + s2_items / N. That is the variance a two-way
    (pigeonhole) bootstrap over all three factors estimates (Owen, 2007): conservative, as the factors'
    interactions are counted in more than one term. The interval is Student-t at the degrees of freedom
    of the least-repeated factor (e.g. 2 for three seeds), and `p_value` the two-sided test of a zero
    difference. (The Welch-Satterthwaite degrees of freedom would be larger, and could make an interval
    narrower when a source of noise is added; this one only widens.)

    Training seeds are the noise a single run cannot see from inside, so with one seed there is no
    interval and no verdict (`ci_low`/`p_value` None, `note` says so); `test_ci_low`/`test_ci_high` are
    then still the percentile bootstrap over the items alone (what the finite test set allows, e.g. for
    a report on a few dozen photos)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3 or x.size == 0:
        raise ValueError(f"crossed_interval needs a non-empty (nets, seeds, items) array, got shape {x.shape}")
    r, s, n = x.shape
    mean = float(x.mean())
    parts: dict[str, tuple[float, int]] = {}
    for name, axis, k in (("nets", (1, 2), r), ("seeds", (0, 2), s), ("items", (0, 1), n)):
        if k > 1:
            parts[name] = (float(x.mean(axis=axis).var(ddof=1)) / k, k - 1)
    out: dict[str, Any] = {"mean": mean, "n_nets": r, "n_seeds": s, "n_items": n if n > 1 else 0,
                           "noise": list(parts), "se_by_source": {k: math.sqrt(v) for k, (v, _) in parts.items()},
                           "ci_low": None, "ci_high": None, "se": None, "dof": None, "p_value": None,
                           "test_ci_low": None, "test_ci_high": None, "note": ""}
    if n > 1:
        out["test_ci_low"], out["test_ci_high"] = bootstrap_ci(x.mean(axis=(0, 1)), 1000, level, seed=0)
    if s < 2:
        out["note"] = "one seed: no interval, no verdict"
        return {**out, "verdict": verdict(None, None)}
    var = sum(v for v, _ in parts.values())
    se = math.sqrt(var)
    dof = float(min(d for _, d in parts.values()))
    half = t_quantile(level, dof) * se
    if se > 0:
        from scipy.stats import t

        p = float(2 * t.sf(abs(mean) / se, dof))
    else:
        p = 0.0 if mean != 0 else 1.0
    out.update(se=se, dof=dof, ci_low=mean - half, ci_high=mean + half, p_value=p)
    return {**out, "verdict": verdict(out["ci_low"], out["ci_high"])}


def paired_matrix(a: Sample, b: Sample) -> tuple[list[int], np.ndarray]:
    """a - b as a (seeds x items) matrix, paired by seed key (never by position: a seed only one side has
    is left out) and by item position within a seed (the same test images in the same order). Where
    either side recorded only a seed's mean, every seed is reduced to its mean (one column)."""
    seeds = sorted(set(map(int, a)) & set(map(int, b)))
    if not seeds:
        return [], np.zeros((0, 1))
    va = {k: np.atleast_1d(np.asarray(a[k], dtype=np.float64)) for k in seeds}
    vb = {k: np.atleast_1d(np.asarray(b[k], dtype=np.float64)) for k in seeds}
    lengths = {len(v) for v in (*va.values(), *vb.values())}
    if 1 in lengths:
        return seeds, np.array([[va[k].mean() - vb[k].mean()] for k in seeds])
    if len(lengths) > 1:
        raise ValueError(f"a paired comparison needs the same items in every seed of both models; got lengths "
                         f"{sorted(lengths)}")
    return seeds, np.stack([va[k] - vb[k] for k in seeds])


def seed_image_difference(a: Sample, b: Sample, level: float = 0.95) -> dict[str, Any]:
    """a - b over the seeds both have and the test items both were judged on: `crossed_interval` with one
    net. `seeds` are the shared seed keys and `differences` each seed's mean difference."""
    seeds, m = paired_matrix(a, b)
    if not seeds:
        return {"seeds": [], "differences": [], "mean": None, "ci_low": None, "ci_high": None, "p_value": None,
                "verdict": verdict(None, None), "note": "no shared seed"}
    return {"seeds": seeds, "differences": [float(v) for v in m.mean(axis=1)], **crossed_interval(m[None], level)}


def population_difference(winner: Sample, population: Sequence[Sample], level: float = 0.95) -> dict[str, Any]:
    """The winner against a population of controls (random nets of its space at its latency): winner minus
    the population's mean, over the seeds the winner and every control share and the items they share,
    with the random nets as a factor of the interval (a sample of the space, not fixed nets). One net
    gives an interval about that net only, and `note` says so. `per_net` is the winner - net difference
    of each control (descriptive) and `percentile` the share of controls whose mean the winner's exceeds
    (ties count half)."""
    if not population:
        return {"seeds": [], "mean": None, "ci_low": None, "ci_high": None, "p_value": None,
                "verdict": verdict(None, None), "note": "no random net", "n_nets": 0, "per_net": []}
    shared = set(map(int, winner))
    for c in population:
        shared &= set(map(int, c))
    w = {k: winner[k] for k in sorted(shared)}
    mats = [paired_matrix(w, {k: c[k] for k in sorted(shared)})[1] for c in population]
    seeds = sorted(shared)
    if not seeds:
        return {"seeds": [], "mean": None, "ci_low": None, "ci_high": None, "p_value": None,
                "verdict": verdict(None, None), "note": "no seed shared by the winner and every random net",
                "n_nets": len(population), "per_net": []}
    cols = min(m.shape[1] for m in mats)
    if cols == 1:
        mats = [m.mean(axis=1, keepdims=True) for m in mats]
    out = {"seeds": seeds, **crossed_interval(np.stack(mats), level)}
    per_net = [float(m.mean()) for m in mats]
    out["per_net"] = per_net
    out["percentile"] = percentile_above([-d for d in per_net], 0.0)
    if len(population) == 1:
        out["note"] = "; ".join(x for x in (out["note"], "one random net: the interval is about that net, not about "
                                            "random nets at this latency") if x)
    return out


def percentile_above(others: Sequence[float], value: float) -> float:
    """The share of `others` below `value`, in percent (ties count half): a winner's percentile among its
    random controls."""
    if not others:
        return float("nan")
    return 100.0 * sum(1.0 if o < value else 0.5 if o == value else 0.0 for o in others) / len(others)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (None stays None and is not counted): a verdict is kept when its
    adjusted p is below the family-wise level, which holds that level over the whole family of verdicts."""
    idx = sorted((i for i, p in enumerate(p_values) if p is not None), key=lambda i: p_values[i])  # type: ignore
    m = len(idx)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * float(p_values[i])))  # type: ignore[arg-type]
        out[i] = running
    return out


def adjusted_verdict(d: dict[str, Any], p_adjusted: float | None, alpha: float = 0.05) -> str:
    """The verdict of one difference once the family is accounted for: its direction when the adjusted
    p-value is below `alpha`, else "not distinguishable from"."""
    if p_adjusted is None or d.get("mean") is None or p_adjusted >= alpha:
        return "not distinguishable from"
    return "beats" if d["mean"] > 0 else "loses to"
