"""manual-management: no power control, every order is a note for the operator."""

from __future__ import annotations

import pytest

from pxeforge.drivers.base import BootDevice, BootSetting, Driver, PowerState, UnsupportedError
from pxeforge.drivers.manual import ManualDriver


def test_is_a_driver_that_needs_nothing() -> None:
    driver = ManualDriver()
    assert isinstance(driver, Driver) and driver.name == "manual-management"
    driver.validate({})
    assert driver.get_power_state({}) is None
    assert driver.get_boot_device({}) == BootSetting(None, None)


def test_orders_become_notes() -> None:
    driver = ManualDriver()
    note = driver.set_power_state({}, PowerState.POWER_ON)
    assert note is not None and note.startswith("please power on the machine")
    assert "manual-management" in note
    assert "power off" in (driver.set_power_state({}, PowerState.POWER_OFF) or "")
    assert "reset" in (driver.reboot({}) or "")
    boot = driver.set_boot_device({}, BootDevice.PXE, persistent=True)
    assert boot == (
        "please make the machine boot from the network (PXE) every time (driver manual-management)"
    )
    with pytest.raises(UnsupportedError):
        driver.set_power_state({}, PowerState.ERROR)
