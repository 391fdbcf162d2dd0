"""The Ironic-compatible REST API (``/v1``) as an aiohttp application.

Theory of operation:

* **One route table** (`ROUTES`, built with `web.RouteTableDef`) lists every endpoint; another
  piece (the agent's ``/v1/lookup``, ``/v1/heartbeat``…) adds its own table with
  ``create_app(ctx, extra_routes=…)`` and marks paths that need no credentials in
  ``ApiContext.public_paths``.
* **Middlewares, outermost first:** `_errors` turns every exception carrying an HTTP ``code``
  (inventory, driver and API errors) into Ironic's error body (`errors.error_body`), and adds
  the version headers to every response, errors included; `_version` negotiates the request's
  microversion (406 out of range); `_auth` checks HTTP Basic credentials (401 with
  ``WWW-Authenticate``) except on public paths.
* **Nothing blocks the event loop** — it also serves DHCP and TFTP in `pxeforge serve`: every
  store call runs on `ApiContext.executor`, driver work in the conductor's workers. Each write
  request is one store transaction (or `Conductor` operation), validated completely before it
  starts, so a refused request has changed nothing.
* **Shapes and status codes are Ironic's**: 201 + ``Location`` for creation, 202 for provision,
  power and maintenance requests, 204 for deletes and the boot device, ``next`` links on full
  pages, fields hidden from older microversions (`views`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import logging
import uuid as uuidlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar
from urllib.parse import urlencode

from aiohttp import web

from pxeforge.api import schemas, views
from pxeforge.api.auth import REALM, Htpasswd, parse_basic
from pxeforge.api.errors import (
    BadRequest,
    Forbidden,
    NotAcceptable,
    NotFound,
    Unauthorized,
    error_body,
    status_of,
)
from pxeforge.api.versions import (
    DETAIL_QUERY,
    DRIVER_FILTER,
    ENROLL_STATE,
    HEADER,
    MAX_VERSION,
    MIN_VERSION,
    NODE_FIELD_VERSIONS,
    NODE_HISTORY,
    NODE_INVENTORY,
    PORT_FIELD_VERSIONS,
    PROVISION_STATE_FILTER,
    RESOURCE_CLASS,
    SOFT_POWER_OFF,
    STANDARD_HEADER,
    VERB_VERSIONS,
    Version,
    VersionError,
    negotiate,
    response_headers,
)
from pxeforge.conductor.manager import BOOT_DEVICES, Conductor
from pxeforge.inventory.errors import InvalidState, NodeNotFound, PortNotFound
from pxeforge.inventory.records import NodeRecord
from pxeforge.inventory.states import (
    ALL_STATES,
    AVAILABLE,
    ENROLL,
    POWER_STATES,
    SOFT_REBOOT,
    STABLE_STATES,
    UPDATE_ALLOWED_STATES,
)
from pxeforge.inventory.states import (
    SOFT_POWER_OFF as SOFT_OFF_STATE,
)
from pxeforge.inventory.store import MAX_LIMIT, Store
from pxeforge.metrics import Metrics
from pxeforge.timeline import Timeline

__all__ = [
    "API_CONTEXT",
    "API_USER",
    "API_VERSION",
    "ROUTES",
    "ApiContext",
    "create_app",
    "start_api",
]

log = logging.getLogger("pxeforge.api")

T = TypeVar("T")

MAX_BODY: Final = 1024 * 1024
"""Largest request body (JSON documents are small; configdrives are links or small)."""


@dataclass
class ApiContext:
    """What the handlers need: the store, the conductor, and how to authenticate."""

    store: Store
    conductor: Conductor
    htpasswd: Htpasswd | None = None  # None: noauth
    executor: concurrent.futures.ThreadPoolExecutor = field(
        default_factory=lambda: concurrent.futures.ThreadPoolExecutor(
            max_workers=8, thread_name_prefix="api"
        )
    )
    public_paths: set[str] = field(default_factory=lambda: {"/", "/v1", "/v1/"})
    public_prefixes: tuple[str, ...] = ()  # e.g. "/v1/heartbeat/" (the agent's, per node)
    timeline: Timeline = field(default_factory=Timeline)  # `pxeforge serve` shares its own
    metrics: Metrics = field(default_factory=Metrics)  # served at /metrics (api.metrics)
    record_agent: bool = True  # record the agent's calls in the timeline (api.timeline)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking call (store, bcrypt) on the API's thread pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self.executor.shutdown(wait=True)


API_CONTEXT: Final = web.AppKey("api_context", ApiContext)
API_VERSION: Final = web.RequestKey("api_version", Version)
"""The request's negotiated microversion (set by the version middleware)."""
API_USER: Final = web.RequestKey("api_user", str)
"""The authenticated user name (absent with noauth)."""

ROUTES = web.RouteTableDef()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# ---- helpers --------------------------------------------------------------------------------


def _ctx(request: web.Request) -> ApiContext:
    return request.app[API_CONTEXT]


def _version(request: web.Request) -> Version:
    return request[API_VERSION]


def _base(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _user(request: web.Request) -> str | None:
    return request.get(API_USER)


def _json(data: Any, status: int = 200, **headers: str) -> web.Response:
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        content_type="application/json",
        headers=headers or None,
    )


def _empty(status: int, **headers: str) -> web.Response:
    return web.Response(status=status, headers=headers or None)


async def _body(request: web.Request, *, required: bool = True) -> Any:
    raw = await request.read()
    if not raw.strip():
        if required:
            raise BadRequest("The request body is empty; a JSON document is expected")
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"Malformed JSON in the request body: {exc}") from None


def _query(request: web.Request, allowed: Iterable[str]) -> dict[str, str]:
    known = set(allowed)
    unknown = sorted(set(request.query) - known)
    if unknown:
        raise BadRequest(f"Unknown query parameter(s): {', '.join(unknown)}")
    return {k: request.query[k] for k in request.query}


def _need(version: Version, minor: int, what: object) -> None:
    if what is not None and not version.at_least(minor):
        raise NotAcceptable(minimum=minor)


async def _node(request: web.Request, ident: str | None = None) -> NodeRecord:
    """The node named in the path (UUID, or name from API 1.5 on)."""
    ident = request.match_info["node"] if ident is None else ident
    if not schemas.node_name_allowed(_version(request)) and not _is_uuid(ident):
        raise NodeNotFound(ident)
    return await _ctx(request).run(_ctx(request).store.get_node, ident)


def _is_uuid(value: str) -> bool:
    try:
        uuidlib.UUID(value)
    except ValueError:
        return False
    return True


def _next_url(request: web.Request, path: str, params: dict[str, str], marker: str) -> str:
    query = {k: v for k, v in params.items() if k != "marker"}
    query.setdefault("limit", str(MAX_LIMIT))
    query["marker"] = marker
    return f"{_base(request)}/v1/{path}?{urlencode(query)}"


# ---- middlewares ----------------------------------------------------------------------------


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = {
            404: "The resource could not be found.",
            405: f"The method {request.method} is not allowed for this resource.",
        }.get(exc.status, exc.reason)
        response = _json(error_body(exc.status, message), exc.status)
        if exc.status == 405:
            allow = exc.headers.get("Allow")
            if allow:
                response.headers["Allow"] = allow
    except Exception as exc:
        status = status_of(exc)
        if status is None:
            log.exception("%s %s failed", request.method, request.path)
            status, message = 500, "Internal server error: see the pxeforge log"
        else:
            message = str(exc)
        response = _json(error_body(status, message), status)
        if status == 401:
            response.headers["WWW-Authenticate"] = f'Basic realm="{REALM}"'
    for name, value in response_headers(request.get(API_VERSION)).items():
        response.headers[name] = value
    response.headers.setdefault("Vary", HEADER)
    return response


@web.middleware
async def _negotiate(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        request[API_VERSION] = negotiate(
            request.headers.get(HEADER), request.headers.get(STANDARD_HEADER)
        )
    except VersionError as exc:
        raise NotAcceptable(str(exc)) from None
    return await handler(request)


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    ctx = _ctx(request)
    public = request.path in ctx.public_paths or request.path.startswith(ctx.public_prefixes)
    if ctx.htpasswd is None or public:
        return await handler(request)
    creds = parse_basic(request.headers.get("Authorization"))
    if creds is None:
        raise Unauthorized("Authentication required: HTTP Basic credentials expected")
    if not await ctx.run(ctx.htpasswd.check, *creds):
        raise Unauthorized("Authentication failed: wrong user name or password")
    request[API_USER] = creds[0]
    return await handler(request)


# ---- version documents ----------------------------------------------------------------------


def _version_doc(request: web.Request) -> dict[str, Any]:
    return {
        "id": "v1",
        "links": [{"href": f"{_base(request)}/v1/", "rel": "self"}],
        "status": "CURRENT",
        "min_version": str(MIN_VERSION),
        "version": str(MAX_VERSION),
    }


@ROUTES.get("/")
async def root(request: web.Request) -> web.Response:
    doc = _version_doc(request)
    return _json(
        {
            "name": "OpenStack Ironic API",
            "description": "pxeforge: bare-metal provisioning with Ironic's API, in one process "
            "with its DHCP, TFTP and HTTP boot servers.",
            "versions": [doc],
            "default_version": doc,
        }
    )


@ROUTES.get("/v1")
async def v1(request: web.Request) -> web.Response:
    base = _base(request)
    return _json(
        {
            "id": "v1",
            "links": [
                {"href": f"{base}/v1/", "rel": "self"},
                {
                    "href": "https://docs.openstack.org/ironic/latest/contributor/webapi.html",
                    "rel": "describedby",
                    "type": "text/html",
                },
            ],
            "media_types": {
                "base": "application/json",
                "type": "application/vnd.openstack.ironic.v1+json",
            },
            "nodes": views.links(base, "nodes", ""),
            "ports": views.links(base, "ports", ""),
            "version": _version_doc(request),
        }
    )


# ---- nodes ----------------------------------------------------------------------------------

_NODE_FILTERS: Final[dict[str, int]] = {
    "provision_state": PROVISION_STATE_FILTER,
    "maintenance": 1,
    "driver": DRIVER_FILTER,
    "associated": 1,
    "resource_class": RESOURCE_CLASS,
    "fault": 42,
    "conductor_group": 46,
    "owner": 50,
    "lessee": 65,
    "retired": 61,
    "shard": 82,
}
_NODE_LIST_PARAMS: Final = (*_NODE_FILTERS, "detail", "fields", "limit", "marker", "sort_key",
                            "sort_dir")  # fmt: skip

# columns to read for each API field of a list (derived fields need other columns or none)
_FIELD_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "clean_step": ("driver_internal_info",),
    "conductor": (),
    "allocation_uuid": (),
    "chassis_uuid": (),
    "console_enabled": (),
    "deploy_step": (),
    "traits": (),
}


def _columns(fields: Iterable[str]) -> list[str]:
    out: dict[str, None] = {"uuid": None}
    for name in fields:
        for column in _FIELD_COLUMNS.get(name, (name,)):
            out[column] = None
    return list(out)


async def _list_nodes(request: web.Request, *, detail: bool) -> web.Response:
    ctx, version = _ctx(request), _version(request)
    params = _query(request, _NODE_LIST_PARAMS)
    for name, minor in _NODE_FILTERS.items():
        _need(version, minor, params.get(name))
    if "detail" in params:
        _need(version, DETAIL_QUERY, params["detail"])
        detail = detail or bool(schemas.parse_bool("detail", params["detail"]))
    fields = schemas.parse_fields(
        params.get("fields"), views.NODE_API_FIELDS, NODE_FIELD_VERSIONS, version
    )
    if fields is not None and detail:
        raise BadRequest("Can not specify ?detail=True and fields in the same request.")
    state = params.get("provision_state")
    if state is not None and state not in ALL_STATES:
        raise BadRequest(f'Provision state "{state}" is not valid')
    match: dict[str, Any] = {}
    for name in ("resource_class", "conductor_group", "owner", "lessee", "fault", "shard"):
        if name in params:
            match[name] = params[name]
    if "retired" in params:
        match["retired"] = schemas.parse_bool("retired", params["retired"])
    limit = schemas.parse_limit(params.get("limit"))
    filters: dict[str, Any] = {
        "provision_state": state,
        "maintenance": schemas.parse_bool("maintenance", params.get("maintenance")),
        "driver": params.get("driver"),
        "associated": schemas.parse_bool("associated", params.get("associated")),
        "match": match or None,
        "limit": limit,
        "marker": params.get("marker"),
        "sort_key": params.get("sort_key", "id"),
        "sort_dir": params.get("sort_dir", "asc"),
    }
    base = _base(request)
    conductor = ctx.conductor.holder
    rows: list[Any]
    if detail:
        rows = await ctx.run(ctx.store.list_nodes, **filters)
        items = [views.node_view(r, version, base, conductor=conductor) for r in rows]
    else:
        shown = fields if fields is not None else views.NODE_LIST_FIELDS
        rows = await ctx.run(ctx.store.list_node_fields, _columns(shown), **filters)
        items = views.node_list_views(rows, version, base, shown, conductor=conductor)
    page = min(limit or MAX_LIMIT, MAX_LIMIT)
    path = "nodes/detail" if request.path.rstrip("/").endswith("/detail") else "nodes"
    next_url = None
    if len(rows) == page and rows:
        last = rows[-1]
        marker = last["uuid"] if isinstance(last, dict) else last.uuid
        next_url = _next_url(request, path, params, marker)
    return _json(views.collection("nodes", items, next_url=next_url))


@ROUTES.get("/v1/nodes")
async def list_nodes(request: web.Request) -> web.Response:
    return await _list_nodes(request, detail=False)


@ROUTES.get("/v1/nodes/detail")
async def list_nodes_detail(request: web.Request) -> web.Response:
    return await _list_nodes(request, detail=True)


_CREATE_ARGUMENTS: Final = frozenset(
    {
        "uuid",
        "name",
        "driver",
        "driver_info",
        "properties",
        "instance_info",
        "extra",
        "boot_interface",
        "deploy_interface",
        "power_interface",
        "management_interface",
    }
)


@ROUTES.post("/v1/nodes")
async def create_node(request: web.Request) -> web.Response:
    ctx, version = _ctx(request), _version(request)
    body = schemas.check_node_create(await _body(request), version)
    await ctx.run(ctx.conductor.drivers, body["driver"])  # unknown driver: 400
    kwargs = {k: v for k, v in body.items() if k in _CREATE_ARGUMENTS}
    attributes = {k: v for k, v in body.items() if k not in _CREATE_ARGUMENTS}
    initial = ENROLL if version.at_least(ENROLL_STATE) else AVAILABLE
    record = await ctx.run(
        ctx.store.create_node,
        provision_state=initial,
        attributes=attributes,
        **kwargs,
    )
    view = views.node_view(record, version, _base(request), conductor=ctx.conductor.holder)
    return _json(view, 201, Location=f"{_base(request)}/v1/nodes/{record.uuid}")


@ROUTES.get("/v1/nodes/{node}")
async def get_node(request: web.Request) -> web.Response:
    ctx, version = _ctx(request), _version(request)
    params = _query(request, ("fields",))
    fields = schemas.parse_fields(
        params.get("fields"), views.NODE_API_FIELDS, NODE_FIELD_VERSIONS, version
    )
    record = await _node(request)
    return _json(
        views.node_view(
            record, version, _base(request), fields=fields, conductor=ctx.conductor.holder
        )
    )


@ROUTES.patch("/v1/nodes/{node}")
async def patch_node(request: web.Request) -> web.Response:
    ctx, version = _ctx(request), _version(request)
    patch = await _body(request)
    record = await _node(request)
    state = record.provision_state
    if state not in STABLE_STATES and state not in UPDATE_ALLOWED_STATES:
        raise InvalidState(
            f"Node {record.uuid} can not be updated while a state transition is in progress."
        )
    base = _base(request)
    view = views.node_view(record, version, base, with_links=False)
    changes = schemas.node_patch_changes(view, patch, version)
    if "driver" in changes:
        await ctx.run(ctx.conductor.drivers, changes["driver"])
    if changes.get("maintenance") is False:
        changes["maintenance_reason"] = None
    if changes:
        record = await ctx.run(ctx.store.update_node, record.uuid, changes)
    return _json(views.node_view(record, version, base, conductor=ctx.conductor.holder))


@ROUTES.delete("/v1/nodes/{node}")
async def delete_node(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    record = await _node(request)
    if record.protected:
        raise Forbidden(
            f"Node {record.uuid} is protected and cannot be undeployed, rebuilt or deleted"
        )
    await ctx.run(ctx.store.delete_node, record.uuid)
    return _empty(204)


@ROUTES.get("/v1/nodes/{node}/states")
async def node_states(request: web.Request) -> web.Response:
    record = await _node(request)
    return _json(views.node_states_view(record, _version(request), _base(request)))


_PROVISION_BODY: Final = frozenset(
    {
        "target",
        "configdrive",
        "clean_steps",
        "deploy_steps",
        "service_steps",
        "rescue_password",
        "disable_ramdisk",
        "runbook",
    }
)


def _check_type(body: dict[str, Any], name: str, kind: type, label: str) -> None:
    value = body.get(name)
    if value is not None and not isinstance(value, kind):
        raise BadRequest(f"Invalid input for field/attribute {name}. Expected {label}.")


@ROUTES.put("/v1/nodes/{node}/states/provision")
async def provision(request: web.Request) -> web.Response:
    ctx, version = _ctx(request), _version(request)
    body = await _body(request)
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object with a 'target'")
    unknown = sorted(set(body) - _PROVISION_BODY)
    if unknown:
        raise BadRequest(
            f"Additional properties are not allowed ({', '.join(map(repr, unknown))} unexpected)"
        )
    target = body.get("target")
    if not isinstance(target, str):
        raise BadRequest("Invalid input for field/attribute target: a verb (string) is required")
    since = VERB_VERSIONS.get(target)
    if since is not None and not version.at_least(since):
        raise NotAcceptable(minimum=since)
    for name in ("clean_steps", "deploy_steps", "service_steps"):
        _check_type(body, name, list, "a list of steps")
    _check_type(body, "rescue_password", str, "a string")
    _check_type(body, "disable_ramdisk", bool, "a boolean")
    if body.get("runbook") is not None:
        raise BadRequest("Runbooks are not supported by pxeforge")
    record = await _node(request)
    await ctx.conductor.provision(
        record.uuid,
        target,
        user=_user(request),
        configdrive=body.get("configdrive"),
        clean_steps=body.get("clean_steps"),
        deploy_steps=body.get("deploy_steps"),
        service_steps=body.get("service_steps"),
        rescue_password=body.get("rescue_password"),
        disable_ramdisk=body.get("disable_ramdisk"),
    )
    return _empty(202, Location=f"{_base(request)}/v1/nodes/{record.uuid}/states")


@ROUTES.put("/v1/nodes/{node}/states/power")
async def power(request: web.Request) -> web.Response:
    ctx, version = _ctx(request), _version(request)
    body = await _body(request)
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object with a 'target'")
    unknown = sorted(set(body) - {"target", "timeout"})
    if unknown:
        raise BadRequest(
            f"Additional properties are not allowed ({', '.join(map(repr, unknown))} unexpected)"
        )
    target = body.get("target")
    if target not in POWER_STATES:
        raise BadRequest(
            f"Invalid input for field/attribute target. Value: {target!r}. Valid targets: "
            f"{', '.join(POWER_STATES)}"
        )
    if target in (SOFT_OFF_STATE, SOFT_REBOOT):
        _need(version, SOFT_POWER_OFF, target)
    timeout = body.get("timeout")
    if timeout is not None:
        _need(version, SOFT_POWER_OFF, timeout)
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0:
            raise BadRequest(
                f"Invalid timeout value {timeout!r}. The timeout must be a positive integer."
            )
    record = await _node(request)
    await ctx.conductor.set_power_state(record.uuid, target, timeout, user=_user(request))
    return _empty(202, Location=f"{_base(request)}/v1/nodes/{record.uuid}/states")


@ROUTES.put("/v1/nodes/{node}/maintenance")
async def set_maintenance(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    body = await _body(request, required=False)
    reason = None
    if body is not None:
        if not isinstance(body, dict) or set(body) - {"reason"}:
            raise BadRequest('The request body must be {"reason": <text or null>}')
        reason = body.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise BadRequest("Invalid input for field/attribute reason. Expected a string.")
    record = await _node(request)
    await ctx.conductor.set_maintenance(record.uuid, True, reason, user=_user(request))
    return _empty(202)


@ROUTES.delete("/v1/nodes/{node}/maintenance")
async def unset_maintenance(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    record = await _node(request)
    await ctx.conductor.set_maintenance(record.uuid, False, user=_user(request))
    return _empty(202)


@ROUTES.get("/v1/nodes/{node}/validate")
async def validate(request: web.Request) -> web.Response:
    record = await _node(request)
    return _json(await _ctx(request).conductor.validate(record.uuid))


@ROUTES.get("/v1/nodes/{node}/management/boot_device")
async def get_boot_device(request: web.Request) -> web.Response:
    record = await _node(request)
    setting = await _ctx(request).conductor.get_boot_device(record.uuid)
    device = None if setting.device is None else str(setting.device)
    return _json({"boot_device": device, "persistent": setting.persistent})


@ROUTES.put("/v1/nodes/{node}/management/boot_device")
async def set_boot_device(request: web.Request) -> web.Response:
    body = await _body(request)
    if not isinstance(body, dict) or set(body) - {"boot_device", "persistent"}:
        raise BadRequest('The request body must be {"boot_device": …, "persistent": …}')
    device = body.get("boot_device")
    if device not in BOOT_DEVICES:
        raise BadRequest(f"Invalid boot device {device!r}; supported: {', '.join(BOOT_DEVICES)}")
    persistent = body.get("persistent", False)
    if not isinstance(persistent, bool):
        raise BadRequest("Invalid input for field/attribute persistent. Expected a boolean.")
    record = await _node(request)
    await _ctx(request).conductor.set_boot_device(
        record.uuid, device, persistent, user=_user(request)
    )
    return _empty(204)


@ROUTES.get("/v1/nodes/{node}/management/boot_device/supported")
async def supported_boot_devices(request: web.Request) -> web.Response:
    await _node(request)
    return _json({"supported_boot_devices": list(BOOT_DEVICES)})


@ROUTES.get("/v1/nodes/{node}/history")
async def history(request: web.Request) -> web.Response:
    ctx, version = _ctx(request), _version(request)
    if not version.at_least(NODE_HISTORY):
        raise NotFound("The resource could not be found.")
    params = _query(request, ("detail", "limit", "marker", "fields"))
    detail = bool(schemas.parse_bool("detail", params.get("detail")))
    fields = schemas.parse_fields(params.get("fields"), views.HISTORY_FIELDS, {}, version)
    if fields is not None and detail:
        raise BadRequest("Can not specify ?detail=True and fields in the same request.")
    shown = fields or (views.HISTORY_FIELDS if detail else views.HISTORY_DEFAULT_FIELDS)
    limit = schemas.parse_limit(params.get("limit"))
    record = await _node(request)
    events = await ctx.run(
        ctx.store.list_history, record.id, limit=limit, marker=params.get("marker")
    )
    base = _base(request)
    items = [views.history_view(record.uuid, e, base, fields=shown) for e in events]
    next_url = None
    if events and len(events) == min(limit or MAX_LIMIT, MAX_LIMIT):
        next_url = _next_url(request, f"nodes/{record.uuid}/history", params, events[-1].uuid)
    return _json(views.collection("history", items, next_url=next_url))


@ROUTES.get("/v1/nodes/{node}/history/{event}")
async def history_event(request: web.Request) -> web.Response:
    ctx, version = _ctx(request), _version(request)
    if not version.at_least(NODE_HISTORY):
        raise NotFound("The resource could not be found.")
    record = await _node(request)
    wanted = request.match_info["event"]
    marker: str | None = None
    while True:
        events = await ctx.run(ctx.store.list_history, record.id, marker=marker)
        for event in events:
            if event.uuid == wanted:
                return _json(views.history_view(record.uuid, event, _base(request)))
        if len(events) < MAX_LIMIT:
            break
        marker = events[-1].uuid
    raise NotFound(f"Node history record {wanted} could not be found.")


@ROUTES.get("/v1/nodes/{node}/inventory")
async def inventory(request: web.Request) -> web.Response:
    ctx, version = _ctx(request), _version(request)
    if not version.at_least(NODE_INVENTORY):
        raise NotFound("The resource could not be found.")
    record = await _node(request)
    data, plugin = await ctx.run(ctx.store.get_inventory, record.id)
    return _json({"inventory": data, "plugin_data": plugin})


# ---- ports ----------------------------------------------------------------------------------

_PORT_LIST_PARAMS: Final = ("node", "node_uuid", "address", "detail", "fields", "limit",
                            "marker", "sort_key", "sort_dir")  # fmt: skip


async def _list_ports(
    request: web.Request, *, detail: bool, node: NodeRecord | None = None
) -> web.Response:
    ctx, version = _ctx(request), _version(request)
    params = _query(request, _PORT_LIST_PARAMS)
    if "detail" in params:
        _need(version, DETAIL_QUERY, params["detail"])
        detail = detail or bool(schemas.parse_bool("detail", params["detail"]))
    fields = schemas.parse_fields(
        params.get("fields"), views.PORT_API_FIELDS, PORT_FIELD_VERSIONS, version
    )
    if fields is not None and detail:
        raise BadRequest("Can not specify ?detail=True and fields in the same request.")
    if params.get("sort_key", "id") not in ("id", "created_at"):
        raise BadRequest(f"The sort_key value {params['sort_key']} is an invalid field for sorting")
    owner: str | None = None
    if node is not None:
        owner = node.uuid
    elif params.get("node") or params.get("node_uuid"):
        ident = params.get("node") or params.get("node_uuid") or ""
        try:
            owner = (await _node(request, ident)).uuid
        except NodeNotFound:
            return _json(views.collection("ports", []))
    limit = schemas.parse_limit(params.get("limit"))
    ports = await ctx.run(
        ctx.store.list_ports,
        node=owner,
        address=params.get("address"),
        limit=limit,
        marker=params.get("marker"),
        sort_dir=params.get("sort_dir", "asc"),
    )
    shown = fields if fields is not None else (None if detail else views.PORT_LIST_FIELDS)
    base = _base(request)
    items = [views.port_view(p, version, base, fields=shown) for p in ports]
    next_url = None
    if ports and len(ports) == min(limit or MAX_LIMIT, MAX_LIMIT):
        path = request.path.removeprefix("/v1/")
        next_url = _next_url(request, path, params, ports[-1].uuid)
    return _json(views.collection("ports", items, next_url=next_url))


@ROUTES.get("/v1/ports")
async def list_ports(request: web.Request) -> web.Response:
    return await _list_ports(request, detail=False)


@ROUTES.get("/v1/ports/detail")
async def list_ports_detail(request: web.Request) -> web.Response:
    return await _list_ports(request, detail=True)


@ROUTES.get("/v1/nodes/{node}/ports")
async def node_ports(request: web.Request) -> web.Response:
    return await _list_ports(request, detail=False, node=await _node(request))


@ROUTES.get("/v1/nodes/{node}/ports/detail")
async def node_ports_detail(request: web.Request) -> web.Response:
    return await _list_ports(request, detail=True, node=await _node(request))


@ROUTES.post("/v1/ports")
async def create_port(request: web.Request) -> web.Response:
    ctx, version = _ctx(request), _version(request)
    body = schemas.check_port_create(await _body(request), version)
    try:
        node = await ctx.run(ctx.store.get_node, body["node_uuid"])
    except NodeNotFound as exc:
        raise BadRequest(str(exc)) from None
    port = await ctx.run(
        ctx.store.create_port,
        node.id,
        body["address"],
        uuid=body.get("uuid"),
        pxe_enabled=body.get("pxe_enabled", True),
        local_link_connection=body.get("local_link_connection"),
        extra=body.get("extra"),
    )
    view = views.port_view(port, version, _base(request))
    return _json(view, 201, Location=f"{_base(request)}/v1/ports/{port.uuid}")


async def _port(request: web.Request) -> Any:
    ctx = _ctx(request)
    ident = request.match_info["port"]
    if not _is_uuid(ident):
        raise PortNotFound(ident)
    return await ctx.run(ctx.store.get_port, ident)


@ROUTES.get("/v1/ports/{port}")
async def get_port(request: web.Request) -> web.Response:
    version = _version(request)
    params = _query(request, ("fields",))
    fields = schemas.parse_fields(
        params.get("fields"), views.PORT_API_FIELDS, PORT_FIELD_VERSIONS, version
    )
    port = await _port(request)
    return _json(views.port_view(port, version, _base(request), fields=fields))


@ROUTES.patch("/v1/ports/{port}")
async def patch_port(request: web.Request) -> web.Response:
    ctx, version = _ctx(request), _version(request)
    patch = await _body(request)
    port = await _port(request)
    base = _base(request)
    view = views.port_view(port, version, base)
    changes = schemas.port_patch_changes(view, patch, version)
    if "node_uuid" in changes:
        try:
            await ctx.run(ctx.store.get_node, changes["node_uuid"])
        except NodeNotFound as exc:
            raise BadRequest(str(exc)) from None
        changes["node"] = changes.pop("node_uuid")
    if changes:
        port = await ctx.run(ctx.store.update_port, port.uuid, changes)
    return _json(views.port_view(port, version, base))


@ROUTES.delete("/v1/ports/{port}")
async def delete_port(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    port = await _port(request)
    await ctx.run(ctx.store.delete_port, port.uuid)
    return _empty(204)


# ---- application ----------------------------------------------------------------------------


def create_app(
    ctx: ApiContext, *, extra_routes: Iterable[web.AbstractRouteDef] = ()
) -> web.Application:
    """The API application; ``extra_routes`` (another issue's endpoints) come first."""
    app = web.Application(middlewares=[_errors, _negotiate, _auth], client_max_size=MAX_BODY)
    app[API_CONTEXT] = ctx
    from pxeforge.api import images, ramdisk  # the agent's endpoints, images

    routes = [*extra_routes, *ramdisk.install(ctx), *images.ROUTES, *ROUTES]
    from pxeforge.api import metrics, timeline  # the live timeline, /metrics

    routes = [*timeline.install(ctx, app), *metrics.install(ctx), *routes]
    from pxeforge.api import doctor  # GET /v1/doctor, /v1/nodes/{node}/doctor

    routes = [*routes, *doctor.install(ctx)]
    from pxeforge.api import inspection_rules  # /v1/inspection_rules, /v1/nodes/{node}/traits

    routes = [*routes, *inspection_rules.ROUTES]
    from pxeforge.api import dashboard  # the HTML dashboard: /dashboard…

    routes = [*routes, *dashboard.install(ctx, app)]
    app.router.add_routes(routes)
    # clients may add a trailing slash (python-ironicclient lists "/v1/ports/?node=…")
    app.router.add_routes([_slashed(r) for r in routes if _slashable(r)])
    return app


def _slashable(route: web.AbstractRouteDef) -> bool:
    return isinstance(route, web.RouteDef) and route.path != "/" and not route.path.endswith("/")


def _slashed(route: web.AbstractRouteDef) -> web.RouteDef:
    assert isinstance(route, web.RouteDef)
    return web.RouteDef(route.method, route.path + "/", route.handler, route.kwargs)


@dataclass
class ApiServer:
    """A running API: its runner and the port it listens on."""

    runner: web.AppRunner
    port: int

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_api(
    ctx: ApiContext,
    host: str,
    port: int,
    *,
    extra_routes: Iterable[web.AbstractRouteDef] = (),
) -> ApiServer:
    """Serve the API on ``host:port`` (0: any free port; see `ApiServer.port`)."""
    runner = web.AppRunner(create_app(ctx, extra_routes=extra_routes), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = port
    server = getattr(site, "_server", None)
    sockets = getattr(server, "sockets", None) or []
    if sockets:
        bound = sockets[0].getsockname()[1]
    return ApiServer(runner, bound)
