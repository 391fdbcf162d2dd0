"""The dashboard: server-rendered HTML pages on the API port, with a live timeline.

Theory of operation
-------------------
Pages (all ``GET``, behind the API's own authentication — HTTP Basic when enabled, so the
browser's prompt is the login; open with ``noauth``):

* ``/dashboard`` — the nodes: provision state (and target), power, maintenance, time in the
  state, the last timeline event. Filtering, search and paging happen in the database, so a
  page costs the same with 10 or 10,000 nodes: ``state=`` (one provision state), ``q=`` (name
  contains, UUID or MAC starts with: `Store.list_node_fields` ``search``), ``sort=``
  (`pages.SORTS`), ``limit=`` (at most 500) and ``marker=`` (the last UUID of the previous
  page: the store's keyset paging). One query reads the page's rows (`pages.LIST_COLUMNS`
  only), one its ports' MACs, one the counts per state; the last events come from the
  timeline in memory.
* ``/dashboard/nodes/{ident}`` — one node (UUID or name): its fields, ports, live timeline,
  history (newest `HISTORY_ROWS`) and inspection inventory.
* ``/dashboard/unknown`` — MACs the services saw that no port names: the timeline's MACs, most
  recently active first, minus those a port owns (one query for the MACs on the page).
* ``/dashboard/macs/{mac}`` — one MAC's live timeline (a node's MAC redirects to its node);
  also ``ip:<address>`` keys, the clients TFTP or HTTP saw that no DHCP of ours explains.
* ``/dashboard/events?node=…|mac=…[&since=epoch-seq]`` — the live feed (`stream`): server-sent
  events the pages' script (``static/dashboard.js``) adds to the timeline as they come.

A page is built and rendered in one call on the API's thread pool (`ApiContext.run`): store
reads, timeline reads and Jinja2 — never on the event loop that also serves DHCP and TFTP.
Templates run in Jinja2's immutable sandbox with autoescaping and strict undefined; the
script and the style sheet are static files (no inline code, no CDN, no build step), which
lets every page carry a strict ``Content-Security-Policy``. ``Server-Timing`` tells how long
the data (``db``) and the template (``render``) took.

Bad query parameters answer 400 and an unknown node 404, as small HTML pages.

Performance (``tests/api/test_dashboard_scale.py``: 10,000 nodes and 11,000 ports on SQLite, a
timeline of 12,000 MACs, this project's shared 2-core box at load 4-5; client latency over one
keep-alive connection): a 50-row list page — first page, a state, a name or MAC search, the
longest-in-state order, a page deep in the list — p50 9-22 ms, p95 20-60 ms (about 4 ms of
queries and 4-8 ms of template); 500 rows p50 140 ms (90 ms of it the sandboxed template); a
node page p50 16 ms; the unknown MACs p50 53 ms (40 ms walking the timeline's 12,000 keys).
"""

from __future__ import annotations

import ipaddress
import json
import time
import uuid as uuidlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

import jinja2
from aiohttp import web
from jinja2.sandbox import ImmutableSandboxedEnvironment

from pxeforge.api.app import API_CONTEXT, ApiContext
from pxeforge.api.dashboard import pages, stream
from pxeforge.boot.machine import normalize_mac
from pxeforge.inventory.errors import NodeInventoryNotFound, NodeNotFound
from pxeforge.inventory.records import HistoryRecord, NodeRecord
from pxeforge.inventory.states import ALL_STATES
from pxeforge.inventory.store import MAX_LIMIT
from pxeforge.recording import IP_PREFIX
from pxeforge.timeline import Event, KeySummary, Timeline

__all__ = ["ROUTES", "install"]

ROUTES = web.RouteTableDef()

HERE: Final = Path(__file__).resolve().parent
DEFAULT_LIMIT: Final = 50
MAX_PAGE: Final = 500
TIMELINE_ROWS: Final = 200
"""Timeline events a node or MAC page shows when it loads (the live feed adds more)."""
HISTORY_ROWS: Final = 50
_HISTORY_PAGES: Final = 20  # at most 20 × 1000 history records read to find the newest
UNKNOWN_LIMIT: Final = 100
MAX_UNKNOWN: Final = 1000
MAX_SEARCH: Final = 100
STATIC: Final = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
}
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

_ENV: Final = ImmutableSandboxedEnvironment(
    loader=jinja2.FileSystemLoader(str(HERE / "templates")),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def install(ctx: ApiContext, app: web.Application) -> list[web.AbstractRouteDef]:
    """The dashboard's routes for ``app`` (authenticated like the API: nothing is made
    public); open live streams end when ``app`` shuts down."""
    del ctx  # nothing to configure: the pages read ctx.store and ctx.timeline
    stream.attach(app)
    return list(ROUTES)


class PageError(Exception):
    """A 4xx the dashboard shows as a page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# ---- helpers --------------------------------------------------------------------------------


def _ctx(request: web.Request) -> ApiContext:
    return request.app[API_CONTEXT]


def _render(name: str, **context: Any) -> str:
    return _ENV.get_template(name).render(context)


def _html(body: str, *, status: int = 200, timing: str | None = None) -> web.Response:
    response = web.Response(text=body, status=status, content_type="text/html", charset="utf-8")
    response.headers.update(SECURITY_HEADERS)
    if timing is not None:
        response.headers["Server-Timing"] = timing
    return response


def _error_page(status: int, message: str) -> web.Response:
    title = {400: "Bad request", 404: "Not found"}.get(status, "Error")
    return _html(
        _render("error.html", title=title, status=status, message=message, now=time.time()),
        status=status,
    )


def _query(request: web.Request, allowed: Iterable[str]) -> dict[str, str]:
    known = set(allowed)
    unknown = sorted(set(request.query) - known)
    if unknown:
        raise PageError(400, f"Unknown query parameter(s): {', '.join(unknown)}")
    return {k: request.query[k] for k in request.query}


def _is_uuid(value: str) -> bool:
    try:
        uuidlib.UUID(value)
    except ValueError:
        return False
    return True


def _limit(value: str | None, default: int, maximum: int) -> int:
    if value is None or value == "":
        return default
    try:
        limit = int(value)
    except ValueError:
        raise PageError(400, f"limit must be a number, not {value!r}") from None
    if not 1 <= limit <= maximum:
        raise PageError(400, f"limit must be between 1 and {maximum}")
    return limit


def _last_event(timeline: Timeline, keys: Iterable[str]) -> Event | None:
    newest: Event | None = None
    for key in keys:
        event = timeline.last(key)
        if event is not None and (newest is None or event.seq > newest.seq):
            newest = event
    return newest


class _Timer:
    """Milliseconds spent reading data and rendering, for ``Server-Timing``."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.data_ms = 0.0

    def data_done(self) -> None:
        self.data_ms = (time.perf_counter() - self.start) * 1000

    def header(self) -> str:
        render_ms = (time.perf_counter() - self.start) * 1000 - self.data_ms
        return f"db;dur={self.data_ms:.1f}, render;dur={render_ms:.1f}"


async def _page(request: web.Request, build: Any, *args: Any) -> web.Response:
    """Run ``build(ctx, *args) -> (html, timing)`` on the thread pool; 4xx as pages."""
    ctx = _ctx(request)
    try:
        body, timing = await ctx.run(build, ctx, *args)
    except PageError as exc:
        return _error_page(exc.status, str(exc))
    except NodeNotFound as exc:
        return _error_page(404, str(exc))
    return _html(body, timing=timing)


# ---- the node list --------------------------------------------------------------------------


@dataclass(frozen=True)
class ListQuery:
    state: str | None
    search: str | None
    sort: str
    limit: int
    marker: str | None

    def params(self, **override: str | None) -> str:
        """The query string of this list with some parameters changed (None: dropped)."""
        values: dict[str, str | None] = {
            "state": self.state,
            "q": self.search,
            "sort": None if self.sort == "created" else self.sort,
            "limit": None if self.limit == DEFAULT_LIMIT else str(self.limit),
        }
        values.update(override)
        return urlencode({k: v for k, v in values.items() if v})


def list_query(params: Mapping[str, str]) -> ListQuery:
    state = params.get("state") or None
    if state is not None and state not in ALL_STATES:
        raise PageError(400, f"{state!r} is not a provision state")
    search = (params.get("q") or "").strip() or None
    if search is not None and len(search) > MAX_SEARCH:
        raise PageError(400, f"the search text is longer than {MAX_SEARCH} characters")
    sort = params.get("sort") or "created"
    if sort not in pages.SORTS:
        raise PageError(400, f"sort must be one of {', '.join(pages.SORTS)}")
    marker = params.get("marker") or None
    if marker is not None and not _is_uuid(marker):
        raise PageError(400, "marker must be a node UUID (the last node of the previous page)")
    limit = _limit(params.get("limit"), DEFAULT_LIMIT, MAX_PAGE)
    return ListQuery(state, search, sort, limit, marker)


def _build_nodes(ctx: ApiContext, query: ListQuery) -> tuple[str, str]:
    timer = _Timer()
    store, now = ctx.store, time.time()
    sort_key, sort_dir = pages.SORTS[query.sort]
    try:
        rows = store.list_node_fields(
            pages.LIST_COLUMNS,
            provision_state=query.state,
            search=query.search,
            sort_key=sort_key,
            sort_dir=sort_dir,
            limit=query.limit,
            marker=query.marker,
        )
    except NodeNotFound:
        raise PageError(
            400, "The page marker is no longer a node (deleted?): start from the first page."
        ) from None
    macs = store.node_addresses(row["id"] for row in rows)
    counts = store.count_nodes_by_state()
    node_rows = pages.node_rows(rows, macs, lambda keys: _last_event(ctx.timeline, keys), now)
    timer.data_done()
    next_url = None
    if len(rows) == query.limit:
        next_url = "/dashboard?" + query.params(marker=rows[-1]["uuid"])
    html = _render(
        "nodes.html",
        title="Nodes",
        now=now,
        query=query,
        rows=node_rows,
        counts=sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])),
        total=sum(counts.values()),
        states=sorted(ALL_STATES),
        sorts=list(pages.SORT_LABELS.items()),
        page_sizes=pages.PAGE_SIZES,
        next_url=next_url,
        first_url="/dashboard?" + query.params() if query.marker else None,
        state_url=lambda state: "/dashboard?" + query.params(state=state),
    )
    return html, timer.header()


@ROUTES.get("/dashboard")
async def nodes_page(request: web.Request) -> web.Response:
    try:
        query = list_query(_query(request, ("state", "q", "sort", "limit", "marker")))
    except PageError as exc:
        return _error_page(exc.status, str(exc))
    return await _page(request, _build_nodes, query)


# ---- one node -------------------------------------------------------------------------------


def _stream_url(timeline: Timeline, shown: list[Event], **key: str) -> str:
    """The live feed of ``key`` (node= or mac=) after the newest event ``shown``."""
    since = f"{stream.epoch(timeline)}-{shown[-1].seq if shown else 0}"
    return "/dashboard/events?" + urlencode({**key, "since": since})


def _newest_history(ctx: ApiContext, record: NodeRecord) -> tuple[list[HistoryRecord], bool]:
    """The newest `HISTORY_ROWS` history records (the store lists oldest first) and whether
    there are more."""
    kept: list[HistoryRecord] = []
    total = 0
    marker: str | None = None
    for _ in range(_HISTORY_PAGES):
        batch = ctx.store.list_history(record.id, limit=MAX_LIMIT, marker=marker)
        total += len(batch)
        kept = (kept + batch)[-HISTORY_ROWS:]
        if len(batch) < MAX_LIMIT:
            break
        marker = batch[-1].uuid
    return kept, total > len(kept)


def _build_node(ctx: ApiContext, ident: str) -> tuple[str, str]:
    timer = _Timer()
    store, now = ctx.store, time.time()
    record = store.get_node(ident)
    ports = store.list_ports(node=record.id)
    history, older = _newest_history(ctx, record)
    try:
        inventory, _plugin = store.get_inventory(record.id)
    except NodeInventoryNotFound:
        inventory = None
    keys = [p.address for p in ports] + [record.uuid]
    events = ctx.timeline.events(keys, limit=TIMELINE_ROWS)
    timer.data_done()
    since = pages.node_since(record, now)
    html = _render(
        "node.html",
        title=record.name or record.uuid,
        now=now,
        node=record,
        state_class=pages.state_class(record.provision_state),
        since=since,
        in_state=pages.duration(now - since),
        ports=ports,
        events=[pages.event_view(e) for e in reversed(events)],
        epoch=stream.epoch(ctx.timeline),
        stream_url=_stream_url(ctx.timeline, events, node=record.uuid),
        history=pages.history_rows(history),
        older_history=older,
        inventory=pages.inventory_summary(inventory) if inventory is not None else None,
        inventory_json=json.dumps(inventory, indent=2, sort_keys=True, default=str)
        if inventory is not None
        else None,
    )
    return html, timer.header()


@ROUTES.get("/dashboard/nodes/{ident}")
async def node_page(request: web.Request) -> web.Response:
    return await _page(request, _build_node, request.match_info["ident"])


# ---- unknown MACs ---------------------------------------------------------------------------


def unknown_macs(ctx: ApiContext, prefix: str | None, limit: int) -> list[KeySummary]:
    """The ``limit`` most recently active timeline MACs (and ``ip:`` keys) starting with
    ``prefix`` that no port names and the timeline has not tied to a node.

    One store query per ``max(limit, 100)`` candidates, usually one."""
    candidates = [
        s
        for s in ctx.timeline.summaries()
        if s.node is None and (prefix is None or s.key.startswith(prefix))
    ]
    chunk = max(limit, 100)
    found: list[KeySummary] = []
    for start in range(0, len(candidates), chunk):
        part = candidates[start : start + chunk]
        owned = ctx.store.port_owners(s.key for s in part if not s.key.startswith(IP_PREFIX))
        found.extend(s for s in part if s.key not in owned)
        if len(found) >= limit:
            break
    return found[:limit]


def _build_unknown(ctx: ApiContext, prefix: str | None, limit: int) -> tuple[str, str]:
    timer = _Timer()
    now = time.time()
    found = unknown_macs(ctx, prefix, limit)
    rows = [
        {
            "mac": s.key,
            "first": pages.clock(s.first_at, date=True),
            "last_at": s.last.at,
            "last_age": pages.duration(now - s.last.at),
            "count": s.count,
            "last": pages.event_view(s.last),
        }
        for s in found
    ]
    timer.data_done()
    html = _render(
        "unknown.html",
        title="Unknown MACs",
        now=now,
        rows=rows,
        prefix=prefix or "",
        limit=limit,
        more_url="/dashboard/unknown?"
        + urlencode({"q": prefix or "", "limit": min(limit * 2, MAX_UNKNOWN)})
        if len(rows) == limit and limit < MAX_UNKNOWN
        else None,
    )
    return html, timer.header()


def _mac_prefix(value: str | None) -> str | None:
    """The unknown page's filter: the start of a MAC (``-`` or ``:``) or of an ``ip:`` key."""
    text = (value or "").strip().lower().replace("-", ":")
    if not text:
        return None
    if len(text) > 48 or any(c not in "0123456789abcdef:.ip" for c in text):
        raise PageError(400, f"{value!r} is not (the start of) a MAC address")
    return text


def timeline_key(value: str) -> str:
    """A MAC (any spelling) or an ``ip:<address>`` key (a client the services know by its
    address only, `pxeforge.recording.ip_key`), as the timeline files it; `ValueError`."""
    text = value.strip()
    if text.lower().startswith(IP_PREFIX):
        return IP_PREFIX + str(ipaddress.ip_address(text[len(IP_PREFIX) :]))
    return normalize_mac(text)


@ROUTES.get("/dashboard/unknown")
async def unknown_page(request: web.Request) -> web.Response:
    try:
        params = _query(request, ("q", "limit"))
        prefix = _mac_prefix(params.get("q"))
        limit = _limit(params.get("limit"), UNKNOWN_LIMIT, MAX_UNKNOWN)
    except PageError as exc:
        return _error_page(exc.status, str(exc))
    return await _page(request, _build_unknown, prefix, limit)


# ---- one MAC --------------------------------------------------------------------------------


def _build_mac(ctx: ApiContext, mac: str) -> tuple[str, str] | str:
    owners = ctx.store.port_owners([mac]) if not mac.startswith(IP_PREFIX) else {}
    if mac in owners:
        return owners[mac]
    timer = _Timer()
    now = time.time()
    events = ctx.timeline.events([mac], limit=TIMELINE_ROWS)
    summary = next((s for s in ctx.timeline.summaries() if s.key == mac), None)
    timer.data_done()
    html = _render(
        "mac.html",
        title=mac,
        now=now,
        mac=mac,
        by_ip=mac.startswith(IP_PREFIX),
        summary=summary,
        first=pages.clock(summary.first_at, date=True) if summary is not None else None,
        events=[pages.event_view(e) for e in reversed(events)],
        epoch=stream.epoch(ctx.timeline),
        stream_url=_stream_url(ctx.timeline, events, mac=mac),
    )
    return html, timer.header()


@ROUTES.get("/dashboard/macs/{mac}")
async def mac_page(request: web.Request) -> web.StreamResponse:
    ctx = _ctx(request)
    try:
        mac = timeline_key(request.match_info["mac"])
    except ValueError:
        return _error_page(400, f"{request.match_info['mac']!r} is not a MAC address")
    built = await ctx.run(_build_mac, ctx, mac)
    if isinstance(built, str):  # a port names it: show its node
        raise web.HTTPFound(f"/dashboard/nodes/{built}")
    return _html(built[0], timing=built[1])


# ---- the live feed --------------------------------------------------------------------------


def _node_keys(ctx: ApiContext, ident: str) -> list[str]:
    record = ctx.store.get_node(ident)
    return [p.address for p in ctx.store.list_ports(node=record.id)] + [record.uuid]


@ROUTES.get("/dashboard/events")
async def events(request: web.Request) -> web.StreamResponse:
    ctx = _ctx(request)
    try:
        params = _query(request, ("node", "mac", "since"))
        if ("node" in params) == ("mac" in params):
            raise PageError(400, "give exactly one of node=<uuid or name> and mac=<address>")
        try:
            position = stream.start_position(
                request.headers.get("Last-Event-ID"),
                params.get("since"),
                stream.epoch(ctx.timeline),
            )
        except ValueError as exc:
            raise PageError(400, f"Last-Event-ID and since: {exc}") from None
        if "mac" in params:
            try:
                keys = [timeline_key(params["mac"])]
            except ValueError:
                raise PageError(400, f"{params['mac']!r} is not a MAC address") from None
        else:
            keys = await ctx.run(_node_keys, ctx, params["node"])
    except PageError as exc:
        return _error_page(exc.status, str(exc))
    except NodeNotFound as exc:
        return _error_page(404, str(exc))
    return await stream.follow(request, ctx.timeline, keys, position)


# ---- static files ---------------------------------------------------------------------------

_STATIC_BODIES: dict[str, bytes] = {}


@ROUTES.get("/dashboard/static/{name}")
async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC:
        return _error_page(404, f"No static file {name!r}")
    body = _STATIC_BODIES.get(name)
    if body is None:
        body = _STATIC_BODIES[name] = (HERE / "static" / name).read_bytes()
    return web.Response(
        body=body,
        content_type=STATIC[name],
        charset="utf-8",
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )
