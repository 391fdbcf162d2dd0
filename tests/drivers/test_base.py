"""The driver vocabulary and helpers: states, errors, field checks, waiting with a fake clock."""

from __future__ import annotations

import pytest

from pxeforge.drivers.base import (
    BmcAuthError,
    BmcUnreachable,
    DriverError,
    DriverInfoError,
    PowerState,
    PowerTimeout,
    as_bool,
    check_fields,
    wait_for_power_state,
)
from pxeforge.errors import PxeforgeError


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_states_are_ironic_strings() -> None:
    assert [s.value for s in PowerState] == [
        "power on",
        "power off",
        "rebooting",
        "soft rebooting",
        "soft power off",
        "error",
    ]
    assert PowerState("power on") is PowerState.POWER_ON
    assert f"{PowerState.POWER_OFF}" == "power off"


def test_error_codes_and_tree() -> None:
    assert issubclass(DriverError, PxeforgeError)
    assert DriverError.code == 500
    assert DriverInfoError.code == BmcAuthError.code == 400
    assert BmcUnreachable.code == PowerTimeout.code == 504
    assert DriverInfoError("x", ["a"]).fields == ("a",)


def test_check_fields_reports_everything_at_once() -> None:
    required = {"x_address": "the address", "x_user": "the user"}
    checks = {"x_port": lambda v: None if isinstance(v, int) else "must be an integer"}
    check_fields("x", {"x_address": "h", "x_user": "u", "x_port": 1}, required, checks)
    with pytest.raises(DriverInfoError) as info:
        check_fields("x", {"x_address": "", "x_port": "many"}, required, checks)
    text = str(info.value)
    assert text.startswith("x: driver_info missing")
    assert '"x_address" (the address)' in text and '"x_user" (the user)' in text
    assert "\"x_port\" must be an integer (got 'many')" in text
    assert info.value.fields == ("x_address", "x_user", "x_port")


def test_as_bool() -> None:
    assert as_bool(True) is True and as_bool("False") is False and as_bool("1") is True
    assert as_bool("maybe") is None and as_bool(None) is None and as_bool(1) is None


def test_wait_polls_until_the_target() -> None:
    clock = Clock()
    answers = iter([PowerState.POWER_OFF, PowerState.POWER_OFF, PowerState.POWER_ON])
    wait_for_power_state(
        lambda: next(answers),
        PowerState.POWER_ON,
        10,
        what="m",
        interval=1,
        clock=clock,
        sleep=clock.sleep,
    )
    assert clock.sleeps == [1, 1]


def test_wait_times_out_with_the_last_state() -> None:
    clock = Clock()
    with pytest.raises(PowerTimeout, match='m: still "power off" after 2.5 s') as info:
        wait_for_power_state(
            lambda: PowerState.POWER_OFF,
            PowerState.POWER_ON,
            2.5,
            what="m",
            interval=1,
            clock=clock,
            sleep=clock.sleep,
        )
    assert clock.sleeps == [1, 1, 0.5]
    assert info.value.code == 504
    # A zero timeout still reads once.
    wait_for_power_state(
        lambda: PowerState.POWER_ON, PowerState.POWER_ON, 0, what="m", sleep=clock.sleep
    )
