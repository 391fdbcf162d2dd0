"""The registry: names → one driver object each; unknown and disabled names refused."""

from __future__ import annotations

import pytest

import pxeforge.drivers as drivers
from pxeforge.drivers import (
    DRIVERS,
    Driver,
    DriverInfoError,
    PowerState,
    Registry,
    UnknownDriver,
    enabled_drivers,
    get_driver,
)
from pxeforge.drivers.fake import FakeDriver


def test_every_driver_is_known_and_a_driver() -> None:
    assert enabled_drivers() == ("ipmi", "redfish", "manual-management", "fake-hardware", "lab")
    for name in DRIVERS:
        driver = get_driver(name)
        assert isinstance(driver, Driver) and driver.name == name
        assert get_driver(name) is driver  # made once


def test_unknown_and_disabled_names() -> None:
    registry = Registry(enabled=["ipmi", "manual-management"])
    assert registry.enabled == ("ipmi", "manual-management")
    with pytest.raises(UnknownDriver, match="hardware type\\(s\\): redfish") as info:
        registry.get("redfish")
    assert "Enabled: ipmi, manual-management." in str(info.value)
    assert info.value.code == 400
    with pytest.raises(UnknownDriver, match="idrac"):
        Registry(enabled=["idrac"])


def test_validate_and_injected_factories() -> None:
    fake = FakeDriver()
    registry = Registry(factories={"fake-hardware": lambda: fake})
    assert registry.validate("fake-hardware", {"fake_id": "n1"}) is fake
    registry.get("fake-hardware").set_power_state({"fake_id": "n1"}, PowerState.POWER_ON)
    assert fake.machines["n1"].power is PowerState.POWER_ON
    with pytest.raises(DriverInfoError):
        Registry().validate("ipmi", {})


def test_exports_are_sorted_and_complete() -> None:
    assert drivers.__all__ == sorted(drivers.__all__, key=lambda n: (not n.isupper(), n))
    for name in drivers.__all__:
        assert hasattr(drivers, name)
