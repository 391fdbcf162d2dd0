"""``/v1/inspection_rules`` (Ironic's inspection rules API) and ``/v1/nodes/{node}/traits``.

Theory of operation (Ironic's ``api/controllers/v1/inspection_rule.py``):

* ``POST /v1/inspection_rules`` — the body is a rule (`pxeforge.inspection_rules`: ``uuid``?,
  ``description``, ``priority``, ``sensitive``, ``phase``, ``conditions``, ``actions``);
  `validate_rule` refuses anything it does not understand with 400 naming the item; 201 with
  ``Location``. A taken UUID is 409.
* ``GET /v1/inspection_rules[?detail=&fields=&phase=&limit=&marker=&sort_key=&sort_dir=]`` —
  ``{"inspection_rules": [...], "next"?}``; without ``detail`` each rule shows ``uuid``,
  ``priority``, ``phase``, ``description`` and ``links`` (Ironic's default fields).
* ``GET``/``PATCH`` (RFC 6902, the whole rule re-validated; ``uuid`` fixed; ``sensitive``
  cannot be unset, as in Ironic) / ``DELETE`` (204) ``/v1/inspection_rules/{uuid}``.
* A ``sensitive`` rule shows ``conditions`` and ``actions`` as null: they may hold BMC
  passwords.
* ``GET /v1/nodes/{node}/traits`` — ``{"traits": [...]}``, what ``add-trait`` set.

Versions: Ironic serves these from microversion 1.96; pxeforge's maximum is 1.87 (the versions
between add resources it does not have), so it serves them at every version rather than at
none. python-ironicclient's ``baremetal inspection rule`` commands ask for 1.96 and are refused;
`pxeforge rule` (`pxeforge.cli.rule`) is the client.
"""

from __future__ import annotations

import json
from typing import Any, Final
from urllib.parse import urlencode

from aiohttp import web

from pxeforge.api import schemas, views
from pxeforge.api.app import API_CONTEXT, API_VERSION, ApiContext
from pxeforge.api.errors import BadRequest
from pxeforge.inspection_rules import validate_rule
from pxeforge.inventory.records import InspectionRuleRecord
from pxeforge.inventory.store import MAX_LIMIT

__all__ = ["DEFAULT_FIELDS", "ROUTES", "RULE_FIELDS", "rule_view"]

ROUTES = web.RouteTableDef()

RULE_FIELDS: Final = ("uuid", "description", "priority", "sensitive", "phase", "conditions",
                      "actions", "created_at", "updated_at")  # fmt: skip
DEFAULT_FIELDS: Final = ("uuid", "priority", "phase", "description")
_LIST_PARAMS: Final = ("detail", "fields", "phase", "limit", "marker", "sort_key", "sort_dir")


def _ctx(request: web.Request) -> ApiContext:
    return request.app[API_CONTEXT]


def _base(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _json(data: Any, status: int = 200, **headers: str) -> web.Response:
    return web.Response(body=json.dumps(data).encode(), status=status,
                        content_type="application/json", headers=headers or None)  # fmt: skip


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        raise BadRequest("The request body is empty; a JSON document is expected")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"Malformed JSON in the request body: {exc}") from None


def _query(request: web.Request, allowed: tuple[str, ...]) -> dict[str, str]:
    unknown = sorted(set(request.query) - set(allowed))
    if unknown:
        raise BadRequest(f"Unknown query parameter(s): {', '.join(unknown)}")
    return dict(request.query)


def rule_view(
    rule: InspectionRuleRecord, base: str, fields: list[str] | tuple[str, ...] | None = None
) -> dict[str, Any]:
    """A rule as the API shows it (``fields``: only these, plus ``links``)."""
    full: dict[str, Any] = {
        "uuid": rule.uuid,
        "description": rule.description,
        "priority": rule.priority,
        "sensitive": rule.sensitive,
        "phase": rule.phase,
        "conditions": None if rule.sensitive else rule.conditions,
        "actions": None if rule.sensitive else rule.actions,
        "created_at": rule.created_at.isoformat(),
        "updated_at": rule.updated_at.isoformat() if rule.updated_at else None,
    }
    shown = {k: v for k, v in full.items() if fields is None or k in fields}
    shown["links"] = views.links(base, "inspection_rules", rule.uuid)
    return shown


def _fields(request: web.Request, value: str | None) -> list[str] | None:
    if value is None:
        return None
    return schemas.parse_fields(value, RULE_FIELDS, {}, request[API_VERSION], always=("uuid",))


@ROUTES.get("/v1/inspection_rules")
async def list_rules(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    params = _query(request, _LIST_PARAMS)
    detail = schemas.parse_bool("detail", params.get("detail"))
    fields = _fields(request, params.get("fields"))
    if detail and fields is not None:
        raise BadRequest("Can not specify ?detail=True and fields in the same request.")
    shown: list[str] | tuple[str, ...] | None = fields
    if fields is None and not detail:
        shown = DEFAULT_FIELDS
    limit = schemas.parse_limit(params.get("limit"))
    rules = await ctx.run(
        ctx.store.list_inspection_rules,
        phase=params.get("phase"),
        limit=limit or MAX_LIMIT,
        marker=params.get("marker"),
        sort_key=params.get("sort_key", "id"),
        sort_dir=params.get("sort_dir", "asc"),
    )
    base = _base(request)
    body: dict[str, Any] = {"inspection_rules": [rule_view(r, base, shown) for r in rules]}
    if len(rules) == (limit or MAX_LIMIT):
        query = {k: v for k, v in params.items() if k != "marker"}
        query.setdefault("limit", str(limit or MAX_LIMIT))
        query["marker"] = rules[-1].uuid
        body["next"] = f"{base}/v1/inspection_rules?{urlencode(query)}"
    return _json(body)


@ROUTES.post("/v1/inspection_rules")
async def create_rule(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    rule = validate_rule(await _body(request))
    record = await ctx.run(ctx.store.create_inspection_rule, rule)
    base = _base(request)
    return _json(rule_view(record, base), 201,
                 Location=f"{base}/v1/inspection_rules/{record.uuid}")  # fmt: skip


@ROUTES.get("/v1/inspection_rules/{rule}")
async def get_rule(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    fields = _fields(request, _query(request, ("fields",)).get("fields"))
    record = await ctx.run(ctx.store.get_inspection_rule, request.match_info["rule"])
    return _json(rule_view(record, _base(request), fields))


@ROUTES.patch("/v1/inspection_rules/{rule}")
async def patch_rule(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    patch = await _body(request)
    record = await ctx.run(ctx.store.get_inspection_rule, request.match_info["rule"])
    patched = schemas.apply_patch(record.as_rule(), patch)
    if patched.get("uuid") != record.uuid:
        raise BadRequest("The uuid of an inspection rule cannot be changed")
    if record.sensitive and patched.get("sensitive") is not True:
        raise BadRequest("Inspection rules cannot have the sensitive flag unset.")
    rule = validate_rule(patched)
    changes = {k: v for k, v in rule.items() if k != "uuid" and v != record.as_rule().get(k)}
    if changes:
        record = await ctx.run(ctx.store.update_inspection_rule, record.uuid, changes)
    return _json(rule_view(record, _base(request)))


@ROUTES.delete("/v1/inspection_rules/{rule}")
async def delete_rule(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    await ctx.run(ctx.store.delete_inspection_rule, request.match_info["rule"])
    return web.Response(status=204)


@ROUTES.get("/v1/nodes/{node}/traits")
async def node_traits(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    traits = await ctx.run(ctx.store.get_traits, request.match_info["node"])
    return _json({"traits": traits})
