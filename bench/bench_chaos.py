"""Chaos benchmark of the photo search as the deck builds it: mixed load while the gateway, an index
service and a build job are SIGKILLed, versions are corrupted in place in the repository and rebuilt
versions are retired under load, then everything acknowledged is read back.

    python -m bench.bench_chaos [--seconds 30] [--concurrency 4 16] [--listings 600]

Every part runs as its own process, as a cluster runs them: the gateway (`spnas-serve gateway`, two
worker processes, in a process group of its own, killed whole as a pod is), one `spnas-index serve`
per version the planner uses, and `spnas-index build-due` jobs; the listing store is one SQLite file
they share. The store is seeded with Grocery train photos over the past hours and built first.

Each run: N concurrent clients do 70% photo searches, 20% adds (new listings, with the token; a third
of them "late": timed in an hour that already has a version, so the next build replaces that hour's
version while its service still serves) and 10% deletes (of listings they added, or seeded ones)
for a fixed time; at 1/4 of it the gateway is SIGKILLed; at 3/8 the repository is damaged in place
(one byte flipped in the index of the largest served version, the index of a served hour truncated,
the manifest of another version truncated); at 1/2 the index service of the version holding the
most listings is SIGKILLed; at 5/8 a build-due runs (it finds the damage, builds those versions
again, replaces the hours changed by late adds, and keeps the replaced versions whose services still
run), and the services are brought in line with the plan (the controller's job: new versions
started, replaced ones stopped); at 3/4 a build-due job is SIGKILLed in flight (at a random moment).
Each killed process comes back one second later, as its Deployment (or the next CronJob) brings it
back; a restarted service gets a fresh cache, as a new pod gets a fresh emptyDir, so it fetches its
version from the repository again (a damaged one is refused until the build heals it). Meanwhile a
monitor polls the gateway's /ready every 100 ms, and every search answer is checked against the
embedding cache (each returned score must be the inner product of the query's and the listing's
embeddings: a damaged index would answer garbage). Afterwards:

- from the listing store: acknowledged adds lost (not active) and acknowledged deletes undone (active);
- a build killed before its manifest (failpoint) leaves no version, its rerun publishes exactly the
  versions the inputs name, and a further rerun builds nothing; versions visible after the kills
  under load all match their manifests;
- from a search after that build: every acknowledged add found (its photo, in a one-second window at
  its time), no acknowledged delete returned, no listing twice in one answer;
- garbage answers served (a score off by more than 1e-3 from the exact inner product, or a listing
  the store does not have): target 0; every damaged version healed (its files match again, or it was
  replaced and retired) by the next build: target all; services that could not start because
  retention had removed their version: target 0; /ready polls answered 503 while the gateway ran and
  an index service served: target 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from bench.bundle import DEFAULT_BUNDLE, ensure_bundle
from bench.common import ROOT, record

BIN = Path(sys.executable).parent


def pct(xs: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(xs) * 1e3, q)), 2) if xs else float("nan")


class Cluster:
    """The processes of one deployment on this machine, started and killed as a cluster would."""

    def __init__(self, work: Path, bundle: Path, port: int) -> None:
        self.work, self.bundle, self.port = work, bundle, port
        self.pods = 0  # each service start gets a fresh cache folder, as a new pod a fresh emptyDir
        self.exits: list[tuple[str, str]] = []  # services that ended on their own: (url, the last line they said)
        self.url = f"http://127.0.0.1:{port}"
        self.announce = work / "services"
        self.token_file = work / "token"
        self.env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.services: dict[str, subprocess.Popen] = {}
        self.gateway: subprocess.Popen | None = None
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()

    def _log(self, name: str) -> Any:
        return open(self.logs / f"{name}.log", "a")

    def start_gateway(self) -> None:
        self.gateway = subprocess.Popen(
            [str(BIN / "spnas-serve"), "gateway", f"bundle={self.bundle}", f"root={self.work}", "workers=2",
             f"port={self.port}", f"resolver=dir:{self.announce}", f"auth.token_file={self.token_file}",
             "delta.refresh_s=0.5", "limits.rpc_timeout_s=2"], env=self.env, start_new_session=True,
            stdout=self._log("gateway"), stderr=subprocess.STDOUT)

    def kill_gateway(self) -> None:
        os.killpg(self.gateway.pid, signal.SIGKILL)  # the whole pod: the uvicorn parent and both workers
        self.gateway.wait()

    def _note_exit(self, url: str) -> None:
        p = self.services.get(url)
        if p is not None and p.poll() is not None and not getattr(p, "noted", False) and p.returncode not in (
                0, -signal.SIGKILL, -signal.SIGTERM):
            lines = Path(p.log).read_text().strip().splitlines()
            self.exits.append((url, (lines[-1] if lines else f"exit {p.returncode}")[-300:]))
            p.noted = True  # type: ignore[attr-defined]

    def start_service(self, url: str) -> None:
        self._note_exit(url)
        self.pods += 1
        log = self.logs / f"service-{self.pods}.log"
        self.services[url] = subprocess.Popen(
            [str(BIN / "spnas-index"), "serve", f"version={url}", f"root={self.work}", f"announce_dir={self.announce}",
             f"locations.cache={self.work / 'pods' / str(self.pods)}", "follow_s=0.5", "verify_every_s=5"],
            env=self.env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
        self.services[url].log = log  # type: ignore[attr-defined]

    def kill_service(self, url: str) -> None:
        self.services[url].send_signal(signal.SIGKILL)  # its announcement stays: the resolver ignores a dead pid
        self.services[url].wait()

    def exited(self) -> list[tuple[str, str]]:
        """Services that ended on their own (not killed or stopped by us): (url, their last line)."""
        with self.lock:
            for url in list(self.services):
                self._note_exit(url)
        return self.exits

    def needed(self, repo: Any, bundle_id: str) -> dict[str, Any]:
        from retrieval.config import Granularity, RetentionConfig
        from retrieval.periods import latest_finished
        from retrieval.planner import Ready, plan

        now = int(time.time())
        vs = {v.url: v for v in repo.versions(bundle_id)}
        rs = [Ready(v.bundle_id, v.g, v.period, v.version, v.snapshot_seq, v.start_ts, v.end_ts, u) for u, v in vs.items()]
        h0 = latest_finished(Granularity.month, now, RetentionConfig().months)[-1][1]
        return {p.version.ref: vs[p.version.ref] for p in plan(rs, h0, now + 4000).pieces}

    def sync_services(self, repo: Any, bundle_id: str) -> None:
        """Start a service for each planned version, stop the others (what issue 23's controller does)."""
        with self.lock:
            need = self.needed(repo, bundle_id)
            for url in need:
                if url not in self.services or self.services[url].poll() is not None:
                    self.start_service(url)
            for url in [u for u in self.services if u not in need]:
                self._note_exit(url)
                self.services.pop(url).send_signal(signal.SIGTERM)

    def build_due(self, now: int | None = None, failpoint: str | None = None) -> subprocess.Popen:
        env = {**self.env, **({"SPNAS_FAILPOINTS": failpoint} if failpoint else {})}
        return subprocess.Popen([str(BIN / "spnas-index"), "build-due", f"bundle={self.bundle}", f"root={self.work}",
                                 "progress=false", f"announce_dir={self.announce}", *([f"now={now}"] if now else [])],
                                env=env, stdout=self._log("builds"), stderr=subprocess.STDOUT)

    def ready(self, timeout: float = 120) -> float:
        import httpx

        t = time.perf_counter()
        while time.perf_counter() - t < timeout:
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return time.perf_counter() - t
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"not ready in {timeout:.0f} s (logs in {self.logs})")

    def stop(self) -> None:
        if self.gateway is not None and self.gateway.poll() is None:
            os.killpg(self.gateway.pid, signal.SIGTERM)
        for p in self.services.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in [self.gateway, *self.services.values()]:
            if p is not None:
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()


class Load:
    """Mixed load from N clients; remembers what was acknowledged."""

    def __init__(self, url: str, token: str, photos: list[bytes], seeded: list[int], mix: dict[str, float],
                 first_id: int, late_hours: list[int] | None = None) -> None:
        self.url, self.token, self.photos, self.mix = url, token, photos, mix
        self.late_hours = late_hours or []  # starts of hours with a version: a late add lands in one
        self.answers: list[tuple[int, list[tuple[int, float]]]] = []  # (photo index, [(id, score)]) of searches
        self.partial = 0
        self.seeded = list(seeded)
        self.lat: dict[str, list[float]] = defaultdict(list)
        self.codes: dict[str, Counter] = defaultdict(Counter)
        self.added: dict[int, int] = {}  # acknowledged adds: id -> photo index
        self.deleted: set[int] = set()  # acknowledged deletes
        self.unknown: set[int] = set()  # writes without an answer: may or may not have happened
        self.mine: list[int] = []
        self.acked_at: list[float] = []
        self.next_id = first_id  # each run its own ids: an id of an earlier run would be a 409, or its add again

    async def run(self, concurrency: int, seconds: float, events: list[tuple[float, Any]]) -> float:
        import httpx

        stop = time.perf_counter() + seconds
        t0 = time.perf_counter()
        limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            async def worker(w: int) -> None:
                rng = random.Random(w * 7919 + int(t0))
                while time.perf_counter() < stop:
                    op = rng.choices(list(self.mix), weights=list(self.mix.values()))[0]
                    await self.one(client, op, rng)

            async def faults() -> None:
                for at, fn in sorted(events, key=lambda e: e[0]):
                    await asyncio.sleep(max(0.0, t0 + at - time.perf_counter()))
                    await asyncio.to_thread(fn)

            await asyncio.gather(*(worker(i) for i in range(concurrency)), faults())
        return time.perf_counter() - t0

    async def one(self, client: Any, op: str, rng: random.Random) -> None:
        import httpx

        j = rng.randrange(len(self.photos))
        auth = {"Authorization": f"Bearer {self.token}"}
        t = time.perf_counter()
        item = None
        try:
            if op == "search":
                r = await client.post(f"{self.url}/search", files={"image": ("q.jpg", self.photos[j], "image/jpeg")},
                                      data={"k": "10"})
            elif op == "add":
                item = self.next_id = self.next_id + 1
                data = {"ids": str(item)}
                if self.late_hours and rng.random() < 1 / 3:
                    data["ts"] = str(rng.choice(self.late_hours) + rng.randrange(3600))
                r = await client.post(f"{self.url}/items", files=[("images", ("l.jpg", self.photos[j], "image/jpeg"))],
                                      data=data, headers=auth)
            else:
                pool = self.mine if (self.mine and rng.random() < 0.5) or not self.seeded else self.seeded
                if not pool:
                    return
                item = pool.pop(rng.randrange(len(pool)))
                r = await client.delete(f"{self.url}/items/{item}?status=sold", headers=auth)
            code = r.status_code
        except httpx.HTTPError:
            code = 0  # refused or cut: the gateway was down
        self.lat[op].append(time.perf_counter() - t)
        self.codes[op][code] += 1
        if op == "search" and code == 200:
            body = r.json()
            self.answers.append((j, [(h["id"], h["score"]) for h in body["results"]]))
            self.partial += bool(body["partial"])
        if code == 0:
            await asyncio.sleep(0.05)  # a client backs off when the gateway does not answer
        if op == "add" and code == 200:
            self.added[item] = j
            self.acked_at.append(time.perf_counter())
            self.mine.append(item)
        elif op == "delete" and code == 200:
            self.deleted.add(item)
        elif item is not None and (code == 0 or code >= 500):
            self.unknown.add(item)


class ReadyMonitor:
    """Polls the gateway's /ready every 100 ms: how often it answered 503 while the gateway ran and at
    least one index service was serving (what the Service would have lost), and why."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster, self.stop = cluster, threading.Event()
        self.polls, self.lost, self.down, self.reasons = 0, 0, 0, Counter()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def serving(self) -> bool:
        from retrieval.resolver import DirectoryResolver

        return bool(DirectoryResolver(self.cluster.announce).addresses())

    def run(self) -> None:
        import httpx

        with httpx.Client(timeout=2) as cl:
            while not self.stop.wait(0.1):
                try:
                    r = cl.get(f"{self.cluster.url}/ready")
                except httpx.HTTPError:
                    self.down += 1  # the gateway itself is down (killed): not a readiness verdict
                    continue
                self.polls += 1
                if r.status_code != 200 and self.serving():
                    self.lost += 1
                    self.reasons.update(r.json().get("reasons", ["?"]))


def garbage(loads: list["Load"], store: Any, emb: Any, photos: list[bytes]) -> dict[str, Any]:
    """Answers whose scores are not the inner product of the query's and the listing's embeddings (what a
    damaged index would serve), or that name a listing the store does not have."""
    from spnas_core.images import decode_rgb

    qv = emb.embed([decode_rgb(p) for p in photos])
    ids = sorted({i for ld in loads for _, hits in ld.answers for i, _ in hits})
    rows = store.get(ids)
    vecs, found = store.cached(emb.bundle_sha256, [rows[i].photo for i in ids if i in rows], emb.dim)
    vec = {i: v for i, v, f in zip([i for i in ids if i in rows], vecs, found) if f}
    bad, worst, checked = 0, 0.0, 0
    for ld in loads:
        for j, hits in ld.answers:
            for i, score in hits:
                checked += 1
                if i not in vec or not np.isfinite(score):
                    bad += 1
                    continue
                err = abs(float(qv[j] @ vec[i]) - score)
                worst = max(worst, err)
                bad += err > 1e-3
    return {"answers": sum(len(ld.answers) for ld in loads), "results_checked": checked, "garbage": bad,
            "largest_score_error": round(worst, 6)}


def damage(repo: Any, bundle_id: str, need: dict[str, Any]) -> dict[str, str]:
    """In-place damage in the repository: a byte flipped in the index of the largest served version, the
    index of a served hour truncated, the manifest of another version truncated. Returns key -> what."""
    served = sorted(need.values(), key=lambda v: -v.count)
    out = {}
    big = served[0]
    f = Path(big.url) / big.files["index"]["name"]
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    with open(f, "r+b") as fh:  # in place, as a disk or a stray process would: same inode, same size
        fh.write(data)
    out[big.key] = "byte flipped in its index"
    hour = next((v for v in served[1:] if v.granularity == "hour"), None)
    if hour is not None:
        os.truncate(Path(hour.url) / hour.files["index"]["name"], hour.files["index"]["size"] // 2)
        out[hour.key] = "index truncated to half"
    other = next((v for v in served[1:] if v.key not in out), None)
    if other is not None:
        m = Path(other.url) / "manifest.json"
        os.truncate(m, m.stat().st_size // 3)
        out[other.key] = "manifest truncated to a third"
    return out


def healed(repo: Any, damaged: dict[str, str], versions_before: dict[str, Any]) -> dict[str, str]:
    """For each damaged version: 'rebuilt' (its files match again), 'replaced' (a newer version of its
    period took over and it was retired), or what is still wrong."""
    from spnas_core.errors import VersionCorruptError

    now = {v.key: v for v in repo.versions()}
    out = {}
    for key in damaged:
        v = now.get(key)
        if v is None:
            old = versions_before[key]
            newer = [w for w in now.values() if (w.granularity, w.period) == (old.granularity, old.period)]
            out[key] = "replaced" if newer else "missing"
            continue
        try:
            repo.check(v)
            out[key] = "rebuilt"
        except VersionCorruptError as e:
            out[key] = f"still corrupt: {e}"[:200]
    return out


def _matches(repo: Any, v: Any) -> bool:
    from spnas_core.errors import VersionCorruptError

    try:
        repo.check(v)
        return True
    except VersionCorruptError:
        return False


def verify_versions(repo: Any, cache: Path) -> int:
    """Versions visible whose files do not match their manifest (a killed build must leave none)."""
    from retrieval.versions import open_version, verify
    from spnas_core.errors import VersionCorruptError

    bad = 0
    for v in repo.versions():
        try:
            verify(*open_version(v.url, cache / v.version))
        except VersionCorruptError:
            bad += 1
    return bad


def expected_versions(store: Any, repo: Any, bundle_id: str, dim: int, now: int) -> set[str]:
    """The versions build-due would publish now: named by their inputs (read like a build reads them)."""
    from retrieval.build import due, factory_params
    from retrieval.config import BuildConfig, RetentionConfig
    from retrieval.factory import choose_factory
    from retrieval.periods import period_range
    from retrieval.versions import inputs_digest

    out = set()
    cfg = BuildConfig()
    for g, period in due(store, repo, bundle_id, cfg, RetentionConfig(), now):
        ids, ts, photos, _ = store.snapshot(*period_range(g, period))
        d = inputs_digest(bundle_id, g, period, choose_factory(len(ids), dim, cfg.factory), factory_params(cfg),
                          ids, ts, photos)
        if repo.get(bundle_id, g, period, d[:16]) is None:
            out.add(d[:16])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=str(DEFAULT_BUNDLE), help="an embedder bundle (made first if missing)")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of each run")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[4, 16])
    ap.add_argument("--listings", type=int, default=600, help="seeded listings (Grocery train photos)")
    ap.add_argument("--hours", type=int, default=6, help="seeded listings spread over the past hours")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()

    import httpx

    import spnas
    from retrieval.build import build_due
    from retrieval.config import BuildConfig, RetentionConfig
    from retrieval.embedders import make_embedder
    from retrieval.listings import ListingStore
    from retrieval.photos import PhotoStore
    from retrieval.versions import Repository
    from spnas.app.serving.serve import seed
    from spnas_core.paths import data_root

    bundle = ensure_bundle(Path(args.bundle))
    work = Path(tempfile.mkdtemp(prefix="spnas-chaos-", dir=ROOT / "runs" / "bench"))
    token = os.urandom(16).hex()
    (work / "token").write_text(token + "\n")
    emb = make_embedder("litert", bundle)
    store = ListingStore(f"sqlite:///{work / 'listings.sqlite'}")
    photos_store, repo = PhotoStore(f"file://{work / 'photos'}"), Repository(f"file://{work / 'repository'}")
    cfg = spnas.compose("serve", [f"bundle={bundle}", "data=grocery", f"seed_limit={args.listings}", "seed_times=spread",
                                  f"seed_hours={args.hours}"])
    now = int(time.time())
    seeded = seed(store, photos_store, emb, cfg, now)
    build_due(store, photos_store, repo, emb, BuildConfig(), RetentionConfig(), now)
    cluster = Cluster(work, bundle, 18100 + os.getpid() % 500)
    cluster.sync_services(repo, emb.bundle_sha256)
    cluster.start_gateway()
    cluster.ready()
    photos = [p.read_bytes() for p in sorted((data_root() / "grocery-store-128" / "test").rglob("*.jpg"))[:300]]
    rows: list[dict[str, Any]] = []
    loads: list[Load] = []
    bad_versions, killed_builds = 0, []
    damaged: dict[str, str] = {}
    before_damage: dict[str, Any] = {}
    builds_under_load: list[int] = []
    seeded_ids = list(range(seeded["listings"]))
    monitor = ReadyMonitor(cluster)
    monitor.thread.start()
    try:
        for run, c in enumerate(args.concurrency):
            hours = sorted({v.start_ts for v in repo.versions() if v.granularity == "hour"})
            load = Load(cluster.url, token, photos, seeded_ids, {"search": 0.7, "add": 0.2, "delete": 0.1},
                        first_id=10**12 + run * 10**10, late_hours=hours)
            seeded_ids = load.seeded  # deletes of seeded listings are not drawn twice across runs
            victims: dict[str, Any] = {}
            bad_box = [0]

            def corrupt() -> None:
                need = cluster.needed(repo, emb.bundle_sha256)
                before_damage.update({v.key: v for v in repo.versions()})
                done = damage(repo, emb.bundle_sha256, need)
                damaged.update(done)
                victims["damaged"] = ", ".join(f"{k.split('/', 1)[1]}: {w}" for k, w in done.items())

            def build_and_sync() -> None:
                builds_under_load.append(cluster.build_due().wait())  # heals the damage, replaces late-changed hours
                cluster.sync_services(repo, emb.bundle_sha256)

            def kill_gateway() -> None:
                cluster.kill_gateway()
                time.sleep(1.0)
                cluster.start_gateway()

            def kill_service() -> None:
                need = cluster.needed(repo, emb.bundle_sha256)
                url = max(need, key=lambda u: need[u].count)
                victims["service"] = need[url].key
                cluster.kill_service(url)
                time.sleep(1.0)
                cluster.start_service(url)

            def kill_build() -> None:
                before = {v.url for v in repo.versions()}
                job = cluster.build_due(now=int(time.time()) + 3600)  # the current hour is due: real work
                at = random.Random(c).uniform(1.0, 4.0)
                time.sleep(at)
                job.send_signal(signal.SIGKILL)
                rc = job.wait()
                new = [v for v in repo.versions() if v.url not in before]
                killed_builds.append({"after_s": round(at, 2), "rc": rc, "published_before_kill": len(new)})
                bad_box[0] += sum(1 for v in new if not _matches(repo, v))  # a half version made visible

            events = [(args.seconds / 4, kill_gateway), (3 * args.seconds / 8, corrupt),
                      (args.seconds / 2, kill_service), (5 * args.seconds / 8, build_and_sync),
                      (3 * args.seconds / 4, kill_build)]
            took = asyncio.run(load.run(c, args.seconds, events))
            bad_versions += bad_box[0]
            cluster.ready()
            cluster.sync_services(repo, emb.bundle_sha256)  # builds a killed job may have published
            loads.append(load)
            n = sum(sum(v.values()) for v in load.codes.values())
            bad = sum(v for op in load.codes.values() for k, v in op.items() if k == 0 or k >= 500)
            gap = max((b - a for a, b in zip(load.acked_at, load.acked_at[1:])), default=float("nan"))
            rows.append({"run": f"c={c}: kill gateway; damage {victims.get('damaged', '-')}; kill "
                                f"{victims.get('service', 'a service')}; build + sync; kill a build job",
                         "concurrency": c, "requests": n, "non_4xx_error_rate": round(bad / max(n, 1), 4),
                         "partial_answers": load.partial,
                         "4xx": sum(v for op in load.codes.values() for k, v in op.items() if 400 <= k < 500),
                         "search_per_s": round(load.codes["search"][200] / took, 1),
                         "search_p50_ms": pct(load.lat["search"], 50), "search_p99_ms": pct(load.lat["search"], 99),
                         "add_p50_ms": pct(load.lat["add"], 50), "add_p99_ms": pct(load.lat["add"], 99),
                         "delete_p50_ms": pct(load.lat["delete"], 50), "delete_p99_ms": pct(load.lat["delete"], 99),
                         "longest_add_gap_s": round(gap, 2), "acked_adds": len(load.added),
                         "acked_deletes": len(load.deleted),
                         "codes": " ".join(f"{op}:{dict(v)}" for op, v in load.codes.items())})
            print(rows[-1], flush=True)

        # ------------------------------------------------------------ a killed build, its rerun, the next build
        added = {i: j for ld in loads for i, j in ld.added.items()}
        deleted = set().union(*(ld.deleted for ld in loads))
        unknown = set().union(*(ld.unknown for ld in loads))
        later = int(time.time()) + 3600  # the current hour is over for this build
        want = expected_versions(store, repo, emb.bundle_sha256, emb.dim, later)
        before = {v.version for v in repo.versions()}
        rc_killed = cluster.build_due(now=later, failpoint="build.before_manifest").wait()
        after_kill = {v.version for v in repo.versions()}
        rc_rerun = cluster.build_due(now=later).wait()
        published = {v.version for v in repo.versions()} - after_kill
        rc_again = cluster.build_due(now=later).wait()
        again = {v.version for v in repo.versions()} - after_kill - published
        build_check = {"killed_rc": rc_killed, "visible_after_kill": len(after_kill - before),
                       "rerun_rc": rc_rerun, "rerun_published": len(published), "expected": len(want),
                       "rerun_equals_inputs": published == want, "second_rerun_published": len(again),
                       "rc_again": rc_again}
        bad_versions += verify_versions(repo, work / "cache")
        cluster.sync_services(repo, emb.bundle_sha256)
        time.sleep(1.0)
        cluster.ready()
        heal = healed(repo, damaged, before_damage)
        exits = cluster.exited()
        retired_in_use = [why for _, why in exits if "not a published index version" in why]

        # ------------------------------------------------------------ read back: the store, then searches
        rows_now = store.get(list(added) + list(deleted))
        live = {i for i, r in rows_now.items() if r.active}
        lost = {i for i in added if i not in deleted and i not in unknown and i not in live}
        undone = deleted & live
        missing_search, returned_deleted, dupes, refused = 0, 0, 0, Counter()
        present = [i for i in added if i not in deleted and i not in unknown and i in rows_now]
        gone = [i for i in deleted if i in rows_now]
        ask = present + gone
        vecs, _ = store.cached(emb.bundle_sha256, [rows_now[i].photo for i in ask], emb.dim)  # what the index holds
        with httpx.Client(timeout=30) as cl:
            for n, i in enumerate(ask):
                t = rows_now[i].ts
                r = cl.post(f"{cluster.url}/search", json={"vector": vecs[n].tolist(), "k": 100, "start": t,
                                                           "end": t + 1})
                if r.status_code != 200:
                    refused[r.status_code] += 1
                    print(f"read-back search for listing {i} answered {r.status_code}: {r.text[:300]}", flush=True)
                    continue
                got = [h["id"] for h in r.json()["results"]]
                dupes += len(got) != len(set(got))
                if n < len(present):
                    missing_search += i not in got
                else:
                    returned_deleted += i in got
        checks = {"acked_adds": len(added), "acked_deletes": len(deleted), "no_answer": len(unknown),
                  "lost_adds_store": len(lost), "undone_deletes_store": len(undone),
                  "adds_not_found_by_search": missing_search, "deleted_returned_by_search": returned_deleted,
                  "listings_twice_in_an_answer": dupes, "read_back_searches_refused": dict(refused),
                  "versions_not_matching_manifest": bad_versions,
                  "killed_builds_under_load": killed_builds, **build_check,
                  "garbage": garbage(loads, store, emb, photos), "damaged": damaged, "healed": heal,
                  "builds_under_load_rc": builds_under_load,
                  "services_that_exited": exits, "restarts_refused_version_removed": len(retired_in_use),
                  "ready_polls": monitor.polls, "ready_lost_while_a_service_served": monitor.lost,
                  "ready_lost_reasons": dict(monitor.reasons), "ready_polls_gateway_down": monitor.down,
                  "partial_answers": sum(ld.partial for ld in loads)}
    finally:
        monitor.stop.set()
        cluster.stop()
    print(checks, flush=True)
    targets = [f"acknowledged adds lost: {checks['lost_adds_store']} in the store, {checks['adds_not_found_by_search']} "
               f"not found by a search after the next build (target 0)",
               f"acknowledged deletes undone: {checks['undone_deletes_store']} in the store, "
               f"{checks['deleted_returned_by_search']} returned by a search (target 0)",
               f"listings twice in one answer: {checks['listings_twice_in_an_answer']} (target 0); read-back "
               f"searches not answered 200: {sum(refused.values())} (target 0)",
               f"build killed before its manifest: exit {checks['killed_rc']}, {checks['visible_after_kill']} versions "
               f"visible after it (target 0); its rerun published {checks['rerun_published']} versions, exactly the "
               f"{checks['expected']} its inputs name: {checks['rerun_equals_inputs']}; a second rerun published "
               f"{checks['second_rerun_published']}",
               f"build jobs SIGKILLed under load: {len(killed_builds)} ({', '.join(str(k) for k in killed_builds)}); "
               f"versions visible that do not match their manifest: {bad_versions} (target 0)",
               f"garbage answers: {checks['garbage']['garbage']} of {checks['garbage']['results_checked']} results of "
               f"{checks['garbage']['answers']} searches (target 0; largest score error "
               f"{checks['garbage']['largest_score_error']})",
               f"damaged in place under load: {len(damaged)} versions ({'; '.join(f'{k}: {w}' for k, w in damaged.items())}); "
               f"after the next builds: {dict(Counter(h.split(':')[0] for h in heal.values()))} (target: all rebuilt "
               f"or replaced)",
               f"services that could not start because retention removed their version: "
               f"{checks['restarts_refused_version_removed']} (target 0); services that exited on their own: "
               f"{len(exits)} ({'; '.join(sorted({w for _, w in exits}))[:400] or '-'})",
               f"/ready polls answered 503 while the gateway ran and an index service served: "
               f"{checks['ready_lost_while_a_service_served']} of {checks['ready_polls']} (target 0; polls while the "
               f"gateway was down: {checks['ready_polls_gateway_down']}); searches answered partial: "
               f"{checks['partial_answers']}"]
    record("bench_chaos", "Photo search under faults: SIGKILLed gateway, index service and build job, in-place "
                          "corruption and retention under mixed load", rows, extra={"summary": checks},
           notes=f"{seeded['listings']} seeded Grocery listings over the past {args.hours} hours, bundle `{bundle}` ({emb.dim}-d); "
                 f"each run {args.seconds:.0f} s of 70% photo searches (k=10) / 20% adds (a third of them late: in an "
                 f"hour that has a version) / 10% deletes by N concurrent httpx clients; gateway = `spnas-serve gateway "
                 f"workers=2` (its process group SIGKILLed at 1/4); at 3/8 the repository damaged in place (a byte "
                 f"flipped in the index of the largest served version, a served hour's index truncated, another "
                 f"version's manifest truncated); the index service of the largest planned version SIGKILLed at 1/2 "
                 f"(restarted with a fresh cache, as a new pod); at 5/8 a build-due and the services matched to the "
                 f"plan; a `spnas-index build-due` SIGKILLed at a random moment at 3/4; each killed process restarted "
                 f"after 1 s. /ready polled every 100 ms; every search result checked against the exact inner product "
                 f"of the embeddings. Everything on this 2-core machine, one SQLite listing store shared by all "
                 f"processes. " + "; ".join(targets) + ".")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
