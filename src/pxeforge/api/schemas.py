"""Request validation: node and port bodies, JSON-Patch (RFC 6902), query parameters.

Theory of operation: every field the API accepts is one `Field` row in `NODE_FIELDS` or
`PORT_FIELDS` — its JSON type, whether POST may set it, whether PATCH may change it, the API
version that introduced it, and its value after a ``remove``. Validation is pure: functions take
the decoded JSON (and the request's `Version`) and return what to hand to the store, or raise
`BadRequest` (400) naming the field, or `NotAcceptable` (406) for a field the request's version
does not have. Nothing here reads the database; so a rejected request has written nothing.

JSON-Patch (RFC 6902) is applied by `apply_patch` to the resource's JSON view, with Ironic's
rules on top (`patch_changes`): only ``add``, ``replace`` and ``remove`` (RFC 6902 §4.1–4.3);
paths are JSON Pointers (RFC 6901, ``~0``/``~1`` escapes); a read-only field is "an internal
attribute and can not be updated", a mandatory one "can not be removed", a new root attribute
cannot be added, and removing a root field resets it to its default.
"""

from __future__ import annotations

import copy
import re
import uuid as uuidlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pxeforge.api.errors import BadRequest, NotAcceptable
from pxeforge.api.versions import (
    FIELDS_QUERY,
    NODE_FIELD_VERSIONS,
    NODE_NAME,
    PORT_FIELD_VERSIONS,
    Version,
)
from pxeforge.boot.machine import normalize_mac

__all__ = [
    "NODE_FIELDS",
    "PORT_FIELDS",
    "Field",
    "apply_patch",
    "check_node_create",
    "check_port_create",
    "node_patch_changes",
    "parse_bool",
    "parse_fields",
    "parse_limit",
    "port_patch_changes",
]

JsonObject = dict[str, Any]

_NAME_RE: Final = re.compile(r"^[A-Za-z0-9\-._~]+$")  # RFC 3986 unreserved (API 1.10+)
_GROUP_RE: Final = re.compile(r"^[a-zA-Z0-9_\-.]*$")  # Ironic's conductor_group pattern


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a resource as the API sees it."""

    kind: str  # "str", "uuid", "name", "dict", "bool", "group"
    nullable: bool = True
    create: bool = True  # POST may set it
    patch: bool = True  # PATCH may change it
    max_length: int = 255
    default: Any = None  # value after a PATCH "remove"
    mandatory: bool = False  # POST must give it; PATCH may not remove it


_RO: Final = Field("str", create=False, patch=False)
"""A read-only field (shown, never written by a client)."""


def _interface() -> Field:
    return Field("str")


NODE_FIELDS: Final[dict[str, Field]] = {
    "uuid": Field("uuid", nullable=False, patch=False),
    "name": Field("name"),
    "driver": Field("str", nullable=False, mandatory=True),
    "driver_info": Field("dict", nullable=False, default={}),
    "properties": Field("dict", nullable=False, default={}),
    "instance_info": Field("dict", nullable=False, default={}),
    "extra": Field("dict", nullable=False, default={}),
    "instance_uuid": Field("uuid"),
    "resource_class": Field("str", max_length=80),
    "boot_interface": _interface(),
    "console_interface": _interface(),
    "deploy_interface": _interface(),
    "inspect_interface": _interface(),
    "management_interface": _interface(),
    "network_interface": _interface(),
    "power_interface": _interface(),
    "raid_interface": _interface(),
    "rescue_interface": _interface(),
    "storage_interface": _interface(),
    "vendor_interface": _interface(),
    "bios_interface": _interface(),
    "firmware_interface": _interface(),
    "description": Field("str", max_length=4096),
    "owner": Field("str"),
    "lessee": Field("str"),
    "conductor_group": Field("group", nullable=False, default=""),
    "automated_clean": Field("bool"),
    "protected": Field("bool", nullable=False, create=False, default=False),
    "protected_reason": Field("str", create=False, max_length=4096),
    "retired": Field("bool", nullable=False, default=False),
    "retired_reason": Field("str", max_length=4096),
    "network_data": Field("dict", default=None),
    "shard": Field("str"),
    "parent_node": Field("str"),
    "maintenance": Field("bool", nullable=False, create=False, default=False),
    "chassis_uuid": Field("uuid", create=False),  # pxeforge has no chassis: only null
    # read-only
    "provision_state": _RO,
    "target_provision_state": _RO,
    "power_state": _RO,
    "target_power_state": _RO,
    "provision_updated_at": _RO,
    "last_error": _RO,
    "reservation": _RO,
    "maintenance_reason": _RO,
    "driver_internal_info": _RO,
    "inspection_started_at": _RO,
    "inspection_finished_at": _RO,
    "clean_step": _RO,
    "deploy_step": _RO,
    "raid_config": _RO,
    "target_raid_config": _RO,
    "fault": _RO,
    "conductor": _RO,
    "allocation_uuid": _RO,
    "boot_mode": _RO,
    "secure_boot": _RO,
    "console_enabled": _RO,
    "traits": _RO,
    "created_at": _RO,
    "updated_at": _RO,
    "links": _RO,
    "ports": _RO,
    "portgroups": _RO,
    "states": _RO,
    "volume": _RO,
}
"""Every node field the API knows, writable or not."""

PORT_FIELDS: Final[dict[str, Field]] = {
    "uuid": Field("uuid", nullable=False, patch=False),
    "address": Field("mac", nullable=False, mandatory=True),
    "node_uuid": Field("uuid", nullable=False, mandatory=True),
    "pxe_enabled": Field("bool", nullable=False, default=True),
    "local_link_connection": Field("llc", nullable=False, default={}),
    "extra": Field("dict", nullable=False, default={}),
    # shown, fixed: pxeforge has no port groups, physical networks or smart NICs
    "internal_info": _RO,
    "portgroup_uuid": _RO,
    "physical_network": _RO,
    "is_smartnic": _RO,
    "created_at": _RO,
    "updated_at": _RO,
    "links": _RO,
}
"""Every port field the API knows."""

_LLC_KEYS: Final = frozenset({"port_id", "switch_id", "switch_info", "hostname", "network_type"})


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}.get(
        type(value), "object" if isinstance(value, dict) else type(value).__name__
    )


def _bad(name: str, value: Any, why: str) -> BadRequest:
    shown = repr(value) if not isinstance(value, dict | list) else _type_name(value)
    return BadRequest(f"Invalid input for field/attribute {name}. Value: {shown}. {why}")


def _check_value(name: str, spec: Field, value: Any) -> Any:
    """``value`` checked (and normalized) for ``spec``; `BadRequest` naming ``name``."""
    if value is None:
        if spec.nullable:
            return None
        raise _bad(name, value, "This field cannot be null.")
    kind = spec.kind
    if kind in ("dict", "llc"):
        if not isinstance(value, dict):
            raise _bad(name, value, f"Wrong type. Expected 'object', got '{_type_name(value)}'")
        if kind == "llc":
            _check_local_link(value)
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise _bad(name, value, f"Wrong type. Expected 'boolean', got '{_type_name(value)}'")
        return value
    if not isinstance(value, str):
        raise _bad(name, value, f"Wrong type. Expected 'string', got '{_type_name(value)}'")
    if len(value) > spec.max_length:
        raise _bad(name, value, f"Value should have a maximum length of {spec.max_length}.")
    if kind == "uuid":
        try:
            return str(uuidlib.UUID(value))
        except ValueError:
            raise _bad(name, value, "Expected a UUID.") from None
    if kind == "name":
        if not _NAME_RE.match(value) or _is_uuid(value):
            raise BadRequest(
                f"Cannot use {value!r} as a node name: names are made of letters, digits and "
                "'-._~' (RFC 3986 unreserved characters), and must not be a UUID."
            )
        return value
    if kind == "group":
        if not _GROUP_RE.match(value):
            raise _bad(name, value, "Only letters, digits, '_', '-' and '.' are allowed.")
        return value.lower()
    if kind == "mac":
        try:
            return normalize_mac(value)
        except ValueError:
            raise BadRequest(f"Expected a MAC address but received {value}.") from None
    if not value and spec.mandatory:
        raise _bad(name, value, "This field cannot be empty.")
    return value


def _check_local_link(value: Mapping[str, Any]) -> None:
    unknown = sorted(set(value) - _LLC_KEYS)
    if unknown:
        raise BadRequest(
            f"Invalid local_link_connection: unknown key(s) {', '.join(unknown)}; allowed: "
            f"{', '.join(sorted(_LLC_KEYS))}"
        )
    for key, item in value.items():
        if not isinstance(item, str):
            raise _bad(f"local_link_connection/{key}", item, "Expected a string.")
    if value.get("network_type", "managed") not in ("managed", "unmanaged"):
        raise BadRequest("local_link_connection/network_type must be 'managed' or 'unmanaged'")
    if value and value.get("network_type") != "unmanaged":
        if "port_id" not in value or not ({"switch_id", "hostname"} & set(value)):
            raise BadRequest(
                "local_link_connection needs port_id and switch_id (or hostname for a smart "
                "NIC), unless network_type is 'unmanaged'"
            )


def _is_uuid(value: str) -> bool:
    try:
        uuidlib.UUID(value)
    except ValueError:
        return False
    return True


def _check_version(name: str, versions: Mapping[str, int], version: Version) -> None:
    since = versions.get(name)
    if since is not None and not version.at_least(since):
        raise NotAcceptable(minimum=since)


def _check_body(
    body: Any,
    fields: Mapping[str, Field],
    versions: Mapping[str, int],
    version: Version,
    what: str,
) -> JsonObject:
    if not isinstance(body, dict):
        raise BadRequest(f"The {what} must be a JSON object, not {_type_name(body)}")
    unknown = sorted(k for k in body if k not in fields)
    if unknown:
        quoted = ", ".join(repr(k) for k in unknown)
        verb = "was" if len(unknown) == 1 else "were"
        raise BadRequest(f"Additional properties are not allowed ({quoted} {verb} unexpected)")
    read_only = sorted(k for k in body if not fields[k].create)
    if read_only:
        raise BadRequest(
            f"Cannot set read-only field(s) {', '.join(read_only)} when creating a {what}"
        )
    missing = sorted(k for k, spec in fields.items() if spec.mandatory and k not in body)
    if missing:
        raise BadRequest(f"Mandatory field(s) missing: {', '.join(missing)}")
    out: JsonObject = {}
    for name, value in body.items():
        _check_version(name, versions, version)
        out[name] = _check_value(name, fields[name], value)
    return out


def check_node_create(body: Any, version: Version) -> JsonObject:
    """A ``POST /v1/nodes`` body, checked: field → value (unknown/read-only/wrong type: 400)."""
    out = _check_body(body, NODE_FIELDS, NODE_FIELD_VERSIONS, version, "node")
    if out.get("chassis_uuid") is not None:
        raise BadRequest("pxeforge has no chassis: chassis_uuid must be null")
    out.pop("chassis_uuid", None)
    return out


def check_port_create(body: Any, version: Version) -> JsonObject:
    """A ``POST /v1/ports`` body, checked (``address`` normalized to lower-case colons)."""
    return _check_body(body, PORT_FIELDS, PORT_FIELD_VERSIONS, version, "port")


# --------------------------------------------------------------------------------------------
# JSON-Patch (RFC 6902) over JSON Pointers (RFC 6901)
# --------------------------------------------------------------------------------------------

_OPS: Final = ("add", "replace", "remove")


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or not path.startswith("/") or path == "/":
        raise BadRequest(f"Invalid patch path {path!r}: expected a JSON Pointer like /extra/key")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _check_ops(patch: Any) -> list[JsonObject]:
    if not isinstance(patch, list) or not patch:
        raise BadRequest("A PATCH body must be a non-empty JSON array of operations (RFC 6902)")
    for op in patch:
        if not isinstance(op, dict):
            raise BadRequest(f"Invalid patch operation {op!r}: expected an object")
        unknown = sorted(set(op) - {"op", "path", "value"})
        if unknown:
            raise BadRequest(f"Invalid patch operation: unexpected key(s) {', '.join(unknown)}")
        if op.get("op") not in _OPS:
            raise BadRequest(
                f"Invalid patch operation {op.get('op')!r}: only 'add', 'replace' and "
                "'remove' are supported"
            )
        _pointer(op.get("path"))
        if op["op"] != "remove" and "value" not in op:
            raise BadRequest(f"'{op['op']}' operation on {op['path']} needs a 'value'")
    return patch


def _index(container: list[Any], token: str, path: str, *, append: bool) -> int:
    if append and token == "-":
        return len(container)
    if not re.fullmatch(r"0|[1-9][0-9]*", token):
        raise BadRequest(f"Cannot apply patch at {path}: {token!r} is not an array index")
    index = int(token)
    if index > len(container) or (not append and index == len(container)):
        raise BadRequest(f"Cannot apply patch at {path}: index {index} is out of range")
    return index


def apply_patch(doc: JsonObject, patch: Any) -> JsonObject:
    """``doc`` after the RFC 6902 ``add``/``replace``/``remove`` operations (a new object).

    Any failure (missing member, bad index, malformed operation) is a `BadRequest` naming the
    operation; ``doc`` itself is never modified.
    """
    return _apply(doc, _check_ops(patch))


def _apply(doc: JsonObject, ops: list[JsonObject]) -> JsonObject:
    result = copy.deepcopy(doc)
    for op in ops:
        path = op["path"]
        tokens = _pointer(path)
        parent: Any = result
        for token in tokens[:-1]:
            if isinstance(parent, dict) and token in parent:
                parent = parent[token]
            elif isinstance(parent, list):
                parent = parent[_index(parent, token, path, append=False)]
            else:
                raise BadRequest(f"Cannot apply patch at {path}: {token!r} does not exist")
        last = tokens[-1]
        kind = op["op"]
        if isinstance(parent, dict):
            if kind in ("replace", "remove") and last not in parent:
                raise BadRequest(f"Cannot {kind} {path}: it does not exist")
            if kind == "remove":
                del parent[last]
            else:
                parent[last] = copy.deepcopy(op["value"])
        elif isinstance(parent, list):
            index = _index(parent, last, path, append=kind == "add")
            if kind == "add":
                parent.insert(index, copy.deepcopy(op["value"]))
            elif kind == "replace":
                parent[index] = copy.deepcopy(op["value"])
            else:
                del parent[index]
        else:
            raise BadRequest(f"Cannot apply patch at {path}: its parent is not an object")
    return result


def _patch_changes(
    view: JsonObject,
    patch: Any,
    fields: Mapping[str, Field],
    versions: Mapping[str, int],
    version: Version,
) -> JsonObject:
    ops = _check_ops(patch)
    for op in ops:
        root = _pointer(op["path"])[0]
        spec = fields.get(root)
        if spec is None:
            if op["op"] == "add":
                raise BadRequest(
                    f"Adding a new attribute (/{root}) to the root of the resource is not allowed"
                )
            raise BadRequest(f"Cannot {op['op']} /{root}: no such field")
        if not spec.patch:
            raise BadRequest(f"'/{root}' is an internal attribute and can not be updated")
        _check_version(root, versions, version)
        if op["op"] == "remove" and len(_pointer(op["path"])) == 1 and spec.mandatory:
            raise BadRequest(f"'/{root}' is a mandatory attribute and can not be removed")
    # a root-level remove resets the field to its default (it stays in the document)
    patched = _apply(view, [op for op in ops if not _is_root_remove(op)])
    changes: JsonObject = {}
    for op in ops:
        root = _pointer(op["path"])[0]
        if _is_root_remove(op):
            patched[root] = copy.deepcopy(fields[root].default)
    for root in dict.fromkeys(_pointer(op["path"])[0] for op in ops):
        value = _check_value(root, fields[root], patched.get(root))
        if value != view.get(root):
            changes[root] = value
    return changes


def _is_root_remove(op: Mapping[str, Any]) -> bool:
    return op["op"] == "remove" and len(_pointer(op["path"])) == 1


def node_patch_changes(view: JsonObject, patch: Any, version: Version) -> JsonObject:
    """Changed node fields after ``patch`` is applied to ``view`` (the node's API dict)."""
    changes = _patch_changes(view, patch, NODE_FIELDS, NODE_FIELD_VERSIONS, version)
    if changes.get("chassis_uuid") is not None:
        raise BadRequest("pxeforge has no chassis: chassis_uuid must be null")
    changes.pop("chassis_uuid", None)
    return changes


def port_patch_changes(view: JsonObject, patch: Any, version: Version) -> JsonObject:
    """Changed port fields after ``patch`` is applied to ``view`` (the port's API dict)."""
    return _patch_changes(view, patch, PORT_FIELDS, PORT_FIELD_VERSIONS, version)


# --------------------------------------------------------------------------------------------
# query parameters
# --------------------------------------------------------------------------------------------


def parse_bool(name: str, value: str | None) -> bool | None:
    """``?name=true|false`` (Ironic accepts the usual spellings); None when absent."""
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on", "y", "t"):
        return True
    if lowered in ("false", "0", "no", "off", "n", "f"):
        return False
    raise BadRequest(f"Invalid value for {name}: {value!r} is not a boolean")


def parse_limit(value: str | None) -> int | None:
    """``?limit=N`` (positive); None when absent (the server's maximum page then)."""
    if value is None:
        return None
    try:
        limit = int(value)
    except ValueError:
        raise BadRequest(f"Invalid value for limit: {value!r} is not an integer") from None
    if limit <= 0:
        raise BadRequest("Limit must be positive")
    return limit


def parse_fields(
    value: str | None,
    known: Sequence[str],
    versions: Mapping[str, int],
    version: Version,
    *,
    always: Sequence[str] = (),
) -> list[str] | None:
    """``?fields=a,b`` checked against ``known`` (and the request's version); None if absent."""
    if value is None:
        return None
    if not version.at_least(FIELDS_QUERY):
        raise NotAcceptable(minimum=FIELDS_QUERY)
    names = [f.strip() for f in value.split(",") if f.strip()]
    bad = [f for f in names if f not in known]
    if bad or not names:
        raise BadRequest(f'Field(s) "{", ".join(bad)}" are not valid')
    for name in names:
        _check_version(name, versions, version)
    return list(dict.fromkeys([*always, *names]))


def node_name_allowed(version: Version) -> bool:
    """Nodes may be addressed (and shown) by name from API 1.5 on."""
    return version.at_least(NODE_NAME)


KnownDriver = Callable[[str], None]
"""Raises (400) when no driver has that name."""
