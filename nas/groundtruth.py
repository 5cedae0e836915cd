"""Ground truth for a search: NAS-Bench-Macro's table, and a search judged by looking its winner up.

The benchmark file (`nas-bench-macro_cifar10.json`, under `$SPNAS_SHARED/datasets/nas-bench-macro/` by
default) maps each 8-digit code to the CIFAR-10 test accuracy of that network trained alone three
times (`test_acc`, `mean_acc`, `std`), its `params` and `flops`. Codes that denote one network share
one record; everything here counts distinct networks (`search_spaces.nasbench_macro.canonical`).

A winner is judged within its budget: among the distinct networks whose cost is at most the budget,
its rank (1 = best mean accuracy), percentile (the share of networks it beats or ties, 100 = best)
and regret (the best network's mean accuracy minus the winner's, in points). The controls are exact,
computed from the table rather than drawn: the expected accuracy of a random network within the budget
and of the best of N random ones (`best_of_n`), sampling codes uniformly as a random search over the
space does (a network with more codes is drawn more often) and keeping those within the budget.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from search_spaces.nasbench_macro import RESOLUTION, all_codes, arch_of, canonical, check_code
from spnas_core.errors import ArchSpecError, InputError, InputNotFoundError

FILE_NAME = "nas-bench-macro_cifar10.json"
RECORD_KEYS = ("test_acc", "mean_acc", "params", "flops")


def default_path() -> Path:
    """`$SPNAS_SHARED/datasets/nas-bench-macro/nas-bench-macro_cifar10.json` (see `spnas_core.paths`)."""
    from spnas_core.paths import shared_dir

    return shared_dir() / "datasets" / "nas-bench-macro" / FILE_NAME


@dataclass(frozen=True)
class Record:
    """One network's figures in the benchmark."""

    code: str  # canonical
    mean_acc: float
    test_acc: tuple[float, ...]
    params: int
    flops: int  # multiply-adds of convs + linear at 32x32
    codes: int  # how many of the 6,561 codes denote this network


class NasBenchMacro:
    """The benchmark's table: one `Record` per distinct network, looked up by any of its codes."""

    def __init__(self, records: Mapping[str, Record], path: Path | None = None) -> None:
        self.records = dict(records)
        self.path = path

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> "NasBenchMacro":
        """Read and check the benchmark file; a missing, truncated or foreign file is one `InputError` line."""
        p = Path(path) if path is not None else default_path()
        if not p.is_file():
            raise InputNotFoundError(f"NAS-Bench-Macro file {p} does not exist: point groundtruth.path (or "
                                     f"$SPNAS_SHARED) at the folder holding datasets/nas-bench-macro/{FILE_NAME}")
        try:
            data = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"NAS-Bench-Macro file {p} is not valid JSON ({str(e).splitlines()[0]}): it is truncated "
                             f"or corrupt; copy it again from the benchmark's release") from None
        return cls.from_dict(data, p)

    @classmethod
    def from_dict(cls, data: Any, path: Path | None = None) -> "NasBenchMacro":
        """Build from the file's JSON object (code -> record), checking it is this benchmark's."""
        where = str(path) if path else "NAS-Bench-Macro table"
        if not isinstance(data, dict) or not data:
            raise InputError(f"{where} is not a NAS-Bench-Macro table: expected a JSON object keyed by 8-digit codes")
        groups: dict[str, list[str]] = {}
        for code, rec in data.items():
            try:
                check_code(code)
            except ArchSpecError:
                raise InputError(f"{where} is not a NAS-Bench-Macro table: key '{str(code)[:40]}' is not an 8-digit "
                                 f"code of 0/1/2") from None
            if not isinstance(rec, dict) or any(k not in rec for k in RECORD_KEYS):
                raise InputError(f"{where} is not a NAS-Bench-Macro table: the record of {code} lacks one of "
                                 f"{', '.join(RECORD_KEYS)}")
            groups.setdefault(canonical(code), []).append(code)
        records = {}
        for canon, codes in groups.items():
            rec = data[canon] if canon in data else data[codes[0]]
            try:
                accs = tuple(float(a) for a in rec["test_acc"])
                records[canon] = Record(canon, float(rec["mean_acc"]), accs, int(rec["params"]), int(rec["flops"]),
                                        len(codes))
            except (TypeError, ValueError):
                raise InputError(f"{where} is not a NAS-Bench-Macro table: the record of {canon} has non-numeric "
                                 f"fields") from None
        return cls(records, path)

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, code: str) -> Record:
        rec = self.records.get(canonical(code))
        if rec is None:
            raise InputError(f"network {code} is not in the NAS-Bench-Macro table {self.path or ''}")
        return rec

    def __contains__(self, code: str) -> bool:
        return canonical(code) in self.records

    def distinct(self) -> list[str]:
        """The canonical codes of every distinct network in the table, sorted."""
        return sorted(self.records)

    def accuracy(self, code: str, seed: int | None = None) -> float:
        """Mean test accuracy (percent) of the network, or one training seed's."""
        rec = self[code]
        return rec.mean_acc if seed is None else rec.test_acc[seed]

    def complete(self) -> bool:
        """Whether every code of the space is present (6,561 codes, 3,969 networks)."""
        return sum(r.codes for r in self.records.values()) == len(all_codes())


# ---------------------------------------------------------------------------------- judging
@dataclass(frozen=True)
class Judged:
    """A network judged within a budget."""

    code: str
    accuracy: float
    cost: float
    budget: float
    within_budget: bool
    rank: int  # 1 = the best network within the budget
    n: int  # distinct networks within the budget
    percentile: float  # share of the budget's networks this one is at least as good as (100 = best)
    regret: float  # best mean accuracy within the budget minus this one's (points)
    best_code: str
    best_accuracy: float

    @property
    def top_pct(self) -> float:
        """Its rank as a share of the budget's networks (top 1% = rank within the first 1%)."""
        return 100.0 * self.rank / self.n

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "accuracy": self.accuracy, "cost": self.cost, "budget": self.budget,
                "within_budget": self.within_budget, "rank": self.rank, "n": self.n,
                "percentile": self.percentile, "top_pct": self.top_pct, "regret": self.regret,
                "best_code": self.best_code, "best_accuracy": self.best_accuracy}

    def sentence(self) -> str:
        """'rank 12 of 1,245 within budget (top 1.0%), regret 0.31 points'."""
        over = "" if self.within_budget else f" (over budget: {self.cost:.4g} > {self.budget:.4g})"
        return (f"rank {self.rank} of {self.n:,} within budget (top {self.top_pct:.1f}%), regret "
                f"{self.regret:.2f} points{over}")


def code_cost(table: Any, resolution: int = RESOLUTION) -> Callable[[str], float]:
    """A code's cost on a cost table (`LatencyTable.predict` of its network at `resolution`), memoised by
    canonical code: judging one network prices every network of the benchmark (`within`), so each is
    decoded once per table, not once per judgement."""
    memo: dict[str, float] = {}

    def cost(code: str) -> float:
        c = canonical(code)
        if c not in memo:
            memo[c] = table.predict(arch_of(c, resolution=resolution))
        return memo[c]

    return cost


def within(table: NasBenchMacro, cost: Callable[[str], float], budget: float) -> list[Record]:
    """The distinct networks whose cost is at most `budget`."""
    return [r for r in table.records.values() if cost(r.code) <= budget * (1 + 1e-12)]


def judge(table: NasBenchMacro, code: str, cost: Callable[[str], float], budget: float) -> Judged:
    """Rank, percentile and regret of `code` among the distinct networks within `budget` (`cost` maps a
    canonical code to the same unit as the budget). A winner over the budget is judged among the networks
    within the budget all the same and flagged: the search broke its constraint."""
    rec = table[code]
    pool = within(table, cost, budget)
    if not pool:
        raise InputError(f"no network of the table costs at most {budget:g}: the budget is below the smallest network")
    accs = [r.mean_acc for r in pool]
    best = max(pool, key=lambda r: r.mean_acc)
    better = sum(a > rec.mean_acc for a in accs)
    not_better = sum(a <= rec.mean_acc for a in accs)
    c = cost(rec.code)
    return Judged(rec.code, rec.mean_acc, c, budget, c <= budget * (1 + 1e-12), better + 1, len(pool),
                  100.0 * not_better / len(pool), best.mean_acc - rec.mean_acc, best.code, best.mean_acc)


def best_of_n(values: Sequence[float], weights: Sequence[float], n: int) -> float:
    """Expected maximum of `n` independent draws from a discrete distribution (exact order statistics):
    E[max] = sum_i v_i (F(v_i)^n - F(v_i^-)^n), F the cumulative weight share. `n=1` is the mean."""
    if n < 1:
        raise ValueError("best_of_n needs n >= 1")
    if not values:
        raise ValueError("best_of_n needs at least one value")
    pairs = sorted(zip(values, weights))
    total = float(sum(w for _, w in pairs))
    out, cum, i = 0.0, 0.0, 0
    while i < len(pairs):  # equal values form one atom
        j, w = i, 0.0
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            w += pairs[j][1]
            j += 1
        lo = cum / total
        cum += w
        out += pairs[i][0] * ((cum / total) ** n - lo ** n)
        i = j
    return out


def random_controls(table: NasBenchMacro, cost: Callable[[str], float], budget: float,
                    ns: Iterable[int] = (1, 10, 50)) -> dict[str, Any]:
    """Exact random-search controls within a budget: for each N, the expected mean accuracy of the best of
    N random networks (codes drawn uniformly from the space, kept when within the budget) and the expected
    rank that accuracy corresponds to."""
    pool = within(table, cost, budget)
    vals = [r.mean_acc for r in pool]
    w = [r.codes for r in pool]
    out: dict[str, Any] = {"n_within": len(pool), "budget": budget}
    for n in ns:
        e = best_of_n(vals, w, n)
        out[f"best_of_{n}"] = e
        out[f"best_of_{n}_rank"] = 1 + sum(v > e for v in vals)
    out["best"] = max(vals)
    return out


def depth_then_cost(table: NasBenchMacro, cost: Callable[[str], float], budget: float) -> str:
    """The rule that needs no training: the deepest network within the budget (most non-identity layers),
    the costliest of those (ties: the lowest code). Tau 0.68 with the truth on this benchmark."""
    from search_spaces.nasbench_macro import depth

    pool = within(table, cost, budget)
    return max(pool, key=lambda r: (depth(r.code), cost(r.code), -int(r.code))).code


def costliest(table: NasBenchMacro, cost: Callable[[str], float], budget: float) -> str:
    """FLOPs (or latency) alone: the costliest network within the budget."""
    pool = within(table, cost, budget)
    return max(pool, key=lambda r: (cost(r.code), -int(r.code))).code


def kendall_with_ci(x: Sequence[float], y: Sequence[float], n_boot: int = 1000, seed: int = 0,
                    level: float = 0.95) -> dict[str, float]:
    """Kendall's tau-b of two rankings with a bootstrap interval over the networks (resampled with
    replacement), and n."""
    import numpy as np
    from scipy.stats import kendalltau

    x, y = np.asarray(x, float), np.asarray(y, float)
    tau = float(kendalltau(x, y)[0])
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, len(x), len(x))
        t = kendalltau(x[i], y[i])[0]
        if not math.isnan(t):
            boots.append(t)
    lo, hi = (float(np.quantile(boots, (1 - level) / 2)), float(np.quantile(boots, (1 + level) / 2))) if boots \
        else (math.nan, math.nan)
    return {"tau": tau, "low": lo, "high": hi, "n": int(len(x))}


def judge_search(summary: dict[str, Any], table: NasBenchMacro, cost: Callable[[str], float]) -> dict[str, Any]:
    """A search's winner (and its derived network, where a finalists step changed it) judged within the search's
    budget, beside the exact controls and the rules that need no training: what `spnas-search` prints and
    `search_summary.json` records under `groundtruth`."""
    from search_spaces.nasbench_macro import code_of

    budget = summary.get("target_ms")
    if budget is None:
        budget = summary["cost"]  # no budget (loss=log): judged among the networks no costlier than the winner
    winner = code_of(summary["choices"])
    out: dict[str, Any] = {"budget": budget, "winner": judge(table, winner, cost, budget).to_dict(),
                           "controls": random_controls(table, cost, budget),
                           "depth_then_cost": judge(table, depth_then_cost(table, cost, budget), cost,
                                                    budget).to_dict()}
    derived = summary.get("derived_choices")
    if derived and list(derived) != list(summary["choices"]):
        out["derived"] = judge(table, code_of(derived), cost, budget).to_dict()
    return out


def describe_judgement(j: dict[str, Any], unit: str) -> list[str]:
    """The lines `spnas-search` prints: the winner's rank, percentile and regret beside the controls."""
    w, c = j["winner"], j["controls"]
    lines = [f"ground truth (NAS-Bench-Macro, {w['n']:,} networks within {j['budget']:.4g} {unit}): the winner "
             f"{w['code']} scores {w['accuracy']:.2f}%: rank {w['rank']} of {w['n']:,} within budget (top "
             f"{w['top_pct']:.1f}%), regret {w['regret']:.2f} points (best {w['best_code']}, {w['best_accuracy']:.2f}%)"]
    if not w["within_budget"]:
        lines.append(f"  the winner costs {w['cost']:.4g} {unit}, over the budget")
    lines.append(f"  controls: a random network within budget {c['best_of_1']:.2f}%, best of 10 random "
                 f"{c['best_of_10']:.2f}% (rank about {c['best_of_10_rank']}), best of 50 {c['best_of_50']:.2f}% "
                 f"(rank about {c['best_of_50_rank']}); the deepest network within budget "
                 f"{j['depth_then_cost']['accuracy']:.2f}% (rank {j['depth_then_cost']['rank']})")
    if "derived" in j:
        d = j["derived"]
        lines.append(f"  the threshold decisions alone (before the finalists) picked {d['code']}: {d['accuracy']:.2f}%, "
                     f"rank {d['rank']}")
    return lines
