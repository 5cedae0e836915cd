"""The numbers a NAS claim must carry (docs/DESIGN.md, "Evidence"), from the pipeline's stage outputs.

Per model: each seed's test top-1 (the proxy task), fine-tuned top-1 and photo-search recall@1, their
mean and 95% t-interval over seeds, the predicted latency on every table. Per winner: the paired
difference winner - model over the seeds both share, with its interval and a verdict ("beats", "loses
to", "not distinguishable from") against each of its random controls, each width-scaled baseline and
each reference net. And the budget check: a comparison whose reference family is not ordered by width
at the end, or whose models were still improving in the last quarter of training, ranks the budget,
not the architectures. Pure functions of plain data (tested with fixed per-seed numbers).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np

from spnas_core.stats import kendall_tau, mean_ci, paired_seed_difference

# metric -> (where it is in a seed's record, what the report calls it)
METRICS = {
    "top1": (("train", "test_top1"), "proxy test top-1"),
    "finetune_top1": (("finetune", "test_top1"), "fine-tuned top-1"),
    "r1_train": (("retrieval", "results", "train", "fine", "recall@1"), "photo search R@1 (train-photo gallery)"),
    "r1_catalogue": (("retrieval", "results", "catalogue", "fine", "recall@1"), "photo search R@1 (catalogue)"),
}


def _get(d: Any, path: Sequence[str]) -> Any:
    for k in path:
        if not isinstance(d, dict) or d.get(k) is None:
            return None
        d = d[k]
    return d


def seed_values(seeds: dict[int, dict[str, Any]], metric: str) -> dict[int, float]:
    """seed -> the metric, for the seeds that have it."""
    path, _ = METRICS[metric]
    out = {}
    for s, rec in seeds.items():
        v = _get(rec, path)
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            out[int(s)] = float(v)
    return out


def summarize(seeds: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Every metric of one model: per seed, mean and 95% interval over seeds (clipped to [0, 1], where
    accuracies and recalls live)."""
    out = {}
    for metric in METRICS:
        vals = seed_values(seeds, metric)
        if vals:
            ci = mean_ci(list(vals.values()))
            for k in ("ci_low", "ci_high"):
                if ci[k] is not None:
                    ci[k] = min(1.0, max(0.0, ci[k]))
            out[metric] = {"per_seed": vals, **ci}
    return out


def compare(a: dict[int, dict[str, Any]], b: dict[int, dict[str, Any]], metrics: Iterable[str] = METRICS
            ) -> dict[str, Any]:
    """a - b per metric over the shared seeds (paired t-interval, verdict); one shared seed gives no verdict."""
    out = {}
    for metric in metrics:
        va, vb = seed_values(a, metric), seed_values(b, metric)
        if set(va) & set(vb):
            d = paired_seed_difference(va, vb)
            if len(d["seeds"]) < 2:
                d["note"] = "one seed: no interval, no verdict"
            out[metric] = d
    return out


# ---------------------------------------------------------------------------------- intervals over test photos
# Where each seed's record keeps a metric per test photo (1/0 correct; per-query recall@1): on a small test
# split one photo moves a mean by 1/n, a noise the seeds alone do not show.
PER_PHOTO = {
    "top1": ("train", "test_correct"),
    "finetune_top1": ("finetune", "test_correct"),
    "r1_train": ("retrieval", "results", "train", "fine", "per_query", "recall@1"),
    "r1_catalogue": ("retrieval", "results", "catalogue", "fine", "per_query", "recall@1"),
}


def photo_values(seeds: dict[int, dict[str, Any]], metric: str) -> dict[int, np.ndarray]:
    """seed -> the metric per test photo (in test order), for the seeds that recorded it."""
    out = {}
    for s, rec in seeds.items():
        v = _get(rec, PER_PHOTO[metric])
        if v is None or len(v) == 0:
            continue
        out[int(s)] = np.asarray([int(c) for c in v] if isinstance(v, str) else v, dtype=np.float64)
    return out


def photo_bootstrap(diffs: np.ndarray, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-photo differences, resampling photos (in chunks, so
    10k test photos x 2000 resamples stays small)."""
    rng = np.random.default_rng(seed)
    n = len(diffs)
    means = np.concatenate([diffs[rng.integers(0, n, size=(min(200, n_boot - i), n))].mean(axis=1)
                            for i in range(0, n_boot, 200)])
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def photo_interval(a: dict[int, dict[str, Any]], b: dict[int, dict[str, Any]], metric: str, n_boot: int = 2000,
                   seed: int = 0) -> dict[str, Any] | None:
    """a - b on the same test photos: per photo, the difference averaged over the seeds both have, with a
    paired bootstrap interval over the photos (each resample keeps a photo's seeds together). None when
    the two models did not record per-photo values on the same photos."""
    va, vb = photo_values(a, metric), photo_values(b, metric)
    seeds = sorted(s for s in set(va) & set(vb) if len(va[s]) == len(vb[s]))
    if not seeds:
        return None
    d = np.mean([va[s] - vb[s] for s in seeds], axis=0)
    lo, hi = photo_bootstrap(d, n_boot, seed=seed)
    return {"mean": float(d.mean()), "ci_low": lo, "ci_high": hi, "n_photos": int(len(d)), "seeds": seeds,
            "one_photo": 1.0 / len(d), "method": "paired bootstrap over test photos (seeds averaged per photo)"}


def photo_intervals(a: dict[int, dict[str, Any]], b: dict[int, dict[str, Any]], metrics: Iterable[str] = PER_PHOTO
                    ) -> dict[str, Any]:
    """`photo_interval` for every metric both models recorded per photo."""
    out = {}
    for m in metrics:
        r = photo_interval(a, b, m)
        if r is not None:
            out[m] = r
    return out


MIN_CURVE_POINTS = 3  # fewer evaluations cannot show what the last quarter of training did


def rise_window(curve: Sequence[dict[str, Any]]) -> tuple[float, float] | None:
    """The steps the rise is measured between: the evaluation nearest three quarters of the curve's last
    step, and the last (None for fewer than `MIN_CURVE_POINTS` evaluations)."""
    pts = [p for p in curve if p.get("step") is not None]
    if len(pts) < MIN_CURVE_POINTS:
        return None
    end = pts[-1]
    q = min(pts[:-1], key=lambda p: abs(p["step"] - 0.75 * end["step"]))
    return float(q["step"]), float(end["step"])


def curve_rises(seeds: dict[int, dict[str, Any]], stage: str = "train") -> list[float]:
    """Per seed: validation top-1 at the end minus at the start of `rise_window` (points); seeds whose
    curves are too short are left out."""
    rises = []
    for rec in seeds.values():
        curve = [p for p in (_get(rec, (stage, "curve")) or []) if p.get("step") is not None]
        win = rise_window(curve)
        if win is None:
            continue
        at = {p["step"]: p["val_top1"] for p in curve}
        rises.append(100 * (at[win[1]] - at[win[0]]))
    return rises


def curve_rise(seeds: dict[int, dict[str, Any]], stage: str = "train") -> float | None:
    """Mean over seeds of `curve_rises` (None when no curve is long enough)."""
    r = curve_rises(seeds, stage)
    return sum(r) / len(r) if r else None


def rise_check(rises: dict[str, Sequence[float] | None], rising_pts: float, level: float = 0.95) -> dict[str, Any]:
    """Were the models still improving at the end? Every model's per-seed rises over `rise_window`, pooled
    (each is one training run): their mean with its t-interval against `rising_pts`. "rising" when the
    interval lies above it, "flat" when it lies at or below it, else "cannot tell": noise from a small
    validation split (one of 17 photos is 5.9 points) or few runs widens the interval instead of firing
    the check."""
    pooled = [float(x) for r in rises.values() if r for x in r]
    short = [m for m, r in rises.items() if not r]
    ci = mean_ci(pooled, level)
    if ci["n"] < 2:
        state = "cannot tell"
    elif ci["ci_low"] > rising_pts:
        state = "rising"
    elif ci["ci_high"] <= rising_pts:
        state = "flat"
    else:
        state = "cannot tell"
    per_model = {m: sum(r) / len(r) for m, r in rises.items() if r}
    return {"state": state, "mean": ci["mean"], "ci_low": ci["ci_low"], "ci_high": ci["ci_high"], "n": ci["n"],
            "short": short, "per_model": per_model, "rising_pts": rising_pts}


MIN_FAMILY_WIDTHS = 3  # two points are ordered or not by a coin's chance: no evidence of a ranking either way


def family_order(points: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """Is a reference family (width, mean top-1) ordered by width? Kendall tau between width and accuracy,
    and the pairs a wider net loses. A family of fewer than `MIN_FAMILY_WIDTHS` widths is never called
    ordered (`too_few`: its tau says nothing)."""
    pts = sorted(points)
    inversions = [(w1, w2) for i, (w1, a1) in enumerate(pts) for w2, a2 in pts[i + 1:] if a2 <= a1]
    too_few = len(pts) < MIN_FAMILY_WIDTHS
    tau = kendall_tau([w for w, _ in pts], [a for _, a in pts]) if not too_few else float("nan")
    return {"widths": [w for w, _ in pts], "top1": [a for _, a in pts], "kendall_tau": tau,
            "ordered": not too_few and not inversions, "inversions": inversions, "too_few": too_few}


def budget_check(families: dict[str, Sequence[tuple[float, float]]], rises: dict[str, Sequence[float] | None],
                 rising_pts: float) -> dict[str, Any]:
    """Can this budget rank capacity? No when a reference family is not ordered by width at the end (or has
    fewer than `MIN_FAMILY_WIDTHS` widths), or when the models had not stopped improving: `rises` per
    model, its per-seed last-quarter rises (`curve_rises`), judged within their noise by `rise_check`."""
    order = {name: family_order(pts) for name, pts in families.items() if len(pts) > 1}
    rise = rise_check(rises, rising_pts)
    reasons = [f"{name} is not ordered by width ({', '.join(f'w{a:g} >= w{b:g}' for a, b in o['inversions'])})"
               for name, o in order.items() if o["inversions"]]  # even two widths out of order rank nothing
    if rise["short"]:
        reasons.append(f"{len(rise['short'])} of {len(rises)} models have learning curves of fewer than "
                       f"{MIN_CURVE_POINTS} evaluations: whether they were still improving cannot be told")
    band = (f"{rise['mean']:+.1f} [{rise['ci_low']:+.1f}, {rise['ci_high']:+.1f}] points over {rise['n']} runs"
            if rise["ci_low"] is not None else f"{rise['n']} run(s) with a long enough curve")
    if rise["state"] == "rising":
        reasons.append(f"models still gained > {rising_pts:g} points of validation top-1 in the last quarter of "
                       f"training ({band})")
    elif rise["state"] == "cannot tell" and rise["n"]:
        reasons.append(f"whether models were still improving cannot be told: the last-quarter rise of validation "
                       f"top-1 is {band}, against {rising_pts:g}")
    if not any(not o.get("too_few") for o in order.values()):
        reasons.append(f"no reference family of {MIN_FAMILY_WIDTHS} or more widths to check the ranking with "
                       f"(two widths are ordered or not by chance; add controls.widths)")
    rising = {m: r for m, r in rise["per_model"].items() if r > rising_pts}
    return {"ranks": not reasons, "families": order, "rise": rise, "rising": rising, "rising_pts": rising_pts,
            "reasons": reasons}


def verdict_line(winner: str, other: str, d: dict[str, Any], metric: str = "top1", scale: float = 100.0,
                 unit: str = "points") -> str:
    """`<winner> beats <other>: +2.1 points [+0.4, +3.8] (3 seeds)` and the like."""
    if d.get("mean") is None:
        return f"{winner} vs {other}: no shared seed"
    n = len(d["seeds"])
    ci = "" if d.get("ci_low") is None else f" [{scale * d['ci_low']:+.2f}, {scale * d['ci_high']:+.2f}]"
    tail = f" ({n} seed{'s' if n != 1 else ''}{'; one seed gives no verdict' if n < 2 else ''})"
    return f"{winner} {d['verdict']} {other}: {scale * d['mean']:+.2f} {unit}{ci}{tail}"
