"""Ground truth for the search (NAS-Bench-Macro): does the single-path search pick better networks than
random, than the rules that need no training, and does its trained supernet rank networks as training
them alone does?

    python -m bench.bench_groundtruth [--seeds 0 1 2 3 4] [--targets 30 45 60] [--cost flops]
        [--rank-nets 500] [--proxy-samples 50] [--device cpu] [--jobs N] [--quick] [--out DIR] [overrides ...]

Overrides are `spnas-search`'s, applied after the preset `experiment=nasbench_macro` (the search this
harness measures is the one `spnas-search experiment=nasbench_macro` runs). Every figure is looked up
in the benchmark's table (`nas.groundtruth`): 3,969 distinct networks trained alone on CIFAR-10, three
seeds each. For each cost target T (MFLOPs with `--cost flops`, or ms on a latency table):

1. controls, exact from the table: a random network within the budget (expectation), the best of 10
   and of 50 random ones (codes drawn uniformly, kept within the budget), the deepest network within
   the budget (depth, then cost), the costliest one (FLOPs alone);
2. training-free searches: `--proxy-samples` random networks within the budget, the best by NASWOT
   and by SynFlow (one random initialisation and one batch of training images per seed);
3. the single-path search, per seed: one warm-up shared by every target, then a search per target
   from it (`run_warmup` / `run_search`, as the pipeline runs them); its derived network (the threshold
   decisions alone) and its winner (after the finalists step, where the preset has one);
4. ranking: Kendall tau (bootstrap interval) between the held-out loss inside the supernet (BatchNorm
   recalibrated per network, decisions fixed) and the truth, over `--rank-nets` distinct networks,
   overall and within cost bands, at the end of every warm-up epoch of the first seed (a curve over
   training steps); beside it the ranker the finalists use, as the preset's `search.finalists` sets it
   (NASWOT's rank averaged with the layer count's, and with the supernet's where `supernet` is on), the
   depth rule, FLOPs, and the seed-to-seed ceiling (one training seed of the benchmark against another).

On the CPU the warm-ups, searches and training-free searches run as tasks in `--jobs` worker processes
(a search starts once its seed's warm-up is saved), each with its share of the cores: on 2 cores two
one-thread workers train about 1.35x as many steps per second as one two-thread process, since the
small convolutions, BatchNorms and activations of a 32x32 network scale poorly across threads. Each task
is what the sequential harness runs (same functions, seeds and files), so a finished task is reused either
way and `--jobs 1` gives the same picks at the same thread count.

Per target and method: mean accuracy over seeds with a t interval, the winner's rank, percentile and
regret within the budget, how many seeds land in the top 5%, and the paired difference to the best of
10 random (exact, so the interval is over search seeds). Wall time of each part. Finished searches are
reused from `--out` (a killed run resumes). Plots: accuracy per method and target, and the tau curve.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from bench.common import RESULTS, record

BANDS = 10.0  # width of the cost bands that rankings are also judged within (MFLOPs, or ms)


def parse(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--targets", type=float, nargs="+", default=[30.0, 45.0, 60.0],
                   help="cost budgets (MFLOPs with --cost flops)")
    p.add_argument("--cost", default="flops", help="flops | host | sd845 | ...: the cost term and the budget's unit")
    p.add_argument("--rank-nets", type=int, default=500, help="distinct networks in the ranking curve")
    p.add_argument("--rank-points", type=float, nargs="+", default=[0.5, 1.0],
                   help="where on the first seed's warm-up the ranking is measured (shares of its steps)")
    p.add_argument("--rank-recal", type=int, default=0, help="images re-estimating BatchNorm per ranked network (0: "
                                                           "each held-out batch normalised by its own statistics)")
    p.add_argument("--rank-eval", type=int, default=256, help="held-out images each ranked network is scored on")
    p.add_argument("--proxy-samples", type=int, default=50, help="random networks a training-free search scores")
    p.add_argument("--device", default="cpu", help="cpu | cuda (scripts/gpu_check.sh runs the harness on a GPU)")
    p.add_argument("--jobs", type=int, default=None,
                   help="worker processes running warm-ups and searches side by side, the threads (`threads=`, "
                        "default every core) split among them (default: one per core up to one per seed on the CPU, "
                        "1 on a GPU); 1 runs everything in this process")
    p.add_argument("--quick", action="store_true", help="a tiny run to check the harness (seconds of training)")
    p.add_argument("--out", default="runs/groundtruth", help="run folder (finished searches are reused)")
    p.add_argument("--record-as", default="bench_groundtruth",
                   help="results name: a variant of the preset tried on the harness (overrides after the flags) "
                        "goes to its own bench/results/<name>.jsonl and docs section, not the preset's")
    p.add_argument("--table", default=None, help="the benchmark file (default: under $SPNAS_SHARED)")
    return p.parse_known_args(argv)


# ---------------------------------------------------------------------------------- pieces
def mean_ci(xs: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t interval (nan half-width with one value)."""
    from spnas_core.stats import t_quantile

    m = statistics.fmean(xs)
    if len(xs) < 2:
        return m, math.nan, math.nan
    h = t_quantile(0.95, len(xs) - 1) * statistics.stdev(xs) / math.sqrt(len(xs))
    return m, m - h, m + h


def sample_within(codes: list[str], cost: Callable[[str], float], budget: float, n: int, rng: random.Random,
                  limit: int = 200_000) -> list[str]:
    """`n` codes drawn uniformly from the space and kept when within the budget (a random search's draws)."""
    out: list[str] = []
    for _ in range(limit):
        c = rng.choice(codes)
        if cost(c) <= budget:
            out.append(c)
            if len(out) == n:
                break
    return out


def training_free(gt: Any, cost: Callable[[str], float], budget: float, seed: int, n: int, x: Any) -> dict[str, str]:
    """The best of `n` random networks within the budget by NASWOT, by SynFlow, and by NASWOT + layers (the
    finalists' ranker: the mean of NASWOT's and the layer count's ranks, the costlier first on a tie), one init
    per seed (NASWOT over one prefix tree of the draws), a code drawn twice scored once."""
    from nas.finalists import rank_finalists
    from nas.proxies import naswot_scores, score_arch
    from search_spaces.nasbench_macro import all_codes, arch_of, canonical, choices_of, code_of

    rng = random.Random(10_007 * seed + int(budget * 1000))
    codes = sample_within(all_codes(), cost, budget, n, rng)
    distinct = list(dict.fromkeys(codes))
    naswot = naswot_scores([arch_of(c) for c in distinct], x, seed)  # one prefix tree over the draws
    scores = {c: {"naswot": nw, "synflow": score_arch(arch_of(c), "synflow", x, seed)}
              for c, nw in zip(distinct, naswot)}
    out = {proxy: canonical(max(codes, key=lambda c: scores[c][proxy])) for proxy in ("naswot", "synflow")}
    # the finalists' own ranker (nas.finalists.rank_finalists), on these draws instead of a neighbourhood
    ranked = rank_finalists(None, [choices_of(c) for c in scores], lambda ch: cost(code_of(ch)), budget, None,
                            lambda ch: scores[code_of(ch)]["naswot"], depth="layers", supernet=False)
    out["naswot_layers"] = canonical(code_of(ranked[0].choices))
    return out


def ranking_sample(gt: Any, n: int, seed: int = 123) -> list[str]:
    """`n` distinct networks, uniformly among the table's (fixed across runs)."""
    return random.Random(seed).sample(gt.distinct(), min(n, len(gt)))


def band_taus(pred: list[float], truth: list[float], costs: list[float], width: float) -> list[dict[str, Any]]:
    """Kendall tau within consecutive cost bands of `width` (bands with at least 20 networks)."""
    from spnas_core.stats import kendall_tau

    out = []
    lo = math.floor(min(costs) / width) * width
    while lo <= max(costs):
        idx = [i for i, c in enumerate(costs) if lo <= c < lo + width]
        if len(idx) >= 20:
            out.append({"band": f"{lo:g}-{lo + width:g}", "n": len(idx),
                        "tau": kendall_tau([pred[i] for i in idx], [truth[i] for i in idx])})
        lo += width
    return out


def tau_record(pred: list[float], truth: list[float], costs: list[float], width: float, n_boot: int = 500
               ) -> dict[str, Any]:
    """Overall tau with its bootstrap interval, the per-band taus and their n-weighted mean."""
    from nas.groundtruth import kendall_with_ci

    overall = kendall_with_ci(pred, truth, n_boot=n_boot)
    bands = band_taus(pred, truth, costs, width)
    within = sum(b["tau"] * b["n"] for b in bands) / max(1, sum(b["n"] for b in bands))
    return {**overall, "bands": bands, "within": within}


def rank_mean(*columns: list[float]) -> list[float]:
    """Higher is better: minus the mean of each item's ranks (1 = best) over the columns."""
    from nas.finalists import average_ranks

    ranks = [average_ranks(c) for c in columns]
    return [-statistics.fmean(r[i] for r in ranks) for i in range(len(columns[0]))]


# ---------------------------------------------------------------------------------- tasks
@dataclass
class Bench:
    """What every task needs, built once per process (the harness's own, or each worker's): the composed
    preset, the space, the cost table, the ground truth and the decoded data."""

    args: argparse.Namespace
    preset: list[str]
    cfg: Any
    space: Any
    table: Any
    gt: Any
    cost: Callable[[str], float]
    data: Any
    data_s: float
    threads: int | None

    @property
    def out(self) -> Path:
        return Path(self.args.out)

    def runtime(self) -> Any:
        from training.config import Runtime

        return Runtime(device=self.args.device, threads=self.threads)


def quick_preset(args: argparse.Namespace) -> list[str]:
    """`--quick`'s tiny settings (and its smaller ranking and training-free sizes, set on `args`)."""
    args.rank_nets, args.rank_recal, args.rank_eval = min(args.rank_nets, 24), 0, 64
    args.proxy_samples = min(args.proxy_samples, 4)
    return ["search.steps=24", "search.warmup_fraction=0.5", "search.min_threshold_updates=8",
            "search.decision_window_steps=4", "search.batch_size=32", "data.train_limit=800",
            "data.val_limit=400", "search.finalists.radius=1", "search.finalists.eval_images=64",
            "search.finalists.recal_images=32"]


def build_bench(args: argparse.Namespace, preset: list[str], threads: int | None) -> Bench:
    """Compose the preset with the user's overrides (`preset` holds both) and load what the tasks share."""
    import spnas
    from latency_tables.lookup.table import LatencyTable
    from nas.groundtruth import NasBenchMacro, code_cost
    from search_spaces import SearchSpace
    from spnas.app.jobs.commands import resolve_soc
    from training.datasets import load_data

    cfg = spnas.compose("search", preset)
    space = SearchSpace.from_config(cfg.space)
    if space.name != "nasbench_macro":
        raise SystemExit("bench_groundtruth judges searches of space=nasbench_macro (its ground truth)")
    table = LatencyTable.load(resolve_soc(cfg).table)
    gt = NasBenchMacro.load(args.table)
    t0 = time.perf_counter()
    data = load_data(cfg.data, 0)
    return Bench(args, preset, cfg, space, table, gt, code_cost(table), data, time.perf_counter() - t0, threads)


class RankingCurve:
    """The supernet's ranking of `--rank-nets` networks against the truth at chosen steps of the first seed's
    warm-up (`on_step`), beside the finalists' ranker on the same networks."""

    def __init__(self, b: Bench, naswot: list[float]) -> None:
        from nas.ranking import RankingImages
        from search_spaces.nasbench_macro import depth

        args, cfg = b.args, b.cfg
        self.codes = ranking_sample(b.gt, args.rank_nets)
        self.images = RankingImages.from_split(b.data.val, args.rank_recal, args.rank_eval, seed=1)
        self.truth = [b.gt[c].mean_acc for c in self.codes]
        self.costs = [b.cost(c) for c in self.codes]
        self.naswot = naswot
        # the finalists' ranker (the preset's search.finalists): NASWOT's rank averaged with, for
        # proxy=naswot_depth, the depth rule's (layers kept, then cost) or, for naswot_layers, the layer count's
        # (ties averaged), and with the supernet's where search.finalists.supernet is on
        fproxy = cfg.search.finalists.proxy.name
        self.with_supernet = bool(cfg.search.finalists.supernet)
        self.depth_cost = [depth(c) * 1e6 + b.cost(c) for c in self.codes]
        self.layers = [float(depth(c)) for c in self.codes]
        self.hybrid_columns = ([naswot] if fproxy != "none" else []) + \
            {"naswot_depth": [self.depth_cost], "naswot_layers": [self.layers]}.get(fproxy, [])
        self.hybrid_name = "finalists' ranker: " + " + ".join(
            (["supernet"] if self.with_supernet else []) +
            {"naswot": ["NASWOT"], "naswot_depth": ["NASWOT", "depth then cost"],
             "naswot_layers": ["NASWOT", "layers"]}.get(fproxy, []))
        if not self.hybrid_columns and not self.with_supernet:
            raise SystemExit("search.finalists ranks by nothing (proxy=none, supernet=false): set one of them")
        warm_steps = round(cfg.search.warmup_fraction * cfg.search.steps)
        self.at = {max(1, round(warm_steps * f)) for f in args.rank_points}
        self.points: list[dict[str, Any]] = []
        self.wall = 0.0

    def on_step(self, step: int, net: Any) -> None:
        if step not in self.at:
            return
        from nas.ranking import score_paths
        from search_spaces.nasbench_macro import choices_of

        t = time.perf_counter()
        scores = score_paths(net, [choices_of(c) for c in self.codes], self.images)
        sup = [-s.loss for s in scores]
        self.points.append({"step": step, "supernet": tau_record(sup, self.truth, self.costs, BANDS),
                            "hybrid": tau_record(rank_mean(*([sup] if self.with_supernet else []),
                                                           *self.hybrid_columns), self.truth, self.costs, BANDS),
                            "score_s": time.perf_counter() - t})
        self.wall += time.perf_counter() - t
        c = self.points[-1]
        print(f"ranking at step {step}: supernet tau {c['supernet']['tau']:.3f} (within bands "
              f"{c['supernet']['within']:.3f}), hybrid {c['hybrid']['tau']:.3f} ({c['hybrid']['within']:.3f})",
              flush=True)


def task_warmup(b: Bench, seed: int, naswot: list[float] | None) -> dict[str, Any]:
    """A seed's warm-up (`run_warmup`, reused when saved); with `naswot`, the ranking curve is scored during it
    and written to `ranking_curve.json`."""
    from nas.search import run_warmup
    from spnas_core.files import write_json_atomic

    t0 = time.perf_counter()
    curve = RankingCurve(b, naswot) if naswot is not None else None
    warm = run_warmup(b.cfg.search, b.space, b.data, b.out / f"s{seed}" / "warmup", proxy=b.cfg.proxy, seed=seed,
                      runtime=b.runtime(), on_step=curve.on_step if curve else None)
    if curve is not None and curve.points:
        write_json_atomic(b.out / "ranking_curve.json", curve.points)
    return {"warmup": str(warm), "wall": time.perf_counter() - t0, "rank_wall": curve.wall if curve else 0.0}


def task_search(b: Bench, seed: int, T: float, warm: str) -> dict[str, Any]:
    """A search for target T forked from the seed's warm-up (`run_search`, reused when finished)."""
    from nas.search import run_search
    from search_spaces.nasbench_macro import code_of

    t0 = time.perf_counter()
    run_dir = b.out / f"s{seed}" / f"T{T:g}"
    summary_path = run_dir / "search_summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
    else:
        scfg = replace(b.cfg.search, target_ms=T, target_fraction_of=None)
        summary = run_search(scfg, b.space, b.table, b.data, run_dir, proxy=b.cfg.proxy, name=f"T{T:g}", seed=seed,
                             runtime=b.runtime(), warmup=warm)
    return {"winner": code_of(summary["choices"]), "derived": code_of(summary.get("derived_choices")
                                                                      or summary["choices"]),
            "wall_s": summary.get("search_wall_s"), "wall": time.perf_counter() - t0}


def task_free(b: Bench, seed: int) -> dict[str, Any]:
    """The training-free searches of one seed, at every target."""
    import torch

    from training.batches import to_tensor

    t0 = time.perf_counter()
    if b.threads:
        torch.set_num_threads(b.threads)
    x_seed = to_tensor(b.data.train.images[torch.randperm(len(b.data.train), generator=torch.Generator()
                                                          .manual_seed(seed))[:64].numpy()])
    free = {T: training_free(b.gt, b.cost, T, seed, b.args.proxy_samples, x_seed) for T in b.args.targets}
    return {"free": free, "wall": time.perf_counter() - t0}


def keep_freed_memory() -> bool:
    """Have glibc serve every allocation from the heap and keep what is freed (mallopt: M_MMAP_MAX 0,
    M_TRIM_THRESHOLD 2 GiB), so a training step's large activations reuse the pages of the step before instead
    of mapping fresh ones the kernel must zero: on one thread, a threshold step of this space at batch 96 took
    about 100k page faults and 0.2-0.3 s of kernel time of its ~2.1 s, and 10-15% less time without them. The
    price is that a process keeps its peak memory. Returns False where there is no glibc (nothing changes)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-4, 0)) and bool(libc.mallopt(-1, ctypes.c_int(2**31 - 1)))  # M_MMAP_MAX, M_TRIM
    except (OSError, AttributeError):
        return False


_WORKER: dict[str, Bench] = {}


def _die_with_parent() -> None:
    """Linux: have the kernel stop this worker when the harness process dies (a killed harness would otherwise
    leave workers that finish their task and then wait forever, holding their memory, while a re-run trains the
    same folders)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _init_worker(args: argparse.Namespace, preset: list[str], threads: int) -> None:
    """A worker process's `Bench` (its data decoded once, its share of the cores, freed memory kept)."""
    import torch

    _die_with_parent()
    keep_freed_memory()
    torch.set_num_threads(threads)
    _WORKER["bench"] = build_bench(args, preset, threads)


def _run_in_worker(task: tuple[Any, ...]) -> dict[str, Any]:
    import os

    return {**run_task(_WORKER["bench"], task), "pid": os.getpid()}


def run_task(b: Bench, task: tuple[Any, ...]) -> dict[str, Any]:
    """One task: ("warmup", seed, naswot|None), ("search", seed, T, warmup path) or ("free", seed)."""
    kind = task[0]
    if kind == "warmup":
        return task_warmup(b, task[1], task[2])
    if kind == "search":
        return task_search(b, task[1], task[2], task[3])
    if kind == "free":
        return task_free(b, task[1])
    raise ValueError(f"unknown task {task!r}")


def task_order(seeds: list[int], targets: list[float]) -> list[tuple[str, int, float | None]]:
    """The tasks in the order they are handed out: warm-ups first (the longest, and each unlocks its seed's
    searches), then the searches, then the short training-free searches, which fill the workers' tails."""
    return ([("warmup", s, None) for s in seeds] + [("search", s, T) for s in seeds for T in targets]
            + [("free", s, None) for s in seeds])


def run_tasks(b: Bench, jobs: int, threads: int, naswot_first: list[float] | None
              ) -> tuple[dict[int, str], dict[tuple[int, float], dict[str, Any]], dict[int, dict[str, Any]],
                         dict[str, float], list[int]]:
    """Every seed's warm-up, searches and training-free searches, in this process (`jobs` 1) or in `jobs`
    workers of `threads` threads each (a search is handed out once its seed's warm-up is done). Prints a line per
    finished task with the elapsed time and an estimate of what is left. Returns the warm-ups' paths, the
    searches, the training-free picks, the summed wall time of each kind of task (worker-seconds) and the ids of
    the processes that ran them."""
    import os

    seeds, targets = b.args.seeds, b.args.targets
    todo = task_order(seeds, targets)
    warm: dict[int, str] = {}
    searches: dict[tuple[int, float], dict[str, Any]] = {}
    free: dict[int, dict[str, Any]] = {}
    walls = {"warmups": 0.0, "searches": 0.0, "training_free": 0.0, "ranking_scoring": 0.0}
    n_all, t0 = len(todo), time.perf_counter()
    done_walls: list[float] = []
    by_kind: dict[str, list[float]] = {}
    running: dict[Any, tuple[str, int, float | None]] = {}
    pids: set[int] = set()  # the processes that ran the tasks

    def payload(t: tuple[str, int, float | None]) -> tuple[Any, ...]:
        kind, seed, T = t
        if kind == "warmup":
            return ("warmup", seed, naswot_first if seed == seeds[0] else None)
        if kind == "search":
            return ("search", seed, T, warm[seed])
        return ("free", seed)

    def finished(t: tuple[str, int, float | None], r: dict[str, Any]) -> None:
        kind, seed, T = t
        if kind == "warmup":
            warm[seed] = r["warmup"]
            walls["warmups"] += r["wall"] - r["rank_wall"]
            walls["ranking_scoring"] += r["rank_wall"]
        elif kind == "search":
            searches[(seed, T)] = r
            walls["searches"] += r["wall"]
        else:
            free[seed] = r["free"]
            walls["training_free"] += r["wall"]
        done_walls.append(r["wall"])
        if r["wall"] >= 1.0:  # not a finished task reused from an earlier run
            by_kind.setdefault(kind, []).append(r["wall"])
        pids.add(r.get("pid", os.getpid()))
        elapsed = time.perf_counter() - t0
        # what is left: each task not finished at the mean time of its kind so far (of all tasks, for a kind
        # not seen yet), shared by the workers; a rough figure (the last tasks may leave a worker idle)
        worked = [w for ws in by_kind.values() for w in ws]
        mean_all = statistics.fmean(worked) if worked else 0.0
        pending = [k for k, _, _ in todo] + [k for k, _, _ in running.values()]
        left = sum(statistics.fmean(by_kind[k]) if k in by_kind else mean_all for k in pending) / max(1, jobs)
        print(f"[{len(done_walls)}/{n_all}] {kind} seed {seed}{'' if T is None else f' at {T:g}'}: "
              f"{r['wall'] / 60:.1f} min; {elapsed / 60:.1f} min elapsed, about {left / 60:.0f} min left", flush=True)

    def ready(t: tuple[str, int, float | None]) -> bool:
        return t[0] != "search" or t[1] in warm

    if jobs <= 1:
        while todo:
            t = todo.pop(0)
            finished(t, run_task(b, payload(t)))
        return warm, searches, free, walls, sorted(pids)

    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                             initargs=(b.args, b.preset, threads)) as pool:
        try:
            while todo or running:
                for t in [t for t in todo if ready(t)][:jobs - len(running)]:
                    todo.remove(t)
                    running[pool.submit(_run_in_worker, payload(t))] = t
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for f in done:
                    finished(running.pop(f), f.result())
        except BaseException:
            print(f"the harness stops: waiting for the {len(running)} running task(s) to end; finished warm-ups and "
                  f"searches are kept in {b.out} and reused when it runs again", flush=True)
            raise
    return warm, searches, free, walls, sorted(pids)


# ---------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    args, overrides = parse(argv)
    import os

    from nas.groundtruth import costliest, depth_then_cost, judge, random_controls
    from nas.proxies import naswot_scores
    from search_spaces.nasbench_macro import arch_of, depth
    from training.batches import to_tensor

    t_start = time.perf_counter()
    walls: dict[str, float] = {}
    preset = ["experiment=nasbench_macro", f"soc={args.cost}", f"device={args.device}"]
    if args.quick:
        preset += quick_preset(args)
    if args.jobs is not None and args.jobs < 1:  # refused before the table and the data are loaded
        raise SystemExit(f"--jobs {args.jobs}: give 1 (every task in this process) or more worker processes")
    if len(set(args.seeds)) != len(args.seeds):
        raise SystemExit(f"--seeds {' '.join(map(str, args.seeds))}: each seed once (a seed's tasks share its folder)")
    b = build_bench(args, preset + overrides, None)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = b.cfg.threads or usable or 1
    jobs = args.jobs or (1 if args.device != "cpu" else max(1, min(cores, len(args.seeds))))
    threads = max(1, cores // jobs)
    b.threads = b.cfg.threads if jobs == 1 else threads
    if jobs == 1:
        keep_freed_memory()  # for the tasks this process runs itself; workers do it on start
    gt, cost, data = b.gt, b.cost, b.data
    table = b.table
    out = b.out
    out.mkdir(parents=True, exist_ok=True)
    walls["data"] = b.data_s

    # 1. exact controls ---------------------------------------------------------------------------------
    t0 = time.perf_counter()
    controls = {T: random_controls(gt, cost, T) for T in args.targets}
    rules = {T: {"depth_then_cost": depth_then_cost(gt, cost, T), "cost_alone": costliest(gt, cost, T)}
             for T in args.targets}
    walls["controls"] = time.perf_counter() - t0

    # 2. ranking sample (scored during the first seed's warm-up) ----------------------------------------
    rank_codes = ranking_sample(gt, args.rank_nets)
    curve_path = out / "ranking_curve.json"
    t0 = time.perf_counter()
    x_proxy = to_tensor(data.train.images[:64])
    naswot = naswot_scores([arch_of(c) for c in rank_codes], x_proxy, 0)
    walls["ranking_naswot"] = time.perf_counter() - t0
    ranker = RankingCurve(b, naswot)  # the finalists' ranker's columns and name (the curve itself: the first warm-up)
    truth, costs = ranker.truth, ranker.costs  # of ranking_sample's codes, as rank_codes
    hybrid_name, depth_cost, layers = ranker.hybrid_name, ranker.depth_cost, ranker.layers

    # 3. warm-ups, searches and training-free searches, per seed (in `jobs` workers) --------------------
    print(f"{len(args.seeds)} seeds x {len(args.targets)} targets in {jobs} "
          f"{'worker' if jobs == 1 else 'workers'} of {b.threads or 'default'} threads", flush=True)
    t0 = time.perf_counter()
    _, done, free, task_walls, processes = run_tasks(b, jobs, threads, None if curve_path.exists() else naswot)
    walls.update(task_walls)
    walls["tasks_elapsed"] = time.perf_counter() - t0
    searches: dict[int, dict[float, dict[str, Any]]] = {
        s: {T: {k: done[(s, T)][k] for k in ("winner", "derived", "wall_s")} for T in args.targets}
        for s in args.seeds}
    curve: list[dict[str, Any]] = json.loads(curve_path.read_text()) if curve_path.exists() else []

    # 4. judge --------------------------------------------------------------------------------------------
    rows: list[dict[str, Any]] = []
    per_target: dict[str, Any] = {}
    for T in args.targets:
        c = controls[T]
        bo10 = c["best_of_10"]
        methods: dict[str, list[str]] = {
            "single-path search (winner)": [searches[s][T]["winner"] for s in args.seeds],
            "single-path decisions alone (derived)": [searches[s][T]["derived"] for s in args.seeds],
            "NASWOT, best of N random": [free[s][T]["naswot"] for s in args.seeds],
            "SynFlow, best of N random": [free[s][T]["synflow"] for s in args.seeds],
            "NASWOT + layers, best of N random": [free[s][T]["naswot_layers"] for s in args.seeds],
            "depth, then cost (no training)": [rules[T]["depth_then_cost"]],
            "cost alone (no training)": [rules[T]["cost_alone"]],
        }
        per_target[f"{T:g}"] = {"controls": c, "methods": {}}
        for name, codes in methods.items():
            judged = [judge(gt, code, cost, T) for code in codes]
            accs = [j.accuracy for j in judged]
            m, lo, hi = mean_ci(accs)
            d, dlo, dhi = mean_ci([a - bo10 for a in accs])
            rows.append({"target": T, "method": name, "seeds": len(codes), "acc": m, "acc_low": lo, "acc_high": hi,
                         "median_rank": statistics.median(j.rank for j in judged), "n_in_budget": judged[0].n,
                         "top5_hits": sum(j.top_pct <= 5.0 for j in judged),
                         "mean_top_pct": statistics.fmean(j.top_pct for j in judged),
                         "regret": statistics.fmean(j.regret for j in judged),
                         "vs_best_of_10": d, "vs_bo10_low": dlo, "vs_bo10_high": dhi,
                         "over_budget": sum(not j.within_budget for j in judged)})
            per_target[f"{T:g}"]["methods"][name] = [j.to_dict() for j in judged]
        for n in (1, 10, 50):
            rows.append({"target": T, "method": "random (expectation)" if n == 1 else f"best of {n} random (exact)",
                         "seeds": None, "acc": c[f"best_of_{n}"], "acc_low": None, "acc_high": None,
                         "median_rank": c[f"best_of_{n}_rank"], "n_in_budget": c["n_within"], "top5_hits": None,
                         "mean_top_pct": 100.0 * c[f"best_of_{n}_rank"] / c["n_within"],
                         "regret": c["best"] - c[f"best_of_{n}"], "vs_best_of_10": c[f"best_of_{n}"] - bo10,
                         "vs_bo10_low": None, "vs_bo10_high": None, "over_budget": 0})

    # ranking rows: the curve, plus the rules and the ceiling on the same networks
    from spnas_core.stats import kendall_tau

    rank_rows = []
    for point in curve:
        for kind in ("supernet", "hybrid"):
            r = point[kind]
            rank_rows.append({"step": point["step"], "ranker": hybrid_name if kind == "hybrid" else kind,
                              "n": r["n"], "tau": r["tau"], "low": r["low"],
                              "high": r["high"], "tau_within_bands": r["within"],
                              "bands": " ".join(f"{b['band']}:{b['tau']:.2f}(n={b['n']})" for b in r["bands"])})
    seed_a = [gt[c].test_acc[0] for c in rank_codes]
    seed_b = [gt[c].test_acc[1] for c in rank_codes]
    refs = {"NASWOT (one init)": naswot, "depth (non-identity layers)": [float(depth(c)) for c in rank_codes],
            "NASWOT + depth then cost (no training)": rank_mean(naswot, depth_cost),
            "NASWOT + layers (no training)": rank_mean(naswot, layers),
            "FLOPs": [float(gt[c].flops) for c in rank_codes],
            "ceiling: one training seed vs another": seed_a}
    for name, pred in refs.items():
        tgt = seed_b if name.startswith("ceiling") else truth
        r = tau_record(pred, tgt, costs, BANDS)
        rank_rows.append({"step": None, "ranker": name, "n": r["n"], "tau": r["tau"], "low": r["low"],
                          "high": r["high"], "tau_within_bands": r["within"],
                          "bands": " ".join(f"{b['band']}:{b['tau']:.2f}(n={b['n']})" for b in r["bands"])})
    walls["total"] = time.perf_counter() - t_start
    unit = table.unit
    plots = plot(rows, curve, args.targets, unit, out, quick=args.quick)
    notes = notes_for(rows, rank_rows, args, unit, walls, kendall_tau, jobs, b.threads)
    from bench.common import print_table

    title = f"Ground truth: the search on NAS-Bench-Macro ({args.cost} budgets, {len(args.seeds)} seeds)"
    extra = {"ranking": rank_rows, "per_target": per_target, "walls_s": walls,
             "searches": {str(s): {f"{T:g}": v for T, v in d.items()} for s, d in searches.items()},
             "training_free": {str(s): {f"{T:g}": v for T, v in d.items()} for s, d in free.items()},
             "preset": preset + overrides, "plots": plots, "unit": unit, "jobs": jobs, "threads_per_job": b.threads,
             "task_processes": len(processes)}
    if args.quick:  # a check of the harness, not a measurement: printed, not recorded
        print_table(title, rows)
        print(notes)
        (out / "quick.json").write_text(json.dumps({"rows": rows, **extra}, default=str, indent=1))
    else:
        if args.record_as != "bench_groundtruth":
            title += f": variant {' '.join(overrides) or '(the preset)'}"
        record(args.record_as, title, rows, notes=notes, extra=extra)
    print_table("ranking against the truth", rank_rows)
    print_table("wall time (s)", [{"part": k, "seconds": v} for k, v in walls.items()])
    return 0


def notes_for(rows: list[dict[str, Any]], rank_rows: list[dict[str, Any]], args: argparse.Namespace, unit: str,
              walls: dict[str, float], kendall_tau: Any, jobs: int = 1, threads: int | None = None) -> str:
    """The section's reading: did the search beat best-of-10 and land in the top 5% on every target?"""
    lines = [f"Budgets in {unit}; accuracy is NAS-Bench-Macro's mean CIFAR-10 test accuracy (three trainings) of the "
             f"network each method picked; `top5_hits` counts seeds whose pick ranks in the top 5% of the distinct "
             f"networks within the budget; `vs_best_of_10` is the paired difference (over search seeds, 95% t "
             f"interval) to the exact expected best of 10 random networks within the budget."]
    for T in args.targets:
        win = next(r for r in rows if r["target"] == T and r["method"].startswith("single-path search"))
        beats = win["vs_bo10_low"] is not None and win["vs_bo10_low"] == win["vs_bo10_low"] and win["vs_bo10_low"] > 0
        lines.append(f"- {T:g} {unit}: the search's winner {win['acc']:.2f} ({win['vs_best_of_10']:+.2f} "
                     f"[{win['vs_bo10_low']:+.2f}, {win['vs_bo10_high']:+.2f}] vs best of 10 random: "
                     f"{'beats it' if beats else 'not distinguishable' if win['vs_bo10_high'] >= 0 else 'loses'}), "
                     f"top 5% on {win['top5_hits']} of {win['seeds']} seeds, mean regret {win['regret']:.2f} points.")
    last = [r for r in rank_rows if r["step"] is not None]
    if last:
        final_step = max(r["step"] for r in last)
        for r in last:
            if r["step"] == final_step:
                lines.append(f"- ranking at the end of warm-up ({final_step} steps), {r['ranker']}: tau "
                             f"{r['tau']:.2f} [{r['low']:.2f}, {r['high']:.2f}] over {r['n']} networks, "
                             f"{r['tau_within_bands']:.2f} within {BANDS:g}-{unit} bands.")
    lines.append("- wall time: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in walls.items()) + "."
                 + (f" The warm-ups, searches and training-free searches ran in {jobs} worker processes of "
                    f"{threads} thread(s) each: their parts are summed over the workers, `tasks_elapsed` is the "
                    f"time they took side by side, and `total` is the harness's elapsed time." if jobs > 1 else ""))
    lines += ["", "Ranking against the truth (Kendall tau, 95% bootstrap interval; within bands: the n-weighted mean "
              f"tau within {BANDS:g}-{unit} cost bands of at least 20 networks):", "",
              "| ranker | supernet steps | n | tau | interval | within bands | per band |", "|---|---|---|---|---|---|---|"]
    for r in rank_rows:
        lines.append(f"| {r['ranker']} | {'' if r['step'] is None else r['step']} | {r['n']} | {r['tau']:.3f} | "
                     f"[{r['low']:.3f}, {r['high']:.3f}] | {r['tau_within_bands']:.3f} | {r['bands']} |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], curve: list[dict[str, Any]], targets: list[float], unit: str, out: Path,
         quick: bool = False) -> list[str]:
    """accuracy per method and target (with intervals), and the ranking curve; PNGs in bench/results/."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, axes = plt.subplots(1, len(targets), figsize=(5 * len(targets), 4.5), squeeze=False)
    for ax, T in zip(axes[0], targets):
        rs = [r for r in rows if r["target"] == T]
        for i, r in enumerate(rs):
            err = None
            if r["acc_low"] is not None and r["acc_low"] == r["acc_low"]:
                err = [[r["acc"] - r["acc_low"]], [r["acc_high"] - r["acc"]]]
            ax.errorbar([r["acc"]], [i], xerr=err, fmt="o", color="C3" if "single-path" in r["method"] else "C0")
        ax.set_yticks(range(len(rs)), [r["method"] for r in rs], fontsize=7)
        ax.set_xlabel("mean test accuracy (%)")
        ax.set_title(f"within {T:g} {unit}", fontsize=9)
    fig.tight_layout()
    where = out if quick else RESULTS
    p = where / "groundtruth_accuracy.png"
    where.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(str(p))
    if curve:
        fig, ax = plt.subplots(figsize=(6, 4))
        steps = [c["step"] for c in curve]
        label = {"supernet": "supernet", "hybrid": "finalists' ranker"}
        for kind, color in (("supernet", "C3"), ("hybrid", "C2")):
            ax.errorbar(steps, [c[kind]["tau"] for c in curve],
                        yerr=[[c[kind]["tau"] - c[kind]["low"] for c in curve],
                              [c[kind]["high"] - c[kind]["tau"] for c in curve]], marker="o", color=color,
                        label=f"{label[kind]}, overall")
            ax.plot(steps, [c[kind]["within"] for c in curve], ls="--", color=color,
                    label=f"{label[kind]}, within bands")
        ax.set_xlabel("supernet training steps")
        ax.set_ylabel("Kendall tau with the truth")
        ax.legend(fontsize=8)
        fig.tight_layout()
        p = where / "groundtruth_ranking.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(str(p))
    return paths


if __name__ == "__main__":
    raise SystemExit(main())
