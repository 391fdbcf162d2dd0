"""The live timeline over the API, and the agent's calls recorded into it.

Theory of operation
-------------------
Three reads of `ApiContext.timeline` (`pxeforge.timeline`), authenticated like every other
route:

``GET /v1/nodes/{node_ident}/timeline[?since=SEQ&limit=N]``
    The events of the node's port MACs and of its UUID key, oldest first (``seq > since``; the
    newest ``limit``). Unknown node: Ironic's 404. ``{"node": uuid, "macs": [...],
    "events": [...]}``.
``GET /v1/timeline/unknown``
    Every timeline key that no port names — MACs seen on the wire, and ``ip:<address>`` keys of
    TFTP/HTTP clients no DHCP of ours explains — most recently active first, each with its
    event count and last event: ``{"unknown": [{"mac", "first_at", "count", "last"}]}``.
``GET /v1/timeline/{mac}[?since=SEQ&limit=N]``
    Any MAC's (or ``ip:`` key's) events: ``{"mac": mac, "node": uuid|null, "events": [...]}``
    (``node`` from the ports, else what the timeline learned). A MAC never seen has no events
    (200, empty: the machine may simply not have booted yet); a malformed one is 400.

**The agent's calls** (``agent`` events) are recorded by `agent_events`, a middleware around
the routes of `pxeforge.api.ramdisk` (which it does not touch): after ``GET /v1/lookup``,
``POST /v1/heartbeat/{node}`` and ``POST /v1/continue_inspection`` it reads what it needs from
the request (query, the already-read JSON body: never the agent token) and the response (the
node's UUID), and records ``lookup`` (``found``), ``heartbeat`` (``version``,
``status_message``), ``inventory`` (``interfaces``) or, for a 4xx, ``refused`` (``call``,
``why``). Events are filed under the node's best port MAC (`recording.best_mac`), else the
MACs the agent sent. It also counts every call in `Metrics.count_agent`.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Final

from aiohttp import web

from pxeforge.api.app import API_CONTEXT, ApiContext, Handler
from pxeforge.api.errors import BadRequest, status_of
from pxeforge.boot.machine import normalize_mac
from pxeforge.recording import IP_PREFIX, Record, best_mac, macs_of
from pxeforge.timeline import Event

__all__ = ["ROUTES", "agent_events", "install"]

log = logging.getLogger(__name__)

ROUTES = web.RouteTableDef()

_MAX_LIMIT: Final = 100_000
_AGENT_CALLS: Final = {
    "/v1/lookup": "lookup",
    "/v1/lookup/": "lookup",
    "/v1/continue_inspection": "continue_inspection",
    "/v1/continue_inspection/": "continue_inspection",
}
_HEARTBEAT: Final = "/v1/heartbeat/"


def install(ctx: ApiContext, app: web.Application) -> list[web.AbstractRouteDef]:
    """Add the agent middleware to ``app`` (innermost); the routes to add to it."""
    app.middlewares.append(agent_events)
    return list(ROUTES)


def _ctx(request: web.Request) -> ApiContext:
    return request.app[API_CONTEXT]


def _json(data: Any) -> web.Response:
    return web.Response(body=json.dumps(data).encode(), content_type="application/json")


def _int(request: web.Request, name: str, default: int | None, low: int) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {raw!r}") from None
    if value < low or value > (_MAX_LIMIT if name == "limit" else 2**63):
        raise BadRequest(f"{name} out of range: {value}")
    return value


def _window(request: web.Request) -> tuple[int, int | None]:
    unknown = sorted(set(request.query) - {"since", "limit"})
    if unknown:
        raise BadRequest(f"Unknown query parameter(s): {', '.join(unknown)}")
    since = _int(request, "since", 0, 0)
    assert since is not None
    return since, _int(request, "limit", None, 1)


def _events(events: list[Event]) -> list[dict[str, Any]]:
    return [e.to_json() for e in events]


def _key(text: str) -> str:
    """A MAC (any usual spelling) or an ``ip:`` key; BadRequest otherwise."""
    if text.lower().startswith(IP_PREFIX):
        return text.lower()
    try:
        return normalize_mac(text)
    except ValueError:
        raise BadRequest(f"{text!r} is not a MAC address") from None


# ---- reads ----------------------------------------------------------------------------------


@ROUTES.get("/v1/nodes/{node}/timeline")
async def node_timeline(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    since, limit = _window(request)
    uuid, macs = await ctx.run(ctx.store.node_macs, request.match_info["node"])
    events = ctx.timeline.events([*macs, uuid], since=since, limit=limit)
    return _json({"node": uuid, "macs": macs, "events": _events(events)})


@ROUTES.get("/v1/timeline/unknown")
async def unknown_macs(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    if request.query:
        raise BadRequest(f"Unknown query parameter(s): {', '.join(sorted(request.query))}")
    summaries = ctx.timeline.summaries(macs_only=True)
    macs = [s.key for s in summaries if not s.key.startswith(IP_PREFIX)]
    known = await ctx.run(ctx.store.port_owners, macs) if macs else {}
    return _json(
        {
            "unknown": [
                {
                    "mac": s.key,
                    "first_at": s.first_at,
                    "count": s.count,
                    "last": s.last.to_json(),
                }
                for s in summaries
                if s.key not in known
            ]
        }
    )


@ROUTES.get("/v1/timeline/{mac}")
async def mac_timeline(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    key = _key(request.match_info["mac"])
    since, limit = _window(request)
    events = ctx.timeline.events([key], since=since, limit=limit)
    node = None
    if not key.startswith(IP_PREFIX):
        owners = await ctx.run(ctx.store.port_owners, [key])
        node = owners.get(key)
    if node is None:
        node = ctx.timeline.node_of(key)
    return _json({"mac": key, "node": node, "events": _events(events)})


# ---- the agent's calls ------------------------------------------------------------------------


@web.middleware
async def agent_events(request: web.Request, handler: Handler) -> web.StreamResponse:
    path = request.path
    call = _AGENT_CALLS.get(path)
    if call is None and path.startswith(_HEARTBEAT):
        call = "heartbeat"
    if call is None or request.method not in ("GET", "POST"):
        return await handler(request)
    try:
        response = await handler(request)
    except Exception as exc:
        status = exc.status if isinstance(exc, web.HTTPException) else status_of(exc) or 500
        await _agent_call(request, call, status, None, str(exc))
        raise
    await _agent_call(request, call, response.status, response, None)
    return response


async def _agent_call(
    request: web.Request,
    call: str,
    status: int,
    response: web.StreamResponse | None,
    error: str | None,
) -> None:
    ctx = _ctx(request)
    result = "ok" if status < 400 else "not-found" if status == 404 else "refused"
    if status >= 500:
        result = "error"
    ctx.metrics.count_agent(call, result)
    if not ctx.record_agent:
        return
    try:
        await _record_agent_call(ctx, request, call, status, response, error)
    except Exception:
        log.exception("recording the agent's %s failed", call)


async def _record_agent_call(
    ctx: ApiContext,
    request: web.Request,
    call: str,
    status: int,
    response: web.StreamResponse | None,
    error: str | None,
) -> None:
    body = await _request_json(request) if request.method == "POST" else {}
    answer = _response_json(response)
    node = None
    if isinstance(answer.get("node"), dict):
        node = answer["node"].get("uuid")
    if call == "heartbeat":
        node = request.match_info.get("node") or node
    elif call == "continue_inspection":
        node = request.query.get("node_uuid") or node
    sent: list[str] = []
    if call == "lookup":
        sent = macs_of(request.query.get("addresses", "").split(","))
        node = node or request.query.get("node_uuid")
    elif call == "continue_inspection":
        inventory = body.get("inventory")
        interfaces = inventory.get("interfaces") if isinstance(inventory, dict) else None
        if isinstance(interfaces, list):
            sent = macs_of(i.get("mac_address", "") for i in interfaces if isinstance(i, dict))
    uuid: str | None = None
    macs: list[str] = []
    if node:
        try:
            uuid, macs = await ctx.run(ctx.store.node_macs, str(node))
        except Exception:  # a name or UUID no node has: keep what the agent sent
            uuid, macs = None, []
    mac = best_mac(ctx.timeline, macs) or best_mac(ctx.timeline, sent)
    if mac is None and uuid is None:
        return  # nothing to file it under (a heartbeat for a node that does not exist)
    record = _agent_record(call, status, body, answer, sent, error)
    record.into(ctx.timeline, mac=mac, node=uuid)


def _agent_record(
    call: str,
    status: int,
    body: dict[str, Any],
    answer: dict[str, Any],
    sent: list[str],
    error: str | None,
) -> Record:
    if status >= 400 and not (call == "lookup" and status == 404):
        why = error or _faultstring(answer) or f"HTTP {status}"
        return Record(
            "agent",
            "refused",
            f"agent {call} refused ({status}): {why}",
            "error" if status >= 500 else "warning",
            {"call": call, "status": status, "why": why},
        )
    if call == "lookup":
        found = status < 400
        return Record(
            "agent",
            "lookup",
            "agent lookup: node found" if found else "agent lookup: no node for these MACs",
            "info" if found else "warning",
            {"found": found, "addresses": sent},
        )
    if call == "heartbeat":
        version = body.get("agent_version")
        message = body.get("agent_status_message") or body.get("agent_status")
        text = f"agent heartbeat (version {version})" if version else "agent heartbeat"
        if message:
            text += f": {message}"
        return Record(
            "agent",
            "heartbeat",
            text,
            data={
                "version": version if isinstance(version, str) else None,
                "status_message": message if isinstance(message, str) else None,
            },
        )
    return Record(
        "agent",
        "inventory",
        f"agent inventory posted ({len(sent)} interface(s))",
        data={"interfaces": sent},
    )


async def _request_json(request: web.Request) -> dict[str, Any]:
    try:
        raw = await request.read()  # already read by the handler: aiohttp keeps it
        loaded = json.loads(raw) if raw else {}
    except (ValueError, UnicodeDecodeError, ConnectionError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _response_json(response: web.StreamResponse | None) -> dict[str, Any]:
    if not isinstance(response, web.Response) or not isinstance(response.body, bytes):
        return {}
    try:
        loaded = json.loads(response.body)
    except (ValueError, UnicodeDecodeError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _faultstring(answer: dict[str, Any]) -> str | None:
    raw = answer.get("error_message")
    if not isinstance(raw, str):
        return None
    try:
        inner = json.loads(raw)
    except ValueError:
        return raw
    fault = inner.get("faultstring") if isinstance(inner, dict) else None
    return fault if isinstance(fault, str) else None
