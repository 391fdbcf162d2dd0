"""Node fields the REST API exposes (resource_class, the other interfaces, ownership, retirement,
protection…) and the per-node hardware inventory table (``GET /v1/nodes/{node}/inventory``).

Only additions: every new node column is nullable or has a server default, so existing rows stay
valid. Column names and sizes follow Ironic's ``nodes`` and ``node_inventory`` tables.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

_INTERFACES = (
    "bios_interface",
    "console_interface",
    "firmware_interface",
    "inspect_interface",
    "network_interface",
    "raid_interface",
    "rescue_interface",
    "storage_interface",
    "vendor_interface",
)


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts(name: str, nullable: bool = True) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _node_columns() -> list[sa.Column[Any]]:
    columns: list[sa.Column[Any]] = [
        sa.Column(name, sa.String(255), nullable=True) for name in _INTERFACES
    ]
    columns += [
        sa.Column("resource_class", sa.String(80), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("owner", sa.String(255), nullable=True),
        sa.Column("lessee", sa.String(255), nullable=True),
        sa.Column("conductor_group", sa.String(255), nullable=False, server_default=""),
        sa.Column("instance_uuid", sa.String(36), nullable=True),
        sa.Column("automated_clean", sa.Boolean(), nullable=True),
        sa.Column("protected", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("protected_reason", sa.Text(), nullable=True),
        sa.Column("retired", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("retired_reason", sa.Text(), nullable=True),
        sa.Column("disable_power_off", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("shard", sa.String(255), nullable=True),
        sa.Column("parent_node", sa.String(36), nullable=True),
        sa.Column("fault", sa.String(255), nullable=True),
        sa.Column("boot_mode", sa.String(16), nullable=True),
        sa.Column("secure_boot", sa.Boolean(), nullable=True),
        sa.Column("network_data", _json(), nullable=True),
        sa.Column("raid_config", _json(), nullable=True),
        sa.Column("target_raid_config", _json(), nullable=True),
    ]
    return columns


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        for column in _node_columns():
            batch.add_column(column)
        batch.create_unique_constraint("uq_nodes_instance_uuid", ["instance_uuid"])
    op.create_table(
        "node_inventory",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("inventory_data", _json(), nullable=False),
        sa.Column("plugin_data", _json(), nullable=False),
        _ts("created_at", nullable=False),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_node_inventory"),
        sa.UniqueConstraint("node_id", name="uq_node_inventory_node_id"),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.id"], name="fk_node_inventory_node_id_nodes", ondelete="CASCADE"
        ),
    )


def downgrade() -> None:
    op.drop_table("node_inventory")
    with op.batch_alter_table("nodes") as batch:
        batch.drop_constraint("uq_nodes_instance_uuid", type_="unique")
        for column in reversed(_node_columns()):
            batch.drop_column(column.name)
