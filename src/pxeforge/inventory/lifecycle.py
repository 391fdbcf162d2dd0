"""Applying one event to one node: lock → transition → driver work → save → history → unlock.

Theory of operation (Ironic's ``TaskManager.process_event``, reshaped):

1. Take the node's lock (`Store.lock`); somebody else holding it is `NodeLocked` (409).
2. `advance` computes the new state from the table. An event the state does not allow is
   `InvalidTransition` (400) naming the allowed ones; it is recorded in the node's history
   (severity ERROR) and the node is left alone.
3. ``driver_work(node, new_state)`` runs, still under the lock and outside any database
   transaction (it may take minutes: power the machine on, render boot files…). It may return a
   follow-up event — ``done``, ``wait``, ``fail``… — applied right after the first, and fields
   to save with the transition (`Outcome`). If it **raises**, nothing about the node's state
   changes: ``last_error`` and an ERROR history record say what went wrong, and the exception
   propagates.
4. One transaction (`Store.save_transition`) publishes the final ``provision_state``,
   ``target_provision_state``, ``provision_updated_at``, the outcome's fields and one history
   record per step — all of it, or (on any error) none of it.
5. The lock is released, whatever happened.

A node therefore rests in an in-progress state only if its driver work said so (returned no
follow-up event) — typically the ``… wait`` states, which `Store.expire_waits` times out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from pxeforge.inventory.errors import InvalidTransition
from pxeforge.inventory.machine import advance, next_target
from pxeforge.inventory.records import NodeRecord
from pxeforge.inventory.states import (
    INSPECTING,
    INSPECTWAIT,
    SEVERITY_ERROR,
    USER_EVENTS,
    Event,
    HistoryType,
)
from pxeforge.inventory.store import KEEP, HistoryEntry, Keep, Store

__all__ = ["DriverWork", "Outcome", "process_event"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What driver work asks to save with the transition.

    ``event``: a follow-up event applied after the first (``done``, ``wait``, ``fail``…).
    ``last_error``: the node's ``last_error`` (say why, with ``fail``).
    ``changes``: other node fields to save in the same transaction (``power_state``,
    ``driver_internal_info``…; not the provision-state fields).
    """

    event: str | None = None
    last_error: str | None = None
    changes: Mapping[str, Any] = field(default_factory=dict)


DriverWork = Callable[[NodeRecord, str], Outcome | str | None]
"""``driver_work(node_before, new_state)`` → an `Outcome`, just a follow-up event, or None."""


def _step(old: str, event: str, new: str) -> HistoryEntry:
    return HistoryEntry(f'"{old}" -> "{new}" on "{event}"', HistoryType.TRANSITION)


def _inspection_times(old: str, event: str, changes: dict[str, Any], at: datetime) -> None:
    if event == Event.INSPECT:
        changes.setdefault("inspection_started_at", at)
        changes.setdefault("inspection_finished_at", None)
    elif event == Event.DONE and old in (INSPECTING, INSPECTWAIT):
        changes.setdefault("inspection_finished_at", at)


def process_event(
    store: Store,
    node: str | int,
    event: str,
    *,
    holder: str,
    driver_work: DriverWork | None = None,
    target: str | None = None,
    user: str | None = None,
    now: datetime | None = None,
    lock_attempts: int = 1,
    lock_interval: float = 1.0,
) -> NodeRecord:
    """Apply ``event`` to ``node`` as conductor ``holder``; return the node as saved (unlocked).

    ``target`` overrides the new ``target_provision_state`` (see `machine.next_target`).
    Raises `NodeNotFound`, `NodeLocked`, `InvalidTransition`, or whatever ``driver_work``
    raised (after recording it).
    """
    at = datetime.now(UTC) if now is None else now
    with store.lock(node, holder, attempts=lock_attempts, interval=lock_interval) as before:
        old = before.provision_state
        try:
            new = advance(old, event)
        except InvalidTransition as exc:
            refused = exc.with_node(before.uuid)
            store.add_history(
                before.id,
                str(refused),
                severity=SEVERITY_ERROR,
                user=user,
                conductor=holder,
                now=at,
            )
            raise refused from None
        target_state = next_target(before.target_provision_state, event, new, target)
        history = [_step(old, event, new)]
        changes: dict[str, Any] = {}
        last_error: str | None | Keep = KEEP
        if event in USER_EVENTS:
            # A new request starts: yesterday's error no longer describes the node.
            last_error = None
            if event == Event.ABORT:
                last_error = f'The operation in state "{old}" was aborted on request.'
        _inspection_times(old, event, changes, at)
        final = new
        if driver_work is not None:
            try:
                result = driver_work(before, new)
                outcome = result if isinstance(result, Outcome) else Outcome(event=result)
                if outcome.event is not None:
                    final = advance(new, outcome.event)
                    target_state = next_target(target_state, outcome.event, final, None)
                    history.append(_step(new, outcome.event, final))
                    _inspection_times(new, outcome.event, changes, at)
            except Exception as exc:
                _record_failure(store, before, holder, event, new, exc, user, at)
                raise
            reason = outcome.last_error
            if reason is None and outcome.event == Event.FAIL:
                reason = f'"{event}" failed in state "{new}" (the driver gave no reason)'
            if reason is not None:
                last_error = reason
                history[-1] = HistoryEntry(
                    f"{history[-1].event}: {reason}",
                    HistoryType.TRANSITION,
                    SEVERITY_ERROR,
                )
            changes.update(outcome.changes)
        try:
            saved = store.save_transition(
                before.id,
                holder=holder,
                expected_state=old,
                provision_state=final,
                target_provision_state=target_state,
                history=history,
                last_error=last_error,
                changes=changes,
                user=user,
                now=at,
            )
        except Exception as exc:
            _record_failure(store, before, holder, event, new, exc, user, at)
            raise
    return replace(saved, reservation=None)  # as it is once the lock is released


def _record_failure(
    store: Store,
    node: NodeRecord,
    holder: str,
    event: str,
    new: str,
    exc: BaseException,
    user: str | None,
    at: datetime,
) -> None:
    """Say why ``event`` did not happen: ``last_error`` and an ERROR history record."""
    message = (
        f'"{event}" failed while moving from "{node.provision_state}" to "{new}"; the node was '
        f"left unchanged: {type(exc).__name__}: {exc}"
    )
    try:
        store.save_transition(
            node.id,
            holder=holder,
            expected_state=node.provision_state,
            provision_state=node.provision_state,
            target_provision_state=node.target_provision_state,
            history=[HistoryEntry(message, HistoryType.TRANSITION, SEVERITY_ERROR)],
            last_error=message,
            user=user,
            now=at,
        )
    except Exception as record_exc:  # the database itself may be what failed
        exc.add_note(f"(and recording this failure failed too: {record_exc})")
