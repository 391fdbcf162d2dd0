"""``GET /v1/doctor`` and ``GET /v1/nodes/{ident}/doctor``: what is wrong, from the timeline.

Theory of operation
-------------------
The doctor itself (`pxeforge.doctor`) is pure; this module gathers what it reads, on the
API's thread pool (store calls block):

* one machine — ``{ident}`` is a node (UUID or name) or a MAC. A node's MACs are its ports
  plus any MAC the timeline learnt belongs to it (`Timeline.node_of`, from an agent lookup);
  its events are those of these MACs and of its UUID (transitions, power). A MAC no port
  names is an **unknown machine**: its own events, no node.
* everything — every node (all pages) and every MAC of the timeline (`Timeline.summaries`)
  that no port names; only machines with at least one finding are returned, the worst first.

The `Context` comes from the conductor's `Settings` (our address as DHCP server id, the DHCP
mode, static ``--kernel`` or inventory boots, the wait timeouts), plus the kernel's ARP table
(``/proc/net/arp`` of the server's network namespace), best effort, so another DHCP server
can be named by its MAC too.

The answer (a pxeforge extension: no microversion gates it; credentials as for nodes)::

    {"generated_at": <epoch>, "node": {uuid, name, provision_state, …} | null,
     "macs": [...], "events": <count>, "last_seen": <epoch> | null,
     "findings": [{code, severity, what, do, evidence: [{seq, at, what}]}]}

and for ``/v1/doctor`` ``{"generated_at": …, "checked": {"nodes": n, "macs": m},
"machines": [<the same objects without generated_at>]}``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from pxeforge.api.app import API_CONTEXT, ApiContext
from pxeforge.boot.machine import normalize_mac
from pxeforge.config import Settings
from pxeforge.doctor import Context, Finding, diagnose
from pxeforge.inventory.records import NodeRecord
from pxeforge.inventory.store import MAX_LIMIT
from pxeforge.recording import IP_PREFIX
from pxeforge.timeline import Event

__all__ = ["ARP_TABLE", "IP_KEY", "ROUTES", "install", "machine_view", "read_arp"]

ROUTES = web.RouteTableDef()

ARP_TABLE: Final = Path("/proc/net/arp")
IP_KEY: Final = IP_PREFIX  # the timeline key of a client known by its address only
_NODE_FIELDS: Final = (
    "uuid",
    "name",
    "provision_state",
    "target_provision_state",
    "power_state",
    "maintenance",
    "last_error",
)


def install(ctx: ApiContext) -> list[web.AbstractRouteDef]:
    """The routes to add to the application (nothing public: they need credentials)."""
    del ctx
    return list(ROUTES)


def read_arp(path: Path | None = None) -> dict[str, str]:
    """IPv4 address → MAC of the complete entries of a ``/proc/net/arp``-style table
    (`ARP_TABLE` by default)."""
    try:
        lines = (path or ARP_TABLE).read_text().splitlines()[1:]
    except OSError:
        return {}
    out: dict[str, str] = {}
    for line in lines:
        cols = line.split()
        if len(cols) >= 4 and cols[2] != "0x0" and cols[3] != "00:00:00:00:00:00":
            out[cols[0]] = cols[3].lower()
    return out


def _json(data: Any) -> web.Response:
    return web.Response(body=json.dumps(data).encode(), content_type="application/json")


def _mac(ident: str) -> str | None:
    """``ident`` as a normalized MAC, or None when it is not one (a node name or UUID)."""
    if len(ident) != 17 or ident[2] not in ":-":
        return None
    try:
        return normalize_mac(ident)
    except ValueError:
        return None


def _settings(ctx: ApiContext) -> Settings:
    settings = getattr(ctx.conductor, "settings", None)
    return settings if isinstance(settings, Settings) else Settings()


def machine_view(
    node: NodeRecord | None, macs: Iterable[str], events: list[Event], findings: list[Finding]
) -> dict[str, Any]:
    """One machine of the answer (see the module docstring)."""
    return {
        "node": None if node is None else {k: getattr(node, k) for k in _NODE_FIELDS},
        "macs": sorted(macs),
        "events": len(events),
        "last_seen": events[-1].at if events else None,
        "findings": [f.to_json() for f in findings],
    }


class _Doctor:
    """One diagnosis run: the store, the timeline and the context, read on a worker thread."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        self.now = time.time()
        self.arp = read_arp()
        self.context = Context.from_settings(_settings(ctx), neighbors=self.arp)
        self.ip_keys: dict[str, list[str]] = {}  # MAC → the ip: keys of its addresses
        for ip, mac in self.arp.items():
            self.ip_keys.setdefault(mac, []).append(IP_KEY + ip)

    def _ip_keys(self, macs: Iterable[str]) -> list[str]:
        """The ``ip:`` timeline keys (TFTP/HTTP clients whose address another DHCP server gave)
        that the ARP table says belong to one of ``macs``."""
        timeline = self.ctx.timeline
        keys = (key for mac in macs for key in self.ip_keys.get(mac, ()))
        return [key for key in keys if timeline.last(key) is not None]

    def _macs_of(self, node: NodeRecord, ports: Iterable[str]) -> set[str]:
        macs = {m.lower() for m in ports}
        for summary in self.ctx.timeline.summaries():
            if summary.node == node.uuid:
                macs.add(summary.key)
        return macs

    def node(self, node: NodeRecord, macs: set[str]) -> dict[str, Any]:
        events = self.ctx.timeline.events([*macs, *self._ip_keys(macs), node.uuid])
        found = diagnose(node, events, self.now, macs=sorted(macs), context=self.context)
        return machine_view(node, macs, events, found)

    def unknown(self, mac: str) -> dict[str, Any]:
        events = self.ctx.timeline.events([mac, *self._ip_keys([mac])])
        found = diagnose(None, events, self.now, macs=[mac], context=self.context)
        return machine_view(None, [mac], events, found)

    def one(self, ident: str) -> dict[str, Any]:
        store = self.ctx.store
        mac = _mac(ident)
        if mac is not None:
            owner = store.port_owners([mac]).get(mac) or self.ctx.timeline.node_of(mac)
            if owner is None:
                return self.unknown(mac)
            ident = owner
        node = store.get_node(ident)
        ports = store.node_addresses([node.id]).get(node.id, [])
        return self.node(node, self._macs_of(node, ports))

    def everything(self) -> dict[str, Any]:
        store, timeline = self.ctx.store, self.ctx.timeline
        nodes: list[NodeRecord] = []
        marker: str | None = None
        while True:
            page = store.list_nodes(limit=MAX_LIMIT, marker=marker)
            nodes += page
            if len(page) < MAX_LIMIT:
                break
            marker = page[-1].uuid
        addresses = store.node_addresses([n.id for n in nodes])
        summaries = timeline.summaries()
        keys: list[tuple[str, str | None]] = []  # (MAC, or ip: key ARP cannot name; node learnt)
        for summary in summaries:
            key = summary.key
            if key.startswith(IP_KEY):  # joined to its MAC's machine by `_ip_keys`
                key = self.arp.get(key[len(IP_KEY) :], key)
            keys.append((key, summary.node))
        owners = store.port_owners([k for k, _ in keys if not k.startswith(IP_KEY)])
        by_uuid = {n.uuid: n for n in nodes}
        macs: dict[str, set[str]] = {
            n.uuid: {m.lower() for m in addresses.get(n.id, [])} for n in nodes
        }
        unknown: dict[str, None] = {}
        for key, learnt in keys:
            owner = owners.get(key) or learnt
            if owner in by_uuid:
                macs[owner].add(key)
            else:
                unknown[key] = None
        machines = [self.node(n, macs[n.uuid]) for n in nodes]
        machines += [self.unknown(mac) for mac in unknown]
        sick = [m for m in machines if m["findings"]]
        sick.sort(key=_worst_first)
        return {
            "generated_at": self.now,
            "checked": {"nodes": len(nodes), "macs": len(summaries)},
            "machines": sick,
        }


_RANK: Final[Mapping[str, int]] = {"error": 0, "warning": 1, "info": 2}


def _worst_first(machine: dict[str, Any]) -> tuple[int, int, str]:
    ranks = [_RANK.get(f["severity"], 3) for f in machine["findings"]]
    node = machine["node"]
    name = (node["name"] or node["uuid"]) if node else machine["macs"][0]
    return (min(ranks), -len(ranks), name)


@ROUTES.get("/v1/doctor")
async def doctor_all(request: web.Request) -> web.Response:
    ctx = request.app[API_CONTEXT]
    return _json(await ctx.run(lambda: _Doctor(ctx).everything()))


@ROUTES.get("/v1/nodes/{node}/doctor")
async def doctor_node(request: web.Request) -> web.Response:
    ctx = request.app[API_CONTEXT]
    ident = request.match_info["node"]

    def run() -> dict[str, Any]:
        doctor = _Doctor(ctx)
        return {"generated_at": doctor.now, **doctor.one(ident)}

    return _json(await ctx.run(run))
