"""The conductor without HTTP: start-up recovery, periodic tasks, driver failures and notes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pxeforge.conductor.manager import Conductor, NoFreeWorker
from pxeforge.config import Settings
from pxeforge.drivers.base import Driver, UnknownDriver
from pxeforge.drivers.fake import FakeDriver
from pxeforge.drivers.manual import ManualDriver
from pxeforge.inventory.errors import InvalidTransition, NodeLocked
from pxeforge.inventory.store import Store


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    else:
        url = request.getfixturevalue("pg_url")
    s = Store.connect(url)
    try:
        yield s
    finally:
        s.close()


class Drivers:
    def __init__(self) -> None:
        self.fake = FakeDriver()
        self.manual = ManualDriver()

    def __call__(self, name: str) -> Driver:
        if name == "fake-hardware":
            return self.fake
        if name == "manual-management":
            return self.manual
        raise UnknownDriver(name)


KICKSTART = {"deploy_interface": "kickstart", "kernel": "k", "ramdisk": "r"}
"""instance_info of an installer deploy: needs no image and no agent ramdisk."""


def conductor(store: Store, **settings: float) -> Conductor:
    return Conductor(store, Drivers(), holder="c1", settings=Settings(**settings))  # type: ignore[arg-type]


def test_driver_failure_during_work_fails_the_step(store: Store) -> None:
    c = conductor(store)
    node = store.create_node("fake-hardware", provision_state="available", instance_info=KICKSTART)
    store.update_node(node.uuid, {"driver_info": {"fake_fail": "BMC on fire"}})
    after = c.provision_sync(node.uuid, "deploy")
    assert after.provision_state == "deploying"
    c.wait_idle()
    failed = store.get_node(node.uuid)
    assert failed.provision_state == "deploy failed" and failed.reservation is None
    assert failed.last_error is not None and "BMC on fire" in failed.last_error
    assert failed.target_provision_state == "active"  # Ironic keeps the target in deploy failed
    assert store.list_history(node.uuid)[-1].severity == "ERROR"


def test_refusals_happen_before_anything_moves(store: Store) -> None:
    c = conductor(store)
    node = store.create_node("fake-hardware")
    with pytest.raises(InvalidTransition) as info:
        c.provision_sync(node.uuid, "provide")
    assert info.value.allowed == ("manage",)
    store.create_node("nonexistent-driver", name="ghost")
    with pytest.raises(UnknownDriver):
        c.provision_sync("ghost", "manage")
    assert store.acquire(node.uuid, "other")
    with pytest.raises(NodeLocked):
        c.provision_sync(node.uuid, "manage")
    store.release(node.uuid, "other")
    assert store.get_node(node.uuid).provision_state == "enroll"
    assert store.get_node("ghost").provision_state == "enroll"


def test_workers_are_bounded(store: Store) -> None:
    c = Conductor(store, Drivers(), holder="c1", workers=1)
    slow = store.create_node("fake-hardware", driver_info={"fake_id": "s", "fake_delay": 0.5})
    other = store.create_node("fake-hardware")
    c.set_power_state_sync(slow.uuid, "power on")
    with pytest.raises(NoFreeWorker):
        c.provision_sync(other.uuid, "manage")
    c.wait_idle()
    assert c.provision_sync(other.uuid, "manage").provision_state == "verifying"
    c.wait_idle()


def test_manual_management_notes_go_to_history(store: Store) -> None:
    c = conductor(store)
    node = store.create_node("manual-management", provision_state="available",
                             instance_info=KICKSTART)  # fmt: skip
    c.provision_sync(node.uuid, "deploy")
    c.wait_idle()
    assert store.get_node(node.uuid).provision_state == "wait call-back"
    events = [h.event for h in store.list_history(node.uuid)]
    assert any("please make the machine boot from the network" in e for e in events)
    assert any("please power on the machine" in e for e in events)


def test_start_recovers_and_heartbeats(store: Store) -> None:
    stuck = store.create_node("fake-hardware", provision_state="deploying")
    assert store.acquire(stuck.uuid, "dead-conductor")
    old = datetime.now(UTC) - timedelta(minutes=10)
    store.register_conductor("dead-conductor", now=old)
    c = conductor(store, heartbeat_interval=0.1, check_provision_state_interval=0.1)

    async def main() -> None:
        recovered = await c.start()
        assert [r.uuid for r in recovered] == [stuck.uuid]
        await asyncio.sleep(0.4)
        assert "c1" in store.live_conductors()
        # a node locked by c1 at stop is released (and c1 goes offline)
        waiting = store.create_node("fake-hardware")
        assert store.acquire(waiting.uuid, "c1")
        await c.stop()
        assert store.get_node(waiting.uuid).reservation is None
        assert "c1" not in store.live_conductors()

    asyncio.run(main())
    node = store.get_node(stuck.uuid)
    assert node.provision_state == "deploy failed" and node.reservation is None
    assert node.last_error == "The deploying state can't be resumed by conductor c1. " \
        "Moving to fail state."  # fmt: skip


def test_periodic_expiry(store: Store) -> None:
    c = conductor(store, clean_callback_timeout=0.2, check_provision_state_interval=0.1)
    node = store.create_node("fake-hardware", provision_state="clean wait")
    store.update_node(node.uuid, {"driver_internal_info": {"clean_step": {"step": "erase"}}})
    # provision_updated_at is only set by transitions: make one in the past
    with store.lock(node.uuid, "c1") as locked:
        store.save_transition(
            locked.id,
            holder="c1",
            expected_state="clean wait",
            provision_state="clean wait",
            target_provision_state="available",
            now=datetime.now(UTC) - timedelta(seconds=5),
        )

    async def main() -> None:
        await c.start()
        for _ in range(50):
            if store.get_node(node.uuid).provision_state != "clean wait":
                break
            await asyncio.sleep(0.1)
        await c.stop()

    asyncio.run(main())
    failed = store.get_node(node.uuid)
    assert failed.provision_state == "clean failed"
    assert failed.last_error is not None and "Failed on step" in failed.last_error
