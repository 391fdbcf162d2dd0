"""What the store hands out: frozen snapshots of rows, detached from any database session.

A record is a value taken inside one transaction; it never changes and never lazily loads.
JSON fields are the plain dicts loaded for this record alone (treat them as read-only).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Final

from pxeforge.inventory.models import InspectionRule, Node, NodeHistory, Port

__all__ = [
    "NODE_FIELDS",
    "PORT_FIELDS",
    "HistoryRecord",
    "InspectionRuleRecord",
    "NodeRecord",
    "PortRecord",
]


@dataclass(frozen=True, slots=True)
class NodeRecord:
    id: int
    uuid: str
    name: str | None
    driver: str
    driver_info: dict[str, Any]
    properties: dict[str, Any]
    instance_info: dict[str, Any]
    driver_internal_info: dict[str, Any]
    extra: dict[str, Any]
    provision_state: str
    target_provision_state: str | None
    power_state: str | None
    target_power_state: str | None
    maintenance: bool
    maintenance_reason: str | None
    last_error: str | None
    reservation: str | None
    boot_interface: str | None
    deploy_interface: str | None
    power_interface: str | None
    management_interface: str | None
    created_at: datetime
    updated_at: datetime | None
    provision_updated_at: datetime | None
    inspection_started_at: datetime | None
    inspection_finished_at: datetime | None
    # added with migration 0002
    bios_interface: str | None
    console_interface: str | None
    firmware_interface: str | None
    inspect_interface: str | None
    network_interface: str | None
    raid_interface: str | None
    rescue_interface: str | None
    storage_interface: str | None
    vendor_interface: str | None
    resource_class: str | None
    description: str | None
    owner: str | None
    lessee: str | None
    conductor_group: str
    instance_uuid: str | None
    automated_clean: bool | None
    protected: bool
    protected_reason: str | None
    retired: bool
    retired_reason: str | None
    disable_power_off: bool
    shard: str | None
    parent_node: str | None
    fault: str | None
    boot_mode: str | None
    secure_boot: bool | None
    network_data: dict[str, Any] | None
    raid_config: dict[str, Any] | None
    target_raid_config: dict[str, Any] | None

    @property
    def ident(self) -> str:
        """How messages name the node: its UUID (as Ironic does)."""
        return self.uuid

    @classmethod
    def from_row(cls, row: Node) -> NodeRecord:
        return cls(**{name: getattr(row, name) for name in NODE_FIELDS})


@dataclass(frozen=True, slots=True)
class PortRecord:
    id: int
    uuid: str
    address: str
    node_id: int
    node_uuid: str
    pxe_enabled: bool
    local_link_connection: dict[str, Any]
    extra: dict[str, Any]
    created_at: datetime
    updated_at: datetime | None

    @classmethod
    def from_row(cls, row: Port, node_uuid: str) -> PortRecord:
        values = {name: getattr(row, name) for name in PORT_FIELDS}
        return cls(node_uuid=node_uuid, **values)


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    id: int
    uuid: str
    node_id: int
    created_at: datetime
    event: str
    event_type: str | None
    severity: str | None
    user: str | None
    conductor: str | None

    @classmethod
    def from_row(cls, row: NodeHistory) -> HistoryRecord:
        return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})


@dataclass(frozen=True, slots=True)
class InspectionRuleRecord:
    """An inspection rule as stored (`pxeforge.inspection_rules` applies it)."""

    id: int
    uuid: str
    description: str | None
    priority: int
    sensitive: bool
    phase: str
    conditions: list[Any]
    actions: list[Any]
    created_at: datetime
    updated_at: datetime | None

    def as_rule(self) -> dict[str, Any]:
        """The rule as `pxeforge.inspection_rules` takes it."""
        return {
            "uuid": self.uuid,
            "description": self.description,
            "priority": self.priority,
            "sensitive": self.sensitive,
            "phase": self.phase,
            "conditions": list(self.conditions),
            "actions": list(self.actions),
        }

    @classmethod
    def from_row(cls, row: InspectionRule) -> InspectionRuleRecord:
        return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})


NODE_FIELDS: Final = tuple(f.name for f in fields(NodeRecord))
"""Every node field, in record order (also the valid ``fields=`` names of list queries)."""

PORT_FIELDS: Final = tuple(f.name for f in fields(PortRecord) if f.name != "node_uuid")
"""Every port column."""
