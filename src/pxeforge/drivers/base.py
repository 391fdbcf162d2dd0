"""Power and boot-device drivers: the two small interfaces, their vocabulary and their errors.

Theory of operation
-------------------
A node names a driver (``ipmi``, ``redfish``, ``manual-management``, ``fake-hardware``, ``lab``)
and carries that driver's settings in ``driver_info``, a plain JSON dict whose keys are Ironic's
(``ipmi_address``, ``redfish_system_id``…). A driver object holds no per-node state: every call
gets the node's ``driver_info`` and talks to the BMC afresh, as Ironic's power and management
interfaces do (``ironic/drivers/base.py`` ``PowerInterface`` / ``ManagementInterface``). Here
they are two Protocols of three or four methods each (`PowerDriver`, `ManagementDriver`); every
driver implements both (`Driver`).

**Calls are synchronous and bounded.** A driver call blocks its thread (a subprocess, an HTTP
request, a unix socket) and every wait in it has a deadline: the ``timeout`` argument of the
power calls, or the driver's per-request timeout. The lifecycle runs driver work under the
node's lock outside any database transaction, and the asyncio API layer calls drivers through
``loop.run_in_executor`` — never on the event loop. One convention, so no driver mixes both.

``validate(info)`` checks ``driver_info`` without touching the network (Ironic's ``validate``):
every missing or malformed field is named in one `DriverInfoError`. Whether the credentials
*work* is learnt by the first real call — ``verifying`` runs `PowerDriver.get_power_state`.

``set_power_state`` returns once the machine has reached the target state (it polls, as
Ironic's ``power_state_change_timeout``), or raises `PowerTimeout`. It and ``reboot`` /
``set_boot_device`` may return a **note**: text for the node's history when a person must act
(``manual-management``: "please power on the machine") or something is worth recording; None
otherwise. ``get_power_state`` answers None when nobody can know (no power control).

Errors say whose fault it is and carry ``code``, the HTTP status the API answers with::

    PxeforgeError                 (pxeforge.errors)
    └── DriverError               500: the driver failed in a way not listed below
        ├── DriverInfoError       400: driver_info is missing a field or has a bad value
        ├── UnsupportedError      400: this driver cannot do that (boot device, soft power off…)
        ├── UnknownDriver         400: no enabled driver by that name
        ├── BmcAuthError          400: the BMC refused the credentials in driver_info
        ├── BmcError              502: the BMC answered with an error or something unreadable
        ├── BmcUnreachable        504: no answer from the BMC (address, port, network, down)
        └── PowerTimeout          504: the BMC took the order but the state was not reached
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable

from pxeforge.errors import PxeforgeError

__all__ = [
    "DEFAULT_POWER_TIMEOUT",
    "POLL_INTERVAL",
    "BmcAuthError",
    "BmcError",
    "BmcUnreachable",
    "BootDevice",
    "BootSetting",
    "Driver",
    "DriverError",
    "DriverInfo",
    "DriverInfoError",
    "ManagementDriver",
    "PowerDriver",
    "PowerState",
    "PowerTimeout",
    "UnknownDriver",
    "UnsupportedError",
    "as_bool",
    "check_fields",
    "wait_for_power_state",
]

DriverInfo = Mapping[str, Any]
"""A node's ``driver_info``: Ironic's field names, JSON values."""

DEFAULT_POWER_TIMEOUT = 60.0
"""Seconds ``set_power_state`` waits for the target state (Ironic's power_state_change_timeout)."""

POLL_INTERVAL = 1.0
"""Seconds between two power-state reads while waiting."""


class PowerState(enum.StrEnum):
    """Ironic's power states (``ironic/common/states.py``), spelled as the API spells them.

    A node's *current* state is ``POWER_ON``, ``POWER_OFF``, ``ERROR`` or unknown (None). The
    other three are only *targets* of `PowerDriver.set_power_state` (and of the REST API's
    ``PUT …/states/power``).
    """

    POWER_ON = "power on"
    POWER_OFF = "power off"
    REBOOT = "rebooting"  # target: hard reset (off then on when the BMC cannot reset)
    SOFT_REBOOT = "soft rebooting"  # target: ACPI/OS shutdown, then on
    SOFT_POWER_OFF = "soft power off"  # target: ACPI/OS shutdown
    ERROR = "error"  # the BMC answered but the state cannot be told


class BootDevice(enum.StrEnum):
    """Ironic's boot devices (``ironic/common/boot_devices.py``)."""

    PXE = "pxe"
    DISK = "disk"
    CDROM = "cdrom"
    BIOS = "bios"  # the firmware setup screen
    SAFE = "safe"  # the disk in safe mode (IPMI only)


class BootSetting(NamedTuple):
    """What `ManagementDriver.get_boot_device` answers; None fields are unknown."""

    device: BootDevice | None
    persistent: bool | None


# ---- errors ---------------------------------------------------------------------------------


class DriverError(PxeforgeError):
    """A driver call failed; ``code`` is the HTTP status the API answers with."""

    code: ClassVar[int] = HTTPStatus.INTERNAL_SERVER_ERROR


class DriverInfoError(DriverError):
    """``driver_info`` lacks a field or holds a bad value: the caller fixes the node.

    ``fields`` names the offending keys (for the API's error body and for tests).
    """

    code: ClassVar[int] = HTTPStatus.BAD_REQUEST

    def __init__(self, message: str, fields: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.fields = tuple(fields)


class UnsupportedError(DriverError):
    """The driver cannot do this at all (Ironic's ``UnsupportedDriverExtension``)."""

    code: ClassVar[int] = HTTPStatus.BAD_REQUEST


class UnknownDriver(DriverError):
    """No enabled driver has that name."""

    code: ClassVar[int] = HTTPStatus.BAD_REQUEST


class BmcAuthError(DriverError):
    """The BMC refused the user name or password from ``driver_info``: the caller fixes it."""

    code: ClassVar[int] = HTTPStatus.BAD_REQUEST


class BmcError(DriverError):
    """The BMC answered, but with an error or with something we cannot read."""

    code: ClassVar[int] = HTTPStatus.BAD_GATEWAY


class BmcUnreachable(DriverError):
    """Nothing answered at the BMC's address in time."""

    code: ClassVar[int] = HTTPStatus.GATEWAY_TIMEOUT


class PowerTimeout(DriverError):
    """The BMC accepted the order but the machine did not reach the state in time."""

    code: ClassVar[int] = HTTPStatus.GATEWAY_TIMEOUT


# ---- the interfaces -------------------------------------------------------------------------


@runtime_checkable
class PowerDriver(Protocol):
    """Power control of one kind of BMC (Ironic's ``PowerInterface``)."""

    def validate(self, info: DriverInfo) -> None:
        """Check ``info`` offline; raise `DriverInfoError` naming every bad field."""
        ...

    def get_power_state(self, info: DriverInfo) -> PowerState | None:
        """``POWER_ON``, ``POWER_OFF``, ``ERROR``, or None when it cannot be known."""
        ...

    def set_power_state(
        self, info: DriverInfo, state: PowerState, timeout: float | None = None
    ) -> str | None:
        """Drive the machine to ``state`` (any target) and wait for it; return a note or None.

        ``timeout`` (seconds; None: `DEFAULT_POWER_TIMEOUT`) bounds the whole call.
        """
        ...

    def reboot(self, info: DriverInfo, timeout: float | None = None) -> str | None:
        """Hard reboot: the machine ends up on, starting from its firmware."""
        ...


@runtime_checkable
class ManagementDriver(Protocol):
    """The next boot device (Ironic's ``ManagementInterface``)."""

    def set_boot_device(
        self, info: DriverInfo, device: BootDevice, persistent: bool = False
    ) -> str | None:
        """Boot from ``device`` next time (every time when ``persistent``); a note or None."""
        ...

    def get_boot_device(self, info: DriverInfo) -> BootSetting:
        """The boot device the BMC reports, and whether it is persistent."""
        ...


@runtime_checkable
class Driver(PowerDriver, ManagementDriver, Protocol):
    """A hardware type: its name in ``node.driver`` plus both interfaces."""

    name: ClassVar[str]


# ---- helpers for drivers --------------------------------------------------------------------


def check_fields(
    driver: str,
    info: DriverInfo,
    required: Mapping[str, str],
    checks: Mapping[str, Callable[[Any], str | None]] | None = None,
) -> None:
    """Raise one `DriverInfoError` for every missing ``required`` field and failed check.

    ``required`` maps field → what it is (said in the message); ``checks`` maps an optional
    field → a function returning what is wrong with its value, or None. Checks run only on
    fields present and not None.
    """
    problems: list[str] = []
    bad: list[str] = []
    missing = [f for f in required if info.get(f) in (None, "")]
    if missing:
        what = ", ".join(f'"{f}" ({required[f]})' for f in missing)
        problems.append(f"missing {what}")
        bad += missing
    for field, check in (checks or {}).items():
        value = info.get(field)
        if value is None:
            continue
        reason = check(value)
        if reason is not None:
            problems.append(f'"{field}" {reason} (got {value!r})')
            bad.append(field)
    if problems:
        raise DriverInfoError(f"{driver}: driver_info {'; '.join(problems)}", bad)


def as_bool(value: Any) -> bool | None:
    """A JSON or string boolean as Ironic accepts them (``true``, ``"False"``, ``"1"``…)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "yes", "on", "1"):
            return True
        if lowered in ("false", "no", "off", "0"):
            return False
    return None


def wait_for_power_state(
    read: Callable[[], PowerState | None],
    target: PowerState,
    timeout: float,
    *,
    what: str,
    interval: float = POLL_INTERVAL,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Poll ``read`` until it answers ``target``; `PowerTimeout` after ``timeout`` seconds.

    ``what`` names the machine and the order in the error ("BMC 10.0.0.5: power off").
    The state is read at least once, even with a zero timeout.
    """
    deadline = clock() + timeout
    while True:
        last = read()
        if last == target:
            return
        left = deadline - clock()
        if left <= 0:
            seen = "unknown" if last is None else f'"{last}"'
            raise PowerTimeout(f'{what}: still {seen} after {timeout:g} s waiting for "{target}"')
        sleep(min(interval, left))
