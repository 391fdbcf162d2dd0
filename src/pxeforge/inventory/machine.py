"""Ironic's provision state machine as one table, and the pure function that applies it.

Theory of operation: `TRANSITIONS` lists every allowed ``(state, event) → state`` move — the 93
of Ironic's ``ironic/common/state_machine.py`` — once each, with a comment saying who fires it.
Everything else is derived from that table: `advance` (one step, or `InvalidTransition` naming
what *is* allowed), `allowed_events`, `allowed_verbs`, and the diagrams in ``docs/``. Nothing
here touches a node or a database; `pxeforge.inventory.lifecycle` does that under the node's lock.

Target states. Every non-stable state has a default ``target_provision_state`` (`TARGETS`, as
Ironic's ``add_state(…, target=…)``): where the operation is heading. A stable state has none.
Events that *continue* an operation (done, fail, wait, resume, hold, unhold, abort) keep the
node's current target, so a manual clean (``manageable`` → ``clean``) keeps aiming at
``manageable`` through ``clean wait`` and ``clean failed`` — Ironic gets the same effect by
passing ``target_state`` on each of those calls. See `next_target`.

Run ``python -m pxeforge.inventory.machine --write docs`` to regenerate ``docs/states.dot`` and
``docs/states.md``; a test fails when they are stale.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from pxeforge.inventory.errors import InvalidTransition
from pxeforge.inventory.states import (
    ACTIVE,
    ADOPTFAIL,
    ADOPTING,
    ALL_STATES,
    AVAILABLE,
    CLEANFAIL,
    CLEANHOLD,
    CLEANING,
    CLEANWAIT,
    CONTINUE_EVENTS,
    DELETING,
    DEPLOYFAIL,
    DEPLOYHOLD,
    DEPLOYING,
    DEPLOYWAIT,
    ENROLL,
    ERROR,
    FAILURE_STATES,
    HOLD_STATES,
    INSPECTFAIL,
    INSPECTING,
    INSPECTWAIT,
    MANAGEABLE,
    RESCUE,
    RESCUEFAIL,
    RESCUEWAIT,
    RESCUING,
    SERVICEFAIL,
    SERVICEHOLD,
    SERVICEWAIT,
    SERVICING,
    STABLE_STATES,
    UNRESCUEFAIL,
    UNRESCUING,
    USER_EVENTS,
    VERBS,
    VERIFYING,
    WAIT_STATES,
    Event,
)

__all__ = [
    "TARGETS",
    "TRANSITIONS",
    "InvalidTransition",
    "advance",
    "allowed_events",
    "allowed_verbs",
    "is_stable",
    "main",
    "next_target",
    "render_dot",
    "render_markdown",
]

E = Event

# fmt: off
TRANSITIONS: Final[tuple[tuple[str, Event, str], ...]] = (
    # --- enrolment: verify the BMC credentials --------------------------------------------------
    (ENROLL, E.MANAGE, VERIFYING),            # operator: start verifying power credentials
    (VERIFYING, E.DONE, MANAGEABLE),          # the power interface validated the driver_info
    (VERIFYING, E.FAIL, ENROLL),              # credentials do not work: back, with last_error
    # --- from manageable ------------------------------------------------------------------------
    (MANAGEABLE, E.PROVIDE, CLEANING),        # operator: automated cleaning, then available
    (MANAGEABLE, E.CLEAN, CLEANING),          # operator: manual clean steps, then manageable
    (MANAGEABLE, E.INSPECT, INSPECTING),      # operator: collect hardware facts
    (MANAGEABLE, E.ADOPT, ADOPTING),          # operator: take over a node deployed elsewhere
    # --- inspection -----------------------------------------------------------------------------
    (INSPECTING, E.DONE, MANAGEABLE),         # synchronous inspection finished
    (INSPECTING, E.FAIL, INSPECTFAIL),        # inspection failed (or its conductor died)
    (INSPECTING, E.WAIT, INSPECTWAIT),        # the ramdisk booted; wait for its inventory
    (INSPECTWAIT, E.DONE, MANAGEABLE),        # the inventory arrived and was processed
    (INSPECTWAIT, E.FAIL, INSPECTFAIL),       # inspect_wait_timeout, or a bad inventory
    (INSPECTWAIT, E.ABORT, INSPECTFAIL),      # operator: stop waiting
    (INSPECTWAIT, E.RESUME, INSPECTING),      # the ramdisk called back; continue inspecting
    (INSPECTFAIL, E.MANAGE, MANAGEABLE),      # operator: give up, back to manageable
    (INSPECTFAIL, E.INSPECT, INSPECTING),     # operator: try inspecting again
    # --- cleaning -------------------------------------------------------------------------------
    (CLEANING, E.DONE, AVAILABLE),            # automated cleaning finished: ready to deploy
    (CLEANING, E.MANAGE, MANAGEABLE),         # manual cleaning finished: back to manageable
    (CLEANING, E.FAIL, CLEANFAIL),            # a clean step failed (or its conductor died)
    (CLEANING, E.WAIT, CLEANWAIT),            # a clean step runs in the ramdisk; wait for it
    (CLEANING, E.HOLD, CLEANHOLD),            # a clean step asked to park the node
    (CLEANWAIT, E.RESUME, CLEANING),          # the ramdisk called back: next clean step
    (CLEANWAIT, E.FAIL, CLEANFAIL),           # clean_callback_timeout, or the step failed
    (CLEANWAIT, E.ABORT, CLEANFAIL),          # operator: stop cleaning
    (CLEANWAIT, E.HOLD, CLEANHOLD),           # a clean step asked to park the node
    (CLEANHOLD, E.UNHOLD, CLEANWAIT),         # operator: continue cleaning
    (CLEANHOLD, E.ABORT, CLEANFAIL),          # operator: stop cleaning
    (CLEANFAIL, E.MANAGE, MANAGEABLE),        # operator: take the node back to fix it
    # --- deployment -----------------------------------------------------------------------------
    (AVAILABLE, E.DEPLOY, DEPLOYING),         # operator: install an instance ("active")
    (AVAILABLE, E.MANAGE, MANAGEABLE),        # operator: withdraw from the available pool
    (DEPLOYING, E.DONE, ACTIVE),              # the instance is written and boots
    (DEPLOYING, E.FAIL, DEPLOYFAIL),          # a deploy step failed (or its conductor died)
    (DEPLOYING, E.WAIT, DEPLOYWAIT),          # the ramdisk/installer was booted; wait for it
    (DEPLOYING, E.HOLD, DEPLOYHOLD),          # a deploy step asked to park the node
    (DEPLOYWAIT, E.RESUME, DEPLOYING),        # the ramdisk/installer called back: continue
    (DEPLOYWAIT, E.FAIL, DEPLOYFAIL),         # deploy_callback_timeout: nobody called back
    (DEPLOYWAIT, E.ABORT, DEPLOYFAIL),        # operator: stop waiting
    (DEPLOYWAIT, E.HOLD, DEPLOYHOLD),         # a deploy step asked to park the node
    (DEPLOYWAIT, E.DELETE, DELETING),         # operator: tear down while still waiting
    (DEPLOYHOLD, E.UNHOLD, DEPLOYWAIT),       # operator: continue the deployment
    (DEPLOYHOLD, E.ABORT, DEPLOYFAIL),        # operator: stop the deployment
    (DEPLOYFAIL, E.REBUILD, DEPLOYING),       # operator: retry ("rebuild")
    (DEPLOYFAIL, E.DEPLOY, DEPLOYING),        # operator: retry ("active", Juno-style)
    (DEPLOYFAIL, E.DELETE, DELETING),         # operator: tear down the failed deployment
    # --- active and tear-down -------------------------------------------------------------------
    (ACTIVE, E.REBUILD, DEPLOYING),           # operator: reinstall
    (ACTIVE, E.DELETE, DELETING),             # operator: tear down ("deleted"/"undeploy")
    (ACTIVE, E.RESCUE, RESCUING),             # operator: boot the rescue ramdisk
    (ACTIVE, E.SERVICE, SERVICING),           # operator: run service steps
    (DELETING, E.CLEAN, CLEANING),            # torn down: automated cleaning follows
    (DELETING, E.FAIL, ERROR),                # tear-down failed (or its conductor died)
    (ERROR, E.REBUILD, DEPLOYING),            # operator: reinstall over the error
    (ERROR, E.DELETE, DELETING),              # operator: try the tear-down again
    # --- adoption -------------------------------------------------------------------------------
    (ADOPTING, E.DONE, ACTIVE),               # takeover worked: the node is active as it is
    (ADOPTING, E.FAIL, ADOPTFAIL),            # takeover failed (bad instance data)
    (ADOPTFAIL, E.ADOPT, ADOPTING),           # operator: retry adoption
    (ADOPTFAIL, E.MANAGE, MANAGEABLE),        # operator: back to manageable
    # --- rescue ---------------------------------------------------------------------------------
    (RESCUING, E.DONE, RESCUE),               # the rescue ramdisk is up
    (RESCUING, E.WAIT, RESCUEWAIT),           # the rescue ramdisk was booted; wait for it
    (RESCUING, E.FAIL, RESCUEFAIL),           # rescue failed (or its conductor died)
    (RESCUEWAIT, E.RESUME, RESCUING),         # the rescue ramdisk called back: finish
    (RESCUEWAIT, E.FAIL, RESCUEFAIL),         # rescue_callback_timeout, or it failed
    (RESCUEWAIT, E.ABORT, RESCUEFAIL),        # operator: stop waiting
    (RESCUEWAIT, E.DELETE, DELETING),         # operator: tear down instead
    (RESCUE, E.RESCUE, RESCUING),             # operator: rescue again (new password)
    (RESCUE, E.UNRESCUE, UNRESCUING),         # operator: back to the installed system
    (RESCUE, E.DELETE, DELETING),             # operator: tear down from rescue
    (RESCUEFAIL, E.RESCUE, RESCUING),         # operator: retry rescue
    (RESCUEFAIL, E.UNRESCUE, UNRESCUING),     # operator: give up rescue, boot the instance
    (RESCUEFAIL, E.DELETE, DELETING),         # operator: tear down
    (UNRESCUING, E.DONE, ACTIVE),             # the installed system boots again
    (UNRESCUING, E.FAIL, UNRESCUEFAIL),       # unrescue failed (or its conductor died)
    (UNRESCUEFAIL, E.RESCUE, RESCUING),       # operator: rescue again
    (UNRESCUEFAIL, E.UNRESCUE, UNRESCUING),   # operator: retry unrescue
    (UNRESCUEFAIL, E.DELETE, DELETING),       # operator: tear down
    # --- servicing ------------------------------------------------------------------------------
    (SERVICING, E.DONE, ACTIVE),              # service steps finished
    (SERVICING, E.FAIL, SERVICEFAIL),         # a service step failed (or its conductor died)
    (SERVICING, E.WAIT, SERVICEWAIT),         # a service step runs in the ramdisk; wait
    (SERVICING, E.HOLD, SERVICEHOLD),         # a service step asked to park the node
    (SERVICEWAIT, E.RESUME, SERVICING),       # the ramdisk called back: next service step
    (SERVICEWAIT, E.FAIL, SERVICEFAIL),       # the step failed or timed out
    (SERVICEWAIT, E.ABORT, SERVICEFAIL),      # operator: stop servicing
    (SERVICEWAIT, E.HOLD, SERVICEHOLD),       # a service step asked to park the node
    (SERVICEWAIT, E.DELETE, DELETING),        # operator: tear down instead
    (SERVICEHOLD, E.SERVICE, SERVICING),      # operator: start over with new service steps
    (SERVICEHOLD, E.UNHOLD, SERVICEWAIT),     # operator: continue servicing
    (SERVICEHOLD, E.FAIL, SERVICEFAIL),       # the held step failed
    (SERVICEHOLD, E.ABORT, SERVICEFAIL),      # operator: stop servicing
    (SERVICEFAIL, E.SERVICE, SERVICING),      # operator: retry with service steps
    (SERVICEFAIL, E.RESCUE, RESCUING),        # operator: rescue the broken instance
    (SERVICEFAIL, E.WAIT, SERVICEWAIT),       # a retried step waits on the ramdisk
    (SERVICEFAIL, E.HOLD, SERVICEHOLD),       # a retried step parks the node
    (SERVICEFAIL, E.DELETE, DELETING),        # operator: tear down
    (SERVICEFAIL, E.ABORT, ACTIVE),           # operator: give up servicing, back to active
)
# fmt: on

TARGETS: Final[dict[str, str]] = {
    VERIFYING: MANAGEABLE,
    INSPECTING: MANAGEABLE,
    INSPECTWAIT: MANAGEABLE,
    INSPECTFAIL: MANAGEABLE,
    CLEANING: AVAILABLE,
    CLEANWAIT: AVAILABLE,
    CLEANHOLD: AVAILABLE,
    CLEANFAIL: AVAILABLE,
    DEPLOYING: ACTIVE,
    DEPLOYWAIT: ACTIVE,
    DEPLOYHOLD: ACTIVE,
    DEPLOYFAIL: ACTIVE,
    DELETING: AVAILABLE,
    ADOPTING: ACTIVE,
    ADOPTFAIL: ACTIVE,
    RESCUING: RESCUE,
    RESCUEWAIT: RESCUE,
    RESCUEFAIL: RESCUE,
    UNRESCUING: ACTIVE,
    UNRESCUEFAIL: ACTIVE,
    SERVICING: ACTIVE,
    SERVICEWAIT: ACTIVE,
    SERVICEHOLD: ACTIVE,
    SERVICEFAIL: ACTIVE,
}
"""Default ``target_provision_state`` of every non-stable state (Ironic's ``add_state`` target)."""


def _index() -> dict[str, dict[str, str]]:
    table: dict[str, dict[str, str]] = {state: {} for state in ALL_STATES}
    for src, event, dst in TRANSITIONS:
        if src not in ALL_STATES or dst not in ALL_STATES:
            raise AssertionError(f"unknown state in transition {src!r} -{event}-> {dst!r}")
        if event in table[src]:
            raise AssertionError(f"duplicate transition {src!r} -{event}->")
        table[src][event.value] = dst
    return table


_TABLE: Final = _index()
if set(TARGETS) != ALL_STATES - STABLE_STATES:
    raise AssertionError("TARGETS must cover exactly the non-stable states")


def advance(state: str, event: str) -> str:
    """The state after ``event`` in ``state``; `InvalidTransition` if the table has no such move."""
    try:
        return _TABLE[state][str(event)]
    except KeyError:
        raise InvalidTransition(str(event), state, allowed=allowed_events(state)) from None


def allowed_events(state: str) -> tuple[str, ...]:
    """Events accepted in ``state``, in table order (empty for an unknown state)."""
    return tuple(_TABLE.get(state, {}))


def allowed_verbs(state: str) -> tuple[str, ...]:
    """API provision targets accepted in ``state`` (``"active"``, ``"deleted"``…), VERBS order."""
    events = _TABLE.get(state, {})
    return tuple(verb for verb, event in VERBS.items() if event.value in events)


def is_stable(state: str) -> bool:
    """True for states that change only on request (they have no target)."""
    return state in STABLE_STATES


def next_target(
    current_target: str | None, event: str, new_state: str, requested: str | None = None
) -> str | None:
    """``target_provision_state`` after moving to ``new_state`` on ``event``.

    None in a stable state. Otherwise ``requested`` if given, else the current target when the
    event continues an operation (and there is one), else the new state's default target.
    """
    if is_stable(new_state):
        return None
    if requested is not None:
        return requested
    if event in CONTINUE_EVENTS and current_target is not None:
        return current_target
    return TARGETS[new_state]


# --------------------------------------------------------------------------------------------
# Diagrams
# --------------------------------------------------------------------------------------------


def _state_order() -> list[str]:
    """States in order of first appearance in the table (a readable layout order)."""
    seen: dict[str, None] = {}
    for src, _event, dst in TRANSITIONS:
        seen.setdefault(src)
        seen.setdefault(dst)
    return list(seen)


def _edges() -> list[tuple[str, str, list[str]]]:
    """(src, dst, events) with parallel edges merged, in table order."""
    merged: dict[tuple[str, str], list[str]] = {}
    for src, event, dst in TRANSITIONS:
        merged.setdefault((src, dst), []).append(event.value)
    return [(src, dst, events) for (src, dst), events in merged.items()]


def _kind(state: str) -> str:
    if state in STABLE_STATES:
        return "stable"
    if state in FAILURE_STATES:
        return "failure"
    if state in HOLD_STATES:
        return "hold"
    if state in WAIT_STATES:
        return "wait"
    return "progress"


_DOT_STYLE: Final = {
    "stable": 'shape=box, style="rounded,bold,filled", fillcolor="#d8ecd8"',
    "failure": 'shape=box, style="rounded,filled", fillcolor="#f4cccc", color="#a00000"',
    "hold": 'shape=box, style="rounded,filled", fillcolor="#fff2cc"',
    "wait": 'shape=ellipse, style="dashed"',
    "progress": "shape=ellipse",
}


def render_dot() -> str:
    """The state diagram as Graphviz dot text, generated from `TRANSITIONS`."""
    lines = [
        "// Generated by `python -m pxeforge.inventory.machine --write docs`; do not edit.",
        "digraph provision_states {",
        "    rankdir=LR;",
        '    node [fontname="Helvetica", fontsize=11];',
        '    edge [fontname="Helvetica", fontsize=9];',
    ]
    for state in _state_order():
        lines.append(f'    "{state}" [{_DOT_STYLE[_kind(state)]}];')
    for src, dst, events in _edges():
        label = " / ".join(events)
        internal = all(Event(e) not in USER_EVENTS for e in events)
        style = ', style=dashed, color="#666666"' if internal else ""
        lines.append(f'    "{src}" -> "{dst}" [label="{label}"{style}];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _mermaid_id(state: str) -> str:
    return state.replace(" ", "_").replace("-", "_")


def render_markdown() -> str:
    """``docs/states.md``: a mermaid ``stateDiagram-v2`` and the transition table."""
    out = [
        "<!-- Generated by `python -m pxeforge.inventory.machine --write docs`; do not edit. -->",
        "# Node provision states",
        "",
        "pxeforge mirrors OpenStack Ironic's provision state machine: the same state names, the",
        "same events and the same "
        f"{len(TRANSITIONS)} transitions. The table lives in `src/pxeforge/inventory/machine.py`;",
        "this page and `states.dot` are generated from it. `done`, `fail`, `wait`, `resume` and",
        "`hold` are raised by pxeforge itself (dashed in `states.dot`); the other events are",
        "asked for through the API, by the verbs below. Green: stable states; red: failures;",
        "yellow: held by a step.",
        "",
        "```mermaid",
        "stateDiagram-v2",
    ]
    for state in _state_order():
        out.append(f'    state "{state}" as {_mermaid_id(state)}')
    out.append(f"    [*] --> {_mermaid_id(ENROLL)}")
    for src, dst, events in _edges():
        out.append(f"    {_mermaid_id(src)} --> {_mermaid_id(dst)} : {' / '.join(events)}")
    for kind, css in (
        ("stable", "fill:#d8ecd8,stroke-width:2px"),
        ("failure", "fill:#f4cccc,stroke:#a00000"),
        ("hold", "fill:#fff2cc"),
    ):
        members = [_mermaid_id(s) for s in _state_order() if _kind(s) == kind]
        out.append(f"    classDef {kind} {css}")
        out.append(f"    class {','.join(members)} {kind}")
    out += ["```", "", "## API verbs", "", "| target | event |", "|---|---|"]
    for verb, event in VERBS.items():
        out.append(f"| `{verb}` | `{event.value}` |")
    out += ["", "## Transitions", "", "| from | event | to | target |", "|---|---|---|---|"]
    for src, event, dst in TRANSITIONS:
        target = TARGETS.get(dst, "")
        out.append(f"| {src} | `{event.value}` | {dst} | {target} |")
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pxeforge.inventory.machine [--dot | --markdown | --write DIR]``."""
    parser = argparse.ArgumentParser(
        prog="python -m pxeforge.inventory.machine",
        description="Render the provision state diagram from the transition table.",
    )
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--dot", action="store_true", help="print Graphviz dot text")
    group.add_argument("--markdown", action="store_true", help="print docs/states.md")
    group.add_argument("--write", metavar="DIR", type=Path, help="write DIR/states.{dot,md}")
    args = parser.parse_args(argv)
    if args.dot:
        sys.stdout.write(render_dot())
    elif args.markdown:
        sys.stdout.write(render_markdown())
    else:
        out_dir: Path = args.write
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "states.dot").write_text(render_dot())
        (out_dir / "states.md").write_text(render_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
