"""Ports over HTTP: creation, MAC validation, duplicates, listing, patching, deletion."""

from __future__ import annotations

from .conftest import LiveApi


def test_ports(api: LiveApi) -> None:
    node = api.post("/v1/nodes", {"driver": "fake-hardware", "name": "n"}).json["uuid"]
    other = api.post("/v1/nodes", {"driver": "fake-hardware"}).json["uuid"]
    reply = api.post(
        "/v1/ports",
        {
            "address": "52-54-00-AA-BB-01",
            "node_uuid": node,
            "local_link_connection": {"switch_id": "00:11:22:33:44:55", "port_id": "Eth1/1"},
        },
    )
    assert reply.status == 201, reply.raw
    port = reply.json
    assert port["address"] == "52:54:00:aa:bb:01" and port["node_uuid"] == node
    assert port["pxe_enabled"] is True and port["internal_info"] == {}
    assert reply.headers["Location"].endswith(f"/v1/ports/{port['uuid']}")
    second = api.post("/v1/ports", {"address": "52:54:00:aa:bb:02", "node_uuid": other}).json

    bad = [
        ({"address": "52:54:00:aa:bb", "node_uuid": node}, 400, "Expected a MAC address"),
        ({"address": "zz:54:00:aa:bb:03", "node_uuid": node}, 400, "Expected a MAC address"),
        ({"address": 5, "node_uuid": node}, 400, "Expected 'string'"),
        ({"address": "52:54:00:aa:bb:01", "node_uuid": other}, 409, "already exists"),
        ({"address": "52:54:00:aa:bb:04"}, 400, "node_uuid"),
        ({"address": "52:54:00:aa:bb:04", "node_uuid": "4c5d6e7f-0000-4000-8000-000000000000"},
         400, "could not be found"),
        ({"address": "52:54:00:aa:bb:04", "node_uuid": node, "mtu": 9000}, 400, "'mtu'"),
        ({"address": "52:54:00:aa:bb:04", "node_uuid": node, "pxe_enabled": "yes"}, 400,
         "Expected 'boolean'"),
        ({"address": "52:54:00:aa:bb:04", "node_uuid": node,
          "local_link_connection": {"vlan": "1"}}, 400, "unknown key"),
    ]  # fmt: skip
    for body, status, message in bad:
        reply = api.post("/v1/ports", body)
        assert reply.status == status, (body, reply.raw)
        assert message in reply.fault, (message, reply.fault)
    assert api.post("/v1/ports", raw=b"{").status == 400

    listed = api.get("/v1/ports").json["ports"]
    assert [set(p) for p in listed] == [{"uuid", "address", "links"}] * 2
    assert [p["uuid"] for p in api.get(f"/v1/ports?node={node}").json["ports"]] == [port["uuid"]]
    assert [p["uuid"] for p in api.get("/v1/ports?node_uuid=n").json["ports"]] == [port["uuid"]]
    by_mac = api.get("/v1/ports?address=52:54:00:aa:bb:02").json["ports"]
    assert [p["uuid"] for p in by_mac] == [second["uuid"]]
    detail = api.get(f"/v1/nodes/{node}/ports/detail").json["ports"]
    assert detail[0]["local_link_connection"]["port_id"] == "Eth1/1"
    assert api.get(f"/v1/nodes/{other}/ports").json["ports"][0]["uuid"] == second["uuid"]
    page = api.get("/v1/ports?limit=1").json
    assert len(page["ports"]) == 1 and "next" in page
    assert api.get(f"/v1/ports/{port['uuid']}?fields=address").json["address"] == port["address"]
    assert api.get("/v1/ports/not-a-uuid").status == 404

    reply = api.patch(
        f"/v1/ports/{port['uuid']}",
        [
            {"op": "replace", "path": "/pxe_enabled", "value": False},
            {"op": "replace", "path": "/node_uuid", "value": other},
            {"op": "add", "path": "/extra/slot", "value": 2},
        ],
    )
    assert reply.status == 200, reply.raw
    assert reply.json["pxe_enabled"] is False and reply.json["node_uuid"] == other
    reply = api.patch(
        f"/v1/ports/{port['uuid']}",
        [{"op": "replace", "path": "/address", "value": second["address"]}],
    )
    assert reply.status == 409
    reply = api.patch(
        f"/v1/ports/{port['uuid']}", [{"op": "replace", "path": "/address", "value": "nope"}]
    )
    assert reply.status == 400
    reply = api.patch(
        f"/v1/ports/{port['uuid']}", [{"op": "replace", "path": "/internal_info", "value": {}}]
    )
    assert reply.status == 400 and "internal attribute" in reply.fault
    assert api.get(f"/v1/ports/{port['uuid']}").json["address"] == "52:54:00:aa:bb:01"

    assert api.store.acquire(other, "busy")
    assert api.delete(f"/v1/ports/{port['uuid']}").status == 409
    api.store.release(other, "busy")
    assert api.delete(f"/v1/ports/{port['uuid']}").status == 204
    assert api.get(f"/v1/ports/{port['uuid']}").status == 404
