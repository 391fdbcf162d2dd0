"""Node CRUD over HTTP on SQLite and PostgreSQL: shapes, status codes, bad input, locks."""

from __future__ import annotations

from typing import Any

from .conftest import LiveApi


def create(api: LiveApi, **fields: Any) -> dict[str, Any]:
    reply = api.post("/v1/nodes", {"driver": "fake-hardware", **fields})
    assert reply.status == 201, reply.raw
    node: dict[str, Any] = reply.json
    return node


def test_create_show_and_list(api: LiveApi) -> None:
    reply = api.post(
        "/v1/nodes",
        {
            "driver": "fake-hardware",
            "name": "node-1",
            "driver_info": {"fake_id": "a"},
            "properties": {"cpus": 4},
            "resource_class": "baremetal",
            "network_interface": "noop",
            "extra": {"rack": 7},
        },
    )
    assert reply.status == 201
    node = reply.json
    assert reply.headers["Location"].endswith(f"/v1/nodes/{node['uuid']}")
    assert node["provision_state"] == "enroll" and node["target_provision_state"] is None
    assert node["resource_class"] == "baremetal" and node["network_interface"] == "noop"
    assert node["properties"] == {"cpus": 4} and node["maintenance"] is False
    assert node["traits"] == [] and node["conductor"] == "test-conductor"
    assert {link["rel"] for link in node["links"]} == {"self", "bookmark"}
    assert node["ports"][0]["href"].endswith(f"/v1/nodes/{node['uuid']}/ports")
    assert api.node("node-1") == api.node(node["uuid"])

    listed = api.get("/v1/nodes").json["nodes"]
    assert [set(n) for n in listed] == [
        {"uuid", "name", "instance_uuid", "power_state", "provision_state", "maintenance", "links"}
    ]
    detail = api.get("/v1/nodes/detail").json["nodes"]
    assert detail[0]["driver_info"] == {"fake_id": "a"}
    assert api.get("/v1/nodes?detail=true").json["nodes"][0]["extra"] == {"rack": 7}
    some = api.get("/v1/nodes?fields=uuid,resource_class,traits").json["nodes"]
    assert some == [
        {
            "uuid": node["uuid"],
            "resource_class": "baremetal",
            "traits": [],
            "links": node["links"],
        }
    ]
    one = api.get(f"/v1/nodes/{node['uuid']}?fields=name,driver").json
    assert set(one) == {"name", "driver", "links"}


def test_filters_sorting_and_paging(api: LiveApi) -> None:
    uuids = [create(api, name=f"n{i}", resource_class="gold" if i % 2 else "silver")["uuid"]
             for i in range(5)]  # fmt: skip
    assert {n["uuid"] for n in api.get("/v1/nodes?resource_class=gold").json["nodes"]} == {
        uuids[1],
        uuids[3],
    }
    assert api.get("/v1/nodes?provision_state=enroll").json["nodes"].__len__() == 5
    assert api.get("/v1/nodes?provision_state=active").json["nodes"] == []
    assert api.get("/v1/nodes?maintenance=false&driver=fake-hardware").status == 200
    names = [n["name"] for n in api.get("/v1/nodes?sort_key=name&sort_dir=desc").json["nodes"]]
    assert names == ["n4", "n3", "n2", "n1", "n0"]
    page = api.get("/v1/nodes?limit=2").json
    assert [n["uuid"] for n in page["nodes"]] == uuids[:2]
    assert "limit=2" in page["next"] and f"marker={uuids[1]}" in page["next"]
    seen = [n["uuid"] for n in page["nodes"]]
    while "next" in page:
        path = page["next"].split(f":{api.port}", 1)[1]
        page = api.get(path).json
        seen += [n["uuid"] for n in page["nodes"]]
    assert seen == uuids
    # bad queries: 400 with the reason
    assert "not valid" in api.get("/v1/nodes?provision_state=bogus").fault
    assert "sort" in api.get("/v1/nodes?sort_key=driver_info").fault
    assert api.get("/v1/nodes?sort_dir=up").status == 400
    assert "Limit must be positive" in api.get("/v1/nodes?limit=0").fault
    assert "Unknown query parameter" in api.get("/v1/nodes?colour=red").fault
    assert api.get("/v1/nodes?fields=bogus").status == 400
    assert api.get("/v1/nodes?fields=uuid&detail=true").status == 400
    assert api.get("/v1/nodes?maintenance=perhaps").status == 400


def test_bad_input_writes_nothing(api: LiveApi) -> None:
    cases: list[tuple[bytes | None, Any, str]] = [
        (b"{not json", None, "Malformed JSON"),
        (b"", None, "empty"),
        (None, [1, 2], "must be a JSON object"),
        (None, {"driver": "fake-hardware", "colour": "red"}, "'colour' was unexpected"),
        (None, {"driver": "fake-hardware", "provision_state": "active"}, "read-only"),
        (None, {"driver_info": {}}, "Mandatory field(s) missing: driver"),
        (None, {"driver": "fake-hardware", "driver_info": "x"}, "Expected 'object'"),
        (None, {"driver": "fake-hardware", "properties": []}, "Expected 'object'"),
        (None, {"driver": 42}, "Expected 'string'"),
        (None, {"driver": "fake-hardware", "retired": "yes"}, "Expected 'boolean'"),
        (None, {"driver": "fake-hardware", "uuid": "nope"}, "Expected a UUID"),
        (None, {"driver": "fake-hardware", "name": "a b"}, "node name"),
        (
            None,
            {"driver": "fake-hardware", "name": "1be26c0b-03f2-4d2e-ae87-c02d7f33c123"},
            "node name",
        ),
        (None, {"driver": "no-such-driver"}, "no-such-driver"),
    ]
    for raw, body, message in cases:
        reply = api.post("/v1/nodes", body, raw=raw)
        assert reply.status == 400, (body, reply.raw)
        assert message in reply.fault, (message, reply.fault)
    assert api.get("/v1/nodes").json["nodes"] == []


def test_conflicts(api: LiveApi) -> None:
    node = create(api, name="dup")
    reply = api.post("/v1/nodes", {"driver": "fake-hardware", "name": "dup"})
    assert reply.status == 409 and "dup already exists" in reply.fault
    reply = api.post("/v1/nodes", {"driver": "fake-hardware", "uuid": node["uuid"]})
    assert reply.status == 409
    missing = api.get("/v1/nodes/nope")
    assert missing.status == 404 and missing.fault == "Node nope could not be found."


def test_patch(api: LiveApi) -> None:
    node = create(api, name="p1", extra={"a": 1})
    uuid = node["uuid"]
    reply = api.patch(
        f"/v1/nodes/{uuid}",
        [
            {"op": "replace", "path": "/name", "value": "p2"},
            {"op": "add", "path": "/extra/b", "value": [1, 2]},
            {"op": "add", "path": "/extra/b/-", "value": 3},
            {"op": "remove", "path": "/extra/a"},
            {"op": "add", "path": "/driver_info/fake~1id", "value": "x"},
            {"op": "replace", "path": "/description", "value": "rack 4"},
        ],
    )
    assert reply.status == 200, reply.raw
    patched = reply.json
    assert patched["name"] == "p2" and patched["extra"] == {"b": [1, 2, 3]}
    assert patched["driver_info"] == {"fake/id": "x"} and patched["description"] == "rack 4"
    reply = api.patch(f"/v1/nodes/{uuid}", [{"op": "remove", "path": "/description"}])
    assert reply.json["description"] is None
    reply = api.patch(f"/v1/nodes/{uuid}", [{"op": "remove", "path": "/extra"}])
    assert reply.json["extra"] == {}

    before = api.node(uuid)
    bad: list[tuple[Any, str]] = [
        ([{"op": "replace", "path": "/provision_state", "value": "active"}],
         "'/provision_state' is an internal attribute and can not be updated"),
        ([{"op": "replace", "path": "/driver_internal_info", "value": {}}],
         "'/driver_internal_info' is an internal attribute"),
        ([{"op": "replace", "path": "/uuid", "value": before["uuid"]}], "'/uuid' is an internal"),
        ([{"op": "add", "path": "/colour", "value": 1}], "Adding a new attribute (/colour)"),
        ([{"op": "remove", "path": "/driver"}], "'/driver' is a mandatory attribute"),
        ([{"op": "move", "path": "/name", "from": "/extra"}], "unexpected key"),
        ([{"op": "copy", "path": "/name"}], "only 'add', 'replace' and 'remove'"),
        ([{"op": "replace", "path": "/name"}], "needs a 'value'"),
        ([{"op": "remove", "path": "/extra/nothing"}], "does not exist"),
        ({"op": "replace"}, "non-empty JSON array"),
        ([{"op": "replace", "path": "name", "value": "x"}], "JSON Pointer"),
        ([{"op": "replace", "path": "/properties", "value": "x"}], "Expected 'object'"),
        # one good operation and one bad: nothing is written
        ([{"op": "replace", "path": "/name", "value": "p3"},
          {"op": "replace", "path": "/reservation", "value": "me"}], "'/reservation'"),
        ([{"op": "replace", "path": "/driver", "value": "nope"}], "nope"),
    ]  # fmt: skip
    for patch, message in bad:
        reply = api.patch(f"/v1/nodes/{uuid}", patch)
        assert reply.status == 400, (patch, reply.raw)
        assert message in reply.fault, (message, reply.fault)
    malformed = api.patch(f"/v1/nodes/{uuid}", raw=b"[{")
    assert malformed.status == 400 and "Malformed JSON" in malformed.fault
    after = api.node(uuid)
    assert {k: v for k, v in after.items() if k != "updated_at"} == {
        k: v for k, v in before.items() if k != "updated_at"
    }
    # maintenance may be patched (the old way); unsetting it clears the reason
    assert api.patch(f"/v1/nodes/{uuid}", [{"op": "replace", "path": "/maintenance",
                                            "value": True}]).json["maintenance"]  # fmt: skip


def test_patch_and_delete_refused_while_locked(api: LiveApi) -> None:
    node = create(api)
    assert api.store.acquire(node["uuid"], "someone-else")
    reply = api.patch(f"/v1/nodes/{node['uuid']}", [{"op": "add", "path": "/extra/x",
                                                     "value": 1}])  # fmt: skip
    assert reply.status == 409 and "locked by host someone-else" in reply.fault
    assert api.delete(f"/v1/nodes/{node['uuid']}").status == 409
    assert api.put(f"/v1/nodes/{node['uuid']}/states/provision", {"target": "manage"}).status == 409
    assert api.put(f"/v1/nodes/{node['uuid']}/maintenance", {"reason": "x"}).status == 409
    api.store.release(node["uuid"], "someone-else")
    assert api.node(node["uuid"])["extra"] == {}
    assert api.delete(f"/v1/nodes/{node['uuid']}").status == 204
    assert api.get(f"/v1/nodes/{node['uuid']}").status == 404


def test_delete_only_in_allowed_states(api: LiveApi) -> None:
    node = create(api, automated_clean=False)  # no agent ramdisk to clean with here
    uuid = node["uuid"]
    for verb in ("manage", "provide"):
        assert api.put(f"/v1/nodes/{uuid}/states/provision", {"target": verb}).status == 202
        api.wait_idle()
    assert api.node(uuid)["provision_state"] == "available"
    reply = api.delete(f"/v1/nodes/{uuid}")
    assert reply.status == 409 and "Valid provision states to perform deletion" in reply.fault
    # in maintenance any state may be deleted
    assert api.put(f"/v1/nodes/{uuid}/maintenance", {"reason": "gone"}).status == 202
    assert api.delete(f"/v1/nodes/{uuid}").status == 204


def test_protected_nodes_are_not_deleted(api: LiveApi) -> None:
    node = create(api)
    api.patch(f"/v1/nodes/{node['uuid']}", [{"op": "replace", "path": "/protected",
                                             "value": True}])  # fmt: skip
    reply = api.delete(f"/v1/nodes/{node['uuid']}")
    assert reply.status == 403 and "protected" in reply.fault


def test_unknown_routes_and_methods(api: LiveApi) -> None:
    reply = api.get("/v1/chassis")
    assert reply.status == 404 and reply.fault == "The resource could not be found."
    reply = api.request("PUT", "/v1/nodes")
    assert reply.status == 405 and "not allowed" in reply.fault
