"""Alembic migrations of the inventory schema (applied by `pxeforge.inventory.db.upgrade`)."""
