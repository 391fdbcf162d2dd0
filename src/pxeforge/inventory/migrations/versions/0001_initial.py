"""Initial inventory schema: nodes, ports, node_history, conductors.

Revision ID: 0001
Revises:
Create Date: 2026-08-21
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts(name: str, nullable: bool = True) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("driver", sa.String(255), nullable=False),
        sa.Column("driver_info", _json(), nullable=False),
        sa.Column("properties", _json(), nullable=False),
        sa.Column("instance_info", _json(), nullable=False),
        sa.Column("driver_internal_info", _json(), nullable=False),
        sa.Column("extra", _json(), nullable=False),
        sa.Column("provision_state", sa.String(32), nullable=False),
        sa.Column("target_provision_state", sa.String(32), nullable=True),
        sa.Column("power_state", sa.String(32), nullable=True),
        sa.Column("target_power_state", sa.String(32), nullable=True),
        sa.Column("maintenance", sa.Boolean(), nullable=False),
        sa.Column("maintenance_reason", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("reservation", sa.String(255), nullable=True),
        sa.Column("boot_interface", sa.String(255), nullable=True),
        sa.Column("deploy_interface", sa.String(255), nullable=True),
        sa.Column("power_interface", sa.String(255), nullable=True),
        sa.Column("management_interface", sa.String(255), nullable=True),
        _ts("created_at", nullable=False),
        _ts("updated_at"),
        _ts("provision_updated_at"),
        _ts("inspection_started_at"),
        _ts("inspection_finished_at"),
        sa.PrimaryKeyConstraint("id", name="pk_nodes"),
        sa.UniqueConstraint("uuid", name="uq_nodes_uuid"),
        sa.UniqueConstraint("name", name="uq_nodes_name"),
    )
    op.create_index("ix_nodes_provision_state", "nodes", ["provision_state"])
    op.create_index("ix_nodes_reservation", "nodes", ["reservation"])

    op.create_table(
        "ports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("address", sa.String(18), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("pxe_enabled", sa.Boolean(), nullable=False),
        sa.Column("local_link_connection", _json(), nullable=False),
        sa.Column("extra", _json(), nullable=False),
        _ts("created_at", nullable=False),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_ports"),
        sa.UniqueConstraint("uuid", name="uq_ports_uuid"),
        sa.UniqueConstraint("address", name="uq_ports_address"),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.id"], name="fk_ports_node_id_nodes", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_ports_node_id", "ports", ["node_id"])

    op.create_table(
        "node_history",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=False),
        _ts("created_at", nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("event_type", sa.String(255), nullable=True),
        sa.Column("severity", sa.String(255), nullable=True),
        sa.Column("user", sa.String(64), nullable=True),
        sa.Column("conductor", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_node_history"),
        sa.UniqueConstraint("uuid", name="uq_node_history_uuid"),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.id"], name="fk_node_history_node_id_nodes", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_node_history_node_id", "node_history", ["node_id"])

    op.create_table(
        "conductors",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("online", sa.Boolean(), nullable=False),
        _ts("created_at", nullable=False),
        _ts("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_conductors"),
        sa.UniqueConstraint("hostname", name="uq_conductors_hostname"),
    )


def downgrade() -> None:
    op.drop_table("conductors")
    op.drop_index("ix_node_history_node_id", table_name="node_history")
    op.drop_table("node_history")
    op.drop_index("ix_ports_node_id", table_name="ports")
    op.drop_table("ports")
    op.drop_index("ix_nodes_reservation", table_name="nodes")
    op.drop_index("ix_nodes_provision_state", table_name="nodes")
    op.drop_table("nodes")
