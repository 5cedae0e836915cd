"""Chaos benchmark of the photo search: bounded mixed load on loopback while processes are SIGKILLed.

`spnas-serve` (its own start: index service processes, gateway process, supervisor loop) is seeded
with Grocery train photos; N concurrent clients run a mix of searches (photo uploads), adds (new
listings, with the token) and deletes (of listings they added) for a fixed time at concurrency 1, 4
and 16, while the index service of the current hour (the one taking the adds) is killed with SIGKILL
a third of the way in and restarted by the supervisor; one more run kills the gateway instead.
Afterwards every partition is read from disk by a fresh process-equivalent store:

- acknowledged adds lost (an add answered 200 whose listing is not live; target 0),
- listings duplicated (an id live in two partitions; target 0),
- acknowledged deletes undone (a delete answered 200, or 202 = queued, whose listing is live; target 0),
- the non-4xx error rate (5xx and connection failures: what a client cannot act on),
- p50 / p99 per operation; and, in fault-free runs side by side, search throughput at concurrency
  4 vs 1 (target >= 1.5x on 2 cores) and /health latency while searches run (target p99 <= 50 ms).

    python -m bench.bench_chaos                       # trains a small Grocery bundle first if needed
    python -m bench.bench_chaos --bundle runs/export/x --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import shutil
import signal
import statistics
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import ROOT, record

OUT = ROOT / "bench" / "out"
DEFAULT_BUNDLE = ROOT / "runs" / "bench" / "chaos" / "bundle"


def ensure_bundle(path: Path) -> Path:
    """A MobileNetV3-Small trained briefly on Grocery (64 px) and exported, unless `path` already is a bundle."""
    if (path / "manifest.json").exists():
        return path
    import spnas

    work = path.parent
    data = ["data=grocery", "data.resolution=64", f"data.cache_dir={work / 'cache'}"]
    res = spnas.train(spnas.compose("train", ["arch=mobilenet_v3_small", *data, "train.epochs=6", "train.batch_size=64",
                                              f"run_dir={work / 'train'}"]))
    spnas.export(spnas.compose("export", [f"checkpoint={res.model_path}", *data, f"out_dir={path}",
                                          "export.int8=disabled", "export.measure_latency=false"]))
    return path


def pct(xs: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(xs) * 1e3, q)), 2) if xs else float("nan")


class Load:
    """Mixed load from `concurrency` clients for `seconds`; remembers what was acknowledged."""

    def __init__(self, url: str, token: str, photos: list[bytes], ids: "IdSource", mix: dict[str, float]) -> None:
        self.url, self.token, self.photos, self.ids, self.mix = url, token, photos, ids, mix
        self.lat: dict[str, list[float]] = defaultdict(list)
        self.codes: dict[str, Counter] = defaultdict(Counter)
        self.acked_adds: set[int] = set()
        self.acked_deletes: set[int] = set()
        self.queued_deletes: set[int] = set()  # answered 202: the gateway retries them until delivered
        self.unknown: set[int] = set()  # no answer (the gateway was killed): the write may or may not have happened
        self.mine: list[int] = []  # listings this load added and may delete
        self.events: list[tuple[float, str, int]] = []  # (time, op, status) of every request

    async def run(self, concurrency: int, seconds: float, events: list[tuple[float, Any]] = ()) -> float:
        import httpx

        stop = time.perf_counter() + seconds
        t0 = time.perf_counter()
        limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            async def worker(w: int) -> None:
                rng = random.Random(w)
                while time.perf_counter() < stop:
                    op = rng.choices(list(self.mix), weights=list(self.mix.values()))[0]
                    if op == "delete" and not self.mine:
                        op = "search"
                    await self.one(client, op, rng)

            async def faults() -> None:
                for at, fn in sorted(events, key=lambda e: e[0]):
                    await asyncio.sleep(max(0.0, t0 + at - time.perf_counter()))
                    await asyncio.to_thread(fn)

            await asyncio.gather(*(worker(i) for i in range(concurrency)), faults())
        return time.perf_counter() - t0

    async def one(self, client: Any, op: str, rng: random.Random) -> None:
        import httpx

        photo = self.photos[rng.randrange(len(self.photos))]
        auth = {"Authorization": f"Bearer {self.token}"}
        t = time.perf_counter()
        item = None
        try:
            if op == "search":
                r = await client.post(f"{self.url}/search", files={"image": ("q.jpg", photo, "image/jpeg")},
                                      data={"k": "10"})
            elif op == "add":
                item = self.ids.next()
                r = await client.post(f"{self.url}/items", files=[("images", ("l.jpg", photo, "image/jpeg"))],
                                      data={"ids": str(item)}, headers=auth)
            else:
                item = self.mine.pop(rng.randrange(len(self.mine)))
                r = await client.delete(f"{self.url}/items/{item}", headers=auth)
            code = r.status_code
        except httpx.HTTPError:
            code = 0  # connection refused or cut: the gateway was down
        self.lat[op].append(time.perf_counter() - t)
        self.codes[op][code] += 1
        self.events.append((time.perf_counter(), op, code))
        if code == 0:
            await asyncio.sleep(0.05)  # a client backs off when the gateway does not answer
        if op == "add" and code == 200:
            self.acked_adds.add(item)
            self.mine.append(item)
        elif op == "delete" and code == 200:
            self.acked_deletes.add(item)
        elif op == "delete" and code == 202:
            self.queued_deletes.add(item)
        elif item is not None and (code == 0 or code >= 500):
            self.unknown.add(item)
        elif op == "delete" and item is not None:
            self.mine.append(item)  # refused (4xx): still listed, may be deleted later


class IdSource:
    def __init__(self, start: int) -> None:
        self.n = start
        self.lock = threading.Lock()

    def next(self) -> int:
        with self.lock:
            self.n += 1
            return self.n


async def health_probe(url: str, until: float, period: float = 0.1) -> list[float]:
    import httpx

    out = []
    async with httpx.AsyncClient(timeout=10) as c:
        while time.perf_counter() < until:
            t = time.perf_counter()
            r = await c.get(f"{url}/health")
            if r.status_code == 200:
                out.append(time.perf_counter() - t)
            await asyncio.sleep(period)
    return out


def search_only(url: str, photos: list[bytes], concurrency: int, seconds: float, probe: bool) -> dict[str, Any]:
    load = Load(url, "", photos, IdSource(0), {"search": 1.0})

    async def go() -> tuple[float, list[float]]:
        until = time.perf_counter() + seconds
        res = await asyncio.gather(load.run(concurrency, seconds),
                                   health_probe(url, until) if probe else asyncio.sleep(0, result=[]))
        return res[0], res[1]

    took, health = asyncio.run(go())
    ok = load.codes["search"][200]
    return {"req_per_s": ok / took, "p50_ms": pct(load.lat["search"], 50), "p99_ms": pct(load.lat["search"], 99),
            "errors": sum(v for k, v in load.codes["search"].items() if k != 200), "health": health}


def verify(cfg: Any, dim: int, acked_adds: set[int], acked_deletes: set[int], queued: set[int], unknown: set[int],
           seeded: int) -> dict[str, int]:
    """Read every partition from disk (as a restarted service would) and check what was acknowledged:
    acknowledged adds live, acknowledged and queued deletes gone (writes without an answer may go
    either way), no id live twice."""
    from spnas.app.serve import open_store

    s = open_store(cfg, dim)
    s.recover()
    keys = s.keys()
    absorbed = {a for k in keys for a in s.partition(k).absorbed}
    count: Counter = Counter()
    for k in keys:
        if k not in absorbed:
            count.update(s.partition(k).live()[0].tolist())
    live = set(count)
    gone = acked_deletes | queued
    return {"acked_adds": len(acked_adds), "acked_deletes": len(acked_deletes), "queued_deletes": len(queued),
            "no_answer": len(unknown),
            "lost_adds": len((acked_adds - gone - unknown) - live),
            "duplicated": sum(1 for v in count.values() if v > 1),
            "undone_deletes": len((gone - unknown) & live),
            "seeded_missing": len(set(range(seeded)) - live - gone - unknown)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=str(DEFAULT_BUNDLE), help="a bundle (trained and exported first if missing)")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each run")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--listings", type=int, default=600, help="seeded listings (Grocery train photos)")
    ap.add_argument("--keep", action="store_true", help="keep the index folder")
    args = ap.parse_args()

    import httpx

    import spnas
    from spnas.app.serve import start

    bundle = ensure_bundle(Path(args.bundle))
    work = Path(tempfile.mkdtemp(prefix="spnas-chaos-"))
    token = secrets.token_hex(16)
    (work / "token").write_text(token)
    cfg = spnas.compose("serve", [f"bundle={bundle}", f"index_dir={work / 'index'}", "port=0", "tick_s=0.2",
                                  f"seed_limit={args.listings}", f"auth.token_file={work / 'token'}",
                                  "limits.rpc_timeout_s=2", "seed_hours=30"])
    s = start(cfg)
    sup, url, dim = s["supervisor"], s["url"], s["store"].dim
    stop = threading.Event()
    loop = threading.Thread(target=sup.run, args=(stop,), daemon=True)
    sup.wait_ready(120)
    loop.start()

    def wait_ready(timeout: float = 120) -> float:
        t = time.perf_counter()
        while time.perf_counter() - t < timeout:
            try:
                if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                    return time.perf_counter() - t
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the deployment did not become ready within {timeout} s (logs in {sup.logs})")

    wait_ready()
    photos = [p.read_bytes() for p in sorted((Path(cfg.data.root) / "test").rglob("*.jpg"))[:300]]
    rows: list[dict[str, Any]] = []
    try:
        # fault-free search throughput, side by side, with /health probed during the concurrent run
        base = {c: search_only(url, photos, c, args.seconds, probe=c == 4) for c in (1, 4)}
        ids = IdSource(10**12)
        acked_adds, acked_deletes, queued, unknown = set(), set(), set(), set()
        runs = [(c, "index service (current hour)") for c in args.concurrency] + [(4, "gateway")]
        for c, victim in runs:
            load = Load(url, token, photos, ids, {"search": 0.7, "add": 0.2, "delete": 0.1})
            def kill(victim: str = victim) -> None:
                from retrieval.partitions import partition_key

                pid = sup.gateway_pid() if victim == "gateway" else sup.service_pid(partition_key(int(time.time())))
                if pid:
                    os.kill(pid, signal.SIGKILL)

            took = asyncio.run(load.run(c, args.seconds, [(args.seconds / 3, kill)]))
            # how long adds were unavailable: the longest stretch without an acknowledged add (it spans the kill)
            acked_at = sorted(t for t, op, code in load.events if op == "add" and code == 200)
            gap = max((b - a for a, b in zip(acked_at, acked_at[1:])), default=float("nan"))
            wait_ready()  # the next run starts on a whole deployment
            acked_adds |= load.acked_adds
            acked_deletes |= load.acked_deletes
            queued |= load.queued_deletes
            unknown |= load.unknown
            n = sum(sum(v.values()) for v in load.codes.values())
            bad = sum(v for op in load.codes.values() for k, v in op.items() if k == 0 or k >= 500)
            four = sum(v for op in load.codes.values() for k, v in op.items() if 400 <= k < 500)
            rows.append({"run": f"c={c}, kill {victim}", "concurrency": c, "requests": n,
                         "non_4xx_error_rate": round(bad / max(n, 1), 4), "4xx": four,
                         "search_per_s": round(load.codes["search"][200] / took, 1),
                         "search_p50_ms": pct(load.lat["search"], 50), "search_p99_ms": pct(load.lat["search"], 99),
                         "add_p50_ms": pct(load.lat["add"], 50), "add_p99_ms": pct(load.lat["add"], 99),
                         "delete_p50_ms": pct(load.lat["delete"], 50), "delete_p99_ms": pct(load.lat["delete"], 99),
                         "longest_add_gap_s": round(gap, 2),
                         "acked_adds": len(load.acked_adds), "acked_deletes": len(load.acked_deletes),
                         "codes": " ".join(f"{op}:{dict(v)}" for op, v in load.codes.items())})
            print(rows[-1], flush=True)
        drained = time.perf_counter()
        while httpx.get(f"{url}/ready", timeout=5).json().get("pending_deletes", 1) and \
                time.perf_counter() - drained < 60:  # queued deletes are retried every second until delivered
            time.sleep(0.2)
        time.sleep(1.5)  # and decided commits of an interrupted transaction, delivered by the same loop
        checks = verify(cfg, dim, acked_adds, acked_deletes, queued, unknown, min(args.listings, 2640))
    finally:
        stop.set()
        loop.join(10)
        sup.stop()
    ratio = base[4]["req_per_s"] / base[1]["req_per_s"]
    health = base[4]["health"]
    for c in (1, 4):
        rows.append({"run": f"search only, c={c}, no faults", "concurrency": c, "requests": "",
                     "non_4xx_error_rate": round(base[c]["errors"] / max(1, base[c]["req_per_s"] * args.seconds), 4),
                     "search_per_s": round(base[c]["req_per_s"], 1), "search_p50_ms": base[c]["p50_ms"],
                     "search_p99_ms": base[c]["p99_ms"]})
    summary = {**checks, "search_c4_over_c1": round(ratio, 2), "health_p50_ms": pct(health, 50),
               "health_p99_ms": pct(health, 99), "health_max_ms": pct(health, 100)}
    print(summary)
    targets = [f"acknowledged adds lost: {checks['lost_adds']} (target 0)",
               f"listings duplicated: {checks['duplicated']} (target 0)",
               f"acknowledged deletes undone: {checks['undone_deletes']} (target 0)",
               f"search throughput at concurrency 4 vs 1: {ratio:.2f}x (target >= 1.5x: "
               f"{'met' if ratio >= 1.5 else 'NOT met'})",
               f"/health while 4 clients search: p99 {pct(health, 99)} ms (target <= 50 ms: "
               f"{'met' if pct(health, 99) <= 50 else 'NOT met'})"]
    plot(rows)
    record("bench_chaos", "Photo search under faults: mixed load with SIGKILLed index service / gateway (loopback)",
           rows, extra={"summary": summary},
           notes=f"{args.listings} seeded Grocery listings, bundle `{bundle}` ({dim}-d); each run {args.seconds:.0f} s of "
                 f"70% photo searches (k=10) / 20% adds / 10% deletes by N concurrent httpx clients on this machine, "
                 f"SIGKILL at one third of the run, restarted by the supervisor (tick 0.2 s); longest_add_gap_s is the "
                 f"longest stretch of the run without an acknowledged add (it spans the kill and the restart; "
                 f"clients back off 50 ms after a refused connection). After all runs every partition was read from disk: " + "; ".join(targets) +
                 f". Seeded listings missing: {checks['seeded_missing']}. Non-4xx errors are 5xx answers and "
                 f"connection failures while a process was down.")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


def plot(rows: list[dict[str, Any]]) -> None:
    """p50 / p99 per operation and run, into bench/out/bench_chaos.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in rows if "kill" in r["run"]]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    x = np.arange(len(runs))
    for i, op in enumerate(("search", "add", "delete")):
        ax.bar(x + (i - 1) * 0.27, [r[f"{op}_p50_ms"] for r in runs], 0.25, label=f"{op} p50")
        ax.scatter(x + (i - 1) * 0.27, [r[f"{op}_p99_ms"] for r in runs], marker="_", s=300, color="k")
    ax.set_xticks(x, [r["run"] for r in runs], rotation=10, fontsize=8)
    ax.set_ylabel("ms (bars p50, ticks p99)")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("photo search under SIGKILL: latency per operation")
    OUT.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(OUT / "bench_chaos.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
