"""process_event: every transition through the database, driver work, errors, atomicity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pxeforge.inventory import states as st
from pxeforge.inventory.errors import (
    InvalidParameterValue,
    InvalidTransition,
    NodeLocked,
    NodeNotFound,
)
from pxeforge.inventory.lifecycle import Outcome, process_event
from pxeforge.inventory.machine import TRANSITIONS, next_target
from pxeforge.inventory.records import NodeRecord
from pxeforge.inventory.store import Store

T0 = datetime(2026, 8, 21, 12, 0, 0, tzinfo=UTC)


def test_every_transition_through_the_store(store: Store) -> None:
    for src, event, dst in TRANSITIONS:
        node = store.create_node("fake", provision_state=src)
        after = process_event(store, node.uuid, event, holder="c1", now=T0)
        assert after.provision_state == dst, (src, event)
        assert after.target_provision_state == next_target(None, event, dst), (src, event)
        assert after.reservation is None
        assert after.provision_updated_at == T0
        [record] = store.list_history(node.uuid)
        assert record.event == f'"{src}" -> "{dst}" on "{event.value}"'
        assert (record.conductor, record.severity) == ("c1", "INFO")
    assert store.list_nodes(reserved=True) == []


def test_refused_event_changes_nothing_and_is_recorded(store: Store) -> None:
    node = store.create_node("fake", name="n1")
    with pytest.raises(InvalidTransition) as info:
        process_event(store, "n1", "active", holder="c1", user="alice", now=T0)
    assert info.value.code == 400
    assert str(info.value) == (
        f'The requested action "active" can not be performed on node "{node.uuid}" while it is '
        'in state "enroll". Allowed in this state: "manage".'
    )
    after = store.get_node("n1")
    assert after == node  # same state, no reservation left behind, no timestamps moved
    [record] = store.list_history("n1")
    assert record.severity == "ERROR" and record.event == str(info.value)
    assert (record.user, record.conductor) == ("alice", "c1")


def test_locked_node(store: Store) -> None:
    node = store.create_node("fake")
    store.acquire(node.uuid, "c2")
    with pytest.raises(NodeLocked, match="locked by host c2") as info:
        process_event(store, node.uuid, "manage", holder="c1")
    assert info.value.code == 409
    assert store.get_node(node.uuid).provision_state == st.ENROLL
    assert store.list_history(node.uuid) == []
    with pytest.raises(NodeNotFound):
        process_event(store, "ghost", "manage", holder="c1")


def test_verify_with_driver_work(store: Store) -> None:
    node = store.create_node("ipmi")
    seen: list[tuple[str, str, str | None]] = []

    def verify(before: NodeRecord, new_state: str) -> Outcome:
        live = store.get_node(before.uuid)
        seen.append((before.provision_state, new_state, live.reservation))
        return Outcome("done", changes={"power_state": st.POWER_OFF})

    after = process_event(store, node.uuid, "manage", holder="c1", driver_work=verify, now=T0)
    assert seen == [(st.ENROLL, st.VERIFYING, "c1")]  # work runs under the lock
    assert (after.provision_state, after.target_provision_state) == (st.MANAGEABLE, None)
    assert after.power_state == st.POWER_OFF and after.reservation is None
    assert [h.event for h in store.list_history(node.uuid)] == [
        '"enroll" -> "verifying" on "manage"',
        '"verifying" -> "manageable" on "done"',
    ]


def test_verify_failing_goes_back_to_enroll_with_last_error(store: Store) -> None:
    node = store.create_node("ipmi")
    reason = "IPMI call failed: power status. Check ipmi_username/ipmi_password"
    after = process_event(
        store, node.uuid, "manage", holder="c1",
        driver_work=lambda _n, _s: Outcome("fail", last_error=reason),
    )  # fmt: skip
    assert (after.provision_state, after.last_error) == (st.ENROLL, reason)
    last = store.list_history(node.uuid)[-1]
    assert last.severity == "ERROR" and reason in last.event
    # asking again clears the old error
    after = process_event(
        store, node.uuid, "manage", holder="c1", driver_work=lambda _n, _s: "done"
    )
    assert (after.provision_state, after.last_error) == (st.MANAGEABLE, None)


def test_a_failure_always_says_something(store: Store) -> None:
    node = store.create_node("fake", provision_state=st.AVAILABLE)
    after = process_event(
        store, node.uuid, "deploy", holder="c1", driver_work=lambda _n, _s: "fail"
    )
    assert after.provision_state == st.DEPLOYFAIL
    assert after.last_error == '"deploy" failed in state "deploying" (the driver gave no reason)'
    assert store.list_history(node.uuid)[-1].severity == "ERROR"


def test_driver_work_raising_leaves_the_node_unchanged(store: Store) -> None:
    node = store.create_node("fake", provision_state=st.AVAILABLE)

    def broken(_node: NodeRecord, _state: str) -> str:
        raise OSError("BMC unreachable")

    with pytest.raises(OSError, match="BMC unreachable"):
        process_event(store, node.uuid, "deploy", holder="c1", driver_work=broken, now=T0)
    after = store.get_node(node.uuid)
    assert after.provision_state == st.AVAILABLE and after.target_provision_state is None
    assert after.provision_updated_at is None and after.reservation is None
    assert after.last_error is not None and "BMC unreachable" in after.last_error
    assert '"deploy"' in after.last_error and "left unchanged" in after.last_error
    [record] = store.list_history(node.uuid)
    assert record.severity == "ERROR" and record.event == after.last_error


def test_failing_save_is_atomic(store: Store) -> None:
    store.create_node("fake", name="taken")
    node = store.create_node("fake", provision_state=st.MANAGEABLE, extra={"keep": 1})

    # the follow-up is fine but saving the outcome violates a unique constraint: nothing of
    # the transition (state, target, extra, history) may be written
    def clash(_n: NodeRecord, _s: str) -> Outcome:
        return Outcome("done", changes={"name": "taken", "extra": {"lost": 1}})

    with pytest.raises(Exception, match="(?i)unique|duplicate"):
        process_event(store, node.uuid, "provide", holder="c1", driver_work=clash)
    after = store.get_node(node.uuid)
    assert (after.provision_state, after.name, after.extra) == (st.MANAGEABLE, None, {"keep": 1})
    assert [h.severity for h in store.list_history(node.uuid)] == ["ERROR"]
    assert after.reservation is None

    def bad_field(_n: NodeRecord, _s: str) -> Outcome:
        return Outcome("done", changes={"provision_state": st.ACTIVE})

    with pytest.raises(InvalidParameterValue):
        process_event(store, node.uuid, "provide", holder="c1", driver_work=bad_field)
    assert store.get_node(node.uuid).provision_state == st.MANAGEABLE


def test_driver_work_returning_an_impossible_event(store: Store) -> None:
    node = store.create_node("fake", provision_state=st.MANAGEABLE)
    with pytest.raises(InvalidTransition):
        process_event(store, node.uuid, "inspect", holder="c1",
                      driver_work=lambda _n, _s: "rescue")  # fmt: skip
    assert store.get_node(node.uuid).provision_state == st.MANAGEABLE
    assert store.get_node(node.uuid).last_error is not None


def test_full_deploy_cycle_with_targets(store: Store) -> None:
    node = store.create_node("fake", name="n")

    def step(event: str, then: str | None = None, **kw: Any) -> tuple[str, str | None]:
        after = process_event(store, "n", event, holder="c1",
                              driver_work=(lambda _n, _s: then), **kw)  # fmt: skip
        return after.provision_state, after.target_provision_state

    assert step("manage", "done") == (st.MANAGEABLE, None)
    assert step("provide", "done") == (st.AVAILABLE, None)
    assert step("deploy", "wait") == (st.DEPLOYWAIT, st.ACTIVE)
    assert step("resume", "done") == (st.ACTIVE, None)
    assert step("delete", "clean") == (st.CLEANING, st.AVAILABLE)
    assert step("wait") == (st.CLEANWAIT, st.AVAILABLE)
    assert step("resume", "done") == (st.AVAILABLE, None)
    # manual cleaning aims at manageable all the way, even through a failure
    assert step("manage") == (st.MANAGEABLE, None)
    assert step("clean", "wait", target=st.MANAGEABLE) == (st.CLEANWAIT, st.MANAGEABLE)
    assert step("hold") == (st.CLEANHOLD, st.MANAGEABLE)
    assert step("unhold") == (st.CLEANWAIT, st.MANAGEABLE)
    assert step("abort") == (st.CLEANFAIL, st.MANAGEABLE)
    after = store.get_node(node.uuid)
    assert after.last_error == 'The operation in state "clean wait" was aborted on request.'
    assert step("manage") == (st.MANAGEABLE, None)
    assert len(store.list_history("n")) == 20  # one record per step, follow-ups included


def test_inspection_timestamps(store: Store) -> None:
    node = store.create_node("fake", provision_state=st.MANAGEABLE)
    t1 = T0 + timedelta(minutes=7)
    waiting = process_event(store, node.uuid, "inspect", holder="c1",
                            driver_work=lambda _n, _s: "wait", now=T0)  # fmt: skip
    assert waiting.provision_state == st.INSPECTWAIT
    assert (waiting.inspection_started_at, waiting.inspection_finished_at) == (T0, None)
    done = process_event(store, node.uuid, "resume", holder="c1",
                         driver_work=lambda _n, _s: "done", now=t1)  # fmt: skip
    assert done.provision_state == st.MANAGEABLE
    assert (done.inspection_started_at, done.inspection_finished_at) == (T0, t1)
