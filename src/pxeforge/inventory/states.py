"""Ironic's node states, events and verbs, as constants. No code lives here.

Theory of operation: a node's ``provision_state`` is one of the strings below, spelled exactly as
OpenStack Ironic spells them (``ironic/common/states.py``), because operators' tools
(``baremetal node list``, Nova's Ironic driver, Metal3) compare against these literals. The
transitions between them live in `pxeforge.inventory.machine`; this module only names things and
groups them.

* **Stable** states change only when someone asks (an API verb).
* **In-progress** states (``…ing`` and ``… wait``) are left by the conductor itself: ``done``,
  ``fail``, ``wait``, ``resume``, ``hold``.
* **Failure** states wait for an operator; **hold** states were parked by a step on purpose.
* ``deleted`` and ``deploy complete`` are transient or target-only names that a node never rests
  in; they are kept because clients may still send or print them.

Names of the constants follow Ironic (``DEPLOYWAIT`` is ``"wait call-back"``) so that reading
Ironic's code and ours side by side is easy.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = [
    "ACTIVE",
    "ADOPTFAIL",
    "ADOPTING",
    "ALL_STATES",
    "AVAILABLE",
    "CLEANFAIL",
    "CLEANHOLD",
    "CLEANING",
    "CLEANWAIT",
    "CONTINUE_EVENTS",
    "DELETED",
    "DELETE_ALLOWED_STATES",
    "DELETING",
    "DEPLOYDONE",
    "DEPLOYFAIL",
    "DEPLOYHOLD",
    "DEPLOYING",
    "DEPLOYWAIT",
    "ENROLL",
    "ERROR",
    "FAILURE_STATES",
    "FASTTRACK_LOOKUP_ALLOWED_STATES",
    "HOLD_STATES",
    "INSPECTFAIL",
    "INSPECTING",
    "INSPECTWAIT",
    "IN_PROGRESS_STATES",
    "LOOKUP_ALLOWED_STATES",
    "MANAGEABLE",
    "NOSTATE",
    "POWER_OFF",
    "POWER_ON",
    "POWER_STATES",
    "REBOOT",
    "RESCUE",
    "RESCUEFAIL",
    "RESCUEWAIT",
    "RESCUING",
    "SERVICEFAIL",
    "SERVICEHOLD",
    "SERVICEWAIT",
    "SERVICING",
    "SERVICING_STATES",
    "SEVERITY_ERROR",
    "SEVERITY_INFO",
    "SOFT_POWER_OFF",
    "SOFT_REBOOT",
    "STABLE_STATES",
    "STUCK_STATES_TREATED_AS_FAIL",
    "TRANSIENT_STATES",
    "UNRESCUEFAIL",
    "UNRESCUING",
    "UNSTABLE_STATES",
    "UPDATE_ALLOWED_STATES",
    "USER_EVENTS",
    "VERBS",
    "VERIFYING",
    "WAIT_STATES",
    "Event",
    "HistoryType",
]

# --------------------------------------------------------------------------------------------
# Provision states
# --------------------------------------------------------------------------------------------

NOSTATE: Final = None
"""No state: ``power_state`` when unknown, ``target_*_state`` when there is no target."""

# stable ---------------------------------------------------------------------------------------

ENROLL: Final = "enroll"
"""Known to pxeforge but not managed yet: credentials never verified. New nodes start here."""

MANAGEABLE: Final = "manageable"
"""Credentials verified at least once; the node can be inspected, cleaned or adopted, but is not
offered for deployment (that is ``available``)."""

AVAILABLE: Final = "available"
"""Cleaned and ready to be deployed."""

ACTIVE: Final = "active"
"""Deployed: an operating system is installed and the node boots it."""

ERROR: Final = "error"
"""Tear-down failed; ``last_error`` says why. Rebuild or delete again to leave it."""

RESCUE: Final = "rescue"
"""Booted into the rescue ramdisk so an operator can repair the installed system."""

# in progress ----------------------------------------------------------------------------------

VERIFYING: Final = "verifying"
"""Checking the power credentials (driver_info) after ``manage``."""

INSPECTING: Final = "inspecting"
"""Hardware inspection started (synchronous part)."""

INSPECTWAIT: Final = "inspect wait"
"""Inspection is running asynchronously: waiting for the ramdisk to report its inventory."""

CLEANING: Final = "cleaning"
"""Running clean steps (automated after ``provide`` or tear-down, manual after ``clean``)."""

CLEANWAIT: Final = "clean wait"
"""Waiting for the ramdisk to finish a clean step (or to call back for the next one)."""

DEPLOYING: Final = "deploying"
"""Writing the instance: briefly before the ramdisk boots, and again after it calls back."""

DEPLOYWAIT: Final = "wait call-back"
"""Waiting for the deploy ramdisk (or installer) to call back. The seed's 等待 ipa 回调 state."""

DELETING: Final = "deleting"
"""Tearing the instance down after ``deleted``/``undeploy``; cleaning follows."""

ADOPTING: Final = "adopting"
"""Taking over a node deployed by other means, straight from ``manageable`` to ``active``."""

RESCUING: Final = "rescuing"
"""Booting the rescue ramdisk."""

RESCUEWAIT: Final = "rescue wait"
"""Waiting for the rescue ramdisk to call back."""

UNRESCUING: Final = "unrescuing"
"""Leaving rescue: booting the installed system again."""

SERVICING: Final = "servicing"
"""Running service steps on an ``active`` node (firmware updates and the like)."""

SERVICEWAIT: Final = "service wait"
"""Waiting for the ramdisk to finish a service step."""

# failure --------------------------------------------------------------------------------------

INSPECTFAIL: Final = "inspect failed"
"""Inspection failed; ``manage`` or ``inspect`` again."""

CLEANFAIL: Final = "clean failed"
"""Cleaning failed; needs an operator (``manage``, then clean or provide again)."""

DEPLOYFAIL: Final = "deploy failed"
"""Deployment failed; ``rebuild``/``active`` to retry, ``deleted`` to tear down."""

ADOPTFAIL: Final = "adopt failed"
"""Adoption failed, usually because the node's data does not allow booting it."""

RESCUEFAIL: Final = "rescue failed"
"""Rescue failed."""

UNRESCUEFAIL: Final = "unrescue failed"
"""Unrescue failed."""

SERVICEFAIL: Final = "service failed"
"""A service step failed; ``abort`` goes back to ``active``."""

# hold -----------------------------------------------------------------------------------------

DEPLOYHOLD: Final = "deploy hold"
"""Parked by a deploy step; ``unhold`` continues, ``abort`` fails the deployment."""

CLEANHOLD: Final = "clean hold"
"""Parked by a clean step; ``unhold`` continues, ``abort`` fails the cleaning."""

SERVICEHOLD: Final = "service hold"
"""Parked by a service step for direct intervention; ``unhold`` continues."""

# transient or target-only ---------------------------------------------------------------------

DELETED: Final = "deleted"
"""Tear-down verb and (in Juno) a target; a node never rests in it."""

DEPLOYDONE: Final = "deploy complete"
"""Old (Juno) target state of a deployment; a deployed node is ``active``. Never stored."""

# --------------------------------------------------------------------------------------------
# Groups
# --------------------------------------------------------------------------------------------

STABLE_STATES: Final = frozenset({ENROLL, MANAGEABLE, AVAILABLE, ACTIVE, ERROR, RESCUE})
"""States that do not change unless someone asks."""

IN_PROGRESS_STATES: Final = frozenset(
    {
        VERIFYING,
        INSPECTING,
        INSPECTWAIT,
        CLEANING,
        CLEANWAIT,
        DEPLOYING,
        DEPLOYWAIT,
        DELETING,
        ADOPTING,
        RESCUING,
        RESCUEWAIT,
        UNRESCUING,
        SERVICING,
        SERVICEWAIT,
    }
)
"""States the conductor leaves by itself (done, fail, wait, resume, hold)."""

UNSTABLE_STATES: Final = IN_PROGRESS_STATES
"""Ironic's name for the in-progress states: "can be changed without external request"."""

FAILURE_STATES: Final = frozenset(
    {INSPECTFAIL, CLEANFAIL, DEPLOYFAIL, ADOPTFAIL, RESCUEFAIL, UNRESCUEFAIL, SERVICEFAIL}
)
"""States a failed operation lands in; they wait for an operator."""

HOLD_STATES: Final = frozenset({DEPLOYHOLD, CLEANHOLD, SERVICEHOLD})
"""States a step parked the node in on purpose; ``unhold`` or ``abort`` leave them."""

WAIT_STATES: Final = frozenset({INSPECTWAIT, CLEANWAIT, DEPLOYWAIT, RESCUEWAIT, SERVICEWAIT})
"""In-progress states that wait for the node itself (its ramdisk) to call back; they time out."""

TRANSIENT_STATES: Final = frozenset({DELETED, DEPLOYDONE})
"""Names that are verbs or old targets, never a node's resting state."""

ALL_STATES: Final = STABLE_STATES | IN_PROGRESS_STATES | FAILURE_STATES | HOLD_STATES
"""Every state a node can be in (``provision_state`` is always one of these)."""

SERVICING_STATES: Final = frozenset({SERVICING, SERVICEWAIT, SERVICEFAIL, SERVICEHOLD})
"""All states that belong to servicing."""

STUCK_STATES_TREATED_AS_FAIL: Final = frozenset(
    {
        DEPLOYING,
        CLEANING,
        VERIFYING,
        INSPECTING,
        ADOPTING,
        RESCUING,
        UNRESCUING,
        DELETING,
        SERVICING,
    }
)
"""States that cannot be resumed once the process working on the node died: the ``fail`` event is
applied to nodes found in them (with nobody holding their lock) at start-up."""

DELETE_ALLOWED_STATES: Final = (MANAGEABLE, ENROLL, ADOPTFAIL)
"""States in which a node may be deleted (any state if it is in maintenance). Ordered as Ironic
prints them in its error message; ``available`` was allowed in old releases only."""

UPDATE_ALLOWED_STATES: Final = frozenset(
    {
        DEPLOYFAIL,
        INSPECTING,
        INSPECTFAIL,
        INSPECTWAIT,
        CLEANFAIL,
        ERROR,
        VERIFYING,
        ADOPTFAIL,
        RESCUEFAIL,
        UNRESCUEFAIL,
        SERVICEHOLD,
        SERVICEFAIL,
    }
)
"""Non-stable states in which the node may still be updated (PATCH)."""

LOOKUP_ALLOWED_STATES: Final = frozenset(
    {DEPLOYING, DEPLOYWAIT, CLEANING, CLEANWAIT, INSPECTING, INSPECTWAIT, RESCUING, RESCUEWAIT}
)
"""States in which the ramdisk's ``GET /v1/lookup`` finds the node (else the same 404 as for an
unknown node)."""

FASTTRACK_LOOKUP_ALLOWED_STATES: Final = LOOKUP_ALLOWED_STATES | frozenset(
    {ENROLL, MANAGEABLE, AVAILABLE, SERVICING, SERVICEWAIT, SERVICEHOLD}
)
"""Lookup states when fast-track (keeping the ramdisk running between operations) is on."""

# --------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------


class Event(enum.StrEnum):
    """What moves a node from one state to the next (the FSM's alphabet)."""

    # asked for through the API (see VERBS)
    MANAGE = "manage"  # verify credentials / take a node back under management
    PROVIDE = "provide"  # make a manageable node available (through automated cleaning)
    INSPECT = "inspect"  # collect hardware facts
    CLEAN = "clean"  # run manual clean steps (also: tear-down handing over to cleaning)
    DEPLOY = "deploy"  # install an instance (API targets "active" and "deploy")
    REBUILD = "rebuild"  # reinstall an active, failed or errored node
    DELETE = "delete"  # tear down an instance (API targets "deleted" and "undeploy")
    ABORT = "abort"  # stop a waiting or held operation
    ADOPT = "adopt"  # take over a node deployed by other means
    RESCUE = "rescue"  # boot the rescue ramdisk
    UNRESCUE = "unrescue"  # leave rescue
    SERVICE = "service"  # run service steps on an active node
    UNHOLD = "unhold"  # continue a held operation
    # raised by the conductor itself, never by the API
    DONE = "done"  # the operation finished
    FAIL = "fail"  # the operation failed (or timed out, or its conductor died)
    WAIT = "wait"  # the operation now waits for the node to call back
    RESUME = "resume"  # the node called back; continue
    HOLD = "hold"  # a step asked to park the node


VERBS: Final[dict[str, Event]] = {
    "active": Event.DEPLOY,
    "deploy": Event.DEPLOY,
    "rebuild": Event.REBUILD,
    "deleted": Event.DELETE,
    "undeploy": Event.DELETE,
    "manage": Event.MANAGE,
    "provide": Event.PROVIDE,
    "inspect": Event.INSPECT,
    "abort": Event.ABORT,
    "clean": Event.CLEAN,
    "adopt": Event.ADOPT,
    "rescue": Event.RESCUE,
    "unrescue": Event.UNRESCUE,
    "unhold": Event.UNHOLD,
    "service": Event.SERVICE,
}
"""``PUT /v1/nodes/{node}/states/provision`` ``{"target": …}`` → the event it fires. Ironic keeps
``rebuild`` outside its VERBS dict and special-cases it in the API; here it is one more entry."""

USER_EVENTS: Final = frozenset(VERBS.values())
"""Events an API client may ask for."""

CONTINUE_EVENTS: Final = frozenset(
    {Event.DONE, Event.FAIL, Event.WAIT, Event.RESUME, Event.HOLD, Event.UNHOLD, Event.ABORT}
)
"""Events that continue (or end) the operation in progress rather than start a new one: they keep
the node's ``target_provision_state`` (a manual clean keeps aiming at ``manageable``)."""

# --------------------------------------------------------------------------------------------
# Power states
# --------------------------------------------------------------------------------------------

POWER_ON: Final = "power on"
"""The node is powered on."""

POWER_OFF: Final = "power off"
"""The node is powered off."""

REBOOT: Final = "rebooting"
"""The node is rebooting (a target, or the state while it happens)."""

SOFT_REBOOT: Final = "soft rebooting"
"""The node is rebooting gracefully (ACPI)."""

SOFT_POWER_OFF: Final = "soft power off"
"""The node is shutting down gracefully (ACPI)."""

POWER_STATES: Final = (POWER_ON, POWER_OFF, REBOOT, SOFT_REBOOT, SOFT_POWER_OFF)
"""Every power state and power target the API accepts."""

# --------------------------------------------------------------------------------------------
# Node history
# --------------------------------------------------------------------------------------------


class HistoryType(enum.StrEnum):
    """``event_type`` of a node history record (Ironic's "History Event State Types")."""

    PROVISIONING = "provisioning"
    TAKEOVER = "takeover"
    INTROSPECTION = "introspection"
    CONDUCTOR = "conductor"
    TRANSITION = "transition"
    STARTFAIL = "startup failure"
    UNPROVISION = "unprovision"
    ADOPTION = "adoption"
    CONSOLE = "console"
    MONITORING = "monitoring"
    VERIFY = "verify"


SEVERITY_INFO: Final = "INFO"
"""History record severity of a normal event."""

SEVERITY_ERROR: Final = "ERROR"
"""History record severity of an error (Ironic writes these when it sets ``last_error``)."""
