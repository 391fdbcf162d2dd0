"""The transition table against the contract, every transition, every refused event, diagrams."""

from __future__ import annotations

import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest

from pxeforge.inventory import states as st
from pxeforge.inventory.errors import InvalidStateRequested, InvalidTransition
from pxeforge.inventory.machine import (
    TARGETS,
    TRANSITIONS,
    advance,
    allowed_events,
    allowed_verbs,
    is_stable,
    main,
    next_target,
    render_dot,
    render_markdown,
)
from pxeforge.inventory.states import Event

REPO = Path(__file__).resolve().parents[2]

# The contract, copied by hand from ../shared/docs/anchors.md §4 (Ironic's state_machine.py at
# HEAD): "state | event→state, …", where "a/b→x" means both events lead to x.
CONTRACT = """
enroll | manage→verifying
verifying | done→manageable, fail→enroll
manageable | provide→cleaning, clean→cleaning, inspect→inspecting, adopt→adopting
inspecting | done→manageable, fail→inspect failed, wait→inspect wait
inspect wait | done→manageable, fail/abort→inspect failed, resume→inspecting
inspect failed | manage→manageable, inspect→inspecting
cleaning | done→available, manage→manageable, fail→clean failed, wait→clean wait, hold→clean hold
clean wait | resume→cleaning, fail/abort→clean failed, hold→clean hold
clean hold | unhold→clean wait, abort→clean failed
clean failed | manage→manageable
available | deploy→deploying, manage→manageable
deploying | done→active, fail→deploy failed, wait→wait call-back, hold→deploy hold
wait call-back | resume→deploying, fail/abort→deploy failed, hold→deploy hold, delete→deleting
deploy hold | unhold→wait call-back, abort→deploy failed
deploy failed | rebuild/deploy→deploying, delete→deleting
active | rebuild→deploying, delete→deleting, rescue→rescuing, service→servicing
deleting | clean→cleaning, fail→error
error | rebuild→deploying, delete→deleting
adopting | done→active, fail→adopt failed
adopt failed | adopt→adopting, manage→manageable
rescuing | done→rescue, wait→rescue wait, fail→rescue failed
rescue wait | resume→rescuing, fail/abort→rescue failed, delete→deleting
rescue | rescue→rescuing, unrescue→unrescuing, delete→deleting
rescue failed | rescue→rescuing, unrescue→unrescuing, delete→deleting
unrescue failed | rescue→rescuing, unrescue→unrescuing, delete→deleting
unrescuing | done→active, fail→unrescue failed
servicing | done→active, fail→service failed, wait→service wait, hold→service hold
service wait | resume→servicing, fail/abort→service failed, hold→service hold, delete→deleting
service hold | service→servicing, unhold→service wait, fail/abort→service failed
service failed | service→servicing, rescue→rescuing, wait→service wait, hold→service hold, \
delete→deleting, abort→active
"""


def _contract() -> set[tuple[str, str, str]]:
    out: set[tuple[str, str, str]] = set()
    for line in CONTRACT.replace("\\\n", "").strip().splitlines():
        src, moves = (part.strip() for part in line.split("|"))
        for move in moves.split(","):
            events, dst = move.strip().split("→")
            for event in events.split("/"):
                out.add((src, event, dst))
    return out


EXPECTED = sorted(_contract())


def test_table_is_exactly_the_contract() -> None:
    ours = [(src, event.value, dst) for src, event, dst in TRANSITIONS]
    assert len(ours) == 93 == len(set(ours))
    assert set(ours) == set(EXPECTED)


@pytest.mark.parametrize(("state", "event", "expected"), EXPECTED)
def test_every_transition(state: str, event: str, expected: str) -> None:
    assert advance(state, event) == expected
    assert advance(state, Event(event)) == expected
    assert event in allowed_events(state)


INVALID = sorted(
    (state, event.value)
    for state in st.ALL_STATES
    for event in Event
    if (state, event.value) not in {(s, e) for s, e, _ in EXPECTED}
)


@pytest.mark.parametrize(("state", "event"), INVALID)
def test_every_refused_event_names_the_allowed_ones(state: str, event: str) -> None:
    with pytest.raises(InvalidTransition) as info:
        advance(state, event)
    allowed = tuple(e for s, e, _ in EXPECTED if s == state)
    assert sorted(info.value.allowed) == sorted(allowed)
    assert info.value.code == 400
    message = str(info.value)
    assert f'"{event}"' in message and f'"{state}"' in message
    for name in allowed:
        assert f'"{name}"' in message


def test_refusals_count() -> None:
    assert len(INVALID) == len(st.ALL_STATES) * len(Event) - 93


def test_unknown_state_and_event() -> None:
    with pytest.raises(InvalidTransition, match="No action is allowed"):
        advance("no such state", "deploy")
    with pytest.raises(InvalidTransition) as info:
        advance(st.ENROLL, "frobnicate")
    assert info.value.allowed == ("manage",)


def test_ironic_message_with_node() -> None:
    exc = InvalidTransition("deploy", "enroll", allowed=("manage",)).with_node("1be26c0b")
    assert isinstance(exc, InvalidStateRequested)
    assert str(exc) == (
        'The requested action "deploy" can not be performed on node "1be26c0b" while it is in '
        'state "enroll". Allowed in this state: "manage".'
    )
    verbs = exc.with_node("n1", allowed=allowed_verbs("enroll"))
    assert verbs.allowed == ("manage",) and verbs.node == "n1"


def test_verbs() -> None:
    assert st.VERBS["active"] is Event.DEPLOY and st.VERBS["deploy"] is Event.DEPLOY
    assert st.VERBS["deleted"] is Event.DELETE and st.VERBS["undeploy"] is Event.DELETE
    for verb in ("manage", "provide", "inspect", "abort", "clean", "adopt", "rescue", "unrescue",
                 "unhold", "service", "rebuild"):  # fmt: skip
        assert st.VERBS[verb].value == verb
    internal = {Event.DONE, Event.FAIL, Event.WAIT, Event.RESUME, Event.HOLD}
    assert set(Event) - st.USER_EVENTS == internal
    assert allowed_verbs(st.DEPLOYFAIL) == ("active", "deploy", "rebuild", "deleted", "undeploy")
    assert allowed_verbs(st.ACTIVE) == ("rebuild", "deleted", "undeploy", "rescue", "service")
    assert allowed_verbs(st.ENROLL) == ("manage",)
    assert allowed_verbs(st.DEPLOYING) == ()  # only the conductor moves it on


def test_state_strings_are_ironics() -> None:
    assert st.DEPLOYWAIT == "wait call-back"
    assert st.INSPECTWAIT == "inspect wait"
    assert st.DEPLOYFAIL == "deploy failed"
    assert st.UNRESCUEFAIL == "unrescue failed"
    assert st.DEPLOYDONE == "deploy complete"
    assert len(st.ALL_STATES) == 30
    assert st.POWER_STATES == (
        "power on", "power off", "rebooting", "soft rebooting", "soft power off",
    )  # fmt: skip


def test_groups() -> None:
    groups = [st.STABLE_STATES, st.IN_PROGRESS_STATES, st.FAILURE_STATES, st.HOLD_STATES]
    assert sum(len(g) for g in groups) == len(st.ALL_STATES)  # a partition
    assert not st.TRANSIENT_STATES & st.ALL_STATES
    assert st.WAIT_STATES <= st.IN_PROGRESS_STATES
    assert st.STUCK_STATES_TREATED_AS_FAIL <= st.IN_PROGRESS_STATES
    assert not st.STUCK_STATES_TREATED_AS_FAIL & st.WAIT_STATES
    assert st.DELETE_ALLOWED_STATES == ("manageable", "enroll", "adopt failed")
    assert st.LOOKUP_ALLOWED_STATES < st.FASTTRACK_LOOKUP_ALLOWED_STATES
    # every state that can be stuck or wait can also fail, and fails to a state that waits for
    # an operator (or back to enroll / to error, as Ironic does)
    for state in st.STUCK_STATES_TREATED_AS_FAIL | st.WAIT_STATES:
        assert advance(state, Event.FAIL) in st.FAILURE_STATES | {st.ENROLL, st.ERROR}


def test_every_state_reachable_and_leavable() -> None:
    seen = {st.ENROLL}
    todo = deque([st.ENROLL])
    while todo:
        state = todo.popleft()
        for event in allowed_events(state):
            nxt = advance(state, event)
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
        assert allowed_events(state), f"{state} is a dead end"
    assert seen == st.ALL_STATES


def test_targets() -> None:
    assert set(TARGETS) == st.ALL_STATES - st.STABLE_STATES
    assert all(is_stable(t) for t in TARGETS.values())
    assert TARGETS[st.DEPLOYWAIT] == st.ACTIVE
    assert TARGETS[st.CLEANFAIL] == st.AVAILABLE
    assert TARGETS[st.RESCUEWAIT] == st.RESCUE
    assert TARGETS[st.VERIFYING] == st.MANAGEABLE


def test_next_target() -> None:
    # a new operation takes the new state's default (or what is requested)
    assert next_target(None, Event.PROVIDE, st.CLEANING) == st.AVAILABLE
    assert next_target(None, Event.CLEAN, st.CLEANING, st.MANAGEABLE) == st.MANAGEABLE
    # continuing keeps the target: a manual clean stays aimed at manageable
    assert next_target(st.MANAGEABLE, Event.WAIT, st.CLEANWAIT) == st.MANAGEABLE
    assert next_target(st.MANAGEABLE, Event.FAIL, st.CLEANFAIL) == st.MANAGEABLE
    assert next_target(st.MANAGEABLE, Event.ABORT, st.CLEANFAIL) == st.MANAGEABLE
    # starting something else resets it: deploy failed → delete aims at available
    assert next_target(st.ACTIVE, Event.DELETE, st.DELETING) == st.AVAILABLE
    assert next_target(st.ACTIVE, Event.RESCUE, st.RESCUING) == st.RESCUE
    # reaching a stable state clears it
    assert next_target(st.AVAILABLE, Event.DONE, st.AVAILABLE) is None
    assert next_target(st.MANAGEABLE, Event.FAIL, st.ENROLL) is None
    # continuing with no current target falls back to the default
    assert next_target(None, Event.WAIT, st.DEPLOYWAIT) == st.ACTIVE


def test_docs_are_generated_from_the_table() -> None:
    dot = (REPO / "docs" / "states.dot").read_text()
    md = (REPO / "docs" / "states.md").read_text()
    hint = "stale: run python -m pxeforge.inventory.machine --write docs"
    assert dot == render_dot(), hint
    assert md == render_markdown(), hint


def test_dot_has_every_transition() -> None:
    dot = render_dot()
    for state in st.ALL_STATES:
        assert f'"{state}" [' in dot
    for src, event, dst in TRANSITIONS:
        edge = next(line for line in dot.splitlines() if f'"{src}" -> "{dst}"' in line)
        assert event.value in edge
    assert dot.count("->") == len({(s, d) for s, _e, d in TRANSITIONS})
    assert dot.rstrip().endswith("}")


def test_mermaid_has_every_transition() -> None:
    md = render_markdown()
    assert "```mermaid\nstateDiagram-v2\n" in md
    ids = {s: s.replace(" ", "_").replace("-", "_") for s in st.ALL_STATES}
    for src, event, dst in TRANSITIONS:
        prefix = f"{ids[src]} --> {ids[dst]} :"
        line = next(x for x in md.splitlines() if x.strip().startswith(prefix))
        assert event.value in line.split(":", 1)[1].strip().split(" / ")
        assert f"| {src} | `{event.value}` | {dst} |" in md


def test_cli_dot(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dot"]) == 0
    assert capsys.readouterr().out == render_dot()
    assert main(["--markdown"]) == 0
    assert capsys.readouterr().out == render_markdown()


def test_cli_write(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pxeforge.inventory.machine", "--write", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert proc.stderr == ""
    assert (tmp_path / "states.dot").read_text() == render_dot()
    assert (tmp_path / "states.md").read_text() == render_markdown()
