"""Database tables of the inventory, as SQLAlchemy 2 typed ORM classes.

Only `pxeforge.inventory.store` uses these; everything else sees the frozen records of
`pxeforge.inventory.records`. Columns follow Ironic's ``ironic/db/sqlalchemy/models.py`` where
Ironic has the same concept (names, nullability, string sizes), so that the REST shapes map
one to one.

* JSON columns are ``JSON`` everywhere and ``JSONB`` on PostgreSQL.
* Timestamps are stored in UTC and always come back timezone-aware (`UTCDateTime`): SQLite has no
  time zones, PostgreSQL uses ``timestamptz``.
* The schema itself is created by the Alembic migrations in ``migrations/versions``; a test checks
  that they and these classes agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "Base",
    "Conductor",
    "InspectionRule",
    "JsonDict",
    "Node",
    "NodeHistory",
    "NodeInventory",
    "NodeTrait",
    "Port",
    "UTCDateTime",
]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JsonDict = JSON().with_variant(JSONB(), "postgresql")
"""The JSON column type: JSONB on PostgreSQL, JSON (text) elsewhere."""


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and returned timezone-aware (naive input is refused)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware one (datetime.now(UTC))")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Node(Base):
    """A bare-metal machine (Ironic's ``nodes`` table, the fields pxeforge uses)."""

    __tablename__ = "nodes"
    __table_args__ = (
        Index("ix_nodes_provision_state", "provision_state"),
        Index("ix_nodes_reservation", "reservation"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    name: Mapped[str | None] = mapped_column(String(255), unique=True)
    driver: Mapped[str] = mapped_column(String(255))
    driver_info: Mapped[dict[str, Any]] = mapped_column(JsonDict)
    properties: Mapped[dict[str, Any]] = mapped_column(JsonDict)
    instance_info: Mapped[dict[str, Any]] = mapped_column(JsonDict)
    driver_internal_info: Mapped[dict[str, Any]] = mapped_column(JsonDict)
    extra: Mapped[dict[str, Any]] = mapped_column(JsonDict)
    provision_state: Mapped[str] = mapped_column(String(32))
    target_provision_state: Mapped[str | None] = mapped_column(String(32))
    power_state: Mapped[str | None] = mapped_column(String(32))
    target_power_state: Mapped[str | None] = mapped_column(String(32))
    maintenance: Mapped[bool] = mapped_column(Boolean)
    maintenance_reason: Mapped[str | None] = mapped_column(Text)
    last_error: Mapped[str | None] = mapped_column(Text)
    reservation: Mapped[str | None] = mapped_column(String(255))
    boot_interface: Mapped[str | None] = mapped_column(String(255))
    deploy_interface: Mapped[str | None] = mapped_column(String(255))
    power_interface: Mapped[str | None] = mapped_column(String(255))
    management_interface: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    provision_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    inspection_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    inspection_finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # added by migration 0002: the rest of what the REST API shows and sets
    bios_interface: Mapped[str | None] = mapped_column(String(255))
    console_interface: Mapped[str | None] = mapped_column(String(255))
    firmware_interface: Mapped[str | None] = mapped_column(String(255))
    inspect_interface: Mapped[str | None] = mapped_column(String(255))
    network_interface: Mapped[str | None] = mapped_column(String(255))
    raid_interface: Mapped[str | None] = mapped_column(String(255))
    rescue_interface: Mapped[str | None] = mapped_column(String(255))
    storage_interface: Mapped[str | None] = mapped_column(String(255))
    vendor_interface: Mapped[str | None] = mapped_column(String(255))
    resource_class: Mapped[str | None] = mapped_column(String(80))
    description: Mapped[str | None] = mapped_column(Text)
    owner: Mapped[str | None] = mapped_column(String(255))
    lessee: Mapped[str | None] = mapped_column(String(255))
    conductor_group: Mapped[str] = mapped_column(String(255), default="", server_default="")
    instance_uuid: Mapped[str | None] = mapped_column(String(36), unique=True)
    automated_clean: Mapped[bool | None] = mapped_column(Boolean)
    protected: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    protected_reason: Mapped[str | None] = mapped_column(Text)
    retired: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    retired_reason: Mapped[str | None] = mapped_column(Text)
    disable_power_off: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    shard: Mapped[str | None] = mapped_column(String(255))
    parent_node: Mapped[str | None] = mapped_column(String(36))
    fault: Mapped[str | None] = mapped_column(String(255))
    boot_mode: Mapped[str | None] = mapped_column(String(16))
    secure_boot: Mapped[bool | None] = mapped_column(Boolean)
    network_data: Mapped[dict[str, Any] | None] = mapped_column(JsonDict)
    raid_config: Mapped[dict[str, Any] | None] = mapped_column(JsonDict)
    target_raid_config: Mapped[dict[str, Any] | None] = mapped_column(JsonDict)


class Port(Base):
    """A network interface of a node, known by its MAC (``address``)."""

    __tablename__ = "ports"
    __table_args__ = (Index("ix_ports_node_id", "node_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    address: Mapped[str] = mapped_column(String(18), unique=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"))
    pxe_enabled: Mapped[bool] = mapped_column(Boolean)
    local_link_connection: Mapped[dict[str, Any]] = mapped_column(JsonDict)
    extra: Mapped[dict[str, Any]] = mapped_column(JsonDict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class NodeHistory(Base):
    """One event in a node's history (Ironic's ``node_history``: ``GET …/history``)."""

    __tablename__ = "node_history"
    __table_args__ = (Index("ix_node_history_node_id", "node_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    event: Mapped[str] = mapped_column(Text)
    event_type: Mapped[str | None] = mapped_column(String(255))
    severity: Mapped[str | None] = mapped_column(String(255))
    user: Mapped[str | None] = mapped_column(String(64))
    conductor: Mapped[str | None] = mapped_column(String(255))


class NodeInventory(Base):
    """The hardware inventory a node's inspection stored (``GET …/inventory``), one per node."""

    __tablename__ = "node_inventory"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"), unique=True)
    inventory_data: Mapped[dict[str, Any]] = mapped_column(JsonDict)
    plugin_data: Mapped[dict[str, Any]] = mapped_column(JsonDict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Conductor(Base):
    """A pxeforge process that may hold node locks; ``updated_at`` is its heartbeat."""

    __tablename__ = "conductors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255), unique=True)
    online: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class InspectionRule(Base):
    """An inspection rule (``/v1/inspection_rules``; migration 0003): conditions → actions."""

    __tablename__ = "inspection_rules"
    __table_args__ = (Index("ix_inspection_rules_phase", "phase"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    description: Mapped[str | None] = mapped_column(String(255))
    priority: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    sensitive: Mapped[bool] = mapped_column(Boolean, server_default=false())
    phase: Mapped[str] = mapped_column(String(16), server_default=text("'main'"))
    conditions: Mapped[list[Any]] = mapped_column(JsonDict)
    actions: Mapped[list[Any]] = mapped_column(JsonDict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class NodeTrait(Base):
    """One trait of a node (Ironic's ``node_traits``; migration 0003)."""

    __tablename__ = "node_traits"

    node_id: Mapped[int] = mapped_column(
        ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True
    )
    trait: Mapped[str] = mapped_column(String(255), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
