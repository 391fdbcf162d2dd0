"""/v1/inspection_rules through the live API (SQLite and PostgreSQL): CRUD, Ironic's list
shapes, sensitive rules, clear 400s; and GET /v1/nodes/{node}/traits."""

from __future__ import annotations

from typing import Any

from .conftest import LiveApi

RULE: dict[str, Any] = {
    "description": "Dell: iDRAC address from the inventory",
    "priority": 100,
    "conditions": [
        {
            "op": "contains",
            "args": {"value": "{inventory[system_vendor][manufacturer]}", "regex": "(?i)dell"},
        }
    ],  # fmt: skip
    "actions": [
        {
            "op": "set-attribute",
            "args": {"path": "/driver_info/ipmi_address", "value": "{inventory[bmc_address]}"},
        }
    ],  # fmt: skip
}


def test_create_show_list_patch_delete(api: LiveApi) -> None:
    created = api.post("/v1/inspection_rules", RULE)
    assert created.status == 201, created.raw
    rule = created.json
    uuid = rule["uuid"]
    assert created.headers["Location"].endswith(f"/v1/inspection_rules/{uuid}")
    assert rule["priority"] == 100 and rule["phase"] == "main" and rule["sensitive"] is False
    assert rule["conditions"] == RULE["conditions"] and rule["actions"] == RULE["actions"]
    assert {link["rel"] for link in rule["links"]} == {"self", "bookmark"}
    assert api.get(f"/v1/inspection_rules/{uuid}").json == rule

    listed = api.get("/v1/inspection_rules").json["inspection_rules"]
    assert [set(r) for r in listed] == [{"uuid", "priority", "phase", "description", "links"}]
    detail = api.get("/v1/inspection_rules?detail=true").json["inspection_rules"]
    assert detail[0]["actions"] == RULE["actions"]
    only = api.get("/v1/inspection_rules?fields=priority").json["inspection_rules"]
    assert set(only[0]) == {"uuid", "priority", "links"}
    assert api.get(f"/v1/inspection_rules/{uuid}?fields=actions").json["actions"]

    patched = api.patch(f"/v1/inspection_rules/{uuid}", [
        {"op": "replace", "path": "/priority", "value": 5},
        {"op": "add", "path": "/actions/-", "value": {"op": "add-trait",
                                                      "args": {"name": "CUSTOM_DELL"}}},
    ])  # fmt: skip
    assert patched.status == 200, patched.raw
    assert patched.json["priority"] == 5 and len(patched.json["actions"]) == 2
    assert patched.json["updated_at"] is not None
    bad = api.patch(f"/v1/inspection_rules/{uuid}",
                    [{"op": "replace", "path": "/actions/1/op", "value": "reboot"}])  # fmt: skip
    assert bad.status == 400 and "unsupported action 'reboot'" in bad.fault
    moved = api.patch(f"/v1/inspection_rules/{uuid}",
                      [{"op": "replace", "path": "/uuid", "value": RULE_UUID}])  # fmt: skip
    assert moved.status == 400 and "uuid" in moved.fault
    assert api.get(f"/v1/inspection_rules/{uuid}").json["priority"] == 5  # refused: unchanged

    assert api.delete(f"/v1/inspection_rules/{uuid}").status == 204
    assert api.get(f"/v1/inspection_rules/{uuid}").status == 404
    assert api.delete(f"/v1/inspection_rules/{uuid}").status == 404
    assert api.get("/v1/inspection_rules").json == {"inspection_rules": []}


RULE_UUID = "3d5f2a9c-3c1e-4a57-8e2b-6f1c0b7d9e42"


def test_uuid_sensitive_paging_and_errors(api: LiveApi) -> None:
    secret = {**RULE, "uuid": RULE_UUID, "sensitive": True}
    assert api.post("/v1/inspection_rules", secret).status == 201
    again = api.post("/v1/inspection_rules", secret)
    assert again.status == 409 and RULE_UUID in again.fault
    shown = api.get(f"/v1/inspection_rules/{RULE_UUID}").json
    assert shown["sensitive"] is True
    assert shown["conditions"] is None and shown["actions"] is None  # may hold passwords
    unset = api.patch(f"/v1/inspection_rules/{RULE_UUID}",
                      [{"op": "replace", "path": "/sensitive", "value": False}])  # fmt: skip
    assert unset.status == 400 and "sensitive flag unset" in unset.fault

    for priority in (1, 2, 3):
        assert api.post("/v1/inspection_rules", {**RULE, "priority": priority}).status == 201
    page = api.get("/v1/inspection_rules?limit=2&sort_key=priority").json
    assert [r["priority"] for r in page["inspection_rules"]] == [1, 2]
    rest = api.get(page["next"].split(f":{api.port}", 1)[1]).json
    assert [r["priority"] for r in rest["inspection_rules"]] == [3, 100]

    for body, message in [
        ({"actions": [{"op": "api-call", "args": {"url": "http://x"}}]}, "no outgoing HTTP"),
        ({"actions": [{"op": "log", "args": {"message": "x"}}]}, "unexpected argument(s)"),
        (
            {"actions": RULE["actions"], "conditions": [{"op": "gte", "args": {}}]},
            "unsupported condition 'gte'",
        ),
        ({"actions": RULE["actions"], "priority": 10000}, "between 0 and 9999"),
        ({"conditions": RULE["conditions"]}, "actions (a non-empty list) is required"),
        ([RULE], "must be a JSON object"),
    ]:
        reply = api.post("/v1/inspection_rules", body)
        assert reply.status == 400, (body, reply.raw)
        assert message in reply.fault
    assert api.post("/v1/inspection_rules", raw=b"{nope").status == 400
    assert api.get("/v1/inspection_rules?bogus=1").status == 400
    assert api.get("/v1/inspection_rules?sort_key=actions").status == 400
    assert api.get("/v1/inspection_rules?detail=true&fields=uuid").status == 400
    assert api.get("/v1/inspection_rules/not-a-uuid").status == 404
    assert len(api.get("/v1/inspection_rules").json["inspection_rules"]) == 4  # nothing added


def test_node_traits(api: LiveApi) -> None:
    node = api.post("/v1/nodes", {"driver": "fake-hardware", "name": "n1"}).json
    assert api.get("/v1/nodes/n1/traits").json == {"traits": []}
    api.store.set_traits(node["uuid"], ["CUSTOM_X"])
    assert api.get(f"/v1/nodes/{node['uuid']}/traits").json == {"traits": ["CUSTOM_X"]}
    assert api.get("/v1/nodes/nope/traits").status == 404
