"""Store CRUD, paging, ports, history, locks, recovery, wait timeouts: SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pxeforge.inventory import states as st
from pxeforge.inventory.errors import (
    DuplicateName,
    InvalidMAC,
    InvalidParameterValue,
    InvalidState,
    InvalidUUID,
    MACAlreadyExists,
    NodeAlreadyExists,
    NodeLocked,
    NodeNotFound,
    NodeNotLocked,
    PortNotFound,
)
from pxeforge.inventory.lifecycle import DriverWork, process_event
from pxeforge.inventory.store import MAX_LIMIT, HistoryEntry, Recovery, Store, WaitTimeouts

T0 = datetime(2026, 8, 21, 12, 0, 0, 123456, tzinfo=UTC)


# -- nodes ------------------------------------------------------------------------------------


def test_create_and_get(store: Store) -> None:
    node = store.create_node(
        "ipmi",
        name="rack1-node7",
        driver_info={"ipmi_address": "10.0.0.7", "ipmi_password": "ü-secret"},
        properties={"cpus": 8, "memory_mb": 16384, "local_gb": 100.5, "capabilities": None},
        extra={"tags": ["a", "b"], "nested": {"x": [1, {"y": True}]}},
        now=T0,
    )
    assert node.provision_state == st.ENROLL
    assert node.target_provision_state is None and node.reservation is None
    assert node.maintenance is False and node.last_error is None
    assert node.created_at == T0 and node.created_at.tzinfo is not None
    assert node.updated_at is None and node.provision_updated_at is None
    assert uuid.UUID(node.uuid).version == 4
    for ident in (node.uuid, node.uuid.upper(), "rack1-node7", node.id):
        got = store.get_node(ident)
        assert got == node
    assert got.extra == {"tags": ["a", "b"], "nested": {"x": [1, {"y": True}]}}
    assert got.driver_info["ipmi_password"] == "ü-secret"
    assert got.properties["local_gb"] == 100.5


def test_create_conflicts(store: Store) -> None:
    fixed = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123"
    store.create_node("fake", uuid=fixed, name="dup")
    with pytest.raises(DuplicateName, match="A node with name dup already exists") as dup:
        store.create_node("fake", name="dup")
    assert dup.value.code == 409
    with pytest.raises(NodeAlreadyExists, match=f"A node with UUID {fixed} already exists"):
        store.create_node("fake", uuid=fixed)
    with pytest.raises(InvalidUUID) as bad:
        store.create_node("fake", uuid="not-a-uuid")
    assert bad.value.code == 400
    with pytest.raises(InvalidParameterValue):
        store.create_node("fake", name=str(uuid.uuid4()))
    with pytest.raises(InvalidParameterValue):
        store.create_node("fake", provision_state="sleeping")
    assert len(store.list_nodes()) == 1


def test_not_found(store: Store) -> None:
    with pytest.raises(NodeNotFound, match="Node nope could not be found.") as info:
        store.get_node("nope")
    assert info.value.code == 404
    with pytest.raises(NodeNotFound):
        store.get_node(str(uuid.uuid4()))
    with pytest.raises(NodeNotFound):
        store.get_node(12345)


def test_update_node(store: Store) -> None:
    node = store.create_node("fake", name="a")
    store.create_node("fake", name="b")
    t1 = T0 + timedelta(seconds=5)
    got = store.update_node(
        node.uuid, {"name": "a2", "extra": {"k": "v"}, "maintenance": True}, now=t1
    )
    assert (got.name, got.extra, got.maintenance, got.updated_at) == ("a2", {"k": "v"}, True, t1)
    with pytest.raises(DuplicateName):
        store.update_node(node.uuid, {"name": "b", "extra": {"lost": 1}})
    assert store.get_node(node.uuid).extra == {"k": "v"}  # nothing half-written
    for bad in ({"provision_state": st.ACTIVE}, {"reservation": "x"}, {"uuid": "u"},
                {"colour": "red"}, {"extra": ["not", "a", "dict"]}):  # fmt: skip
        with pytest.raises(InvalidParameterValue):
            store.update_node(node.uuid, bad)


def test_update_respects_the_lock(store: Store) -> None:
    node = store.create_node("fake")
    assert store.acquire(node.uuid, "c1")
    with pytest.raises(NodeLocked, match=f"Node {node.uuid} is locked by host c1") as info:
        store.update_node(node.uuid, {"extra": {"x": 1}})
    assert info.value.code == 409
    with pytest.raises(NodeLocked):
        store.update_node(node.uuid, {"extra": {"x": 1}}, holder="c2")
    assert store.update_node(node.uuid, {"extra": {"x": 1}}, holder="c1").extra == {"x": 1}


def test_delete_node(store: Store) -> None:
    node = store.create_node("fake")
    store.create_port(node.uuid, "52:54:00:00:00:01")
    store.add_history(node.uuid, "hello")
    store.delete_node(node.uuid)
    with pytest.raises(NodeNotFound):
        store.get_node(node.uuid)
    with pytest.raises(PortNotFound):
        store.get_port("52:54:00:00:00:01")
    # the MAC is free again: ports went with the node
    other = store.create_node("fake")
    store.create_port(other.uuid, "52:54:00:00:00:01")


def test_delete_refused_in_wrong_state_unless_maintenance(store: Store) -> None:
    node = store.create_node("fake", provision_state=st.AVAILABLE)
    with pytest.raises(InvalidState) as info:
        store.delete_node(node.uuid)
    assert info.value.code == 409
    assert str(info.value) == (
        f'Can not delete node "{node.uuid}" while it is in provision state "available". Valid '
        'provision states to perform deletion are: "manageable, enroll, adopt failed", or set '
        "the node into maintenance mode"
    )
    store.update_node(node.uuid, {"maintenance": True})
    store.delete_node(node.uuid)


def test_delete_respects_the_lock(store: Store) -> None:
    node = store.create_node("fake")
    store.acquire(node.uuid, "c1")
    with pytest.raises(NodeLocked):
        store.delete_node(node.uuid)
    store.delete_node(node.uuid, holder="c1")
    assert store.list_nodes() == []


# -- listing ----------------------------------------------------------------------------------


def _many(store: Store, count: int) -> list[str]:
    uuids = []
    for i in range(count):
        node = store.create_node(
            "ipmi" if i % 3 else "redfish",
            name=None if i % 4 == 0 else f"n{(i * 7) % count:02d}",
            provision_state=(st.ENROLL, st.AVAILABLE, st.ACTIVE)[i % 3],
            maintenance=i % 5 == 0,
        )
        uuids.append(node.uuid)
    return uuids


def test_list_filters(store: Store) -> None:
    uuids = _many(store, 15)
    assert [n.uuid for n in store.list_nodes()] == uuids
    assert {n.provision_state for n in store.list_nodes(provision_state=st.ACTIVE)} == {st.ACTIVE}
    both = store.list_nodes(provision_state=[st.ACTIVE, st.ENROLL])
    assert len(both) == 10
    assert all(n.maintenance for n in store.list_nodes(maintenance=True))
    assert len(store.list_nodes(maintenance=True)) == 3
    assert len(store.list_nodes(driver="redfish")) == 5
    store.acquire(uuids[3], "c1")
    assert [n.uuid for n in store.list_nodes(reserved=True)] == [uuids[3]]
    assert [n.uuid for n in store.list_nodes(reservation="c1")] == [uuids[3]]
    assert len(store.list_nodes(reserved=False)) == 14
    assert store.list_nodes(driver="redfish", provision_state=st.ENROLL, maintenance=False) == [
        n for n in store.list_nodes() if n.driver == "redfish" and not n.maintenance
    ]


@pytest.mark.parametrize(
    ("sort_key", "sort_dir"),
    [("id", "asc"), ("id", "desc"), ("name", "asc"), ("name", "desc"), ("driver", "asc"),
     ("provision_state", "desc"), ("created_at", "asc")],
)  # fmt: skip
def test_pagination_walks_everything_once(store: Store, sort_key: str, sort_dir: str) -> None:
    _many(store, 23)
    everything = store.list_nodes(sort_key=sort_key, sort_dir=sort_dir)
    assert len(everything) == 23
    pages: list[list[str]] = []
    marker = None
    while True:
        page = store.list_nodes(limit=5, marker=marker, sort_key=sort_key, sort_dir=sort_dir)
        if not page:
            break
        pages.append([n.uuid for n in page])
        marker = page[-1].uuid
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    assert sum(pages, []) == [n.uuid for n in everything]
    keys = [getattr(n, sort_key) for n in everything]
    nulls = [k for k in keys if k is None]
    values = [k for k in keys if k is not None]
    expected = sorted(values, reverse=sort_dir == "desc")
    assert values == expected
    assert keys == (nulls + values if sort_dir == "asc" else values + nulls)


def test_list_bad_parameters(store: Store) -> None:
    node = store.create_node("fake")
    with pytest.raises(InvalidParameterValue, match="invalid field for sorting"):
        store.list_nodes(sort_key="extra")
    with pytest.raises(InvalidParameterValue):
        store.list_nodes(sort_dir="sideways")
    with pytest.raises(InvalidParameterValue, match="Limit must be positive"):
        store.list_nodes(limit=0)
    with pytest.raises(NodeNotFound):
        store.list_nodes(marker=str(uuid.uuid4()))
    assert store.list_nodes(limit=MAX_LIMIT * 10) == [node]


def test_list_fields(store: Store) -> None:
    uuids = _many(store, 6)
    rows = store.list_node_fields(["uuid", "provision_state", "extra"], limit=4)
    assert [r["uuid"] for r in rows] == uuids[:4]
    assert all(set(r) == {"uuid", "provision_state", "extra"} for r in rows)
    rows = store.list_node_fields(["name"], marker=uuids[3], provision_state=st.ACTIVE)
    assert rows == [{"name": store.get_node(uuids[5]).name}]
    with pytest.raises(InvalidParameterValue, match='Field\\(s\\) "colour" are not valid'):
        store.list_node_fields(["uuid", "colour"])


# -- ports ------------------------------------------------------------------------------------


def test_ports(store: Store) -> None:
    node = store.create_node("fake", name="n1")
    other = store.create_node("fake", name="n2")
    port = store.create_port("n1", "52-54-00-AB-CD-EF", local_link_connection={"port_id": "Gi1"})
    assert port.address == "52:54:00:ab:cd:ef" and port.node_uuid == node.uuid
    assert port.pxe_enabled is True and port.local_link_connection == {"port_id": "Gi1"}
    assert store.get_port(port.uuid) == port == store.get_port("52:54:00:AB:CD:EF")
    with pytest.raises(MACAlreadyExists, match="52:54:00:ab:cd:ef already exists") as dup:
        store.create_port("n2", "52:54:00:ab:cd:ef")
    assert dup.value.code == 409
    with pytest.raises(InvalidMAC, match="Expected a MAC address but received zz") as bad:
        store.create_port("n1", "zz")
    assert bad.value.code == 400
    with pytest.raises(NodeNotFound):
        store.create_port("n3", "52:54:00:00:00:09")
    second = store.create_port("n1", "52:54:00:00:00:02", pxe_enabled=False)
    assert [p.uuid for p in store.list_ports(node="n1")] == [port.uuid, second.uuid]
    assert [p.uuid for p in store.list_ports(pxe_enabled=False)] == [second.uuid]
    assert [p.uuid for p in store.list_ports(limit=1, marker=port.uuid)] == [second.uuid]
    moved = store.update_port(second.uuid, {"node": "n2", "pxe_enabled": True})
    assert moved.node_uuid == other.uuid and moved.pxe_enabled and moved.updated_at is not None
    with pytest.raises(MACAlreadyExists):
        store.update_port(second.uuid, {"address": "52:54:00:ab:cd:ef"})
    with pytest.raises(InvalidParameterValue):
        store.update_port(second.uuid, {"uuid": str(uuid.uuid4())})
    store.delete_port(second.uuid)
    with pytest.raises(PortNotFound, match=f"Port {second.uuid} could not be found."):
        store.get_port(second.uuid)


def test_port_changes_respect_the_lock(store: Store) -> None:
    node = store.create_node("fake")
    port = store.create_port(node.uuid, "52:54:00:00:00:01")
    store.acquire(node.uuid, "c1")
    with pytest.raises(NodeLocked):
        store.update_port(port.uuid, {"pxe_enabled": False})
    with pytest.raises(NodeLocked):
        store.delete_port(port.uuid)
    assert store.update_port(port.uuid, {"pxe_enabled": False}, holder="c1").pxe_enabled is False
    store.delete_port(port.uuid, holder="c1")


def test_lookup_node(store: Store) -> None:
    a = store.create_node("fake")
    b = store.create_node("fake")
    store.create_port(a.uuid, "52:54:00:00:00:0a")
    store.create_port(a.uuid, "52:54:00:00:01:0a")
    store.create_port(b.uuid, "52:54:00:00:00:0b")
    assert store.lookup_node(["52:54:00:00:01:0A", "garbage"]).uuid == a.uuid
    assert store.lookup_node(["52:54:00:00:00:0a", "52:54:00:00:01:0a"]).uuid == a.uuid
    for macs in (["52:54:00:00:00:0a", "52:54:00:00:00:0b"], ["52:54:00:00:00:0c"], ["x"], []):
        with pytest.raises(NodeNotFound):
            store.lookup_node(macs)


# -- history ----------------------------------------------------------------------------------


def test_history(store: Store) -> None:
    node = store.create_node("fake")
    records = [
        store.add_history(node.uuid, f"event {i}", severity=st.SEVERITY_ERROR if i == 2 else
                          st.SEVERITY_INFO, user="admin", conductor="c1", now=T0)
        for i in range(5)
    ]  # fmt: skip
    listed = store.list_history(node.uuid)
    assert listed == records
    assert [r.event for r in listed] == [f"event {i}" for i in range(5)]
    assert listed[2].severity == "ERROR" and listed[0].event_type == "transition"
    assert (listed[0].user, listed[0].conductor, listed[0].created_at) == ("admin", "c1", T0)
    assert store.list_history(node.uuid, limit=2, marker=records[1].uuid) == records[2:4]


# -- locks ------------------------------------------------------------------------------------


def test_acquire_release(store: Store) -> None:
    node = store.create_node("fake")
    assert store.acquire(node.uuid, "c1")
    assert not store.acquire(node.uuid, "c2")
    assert not store.acquire(node.uuid, "c1")  # not re-entrant
    assert store.get_node(node.uuid).reservation == "c1"
    with pytest.raises(NodeNotLocked):
        store.release(node.uuid, "c2")
    store.release(node.uuid, "c1")
    assert store.get_node(node.uuid).reservation is None
    with pytest.raises(NodeNotLocked):
        store.release(node.uuid, "c1")
    with pytest.raises(NodeNotFound):
        store.acquire("ghost", "c1")


def test_lock_context(store: Store) -> None:
    node = store.create_node("fake")
    with store.lock(node.uuid, "c1") as locked:
        assert locked.reservation == "c1" and locked.uuid == node.uuid
        with pytest.raises(NodeLocked, match="locked by host c1"):
            with store.lock(node.uuid, "c2"):
                pass
    assert store.get_node(node.uuid).reservation is None
    with pytest.raises(RuntimeError):
        with store.lock(node.uuid, "c1"):
            raise RuntimeError("boom")
    assert store.get_node(node.uuid).reservation is None


def test_lock_retries(store: Store) -> None:
    node = store.create_node("fake")
    store.acquire(node.uuid, "c1")
    timer = threading.Timer(0.3, store.release, (node.uuid, "c1"))
    timer.start()
    try:
        with store.lock(node.uuid, "c2", attempts=30, interval=0.05) as locked:
            assert locked.reservation == "c2"
    finally:
        timer.join()


def test_save_transition_needs_the_lock_and_the_expected_state(store: Store) -> None:
    node = store.create_node("fake", provision_state=st.MANAGEABLE)
    kwargs: dict[str, Any] = dict(
        expected_state=st.MANAGEABLE, provision_state=st.CLEANING,
        target_provision_state=st.AVAILABLE, history=[HistoryEntry("x")],
    )  # fmt: skip
    with pytest.raises(NodeLocked):
        store.save_transition(node.uuid, holder="c1", **kwargs)
    store.acquire(node.uuid, "c1")
    with pytest.raises(InvalidState):
        store.save_transition(node.uuid, holder="c1", **{**kwargs, "expected_state": st.ENROLL})
    assert store.list_history(node.uuid) == []  # nothing written
    saved = store.save_transition(node.uuid, holder="c1", now=T0, **kwargs)
    assert (saved.provision_state, saved.target_provision_state) == (st.CLEANING, st.AVAILABLE)
    assert saved.provision_updated_at == T0 and saved.reservation == "c1"
    assert [h.conductor for h in store.list_history(node.uuid)] == ["c1"]


# -- conductors, recovery ---------------------------------------------------------------------


def test_conductors(store: Store) -> None:
    store.register_conductor("c1", now=T0)
    store.register_conductor("c2", now=T0 - timedelta(seconds=61))
    store.register_conductor("c3", now=T0)
    assert store.live_conductors(now=T0) == ["c1", "c3"]
    store.heartbeat("c2", now=T0)
    node = store.create_node("fake")
    store.acquire(node.uuid, "c3")
    store.unregister_conductor("c3", now=T0)
    assert store.live_conductors(now=T0) == ["c1", "c2"]
    assert store.get_node(node.uuid).reservation is None
    assert store.live_conductors(now=T0 + timedelta(seconds=120)) == []


def _node_in(store: Store, state: str, holder: str | None, **kw: Any) -> str:
    node = store.create_node("fake", provision_state=state, **kw)
    if holder is not None:
        assert store.acquire(node.uuid, holder)
    return node.uuid


def test_recover_stuck(store: Store) -> None:
    now = T0
    store.register_conductor("dead", now=now - timedelta(seconds=300))
    store.register_conductor("alive", now=now - timedelta(seconds=10))
    deploying_dead = _node_in(store, st.DEPLOYING, "dead")
    waiting_dead = _node_in(store, st.DEPLOYWAIT, "dead")
    cleaning_alive = _node_in(store, st.CLEANING, "alive")
    verifying_free = _node_in(store, st.VERIFYING, None)
    inspecting_stranger = _node_in(store, st.INSPECTING, "never-registered")
    deleting_mine = _node_in(store, st.DELETING, "me")  # my previous life
    servicing_free = _node_in(store, st.SERVICING, None, maintenance=True)
    active_free = _node_in(store, st.ACTIVE, None)

    done = store.recover_stuck("me", now=now)

    def state(u: str) -> tuple[str, str | None]:
        n = store.get_node(u)
        return n.provision_state, n.reservation

    assert state(deploying_dead) == (st.DEPLOYFAIL, None)
    assert state(waiting_dead) == (st.DEPLOYWAIT, None)  # unlocked, left for expire_waits
    assert state(cleaning_alive) == (st.CLEANING, "alive")  # a live conductor: untouched
    assert state(verifying_free) == (st.ENROLL, None)
    assert state(inspecting_stranger) == (st.INSPECTFAIL, None)
    assert state(deleting_mine) == (st.ERROR, None)
    assert state(servicing_free) == (st.SERVICEFAIL, None)
    assert state(active_free) == (st.ACTIVE, None)
    failed = store.get_node(deploying_dead)
    assert failed.last_error == (
        "The deploying state can't be resumed by conductor me. Moving to fail state."
    )
    assert failed.target_provision_state == st.ACTIVE
    assert store.get_node(verifying_free).target_provision_state is None
    history = store.list_history(deploying_dead)
    assert history[-1].event_type == "startup failure" and history[-1].severity == "ERROR"
    assert "locked by conductor dead" in history[-1].event
    taken = store.list_history(waiting_dead)
    assert taken[-1].event_type == "takeover" and "dead" in taken[-1].event
    assert sorted(done, key=lambda r: r.uuid) == sorted(
        [
            Recovery(deploying_dead, st.DEPLOYING, st.DEPLOYFAIL, "dead"),
            Recovery(waiting_dead, st.DEPLOYWAIT, st.DEPLOYWAIT, "dead"),
            Recovery(verifying_free, st.VERIFYING, st.ENROLL, None),
            Recovery(inspecting_stranger, st.INSPECTING, st.INSPECTFAIL, "never-registered"),
            Recovery(deleting_mine, st.DELETING, st.ERROR, "me"),
            Recovery(servicing_free, st.SERVICING, st.SERVICEFAIL, None),
        ],
        key=lambda r: r.uuid,
    )
    assert store.recover_stuck("me", now=now) == []  # idempotent


# -- wait timeouts ----------------------------------------------------------------------------


def _then(event: str | None) -> DriverWork:
    """Driver work that just answers with a follow-up event."""
    return lambda _node, _state: event


def _walk(store: Store, steps: Sequence[tuple[str, str | None]], *, now: datetime) -> str:
    """Create a node and drive it through (event, follow-up) steps at time ``now``."""
    node = store.create_node("fake")
    for event, then in steps:
        process_event(store, node.uuid, event, holder="c1", driver_work=_then(then), now=now)
    return node.uuid


def test_expire_waits(store: Store) -> None:
    long_ago = T0 - timedelta(seconds=1801)
    recent = T0 - timedelta(seconds=1799)
    to_deploy: list[tuple[str, str | None]] = [("manage", "done"), ("provide", "done"),
                                               ("deploy", "wait")]  # fmt: skip
    old_deploy = _walk(store, to_deploy, now=long_ago)
    new_deploy = _walk(store, to_deploy, now=recent)
    locked_deploy = _walk(store, to_deploy, now=long_ago)
    store.acquire(locked_deploy, "other")
    maint_deploy = _walk(store, to_deploy, now=long_ago)
    store.update_node(maint_deploy, {"maintenance": True})
    old_inspect = _walk(store, [("manage", "done"), ("inspect", "wait")], now=long_ago)
    manual_clean = store.create_node(
        "fake", provision_state=st.MANAGEABLE, driver_internal_info={"clean_step": "erase"}
    ).uuid
    process_event(store, manual_clean, "clean", holder="c1", target=st.MANAGEABLE,
                  driver_work=lambda _n, _s: "wait", now=long_ago)  # fmt: skip
    assert store.get_node(manual_clean).target_provision_state == st.MANAGEABLE

    done = store.expire_waits(holder="c1", now=T0)

    assert {r.uuid: r.provision_state for r in done} == {
        old_deploy: st.DEPLOYFAIL,
        old_inspect: st.INSPECTFAIL,
        manual_clean: st.CLEANFAIL,
    }
    failed = store.get_node(old_deploy)
    assert failed.last_error == f"Timeout reached while waiting for callback for node {old_deploy}"
    assert failed.reservation is None and failed.provision_updated_at == T0
    assert store.get_node(old_inspect).last_error == "timeout reached while inspecting the node"
    cleaned = store.get_node(manual_clean)
    assert cleaned.last_error == (
        "Timeout reached while cleaning the node. Please check if the ramdisk responsible for "
        "the cleaning is running on the node. Failed on step erase."
    )
    assert cleaned.target_provision_state == st.MANAGEABLE  # the manual clean's target is kept
    for waiting in (new_deploy, locked_deploy, maint_deploy):
        assert store.get_node(waiting).provision_state == st.DEPLOYWAIT
    last = store.list_history(old_deploy)[-1]
    assert last.severity == "ERROR" and "deploy_callback_timeout" in last.event
    assert '"wait call-back"' in last.event


def test_expire_waits_configurable(store: Store) -> None:
    at = T0 - timedelta(seconds=100)
    node = _walk(store, [("manage", "done"), ("provide", "done"), ("deploy", "wait")], now=at)
    off = WaitTimeouts(deploy_callback_timeout=0)
    assert store.expire_waits(holder="c1", now=T0 + timedelta(days=30), timeouts=off) == []
    short = WaitTimeouts(deploy_callback_timeout=60)
    assert [r.uuid for r in store.expire_waits(holder="c1", now=T0, timeouts=short)] == [node]
