"""Scale benchmark: one month of 1e6 listings built into one index version, served, and queried.

    python -m bench.bench_index_scale [--n 1000000] [--queries 1000] [--seconds 20] [--concurrency 8]

Listings: `--n` rows in a SQLite listing store, times spread over the last finished month; their
vectors are real-like (as in bench_retrieval: drawn with the mean and covariance of real embeddings
of Grocery + CIFAR-10 photos by the benchmark bundle, `bench/bundle.py`, a 128-d embedder), put in
the embedding cache under the bundle's id, so the build embeds nothing and the gateway's queries
(real photos embedded by the same bundle) land in the same space. Measured:

- the build of the month version on 2 cores (`spnas-index build granularity=month`'s code), by phase,
  and its size; target <= 10 minutes;
- loading it as an index service does (sha256 of every file verified, memory-mapped);
- single-query latency (one thread) and recall@10 against exact search, by efSearch; target >= 0.95
  at <= 1 ms; windowed queries (a week, a day, an hour) against the unwindowed one, target <= 1.5x;
  with 10% of the listings removed after the build;
- one query through gRPC (`spnas-index serve` in its own process);
- the gateway (`spnas-serve gateway`) with 1 and with 2 worker processes under the same load of
  concurrent photo searches against that service: throughput and latency side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.bench_retrieval import real_embeddings, real_like
from bench.bundle import DEFAULT_BUNDLE, ensure_bundle
from bench.common import ROOT, record
from bench.http_load import load, multipart, request

BIN = Path(sys.executable).parent


def pct(xs: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(xs) * 1e3, q)), 3)


def recall(got: np.ndarray, truth: np.ndarray) -> float:
    return round(float(np.mean([len(set(a[a >= 0]) & set(b[b >= 0])) / max(1, (b >= 0).sum())
                                for a, b in zip(got, truth)])), 4)


def timed(obj: Any, name: str, phases: dict[str, float]) -> None:
    """Wrap obj.name to add its wall time to phases[name]."""
    fn = getattr(obj, name)

    def wrapper(*a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            phases[name] = phases.get(name, 0.0) + time.perf_counter() - t

    setattr(obj, name, wrapper)


def single(vi: Any, q: np.ndarray, k: int, **kw: Any) -> tuple[list[float], np.ndarray]:
    lat, out = [], []
    vi.search(q[:20], k, **kw)
    for x in q:
        t = time.perf_counter()
        out.append(vi.search(x[None], k, **kw)[1][0])
        lat.append(time.perf_counter() - t)
    return lat, np.stack(out)


def exact(q: np.ndarray, base: np.ndarray, k: int) -> np.ndarray:
    import faiss

    return faiss.knn(q, base, k, metric=faiss.METRIC_INNER_PRODUCT)[1]


def cpu_s(pgid: int) -> float:
    """CPU seconds used so far by the processes of a process group (a gateway and its workers)."""
    tot = 0.0
    for d in os.listdir("/proc"):
        try:
            if d.isdigit() and os.getpgid(int(d)) == pgid:
                f = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
                tot += (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            continue
    return tot


def wait_http(url: str, timeout: float = 120) -> None:
    import httpx

    t = time.monotonic()
    while time.monotonic() - t < timeout:
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready in {timeout:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--real", type=int, default=20_000, help="real embeddings the real-like vectors are drawn from")
    ap.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each gateway load run")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    import faiss
    import shutil

    from export.bundle import bundle_id
    from retrieval.build import build_period
    from retrieval.config import BuildConfig, Granularity
    from retrieval.embedders import make_embedder
    from retrieval.listings import ListingStore
    from retrieval.periods import latest_finished
    from retrieval.version_index import VersionIndex
    from retrieval.versions import Repository, open_version

    bundle = ensure_bundle(Path(args.bundle))
    emb = make_embedder("litert", bundle)
    work = Path(tempfile.mkdtemp(prefix="spnas-scale-", dir=ROOT / "runs" / "bench"))
    rows: list[dict[str, Any]] = []
    faiss.omp_set_num_threads(2)
    t = time.perf_counter()
    real = real_embeddings(str(bundle), args.real)
    base = real_like(real, args.n, emb.dim, 2)
    queries = real_like(real, args.queries, emb.dim, 3)
    gen_s = time.perf_counter() - t
    month, m0, m1 = latest_finished(Granularity.month, int(time.time()), 1)[0]
    rng = np.random.default_rng(0)
    ts = np.sort(rng.integers(m0, m1, args.n))
    ids = 10**9 + rng.permutation(args.n).astype(np.int64)  # listing ids unrelated to time
    photos = [f"{i:064x}" for i in range(args.n)]
    store = ListingStore(f"sqlite:///{work / 'listings.sqlite'}")
    t = time.perf_counter()
    store.load(ids, ts, photos, progress=True)
    store.cache(emb.bundle_sha256, photos, base)
    load_s = time.perf_counter() - t
    repo = Repository(f"file://{work / 'repository'}")

    # ---------------------------------------------------------------- the build, by phase
    import retrieval.build as rb

    phases: dict[str, float] = {}
    timed(store, "snapshot", phases)
    timed(store, "cached", phases)
    timed(rb.VersionIndex, "build", phases)
    timed(repo, "publish", phases)
    t = time.perf_counter()
    info, _ = build_period(store, None, repo, emb, Granularity.month, month, BuildConfig(), progress=True)
    build_s = time.perf_counter() - t
    size = {r: f["size"] for r, f in info.files.items()}
    rows.append({"measure": "build (2 cores)", "value": round(build_s, 1), "unit": "s", "target": "<= 600",
                 "met": build_s <= 600, "detail": f"{info.factory}; read {phases.get('snapshot', 0):.1f} s, "
                 f"embeddings from cache {phases.get('cached', 0):.1f} s, index {phases.get('build', 0):.1f} s, "
                 f"write + sha256 + publish {phases.get('publish', 0):.1f} s"})
    rows.append({"measure": "version size", "value": round(sum(size.values()) / 2**20, 1), "unit": "MiB",
                 "target": "", "met": None, "detail": ", ".join(f"{r} {v / 2**20:.1f} MiB" for r, v in size.items())})

    # ---------------------------------------------------------------- load as a service does
    def rss_mb() -> float:
        return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024

    r0, t = rss_mb(), time.perf_counter()
    vi = VersionIndex.load(*open_version(info.url, work / "cache"))
    rows.append({"measure": "load (verify sha256 + mmap)", "value": round(time.perf_counter() - t, 2), "unit": "s",
                 "target": "", "met": None, "detail": f"resident after load +{rss_mb() - r0:.0f} MiB"})

    # ---------------------------------------------------------------- queries, one thread
    order = np.lexsort((ids, ts))
    sorted_base, sorted_ids, sorted_ts = base[order], ids[order], ts[order]
    truth = sorted_ids[exact(queries, sorted_base, 10)]
    faiss.omp_set_num_threads(1)
    base_p50 = None
    for ef in (16, 32, 64, 128):
        vi.params.efSearch = ef
        lat, got = single(vi, queries, 10)
        r = recall(got, truth)
        rows.append({"measure": f"single query, efSearch={ef}", "value": pct(lat, 50), "unit": "ms p50",
                     "target": ">= 0.95 recall@10 at <= 1 ms" if ef == 64 else "",
                     "met": (r >= 0.95 and pct(lat, 50) <= 1) if ef == 64 else None,
                     "detail": f"recall@10 {r}, p99 {pct(lat, 99)} ms"})
        if ef == 64:
            base_p50 = pct(lat, 50)
    vi.params.efSearch = 64
    for name, (a, b) in {"a week": (m1 - 7 * 86400, m1), "a day": (m0 + 10 * 86400, m0 + 11 * 86400),
                         "an hour": (m0 + 10 * 86400, m0 + 10 * 86400 + 3600)}.items():
        lo, hi = np.searchsorted(sorted_ts, [a, b])
        wtruth = sorted_ids[lo:hi][exact(queries, sorted_base[lo:hi], 10)]
        lat, got = single(vi, queries, 10, start=a, end=b)
        ratio = pct(lat, 50) / base_p50
        rows.append({"measure": f"windowed query, {name} ({hi - lo} listings)", "value": pct(lat, 50), "unit": "ms p50",
                     "target": "<= 1.5x unwindowed", "met": ratio <= 1.5,
                     "detail": f"{ratio:.2f}x unwindowed; recall@10 {recall(got, wtruth)}, p99 {pct(lat, 99)} ms"})
    gone = rng.choice(sorted_ids, args.n // 10, replace=False)
    vi.exclude(np.sort(gone), np.arange(1, len(gone) + 1) + info.snapshot_seq)
    keep = ~np.isin(sorted_ids, gone)
    ktruth = sorted_ids[keep][exact(queries, sorted_base[keep], 10)]
    lat, got = single(vi, queries, 10)
    rows.append({"measure": "single query, 10% removed after the build", "value": pct(lat, 50), "unit": "ms p50",
                 "target": "", "met": None, "detail": f"{pct(lat, 50) / base_p50:.2f}x none removed; recall@10 "
                 f"{recall(got, ktruth)}; removed returned: {int(np.isin(got, gone).sum())}"})
    del vi

    # ---------------------------------------------------------------- gRPC and the gateway, as processes
    from retrieval.service import IndexClient

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    announce = work / "services"
    svc = subprocess.Popen([str(BIN / "spnas-index"), "serve", f"version={info.url}", f"root={work}",
                            f"announce_dir={announce}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    line = svc.stdout.readline()
    address = line.rsplit(" on ", 1)[-1].strip()
    cl = IndexClient(address)
    while not cl.serving():
        time.sleep(0.1)
    lat = []
    for q in queries[:500]:
        t = time.perf_counter()
        cl.search(q[None], 10, bundle=emb.bundle_sha256)
        lat.append(time.perf_counter() - t)
    rows.append({"measure": "single query through gRPC", "value": pct(lat, 50), "unit": "ms p50", "target": "",
                 "met": None, "detail": f"p99 {pct(lat, 99)} ms (client and service on this machine)"})
    from spnas_core.paths import data_root

    photos_q = [p.read_bytes() for p in sorted((data_root() / "grocery-store-128" / "test").rglob("*.jpg"))[:200]]
    gw_cpu: dict[int, float] = {}
    gw_rows = {}
    token = work / "token"
    token.write_text("t" * 32 + "\n")
    for workers in (1, 2):
        port = 18000 + workers
        gw = subprocess.Popen([str(BIN / "spnas-serve"), "gateway", f"bundle={bundle}", f"root={work}",
                               f"workers={workers}", f"port={port}", f"resolver=dir:{announce}",
                               f"auth.token_file={token}", "limits.threads=4"], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=open(work / f"gateway{workers}.log", "w"))
        url = f"http://127.0.0.1:{port}"
        reqs = [request(url, "/search", *multipart("image", "q.jpg", p)) for p in photos_q]
        try:
            wait_http(url)
            time.sleep(3)  # every worker up
            asyncio.run(load(url, reqs, args.concurrency, 3))  # and warm (its threads' embedders made)
            c0 = cpu_s(gw.pid)
            lat, errors = asyncio.run(load(url, reqs, args.concurrency, args.seconds))
            gw_cpu[workers] = cpu_s(gw.pid) - c0
        finally:
            os.killpg(gw.pid, signal.SIGTERM)
            gw.wait(30)
        gw_rows[workers] = {"req_per_s": len(lat) / args.seconds, "p50": pct(lat, 50), "p99": pct(lat, 99),
                            "errors": errors}
    ratio = gw_rows[2]["req_per_s"] / gw_rows[1]["req_per_s"]
    for w, g in gw_rows.items():
        rows.append({"measure": f"gateway, {w} worker{'s' if w > 1 else ''}, {args.concurrency} clients",
                     "value": round(g["req_per_s"], 1), "unit": "photo searches/s", "target": "",
                     "met": None, "detail": f"p50 {g['p50']} ms, p99 {g['p99']} ms, errors {g['errors']}; gateway "
                     f"CPU {gw_cpu[w] / args.seconds:.2f} cores" + (f"; {ratio:.2f}x 1 worker" if w == 2 else "")})
    svc.send_signal(signal.SIGTERM)
    svc.wait(30)
    notes = (f"{args.n} listings over {month} (one month version), {emb.dim}-d real-like vectors drawn from {len(real)} "
             f"real embeddings of Grocery + CIFAR-10 photos by `{bundle}` (bundle {bundle_id(bundle)[:12]}); vectors "
             f"generated in {gen_s:.0f} s, listings and embedding cache loaded in {load_s:.0f} s (not part of the "
             f"build). Build on 2 cores; queries on one thread, {args.queries} queries, recall@10 against exact search "
             f"over the same rows (windows: the rows in the window; removed: the rows left). Windowed and removed "
             f"rows use the default efSearch=64 (narrow windows of <= 20000 rows are searched exactly on their "
             f"slice). Gateway: `spnas-serve gateway workers=N` with {args.concurrency} concurrent clients posting "
             f"Grocery test photos for {args.seconds:.0f} s (requests encoded once, keep-alive: bench/http_load.py), the 1e6 "
             f"version in one `spnas-index serve` process; everything (clients included) on this 2-core machine.")
    record("bench_index_scale", "Photo search at scale: 1e6 listings in one month version (2 cores)", rows,
           notes=notes, extra={"gateway": gw_rows, "gateway_2_over_1": round(ratio, 2)})
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
