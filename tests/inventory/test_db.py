"""Engines, pragmas and migrations on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect

from pxeforge.inventory import db
from pxeforge.inventory.models import Base
from pxeforge.inventory.store import Store

HEAD = "0003"  # the newest migration
REPO = Path(__file__).resolve().parents[2]
TABLES = {"alembic_version", "conductors", "inspection_rules", "node_history", "node_inventory",
          "node_traits", "nodes", "ports"}  # fmt: skip


def test_migrations_match_the_models(db_url: str) -> None:
    engine = db.connect(db_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
            assert set(inspect(conn).get_table_names()) == TABLES
        assert db.current_revision(engine) == HEAD
    finally:
        engine.dispose()


def test_upgrade_is_idempotent_and_reversible(db_url: str) -> None:
    engine = db.connect(db_url)
    try:
        Store(engine).create_node("fake")
        db.upgrade(engine)  # again: nothing to do, data kept
        assert len(Store(engine).list_nodes()) == 1
        db.downgrade(engine, "base")
        assert db.current_revision(engine) is None
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        db.upgrade(engine)
        assert db.current_revision(engine) == HEAD
        assert Store(engine).list_nodes() == []
    finally:
        engine.dispose()


def test_concurrent_upgrades(db_url: str) -> None:
    """Processes starting together on one fresh database must not trip over each other."""
    engines = [db.make_engine(db_url) for _ in range(3)]
    errors: list[BaseException] = []

    def run(engine: Engine) -> None:
        try:
            db.upgrade(engine)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    try:
        assert errors == []
        assert db.current_revision(engines[0]) == HEAD
    finally:
        for e in engines:
            e.dispose()


def test_upgrade_by_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'y.db'}"
    db.upgrade(url)
    engine = db.make_engine(url)
    try:
        assert db.current_revision(engine) == HEAD
    finally:
        engine.dispose()


def test_sqlite_pragmas(tmp_path: Path) -> None:
    engine = db.connect(f"sqlite:///{tmp_path / 'sub' / 'dir' / 'x.db'}")  # makes the dirs
    try:
        with engine.connect() as conn:
            pragma = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
        assert pragma == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1,
                          "busy_timeout": 10000}  # fmt: skip
    finally:
        engine.dispose()


def test_urls(tmp_path: Path) -> None:
    assert db.default_url(tmp_path) == f"sqlite:///{tmp_path.resolve()}/pxeforge.db"
    for bad in ("sqlite://", "sqlite:///:memory:"):
        with pytest.raises(ValueError, match="SQLite file"):
            db.make_engine(bad)


def test_naive_datetimes_are_refused(tmp_path: Path) -> None:
    store = Store.connect(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with pytest.raises(Exception, match="naive datetime"):
            store.create_node("fake", now=datetime(2026, 1, 1))  # naive on purpose
        assert store.list_nodes() == []
    finally:
        store.close()


def test_migrations_are_packaged() -> None:
    assert (db.MIGRATIONS_DIR / "env.py").is_file()
    assert (db.MIGRATIONS_DIR / "versions" / "0001_initial.py").is_file()
    # packages (with __init__.py), so setuptools ships them; the template is package data
    assert (db.MIGRATIONS_DIR / "__init__.py").is_file()
    assert (db.MIGRATIONS_DIR / "versions" / "__init__.py").is_file()
    pyproject = (REPO / "pyproject.toml").read_text()
    assert "inventory/migrations/script.py.mako" in pyproject
