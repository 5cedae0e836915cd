"""The listing store, the source of truth of the photo search: SQLite (WAL, synchronous=FULL) by default,
PostgreSQL by URL (`postgresql://user@host/db`), one code path through SQLAlchemy Core.

    listings(id, ts, photo, title, status, seq)     one row per listing id; status active | sold | deleted
    embeddings(bundle, photo, vec)                  the embedding cache: one vector per (bundle id, photo hash)

Writes are idempotent by id: adding an id that is active with the same photo changes nothing, adding
it again after a delete re-lists it, and adding it with another photo while active is refused
(`DuplicateIdError`); deleting twice is answered like deleting once. "Acknowledged" means committed.

Every committed change takes the next value of one counter row (`UPDATE ... RETURNING`), which also
makes writers wait for each other, so `seq` order is commit order: a reader that follows `seq` never
skips a change committed late. A build reads a period's active listings together with the `seq` it saw
(the version's snapshot); index services and the gateway follow the changes after it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from spnas_core.errors import ConfigError, DuplicateIdError, RetrievalError, StoreUnavailableError

STATUS = {"active": 0, "sold": 1, "deleted": 2}
CHUNK = 500  # ids per IN (...) list


@dataclass(frozen=True)
class Listing:
    id: int
    ts: int
    photo: str
    title: str = ""
    status: int = 0
    seq: int = 0

    @property
    def active(self) -> bool:
        return self.status == 0


def engine_url(url: str) -> str:
    """SQLAlchemy's form of a store URL: bare `postgresql://` means psycopg 3 (the driver installed)."""
    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare):
            return "postgresql+psycopg://" + url[len(bare):]
    if not url.startswith(("sqlite:///", "postgresql+")):
        raise ConfigError(f"store URL '{url}': use sqlite:///<file> or postgresql://user@host/db")
    return url


class ListingStore:
    """Listings and the embedding cache in one database (thread-safe; one instance per process)."""

    def __init__(self, url: str) -> None:
        import sqlalchemy as sa

        self.url = url
        u = engine_url(url)
        self.sqlite = u.startswith("sqlite")
        if self.sqlite:
            from pathlib import Path

            Path(u.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            self.engine = sa.create_engine(u, connect_args={"timeout": 30, "check_same_thread": False})
            sa.event.listen(self.engine, "connect", _sqlite_connect)
            sa.event.listen(self.engine, "begin", lambda c: c.exec_driver_sql(
                "BEGIN IMMEDIATE" if c.get_execution_options().get("write") else "BEGIN"))
        else:
            self.engine = sa.create_engine(u, pool_pre_ping=True, pool_size=4, max_overflow=8)
        m = self.meta = sa.MetaData()
        self.t = sa.Table("listings", m, sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
                          sa.Column("ts", sa.BigInteger, nullable=False, index=True),
                          sa.Column("photo", sa.String(64), nullable=False), sa.Column("title", sa.Text),
                          sa.Column("status", sa.SmallInteger, nullable=False),
                          sa.Column("seq", sa.BigInteger, nullable=False, index=True))
        self.counter = sa.Table("listing_seq", m, sa.Column("name", sa.String(16), primary_key=True),
                                sa.Column("value", sa.BigInteger, nullable=False))
        self.emb = sa.Table("embeddings", m, sa.Column("bundle", sa.String(64), primary_key=True),
                            sa.Column("photo", sa.String(64), primary_key=True),
                            sa.Column("vec", sa.LargeBinary, nullable=False))
        with self._errors("create the tables"), contextlib.suppress(sa.exc.IntegrityError, sa.exc.ProgrammingError):
            m.create_all(self.engine, checkfirst=True)  # another process creating them at once: theirs stand
            with self._write() as c:
                if c.execute(sa.select(self.counter.c.value)).first() is None:
                    c.execute(self.counter.insert().values(name="seq", value=0))

    # ------------------------------------------------------------------ plumbing
    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        import sqlalchemy.exc as sx

        try:
            yield
        except (sx.OperationalError, sx.InterfaceError) as e:
            raise StoreUnavailableError(f"the listing store {self.shown()} could not {what} ({str(e.orig)[:160]}); "
                                        f"nothing was changed, retry once it answers") from None

    def shown(self) -> str:
        from sqlalchemy.engine import make_url

        return make_url(engine_url(self.url)).render_as_string(hide_password=True)

    @contextlib.contextmanager
    def _write(self) -> Iterator[Any]:
        with self.engine.connect() as c:
            c.execution_options(write=True)
            with c.begin():
                yield c

    @contextlib.contextmanager
    def _read(self) -> Iterator[Any]:
        """One consistent snapshot (SQLite WAL read transaction; PostgreSQL REPEATABLE READ)."""
        with self.engine.connect() as c:
            if not self.sqlite:
                c = c.execution_options(isolation_level="REPEATABLE READ")
            with c.begin():
                yield c

    def _next_seq(self, c: Any, n: int) -> int:
        """Reserve n change numbers; returns the last. The row lock orders writers by commit."""
        import sqlalchemy as sa

        return int(c.execute(sa.update(self.counter).where(self.counter.c.name == "seq")
                             .values(value=self.counter.c.value + n).returning(self.counter.c.value)).scalar_one())

    def _rows(self, c: Any, ids: Sequence[int]) -> dict[int, Listing]:
        out = {}
        for i in range(0, len(ids), CHUNK):
            for r in c.execute(self.t.select().where(self.t.c.id.in_([int(x) for x in ids[i:i + CHUNK]]))):
                out[int(r.id)] = Listing(int(r.id), int(r.ts), r.photo, r.title or "", int(r.status), int(r.seq))
        return out

    # ------------------------------------------------------------------ writes
    def add(self, items: Sequence[Listing]) -> list[str]:
        """Add listings all or nothing; per item 'created', 'relisted' or 'exists' (unchanged)."""
        ids = [it.id for it in items]
        if len(set(ids)) != len(ids):
            raise RetrievalError("a listing id appears twice in one request")
        with self._errors("take the listings"), self._write() as c:
            last = self._next_seq(c, len(items))
            old = self._rows(c, ids)
            out, seq = [], last - len(items)
            for it in items:
                seq += 1
                o = old.get(it.id)
                if o is not None and o.active:
                    if o.photo != it.photo:
                        raise DuplicateIdError(f"listing {it.id} is already active with another photo (listed at "
                                               f"{o.ts}); delete it first or use another id")
                    out.append("exists")
                    continue
                row = dict(ts=int(it.ts), photo=it.photo, title=it.title, status=0, seq=seq)
                if o is None:
                    c.execute(self.t.insert().values(id=int(it.id), **row))
                else:
                    c.execute(self.t.update().where(self.t.c.id == int(it.id)).values(**row))
                out.append("created" if o is None else "relisted")
            return out

    def load(self, ids: np.ndarray, ts: np.ndarray, photos: Sequence[str], titles: Sequence[str] | None = None,
             batch: int = 20_000, progress: bool = False) -> int:
        """Bulk insert of new listings (seeding, benchmarks), one transaction per batch."""
        from tqdm import tqdm

        n = len(ids)
        with tqdm(total=n, desc="listings", unit="row", disable=not progress) as bar:
            for i in range(0, n, batch):
                j = min(n, i + batch)
                with self._errors("load listings"), self._write() as c:
                    last = self._next_seq(c, j - i)
                    c.execute(self.t.insert(), [dict(id=int(ids[r]), ts=int(ts[r]), photo=photos[r],
                                                     title=titles[r] if titles is not None else "", status=0,
                                                     seq=last - (j - i) + 1 + (r - i)) for r in range(i, j)])
                bar.update(j - i)
        return n

    def remove(self, item_id: int, status: str = "deleted") -> str:
        """Mark a listing sold or deleted: 'removed', 'already' (it was not active) or 'unknown'."""
        if status not in ("sold", "deleted"):
            raise RetrievalError(f"a listing is removed as sold or deleted, not '{status}'")
        with self._errors("remove the listing"), self._write() as c:
            o = self._rows(c, [item_id]).get(int(item_id))
            if o is None or not o.active:
                return "unknown" if o is None else "already"
            seq = self._next_seq(c, 1)
            c.execute(self.t.update().where(self.t.c.id == int(item_id)).values(status=STATUS[status], seq=seq))
            return "removed"

    # ------------------------------------------------------------------ reads
    def get(self, ids: Sequence[int]) -> dict[int, Listing]:
        with self._errors("read listings"), self._read() as c:
            return self._rows(c, list(ids))

    def max_seq(self) -> int:
        import sqlalchemy as sa

        with self._errors("read its change number"), self._read() as c:
            return int(c.execute(sa.select(self.counter.c.value)).scalar_one())

    def snapshot(self, start: int, end: int) -> tuple[np.ndarray, np.ndarray, list[str], int]:
        """(ids, ts, photos) of the active listings in [start, end), ordered by (ts, id), and the change
        number they were read at (a version's snapshot)."""
        import sqlalchemy as sa

        t = self.t
        with self._errors("read the period"), self._read() as c:
            seq = int(c.execute(sa.select(self.counter.c.value)).scalar_one())
            rows = c.execute(sa.select(t.c.id, t.c.ts, t.c.photo).where(
                t.c.status == 0, t.c.ts >= int(start), t.c.ts < int(end)).order_by(t.c.ts, t.c.id)).all()
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        ts = np.fromiter((r[1] for r in rows), np.int64, len(rows))
        return ids, ts, [r[2] for r in rows], seq

    def snapshot_vectors(self, start: int, end: int, bundle: str, dim: int, alloc: Callable[[int], np.ndarray],
                         batch: int = 20_000) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, list[int]], int]:
        """A period read for a build in one snapshot, streamed: (ids, ts, photos as `S64`, the rows whose
        photo has no cached embedding of `bundle` by photo, the change number), ordered by (ts, id); each
        row's cached embedding is written into `alloc(n)` (an array, or a memory-mapped file for a month
        of tens of millions: nothing of the period is held as Python objects)."""
        import sqlalchemy as sa

        t, e = self.t, self.emb
        where = (t.c.status == 0, t.c.ts >= int(start), t.c.ts < int(end))
        with self._errors("read the period"), self._read() as c:
            seq = int(c.execute(sa.select(self.counter.c.value)).scalar_one())
            n = int(c.execute(sa.select(sa.func.count()).select_from(t).where(*where)).scalar_one())
            ids, ts = np.empty(n, np.int64), np.empty(n, np.int64)
            photos, vecs = np.empty(n, "S64"), alloc(n)
            missing: dict[str, list[int]] = {}
            q = (sa.select(t.c.id, t.c.ts, t.c.photo, e.c.vec)
                 .select_from(t.outerjoin(e, sa.and_(e.c.bundle == bundle, e.c.photo == t.c.photo)))
                 .where(*where).order_by(t.c.ts, t.c.id))
            i = 0
            for part in c.execution_options(yield_per=batch).execute(q).partitions(batch):
                m = len(part)
                if i + m > n:
                    raise RetrievalError("the period changed while it was read in one snapshot")
                ids[i:i + m] = [r[0] for r in part]
                ts[i:i + m] = [r[1] for r in part]
                photos[i:i + m] = [r[2].encode() for r in part]
                have = [j for j, r in enumerate(part) if r[3] is not None]
                if have:
                    vecs[i + np.asarray(have)] = np.frombuffer(b"".join(part[j][3] for j in have),
                                                               "<f4").reshape(-1, dim)
                for j, r in enumerate(part):
                    if r[3] is None:
                        missing.setdefault(r[2], []).append(i + j)
                i += m
        if i != n:
            raise RetrievalError(f"read {i} listings of the period, counted {n} in the same snapshot")
        return ids, ts, photos, missing, seq

    def active_in(self, ranges: Sequence[tuple[int, int, int]]) -> tuple[list[Listing], int]:
        """Active listings with ts in [a, b) and seq > s for each (a, b, s), and the change number they were
        read at, in one snapshot (the gateway's delta)."""
        import sqlalchemy as sa

        t = self.t
        with self._errors("read the delta"), self._read() as c:
            seq = int(c.execute(sa.select(self.counter.c.value)).scalar_one())
            out: list[Listing] = []
            for a, b, s in ranges:
                q = t.select().where(t.c.status == 0, t.c.ts >= int(a), t.c.ts < int(b), t.c.seq > int(s),
                                     t.c.seq <= seq)
                out += [Listing(int(r.id), int(r.ts), r.photo, r.title or "", 0, int(r.seq)) for r in c.execute(q)]
        return out, seq

    def changes(self, after: int, limit: int = 100_000) -> tuple[list[Listing], int]:
        """Listings changed after change number `after`, oldest change first, and the change number
        they are complete up to (the store's, or the last row's when `limit` cut the list)."""
        import sqlalchemy as sa

        t = self.t
        with self._errors("read its changes"), self._read() as c:
            upto = int(c.execute(sa.select(self.counter.c.value)).scalar_one())
            rows = [Listing(int(r.id), int(r.ts), r.photo, r.title or "", int(r.status), int(r.seq)) for r in
                    c.execute(t.select().where(t.c.seq > int(after), t.c.seq <= upto).order_by(t.c.seq).limit(limit))]
        return rows, (rows[-1].seq if len(rows) == limit else upto)

    def changed_among(self, ids: np.ndarray, after: int) -> tuple[np.ndarray, np.ndarray, int]:
        """(ids, seqs) of the given listings changed after `after`, by seq, and the change number the
        answer is complete up to (an index service catching up)."""
        import sqlalchemy as sa

        t = self.t
        got: list[tuple[int, int]] = []
        with self._errors("read changes"), self._read() as c:
            upto = int(c.execute(sa.select(self.counter.c.value)).scalar_one())
            for i in range(0, len(ids), CHUNK):
                got += c.execute(sa.select(t.c.id, t.c.seq).where(
                    t.c.seq > int(after), t.c.seq <= upto, t.c.id.in_([int(x) for x in ids[i:i + CHUNK]]))).all()
        a = np.asarray(sorted(got, key=lambda r: r[1]), np.int64).reshape(-1, 2)
        return a[:, 0], a[:, 1], upto

    def count(self, start: int, end: int, after: int = -1, active: bool = True) -> int:
        """Listings with ts in [start, end) (active ones, or any) changed after `after`."""
        import sqlalchemy as sa

        t = self.t
        q = sa.select(sa.func.count()).select_from(t).where(t.c.ts >= int(start), t.c.ts < int(end),
                                                          t.c.seq > int(after))
        with self._errors("count listings"), self._read() as c:
            return int(c.execute(q.where(t.c.status == 0) if active else q).scalar_one())

    # ------------------------------------------------------------------ a lock between jobs
    @contextlib.contextmanager
    def lock(self, name: str, timeout_s: float = 0.0) -> Iterator[bool]:
        """An exclusive lock named `name` shared by every process using this store (build jobs of different
        granularities around retention and the servings sync); yields whether it was taken within
        `timeout_s`. PostgreSQL: a session advisory lock; SQLite: `flock` on a file beside the database (one
        machine, as SQLite itself). Either is released when the holder ends, even killed."""
        import time

        deadline = time.monotonic() + timeout_s
        if self.sqlite:
            import fcntl
            import os
            from pathlib import Path

            db = Path(engine_url(self.url).removeprefix("sqlite:///"))
            fd = os.open(db.with_name(f"{db.name}.{name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
            got = False
            try:
                while not got:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        got = True
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            break
                        time.sleep(0.05)
                yield got
            finally:
                if got:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
            return
        import hashlib

        import sqlalchemy as sa

        key = int.from_bytes(hashlib.sha256(f"spnas:{name}".encode()).digest()[:8], "big", signed=True)
        with self._errors(f"take the lock '{name}'"), self.engine.connect() as c:
            c = c.execution_options(isolation_level="AUTOCOMMIT")
            got = False
            while not got:
                got = bool(c.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
                if got or time.monotonic() >= deadline:
                    break
                time.sleep(0.1)
            try:
                yield got
            finally:
                if got:
                    c.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})

    # ------------------------------------------------------------------ embedding cache
    def cached(self, bundle: str, photos: Sequence[str], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(vectors [n, dim], found [n]) from the embedding cache of a bundle."""
        import sqlalchemy as sa

        e = self.emb
        want: dict[str, list[int]] = {}  # a photo may be listed twice (relisted, or two sellers): every row gets it
        for i, p in enumerate(photos):
            want.setdefault(p, []).append(i)
        vec = np.zeros((len(photos), dim), np.float32)
        found = np.zeros(len(photos), bool)

        def take(rows: Any) -> None:
            for p, v in rows:
                rows_of = want.get(p)
                if rows_of is not None:
                    vec[rows_of], found[rows_of] = np.frombuffer(v, "<f4"), True

        with self._errors("read the embedding cache"), self._read() as c:
            if len(want) > 20 * CHUNK:  # a whole period: one scan beats thousands of IN lists
                take(c.execute(sa.select(e.c.photo, e.c.vec).where(e.c.bundle == bundle)))
            else:
                keys = list(want)
                for i in range(0, len(keys), CHUNK):
                    take(c.execute(sa.select(e.c.photo, e.c.vec).where(e.c.bundle == bundle,
                                                                       e.c.photo.in_(keys[i:i + CHUNK]))))
        return vec, found

    def cache(self, bundle: str, photos: Sequence[str], vectors: np.ndarray, batch: int = 5_000) -> None:
        """Put embeddings in the cache (a photo already there is kept: same bundle, same bytes, same vector)."""
        if self.sqlite:
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        v = np.ascontiguousarray(vectors, "<f4")
        for i in range(0, len(photos), batch):
            rows = [dict(bundle=bundle, photo=p, vec=v[i + j].tobytes()) for j, p in enumerate(photos[i:i + batch])]
            with self._errors("write the embedding cache"), self._write() as c:
                c.execute(insert(self.emb).on_conflict_do_nothing(), rows)

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_connect(dbapi: Any, _record: Any) -> None:
    dbapi.isolation_level = None  # SQLAlchemy's begin event emits BEGIN / BEGIN IMMEDIATE itself
    cur = dbapi.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "busy_timeout=30000", "foreign_keys=ON"):
        cur.execute(f"PRAGMA {pragma}")
    cur.close()
