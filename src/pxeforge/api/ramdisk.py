"""The endpoints the agent ramdisk calls: lookup, heartbeat, continue_inspection.

Theory of operation (Ironic's ``api/controllers/v1/ramdisk.py`` and the agent-token rules of
``doc/source/admin/agent-token.rst``):

* **No API credentials.** The agent has none; these paths are public in the auth middleware
  (`PUBLIC_PATHS`, `PUBLIC_PREFIXES`). What protects a node instead is the **agent token**:
  128 random characters made at the node's first lookup (`secrets.token_urlsafe`), kept in
  ``driver_internal_info['agent_secret_token']``, shown in that one answer and as ``******``
  ever after. Every heartbeat must carry it.
* ``GET /v1/lookup?addresses=mac,…&node_uuid=…`` finds the node only in
  `LOOKUP_ALLOWED_STATES`; "no such node", "several nodes" and "wrong state" are the same 404
  so a caller learns nothing (Ironic CVE-2016-4985). The answer is ``{"node": {uuid,
  properties, instance_info, driver_internal_info}, "config": {...}}`` with the token masked
  in ``driver_internal_info``. pxeforge adds ``config.inspection_callback_url`` when the node
  is being inspected: the agent posts its inventory there.
* ``POST /v1/heartbeat/{node}`` (202): ``callback_url`` must be an http(s) URL and equal the
  ``agent_url`` already recorded, if any; a missing token and a wrong one are refused with
  **400** — Ironic answers both with ``InvalidParameterValue`` (API: "Agent token is
  required for heartbeat processing."; conductor: "Invalid or missing agent token
  received."), not 401/403. Accepted heartbeats record ``agent_url``, ``agent_version``,
  ``agent_last_heartbeat`` and the agent's progress (``agent_status_message``, e.g.
  ``"prepare_image: 120.0/512.0 MiB written (23 %)"``), refresh ``provision_updated_at`` in
  ``wait call-back``/``clean wait`` (the wait timeout counts silence, not work), and hand the
  node to the conductor (`Conductor.agent_heartbeat`: a worker calls the agent back, under the
  node's lock — the 202 does not wait for it; 503 when no worker is free).
* ``POST /v1/continue_inspection[?node_uuid=]`` (202): the body needs
  ``inventory.interfaces[].mac_address``; the node is found by node_uuid or MACs, and the
  conductor takes it from ``inspect wait`` to ``manageable`` (`Conductor.continue_inspection`,
  inspection rules included). An unknown machine (no node_uuid, no port with its MACs) is 404
  — unless `Settings.discovery` is on: then the conductor enrolls it from the inventory
  (`Conductor.discover`, Ironic's auto-discovery). The answer is the lookup's shape.

Node locks: token creation and heartbeat records are read-modify-write of
``driver_internal_info``; they run under the node's lock (a few tries; 409 if the conductor
keeps it, and the agent retries).
"""

from __future__ import annotations

import hmac
import json
import secrets
import uuid as uuidlib
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlparse

from aiohttp import web

from pxeforge.api.app import API_CONTEXT, ApiContext
from pxeforge.api.errors import BadRequest, NotFound
from pxeforge.conductor.agent_deploy import AGENT_WAIT_STATES, PERMITTED_FORMATS
from pxeforge.inventory.errors import NodeNotFound
from pxeforge.inventory.records import NodeRecord
from pxeforge.inventory.states import INSPECTING, INSPECTWAIT, LOOKUP_ALLOWED_STATES

__all__ = [
    "MASK",
    "PUBLIC_PATHS",
    "PUBLIC_PREFIXES",
    "RAMDISK_HEARTBEAT_TIMEOUT",
    "ROUTES",
    "TOKEN_KEY",
    "install",
]

ROUTES = web.RouteTableDef()

TOKEN_KEY: Final = "agent_secret_token"
MASK: Final = "******"
TOKEN_LENGTH: Final = 128
RAMDISK_HEARTBEAT_TIMEOUT: Final = 300
"""Ironic's ``[api]ramdisk_heartbeat_timeout``: the agent beats every 0.3–0.6 × this."""
PUBLIC_PATHS: Final = frozenset({"/v1/lookup", "/v1/continue_inspection"})
PUBLIC_PREFIXES: Final = ("/v1/heartbeat/",)
_LOCK_ATTEMPTS: Final = 30
_LOCK_INTERVAL: Final = 0.1
_PERMITTED_FORMATS: Final = PERMITTED_FORMATS


def install(ctx: ApiContext) -> list[web.AbstractRouteDef]:
    """Make the agent's paths public in ``ctx``; the routes to add to the application."""
    ctx.public_paths.update(PUBLIC_PATHS)
    ctx.public_paths.update(p.rstrip("/") + "/" for p in PUBLIC_PATHS)
    ctx.public_prefixes = tuple(dict.fromkeys((*ctx.public_prefixes, *PUBLIC_PREFIXES)))
    return list(ROUTES)


def _ctx(request: web.Request) -> ApiContext:
    return request.app[API_CONTEXT]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(data).encode(), status=status,
                        content_type="application/json")  # fmt: skip


def _new_token() -> str:
    token = secrets.token_urlsafe(96)  # 96 bytes → 128 URL-safe characters
    assert len(token) == TOKEN_LENGTH
    return token


def _config(node: NodeRecord, token: str | None, base: str) -> dict[str, Any]:
    config: dict[str, Any] = {
        "metrics": {"backend": "noop", "prepend_host": False, "prepend_uuid": False,
                    "prepend_host_reverse": True, "global_prefix": None},
        "metrics_statsd": {"statsd_host": "localhost", "statsd_port": 8125},
        "heartbeat_timeout": RAMDISK_HEARTBEAT_TIMEOUT,
        "agent_containers": {},
        "agent_token": token,
        "agent_token_required": True,
        "agent_md5_checksum_enable": False,
        "disable_deep_image_inspection": False,
        "permitted_image_formats": list(_PERMITTED_FORMATS),
        "agent_skip_bmc_detect": node.driver in ("redfish", "fake-hardware", "lab"),
        "enable_bios_bootloader_install": False,
        "tls_min_version": "",
        "tls_cipher_suites": "",
    }  # fmt: skip
    if node.provision_state in (INSPECTING, INSPECTWAIT):
        config["inspection_callback_url"] = f"{base}/v1/continue_inspection"
    return config


def _lookup_body(node: NodeRecord, token: str | None, base: str) -> dict[str, Any]:
    internal = dict(node.driver_internal_info)
    if TOKEN_KEY in internal:
        internal[TOKEN_KEY] = MASK
    return {
        "node": {
            "uuid": node.uuid,
            "properties": node.properties,
            "instance_info": node.instance_info,
            "driver_internal_info": internal,
        },
        "config": _config(node, token, base),
    }


def _with_token(ctx: ApiContext, uuid: str) -> tuple[NodeRecord, str]:
    """The node, and its token if made now (else `MASK`): under the node's lock."""
    store, holder = ctx.store, ctx.conductor.holder
    with store.lock(uuid, holder, attempts=_LOCK_ATTEMPTS, interval=_LOCK_INTERVAL) as node:
        if node.driver_internal_info.get(TOKEN_KEY):
            return node, MASK
        token = _new_token()
        internal = {**node.driver_internal_info, TOKEN_KEY: token}
        node = store.update_node(node.id, {"driver_internal_info": internal}, holder=holder)
        return node, token


def _find(ctx: ApiContext, macs: list[str], node_uuid: str | None) -> NodeRecord:
    if node_uuid:
        return ctx.store.get_node(node_uuid)
    return ctx.store.lookup_node(macs)


def _base(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _check_uuid(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return str(uuidlib.UUID(value))
    except ValueError:
        raise BadRequest(f"Expected a UUID for node_uuid: {value!r}") from None


@ROUTES.get("/v1/lookup")
async def lookup(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    addresses = [a.strip() for a in request.query.get("addresses", "").split(",") if a.strip()]
    node_uuid = _check_uuid(request.query.get("node_uuid"))
    if not addresses and not node_uuid:
        raise BadRequest("Client must pass at least one valid MAC address or the node UUID")

    def find() -> tuple[NodeRecord, str]:
        try:
            node = _find(ctx, addresses, node_uuid)
        except NodeNotFound:
            raise NotFound("Not found") from None
        if node.provision_state not in LOOKUP_ALLOWED_STATES:
            raise NotFound("Not found")  # the same answer as for an unknown node
        return _with_token(ctx, node.uuid)

    node, token = await ctx.run(find)
    return _json(_lookup_body(node, token, _base(request)))


async def _object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"Malformed JSON in the request body: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object")
    return body


_HEARTBEAT_FIELDS: Final = frozenset({"callback_url", "agent_version", "agent_token",
                                      "agent_verify_ca", "agent_status",
                                      "agent_status_message"})  # fmt: skip


@ROUTES.post("/v1/heartbeat/{node}")
async def heartbeat(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    body = await _object(request)
    unknown = sorted(set(body) - _HEARTBEAT_FIELDS)
    if unknown:
        raise BadRequest(f"Unknown field(s) in the heartbeat: {', '.join(unknown)}")
    for name in _HEARTBEAT_FIELDS:
        if body.get(name) is not None and not isinstance(body[name], str):
            raise BadRequest(f"Invalid input for field/attribute {name}: a string is expected")
    callback_url = body.get("callback_url")
    if callback_url is None:
        raise BadRequest("Missing argument: callback_url")
    if callback_url != "" and "http" not in urlparse(callback_url).scheme:
        raise BadRequest('An issue with the supplied "callback_url" has been detected.')
    token = body.get("agent_token")
    status = body.get("agent_status")
    if status is not None and status not in ("start", "end", "error"):
        raise BadRequest("Agent status is invalid. Valid states are start,end,error.")
    ident = request.match_info["node"]

    def record() -> None:
        conductor = ctx.conductor
        store, holder = ctx.store, conductor.holder
        node = store.get_node(ident)
        with store.lock(node.uuid, holder, attempts=_LOCK_ATTEMPTS,
                        interval=_LOCK_INTERVAL) as node:  # fmt: skip
            internal = dict(node.driver_internal_info)
            agent_url = internal.get("agent_url")
            if agent_url is not None and agent_url != callback_url:
                raise BadRequest('Detected change in ramdisk provided "callback_url"')
            if token is None:
                raise BadRequest("Agent token is required for heartbeat processing.")
            expected = internal.get(TOKEN_KEY)
            if not expected or not hmac.compare_digest(str(expected).encode(), token.encode()):
                raise BadRequest("Invalid or missing agent token received.")
            internal["agent_url"] = callback_url
            internal["agent_last_heartbeat"] = datetime.now(UTC).isoformat()
            if body.get("agent_version") is not None:
                internal["agent_version"] = body["agent_version"]
            if body.get("agent_status_message") is not None:
                internal["agent_status_message"] = body["agent_status_message"][:1000]
            waiting = node.provision_state in AGENT_WAIT_STATES
            store.update_node(node.id, {"driver_internal_info": internal}, holder=holder,
                              touch_provisioning=waiting)  # fmt: skip
            state = node.provision_state
        conductor.agent_heartbeat(node.uuid, state)  # the lock is free again: a worker acts

    await ctx.run(record)
    return web.Response(status=202)


def _check_inventory(body: dict[str, Any]) -> dict[str, Any]:
    inventory = body.get("inventory")
    if not isinstance(inventory, dict):
        raise BadRequest("Invalid inventory: 'inventory' (an object) is a required property")
    interfaces = inventory.get("interfaces")
    if not isinstance(interfaces, list) or not interfaces:
        raise BadRequest("Invalid inventory: 'interfaces' must be a non-empty list")
    for i, iface in enumerate(interfaces):
        if not isinstance(iface, dict) or not isinstance(iface.get("mac_address"), str):
            raise BadRequest(f"Invalid inventory: interfaces[{i}] has no 'mac_address' string")
    for name in ("bmc_address", "bmc_v6address"):
        if inventory.get(name) is not None and not isinstance(inventory[name], str):
            raise BadRequest(f"Invalid inventory: '{name}' must be a string or null")
    return inventory


@ROUTES.post("/v1/continue_inspection")
async def continue_inspection(request: web.Request) -> web.Response:
    from pxeforge.conductor.inspection import inventory_macs

    ctx = _ctx(request)
    node_uuid = _check_uuid(request.query.get("node_uuid"))
    body = await _object(request)
    inventory = _check_inventory(body)
    plugin = {k: v for k, v in body.items() if k != "inventory"}
    macs = inventory_macs(inventory)
    if not macs and not node_uuid:
        raise BadRequest("No lookup information provided")

    def find() -> tuple[NodeRecord, str] | None:
        try:
            node = _find(ctx, macs, node_uuid)
        except NodeNotFound:
            if node_uuid is None and ctx.conductor.settings.discovery:
                return None  # an unknown machine, and discovery is on
            raise NotFound("Not found") from None
        if node.provision_state not in (INSPECTING, INSPECTWAIT):
            raise NotFound("Not found")
        return _with_token(ctx, node.uuid)

    found = await ctx.run(find)
    if found is None:
        discovered = await ctx.conductor.discover(inventory, plugin)
        node, token = await ctx.run(_with_token, ctx, discovered.uuid)
        return _json(_lookup_body(node, token, _base(request)), 202)
    node, token = found
    try:
        await ctx.conductor.continue_inspection(node.uuid, inventory, plugin)
    except NodeNotFound:
        raise NotFound("Not found") from None
    return _json(_lookup_body(node, token, _base(request)), 202)
