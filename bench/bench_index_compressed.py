"""The compressed path at the deck's scale: one month version of 1e7 listings (128-d), built with IVF-PQ
and re-ranked exactly from vectors on disk, served by `spnas-index serve`, against exact search.

    python -m bench.bench_index_compressed [--n 10000000] [--queries 1000] [--real 30000] [--clusters 256]

Vectors ("real-like"): embeddings of real photos (CIFAR-10 then Grocery Store, train/val/test, at 32 px
resp. their originals) by the benchmark bundle (`bench/bundle.py`, a 128-d MobileNetV3-Small
embedder), `--real` of them. `--queries` of those are held out as the queries (real photos, never
part of the fit). The rest are fitted with a Gaussian mixture: spherical k-means (FAISS, `--clusters`
components) gives each component its members; each component gets its mean and its members'
covariance, shrunk toward the pooled within-component covariance (Sigma_c = (n_c S_c + 128 S_w) /
(n_c + 128)), and its weight n_c / n. `--n` vectors are drawn from that mixture (component by weight,
then N(mu_c, Sigma_c)) and L2-normalised. The table reports how close the draws are to the real
embeddings: the variance share of the top 10 principal components, and the mean inner product of
a real query with its 10th nearest neighbour among 20k real vs 20k drawn vectors.

The build is `spnas-index build granularity=month`'s code (`retrieval.build.build_period`) on 2 cores:
the listings and their cached embeddings are first loaded into a SQLite listing store (not timed as
the build), then read back in one snapshot, trained, added and published. The factory is the one
`choose_factory` picks for the size. The version is then fetched as an initContainer does and served
by `spnas-index serve` in its own process (FAISS on one thread); queries go through gRPC one at a time.
Resident memory is the service process's peak (`VmHWM` of /proc/<pid>/status) after all queries;
the exact vectors are read with pread (page cache, not the process). A sweep of nprobe / k_factor
runs in a child process that loads the version as the service does (its own VmHWM reported too).
Recall@10 is against exact inner-product search over the same 1e7 float32 vectors.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.bundle import DEFAULT_BUNDLE, ensure_bundle
from bench.common import ROOT, record
from spnas_core.files import atomic_path, write_json_atomic

BIN = Path(sys.executable).parent
GIB = 1 << 30


def vm(pid: int | str = "self") -> dict[str, int]:
    """VmRSS, VmHWM (peak resident) and RssFile of a process, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM", "RssFile", "RssAnon"):
            out[k] = int(v.split()[0]) * 1024
    return out


def atomic_save(path: Path, a: np.ndarray) -> None:
    """np.save under a temporary name, then rename: a killed run never leaves a half array to reuse."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, a)


def recall(got: np.ndarray, truth: np.ndarray) -> float:
    return round(float(np.mean([len(set(a[a >= 0]) & set(b)) / len(b) for a, b in zip(got, truth)])), 4)


def sci(n: int) -> str:
    """1e7 for 10000000 (a title's count)."""
    return f"{n:.0e}".replace("e+0", "e").replace("e+", "e")


def pct(xs: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(xs) * 1e3, q)), 3)


# ---------------------------------------------------------------------------------- the generative model
class Mixture:
    """A Gaussian mixture fitted to real embeddings: components from spherical k-means, each with its
    mean and a shrunk covariance (see the module docstring)."""

    def __init__(self, real: np.ndarray, k: int, seed: int = 0, shrink: float = 128.0) -> None:
        import faiss

        x = np.ascontiguousarray(real, np.float32)
        n, d = x.shape
        km = faiss.Kmeans(d, k, niter=25, seed=seed, spherical=True, verbose=False)
        km.train(x)
        assign = km.index.search(x, 1)[1][:, 0]
        self.k, self.d = k, d
        self.weights = np.bincount(assign, minlength=k) / n
        means = np.zeros((k, d))
        covs = np.zeros((k, d, d))
        within = np.zeros((d, d))
        for c in range(k):
            m = x[assign == c].astype(np.float64)
            if len(m):
                means[c] = m.mean(0)
                dev = m - means[c]
                covs[c] = dev.T @ dev / max(len(m) - 1, 1)
                within += dev.T @ dev
        within /= max(n - k, 1)
        counts = np.bincount(assign, minlength=k)
        self.means = means
        self.chol = np.stack([np.linalg.cholesky((counts[c] * covs[c] + shrink * within) / (counts[c] + shrink)
                                                 + 1e-9 * np.eye(d)) for c in range(k)])

    def sample(self, n: int, seed: int, out: np.ndarray | None = None, step: int = 500_000) -> np.ndarray:
        """n draws (component by weight, then its Gaussian), L2-normalised, in a random order."""
        rng = np.random.default_rng(seed)
        out = np.empty((n, self.d), np.float32) if out is None else out
        for i in range(0, n, step):
            m = min(step, n - i)
            comp = rng.choice(self.k, size=m, p=self.weights)
            x = np.empty((m, self.d))
            for c in np.unique(comp):
                rows = np.flatnonzero(comp == c)
                x[rows] = self.means[c] + rng.standard_normal((len(rows), self.d)) @ self.chol[c].T
            out[i:i + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out


def top_pc_share(x: np.ndarray, k: int = 10) -> float:
    s = np.linalg.svd(x.astype(np.float64) - x.mean(0), compute_uv=False) ** 2
    return round(float(s[:k].sum() / s.sum()), 3)


def tenth_nn(q: np.ndarray, base: np.ndarray) -> float:
    import faiss

    return round(float(faiss.knn(q, base, 10, metric=faiss.METRIC_INNER_PRODUCT)[0][:, 9].mean()), 3)


def exact_truth(q: np.ndarray, base: np.ndarray, k: int = 10, step: int = 1_000_000) -> np.ndarray:
    """Top-k rows of `base` (a memmap, read in chunks) by inner product, exactly."""
    import faiss

    heap = faiss.ResultHeap(len(q), k, keep_max=True)
    for i in range(0, len(base), step):
        d, j = faiss.knn(q, np.ascontiguousarray(base[i:i + step]), k, metric=faiss.METRIC_INNER_PRODUCT)
        heap.add_result(d, np.where(j >= 0, j + i, -1))
    heap.finalize()
    return heap.I


# ---------------------------------------------------------------------------------- the sweep child
SWEEP = """
import json, sys, time
import numpy as np
sys.path.insert(0, {root!r})
import faiss
faiss.omp_set_num_threads(1)
from retrieval.config import SearchParams
from retrieval.version_index import VersionIndex
from retrieval.versions import read_local
from bench.bench_index_compressed import vm
folder = {folder!r}
q = np.load({queries!r})
vi = VersionIndex.load(folder, read_local(folder), check=False)
after_load = vm()
out = []
for nprobe, kf in {knobs!r}:
    vi.params = SearchParams(nprobe=nprobe, k_factor=kf, k_factor_growth=0.0)  # the depth as given
    vi.search(q[:20], 10)
    lat, got = [], []
    for x in q:
        t = time.perf_counter()
        got.append(vi.search(x[None], 10)[1][0])
        lat.append(time.perf_counter() - t)
    out.append({{"nprobe": nprobe, "k_factor": kf, "lat": lat, "ids": np.stack(got).tolist()}})
print(json.dumps({{"after_load": after_load, "peak": vm(), "runs": out}}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--real", type=int, default=30_000, help="real embeddings: the fit and the held-out queries")
    ap.add_argument("--clusters", type=int, default=256, help="components of the Gaussian mixture")
    ap.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    ap.add_argument("--knobs", default="32x10,32x20,32x40,32x64,64x64,32x100",
                    help="nprobe x k_factor settings of the sweep")
    ap.add_argument("--work", default=None, help="work folder (default: a new one under runs/bench)")
    ap.add_argument("--compressed", action="store_true", help="take the compressed path at any --n (a small dry run "
                                                               "of it: build.factory.hnsw_up_to below --n)")
    ap.add_argument("--opq", action="store_true", help="an OPQ rotation in front of the PQ (build.factory.opq=true)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--prepare-only", action="store_true",
                    help="draw the vectors, compute the exact truth and load the listing store into --work, then stop "
                         "(untimed preparation; a later run with the same --work reuses it and times the build)")
    args = ap.parse_args()

    import faiss

    from bench.bench_retrieval import real_embeddings
    from retrieval.config import BuildConfig, Granularity
    from retrieval.embedders import make_embedder
    from retrieval.factory import choose_factory
    from retrieval.listings import ListingStore
    from retrieval.periods import latest_finished
    from retrieval.service import IndexClient
    from retrieval.versions import Repository, fetch_url

    bundle = ensure_bundle(Path(args.bundle))
    emb = make_embedder("litert", bundle)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="spnas-1e7-", dir=ROOT / "runs" / "bench"))
    work.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    faiss.omp_set_num_threads(2)

    # ------------------------------------------------------------ real embeddings, the mixture, the draws
    # (kept in the work folder: a second run with the same --work and sizes reuses them, so a run killed
    # after the draws, or one made with --prepare-only, resumes at the listing store)
    t = time.perf_counter()
    key = {"n": args.n, "dim": emb.dim, "real": args.real, "queries": args.queries, "clusters": args.clusters,
           "bundle": emb.bundle_sha256}
    made = work / "draws.json"
    reuse = made.exists() and json.loads(made.read_text()).get("key") == key
    if reuse:
        real = np.load(work / "real.npy")
    else:
        made.unlink(missing_ok=True)
        real = real_embeddings(str(bundle), args.real)
        atomic_save(work / "real.npy", real)
    rng = np.random.default_rng(7)
    perm = rng.permutation(len(real))
    queries = np.ascontiguousarray(real[perm[:args.queries]])
    fit = real[perm[args.queries:]]
    base_path = work / "base.f32"
    if reuse:
        base = np.memmap(base_path, np.float32, "r", shape=(args.n, emb.dim))
        truth = np.load(work / "truth.npy")
        gen_s, truth_s = (json.loads(made.read_text())[k] for k in ("gen_s", "truth_s"))
    else:
        mix = Mixture(fit, args.clusters)
        base = np.memmap(base_path, np.float32, "w+", shape=(args.n, emb.dim))
        mix.sample(args.n, seed=1, out=base)
        base.flush()
        gen_s = time.perf_counter() - t
        t = time.perf_counter()
        truth = exact_truth(queries, base)
        truth_s = time.perf_counter() - t
        atomic_save(work / "truth.npy", truth)
        write_json_atomic(made, {"key": key, "gen_s": gen_s, "truth_s": truth_s})
    sample = np.ascontiguousarray(base[rng.choice(args.n, min(20_000, args.n), replace=False)])
    realism = {"top10_pc_share_real": top_pc_share(fit), "top10_pc_share_drawn": top_pc_share(sample),
               "q_10th_nn_ip_real": tenth_nn(queries, np.ascontiguousarray(fit[:20_000])),
               "q_10th_nn_ip_drawn": tenth_nn(queries, sample)}
    np.save(work / "queries.npy", queries)

    # ------------------------------------------------------------ listings + embedding cache (not the build)
    loaded = work / "listings.done"  # the store is complete and holds these draws (a killed load starts again)
    if not (reuse and loaded.exists()):
        for f in [loaded, *work.glob("listings.sqlite*")]:
            f.unlink(missing_ok=True)
    store = ListingStore(f"sqlite:///{work / 'listings.sqlite'}")
    t = time.perf_counter()
    if not loaded.exists():
        month, m0, m1 = latest_finished(Granularity.month, int(time.time()), 1)[0]
        ts = np.sort(np.random.default_rng(0).integers(m0, m1, args.n))
        ids = 10**9 + np.arange(args.n, dtype=np.int64)  # row r of `base` is listing 1e9 + r, listed at ts[r]
        step = 1_000_000
        for i in range(0, args.n, step):
            photos = [f"{j:064x}" for j in range(i, min(args.n, i + step))]
            store.load(ids[i:i + step], ts[i:i + step], photos)
            store.cache(emb.bundle_sha256, photos, base[i:i + step], batch=20_000)
            print(f"loaded {min(args.n, i + step)} listings", flush=True)
        write_json_atomic(loaded, {"n": args.n, "month": month, "load_s": time.perf_counter() - t})
    done = json.loads(loaded.read_text())
    month, load_s = done["month"], done["load_s"]  # a reused store keeps the month its listings are in
    if args.prepare_only:
        print(f"prepared {work}: {args.n} draws, exact truth, listing store; run again with --work {work} to build "
              "and measure", flush=True)
        return
    repo = Repository(f"file://{work / 'repository'}")
    if repo.versions():
        shutil.rmtree(work / "repository")
        repo = Repository(f"file://{work / 'repository'}")

    # ------------------------------------------------------------ the build (2 cores): `spnas-index build`, its own process
    from retrieval.config import FactoryConfig

    forced = ["build.factory.flat_below=1000", f"build.factory.hnsw_up_to={args.n - 1}"] if args.compressed else []
    forced += ["build.factory.opq=true"] if args.opq else []
    cfg = BuildConfig(tmp_dir=str(work), factory=FactoryConfig(flat_below=1000, hnsw_up_to=args.n - 1, opq=args.opq)
                      if args.compressed else FactoryConfig(opq=args.opq))
    factory = choose_factory(args.n, emb.dim, cfg.factory)
    t = time.perf_counter()
    build = subprocess.Popen([str(BIN / "spnas-index"), "build", f"bundle={bundle}", "granularity=month",
                              f"period={month}", f"root={work}", f"locations.store=sqlite:///{work / 'listings.sqlite'}",
                              f"locations.repository=file://{work / 'repository'}", "threads=2", "progress=false",
                              f"build.tmp_dir={work}", *forced], stdout=open(work / "build.log", "w"),
                             stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(build.pid, 0)
    build_s = time.perf_counter() - t
    build.returncode = os.waitstatus_to_exitcode(status)
    if build.returncode:
        raise RuntimeError((work / "build.log").read_text()[-3000:])
    build_peak = usage.ru_maxrss * 1024
    (info,) = repo.versions()
    phases = (work / "build.log").read_text().strip().splitlines()
    size = {r: f["size"] for r, f in info.files.items()}
    rows.append({"measure": "build (2 cores)", "value": round(build_s / 60, 1), "unit": "min", "target": "<= 20",
                 "met": build_s <= 1200, "detail": f"`spnas-index build granularity=month` in its own process: "
                 f"{info.factory} (choose_factory({args.n}, {emb.dim})); peak resident {build_peak / GIB:.2f} GiB; "
                 f"{next((ln.split('built ', 1)[-1] for ln in phases if 'read' in ln and 'index' in ln), '')[:160]}"})
    rows.append({"measure": "version size", "value": round(sum(size.values()) / GIB, 2), "unit": "GiB", "target": "",
                 "met": None, "detail": ", ".join(f"{r} {v / 2**20:.0f} MiB" for r, v in size.items())})
    del base

    # ------------------------------------------------------------ fetched as an initContainer does
    t = time.perf_counter()
    folder, _ = fetch_url(info.url, work / "served")
    fetch_s = time.perf_counter() - t

    # ------------------------------------------------------------ the sweep, in a child loading it as a service
    knobs = [tuple(int(v) for v in k.split("x")) for k in args.knobs.split(",")]
    child = subprocess.run([sys.executable, "-c", SWEEP.format(root=str(ROOT), folder=str(folder),
                                                               queries=str(work / "queries.npy"), knobs=knobs)],
                           capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=7200)
    if child.returncode:
        raise RuntimeError(child.stderr[-3000:])
    sweep = json.loads(child.stdout.strip().splitlines()[-1])
    row_of = 10**9  # listing id -> row of `base`
    for run in sweep["runs"]:
        got = np.asarray(run["ids"]) - row_of
        rows.append({"measure": f"in-process sweep, nprobe={run['nprobe']} k_factor={run['k_factor']}",
                     "value": recall(got, truth), "unit": "recall@10", "target": "", "met": None,
                     "detail": f"p50 {pct(run['lat'], 50)} ms, p99 {pct(run['lat'], 99)} ms (one thread)"})
    rows.append({"measure": "sweep process resident (peak)", "value": round(sweep["peak"]["VmHWM"] / GIB, 3),
                 "unit": "GiB", "target": "", "met": None,
                 "detail": f"after load {sweep['after_load']['VmRSS'] / GIB:.3f} GiB; file-backed "
                           f"{sweep['peak']['RssFile'] / GIB:.3f} GiB of the final {sweep['peak']['VmRSS'] / GIB:.3f}"})

    # ------------------------------------------------------------ spnas-index serve, queried over gRPC
    from retrieval.config import SearchParams

    p = SearchParams()
    svc = subprocess.Popen([str(BIN / "spnas-index"), "serve", f"version={folder}", f"source={info.url}", f"root={work}",
                            f"locations.store=sqlite:///{work / 'listings.sqlite'}", "verify_every_s=0"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    t = time.perf_counter()
    line = svc.stdout.readline()
    address = line.rsplit(" on ", 1)[-1].strip()
    cl = IndexClient(address, 30)
    while not cl.serving():
        time.sleep(0.1)
    start_s = time.perf_counter() - t
    after_start = vm(svc.pid)
    lat, got = [], []
    for x in queries:
        t = time.perf_counter()
        got.append(cl.search(x[None], 10, bundle=emb.bundle_sha256)[1][0])
        lat.append(time.perf_counter() - t)
    peak = vm(svc.pid)
    svc.terminate()
    svc.wait(60)
    r = recall(np.stack(got) - row_of, truth)
    rows.append({"measure": f"spnas-index serve, nprobe={p.nprobe} re-rank depth {p.rerank_depth(args.n)} (defaults: "
                            f"k_factor {p.k_factor}, k_factor_growth {p.k_factor_growth})", "value": r,
                 "unit": "recall@10", "target": ">= 0.95", "met": r >= 0.95,
                 "detail": f"{len(queries)} real queries through gRPC, p50 {pct(lat, 50)} ms, p99 {pct(lat, 99)} ms; "
                           f"started (verify + open + catch up) in {start_s:.1f} s"})
    per = (peak["VmHWM"] - after_start.get("VmHWM", 0))
    rows.append({"measure": "spnas-index serve resident (peak, VmHWM)", "value": round(peak["VmHWM"] / GIB, 3),
                 "unit": "GiB", "target": "<= 1.5", "met": peak["VmHWM"] <= 1.5 * GIB,
                 "detail": f"after start {after_start['VmRSS'] / GIB:.3f} GiB, +{per / 2**20:.0f} MiB over the "
                           f"queries; file-backed {peak['RssFile'] / GIB:.3f} GiB of the final "
                           f"{peak['VmRSS'] / GIB:.3f} GiB"})
    # a 3e7 month: what grows with the listings (codes, ids, times, exclusion index) scales, the rest stays
    resident = size["index"] + size["ids"] + size["ts"]
    fixed = max(0, peak["VmHWM"] - resident - 16 * args.n)  # 16 B a listing: the sorted ids for exclusions
    per_listing = (resident + 16 * args.n) / args.n
    need = fixed + per_listing * 3e7
    rows.append({"measure": "a 3e7 month (estimate)", "value": round(need / GIB, 2), "unit": "GiB resident",
                 "target": "", "met": None,
                 "detail": f"{per_listing:.0f} B a listing ({info.factory}: PQ codes and IVF ids {size['index'] / args.n:.0f}"
                           f" B, ids + times 16 B, the sorted ids of the exclusions 16 B) x 3e7 + {fixed / 2**20:.0f} MiB "
                           f"that does not grow; vectors on disk {3 * size['vectors'] / GIB:.1f} GiB"})
    notes = (f"{args.n} listings in one month version ({month}), {emb.dim}-d real-like vectors: {len(real)} embeddings "
             f"of real CIFAR-10 + Grocery photos by `{bundle}`, {args.queries} of them held out as the queries, the "
             f"rest fitted with a {args.clusters}-component Gaussian mixture (spherical k-means components, each "
             f"with its mean and shrunk covariance) from which {args.n} vectors were drawn and L2-normalised "
             f"({gen_s:.0f} s). Realism: variance share of the top 10 principal components "
             f"{realism['top10_pc_share_real']} real vs {realism['top10_pc_share_drawn']} drawn; mean inner product "
             f"of a real query with its 10th neighbour among 20k real {realism['q_10th_nn_ip_real']} vs 20k drawn "
             f"{realism['q_10th_nn_ip_drawn']}. Exact top-10 over the {sci(args.n)} float32 vectors in {truth_s:.0f} s. Listings "
             f"and embedding cache loaded into SQLite in {load_s:.0f} s (before the build, not counted). Build: "
             f"`build_period` on 2 cores (read the period with its embeddings in one snapshot, train on "
             f"{cfg.factory.train_sample} sampled vectors, add, write the float16 vectors, publish with sha256); "
             f"fetched (copy + sha256) in {fetch_s:.0f} s. Serving: `spnas-index serve` (one FAISS thread) over "
             f"gRPC on this machine; resident memory is its VmHWM; exact re-ranking reads the candidates' rows "
             f"with pread (the page cache holds them, not the process).")
    record("bench_index_compressed", f"Photo search at the deck's scale: {sci(args.n)} listings in a month, IVF-PQ "
           "re-ranked from disk",
           rows, notes=notes, extra={"realism": realism, "factory": factory, "files": size})
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
