"""Opening the inventory database and migrating it: SQLite (default) or PostgreSQL.

Theory of operation:

* ``--db`` is a SQLAlchemy URL. The default is ``sqlite:///<data_dir>/pxeforge.db``;
  PostgreSQL is ``postgresql+psycopg://user:password@host/dbname``.
* SQLite runs in WAL mode with ``synchronous=FULL`` (a committed transition survives a power
  cut), ``foreign_keys=ON`` and a ``busy_timeout``. pysqlite's own transaction handling is turned
  off and we emit ``BEGIN`` ourselves: ``BEGIN IMMEDIATE`` for writes (`write_engine`), so two
  writers queue on the busy timeout instead of failing when a read lock cannot be upgraded, and a
  plain deferred ``BEGIN`` for reads, which WAL lets run beside a writer.
* `upgrade` applies the Alembic migrations shipped in ``migrations/`` programmatically, in one
  transaction, serialized between processes (``BEGIN IMMEDIATE`` on SQLite, an advisory lock on
  PostgreSQL), so several pxeforge processes may start at once on one database.

Nothing here runs at import time; only `make_engine` (and `connect`) touch the disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

__all__ = [
    "MIGRATIONS_DIR",
    "connect",
    "current_revision",
    "default_url",
    "downgrade",
    "make_engine",
    "new_revision",
    "upgrade",
    "write_engine",
]

MIGRATIONS_DIR: Final = Path(__file__).resolve().parent / "migrations"
"""The Alembic script directory (shipped inside the package)."""

_WRITE_OPTION: Final = "pxeforge_write"
_PG_MIGRATION_LOCK: Final = 0x70786667  # "pxfg": advisory lock id serializing upgrades
_DEFAULT_BUSY_TIMEOUT_MS: Final = 10_000


def default_url(data_dir: Path) -> str:
    """``sqlite:///<data_dir>/pxeforge.db`` (absolute path)."""
    return f"sqlite:///{(data_dir / 'pxeforge.db').resolve()}"


def _install_sqlite_hooks(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from pysqlite (it would BEGIN lazily, and deferred).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get(_WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_engine(url: str, *, busy_timeout_ms: int = _DEFAULT_BUSY_TIMEOUT_MS) -> Engine:
    """An engine for ``url``; for a SQLite file, creates its directory and sets the pragmas."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            raise ValueError(f"pxeforge needs a SQLite file, not {url!r}")
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
        _install_sqlite_hooks(engine, busy_timeout_ms)
        return engine
    return create_engine(url, pool_pre_ping=True)


def write_engine(engine: Engine) -> Engine:
    """The same engine, but its transactions start as writers (``BEGIN IMMEDIATE`` on SQLite)."""
    return engine.execution_options(**{_WRITE_OPTION: True})


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def upgrade(target: Engine | str, revision: str = "head") -> None:
    """Bring the schema of ``target`` (an engine or a URL) to ``revision`` — all migrations by
    default — in one transaction."""
    engine = make_engine(target) if isinstance(target, str) else target
    config = _alembic_config()
    try:
        with write_engine(engine).begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
    finally:
        if isinstance(target, str):
            engine.dispose()


def downgrade(engine: Engine, revision: str) -> None:
    """Take the schema back to ``revision`` (``"base"``: nothing). For tests and emergencies."""
    config = _alembic_config()
    with write_engine(engine).begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)


def current_revision(engine: Engine) -> str | None:
    """The schema revision the database is at (None: not migrated)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def connect(url: str, *, migrate: bool = True) -> Engine:
    """Open ``url`` and (by default) migrate it to the current schema: what start-up calls."""
    engine = make_engine(url)
    if migrate:
        try:
            upgrade(engine)
        except BaseException:
            engine.dispose()
            raise
    return engine


def new_revision(engine: Engine, message: str) -> None:
    """Developer tool: autogenerate a migration from the models against an up-to-date database."""
    config = _alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.revision(config, message=message, autogenerate=True)
