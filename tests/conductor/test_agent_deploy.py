"""`agent_deploy`: the pure checks and plans, and `AgentFlows`' edge cases driven through the
real conductor (SQLite store, worker threads) against the real agent command server
(`pxeforge.agent.server`, in-process on loopback) with test commands that fail on purpose:
a failing clean step, a command the agent forgot, a busy agent, an unreachable agent, a bug."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pxeforge.agent.commands import Command, CommandRunner
from pxeforge.agent.errors import CleaningError
from pxeforge.agent.server import AgentServer
from pxeforge.conductor.agent_deploy import (
    ACTIONS,
    AGENT_KEYS,
    automated_clean_enabled,
    check_clean_steps,
    fresh_agent,
    image_info,
    offered_steps,
    plan_clean_steps,
)
from pxeforge.conductor.manager import Conductor
from pxeforge.config import Settings
from pxeforge.drivers.base import BootDevice, Driver, DriverInfo, UnknownDriver
from pxeforge.drivers.fake import FakeDriver
from pxeforge.inventory.errors import InvalidParameterValue
from pxeforge.inventory.records import NodeRecord
from pxeforge.inventory.store import Store

TOKEN = "a" * 128
SHA256 = "ab" * 32
INFO = {"image_source": "http://10.0.0.1:8080/images/my%20disk.raw",
        "image_os_hash_algo": "sha256", "image_os_hash_value": SHA256,
        "image_disk_format": "raw"}  # fmt: skip


def node_with(store: Store, **fields: Any) -> NodeRecord:
    return store.create_node("fake-hardware", **fields)


# ---- pure -----------------------------------------------------------------------------------


def test_image_info(tmp_path: Path) -> None:
    store = Store.connect(f"sqlite:///{tmp_path / 'db'}")
    try:
        node = node_with(store, instance_info={**INFO, "image_size": 4096})
        assert image_info(node) == {
            "id": "my_20disk.raw",
            "urls": [INFO["image_source"]],
            "disk_format": "raw",
            "os_hash_algo": "sha256",
            "os_hash_value": SHA256,
            "image_type": "whole-disk",
            "stream_raw_images": True,
            "image_size": 4096,
        }
        legacy = {k: v for k, v in INFO.items() if not k.startswith("image_os")}
        node = node_with(store, instance_info={**legacy, "image_checksum": "SHA512:" + "CD" * 64,
                                               "image_disk_format": "qcow2"})  # fmt: skip
        got = image_info(node)
        assert (got["os_hash_algo"], got["os_hash_value"]) == ("sha512", "cd" * 64)
        assert got["disk_format"] == "qcow2"
        for bad in ({"image_size": 0}, {"image_size": True}, {"image_os_hash_value": None},
                    {"image_os_hash_value": "zz" * 32}, {"image_source": "http:///x"}):  # fmt: skip
            node = node_with(store, instance_info={**INFO, **bad})
            with pytest.raises(InvalidParameterValue):
                image_info(node)
    finally:
        store.close()


STEPS = {"clean_steps": {
    "GenericHardwareManager": [
        {"step": "erase_devices", "priority": 0, "interface": "deploy"},
        {"step": "erase_devices_metadata", "priority": 99, "interface": "deploy"},
        {"step": "burn_in", "priority": 10, "interface": "deploy"},
        {"step": "tie", "priority": 10, "interface": "deploy"},
    ],
    "OtherManager": [{"step": "erase_devices", "priority": 5, "interface": "deploy"}],
}}  # fmt: skip


def test_plan_clean_steps() -> None:
    offered = offered_steps(STEPS)
    assert [s["step"] for s in offered] == [
        "erase_devices",
        "erase_devices_metadata",
        "burn_in",
        "tie",
    ]  # fmt: skip (first manager wins)
    automated = plan_clean_steps(offered, None)
    assert [s["step"] for s in automated] == ["erase_devices_metadata", "burn_in", "tie"]
    assert all(s["args"] == {} for s in automated)
    manual = plan_clean_steps(offered, [
        {"interface": "deploy", "step": "erase_devices", "args": {"passes": 1}},
        {"interface": "deploy", "step": "erase_devices_metadata"},
    ])  # fmt: skip
    assert [(s["step"], s["args"]) for s in manual] == [
        ("erase_devices", {"passes": 1}), ("erase_devices_metadata", {})
    ]  # fmt: skip
    with pytest.raises(ValueError, match="deploy.shred is not offered"):
        plan_clean_steps(offered, [{"interface": "deploy", "step": "shred"}])
    for bad in ({}, {"clean_steps": []}, {"clean_steps": {"M": [{"priority": 1}]}},
                {"clean_steps": {"M": [{"step": "x", "priority": "high"}]}}):  # fmt: skip
        with pytest.raises(ValueError):
            offered_steps(bad)
    assert check_clean_steps([{"interface": "deploy", "step": "x"}]) == [
        {"interface": "deploy", "step": "x", "args": {}}
    ]
    with pytest.raises(InvalidParameterValue):
        check_clean_steps([{"interface": "deploy", "step": "x", "args": []}])


def test_automated_clean_rule_and_fresh_agent(tmp_path: Path) -> None:
    store = Store.connect(f"sqlite:///{tmp_path / 'db'}")
    try:
        on, off = Settings(automated_clean=True), Settings(automated_clean=False)
        unset = node_with(store)
        assert automated_clean_enabled(unset, on) and not automated_clean_enabled(unset, off)
        node = store.update_node(unset.uuid, {"automated_clean": True})
        assert automated_clean_enabled(node, off)  # the node's True wins over the setting
        node = store.update_node(unset.uuid, {"automated_clean": False})
        assert not automated_clean_enabled(node, on)
    finally:
        store.close()
    internal = {k: "x" for k in AGENT_KEYS} | {"keep": 1, "clean_step": {}}
    assert fresh_agent(internal, "clean_step") == {"keep": 1}
    assert set(ACTIONS.values()) == {"start", "progress", "next", "fail"}


# ---- flows against the real agent server ------------------------------------------------------


class Drivers:
    def __init__(self) -> None:
        self.fake = FakeDriver()
        self.buggy = BuggyDriver()

    def __call__(self, name: str) -> Driver:
        if name == "fake-hardware":
            return self.fake
        if name == "buggy":
            return self.buggy
        raise UnknownDriver(name)


class BuggyDriver(FakeDriver):
    """fake-hardware whose boot-device call has a bug (not a DriverError)."""

    def set_boot_device(self, info: DriverInfo, device: BootDevice, persistent: bool) -> None:
        raise RuntimeError("bug in the driver")


class Rig:
    def __init__(self, tmp_path: Path, commands: list[Command]) -> None:
        self.store = Store.connect(f"sqlite:///{tmp_path / 'db.sqlite'}")
        kernel = tmp_path / "k"
        kernel.write_bytes(b"k")
        settings = Settings(deploy_kernel=kernel, deploy_ramdisk=kernel, agent_command_timeout=5)
        self.conductor = Conductor(self.store, Drivers(), holder="c1", settings=settings)
        self.runner = CommandRunner(commands)
        self.agent = AgentServer(self.runner, token=TOKEN, host="127.0.0.1", port=0).start()
        host, port = self.agent.address
        self.url = f"http://{host}:{port}"

    def node(self, state: str, driver: str = "fake-hardware", **internal: Any) -> str:
        record = self.store.create_node(
            driver,
            provision_state=state,
            instance_info=INFO,
            driver_internal_info={
                "agent_url": self.url,
                "agent_secret_token": TOKEN,
                **internal,
            },  # fmt: skip
        )
        return record.uuid

    def heartbeat(self, uuid: str) -> NodeRecord:
        self.conductor.agent_heartbeat(uuid)
        self.conductor.wait_idle()
        return self.store.get_node(uuid)

    def wait_idle_agent(self) -> None:
        deadline = time.monotonic() + 10
        while self.runner.busy():
            assert time.monotonic() < deadline
            time.sleep(0.02)

    def close(self) -> None:
        self.agent.close()
        self.store.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Callable[[list[Command]], Rig]]:
    rigs: list[Rig] = []

    def make(commands: list[Command]) -> Rig:
        made = Rig(tmp_path, commands)
        rigs.append(made)
        return made

    try:
        yield make
    finally:
        for made in rigs:
            made.close()


def _steps(params: dict[str, Any], progress: Callable[[str], None]) -> dict[str, Any]:
    return {"clean_steps": {"GenericHardwareManager": [
        {"step": "erase_devices_metadata", "priority": 99, "interface": "deploy"}]},
        "hardware_manager_version": {"generic_hardware_manager": "1.2"}}  # fmt: skip


def test_failed_clean_step_fails_cleaning(rig: Callable[[list[Command]], Rig]) -> None:
    go = threading.Event()

    def burning(params: dict[str, Any], progress: Callable[[str], None]) -> None:
        go.wait(10)
        raise CleaningError("/dev/vda: zeroing failed: EIO")

    r = rig([Command("clean.get_clean_steps", _steps),
             Command("clean.execute_clean_step", burning, is_async=True)])  # fmt: skip
    uuid = r.node("clean wait")
    node = r.heartbeat(uuid)  # steps planned, the first started
    assert node.provision_state == "clean wait", node.last_error
    assert node.driver_internal_info["clean_step"]["step"] == "erase_devices_metadata"
    go.set()
    r.wait_idle_agent()
    node = r.heartbeat(uuid)  # the agent's "command ended" heartbeat
    assert node.provision_state == "clean failed"
    assert node.last_error == ("Clean step deploy.erase_devices_metadata failed: CleaningError: "
                               "/dev/vda: zeroing failed: EIO")  # fmt: skip


def test_forgotten_command_fails_the_deploy(rig: Callable[[list[Command]], Rig]) -> None:
    r = rig([])
    uuid = r.node("wait call-back", agent_command={"id": "gone", "name": "prepare_image"})
    node = r.heartbeat(uuid)
    assert node.provision_state == "deploy failed"
    assert "no longer knows command prepare_image (gone)" in (node.last_error or "")


def test_busy_agent_is_asked_again(rig: Callable[[list[Command]], Rig]) -> None:
    release, hold = threading.Event(), threading.Event()

    def wait_for(event: threading.Event) -> Callable[..., None]:
        return lambda params, progress: event.wait(10) and None

    r = rig([Command("other.slow", wait_for(release), is_async=True),
             Command("standby.prepare_image", wait_for(hold), is_async=True)])  # fmt: skip
    r.runner.execute("other.slow", {})
    uuid = r.node("wait call-back")
    node = r.heartbeat(uuid)
    assert node.provision_state == "wait call-back" and node.last_error is None
    assert "agent_command" not in node.driver_internal_info
    assert any("busy" in h.event for h in r.store.list_history(uuid))
    release.set()
    r.wait_idle_agent()
    node = r.heartbeat(uuid)  # now it starts
    assert node.provision_state == "wait call-back"
    assert node.driver_internal_info["agent_command"]["name"] == "prepare_image"
    hold.set()


def test_unreachable_agent_at_a_status_check_waits(rig: Callable[[list[Command]], Rig]) -> None:
    r = rig([])
    uuid = r.node("wait call-back", agent_command={"id": "x", "name": "prepare_image"})
    r.store.update_node(uuid, {"driver_internal_info": {
        "agent_url": "http://127.0.0.1:9", "agent_secret_token": TOKEN,
        "agent_command": {"id": "x", "name": "prepare_image"}}})  # fmt: skip
    node = r.heartbeat(uuid)
    assert node.provision_state == "wait call-back" and node.last_error is None


def test_a_bug_fails_the_operation(rig: Callable[[list[Command]], Rig]) -> None:
    r = rig([Command("standby.sync", lambda p, progress: {})])
    r.runner.execute("standby.sync", {})  # any finished command: pretend it is the image
    done = r.runner.list()[0]
    uuid = r.node("wait call-back", driver="buggy",
                  agent_command={"id": done.id, "name": "prepare_image"})  # fmt: skip
    node = r.heartbeat(uuid)
    assert node.provision_state == "deploy failed" and node.reservation is None
    assert node.last_error == "deploying failed: RuntimeError: bug in the driver"


def test_no_agent_url_fails_clearly(rig: Callable[[list[Command]], Rig]) -> None:
    r = rig([])
    uuid = r.node("clean wait")
    r.store.update_node(uuid, {"driver_internal_info": {}})
    node = r.heartbeat(uuid)
    assert node.provision_state == "clean failed"
    assert "has not announced a callback_url" in (node.last_error or "")
