"""Fixtures shared by every test package.

Sections are independent; each says who uses it.
"""

from __future__ import annotations

import itertools
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# =============================================================================================
# PostgreSQL: a throwaway cluster for the whole session — fixtures `pg_cluster` and `pg_url`.
#
# Used by the inventory tests (and the API tests on top of them) to run against PostgreSQL as
# well as SQLite. The server comes from Debian (`apt-get install postgresql`; scripts/setup.sh
# --test installs it). `pg_cluster` runs initdb in a fresh temporary directory (as the
# `postgres` OS user when we are root: initdb refuses root), starts the server on a free
# 127.0.0.1 port with its unix socket in that directory, and stops it and deletes everything at
# the end, even when tests fail. `pg_url` is a new empty database per test, dropped afterwards.
# Without the binaries the tests are skipped locally, and fail when $CI is set.
# =============================================================================================


@dataclass(frozen=True)
class PgCluster:
    bindir: Path
    root: Path
    port: int

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{dbname}"

    def admin(self, sql: str) -> None:
        """Run one statement on the ``postgres`` database, in autocommit."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(sql.encode())


def _pg_bindir() -> Path | None:
    override = os.environ.get("PXEFORGE_PG_BINDIR")
    candidates = [Path(override)] if override else []

    def version(p: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", p.parent.name))

    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    candidates += found
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), uid, gid)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    bindir = _pg_bindir()
    if bindir is None:
        reason = (
            "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin "
            "(apt-get install postgresql, or scripts/setup.sh --test)"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="pxeforge-pg-"))  # under /tmp: postgres can reach it
    data = root / "data"
    (root / "sock").mkdir()
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        _chown_tree(root, pw.pw_uid, pw.pw_gid)
    pg_ctl = str(bindir / "pg_ctl")
    started = False
    try:
        subprocess.run(
            _as_postgres(
                [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                 "-E", "UTF8", "--no-locale", "--no-sync"]
            ),
            check=True, capture_output=True, timeout=180,
        )  # fmt: skip
        for _attempt in range(3):
            port = _free_port()
            options = (
                f"-p {port} -k {root / 'sock'} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=60"
            )
            proc = subprocess.run(
                _as_postgres(
                    [pg_ctl, "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60",
                     "-o", options, "start"]
                ),
                capture_output=True, timeout=120,
            )  # fmt: skip
            if proc.returncode == 0:
                started = True
                break
        if not started:
            log = (root / "server.log").read_text(errors="replace")[-2000:]
            pytest.fail(f"PostgreSQL did not start: {proc.stderr!r}\n{log}")
        yield PgCluster(bindir=bindir, root=root, port=port)
    finally:
        if started:
            subprocess.run(
                _as_postgres([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"]),
                capture_output=True, timeout=60,
            )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


_db_numbers = itertools.count(1)


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (dropped afterwards)."""
    name = f"pxeforge_test_{os.getpid()}_{next(_db_numbers)}"
    pg_cluster.admin(f'CREATE DATABASE "{name}"')
    try:
        yield pg_cluster.url(name)
    finally:
        pg_cluster.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
