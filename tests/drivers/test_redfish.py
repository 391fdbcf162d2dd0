"""The redfish driver: offline checks, then our client against sushy-tools' Redfish emulator.

The emulator's fake systems driver applies a power change 0–11 s after the request (its
``set_power_state`` picks the delay at random), so power tests allow 30 s per change.
"""

from __future__ import annotations

import time

import pytest

from pxeforge.drivers.base import (
    BmcAuthError,
    BmcError,
    BmcUnreachable,
    BootDevice,
    DriverInfoError,
    PowerState,
    UnsupportedError,
)
from pxeforge.drivers.redfish import RedfishDriver, parse_address, redfish_power_state

from .conftest import Sushy, fake_system, free_port, sushy_emulator

# ---- offline --------------------------------------------------------------------------------


def test_validate() -> None:
    driver = RedfishDriver()
    with pytest.raises(DriverInfoError, match='missing "redfish_address"') as info:
        driver.validate({"redfish_username": "u"})
    assert info.value.fields == ("redfish_address",)
    with pytest.raises(DriverInfoError) as info:
        driver.validate(
            {
                "redfish_address": "ftp://bmc",
                "redfish_verify_ca": "/no/such/bundle.pem",
                "redfish_auth_type": "session",
            }
        )
    assert info.value.fields == ("redfish_address", "redfish_verify_ca", "redfish_auth_type")
    driver.validate({"redfish_address": "bmc.example", "redfish_verify_ca": "False"})
    driver.validate({"redfish_address": "https://[2001:db8::1]:8443", "redfish_verify_ca": "/"})


def test_parse_address() -> None:
    assert str(parse_address("bmc.example")) == "https://bmc.example"
    assert str(parse_address("http://10.0.0.5:8000")) == "http://10.0.0.5:8000"
    assert str(parse_address("https://[2001:db8::1]:8443/")) == "https://[2001:db8::1]:8443"
    with pytest.raises(DriverInfoError):
        parse_address("https://bmc:99999")


def test_power_state_mapping() -> None:
    assert redfish_power_state("On") is PowerState.POWER_ON
    assert redfish_power_state("PoweringOff") is PowerState.POWER_OFF
    assert redfish_power_state("Paused") is PowerState.ERROR
    assert redfish_power_state(None) is PowerState.ERROR


# ---- against sushy-emulator -----------------------------------------------------------------


def fast() -> RedfishDriver:
    return RedfishDriver(request_timeout=5, poll_interval=0.25)


@pytest.mark.interop
def test_power_on_reboot_soft_off(sushy: Sushy) -> None:
    driver = fast()
    info = sushy.info()  # no redfish_system_id: the only system is discovered
    assert driver.get_power_state(info) is PowerState.POWER_OFF
    driver.set_power_state(info, PowerState.POWER_ON, timeout=30)
    assert driver.get_power_state(info) is PowerState.POWER_ON
    driver.reboot(info, timeout=30)  # ForceRestart: the emulator goes Off, then On
    assert driver.get_power_state(info) is PowerState.POWER_ON
    driver.set_power_state(info, PowerState.SOFT_POWER_OFF, timeout=30)
    assert driver.get_power_state(info) is PowerState.POWER_OFF
    resets = sushy.log().count("POST /redfish/v1/Systems/")
    assert resets == 3


@pytest.mark.interop
def test_hard_off_and_already_there() -> None:
    with sushy_emulator([fake_system(1, power="On")]) as sushy:
        driver = fast()
        uuid = sushy.systems[0]["uuid"]
        info = sushy.info(redfish_system_id=f"/redfish/v1/Systems/{uuid}")
        driver.set_power_state(info, PowerState.POWER_ON, timeout=30)  # already on: no request
        assert "POST" not in sushy.log()
        driver.set_power_state(info, PowerState.POWER_OFF, timeout=30)  # ForceOff
        assert sushy.log().count("POST") == 1
        bare_id = sushy.info(redfish_system_id=uuid)
        assert driver.get_power_state(bare_id) is PowerState.POWER_OFF


@pytest.mark.interop
def test_boot_device(sushy: Sushy) -> None:
    driver = fast()
    info = sushy.info()
    assert driver.get_boot_device(info).device is BootDevice.DISK  # the emulator's "Hdd"
    driver.set_boot_device(info, BootDevice.PXE)
    assert driver.get_boot_device(info).device is BootDevice.PXE
    driver.set_boot_device(info, BootDevice.CDROM, persistent=True)
    setting = driver.get_boot_device(info)
    assert setting.device is BootDevice.CDROM
    assert setting.persistent is True  # the emulator always reports "Continuous"
    with pytest.raises(UnsupportedError, match="cannot boot from BiosSetup"):
        driver.set_boot_device(info, BootDevice.BIOS)  # not in its AllowableValues
    with pytest.raises(UnsupportedError, match='no boot device "safe"'):
        driver.set_boot_device(info, BootDevice.SAFE)
    assert driver.get_boot_device(info).device is BootDevice.CDROM


@pytest.mark.interop
def test_wrong_password(sushy: Sushy) -> None:
    with pytest.raises(BmcAuthError, match="authentication failed") as info:
        fast().get_power_state(sushy.info(redfish_password="nope"))
    assert "HTTP 401" in str(info.value) and "nope" not in str(info.value)
    assert info.value.code == 400
    with pytest.raises(BmcAuthError):
        fast().set_power_state(sushy.info(redfish_username="mallory"), PowerState.POWER_ON, 5)


@pytest.mark.interop
def test_unknown_system(sushy: Sushy) -> None:
    with pytest.raises(DriverInfoError, match="redfish_system_id") as info:
        fast().get_power_state(sushy.info(redfish_system_id="no-such-system"))
    assert info.value.fields == ("redfish_system_id",)


@pytest.mark.interop
def test_several_systems_need_an_id() -> None:
    with sushy_emulator([fake_system(1), fake_system(2, power="On")]) as sushy:
        driver = fast()
        with pytest.raises(DriverInfoError, match="has 2 systems") as info:
            driver.get_power_state(sushy.info())
        assert info.value.fields == ("redfish_system_id",)
        second = sushy.info(redfish_system_id=sushy.systems[1]["uuid"])
        assert driver.get_power_state(second) is PowerState.POWER_ON


@pytest.mark.interop
def test_https_certificate_checks() -> None:
    with sushy_emulator([fake_system(1)], tls=True) as sushy:
        driver = fast()
        with pytest.raises(BmcError, match="not trusted.*redfish_verify_ca"):
            driver.get_power_state(sushy.info())  # verify_ca defaults to true
        assert driver.get_power_state(sushy.info(redfish_verify_ca=False)) is PowerState.POWER_OFF
        pinned = sushy.info(redfish_verify_ca=str(sushy.certificate))
        assert driver.get_power_state(pinned) is PowerState.POWER_OFF
        with pytest.raises(BmcAuthError):
            driver.get_power_state({**pinned, "redfish_password": "nope"})


def test_nothing_listening() -> None:
    info = {"redfish_address": f"http://127.0.0.1:{free_port()}", "redfish_username": "u"}
    started = time.monotonic()
    with pytest.raises(BmcUnreachable, match="cannot reach"):
        fast().get_power_state(info)
    assert time.monotonic() - started < 5
