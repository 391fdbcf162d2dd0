"""fake-hardware: in-memory machines, keyed by fake_id, with injectable failures and delays."""

from __future__ import annotations

import pytest

from pxeforge.drivers.base import (
    BmcAuthError,
    BmcError,
    BmcUnreachable,
    BootDevice,
    BootSetting,
    Driver,
    DriverInfoError,
    PowerState,
    PowerTimeout,
)
from pxeforge.drivers.fake import FakeDriver

from .test_base import Clock


def test_power_and_boot_round_trip() -> None:
    driver = FakeDriver()
    assert isinstance(driver, Driver)
    a, b = {"fake_id": "a"}, {"fake_id": "b", "fake_power_state": "power on"}
    assert driver.get_power_state(a) is PowerState.POWER_OFF
    assert driver.get_power_state(b) is PowerState.POWER_ON
    driver.set_power_state(a, PowerState.POWER_ON)
    assert driver.get_power_state(a) is PowerState.POWER_ON
    assert driver.get_power_state(b) is PowerState.POWER_ON
    driver.set_power_state(b, PowerState.SOFT_POWER_OFF)
    assert driver.get_power_state(b) is PowerState.POWER_OFF
    assert driver.machines["a"].boots == 1
    driver.reboot(a)
    driver.set_power_state(a, PowerState.SOFT_REBOOT)
    assert driver.machines["a"].boots == 3
    assert driver.get_boot_device(a) == BootSetting(BootDevice.DISK, True)
    driver.set_boot_device(a, BootDevice.PXE)
    assert driver.get_boot_device(a) == BootSetting(BootDevice.PXE, False)
    assert driver.get_boot_device(b).device is BootDevice.DISK
    assert ("set_boot_device", "a", (BootDevice.PXE, False)) in driver.calls


def test_failures_on_request() -> None:
    driver = FakeDriver()
    with pytest.raises(BmcAuthError):
        driver.get_power_state({"fake_fail": "auth"})
    with pytest.raises(BmcUnreachable):
        driver.set_power_state({"fake_fail": "unreachable"}, PowerState.POWER_ON)
    with pytest.raises(BmcError, match="fan on fire"):
        driver.get_boot_device({"fake_fail": "fan on fire"})
    driver.validate({"fake_fail": "auth"})  # validate never talks to the "BMC"
    with pytest.raises(DriverInfoError) as info:
        driver.validate({"fake_power_state": "rebooting", "fake_delay": -1})
    assert info.value.fields == ("fake_power_state", "fake_delay")


def test_delays_and_timeouts_on_a_fake_clock() -> None:
    clock = Clock()
    driver = FakeDriver(clock=clock, sleep=clock.sleep, interval=0.5)
    slow = {"fake_id": "slow", "fake_delay": 3}
    driver.set_power_state(slow, PowerState.POWER_ON, timeout=5)
    assert clock.now == pytest.approx(3.0)
    with pytest.raises(PowerTimeout, match='still "power on"'):
        driver.set_power_state(slow, PowerState.POWER_OFF, timeout=1)
    clock.now += 5
    assert driver.get_power_state(slow) is PowerState.POWER_OFF
