"""``GET /metrics``: the Prometheus text exposition of `ApiContext.metrics`.

Public on purpose (added to `ApiContext.public_paths`): Prometheus scrapers usually carry no
credentials, and the figures are counts — no node, MAC or address appears in them. Nodes by
provision state are read from the store (one query, on the API's thread pool); everything else
is read on the event loop, which owns the servers' counters (see `pxeforge.metrics`).
"""

from __future__ import annotations

from aiohttp import web

from pxeforge.api.app import API_CONTEXT, ApiContext
from pxeforge.metrics import CONTENT_TYPE

__all__ = ["PATH", "ROUTES", "install"]

PATH = "/metrics"
ROUTES = web.RouteTableDef()


def install(ctx: ApiContext) -> list[web.AbstractRouteDef]:
    """Make ``/metrics`` public in ``ctx``; the routes to add to the application."""
    ctx.public_paths.add(PATH)
    ctx.public_paths.add(PATH + "/")
    return list(ROUTES)


@ROUTES.get(PATH)
async def metrics(request: web.Request) -> web.Response:
    ctx = request.app[API_CONTEXT]
    states = await ctx.run(ctx.store.count_nodes_by_state)
    text = ctx.metrics.render(states)
    return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})
