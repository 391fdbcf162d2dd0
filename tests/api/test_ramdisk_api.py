"""The agent's endpoints against a live API with http_basic auth (the agent sends none):
lookup, heartbeat and its token rules, continue_inspection; and the real agent
(``python -m pxeforge.agent``, a subprocess) inspecting the host for a fake-hardware node."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pxeforge.agent.inventory import collect, override_mac

from .conftest import LiveApi

MAC = "52:54:00:12:34:56"


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveApi]:
    api = LiveApi(f"sqlite:///{tmp_path / 'pxeforge.db'}", data_dir=tmp_path).start()
    try:
        yield api
    finally:
        api.close()


def _inspecting_node(api: LiveApi, mac: str = MAC) -> str:
    reply = api.post("/v1/nodes", {"driver": "fake-hardware", "name": "n1"})
    assert reply.status == 201, reply.raw
    uuid: str = reply.json["uuid"]
    assert api.post("/v1/ports", {"node_uuid": uuid, "address": mac}).status == 201
    for target in ("manage", "inspect"):
        assert api.put(f"/v1/nodes/{uuid}/states/provision", {"target": target}).status == 202
        api.wait_idle()
    assert api.node(uuid)["provision_state"] == "inspect wait"
    return uuid


def _agent(api: LiveApi, method: str, path: str, body: Any = None) -> Any:
    return api.request(method, path, body, auth=False)


def test_lookup_gives_the_token_once_and_hides_it(live: LiveApi) -> None:
    uuid = _inspecting_node(live)
    first = _agent(live, "GET", f"/v1/lookup?addresses={MAC.upper()},zz")
    assert first.status == 200, first.raw
    token = first.json["config"]["agent_token"]
    assert isinstance(token, str) and len(token) == 128
    assert first.json["node"]["uuid"] == uuid
    assert set(first.json["node"]) == {"uuid", "properties", "instance_info",
                                       "driver_internal_info"}  # fmt: skip
    assert first.json["node"]["driver_internal_info"]["agent_secret_token"] == "******"
    assert first.json["config"]["agent_token_required"] is True
    assert first.json["config"]["inspection_callback_url"].endswith("/v1/continue_inspection")
    again = _agent(live, "GET", f"/v1/lookup?addresses={MAC}&node_uuid={uuid}")
    assert again.json["config"]["agent_token"] == "******"
    # the node's own view (authenticated) never shows it either
    assert live.node(uuid)["driver_internal_info"]["agent_secret_token"] == "******"
    assert token not in live.get(f"/v1/nodes/{uuid}").raw.decode()


def test_lookup_same_404_for_unknown_and_wrong_state(live: LiveApi) -> None:
    unknown = _agent(live, "GET", "/v1/lookup?addresses=52:54:00:00:00:99")
    reply = live.post("/v1/nodes", {"driver": "fake-hardware"})
    uuid = reply.json["uuid"]
    live.post("/v1/ports", {"node_uuid": uuid, "address": MAC})
    wrong_state = _agent(live, "GET", f"/v1/lookup?addresses={MAC}")  # enroll
    assert unknown.status == wrong_state.status == 404
    assert unknown.fault == wrong_state.fault
    assert _agent(live, "GET", "/v1/lookup").status == 400
    # nothing was given out for the node in the wrong state
    assert "agent_secret_token" not in live.node(uuid)["driver_internal_info"]


def test_heartbeat_token_rules(live: LiveApi) -> None:
    uuid = _inspecting_node(live)
    token = _agent(live, "GET", f"/v1/lookup?addresses={MAC}").json["config"]["agent_token"]
    url = "http://192.0.2.10:9999"
    missing = _agent(live, "POST", f"/v1/heartbeat/{uuid}", {"callback_url": url})
    assert missing.status == 400 and "token is required" in missing.fault
    wrong = _agent(live, "POST", f"/v1/heartbeat/{uuid}",
                   {"callback_url": url, "agent_token": "x" * 128})  # fmt: skip
    assert wrong.status == 400 and "Invalid or missing agent token" in wrong.fault
    assert "agent_url" not in live.node(uuid)["driver_internal_info"]
    ok = _agent(live, "POST", f"/v1/heartbeat/{uuid}",
                {"callback_url": url, "agent_token": token, "agent_version": "9.9"})  # fmt: skip
    assert ok.status == 202, ok.raw
    internal = live.node(uuid)["driver_internal_info"]
    assert internal["agent_url"] == url
    assert internal["agent_version"] == "9.9"
    assert internal["agent_last_heartbeat"]
    moved = _agent(live, "POST", f"/v1/heartbeat/{uuid}",
                   {"callback_url": "http://192.0.2.11:9999", "agent_token": token})  # fmt: skip
    assert moved.status == 400 and "callback_url" in moved.fault
    bad_url = _agent(live, "POST", f"/v1/heartbeat/{uuid}",
                     {"callback_url": "ftp://x", "agent_token": token})  # fmt: skip
    assert bad_url.status == 400
    by_name = _agent(live, "POST", "/v1/heartbeat/n1", {"callback_url": url, "agent_token": token})
    assert by_name.status == 202
    nobody = _agent(live, "POST", "/v1/heartbeat/nope", {"callback_url": url, "agent_token": token})
    assert nobody.status == 404
    # other paths still need credentials
    assert _agent(live, "GET", "/v1/nodes").status == 401


def test_continue_inspection_validation_and_unknown_machine(live: LiveApi) -> None:
    for body in ({}, {"inventory": {}}, {"inventory": {"interfaces": []}},
                 {"inventory": {"interfaces": [{"name": "eth0"}]}}):  # fmt: skip
        reply = _agent(live, "POST", "/v1/continue_inspection", body)
        assert reply.status == 400, (body, reply.raw)
    unknown = {"inventory": {"interfaces": [{"mac_address": "52:54:00:00:00:77"}]}}
    assert _agent(live, "POST", "/v1/continue_inspection", unknown).status == 404


def test_continue_inspection_makes_the_node_manageable(live: LiveApi) -> None:
    uuid = _inspecting_node(live)
    inventory = override_mac(collect("/"), MAC)
    reply = _agent(live, "POST", "/v1/continue_inspection", {"inventory": inventory, "x": 1})
    assert reply.status == 202, reply.raw
    assert reply.json["node"]["uuid"] == uuid
    live.wait_idle()
    node = live.node(uuid)
    assert node["provision_state"] == "manageable"
    assert node["inspection_finished_at"] is not None
    assert node["power_state"] == "power off"
    assert node["properties"]["cpus"] == inventory["cpu"]["count"]
    assert node["properties"]["memory_mb"] == inventory["memory"]["physical_mb"]
    assert node["properties"]["cpu_arch"] == inventory["cpu"]["architecture"]
    assert "agent_secret_token" not in node["driver_internal_info"]
    stored = live.get(f"/v1/nodes/{uuid}/inventory")
    assert stored.status == 200
    assert stored.json["inventory"] == inventory
    assert stored.json["plugin_data"]["x"] == 1
    assert MAC in stored.json["plugin_data"]["macs"]
    # a second report is not accepted: the node no longer waits for one
    assert _agent(live, "POST", "/v1/continue_inspection", {"inventory": inventory}).status == 404


def test_inspection_creates_the_boot_nic_port(live: LiveApi) -> None:
    uuid = _inspecting_node(live)
    other = "52:54:00:ab:cd:ef"
    inventory = {
        "interfaces": [{"name": "eth0", "mac_address": MAC}, {"name": "eth1",
                                                              "mac_address": other}],
        "boot": {"pxe_interface": "01-52-54-00-ab-cd-ef"},
        "cpu": {"count": 4, "architecture": "x86_64"},
        "memory": {"total": 2 * 1024**3, "physical_mb": 2048},
        "disks": [{"name": "/dev/vda", "size": 20 * 1024**3},
                  {"name": "/dev/vdb", "size": 1024**3}],
    }  # fmt: skip
    assert _agent(live, "POST", "/v1/continue_inspection", {"inventory": inventory}).status == 202
    live.wait_idle()
    node = live.node(uuid)
    assert node["properties"] == {"cpus": 4, "cpu_arch": "x86_64", "memory_mb": 2048,
                                  "local_gb": 19}  # fmt: skip
    ports = live.get(f"/v1/nodes/{uuid}/ports").json["ports"]
    assert sorted(p["address"] for p in ports) == sorted([MAC, other])


def test_the_agent_inspects_the_host(live: LiveApi, tmp_path: Path) -> None:
    uuid = _inspecting_node(live)
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(
        f"BOOT_IMAGE=vmlinuz ipa-api-url=http://127.0.0.1:{live.port} "
        f"BOOTIF=01-{MAC.replace(':', '-')} quiet\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pxeforge.agent", "--cmdline", str(cmdline), "--mac", MAC,
         "--callback-url", "http://127.0.0.1:9999", "--lookup-attempts", "3",
         "--lookup-interval", "0.5"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    live.wait_idle()
    node = live.node(uuid)
    assert node["provision_state"] == "manageable", node["last_error"]
    assert node["properties"]["cpus"] == __import__("os").cpu_count()
    assert node["properties"]["memory_mb"] > 0 and node["properties"]["local_gb"] >= 0
    stored = live.get(f"/v1/nodes/{uuid}/inventory").json["inventory"]
    assert MAC in [i["mac_address"] for i in stored["interfaces"]]
    assert stored["boot"]["pxe_interface"] == MAC
    history = [e["event"] for e in live.get(f"/v1/nodes/{uuid}/history").json["history"]]
    assert any("Inventory received" in e for e in history)
    # the agent's token was used (heartbeat recorded) and is forgotten after inspection
    assert "agent_secret_token" not in node["driver_internal_info"]
    # the token was handed out once: a second lookup of a node back in inspection sees ******
    assert live.put(f"/v1/nodes/{uuid}/states/provision", {"target": "inspect"}).status == 202
    live.wait_idle()
    first = _agent(live, "GET", f"/v1/lookup?addresses={MAC}").json["config"]["agent_token"]
    assert len(first) == 128
    assert _agent(live, "GET", f"/v1/lookup?addresses={MAC}").json["config"]["agent_token"] == (
        "******"
    )
