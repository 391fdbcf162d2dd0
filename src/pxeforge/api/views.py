"""How records look on the wire: nodes, ports, history events, links — per API version.

Theory of operation: a view is a plain dict in Ironic's shape, built from a frozen record and the
request's `Version` (fields newer than the request are left out, as Ironic's
``hide_fields_in_newer_versions``), plus ``links`` made from the URL the client used
(``self`` under ``/v1``, ``bookmark`` without it). Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from pxeforge.api.versions import (
    AVAILABLE_STATE,
    INSPECT_WAIT_STATE,
    NODE_FIELD_VERSIONS,
    NODE_NAME,
    PORT_FIELD_VERSIONS,
    Version,
)
from pxeforge.inventory.records import HistoryRecord, NodeRecord, PortRecord
from pxeforge.inventory.states import AVAILABLE, INSPECTING, INSPECTWAIT

__all__ = [
    "HISTORY_DEFAULT_FIELDS",
    "HISTORY_FIELDS",
    "NODE_API_FIELDS",
    "NODE_LIST_FIELDS",
    "PORT_API_FIELDS",
    "PORT_LIST_FIELDS",
    "collection",
    "history_view",
    "link",
    "links",
    "node_list_views",
    "node_states_view",
    "node_view",
    "port_view",
]

NODE_API_FIELDS: Final = (
    "allocation_uuid",
    "automated_clean",
    "bios_interface",
    "boot_interface",
    "boot_mode",
    "chassis_uuid",
    "clean_step",
    "conductor",
    "conductor_group",
    "console_enabled",
    "console_interface",
    "created_at",
    "deploy_interface",
    "deploy_step",
    "description",
    "driver",
    "driver_info",
    "driver_internal_info",
    "extra",
    "fault",
    "firmware_interface",
    "inspect_interface",
    "inspection_finished_at",
    "inspection_started_at",
    "instance_info",
    "instance_uuid",
    "last_error",
    "lessee",
    "maintenance",
    "maintenance_reason",
    "management_interface",
    "name",
    "network_data",
    "network_interface",
    "owner",
    "parent_node",
    "power_interface",
    "power_state",
    "properties",
    "protected",
    "protected_reason",
    "provision_state",
    "provision_updated_at",
    "raid_config",
    "raid_interface",
    "rescue_interface",
    "reservation",
    "resource_class",
    "retired",
    "retired_reason",
    "secure_boot",
    "shard",
    "storage_interface",
    "target_power_state",
    "target_provision_state",
    "target_raid_config",
    "traits",
    "updated_at",
    "uuid",
    "vendor_interface",
)
"""Every node field shown by ``GET /v1/nodes/{node}`` (at the newest version)."""

NODE_LIST_FIELDS: Final = (
    "uuid",
    "name",
    "instance_uuid",
    "power_state",
    "provision_state",
    "maintenance",
)
"""Fields of ``GET /v1/nodes`` without ``detail`` (plus ``links``)."""

PORT_API_FIELDS: Final = (
    "uuid",
    "address",
    "node_uuid",
    "pxe_enabled",
    "local_link_connection",
    "internal_info",
    "portgroup_uuid",
    "physical_network",
    "is_smartnic",
    "extra",
    "created_at",
    "updated_at",
)
PORT_LIST_FIELDS: Final = ("uuid", "address")
HISTORY_DEFAULT_FIELDS: Final = ("uuid", "created_at", "severity", "event")
HISTORY_FIELDS: Final = (*HISTORY_DEFAULT_FIELDS, "event_type", "conductor", "user")

# node fields not stored as such: their constant (or derived) value
_DERIVED_DEFAULTS: Final[Mapping[str, Any]] = {
    "allocation_uuid": None,
    "chassis_uuid": None,
    "console_enabled": False,
    "deploy_step": {},
    "traits": [],
}
_DICT_FIELDS: Final = frozenset({"network_data", "raid_config", "target_raid_config"})


def _json(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def link(rel: str, base: str, *parts: str, bookmark: bool = False) -> dict[str, str]:
    """``{"href": base/v1/parts…, "rel": rel}`` (``bookmark``: without ``/v1``)."""
    path = "/".join(p.strip("/") for p in parts if p)
    prefix = base.rstrip("/") + ("" if bookmark else "/v1")
    return {"href": f"{prefix}/{path}", "rel": rel}


def links(base: str, *parts: str) -> list[dict[str, str]]:
    """Ironic's pair: ``self`` (versioned) and ``bookmark``."""
    return [link("self", base, *parts), link("bookmark", base, *parts, bookmark=True)]


def _visible(name: str, versions: Mapping[str, int], version: Version) -> bool:
    since = versions.get(name)
    return since is None or version.at_least(since)


def _node_value(node: NodeRecord | Mapping[str, Any], name: str, conductor: str | None) -> Any:
    if name in _DERIVED_DEFAULTS:
        return _DERIVED_DEFAULTS[name]
    get = node.get if isinstance(node, Mapping) else lambda n, d=None: getattr(node, n, d)
    if name == "conductor":
        return conductor
    if name == "clean_step":
        internal = get("driver_internal_info") or {}
        return internal.get("clean_step") or {}
    value = get(name)
    if name == "driver_internal_info" and isinstance(value, Mapping):
        # Ironic never shows the agent token (agent-token.rst); the same goes for the per-deploy
        # installer callback token, which would let anyone finish the deploy.
        secrets = {k: "******" for k in _SECRET_INTERNAL_KEYS if value.get(k)}
        if secrets:
            value = {**value, **secrets}
    if name in _DICT_FIELDS and value is None:
        return {}
    if name == "conductor_group" and value is None:
        return ""
    return _json(value)


_SECRET_INTERNAL_KEYS = ("agent_secret_token", "kickstart_token")


def _provision_state(state: Any, version: Version) -> Any:
    if state == INSPECTWAIT and not version.at_least(INSPECT_WAIT_STATE):
        return INSPECTING
    if state == AVAILABLE and not version.at_least(AVAILABLE_STATE):
        return None
    return state


def node_view(
    node: NodeRecord | Mapping[str, Any],
    version: Version,
    base: str,
    *,
    fields: Sequence[str] | None = None,
    conductor: str | None = None,
    with_links: bool = True,
) -> dict[str, Any]:
    """A node as Ironic shows it; ``fields`` restricts it (``uuid`` always kept for links).

    ``node`` may be a record or a dict of some columns (what ``list_node_fields`` returns).
    """
    names = NODE_API_FIELDS if fields is None else fields
    out: dict[str, Any] = {}
    for name in names:
        if _visible(name, NODE_FIELD_VERSIONS, version):
            out[name] = _node_value(node, name, conductor)
    for key in ("provision_state", "target_provision_state"):
        if key in out:
            out[key] = _provision_state(out[key], version)
    uuid = node["uuid"] if isinstance(node, Mapping) else node.uuid
    if with_links:
        out["links"] = links(base, "nodes", uuid)
        if fields is None:
            out["ports"] = links(base, "nodes", uuid, "ports")
            if version.at_least(14):
                out["states"] = links(base, "nodes", uuid, "states")
            if version.at_least(24):
                out["portgroups"] = links(base, "nodes", uuid, "portgroups")
            if version.at_least(32):
                out["volume"] = links(base, "nodes", uuid, "volume")
    return out


_TIMESTAMPS: Final = frozenset(
    {
        "created_at",
        "updated_at",
        "provision_updated_at",
        "inspection_started_at",
        "inspection_finished_at",
    }
)
_SPECIAL: Final = (
    frozenset(_DERIVED_DEFAULTS)
    | _DICT_FIELDS
    | _TIMESTAMPS
    | {"conductor", "clean_step", "conductor_group", "provision_state", "target_provision_state"}
)


def node_list_views(
    rows: Sequence[Mapping[str, Any]],
    version: Version,
    base: str,
    fields: Sequence[str],
    *,
    conductor: str | None = None,
) -> list[dict[str, Any]]:
    """`node_view` of many column dicts with links (the list endpoint's fast path).

    The same output as calling `node_view(row, …, fields=fields)` for each row; the per-field
    decisions are taken once per request instead of once per node.
    """
    names = [n for n in fields if _visible(n, NODE_FIELD_VERSIONS, version)]
    plain = [n for n in names if n not in _SPECIAL]
    special = [n for n in names if n in _SPECIAL]
    prefix = base.rstrip("/")
    out: list[dict[str, Any]] = []
    for row in rows:
        item = {n: row[n] for n in plain}
        for name in special:
            item[name] = _node_value(row, name, conductor)
            if name in ("provision_state", "target_provision_state"):
                item[name] = _provision_state(item[name], version)
        uuid = row["uuid"]
        item = {n: item[n] for n in names}  # field order as asked
        item["links"] = [
            {"href": f"{prefix}/v1/nodes/{uuid}", "rel": "self"},
            {"href": f"{prefix}/nodes/{uuid}", "rel": "bookmark"},
        ]
        out.append(item)
    return out


def node_states_view(node: NodeRecord, version: Version, base: str) -> dict[str, Any]:
    """``GET /v1/nodes/{node}/states``."""
    out = {
        "console_enabled": False,
        "last_error": node.last_error,
        "power_state": node.power_state,
        "provision_state": _provision_state(node.provision_state, version),
        "provision_updated_at": _json(node.provision_updated_at),
        "target_power_state": node.target_power_state,
        "target_provision_state": _provision_state(node.target_provision_state, version),
    }
    if version.at_least(12):
        out["raid_config"] = node.raid_config or {}
        out["target_raid_config"] = node.target_raid_config or {}
    if version.at_least(14):
        out["links"] = links(base, "nodes", node.uuid, "states")
    return out


def port_view(
    port: PortRecord, version: Version, base: str, *, fields: Sequence[str] | None = None
) -> dict[str, Any]:
    """A port as Ironic shows it."""
    values: dict[str, Any] = {
        "uuid": port.uuid,
        "address": port.address,
        "node_uuid": port.node_uuid,
        "pxe_enabled": port.pxe_enabled,
        "local_link_connection": port.local_link_connection,
        "internal_info": {},
        "portgroup_uuid": None,
        "physical_network": None,
        "is_smartnic": False,
        "extra": port.extra,
        "created_at": _json(port.created_at),
        "updated_at": _json(port.updated_at),
    }
    names = PORT_API_FIELDS if fields is None else fields
    out = {n: values[n] for n in names if _visible(n, PORT_FIELD_VERSIONS, version)}
    out["links"] = links(base, "ports", port.uuid)
    return out


def history_view(
    node_uuid: str,
    event: HistoryRecord,
    base: str,
    *,
    fields: Sequence[str] = HISTORY_FIELDS,
) -> dict[str, Any]:
    """One node history event (``GET …/history``)."""
    values = {
        "uuid": event.uuid,
        "created_at": _json(event.created_at),
        "severity": event.severity,
        "event": event.event,
        "event_type": event.event_type,
        "conductor": event.conductor,
        "user": event.user,
    }
    out: dict[str, Any] = {n: values[n] for n in fields if n in values}
    out["links"] = links(base, "nodes", node_uuid, "history", event.uuid)
    return out


def collection(
    key: str,
    items: Iterable[dict[str, Any]],
    *,
    next_url: str | None = None,
) -> dict[str, Any]:
    """``{key: [...], "next": url}`` (``next`` only when the page was full)."""
    out: dict[str, Any] = {key: list(items)}
    if next_url is not None:
        out["next"] = next_url
    return out


def node_name_visible(version: Version) -> bool:
    return version.at_least(NODE_NAME)
