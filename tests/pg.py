"""A throwaway PostgreSQL cluster for the tests, and a fresh database per test.

Debian's ``postgresql`` package (installed by ``.ci/setup``) provides the binaries; the cluster is
``initdb``-ed into a temporary directory, listens on a free port on 127.0.0.1 (and a unix socket in
that directory), runs as the ``postgres`` user when the tests run as root (PostgreSQL refuses
root), and is stopped and deleted after the session. Durability is switched off (fsync,
synchronous_commit): these clusters hold nothing worth keeping, and the tests measure aegis, not
the disk.

    def test_x(audit_target):      # a SQLite path, then a PostgreSQL URL (parametrised)
    def test_y(new_trail):         # as many fresh trails as it needs, in the same store: new_trail("name")
    def test_z(pg_url):            # a fresh PostgreSQL database only

A test reads what it wrote with ``bodies``, ``verifies`` and ``stored_text``, through aegis's own
reader (``open_reader``), so the same assertions hold on both stores.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

PG_BIN = Path(os.environ.get("AEGIS_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
SKIP_REASON = f"PostgreSQL binaries not found in {PG_BIN} (run .ci/setup, or set AEGIS_TEST_PG_BIN)"
_counter = itertools.count(1)


def pg_available() -> bool:
    return (PG_BIN / "initdb").is_file() and (PG_BIN / "pg_ctl").is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgCluster:
    """A running throwaway cluster; ``url(db)`` connects as its superuser over TCP."""

    root: Path
    port: int = 0
    user: str = "postgres"
    as_postgres: bool = False  # run the server as the postgres user (we are root)
    log: Path = field(init=False)
    _shared: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.log = self.root / "server.log"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(PG_BIN / args[0]), *args[1:]]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, cwd=self.root, capture_output=True, text=True, check=check, timeout=120)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", self.user, "--auth=trust", "--no-sync",
                  "-E", "UTF8", "--locale=C")

    def start(self) -> None:
        proc = None
        for attempt in range(5):
            if not self.port or attempt:  # the port was taken meanwhile: pick another
                self.port = _free_port()
            opts = (f"-p {self.port} -k {self.root} -h 127.0.0.1 -c fsync=off -c synchronous_commit=off "
                    "-c full_page_writes=off -c max_connections=200 -c shared_buffers=64MB")
            proc = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "60",
                             "start", check=False)
            if proc.returncode == 0:
                return
        raise RuntimeError(f"PostgreSQL did not start: {proc.stderr if proc else ''}\n"
                           f"{self.log.read_text(errors='replace')}")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def admin(self) -> Any:
        import psycopg

        return psycopg.connect(self.url(), autocommit=True)

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; returns its URL. (About 0.1-1 s: it checkpoints.)"""
        name = f"{prefix}_{os.getpid()}_{next(_counter)}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 STRATEGY FILE_COPY')
        return self.url(name)

    def fresh_trail(self) -> str:
        """The URL of a new, empty schema in the shared test database, as its search_path.

        Everything aegis keeps resolves through the search_path, so to aegis this is a fresh
        database; it costs milliseconds where CREATE DATABASE costs a checkpoint.
        """
        if self._shared is None:
            self._shared = self.create_database("aegis_tests")
        name = f"t_{os.getpid()}_{next(_counter)}"
        with psycopg_connect(self._shared) as conn:
            conn.execute(f'CREATE SCHEMA "{name}"')
        return f"{self._shared}?options=-csearch_path%3D{name}"


def psycopg_connect(url: str) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=True)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    if not pg_available():
        pytest.skip(SKIP_REASON)
    root = Path(tempfile.mkdtemp(prefix="aegis-pg-"))
    as_postgres = os.geteuid() == 0
    if as_postgres:
        shutil.chown(root, "postgres", "postgres")
    cluster = PgCluster(root, _free_port(), as_postgres=as_postgres)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.stop("immediate")
        # The server's files belong to postgres; root may delete them regardless.
        with contextlib.suppress(OSError):
            shutil.rmtree(root)


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> str:
    """A fresh, empty PostgreSQL trail for this test (a schema of its own; see fresh_trail)."""
    return pg_cluster.fresh_trail()


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest) -> str:
    """Which store a test runs on: "sqlite", then "postgres" (every test using it runs twice)."""
    return str(request.param)


@pytest.fixture
def new_trail(store: str, request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., str]:
    """Makes fresh, empty trails in this test's store: ``new_trail()``, ``new_trail("other")``.

    On SQLite a file ``<name>.db`` in tmp_path (the same name gives the same file), on PostgreSQL
    a new schema each call (see fresh_trail).
    """
    made: dict[str, str] = {}

    def make(name: str = "audit") -> str:
        if name not in made:
            made[name] = (str(tmp_path / f"{name}.db") if store == "sqlite"
                          else request.getfixturevalue("pg_cluster").fresh_trail())
        return made[name]

    return make


@pytest.fixture
def audit_target(new_trail: Callable[..., str]) -> str:
    """Where a test keeps its audit trail: an SQLite file, then a fresh PostgreSQL trail."""
    return new_trail()


# -- reading a trail on either store, through aegis's reader ----------------------------------------

def trail_exists(target: str | os.PathLike[str]) -> bool:
    """Whether there is a trail to read yet (a PostgreSQL trail is there once its tables are)."""
    from aegis_cli.audit import is_postgres

    if not is_postgres(target):
        return Path(target).exists()
    with psycopg_connect(str(target)) as conn:
        return conn.execute("SELECT to_regclass('audit') IS NOT NULL").fetchone()[0]


def bodies(target: str | os.PathLike[str], kind: str | None = None) -> list[dict[str, Any]]:
    """Every record's body as stored, in id order (only records of ``kind`` when given)."""
    import json

    from aegis_cli.audit import open_reader
    from aegis_cli.audit.query import Filters

    with open_reader(target) as trail:
        return [json.loads(body) for _, _, body in trail.rows(Filters(kind=kind))]


def verifies(target: str | os.PathLike[str]) -> Any:
    """``aegis audit verify`` as a result (``.ok``, ``.records``, ``.problem``)."""
    from aegis_cli.audit import open_reader

    with open_reader(target) as trail:
        return trail.verify()


def stored_text(target: str | os.PathLike[str]) -> str:
    """Everything the store holds, as text: the SQLite files, or every row of the PostgreSQL tables."""
    from aegis_cli.audit import is_postgres

    if is_postgres(target):
        with psycopg_connect(str(target)) as conn:
            return "\n".join(" ".join(map(str, row)) for table in ("audit", "approvals")
                             for row in conn.execute(f"SELECT * FROM {table}"))
    path = Path(target)
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*")).decode("utf-8", "replace")


def wait_until(check: Callable[[], object], timeout: float = 5.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return bool(check())
