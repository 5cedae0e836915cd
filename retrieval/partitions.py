"""Time-partitioned indexes: hourly, daily and monthly partitions of one embedding space, on disk.

Layout of a store folder:

    h/2026-11-26T15/   one partition: snapshot/ (a `VectorIndex` folder), wal.log (write-ahead log), lock
    d/2026-11-26/      a day: finished hours rolled into it
    m/2026-11/         a month: finished days rolled into it
    templates/         trained IVF templates per month (so hourly/daily IVF partitions share centroids)
    txn/decisions.log  commit decisions of transactions this process coordinated across partitions
    compaction.jsonl   what each compaction moved (for operators; the partitions' logs are authoritative)

**Durability.** Every change (add, delete, prepare/commit/abort of a transaction, seal, absorb) is a
record appended to the partition's `wal.log` and fsync'd *before* memory changes and before it is
acknowledged; a failed append leaves the log and memory as they were (`IndexWriteError`). Adds no
longer rewrite the partition: `checkpoint()` folds the log into a new snapshot (atomic folder swap,
parent fsync'd) once the log passes `checkpoint_wal_bytes`. Any number of processes may open the same
partition (an index service, a compaction cron job, the seeding command): writers hold the partition's
`flock`, readers catch up with the log's new records before answering (one `stat` when nothing changed).

**Atomic across partitions.** A write spanning partitions is a two-phase commit: each partition logs a
`prepare` holding the listings (ids reserved, nothing visible), the coordinator logs its decision, then
each partition logs `commit`. A partition never decides alone: prepared transactions wait for their
coordinator (presumed abort: no decision once the coordinator is gone, or `TXN_DEADLINE_S` has passed
twice, means abort; a coordinator never commits after its deadline).

**Lifecycle.** New listings go to the finest partition covering their time (normally their hour).
`compact(now)` rolls each finished hour into its day and each finished day into its month: the source is
sealed (it refuses writes), the target logs one `absorb` record holding the source's live listings (the
commit point: replaying it twice changes nothing), then the source is retired (one rename, parent
fsync'd). A crash at any point is finished by the next `compact` or `recover`; a query ignores a source
that its target already absorbed, so every listing is served exactly once.

**Ids.** One listing id is live in one partition at a time (`DuplicateIdError` otherwise); a deleted
(sold) id may be listed again, and then lives in the partition of its new time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from spnas_core.errors import DuplicateIdError, IndexWriteError, PartitionClosedError, RetrievalError
from spnas_core.files import JsonLines, fsync_dir, recover_dir, write_bytes_atomic

from . import wal
from .faults import failpoint
from .index import Hits, SearchParams, VectorIndex, check_ids, check_vectors, default_factory, needs_training

log = logging.getLogger(__name__)

UTC = dt.timezone.utc
LEVELS = ("h", "d", "m")
PARTITION_FORMAT = "spnas.partition/1"
TXN_DEADLINE_S = 30.0  # a coordinator commits within this; prepared transactions older than twice it abort
MIN_TS, MAX_TS = 0, 253_402_300_799  # 1970-01-01 .. 9999-12-31T23:59:59 UTC: what a partition key can name


# ---------------------------------------------------------------------------------- keys
def check_ts(ts: np.ndarray | list[int]) -> np.ndarray:
    """int64 unix seconds within [1970, 9999]; `RetrievalError` otherwise."""
    a = np.asarray(ts)
    if a.size and a.dtype.kind == "f" and not np.isfinite(a).all():
        raise RetrievalError("timestamps must be finite unix seconds")
    if a.size and ((a < MIN_TS) | (a > MAX_TS)).any():
        bad = a[(a < MIN_TS) | (a > MAX_TS)][0]
        raise RetrievalError(f"timestamp {bad} is outside [{MIN_TS}, {MAX_TS}] (1970 to 9999, unix seconds)")
    return a.astype(np.int64).ravel()


def partition_key(ts: int, level: str = "h") -> str:
    """The partition of a unix timestamp at a level: h/YYYY-MM-DDTHH, d/YYYY-MM-DD, m/YYYY-MM."""
    t = dt.datetime.fromtimestamp(int(ts), UTC)
    if level == "h":
        return f"h/{t:%Y-%m-%dT%H}"
    if level == "d":
        return f"d/{t:%Y-%m-%d}"
    if level == "m":
        return f"m/{t:%Y-%m}"
    raise RetrievalError(f"partition level must be h, d or m; got '{level}'")


def key_range(key: str) -> tuple[int, int]:
    """[start, end) unix seconds a partition key covers."""
    level, _, stamp = key.partition("/")
    try:
        if level == "h":
            start = dt.datetime.strptime(stamp, "%Y-%m-%dT%H").replace(tzinfo=UTC)
            end = start + dt.timedelta(hours=1)
        elif level == "d":
            start = dt.datetime.strptime(stamp, "%Y-%m-%d").replace(tzinfo=UTC)
            end = start + dt.timedelta(days=1)
        elif level == "m":
            start = dt.datetime.strptime(stamp, "%Y-%m").replace(tzinfo=UTC)
            end = (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        else:
            raise ValueError(level)
    except ValueError:
        raise RetrievalError(f"bad partition key '{key}' (expected h/YYYY-MM-DDTHH, d/YYYY-MM-DD or m/YYYY-MM)") from None
    return int(start.timestamp()), int(end.timestamp())


def parent_key(key: str) -> str | None:
    level = key.split("/", 1)[0]
    start, _ = key_range(key)
    return {"h": partition_key(start, "d"), "d": partition_key(start, "m"), "m": None}[level]


def finest_covering(keys: Iterable[str], ts: int) -> str | None:
    """The finest of `keys` whose range holds `ts` (hour, then day, then month): where a listing goes."""
    best = None
    for k in keys:
        a, b = key_range(k)
        if a <= ts < b and (best is None or LEVELS.index(k[0]) < LEVELS.index(best[0])):
            best = k
    return best


def overlapping(keys: Iterable[str], start_ts: int | None, end_ts: int | None) -> list[str]:
    """Keys whose range overlaps [start_ts, end_ts) (open ends when None), coarsest first."""
    lo = -(2**62) if start_ts is None else int(start_ts)
    hi = 2**62 if end_ts is None else int(end_ts)
    out = [k for k in keys if key_range(k)[0] < hi and lo < key_range(k)[1]]
    return sorted(out, key=lambda k: (-LEVELS.index(k[0]), k))


def merge_hits(parts: Iterable[Hits], k: int) -> Hits:
    """Merge per-partition top-k lists: best score per id (de-duplicated), then the top-k overall."""
    parts = list(parts)
    if not parts:
        return Hits(np.zeros((0, k), np.int64), np.zeros((0, k), np.float32), np.zeros((0, k), np.int64))
    nq = len(parts[0].ids)
    ids = np.full((nq, k), -1, np.int64)
    sc = np.full((nq, k), -np.inf, np.float32)
    ts = np.zeros((nq, k), np.int64)
    for i in range(nq):
        best: dict[int, tuple[float, int]] = {}
        for h in parts:
            for j in range(h.ids.shape[1]):
                x = int(h.ids[i, j])
                if x < 0:
                    continue
                s = float(h.scores[i, j])
                if x not in best or s > best[x][0] or (s == best[x][0] and h.ts[i, j] > best[x][1]):
                    best[x] = (s, int(h.ts[i, j]))
        top = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))[:k]
        for j, (x, (s, t)) in enumerate(top):
            ids[i, j], sc[i, j], ts[i, j] = x, s, t
    return Hits(ids, sc, ts)


def new_txn_id(coordinator: str) -> str:
    """`<coordinator>:<start ns>:<random>`: the start time lets anyone apply the deadline rule."""
    return f"{coordinator}:{time.time_ns()}:{os.urandom(4).hex()}"


def txn_age_s(txn: str, now_ns: int | None = None) -> float:
    try:
        start = int(txn.rsplit(":", 2)[-2])
    except (IndexError, ValueError):
        return float("inf")
    return ((now_ns or time.time_ns()) - start) / 1e9


def coordinator_gone(txn: str, name: str) -> bool:
    """Whether the coordinator `name@host:pid` of `txn` is known to be dead: a process of this host
    that no longer exists, or any coordinator past twice the deadline (it would no longer commit)."""
    coord = txn.rsplit(":", 2)[0]
    if not coord.startswith(name + "@"):
        return False
    if txn_age_s(txn) > 2 * TXN_DEADLINE_S:
        return True
    host, _, pid = coord.split("@", 1)[1].rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


# ---------------------------------------------------------------------------------- locks
class RWLock:
    """Many readers or one writer (searches run side by side; log catch-up and writes run alone)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._readers:
                self._cond.wait()
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


@contextlib.contextmanager
def file_lock(path: Path, mode: int = fcntl.LOCK_EX) -> Iterator[int]:
    """An flock on `path` (created if missing), held for the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, mode)
        yield fd
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------- decisions
class DecisionLog:
    """A coordinator's durable commit decisions (JSON lines, fsync'd, appended under an flock).

    A decision is the commit point of a cross-partition transaction: once `decide` returns, the write
    is acknowledged, and whoever reads this log later finishes the commits. `done` marks a decision
    every partition has applied; `trim` drops those.
    """

    def __init__(self, path: str | os.PathLike, deadline_s: float = TXN_DEADLINE_S) -> None:
        self.path = Path(path)
        self.deadline_s = deadline_s
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def decide(self, txn: str, parts: list[str]) -> bool:
        """Log "commit" for `txn` unless its deadline passed (then the caller aborts); True if committed."""
        if txn_age_s(txn) > self.deadline_s:
            return False
        self._append({"txn": txn, "decision": "commit", "parts": parts})
        return True

    def done(self, txn: str) -> None:
        self._append({"txn": txn, "done": True})

    def _append(self, rec: dict) -> None:
        with file_lock(self.path.with_name(self.path.name + ".lock")):
            try:
                JsonLines(self.path).append(rec)
            except OSError as e:
                raise IndexWriteError(f"could not log a transaction decision in {self.path} ({e.strerror or e}); "
                                      f"nothing was acknowledged: free disk space and retry") from None

    def read(self) -> dict[str, dict]:
        """txn -> {"decision", "parts", "done"}."""
        out: dict[str, dict] = {}
        for r in JsonLines(self.path).read():
            d = out.setdefault(r["txn"], {"decision": None, "parts": [], "done": False})
            if r.get("decision"):
                d["decision"], d["parts"] = r["decision"], r.get("parts", [])
            if r.get("done"):
                d["done"] = True
        return out

    def committed(self, txn: str) -> bool:
        return (self.read().get(txn) or {}).get("decision") == "commit"

    def undone(self) -> dict[str, list[str]]:
        """Committed transactions some partition may not have applied yet: txn -> partitions."""
        return {t: d["parts"] for t, d in self.read().items() if d["decision"] == "commit" and not d["done"]}

    def trim(self) -> None:
        """Rewrite the log with the decisions not yet applied everywhere."""
        with file_lock(self.path.with_name(self.path.name + ".lock")):
            keep = self.undone()
            text = "".join(json.dumps({"txn": t, "decision": "commit", "parts": p}) + "\n" for t, p in keep.items())
            write_bytes_atomic(self.path, text.encode())


# ---------------------------------------------------------------------------------- one partition
@dataclass
class Batch:
    """Listings of one write: ids, unit vectors, timestamps."""

    ids: np.ndarray
    vectors: np.ndarray
    ts: np.ndarray

    def records(self) -> dict[str, np.ndarray]:
        return {"ids": self.ids, "ts": self.ts, "vectors": self.vectors}


@dataclass
class PartitionStats:
    key: str
    count: int
    live: int
    pending: int
    sealed: bool
    absorbed: list[str]
    seq: int
    factory: str
    wal_bytes: int
    start_ts: int
    end_ts: int


class Partition:
    """One partition: its snapshot, its write-ahead log, and the state both describe, shared between
    processes through the log and the partition's flock."""

    def __init__(self, store: "PartitionedStore", key: str) -> None:
        self.store, self.key = store, key
        self.dir = store.root / key
        self.snap = self.dir / "snapshot"
        self.wal_path = self.dir / "wal.log"
        self.start_ts, self.end_ts = key_range(key)
        self.index: VectorIndex | None = None
        self.seq = 0
        self.pending: dict[str, Batch] = {}
        self.sealed = False
        self.absorbed: dict[str, int] = {}
        self.retired = False
        self._ident: tuple[int, int] | None = None
        self._off = 0
        self._rw = RWLock()
        self._lock_fd: int | None = None

    # ------------------------------------------------------------------ catching up with the disk
    def _stat(self) -> os.stat_result | None:
        try:
            return os.stat(self.wal_path)
        except FileNotFoundError:
            return None

    def refresh(self) -> "Partition":
        """Apply what other processes logged since we last looked (a `stat` when nothing changed)."""
        st = self._stat()
        if st is not None and (st.st_dev, st.st_ino) == self._ident and st.st_size == self._off:
            return self
        with self._rw.write(), self._flock(fcntl.LOCK_SH):
            self._catch_up()
        return self

    @contextlib.contextmanager
    def _flock(self, mode: int) -> Iterator[None]:
        if self._lock_fd is None:
            try:
                self._lock_fd = os.open(self.dir / "lock", os.O_RDWR)
            except FileNotFoundError:
                self.retired = True
                raise PartitionClosedError(f"partition {self.key} was retired (rolled into "
                                           f"{parent_key(self.key)}); ask a current partition") from None
        fcntl.flock(self._lock_fd, mode)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _catch_up(self, writer: bool = False) -> None:
        """Under the partition lock: reload the snapshot if the log was reset, replay new records; a
        writer also cuts a torn tail (a crash mid-append)."""
        st = self._stat()
        if st is None:
            self.retired = True
            raise PartitionClosedError(f"partition {self.key} was retired (rolled into {parent_key(self.key)})")
        ident = (st.st_dev, st.st_ino)
        if ident != self._ident or self.index is None:
            self._load_snapshot()
            self._ident, self._off = ident, 0
        recs, end, torn = wal.read_frames(self.wal_path, self._off)
        for r in recs:
            if r.seq <= self.seq:  # already in the snapshot (a crash between snapshot and log reset)
                continue
            if r.seq != self.seq + 1:
                raise RetrievalError(f"partition {self.key}: write-ahead log jumps from record {self.seq} to {r.seq}; "
                                     f"the partition is damaged: restore {self.dir} from a backup")
            self._apply(r)
        self._off = end
        if torn and writer:
            log.warning("partition %s: cutting a torn record at byte %d of its log (a crash mid-write)", self.key, end)

    def _load_snapshot(self) -> None:
        recover_dir(self.snap)
        idx = VectorIndex.load(self.snap, expected_bundle=self.store.bundle)
        idx.params = self.store.params
        state = idx.extra.get("partition", {})
        self.index = idx
        self.seq = int(state.get("wal_seq", 0))
        self.sealed = bool(state.get("sealed", False))
        self.absorbed = {str(k): int(v) for k, v in state.get("absorbed", {}).items()}
        self.pending = {}

    # ------------------------------------------------------------------ applying records
    def _apply(self, r: wal.Record) -> None:
        idx = self.index
        assert idx is not None
        a = r.arrays
        if r.op == "add":
            idx.add(a["ids"], a["vectors"], a["ts"])
        elif r.op == "prepare":
            self.pending[r.fields["txn"]] = Batch(a["ids"], a["vectors"], a["ts"])
        elif r.op == "commit":
            b = self.pending.pop(r.fields["txn"])
            idx.add(b.ids, b.vectors, b.ts)
        elif r.op == "abort":
            self.pending.pop(r.fields["txn"], None)
        elif r.op == "delete":
            idx.delete(a["ids"])
        elif r.op == "seal":
            self.sealed = True
        elif r.op == "absorb":
            ids, vecs, ts = self._resolve_conflicts(a["ids"], a["vectors"], a["ts"], r.fields["source"])
            idx.add(ids, vecs, ts)
            self.absorbed[r.fields["source"]] = int(len(a["ids"]))
        else:
            raise RetrievalError(f"partition {self.key}: unknown log record '{r.op}' (written by a newer spnas?)")
        self.seq = r.seq

    def _resolve_conflicts(self, ids: np.ndarray, vecs: np.ndarray, ts: np.ndarray, source: str
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """An absorbed id already live here (a store written before ids were unique store-wide): the
        newer listing wins, deterministically, so replaying the record gives the same state."""
        idx = self.index
        assert idx is not None
        live = idx.is_live(ids)
        if not live.any():
            return ids, vecs, ts
        pos = idx._positions()
        keep = np.ones(len(ids), bool)
        for j in np.flatnonzero(live):
            mine = int(idx.ts[pos[int(ids[j])]])
            if mine >= int(ts[j]):
                keep[j] = False
            else:
                idx.delete([int(ids[j])])
        log.warning("partition %s: %d listing ids of %s were already live here; kept the newer of each",
                    self.key, int(live.sum()), source)
        return ids[keep], vecs[keep], ts[keep]

    # ------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        with self._rw.write(), self._flock(fcntl.LOCK_EX):
            self._catch_up(writer=True)
            yield

    def _log(self, *recs: wal.Record) -> None:
        """Append records durably, then apply them; on failure nothing changes (memory follows disk)."""
        for i, r in enumerate(recs):
            r.seq = self.seq + 1 + i
        self._off = wal.append_frames(self.wal_path, [wal.encode(r) for r in recs], self._off)
        try:
            for r in recs:
                self._apply(r)
        except Exception:
            self.index = None  # memory no longer matches the log: reload from disk on next use
            raise

    def _check_open(self) -> None:
        if self.sealed:
            raise PartitionClosedError(f"partition {self.key} is sealed for compaction into {parent_key(self.key)}; "
                                       f"retry in a moment")

    def _check_new(self, ids: np.ndarray, vecs: np.ndarray, ts: np.ndarray) -> Batch:
        assert self.index is not None
        ids, vecs, ts = self.index.check_add(ids, vecs, check_ts(ts))
        out = (ts < self.start_ts) | (ts >= self.end_ts)
        if out.any():
            raise RetrievalError(f"timestamp {int(ts[out][0])} is outside partition {self.key} "
                                 f"[{self.start_ts}, {self.end_ts})")
        reserved = self.reserved_ids()
        clash = np.isin(ids, reserved) if len(reserved) else np.zeros(len(ids), bool)
        if clash.any():
            raise DuplicateIdError(f"listing id {int(ids[clash][0])} is being written by another request; retry")
        return Batch(ids, vecs, ts)

    def add(self, ids: np.ndarray, vectors: np.ndarray, ts: np.ndarray) -> int:
        """Add listings (one partition, one record): durable when this returns."""
        with self._writing():
            self._check_open()
            b = self._check_new(ids, vectors, ts)
            if len(b.ids):
                self._log(wal.Record("add", arrays=b.records()))
        self._maybe_checkpoint()
        return int(len(b.ids))

    def prepare(self, txn: str, ids: np.ndarray, vectors: np.ndarray, ts: np.ndarray) -> int:
        """Phase one: log the listings as pending under `txn` (ids reserved, nothing visible)."""
        with self._writing():
            if txn in self.pending:
                return int(len(self.pending[txn].ids))  # a retried prepare
            self._check_open()
            b = self._check_new(ids, vectors, ts)
            self._log(wal.Record("prepare", fields={"txn": txn}, arrays=b.records()))
        return int(len(b.ids))

    def commit(self, txn: str) -> bool:
        """Phase two: make `txn`'s listings live; False when it is not pending here (already resolved)."""
        with self._writing():
            if txn not in self.pending:
                return False
            self._log(wal.Record("commit", fields={"txn": txn}))
        self._maybe_checkpoint()
        return True

    def abort(self, txn: str) -> bool:
        """Drop `txn`'s pending listings; False when it is not pending here."""
        with self._writing():
            if txn not in self.pending:
                return False
            self._log(wal.Record("abort", fields={"txn": txn}))
        return True

    def delete(self, ids: np.ndarray | list[int]) -> int:
        """Tombstone the listed ids held live here; returns how many. Sealed: `PartitionClosedError`."""
        ids = np.asarray(ids, np.int64).ravel()
        with self._writing():
            assert self.index is not None
            live = ids[self.index.is_live(ids)] if len(ids) else ids
            if not len(live):
                return 0
            self._check_open()
            self._log(wal.Record("delete", arrays={"ids": np.unique(live)}))
        return int(len(np.unique(live)))

    def seal(self) -> None:
        """Refuse further writes (compaction is about to move the listings); needs no pending transaction."""
        with self._writing():
            if self.sealed:
                return
            if self.pending:
                raise PartitionClosedError(f"partition {self.key} has {len(self.pending)} transaction(s) in flight; "
                                           f"it is sealed once they resolve")
            self._log(wal.Record("seal"))

    def absorb(self, source: str, ids: np.ndarray, vectors: np.ndarray, ts: np.ndarray) -> bool:
        """Log the live listings of a retiring partition as one record (idempotent per source)."""
        with self._writing():
            if source in self.absorbed:
                return False
            self._log(wal.Record("absorb", fields={"source": source},
                                 arrays={"ids": np.asarray(ids, np.int64), "ts": np.asarray(ts, np.int64),
                                         "vectors": np.asarray(vectors, np.float32).reshape(len(ids), self.store.dim)}))
        return True

    def checkpoint(self, force: bool = False) -> bool:
        """Fold the log into a new snapshot, then reset the log; skipped while transactions are pending."""
        with self._writing():
            if self.pending or (not force and self._off == 0):
                return False
            assert self.index is not None
            self.index.extra = {"partition": {"format": PARTITION_FORMAT, "key": self.key, "wal_seq": self.seq,
                                              "sealed": self.sealed, "absorbed": self.absorbed}}
            self.index.save(self.snap)
            failpoint("checkpoint.after_snapshot")
            wal.reset(self.wal_path)
            st = os.stat(self.wal_path)
            self._ident, self._off = (st.st_dev, st.st_ino), 0
        return True

    def _maybe_checkpoint(self) -> None:
        if self._off > self.store.checkpoint_wal_bytes:
            self.checkpoint()

    # ------------------------------------------------------------------ reading
    def search(self, queries: np.ndarray, k: int, start_ts: int | None = None, end_ts: int | None = None,
               params: SearchParams | None = None) -> Hits:
        self.refresh()
        with self._rw.read():
            assert self.index is not None
            return self.index.search(queries, k, start_ts, end_ts, params)

    def view(self) -> VectorIndex:
        """The current index (caught up with the log); treat it as read-only."""
        self.refresh()
        assert self.index is not None
        return self.index

    def live(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, vectors, ts) of the live listings."""
        self.refresh()
        with self._rw.read():
            assert self.index is not None
            return self.index.live_items()

    def reserved_ids(self) -> np.ndarray:
        """Ids held by pending transactions."""
        if not self.pending:
            return np.zeros(0, np.int64)
        return np.concatenate([b.ids for b in self.pending.values()])

    def stats(self) -> PartitionStats:
        self.refresh()
        with self._rw.read():
            assert self.index is not None
            return PartitionStats(self.key, len(self.index), self.index.live_count, len(self.pending), self.sealed,
                                  sorted(self.absorbed), self.seq, self.index.factory, self._off, self.start_ts,
                                  self.end_ts)

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


# ---------------------------------------------------------------------------------- the store
@dataclass
class CompactionReport:
    rolled: dict[str, list[str]] = field(default_factory=dict)
    carried: int = 0
    dropped_deleted: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    finished_retirements: list[str] = field(default_factory=list)


class PartitionedStore:
    """A folder of partitions (`root/h/...`, `root/d/...`, `root/m/...`) for one model bundle."""

    def __init__(self, root: str | os.PathLike, bundle_sha256: str, dim: int,
                 factory: str | Callable[[int, int], str] = "auto", params: SearchParams | None = None, *,
                 checkpoint_wal_bytes: int = 16 << 20, coordinator: str | None = None) -> None:
        self.root = Path(root)
        self.bundle = bundle_sha256
        self.dim = dim
        self.factory = factory
        self.params = params or SearchParams()
        self.checkpoint_wal_bytes = checkpoint_wal_bytes
        self.coordinator = coordinator or f"store@{socket.gethostname()}:{os.getpid()}"  # see coordinator_gone
        self.root.mkdir(parents=True, exist_ok=True)
        self.decisions = DecisionLog(self.root / "txn" / "decisions.log")
        self._parts: dict[str, Partition] = {}
        self._mu = threading.RLock()

    # ------------------------------------------------------------------ partitions on disk
    def _store_lock(self) -> contextlib.AbstractContextManager[int]:
        return file_lock(self.root / ".store.lock")

    def keys(self) -> list[str]:
        """Partitions present, coarsest last; leftovers of interrupted creations, swaps and retirements
        are finished or cleared first, so a crash never hides a partition."""
        out = []
        for level in LEVELS:
            d = self.root / level
            if not d.is_dir():
                continue
            names = os.listdir(d)
            if any(n.startswith(".") or not (d / n / "wal.log").exists() for n in names):
                with self._store_lock():
                    self._recover_level(d)
                names = os.listdir(d)
            out += [f"{level}/{n}" for n in sorted(names) if not n.startswith(".") and (d / n / "wal.log").exists()]
        return out

    def _recover_level(self, d: Path) -> None:
        """Under the store lock: finish or clear what a crash left in one level folder."""
        for n in sorted(os.listdir(d)):
            p = d / n
            if not n.startswith("."):
                if p.is_dir() and not (p / "wal.log").exists() and (p / "manifest.json").exists():
                    self._migrate_v1(p)
                continue
            base, _, rest = n[1:].partition(".")
            final = d / base
            if rest.startswith("new-"):  # an interrupted creation: complete when whole, else drop
                whole = (p / "wal.log").exists() and (p / "snapshot" / "manifest.json").exists()
                if whole and not final.exists():
                    os.rename(p, final)
                    fsync_dir(d)
                else:
                    shutil.rmtree(p, ignore_errors=True)
            elif rest.startswith("old-"):  # a 0.1 partition cut between replace_dir's two renames
                recover_dir(final)
                if final.exists() and not (final / "wal.log").exists():
                    self._migrate_v1(final)
            elif rest.startswith("v1-"):  # an interrupted migration
                if not final.exists():
                    self._migrate_v1(p, final)
                else:
                    shutil.rmtree(p, ignore_errors=True)
            elif rest.startswith("retired-"):
                shutil.rmtree(p, ignore_errors=True)

    def _migrate_v1(self, src: Path, final: Path | None = None) -> None:
        """A partition of spnas 0.1 (the index folder itself) becomes `snapshot/` of a partition folder."""
        final = final or src
        d = final.parent
        if src == final:
            moved = d / f".{final.name}.v1-{time.time_ns()}"
            os.rename(src, moved)
            fsync_dir(d)
            src = moved
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.new-", dir=d))
        (tmp / "lock").touch()
        (tmp / "wal.log").touch()
        os.rename(src, tmp / "snapshot")  # last: a half-made folder without its snapshot is dropped on recovery
        fsync_dir(tmp)
        os.rename(tmp, final)
        fsync_dir(d)
        log.info("migrated 0.1 partition %s to the %s layout", final, PARTITION_FORMAT)

    def path(self, key: str) -> Path:
        return self.root / key

    def exists(self, key: str) -> bool:
        return (self.root / key / "wal.log").exists()

    def _factory_for(self, n: int) -> str:
        if callable(self.factory):
            return self.factory(n, self.dim)
        return default_factory(n, self.dim) if self.factory == "auto" else str(self.factory)

    def create(self, key: str, expected_items: int = 1) -> Partition:
        """An empty partition, created atomically (a folder renamed into place); existing ones are kept."""
        key_range(key)
        with self._store_lock():
            if not self.exists(key):
                d = self.root / key.split("/")[0]
                d.mkdir(parents=True, exist_ok=True)
                recover_dir(d / key.split("/")[1])
                if (d / key.split("/")[1]).exists():  # a 0.1 partition
                    self._recover_level(d)
                if not self.exists(key):
                    tmp = Path(tempfile.mkdtemp(prefix=f".{key.split('/')[1]}.new-", dir=d))
                    try:
                        idx = self._new_index(key, expected_items)
                        idx.extra = {"partition": {"format": PARTITION_FORMAT, "key": key, "wal_seq": 0,
                                                   "sealed": False, "absorbed": {}}}
                        idx.save(tmp / "snapshot")
                        (tmp / "lock").touch()
                        fd = os.open(tmp / "wal.log", os.O_WRONLY | os.O_CREAT, 0o644)
                        os.fsync(fd)
                        os.close(fd)
                        os.chmod(tmp, 0o755)
                        fsync_dir(tmp)
                        os.rename(tmp, d / key.split("/")[1])
                        fsync_dir(d)
                    except BaseException:
                        shutil.rmtree(tmp, ignore_errors=True)
                        raise
        return self.partition(key)

    def partition(self, key: str) -> Partition:
        """The partition `key` (opened once per store object, caught up with its log)."""
        with self._mu:
            p = self._parts.get(key)
            if p is None or p.retired:
                if not self.exists(key):
                    self.keys()  # finishes an interrupted swap or migration of this key, if any
                    if not self.exists(key):
                        raise RetrievalError(f"no partition {key} in {self.root}")
                p = self._parts[key] = Partition(self, key)
        return p.refresh()

    def open(self, key: str, create_for: int = 0) -> VectorIndex:
        """A partition's current index (created empty when missing and `create_for` > 0)."""
        if create_for > 0 and not self.exists(key):
            self.create(key, create_for)
        return self.partition(key).view()

    def _new_index(self, key: str, n: int) -> VectorIndex:
        factory = self._factory_for(max(n, 1))
        idx = VectorIndex(factory, self.dim, self.bundle, name=key)
        if needs_training(factory):
            template = self.template_for(key)
            if template is not None:
                import faiss

                idx.faiss_index = faiss.clone_index(template)
                idx.faiss_index.reset()
                idx.template = partition_key(key_range(key)[0], "m")
        return idx

    def template_for(self, key: str):
        """The month's trained IVF template (so hourly/daily IVF partitions share centroids), if any."""
        import faiss

        month = partition_key(key_range(key)[0], "m").split("/", 1)[1]
        p = self.root / "templates" / f"{month}.faiss"
        return faiss.read_index(str(p)) if p.exists() else None

    def train_template(self, month_ts: int, sample: np.ndarray, factory: str) -> Path:
        """Train and store the month's IVF template on a sample of its vectors."""
        import faiss

        from spnas_core.files import atomic_path

        from .index import new_faiss_index

        idx = new_faiss_index(factory, self.dim)
        idx.train(np.ascontiguousarray(sample, dtype=np.float32))
        month = partition_key(month_ts, "m").split("/", 1)[1]
        p = self.root / "templates" / f"{month}.faiss"
        with atomic_path(p) as tmp:
            faiss.write_index(idx, str(tmp))
        return p

    # ------------------------------------------------------------------ writes
    def target_for(self, ts: int, keys: list[str] | None = None) -> str:
        """Where a listing of time `ts` goes: the finest partition covering it, else its hour."""
        return finest_covering(self.keys() if keys is None else keys, int(ts)) or partition_key(int(ts), "h")

    def live_elsewhere(self, ids: np.ndarray, keys: list[str] | None = None) -> dict[int, str]:
        """Listing ids already live (or reserved by a pending write) in some partition: id -> partition."""
        out: dict[int, str] = {}
        for key in keys if keys is not None else self.keys():
            p = self.partition(key)
            with p._rw.read():
                assert p.index is not None
                for i in ids[p.index.is_live(ids)].tolist():
                    out[int(i)] = key
                res = p.reserved_ids()
                for i in ids[np.isin(ids, res)].tolist() if len(res) else []:
                    out[int(i)] = key
        return out

    def add(self, ids: np.ndarray, vectors: np.ndarray, ts: np.ndarray) -> dict[str, int]:
        """Add listings to the partitions of their time, all or nothing; returns listings per partition."""
        ids = check_ids(ids)
        vectors = check_vectors(vectors, self.dim)
        ts = check_ts(ts)
        if not (len(ids) == len(vectors) == len(ts)):
            raise RetrievalError(f"{len(ids)} ids, {len(vectors)} vectors and {len(ts)} timestamps do not match")
        if not len(ids):
            return {}
        keys = self.keys()
        taken = self.live_elsewhere(ids, keys)
        if taken:
            i, where = next(iter(taken.items()))
            raise DuplicateIdError(f"listing id {i} is already live in partition {where}; delete it first "
                                   f"(one id lives in one partition at a time)")
        targets = np.array([self.target_for(int(t), keys) for t in ts])
        groups = {k: targets == k for k in sorted(set(targets.tolist()))}
        for k, m in groups.items():
            if not self.exists(k):
                self.create(k, int(m.sum()))
        if len(groups) == 1:
            k, m = next(iter(groups.items()))
            self.partition(k).add(ids[m], vectors[m], ts[m])
            return {k: int(m.sum())}
        self.transact({k: Batch(ids[m], vectors[m], ts[m]) for k, m in groups.items()})
        return {k: int(m.sum()) for k, m in groups.items()}

    def transact(self, batches: dict[str, Batch]) -> str:
        """Two-phase commit of listings over several partitions of this store; returns the txn id."""
        txn = new_txn_id(self.coordinator)
        prepared: list[Partition] = []
        try:
            for k, b in batches.items():
                p = self.partition(k)
                p.prepare(txn, b.ids, b.vectors, b.ts)
                prepared.append(p)
            failpoint("txn.after_prepare")
            if not self.decisions.decide(txn, list(batches)):
                raise IndexWriteError(f"transaction {txn} passed its {TXN_DEADLINE_S:.0f} s deadline; nothing was added")
        except BaseException:
            for p in prepared:
                with contextlib.suppress(Exception):
                    p.abort(txn)
            raise
        failpoint("txn.after_decision")
        for i, p in enumerate(prepared):
            try:
                p.commit(txn)
            except IndexWriteError as e:  # decided: `recover()` finishes it; the write is durable already
                log.warning("commit of %s in %s deferred: %s", txn, p.key, e)
            if i == 0:
                failpoint("txn.after_first_commit")
        with contextlib.suppress(IndexWriteError):
            self.decisions.done(txn)
        return txn

    def delete(self, ids: Iterable[int]) -> int:
        """Tombstone ids in whichever partition holds them live; returns how many were live."""
        ids = np.asarray(list(ids), np.int64)
        return sum(self.partition(k).delete(ids) for k in self.keys())

    # ------------------------------------------------------------------ queries
    def covering(self, start_ts: int | None, end_ts: int | None) -> list[str]:
        """Partitions whose time range overlaps [start_ts, end_ts), coarsest first."""
        return overlapping(self.keys(), start_ts, end_ts)

    def search(self, queries: np.ndarray, k: int = 10, start_ts: int | None = None, end_ts: int | None = None
               ) -> Hits:
        """Fan out over the partitions covering the window, merge and de-duplicate the top-k."""
        q = np.atleast_2d(np.asarray(queries, np.float32))
        keys = self.covering(start_ts, end_ts)
        parts = [self.partition(key) for key in keys]
        absorbed = {s for p in parts for s in p.absorbed}
        hits = [p.search(q, k, start_ts, end_ts) for p in parts if p.key not in absorbed]
        if not hits:
            return Hits(np.full((len(q), k), -1, np.int64), np.full((len(q), k), -np.inf, np.float32),
                        np.zeros((len(q), k), np.int64))
        return merge_hits(hits, k)

    # ------------------------------------------------------------------ recovery and compaction
    def recover(self) -> dict[str, int]:
        """Finish what crashes left: retire sources their target absorbed, resolve this store's
        in-doubt transactions from its decision log (presumed abort past the deadline)."""
        out = {"retired": 0, "committed": 0, "aborted": 0}
        keys = self.keys()
        for key in keys:
            par = parent_key(key)
            if par and par in keys and key in self.partition(par).absorbed:
                self._retire(key)
                out["retired"] += 1
        decided = self.decisions.read()
        for key in self.keys():
            p = self.partition(key)
            for txn in list(p.pending):
                d = decided.get(txn, {})
                if d.get("decision") == "commit":
                    out["committed"] += p.commit(txn)
                elif coordinator_gone(txn, "store"):
                    out["aborted"] += p.abort(txn)
        return out

    def compact(self, now_ts: int) -> CompactionReport:
        """Roll finished hours into their day and finished days into their month; safe to run while
        index services serve the store, idempotent, and finished by the next run after a crash."""
        rep = CompactionReport()
        rec = self.recover()
        if rec["retired"]:
            rep.finished_retirements.append(f"{rec['retired']} partition(s)")
        journal = JsonLines(self.root / "compaction.jsonl")
        for level in ("h", "d"):
            for key in [k for k in self.keys() if k.startswith(f"{level}/")]:
                if key_range(key)[1] > now_ts:
                    continue
                parent = parent_key(key)
                assert parent is not None
                src = self.partition(key)
                try:
                    src.seal()
                except PartitionClosedError as e:
                    rep.skipped[key] = str(e)
                    continue
                failpoint("compact.after_seal")
                ids, vecs, ts = src.live()
                rep.dropped_deleted += len(src.view()) - len(ids)
                dst = self.partition(parent) if self.exists(parent) else self.create(parent, len(ids))
                if dst.sealed:
                    rep.skipped[key] = f"its target {parent} is sealed (being rolled into {parent_key(parent)})"
                    continue
                dst.absorb(key, ids, vecs, ts)
                failpoint("compact.after_absorb")
                journal.append({"time": int(time.time()), "absorbed": key, "into": parent, "listings": int(len(ids))})
                dst.checkpoint()
                self._retire(key)
                rep.carried += len(ids)
                rep.rolled.setdefault(parent, []).append(key)
        return rep

    def _retire(self, key: str) -> None:
        """Remove a partition whose listings its parent absorbed: one rename (parent fsync'd), then delete."""
        p = self.path(key)
        d = p.parent
        with self._store_lock():
            if not p.exists():
                return
            gone = d / f".{p.name}.retired-{time.time_ns()}"
            os.rename(p, gone)
            fsync_dir(d)
            failpoint("compact.mid_retire")
            shutil.rmtree(gone, ignore_errors=True)
        with self._mu:
            old = self._parts.pop(key, None)
        if old is not None:
            old.retired = True
            old.close()

    def stats(self) -> dict[str, dict]:
        return {k: self.partition(k).stats().__dict__ for k in self.keys()}

    def forget(self) -> None:
        """Drop the partitions this object loaded (they are re-read on next use): the supervisor's
        compaction should not keep a second copy of every partition in memory."""
        with self._mu:
            for p in self._parts.values():
                p.close()
            self._parts.clear()
