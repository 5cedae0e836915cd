"""The numbers a NAS claim must carry (docs/design.md, "Evidence"), from the pipeline's stage outputs.

Per model: each seed's test top-1 (the proxy task), fine-tuned top-1 and photo-search recall@1, their
mean and 95% interval, the predicted latency on every table. Per winner: the difference winner - model
paired by seed key and by test image, with an interval that counts the training seeds and the finite
test set (`spnas_core.stats.crossed_interval`); against its random controls as a population (their
mean, the random nets a factor of the interval, and the winner's percentile among them); and a verdict
("beats", "loses to", "not distinguishable from") on proxy top-1 only, Holm-adjusted over every such
verdict of the report (`family_verdicts`). And the budget check, noise-aware: a reference family is
ordered when no wider net is significantly worse than a narrower one and the widest is significantly
better than the narrowest (three widths at least), and the models were still improving when the pooled
last-quarter rise of their learning curves is, within its interval, above `report.rising_pts`. Pure
functions of plain data (tested with fixed per-seed, per-image numbers).
"""

from __future__ import annotations

import base64
import math
from typing import Any, Iterable, Sequence

import numpy as np

from spnas_core.stats import (
    Sample, adjusted_verdict, holm, kendall_tau, mean_ci, population_difference, seed_image_difference)

# metric -> (where each seed's value is in its record, what the report calls it)
METRICS = {
    "top1": (("train", "test_top1"), "proxy test top-1"),
    "finetune_top1": (("finetune", "test_top1"), "fine-tuned top-1"),
    "r1_train": (("retrieval", "results", "train", "fine", "recall@1"), "photo search R@1 (train-photo gallery)"),
    "r1_catalogue": (("retrieval", "results", "catalogue", "fine", "recall@1"), "photo search R@1 (catalogue)"),
}
# metric -> where each seed's per-item values are (1/0 per test image, or per photo-search query): the
# items every model of a run is judged on, so two models pair item by item
PER_ITEM = {
    "top1": ("train", "test_correct"),
    "r1_train": ("retrieval", "results", "train", "fine", "per_query", "recall@1"),
    "r1_catalogue": ("retrieval", "results", "catalogue", "fine", "per_query", "recall@1"),
}
ONE_SEED = "one seed: no interval, no verdict"
VERDICT_METRIC = "top1"  # the one metric verdicts are drawn on; the others are shown with their intervals
FAMILY_ALPHA = 0.05  # family-wise level of the report's verdicts (Holm)
FAMILY_MIN_WIDTHS = 3  # two widths are one pair: no order to speak of


def pack_bits(correct: np.ndarray) -> dict[str, Any]:
    """1/0 per item as a short JSON-able record (bits, base64)."""
    c = np.asarray(correct, dtype=np.uint8)
    return {"n": int(len(c)), "bits": base64.b64encode(np.packbits(c).tobytes()).decode()}


def unpack_bits(rec: dict[str, Any]) -> np.ndarray:
    """`pack_bits`' record back to a 0/1 float array."""
    raw = np.frombuffer(base64.b64decode(rec["bits"]), dtype=np.uint8)
    return np.unpackbits(raw)[: int(rec["n"])].astype(np.float64)


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


def seed_samples(seeds: dict[int, dict[str, Any]], metric: str) -> dict[int, Any]:
    """seed -> the metric's per-item values where the seed recorded them (test images, queries), else its
    one number: what `spnas_core.stats` pairs and intervals are computed from."""
    means = seed_values(seeds, metric)
    out: dict[int, Any] = {}
    for s, v in means.items():
        items = _get(seeds.get(s, seeds.get(str(s), {})), PER_ITEM[metric]) if metric in PER_ITEM else None
        if isinstance(items, dict) and "bits" in items:
            items = unpack_bits(items)
        out[s] = np.asarray(items, dtype=np.float64) if items is not None and len(items) else v
    return out


def _interval_of(sample: Sample) -> dict[str, Any]:
    """One model's mean with an interval over seeds and items (a difference against zero)."""
    zero = {k: (np.zeros_like(np.asarray(v, dtype=np.float64)) if np.ndim(v) else 0.0) for k, v in sample.items()}
    d = seed_image_difference(sample, zero)
    n = len(d["seeds"])
    return {"mean": d["mean"], "ci_low": d["ci_low"], "ci_high": d["ci_high"], "n": n,
            "sd": float(np.std(d["differences"], ddof=1)) if n > 1 else None, "noise": d.get("noise", [])}


def summarize(seeds: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Every metric of one model: per seed, mean and 95% interval over seeds and test items (clipped to
    [0, 1], where accuracies and recalls live; none for one seed)."""
    out = {}
    for metric in METRICS:
        vals = seed_values(seeds, metric)
        if vals:
            ci = _interval_of(seed_samples(seeds, metric))
            for k in ("ci_low", "ci_high"):
                if ci[k] is not None:
                    ci[k] = min(1.0, max(0.0, ci[k]))
            out[metric] = {"per_seed": vals, **ci}
    return out


def compare(a: dict[int, dict[str, Any]], b: dict[int, dict[str, Any]], metrics: Iterable[str] = METRICS
            ) -> dict[str, Any]:
    """a - b per metric, paired by seed key and test item (`seed_image_difference`); one shared seed gives
    no interval and no verdict."""
    out = {}
    for metric in metrics:
        va, vb = seed_samples(a, metric), seed_samples(b, metric)
        if set(va) & set(vb):
            out[metric] = seed_image_difference(va, vb)
    return out


def against_population(winner: dict[int, dict[str, Any]], population: Sequence[dict[int, dict[str, Any]]],
                       metrics: Iterable[str] = METRICS) -> dict[str, Any]:
    """Winner minus the mean of its random controls per metric (`population_difference`): the random nets a
    factor of the interval, with the winner's percentile among them."""
    out = {}
    for metric in metrics:
        pop = [seed_samples(p, metric) for p in population]
        if pop and all(pop):
            out[metric] = population_difference(seed_samples(winner, metric), pop)
    return out


def family_verdicts(diffs: Sequence[dict[str, Any]], alpha: float = FAMILY_ALPHA) -> dict[str, Any]:
    """Holm's step-down over a family of differences (every verdict of a report): each gets `p_holm` and
    its `verdict` after adjustment (`verdict_unadjusted` keeps the 95% interval's); returns the family's
    size and rule, for the report to state."""
    adj = holm([d.get("p_value") for d in diffs])
    for d, p in zip(diffs, adj):
        d["verdict_unadjusted"] = d.get("verdict")
        d["p_holm"] = p
        d["verdict"] = adjusted_verdict(d, p, alpha)
    m = sum(p is not None for p in adj)
    return {"m": m, "alpha": alpha, "rule": f"Holm's step-down over the {m} {METRICS[VERDICT_METRIC][1]} "
                                            f"comparisons with an interval, family-wise {100 * alpha:g}%"}


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
        if isinstance(v, dict):  # packed bits (`pack_bits`, the pipeline's retrain records)
            out[int(s)] = unpack_bits(v)
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


# ---------------------------------------------------------------------------------- the budget check
MIN_CURVE_POINTS = 3  # fewer evaluations cannot show what the last quarter of training did


def rise_window(curve: Sequence[dict[str, Any]]) -> tuple[float, float] | None:
    """The steps the rise is measured between: the evaluation nearest three quarters of the curve's last
    step, and the last (None for fewer than `MIN_CURVE_POINTS` evaluations). The learning-curve plot
    shades this window."""
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


def family_order(points: Sequence[tuple[float, Sample]], min_widths: int = FAMILY_MIN_WIDTHS) -> dict[str, Any]:
    """Is a reference family ordered by width, within its noise? Each point is (width, the width's top-1
    sample: seed -> per-image 1/0 or the seed's mean). Ordered: at least `min_widths` widths, no wider net
    significantly below a narrower one (the paired interval of wider - narrower entirely under 0), and the
    widest significantly above the narrowest. Kendall tau of the means is given beside."""
    pts = sorted(points, key=lambda p: p[0])
    widths = [w for w, _ in pts]
    means = [float(np.mean([np.mean(v) for v in s.values()])) if s else float("nan") for _, s in pts]
    tau = kendall_tau(widths, means) if len(pts) > 1 else float("nan")
    out: dict[str, Any] = {"widths": widths, "top1": means, "kendall_tau": tau, "ordered": False,
                           "inversions": [], "significant_inversions": [], "span": None, "reasons": []}
    out["inversions"] = [(w1, w2) for i, (w1, a1) in enumerate(zip(widths, means)) for w2, a2 in
                         zip(widths[i + 1:], means[i + 1:]) if a2 <= a1]
    out["too_few"] = len(pts) < min_widths  # two widths are ordered or not by chance: never called ordered
    if len(pts) < min_widths:
        out["reasons"].append(f"{len(pts)} width{'s' if len(pts) != 1 else ''} (an order needs {min_widths} or more)")
        return out
    for i in range(len(pts)):
        for j in range(i + 1, len(pts)):
            d = seed_image_difference(pts[j][1], pts[i][1])
            if d.get("ci_high") is not None and d["ci_high"] < 0:
                out["significant_inversions"].append({"narrower": widths[i], "wider": widths[j], "diff": d["mean"],
                                                      "ci": [d["ci_low"], d["ci_high"]]})
    span = seed_image_difference(pts[-1][1], pts[0][1])
    out["span"] = {k: span.get(k) for k in ("mean", "ci_low", "ci_high", "seeds", "noise", "note")}
    if span.get("ci_low") is None:
        out["reasons"].append(f"w{widths[-1]:g} - w{widths[0]:g}: {span.get('note') or 'no interval'}")
    elif span["ci_low"] <= 0:
        out["reasons"].append(f"w{widths[-1]:g} is not distinguishable from w{widths[0]:g} "
                              f"({_pts(span['mean'])} [{_pts(span['ci_low'])}, {_pts(span['ci_high'])}] points)")
    for inv in out["significant_inversions"]:
        out["reasons"].append(f"w{inv['wider']:g} is below w{inv['narrower']:g} ({_pts(inv['diff'])} "
                              f"[{_pts(inv['ci'][0])}, {_pts(inv['ci'][1])}] points)")
    out["ordered"] = not out["reasons"]
    return out


def _pts(v: float) -> str:
    return f"{100 * v:+.1f}"


def rise_check(rises: dict[str, Sequence[float] | None], rising_pts: float, level: float = 0.95) -> dict[str, Any]:
    """Were the models still improving at the end? Every model's per-seed rises over `rise_window`, pooled
    (each is one training run): their mean with its t-interval against `rising_pts`. "rising" when the
    interval lies above it, "flat" when it lies at or below it, else "cannot tell": noise from a small
    validation split or few runs widens the interval instead of firing the check."""
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


def budget_check(families: dict[str, Sequence[tuple[float, Sample]]], rises: dict[str, Sequence[float] | None],
                 rising_pts: float) -> dict[str, Any]:
    """Can this budget rank capacity? Only when every reference family is ordered by width within its
    noise (`family_order`) and the models had stopped rising (`rise_check`: "flat"). `families`: per
    reference net, (width, top-1 sample) points; `rises`: per model, its per-seed rises (`curve_rises`)."""
    order = {name: family_order(pts) for name, pts in families.items() if pts}
    rise = rise_check(rises, rising_pts)
    reasons = [f"{name} is not ordered by width: " + "; ".join(o["reasons"]) for name, o in order.items()
               if not o["ordered"]]
    if not order:
        reasons.append("no reference family to check the ranking with")
    if rise["short"]:
        reasons.append(f"{len(rise['short'])} of {len(rises)} models have learning curves of fewer than "
                       f"{MIN_CURVE_POINTS} evaluations")
    band = (f"{rise['mean']:+.1f} [{rise['ci_low']:+.1f}, {rise['ci_high']:+.1f}] points over {rise['n']} runs"
            if rise["ci_low"] is not None else None)
    if rise["state"] == "rising":
        reasons.append(f"models were still improving in the last quarter of training: validation top-1 rose "
                       f"{band}, above {rising_pts:g}")
    elif rise["state"] == "cannot tell" and band is None:
        reasons.append(f"whether models were still improving cannot be told: {rise['n']} training run(s) have a "
                       f"learning curve long enough to read (an interval needs 2)")
    elif rise["state"] == "cannot tell":
        reasons.append(f"whether models were still improving cannot be told: the last-quarter rise of validation "
                       f"top-1 is {band}, against {rising_pts:g}")
    rising = {m: r for m, r in rise["per_model"].items() if r > rising_pts}
    return {"ranks": not reasons, "families": order, "rise": rise, "rising": rising, "rising_pts": rising_pts,
            "reasons": reasons,
            "rule": (f"a family is ordered when it has {FAMILY_MIN_WIDTHS}+ widths, no wider net is significantly "
                     f"below a narrower one and the widest is significantly above the narrowest (paired 95% "
                     f"intervals over seeds and test images); models have stopped improving when the pooled "
                     f"last-quarter rise of their validation top-1 is, within its 95% interval, at most "
                     f"{rising_pts:g} point{'' if rising_pts == 1 else 's'}")}


def verdict_line(winner: str, other: str, d: dict[str, Any], metric: str = "top1", scale: float = 100.0,
                 unit: str = "points") -> str:
    """`<winner> beats <other>: +2.1 points [+0.4, +3.8] (3 seeds x 2000 test images)` and the like."""
    if d.get("mean") is None:
        return f"{winner} vs {other}: no shared seed"
    n = len(d["seeds"])
    if n < 2 or d.get("ci_low") is None:
        return f"{winner} vs {other}: {scale * d['mean']:+.2f} {unit} ({ONE_SEED})"
    ci = f" [{scale * d['ci_low']:+.2f}, {scale * d['ci_high']:+.2f}]"
    items = f" x {d['n_items']} test items" if d.get("n_items") else ""
    nets = f", {d['n_nets']} random nets" if d.get("n_nets", 1) > 1 else ""
    return f"{winner} {d['verdict']} {other}: {scale * d['mean']:+.2f} {unit}{ci} ({n} seeds{items}{nets})"
