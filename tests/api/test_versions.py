"""Version documents, microversion negotiation and per-version shapes."""

from __future__ import annotations

import pytest

from pxeforge.api.versions import MAX_VERSION, Version, VersionError, negotiate

from .conftest import LiveApi


def test_negotiate() -> None:
    assert negotiate(None) == Version(1, 1)
    assert negotiate("latest") == MAX_VERSION
    assert negotiate("1.78") == Version(1, 78)
    assert negotiate("1.1", "baremetal 1.81") == Version(1, 81)
    assert negotiate("1.5", "compute 2.1") == Version(1, 5)
    for bad in ("1", "abc", "1.x", "1.2.3"):
        with pytest.raises(VersionError, match="Invalid value"):
            negotiate(bad)
    with pytest.raises(VersionError, match=r"supported version range is: \[1.1, 1.87\]"):
        negotiate("1.999")
    with pytest.raises(VersionError, match="Mutually exclusive"):
        negotiate("2.1")


def test_root_and_v1_documents(sqlite_api: LiveApi) -> None:
    root = sqlite_api.get("/", version=None)
    assert root.status == 200
    doc = root.json["default_version"]
    assert doc["id"] == "v1" and doc["min_version"] == "1.1" and doc["version"] == "1.87"
    assert root.json["versions"] == [doc]
    assert doc["links"][0]["href"] == f"http://127.0.0.1:{sqlite_api.port}/v1/"
    v1 = sqlite_api.get("/v1", version=None)
    assert v1.status == 200 and v1.json["id"] == "v1"
    assert v1.json["media_types"]["type"] == "application/vnd.openstack.ironic.v1+json"
    assert v1.json["version"]["version"] == "1.87"
    assert v1.headers["X-OpenStack-Ironic-API-Minimum-Version"] == "1.1"
    assert v1.headers["X-OpenStack-Ironic-API-Maximum-Version"] == "1.87"


def test_version_headers(sqlite_api: LiveApi) -> None:
    reply = sqlite_api.get("/v1/nodes", version="latest")
    assert reply.headers["X-OpenStack-Ironic-API-Version"] == "1.87"
    reply = sqlite_api.get("/v1/nodes", version="1.40")
    assert reply.headers["X-OpenStack-Ironic-API-Version"] == "1.40"
    reply = sqlite_api.get("/v1/nodes", version=None)
    assert reply.headers["X-OpenStack-Ironic-API-Version"] == "1.1"
    # out of range: 406 with the range in headers and message; errors carry the headers too
    reply = sqlite_api.get("/v1/nodes", version="1.200")
    assert reply.status == 406
    assert "1.200 was requested" in reply.fault
    assert reply.headers["X-OpenStack-Ironic-API-Maximum-Version"] == "1.87"
    reply = sqlite_api.get("/v1/nodes", version="one")
    assert reply.status == 406 and "Invalid value for X-OpenStack-Ironic-API-Version" in reply.fault


def test_old_versions_see_the_old_api(sqlite_api: LiveApi) -> None:
    # before 1.11 new nodes are "available"; before 1.2 "available" was shown as null
    old = sqlite_api.post("/v1/nodes", {"driver": "fake-hardware"}, version="1.10")
    assert old.status == 201 and old.json["provision_state"] == "available"
    assert "name" in old.json and "resource_class" not in old.json
    shown = sqlite_api.get(f"/v1/nodes/{old.json['uuid']}", version=None).json
    assert shown["provision_state"] is None and "name" not in shown
    new = sqlite_api.post("/v1/nodes", {"driver": "fake-hardware", "name": "n1"})
    assert new.json["provision_state"] == "enroll"
    # names address nodes from 1.5 on only
    assert sqlite_api.get("/v1/nodes/n1", version="1.4").status == 404
    assert sqlite_api.get("/v1/nodes/n1", version="1.5").status == 200
    # a field newer than the request: 406 in writes and in ?fields=
    reply = sqlite_api.post(
        "/v1/nodes", {"driver": "fake-hardware", "resource_class": "x"}, version="1.20"
    )
    assert reply.status == 406 and "1.21" in reply.fault
    assert sqlite_api.get("/v1/nodes?fields=owner", version="1.49").status == 406
    assert sqlite_api.get("/v1/nodes?fields=uuid", version="1.7").status == 406
    # verbs newer than the request: 406 (deploy/undeploy came with 1.73)
    reply = sqlite_api.put("/v1/nodes/n1/states/provision", {"target": "deploy"}, version="1.72")
    assert reply.status == 406
    # history (1.78) and inventory (1.81) do not exist for older requests
    assert sqlite_api.get("/v1/nodes/n1/history", version="1.77").status == 404
    assert sqlite_api.get("/v1/nodes/n1/inventory", version="1.80").status == 404


def test_inspect_wait_shown_as_inspecting_before_1_39(sqlite_api: LiveApi) -> None:
    uuid = sqlite_api.post("/v1/nodes", {"driver": "fake-hardware"}).json["uuid"]
    for verb in ("manage", "inspect"):
        assert sqlite_api.put(f"/v1/nodes/{uuid}/states/provision", {"target": verb}).status == 202
        sqlite_api.wait_idle()
    assert sqlite_api.node(uuid)["provision_state"] == "inspect wait"
    old = sqlite_api.get(f"/v1/nodes/{uuid}", version="1.38").json
    assert old["provision_state"] == "inspecting"
