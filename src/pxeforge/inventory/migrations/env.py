"""Alembic environment: runs on the connection `pxeforge.inventory.db.upgrade` hands over.

There is no alembic.ini: the caller puts an open connection (inside its transaction) in
``config.attributes["connection"]``. ``render_as_batch`` lets later migrations alter SQLite
tables (which cannot ALTER most things in place).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from pxeforge.inventory.models import Base


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError(
            "run migrations through pxeforge.inventory.db.upgrade(engine), not the alembic CLI"
        )
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
