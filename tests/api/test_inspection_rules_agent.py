"""Inspection rules applied at ``continue_inspection`` and discovery of unknown machines, with
the real agent (``python -m pxeforge.agent``, a subprocess inspecting this host) against a
live API on SQLite."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pxeforge.config import Settings

from .conftest import LiveApi

MAC = "52:54:00:12:34:56"
UNKNOWN = "52:54:00:77:00:01"


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveApi]:
    api = LiveApi(f"sqlite:///{tmp_path / 'pxeforge.db'}", data_dir=tmp_path).start()
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def discovering(tmp_path: Path) -> Iterator[LiveApi]:
    api = LiveApi(f"sqlite:///{tmp_path / 'pxeforge.db'}", settings=Settings(discovery=True))
    api.start()
    try:
        yield api
    finally:
        api.close()


def _inspecting_node(api: LiveApi) -> str:
    reply = api.post("/v1/nodes", {"driver": "fake-hardware", "name": "n1"})
    assert reply.status == 201, reply.raw
    uuid: str = reply.json["uuid"]
    assert api.post("/v1/ports", {"node_uuid": uuid, "address": MAC}).status == 201
    for target in ("manage", "inspect"):
        assert api.put(f"/v1/nodes/{uuid}/states/provision", {"target": target}).status == 202
        api.wait_idle()
    assert api.node(uuid)["provision_state"] == "inspect wait"
    return uuid


def _rule(api: LiveApi, body: dict[str, Any]) -> str:
    reply = api.post("/v1/inspection_rules", body)
    assert reply.status == 201, reply.raw
    uuid: str = reply.json["uuid"]
    return uuid


def _run_agent(
    api: LiveApi, tmp_path: Path, mac: str, *, discovery: bool = False, attempts: int = 3
) -> subprocess.CompletedProcess[str]:
    cmdline = tmp_path / "cmdline"
    words = [f"ipa-api-url=http://127.0.0.1:{api.port}", f"BOOTIF=01-{mac.replace(':', '-')}"]
    if discovery:  # what InventoryBooter puts on an unknown machine's command line
        words.append(f"ipa-inspection-callback-url=http://127.0.0.1:{api.port}"
                     "/v1/continue_inspection")  # fmt: skip
    cmdline.write_text(" ".join(words) + "\n")
    return subprocess.run(
        [sys.executable, "-m", "pxeforge.agent", "--cmdline", str(cmdline), "--mac", mac,
         "--callback-url", "http://127.0.0.1:9999", "--lookup-attempts", str(attempts),
         "--lookup-interval", "0.2"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _history(api: LiveApi, uuid: str) -> list[str]:
    return [e["event"] for e in api.get(f"/v1/nodes/{uuid}/history").json["history"]]


def test_rules_apply_when_the_agent_posts_its_inventory(live: LiveApi, tmp_path: Path) -> None:
    uuid = _inspecting_node(live)
    first = _rule(live, {
        "priority": 50,
        "conditions": [{"op": "ge", "args": {"values": ["{inventory[cpu][count]}", 1]}},
                       {"op": "is-true", "args": {"value": "{item[has_carrier]}"},
                        "loop": "{inventory[interfaces]}", "multiple": "any"}],
        "actions": [
            {"op": "set-attribute", "args": {"path": "/driver_info/agent_cpus",
                                             "value": "{inventory[cpu][count]}"}},
            {"op": "set-attribute", "args": {"path": "/extra/arch",
                                             "value": "{inventory[cpu][architecture]}"}},
            {"op": "set-capability", "args": {"name": "boot_mode",
                                              "value": "{inventory[boot][current_boot_mode]}"}},
            {"op": "add-trait", "args": {"name": "CUSTOM_INSPECTED"}},
            {"op": "set-port-attribute", "args": {"port_id": "{inventory[boot][pxe_interface]}",
                                                  "path": "/extra/seen", "value": True}},
        ],
    })  # fmt: skip
    second = _rule(live, {
        "priority": 10,  # after the first: sees what it set
        "conditions": [{"op": "eq", "args": {"values": ["{node.extra[arch]}",
                                                        "{inventory[cpu][architecture]}"]}}],
        "actions": [{"op": "log", "args": {"msg": "{node.name} runs {node.extra[arch]}"}}],
    })  # fmt: skip
    never = _rule(live, {
        "conditions": [{"op": "is-true", "args": {"value": "{inventory[no_such_field]}"}}],
        "actions": [{"op": "add-trait", "args": {"name": "CUSTOM_NEVER"}}],
    })  # fmt: skip

    result = _run_agent(live, tmp_path, MAC)
    assert result.returncode == 0, result.stderr
    live.wait_idle()
    node = live.node(uuid)
    assert node["provision_state"] == "manageable", node["last_error"]
    assert node["properties"]["cpus"] == os.cpu_count()  # inspection's own properties too
    assert node["driver_info"]["agent_cpus"] == os.cpu_count()  # typed: an integer
    assert node["extra"]["arch"] == os.uname().machine
    boot_mode = live.get(f"/v1/nodes/{uuid}/inventory").json["inventory"]["boot"][
        "current_boot_mode"
    ]
    assert f"boot_mode:{boot_mode}" in node["properties"]["capabilities"]
    assert live.get(f"/v1/nodes/{uuid}/traits").json == {"traits": ["CUSTOM_INSPECTED"]}
    port = live.get(f"/v1/nodes/{uuid}/ports/detail").json["ports"][0]
    assert port["extra"] == {"seen": True}
    history = _history(live, uuid)
    assert f"Inspection rule {first} applied" in history
    assert f"Inspection rule {second}: n1 runs {os.uname().machine}" in history
    assert f"Inspection rule {second} applied" in history
    assert not any(never in e for e in history)
    assert history.index(f"Inspection rule {first} applied") < history.index(
        f"Inspection rule {second} applied"
    )


def test_a_fail_rule_fails_inspection_with_its_message(live: LiveApi, tmp_path: Path) -> None:
    uuid = _inspecting_node(live)
    _rule(live, {
        "conditions": [{"op": "lt", "args": {"values": ["{inventory[memory][physical_mb]}",
                                                        1024 * 1024 * 1024]}}],
        "actions": [{"op": "add-trait", "args": {"name": "CUSTOM_SMALL"}},
                    {"op": "fail", "args": {"msg": "{node.name}: less than 1 PiB of RAM "
                                                   "({inventory[memory][physical_mb]} MiB)"}}],
    })  # fmt: skip
    result = _run_agent(live, tmp_path, MAC)
    assert result.returncode == 0, result.stderr
    live.wait_idle()
    node = live.node(uuid)
    assert node["provision_state"] == "inspect failed"
    inventory = live.get(f"/v1/nodes/{uuid}/inventory").json["inventory"]  # kept for a look
    assert node["last_error"] == (
        f"n1: less than 1 PiB of RAM ({inventory['memory']['physical_mb']} MiB)"
    )
    assert "cpus" not in node["properties"]  # nothing of this inspection was applied
    assert live.get(f"/v1/nodes/{uuid}/traits").json == {"traits": []}
    assert "agent_secret_token" not in node["driver_internal_info"]
    # the operator can look, delete the rule and inspect again
    assert live.put(f"/v1/nodes/{uuid}/states/provision", {"target": "manage"}).status == 202


def test_discovery_enrolls_an_unknown_machine(discovering: LiveApi, tmp_path: Path) -> None:
    _rule(discovering, {
        "conditions": [{"op": "is-true", "args": {"value": "{plugin_data[auto_discovered]}"}}],
        "actions": [
            {"op": "set-attribute", "args": {"path": "/driver", "value": "fake-hardware"}},
            {"op": "set-attribute", "args": {"path": "/driver_info/hostname",
                                             "value": "{inventory[hostname]}"}},
            {"op": "add-trait", "args": {"name": "CUSTOM_DISCOVERED"}},
        ],
    })  # fmt: skip
    result = _run_agent(discovering, tmp_path, UNKNOWN, discovery=True, attempts=1)
    assert result.returncode == 0, result.stderr
    assert "enrolled as node" in result.stderr
    nodes = discovering.get("/v1/nodes/detail").json["nodes"]
    assert len(nodes) == 1
    node = nodes[0]
    assert node["provision_state"] == "enroll" and node["last_error"] is None
    assert node["driver"] == "fake-hardware"  # the rule's, over discovery_driver
    assert node["extra"] == {"auto_discovered": True}
    assert node["properties"]["cpus"] == os.cpu_count()
    stored = discovering.get(f"/v1/nodes/{node['uuid']}/inventory").json
    assert stored["plugin_data"]["auto_discovered"] is True
    assert node["driver_info"] == {"hostname": stored["inventory"]["hostname"]}
    ports = discovering.get(f"/v1/nodes/{node['uuid']}/ports").json["ports"]
    assert [p["address"] for p in ports] == [UNKNOWN]
    assert discovering.get(f"/v1/nodes/{node['uuid']}/traits").json["traits"] == [
        "CUSTOM_DISCOVERED"
    ]
    assert any(e.startswith("Discovered: an unknown machine") for e in
               _history(discovering, node["uuid"]))  # fmt: skip
    # the agent of a known machine no longer discovers: its lookup is answered (404 in enroll)
    again = _run_agent(discovering, tmp_path, UNKNOWN, discovery=True, attempts=1)
    assert again.returncode == 1 and len(discovering.get("/v1/nodes").json["nodes"]) == 1


def test_without_discovery_an_unknown_agent_keeps_looking(live: LiveApi, tmp_path: Path) -> None:
    result = _run_agent(live, tmp_path, UNKNOWN, discovery=True, attempts=2)
    assert result.returncode == 1
    assert "discovery is off" in result.stderr
    assert live.get("/v1/nodes").json["nodes"] == []


INVENTORY = {
    "interfaces": [{"name": "eno1", "mac_address": UNKNOWN, "ipv4_address": "10.0.3.9"}],
    "cpu": {"count": 32, "architecture": "x86_64"},
    "memory": {"physical_mb": 131072},
    "disks": [{"name": "/dev/sda", "size": 960 * 1024**3}],
    "system_vendor": {"manufacturer": "Dell Inc.", "product_name": "PowerEdge R650",
                      "serial_number": "7XK2J3"},
    "boot": {"current_boot_mode": "uefi", "pxe_interface": UNKNOWN},
    "bmc_address": "10.0.0.5",
    "bmc_v6address": None,
}  # fmt: skip


SERIAL = "{inventory[system_vendor][serial_number]}"


def test_discovery_sets_the_bmc_from_the_inventory(discovering: LiveApi) -> None:
    """Ironic's typical discovery rule: driver_info from ``bmc_address``; the name from the
    serial number."""
    _rule(discovering, {
        "conditions": [{"op": "!is-none", "args": {"value": "{inventory[bmc_address]}"}},
                       {"op": "contains", "args": {"value": "{inventory[system_vendor]"
                                                   "[manufacturer]}", "regex": "(?i)dell"}}],
        "actions": [
            {"op": "set-attribute", "args": {"path": "{item[path]}", "value": "{item[value]}"},
             "loop": [{"path": "/driver_info/ipmi_address", "value": "{inventory[bmc_address]}"},
                      {"path": "/driver_info/ipmi_username", "value": "root"},
                      {"path": "/name", "value": "dell-" + SERIAL}]},
        ],
    })  # fmt: skip
    reply = discovering.post("/v1/continue_inspection", {"inventory": INVENTORY}, auth=False)
    assert reply.status == 202, reply.raw
    uuid = reply.json["node"]["uuid"]
    assert len(reply.json["config"]["agent_token"]) == 128  # the lookup's shape, with a token
    node = discovering.node(uuid)
    assert node["name"] == "dell-7XK2J3" and node["driver"] == "manual-management"
    assert node["driver_info"] == {"ipmi_address": "10.0.0.5", "ipmi_username": "root"}
    assert node["properties"]["cpus"] == 32 and node["properties"]["local_gb"] == 959
    # posting again finds the node enrolled: no second one
    twice = discovering.post("/v1/continue_inspection", {"inventory": INVENTORY}, auth=False)
    assert twice.status == 404  # an enroll node is not being inspected: Ironic's 404
    assert len(discovering.get("/v1/nodes").json["nodes"]) == 1


def test_a_failing_rule_leaves_a_discovered_node_in_enroll(discovering: LiveApi) -> None:
    _rule(
        discovering,
        {
            "actions": [
                {"op": "set-attribute", "args": {"path": "/driver", "value": "no-such-driver"}}
            ]
        },
    )
    reply = discovering.post("/v1/continue_inspection", {"inventory": INVENTORY}, auth=False)
    assert reply.status == 202, reply.raw
    node = discovering.node(reply.json["node"]["uuid"])
    assert node["provision_state"] == "enroll"
    assert node["driver"] == "manual-management"
    assert "set driver 'no-such-driver'" in node["last_error"]
    assert [p["address"] for p in discovering.get("/v1/ports").json["ports"]] == [UNKNOWN]
