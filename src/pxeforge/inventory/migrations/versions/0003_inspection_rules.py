"""Inspection rules (``/v1/inspection_rules``, Ironic's API 1.96) and node traits.

Two new tables, nothing changed in the old ones. ``inspection_rules`` follows Ironic's table of
that name (uuid, description, priority, sensitive, phase), with the conditions and actions kept
as JSON lists in the row (Ironic has a table for each; pxeforge always reads a rule whole).
``node_traits`` is Ironic's: one row per (node, trait), deleted with the node.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts(name: str, nullable: bool = True) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "inspection_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("description", sa.String(255), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("sensitive", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("phase", sa.String(16), nullable=False, server_default="main"),
        sa.Column("conditions", _json(), nullable=False),
        sa.Column("actions", _json(), nullable=False),
        _ts("created_at", nullable=False),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_inspection_rules"),
        sa.UniqueConstraint("uuid", name="uq_inspection_rules_uuid"),
    )
    op.create_index("ix_inspection_rules_phase", "inspection_rules", ["phase"])
    op.create_table(
        "node_traits",
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("trait", sa.String(255), nullable=False),
        _ts("created_at", nullable=False),
        sa.PrimaryKeyConstraint("node_id", "trait", name="pk_node_traits"),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.id"], name="fk_node_traits_node_id_nodes", ondelete="CASCADE"
        ),
    )


def downgrade() -> None:
    op.drop_table("node_traits")
    op.drop_index("ix_inspection_rules_phase", table_name="inspection_rules")
    op.drop_table("inspection_rules")
