"""``fake-hardware``: machines that live in memory, for the tests of the layers above.

Theory of operation
-------------------
Ironic ships ``fake-hardware`` so its conductor and API can be tested without a BMC; this is
the same. One `FakeDriver` object holds the power state and boot device of every fake machine,
keyed by ``driver_info["fake_id"]`` (default ``""``: one shared machine), so keep one instance
per test (the registry caches it). Everything is optional in ``driver_info``:

``fake_id``           which fake machine (any string)
``fake_power_state``  its power state the first time it is seen: ``"power off"`` (default) or
                      ``"power on"``
``fake_delay``        seconds a power change takes to show (default 0); with a ``timeout``
                      shorter than that, ``set_power_state`` raises `PowerTimeout`
``fake_fail``         make every call but ``validate`` fail: ``"auth"`` (`BmcAuthError`),
                      ``"unreachable"`` (`BmcUnreachable`), anything else (`BmcError` with that
                      text) — how a test drives ``verifying`` into ``enroll``

Every call is appended to ``calls`` as ``(method, fake_id, argument)`` for assertions. The clock
and sleep are injectable so tests of delays need not sleep.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from pxeforge.drivers.base import (
    DEFAULT_POWER_TIMEOUT,
    BmcAuthError,
    BmcError,
    BmcUnreachable,
    BootDevice,
    BootSetting,
    DriverInfo,
    PowerState,
    UnsupportedError,
    check_fields,
    wait_for_power_state,
)

__all__ = ["FakeDriver", "FakeMachine"]


@dataclass
class FakeMachine:
    """One fake machine: what it is now, and what it will be at ``settles_at``."""

    power: PowerState
    boot: BootSetting
    pending: PowerState | None = None
    settles_at: float = 0.0
    boots: int = 0  # how many times it started from firmware (on from off, or a reboot)


def _check_state(value: Any) -> str | None:
    if value in (PowerState.POWER_ON, PowerState.POWER_OFF):
        return None
    return 'must be "power on" or "power off"'


def _check_delay(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return "must be a number of seconds >= 0"
    return None


class FakeDriver:
    """In-memory power and boot device, per ``fake_id``."""

    name: ClassVar[str] = "fake-hardware"

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        interval: float = 0.01,
    ) -> None:
        self._clock, self._sleep, self._interval = clock, sleep, interval
        self._lock = threading.Lock()
        self.machines: dict[str, FakeMachine] = {}
        self.calls: list[tuple[str, str, Any]] = []

    # -- plumbing --

    def _machine(self, info: DriverInfo, method: str, argument: Any = None) -> FakeMachine:
        """Record the call, fail it if asked, and return the machine (created on first use)."""
        key = str(info.get("fake_id", ""))
        with self._lock:
            self.calls.append((method, key, argument))
        fail = info.get("fake_fail")
        if fail == "auth":
            raise BmcAuthError(f"{self.name}: authentication failed (fake_fail)")
        if fail == "unreachable":
            raise BmcUnreachable(f"{self.name}: no answer (fake_fail)")
        if fail:
            raise BmcError(f"{self.name}: {fail}")
        self.validate(info)
        with self._lock:
            machine = self.machines.get(key)
            if machine is None:
                initial = PowerState(info.get("fake_power_state", PowerState.POWER_OFF))
                machine = FakeMachine(initial, BootSetting(BootDevice.DISK, True))
                self.machines[key] = machine
            if machine.pending is not None and self._clock() >= machine.settles_at:
                machine.power, machine.pending = machine.pending, None
            return machine

    def _change(self, machine: FakeMachine, info: DriverInfo, state: PowerState) -> None:
        delay = float(info.get("fake_delay", 0))
        with self._lock:
            if state is PowerState.POWER_ON and machine.power is not PowerState.POWER_ON:
                machine.boots += 1
            if delay:
                machine.pending, machine.settles_at = state, self._clock() + delay
            else:
                machine.power, machine.pending = state, None

    def _wait(self, info: DriverInfo, target: PowerState, timeout: float | None) -> None:
        wait_for_power_state(
            lambda: self._machine(info, "poll").power,
            target,
            DEFAULT_POWER_TIMEOUT if timeout is None else timeout,
            what=f"{self.name} {info.get('fake_id', '')!r}: {target}",
            interval=self._interval,
            clock=self._clock,
            sleep=self._sleep,
        )

    # -- PowerDriver --

    def validate(self, info: DriverInfo) -> None:
        check_fields(
            self.name,
            info,
            {},
            {"fake_power_state": _check_state, "fake_delay": _check_delay},
        )

    def get_power_state(self, info: DriverInfo) -> PowerState | None:
        return self._machine(info, "get_power_state").power

    def set_power_state(
        self, info: DriverInfo, state: PowerState, timeout: float | None = None
    ) -> str | None:
        machine = self._machine(info, "set_power_state", state)
        if state in (PowerState.POWER_ON, PowerState.POWER_OFF):
            self._change(machine, info, state)
            self._wait(info, state, timeout)
        elif state is PowerState.SOFT_POWER_OFF:
            self._change(machine, info, PowerState.POWER_OFF)
            self._wait(info, PowerState.POWER_OFF, timeout)
        elif state in (PowerState.REBOOT, PowerState.SOFT_REBOOT):
            self._reboot(machine, info, timeout)
        else:
            raise UnsupportedError(f'{self.name}: "{state}" is not a power target')
        return None

    def reboot(self, info: DriverInfo, timeout: float | None = None) -> str | None:
        self._reboot(self._machine(info, "reboot"), info, timeout)
        return None

    def _reboot(self, machine: FakeMachine, info: DriverInfo, timeout: float | None) -> None:
        with self._lock:
            machine.power = PowerState.POWER_OFF  # so that _change counts the boot
        self._change(machine, info, PowerState.POWER_ON)
        self._wait(info, PowerState.POWER_ON, timeout)

    # -- ManagementDriver --

    def set_boot_device(
        self, info: DriverInfo, device: BootDevice, persistent: bool = False
    ) -> str | None:
        machine = self._machine(info, "set_boot_device", (device, persistent))
        with self._lock:
            machine.boot = BootSetting(BootDevice(device), persistent)
        return None

    def get_boot_device(self, info: DriverInfo) -> BootSetting:
        return self._machine(info, "get_boot_device").boot
