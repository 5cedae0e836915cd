"""A real PostgreSQL server for the tests (Debian's `postgresql` package): a throwaway cluster (initdb +
pg_ctl in a temporary folder, a free port, run as the `postgres` user when the tests run as root),
unless SPNAS_TEST_POSTGRES_URL names a server to use. Each test module gets a database of its own.
Without the server binaries the tests skip, except in CI (CI=true), where that is a failure.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Callable, Iterator


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    cands = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]), reverse=True)
    return cands[0] if cands else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(cmd: list[str]) -> list[str]:
    """initdb refuses to run as root: run the server tools as the `postgres` user then."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def create_database(admin_url: str, name: str) -> str:
    """An empty database `name` on the server of `admin_url` (dropped first if it exists); its URL."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


@contextlib.contextmanager
def postgres_server(missing: Callable[[str], None]) -> Iterator[str]:
    """The admin URL (postgresql://postgres@127.0.0.1:<port>/postgres) of a running server."""
    given = os.environ.get("SPNAS_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        missing("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install -y postgresql")
    pw = None
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            missing("running as root and there is no `postgres` user to run the server as")
    tmp = Path(tempfile.mkdtemp(prefix="spnas-pg-"))  # under /tmp itself: pytest's tmp is root-only
    if pw is not None:
        os.chown(tmp, pw.pw_uid, pw.pw_gid)
    data, port = tmp / "data", free_port()
    subprocess.run(_as_postgres([initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                                 "--no-sync"]), check=True, capture_output=True)
    opts = f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100"
    subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-o", opts, "-l", str(tmp / "server.log"), "-w",
                                 "start"]), check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"]), capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
