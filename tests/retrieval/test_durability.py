"""The partition store under faults: failed writes, SIGKILL at every step of a transaction, a
compaction and a snapshot swap, input that used to slip through. Every acknowledged listing is
served exactly once after a restart, and nothing unacknowledged is."""

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from retrieval import wal
from retrieval.index import VectorIndex
from retrieval.partitions import PartitionedStore, key_range, partition_key
from spnas_core.errors import DuplicateIdError, IndexWriteError, PartitionClosedError, RetrievalError

D = 16
BUNDLE = "b" * 64
HOUR = 3600
T0 = 1_790_000_000 - 1_790_000_000 % (24 * HOUR)  # a day boundary (UTC)
ROOT = Path(__file__).resolve().parents[2]


def unit(n, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, D)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def store(root) -> PartitionedStore:
    return PartitionedStore(root, BUNDLE, D, factory="Flat")


def served_ids(root) -> list[int]:
    """Every live id a fresh process would serve, with repeats (what a full-window query can reach)."""
    s = store(root)
    s.recover()
    keys = s.keys()
    absorbed = {a for k in keys for a in s.partition(k).absorbed}
    out: list[int] = []
    for k in keys:
        if k not in absorbed:
            out += s.partition(k).live()[0].tolist()
    return sorted(out)


def run_killed(code: str, failpoint: str) -> None:
    """Run `code` in a fresh interpreter that SIGKILLs itself at `failpoint`."""
    env = {**os.environ, "SPNAS_FAILPOINTS": failpoint}
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == -9, f"expected a SIGKILL at {failpoint}; exit {p.returncode}\n{p.stderr[-2000:]}"


PRELUDE = f"""
import numpy as np
from retrieval.partitions import PartitionedStore
D, T0, HOUR = {D}, {T0}, {HOUR}
def unit(n, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, D)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)
"""


# ---------------------------------------------------------------------------------- failed writes
def test_failed_log_write_changes_nothing(tmp_path, monkeypatch):
    s = store(tmp_path)
    s.add([1, 2], unit(2), [T0, T0 + 1])
    snap = s.path(partition_key(T0)) / "snapshot" / "index.faiss"
    inode = snap.stat().st_ino

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(wal.os, "fsync", disk_full)
    with pytest.raises(IndexWriteError, match="nothing was changed"):
        s.add([3], unit(1, 1), [T0 + 2])
    with pytest.raises(IndexWriteError):
        s.delete([1])
    part = s.partition(partition_key(T0))
    assert sorted(part.live()[0].tolist()) == [1, 2], "memory unchanged by the failed add and delete"
    monkeypatch.undo()
    assert served_ids(tmp_path) == [1, 2], "the disk unchanged too (the log was cut back)"
    s.add([3], unit(1, 1), [T0 + 2])  # the store keeps working once the disk has room
    assert s.delete([1]) == 1
    assert served_ids(tmp_path) == [2, 3]
    assert snap.stat().st_ino == inode, "adds and deletes append to the log; they do not rewrite the partition"


def test_acknowledged_writes_survive_sigkill(tmp_path):
    """A writer killed right after an acknowledgement: the acknowledged listing is there after restart."""
    code = PRELUDE + f"""
s = PartitionedStore({str(tmp_path)!r}, {BUNDLE!r}, D, factory="Flat")
for i in range(40):
    s.add([i], unit(1, i), [T0 + i])
    print(i, flush=True)
s.delete([7])
print("deleted", flush=True)
import os, signal
os.kill(os.getpid(), signal.SIGKILL)
"""
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == -9 and "deleted" in p.stdout, p.stderr[-2000:]
    assert served_ids(tmp_path) == sorted(set(range(40)) - {7})


def test_torn_log_tail_is_cut_and_earlier_records_kept(tmp_path):
    s = store(tmp_path)
    s.add([1], unit(1), [T0])
    s.add([2], unit(1, 1), [T0 + 1])
    log = s.path(partition_key(T0)) / "wal.log"
    data = log.read_bytes()
    log.write_bytes(data[:-7])  # a crash cut the last record
    assert served_ids(tmp_path) == [1]
    s2 = store(tmp_path)
    s2.add([3], unit(1, 2), [T0 + 2])  # the next writer cuts the torn tail and appends after it
    assert served_ids(tmp_path) == [1, 3]
    recs, _, torn = wal.read_frames(log)
    assert not torn and [r.op for r in recs] == ["add", "add"]


def test_checkpoint_folds_the_log_and_survives_a_kill_before_the_reset(tmp_path):
    s = store(tmp_path)
    for i in range(5):
        s.add([i], unit(1, i), [T0 + i])
    key = partition_key(T0)
    assert s.partition(key).checkpoint()
    assert (s.path(key) / "wal.log").stat().st_size == 0
    assert served_ids(tmp_path) == list(range(5))
    code = PRELUDE + f"""
s = PartitionedStore({str(tmp_path)!r}, {BUNDLE!r}, D, factory="Flat")
s.add([10, 11], unit(2, 9), [T0 + 10, T0 + 11])
s.partition({key!r}).checkpoint()
"""
    run_killed(code, "checkpoint.after_snapshot")
    assert (s.path(key) / "wal.log").stat().st_size > 0, "killed between the snapshot and the log reset"
    assert served_ids(tmp_path) == [0, 1, 2, 3, 4, 10, 11], "records already in the snapshot are not applied twice"


# ---------------------------------------------------------------------------------- atomic across partitions
def test_add_across_hours_is_all_or_nothing(tmp_path):
    s = store(tmp_path)
    s.add([1], unit(1), [T0 + HOUR])
    s.partition(partition_key(T0 + HOUR)).seal()  # the second hour refuses writes
    with pytest.raises(PartitionClosedError):
        s.add([10, 11], unit(2, 1), [T0, T0 + HOUR + 5])
    assert served_ids(tmp_path) == [1], "the first hour's half was aborted"
    assert not s.partition(partition_key(T0)).pending
    s.add([10, 11], unit(2, 1), [T0, T0 + 2 * HOUR])  # the same ids are free again
    assert served_ids(tmp_path) == [1, 10, 11]


@pytest.mark.parametrize("point,visible", [("txn.after_prepare", False), ("txn.after_decision", True),
                                           ("txn.after_first_commit", True)])
def test_transaction_killed_at_each_step(tmp_path, point, visible):
    code = PRELUDE + f"""
s = PartitionedStore({str(tmp_path)!r}, {BUNDLE!r}, D, factory="Flat")
s.add([1], unit(1), [T0])
s.add([2], unit(1, 1), [T0 + HOUR])
s.add([20, 21, 22], unit(3, 2), [T0 + 5, T0 + HOUR + 5, T0 + 2 * HOUR + 5])
"""
    run_killed(code, point)
    expected = [1, 2, 20, 21, 22] if visible else [1, 2]
    assert served_ids(tmp_path) == expected  # recover(): commit what was decided, abort what was not
    s = store(tmp_path)
    assert not any(s.partition(k).pending for k in s.keys())
    if not visible:  # the client got no answer and retries: the ids are free
        s.add([20, 21, 22], unit(3, 2), [T0 + 5, T0 + HOUR + 5, T0 + 2 * HOUR + 5])
        assert served_ids(tmp_path) == [1, 2, 20, 21, 22]


# ---------------------------------------------------------------------------------- compaction
def _three_hours(root):
    s = store(root)
    ids = np.arange(30)
    s.add(ids, unit(30, 3), T0 + (ids % 3) * HOUR + ids)
    s.delete([4])
    return s


@pytest.mark.parametrize("point", ["compact.after_seal", "compact.after_absorb", "compact.mid_retire"])
def test_compaction_killed_at_each_step_serves_each_listing_once(tmp_path, point):
    _three_hours(tmp_path)
    code = PRELUDE + f"""
s = PartitionedStore({str(tmp_path)!r}, {BUNDLE!r}, D, factory="Flat")
s.compact(T0 + 3 * HOUR)
"""
    run_killed(code, point)
    live = sorted(set(range(30)) - {4})
    assert served_ids(tmp_path) == live, "a fresh process serves every listing exactly once"
    s = store(tmp_path)
    s.compact(T0 + 3 * HOUR)  # the next compaction finishes the job instead of failing
    assert s.keys() == [partition_key(T0, "d")]
    assert served_ids(tmp_path) == live
    hits = s.search(unit(30, 3), 1)
    assert hits.ids[:, 0].tolist() == [i if i != 4 else hits.ids[4, 0] for i in range(30)]


def test_a_query_skips_a_source_its_target_already_absorbed(tmp_path):
    s = _three_hours(tmp_path)
    src = partition_key(T0)
    ids, vecs, ts = s.partition(src).live()
    s.partition(src).seal()
    day = s.create(partition_key(T0, "d"))
    day.absorb(src, ids, vecs, ts)  # the state a crash before the retirement leaves
    hits = s.search(vecs, 3)
    assert hits.ids[:, 0].tolist() == ids.tolist()
    assert all(len(set(r[r >= 0].tolist())) == (r >= 0).sum() for r in hits.ids)
    assert sorted(s.partition(partition_key(T0, "d")).live()[0].tolist()) == sorted(ids.tolist())


def test_swap_cut_between_its_two_renames_is_recovered_where_partitions_are_listed(tmp_path):
    s = store(tmp_path)
    s.add([1, 2], unit(2), [T0, T0 + 1])
    part = s.partition(partition_key(T0))
    part.checkpoint(force=True)
    snap = s.path(partition_key(T0)) / "snapshot"
    os.replace(snap, snap.with_name(".snapshot.old-123-456"))  # replace_dir's first rename, then a crash
    assert served_ids(tmp_path) == [1, 2]
    # a 0.1 store (the partition folder was the index) cut the same way is listed and migrated
    v1 = tmp_path / "old"
    idx = VectorIndex("Flat", D, BUNDLE, name=partition_key(T0))
    idx.add([5, 6], unit(2, 5), [T0, T0 + 1])
    idx.save(v1 / partition_key(T0))
    (v1 / "h" / partition_key(T0).split("/")[1]).rename(v1 / "h" / f".{partition_key(T0).split('/')[1]}.old-1-2")
    s1 = store(v1)
    assert s1.keys() == [partition_key(T0)]
    assert served_ids(v1) == [5, 6]
    s1.add([7], unit(1, 7), [T0 + 2])
    assert served_ids(v1) == [5, 6, 7]


# ---------------------------------------------------------------------------------- ids and input
def test_one_id_lives_in_one_partition_and_can_be_relisted_after_a_delete(tmp_path):
    s = store(tmp_path)
    s.add([1], unit(1), [T0])
    with pytest.raises(DuplicateIdError, match="already live in partition h/"):
        s.add([1], unit(1, 1), [T0 + 5 * HOUR])  # the same id in another hour
    with pytest.raises(RetrievalError, match="appears twice"):
        s.add([9, 9], unit(2, 1), [T0, T0 + HOUR])
    assert s.delete([1]) == 1
    s.add([1], unit(1, 1), [T0 + 5 * HOUR])  # sold, then listed again later: lives in its new hour
    s.add([2], unit(1, 2), [T0])
    s.delete([2])
    s.add([2], unit(1, 3), [T0 + 10])  # re-listed in the same hour: the new row replaces the tombstoned one
    assert served_ids(tmp_path) == [1, 2]
    h = s.search(unit(1, 3), 2)
    assert h.ids[0, 0] == 2 and h.scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    s.compact(T0 + 24 * HOUR)
    assert served_ids(tmp_path) == [1, 2]


@pytest.mark.parametrize("ids,vec,ts,match", [
    ([-5], None, [T0], "must be in \\[0"),
    ([1], "nan", [T0], "NaN"),
    ([1], "huge", [T0], "length 2.8e\\+06"),
    ([1], None, [float("inf")], "finite"),
    ([1], None, [1e30], "outside"),
])
def test_bad_listings_are_refused_before_anything_is_written(tmp_path, ids, vec, ts, match):
    s = store(tmp_path)
    v = unit(1)
    if vec == "nan":
        v[0, 0] = np.nan
    elif vec == "huge":
        v = v * 2.8e6
    with pytest.raises(RetrievalError, match=match):
        s.add(np.asarray(ids), v, np.asarray(ts))
    assert s.keys() == [] or served_ids(tmp_path) == []


def test_hour_and_day_keys_cover_their_ranges():
    a, b = key_range(partition_key(T0 + 3 * HOUR + 5))
    assert (a, b) == (T0 + 3 * HOUR, T0 + 4 * HOUR)
    a, b = key_range(partition_key(T0 + 5, "d"))
    assert (a, b) == (T0, T0 + 24 * HOUR)
