"""Pictures of a search: predicted latency and accuracy per epoch, and every layer's decision."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from search_spaces import SearchSpace
from search_spaces.space import CHOICE_ORDER

CHOICE_COLORS = ("#c6dbef", "#6baed6", "#fdae6b", "#e6550d", "#eeeeee")  # one per CHOICE_ORDER entry


def choice_index(choice: str) -> int:
    """Position of a choice in the display order (unknown choices share the first colour)."""
    return CHOICE_ORDER.index(choice) if choice in CHOICE_ORDER else 0


def choice_cmap():
    """The colour map of `CHOICE_ORDER` (matplotlib)."""
    from matplotlib.colors import ListedColormap

    return ListedColormap(list(CHOICE_COLORS[: len(CHOICE_ORDER)]))


def plot_search(history: Sequence[dict[str, Any]], space: SearchSpace, run_dir: Path, title: str) -> list[str]:
    """Predicted latency over epochs, and every layer's decision over epochs (PNG)."""
    if not history:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(7, 6.5), gridspec_kw={"height_ratios": [1, 1.4]})
    a1.plot(epochs, [h["predicted_ms"] for h in history], "o-", label="predicted latency (derived arch)")
    if history[-1].get("target_ms"):
        a1.axhline(history[-1]["target_ms"], color="r", ls="--", label="target")
    a1.set_ylabel("ms")
    a1.set_xlabel("epoch")
    ax2 = a1.twinx()
    ax2.plot(epochs, [h["val_top1"] for h in history], "s-", color="tab:green", label="val top-1")
    ax2.set_ylabel("val top-1")
    a1.legend(loc="upper right", fontsize=7)
    a1.set_title(f"Single-Path NAS search: {title}", fontsize=9)
    grid = [[choice_index(c) for c in h["choices"]] for h in history]
    n = len(CHOICE_ORDER)
    im = a2.imshow(list(map(list, zip(*grid))), aspect="auto", cmap=choice_cmap(), vmin=-0.5, vmax=n - 0.5,
                   extent=(epochs[0] - 0.5, epochs[-1] + 0.5, space.num_layers - 0.5, -0.5))
    cb = fig.colorbar(im, ax=a2, ticks=range(n))
    cb.ax.set_yticklabels(list(CHOICE_ORDER))
    a2.set_xlabel("epoch")
    a2.set_ylabel("searchable layer")
    fig.tight_layout()
    path = run_dir / "search_progress.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [str(path)]
