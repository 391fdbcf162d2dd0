"""Provision verbs, power, boot device, maintenance, validate, history and inventory over HTTP."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pxeforge.config import Settings
from pxeforge.drivers.base import BootDevice, BootSetting, PowerState

from .conftest import LiveApi

KICKSTART = {"deploy_interface": "kickstart", "kernel": "k", "ramdisk": "r"}
"""instance_info of an installer deploy: needs no image and no agent ramdisk."""


def new_node(api: LiveApi, **fields: Any) -> str:
    """A fake-hardware node; automated cleaning off (no agent ramdisk in these tests)."""
    reply = api.post("/v1/nodes", {"driver": "fake-hardware", "automated_clean": False, **fields})
    assert reply.status == 201, reply.raw
    uuid: str = reply.json["uuid"]
    return uuid


def verb(api: LiveApi, uuid: str, target: str, **body: Any) -> dict[str, Any]:
    reply = api.put(f"/v1/nodes/{uuid}/states/provision", {"target": target, **body})
    assert reply.status == 202, reply.raw
    assert reply.raw == b""
    api.wait_idle()
    return api.node(uuid)


def events(api: LiveApi, uuid: str) -> list[str]:
    return [e["event"] for e in api.get(f"/v1/nodes/{uuid}/history").json["history"]]


def test_full_lifecycle(api: LiveApi) -> None:
    uuid = new_node(api, driver_info={"fake_id": "m1"}, instance_info=KICKSTART)
    node = verb(api, uuid, "manage")
    assert (node["provision_state"], node["power_state"]) == ("manageable", "power off")
    node = verb(api, uuid, "provide")
    assert node["provision_state"] == "available" and node["target_provision_state"] is None
    node = verb(api, uuid, "deploy")
    assert node["provision_state"] == "wait call-back"
    assert node["target_provision_state"] == "active" and node["power_state"] == "power on"
    machine = api.fake.machines["m1"]
    assert machine.boot == BootSetting(BootDevice.PXE, False) and machine.boots == 1
    node = verb(api, uuid, "undeploy")
    assert node["provision_state"] == "available" and node["power_state"] == "power off"
    history = events(api, uuid)
    for step in (
        '"enroll" -> "verifying" on "manage"',
        '"verifying" -> "manageable" on "done"',
        '"manageable" -> "cleaning" on "provide"',
        '"cleaning" -> "available" on "done"',
        '"available" -> "deploying" on "deploy"',
        '"deploying" -> "wait call-back" on "wait"',
        '"wait call-back" -> "deleting" on "delete"',
        '"deleting" -> "cleaning" on "clean"',
    ):
        assert step in history, (step, history)


def test_bad_credentials_leave_the_node_in_enroll(api: LiveApi) -> None:
    uuid = new_node(api, driver_info={"fake_fail": "auth"})
    node = verb(api, uuid, "manage")
    assert node["provision_state"] == "enroll"
    assert node["last_error"].startswith(f"Failed to get power state for node {uuid}")
    assert "authentication failed" in node["last_error"]
    history = api.get(f"/v1/nodes/{uuid}/history?detail=true").json["history"]
    assert history[-1]["severity"] == "ERROR" and history[-1]["event_type"] == "transition"
    # fixed credentials: manage again clears the error
    api.patch(f"/v1/nodes/{uuid}", [{"op": "remove", "path": "/driver_info/fake_fail"}])
    node = verb(api, uuid, "manage")
    assert node["provision_state"] == "manageable" and node["last_error"] is None


def test_invalid_verbs(api: LiveApi) -> None:
    uuid = new_node(api)
    reply = api.put(f"/v1/nodes/{uuid}/states/provision", {"target": "deploy"})
    assert reply.status == 400
    assert reply.fault == (
        f'The requested action "deploy" can not be performed on node "{uuid}" while it is in '
        'state "enroll". Allowed in this state: "manage".'
    )
    assert api.put(f"/v1/nodes/{uuid}/states/provision", {"target": "fly"}).status == 400
    assert api.put(f"/v1/nodes/{uuid}/states/provision", {"target": 1}).status == 400
    reply = api.put(f"/v1/nodes/{uuid}/states/provision", {"target": "manage", "x": 1})
    assert reply.status == 400 and "'x'" in reply.fault
    reply = api.put(f"/v1/nodes/{uuid}/states/provision", raw=b"{oops")
    assert reply.status == 400
    assert api.node(uuid)["provision_state"] == "enroll"
    verb(api, uuid, "manage")
    reply = api.put(f"/v1/nodes/{uuid}/states/provision", {"target": "clean"})
    assert reply.status == 400 and "clean_steps" in reply.fault
    assert api.node(uuid)["provision_state"] == "manageable"


def test_inspect_waits_for_the_agent_and_abort(api: LiveApi) -> None:
    uuid = new_node(api)
    verb(api, uuid, "manage")
    node = verb(api, uuid, "inspect")
    assert node["provision_state"] == "inspect wait"
    assert node["inspection_started_at"] is not None
    node = verb(api, uuid, "abort")
    assert node["provision_state"] == "inspect failed"
    assert "aborted" in node["last_error"]
    node = verb(api, uuid, "manage")
    assert node["provision_state"] == "manageable"


def test_maintenance_blocks_provisioning(api: LiveApi) -> None:
    uuid = new_node(api)
    verb(api, uuid, "manage")
    assert api.put(f"/v1/nodes/{uuid}/maintenance", {"reason": "disk swap"}).status == 202
    node = api.node(uuid)
    assert node["maintenance"] is True and node["maintenance_reason"] == "disk swap"
    reply = api.put(f"/v1/nodes/{uuid}/states/provision", {"target": "provide"})
    assert reply.status == 400 and "maintenance" in reply.fault
    assert api.get("/v1/nodes?maintenance=true").json["nodes"][0]["uuid"] == uuid
    assert api.delete(f"/v1/nodes/{uuid}/maintenance").status == 202
    node = api.node(uuid)
    assert node["maintenance"] is False and node["maintenance_reason"] is None
    assert verb(api, uuid, "provide")["provision_state"] == "available"
    reply = api.put(f"/v1/nodes/{uuid}/maintenance", {"reason": 5})
    assert reply.status == 400


def test_power(api: LiveApi) -> None:
    uuid = new_node(api, driver_info={"fake_id": "p"})
    reply = api.put(f"/v1/nodes/{uuid}/states/power", {"target": "power on"})
    assert reply.status == 202
    api.wait_idle()
    node = api.node(uuid)
    assert node["power_state"] == "power on" and node["target_power_state"] is None
    reply = api.put(f"/v1/nodes/{uuid}/states/power", {"target": "rebooting", "timeout": 30})
    assert reply.status == 202
    api.wait_idle()
    assert api.fake.machines["p"].boots == 2
    api.put(f"/v1/nodes/{uuid}/states/power", {"target": "power off"})
    api.wait_idle()
    assert api.node(uuid)["power_state"] == "power off"
    assert api.fake.machines["p"].power is PowerState.POWER_OFF
    history = " ".join(events(api, uuid))
    assert 'to "power on"' in history and '"rebooting" asked' in history
    bad = [
        ({"target": "power sideways"}, 400),
        ({"target": "power on", "timeout": 0}, 400),
        ({"target": "power on", "timeout": "10"}, 400),
        ({"target": "power on", "colour": 1}, 400),
    ]
    for body, status in bad:
        assert api.put(f"/v1/nodes/{uuid}/states/power", body).status == status
    reply = api.put(f"/v1/nodes/{uuid}/states/power", {"target": "soft power off"}, version="1.26")
    assert reply.status == 406


def test_power_failure_sets_last_error(api: LiveApi) -> None:
    uuid = new_node(api, driver_info={"fake_fail": "unreachable"})
    assert api.put(f"/v1/nodes/{uuid}/states/power", {"target": "power on"}).status == 202
    api.wait_idle()
    node = api.node(uuid)
    assert "Failed to change power state" in node["last_error"]
    assert node["target_power_state"] is None
    assert api.get(f"/v1/nodes/{uuid}/history").json["history"][-1]["severity"] == "ERROR"


def test_power_holds_the_lock_while_it_works(sqlite_api: LiveApi) -> None:
    api = sqlite_api
    uuid = new_node(api, driver_info={"fake_id": "slow", "fake_delay": 1.0})
    assert api.put(f"/v1/nodes/{uuid}/states/power", {"target": "power on"}).status == 202
    node = api.node(uuid)
    assert node["target_power_state"] == "power on" and node["reservation"] == "test-conductor"
    reply = api.put(f"/v1/nodes/{uuid}/states/provision", {"target": "manage"})
    assert reply.status == 409 and "locked" in reply.fault
    api.wait_idle()
    node = api.node(uuid)
    assert node["reservation"] is None and node["power_state"] == "power on"


def test_boot_device_validate_and_states(api: LiveApi) -> None:
    uuid = new_node(api, driver_info={"fake_id": "b"})
    reply = api.put(
        f"/v1/nodes/{uuid}/management/boot_device", {"boot_device": "pxe", "persistent": True}
    )
    assert reply.status == 204
    got = api.get(f"/v1/nodes/{uuid}/management/boot_device").json
    assert got == {"boot_device": "pxe", "persistent": True}
    supported = api.get(f"/v1/nodes/{uuid}/management/boot_device/supported").json
    assert "pxe" in supported["supported_boot_devices"]
    reply = api.put(f"/v1/nodes/{uuid}/management/boot_device", {"boot_device": "floppy"})
    assert reply.status == 400
    result = api.get(f"/v1/nodes/{uuid}/validate").json
    assert result["power"] == {"result": True, "reason": None}
    assert result["boot"]["result"] is False and "PXE-enabled port" in result["boot"]["reason"]
    assert result["raid"] == {"result": None, "reason": "not supported"}
    api.post("/v1/ports", {"address": "52:54:00:aa:bb:01", "node_uuid": uuid})
    assert api.get(f"/v1/nodes/{uuid}/validate").json["boot"]["result"] is True
    states = api.get(f"/v1/nodes/{uuid}/states").json
    assert states["provision_state"] == "enroll" and states["console_enabled"] is False
    assert {"power_state", "target_power_state", "last_error", "provision_updated_at"} <= set(
        states
    )
    bad = new_node(api, driver_info={"fake_delay": -1})
    result = api.get(f"/v1/nodes/{bad}/validate").json
    assert result["power"]["result"] is False and "fake_delay" in result["power"]["reason"]
    reply = api.put(f"/v1/nodes/{bad}/states/power", {"target": "power on"})
    assert reply.status == 400 and "fake_delay" in reply.fault


def test_history_paging_and_events(api: LiveApi) -> None:
    uuid = new_node(api)
    verb(api, uuid, "manage")
    history = api.get(f"/v1/nodes/{uuid}/history").json["history"]
    assert set(history[0]) == {"uuid", "created_at", "severity", "event", "links"}
    page = api.get(f"/v1/nodes/{uuid}/history?limit=1").json
    assert len(page["history"]) == 1 and "next" in page
    one = api.get(f"/v1/nodes/{uuid}/history/{history[1]['uuid']}").json
    assert one["event"] == history[1]["event"] and one["conductor"] == "test-conductor"
    assert api.get(f"/v1/nodes/{uuid}/history/{uuid}").status == 404


def test_inventory(api: LiveApi) -> None:
    uuid = new_node(api)
    reply = api.get(f"/v1/nodes/{uuid}/inventory")
    assert reply.status == 404 and "inventory" in reply.fault.lower()
    api.store.save_inventory(uuid, {"cpu": {"count": 2}}, {"macs": ["52:54:00:00:00:02"]})
    assert api.get(f"/v1/nodes/{uuid}/inventory").json == {
        "inventory": {"cpu": {"count": 2}},
        "plugin_data": {"macs": ["52:54:00:00:00:02"]},
    }


def test_wait_states_time_out(tmp_path: Path) -> None:
    settings = Settings(deploy_callback_timeout=0.5, check_provision_state_interval=0.2)
    api = LiveApi(f"sqlite:///{tmp_path / 'db.sqlite'}", settings=settings).start()
    try:
        uuid = new_node(api, instance_info=KICKSTART)
        for target in ("manage", "provide", "deploy"):
            verb(api, uuid, target)
        deadline = time.monotonic() + 10
        while api.node(uuid)["provision_state"] == "wait call-back":
            assert time.monotonic() < deadline, "deploy never timed out"
            time.sleep(0.1)
        node = api.node(uuid)
        assert node["provision_state"] == "deploy failed"
        assert node["last_error"] == f"Timeout reached while waiting for callback for node {uuid}"
    finally:
        api.close()


def test_no_free_worker_is_503(tmp_path: Path) -> None:
    api = LiveApi(f"sqlite:///{tmp_path / 'db.sqlite'}", workers=1).start()
    try:
        slow = new_node(api, driver_info={"fake_id": "s", "fake_delay": 1.0})
        other = new_node(api)
        assert api.put(f"/v1/nodes/{slow}/states/power", {"target": "power on"}).status == 202
        reply = api.put(f"/v1/nodes/{other}/states/provision", {"target": "manage"})
        assert reply.status == 503 and reply.fault.startswith("Requested action cannot")
        assert api.node(other)["provision_state"] == "enroll"
        api.wait_idle()
        assert verb(api, other, "manage")["provision_state"] == "manageable"
    finally:
        api.close()
