"""api: the Ironic-compatible REST API (``/v1``) served by `pxeforge serve` on port 6385.

versions.py   microversions: negotiation, headers, which version introduced which field/verb
errors.py     API errors and Ironic's error body (a JSON string inside JSON)
schemas.py    request validation: node/port bodies, JSON-Patch (RFC 6902), query parameters
views.py      records → Ironic's JSON shapes (per version), links, collections
auth.py       http_basic: bcrypt htpasswd under --data-dir, first-start credentials
app.py        the aiohttp application: route table, middlewares, handlers; start_api()
"""

from pxeforge.api.app import API_CONTEXT, ROUTES, ApiContext, create_app, start_api

__all__ = ["API_CONTEXT", "ROUTES", "ApiContext", "create_app", "start_api"]
