"""How well a table predicts whole networks: error metrics, the validation sample, the scatter plot."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from search_spaces import SKIP, ArchSpec, SearchSpace
from spnas_core.errors import TableError


def error_metrics(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """MAPE (%), RMSE (ms), Kendall tau, and the share of predictions within +-10% of measured."""
    from scipy.stats import kendalltau

    p = np.asarray(predicted, dtype=float)
    m = np.asarray(measured, dtype=float)
    if p.shape != m.shape or p.size == 0:
        raise TableError("predicted and measured must be non-empty and the same length")
    rel = (p - m) / m
    tau = float(kendalltau(p, m)[0]) if p.size > 1 else float("nan")
    return {
        "n": int(p.size),
        "mape_pct": float(np.mean(np.abs(rel)) * 100),
        "rmse_ms": float(math.sqrt(np.mean((p - m) ** 2))),
        "kendall_tau": tau,
        "within_10pct": float(np.mean(np.abs(rel) <= 0.10)),
        "max_abs_err_pct": float(np.max(np.abs(rel)) * 100),
        "bias_pct": float(np.mean(rel) * 100),
    }


def sample_validation_archs(space: SearchSpace, n: int, seed: int = 0, resolution: int = 224,
                            num_classes: int = 1000) -> list[ArchSpec]:
    """`n` distinct architectures spread over the space's latency range.

    Uniform sampling concentrates around the mean size (every layer averages out), so each
    architecture first draws its own preference for big kernels, big expansions and skips, then
    samples layers with those odds: small and large networks are both represented.
    """
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[ArchSpec] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 100 * n:
            raise TableError("could not draw enough distinct architectures")
        p_big_k, p_big_e, p_skip = rng.random(), rng.random(), rng.random() * 0.6
        choices = []
        for slot in space.slots:
            if SKIP in slot.choices and rng.random() < p_skip:
                choices.append(SKIP)
                continue
            ks = sorted({int(c.split("_")[0][1:]) for c in space.choices})
            es = sorted({int(c.split("_")[1][1:]) for c in space.choices})
            k = ks[-1] if rng.random() < p_big_k else ks[0]
            e = es[-1] if rng.random() < p_big_e else es[0]
            choices.append(f"k{k}_e{e}")
        arch = space.decode(choices, resolution, 1.0, num_classes, name=f"sample-{len(out):03d}")
        s = arch.to_string()
        if s not in seen:
            seen.add(s)
            out.append(arch)
    return out


def scatter_plot(predicted: Sequence[float], measured: Sequence[float], path: str | Path, title: str,
                 labels: Sequence[str] | None = None, metrics: dict[str, Any] | None = None) -> Path:
    """Predicted vs measured with the y = x line and the +-10% band, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = np.asarray(predicted, dtype=float)
    m = np.asarray(measured, dtype=float)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    lo, hi = float(min(p.min(), m.min())) * 0.9, float(max(p.max(), m.max())) * 1.1
    xs = np.linspace(lo, hi, 10)
    ax.plot(xs, xs, "k-", lw=1, label="y = x")
    ax.fill_between(xs, xs * 0.9, xs * 1.1, color="0.85", label="±10%")
    special = [i for i, lab in enumerate(labels or []) if lab and not lab.startswith("sample")]
    rest = [i for i in range(len(p)) if i not in special]
    ax.scatter(m[rest], p[rest], s=14, label="sampled architectures")
    for i in special:
        ax.scatter(m[i], p[i], s=40, marker="*")
        ax.annotate(labels[i], (m[i], p[i]), fontsize=7, xytext=(4, -8), textcoords="offset points")  # type: ignore[index]
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    if metrics:
        title += (f"\nMAPE {metrics['mape_pct']:.2f}%, τ {metrics['kendall_tau']:.3f}, "
                  f"within ±10%: {metrics['within_10pct'] * 100:.0f}%")
    ax.set_title(title, fontsize=9)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
