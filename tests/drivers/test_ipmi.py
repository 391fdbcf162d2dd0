"""The ipmi driver: pure parts offline, then real ipmitool against OpenIPMI's ipmi_sim."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pxeforge.drivers.base import (
    BmcAuthError,
    BmcError,
    BmcUnreachable,
    BootDevice,
    BootSetting,
    DriverInfoError,
    PowerState,
    PowerTimeout,
)
from pxeforge.drivers.ipmi import (
    IpmiDriver,
    IpmiResult,
    classify,
    ipmitool_argv,
    parse_boot_flags,
    parse_power_status,
)
from pxeforge.drivers.lab import Qmp

from .conftest import EMU, IpmiSim, free_port, need, stop

BASE = {"ipmi_address": "10.0.0.9", "ipmi_username": "admin", "ipmi_password": "pw-SECRET"}

# ---- offline --------------------------------------------------------------------------------


def test_validate_names_every_missing_and_bad_field() -> None:
    driver = IpmiDriver()
    with pytest.raises(DriverInfoError, match='missing "ipmi_address"') as info:
        driver.validate({})
    assert info.value.fields == ("ipmi_address",)
    assert info.value.code == 400
    bad = {"ipmi_address": "h", "ipmi_port": "x", "ipmi_priv_level": "root"}
    with pytest.raises(DriverInfoError) as info:
        driver.validate(bad)
    assert set(info.value.fields) == {"ipmi_port", "ipmi_priv_level"}
    assert '"ipmi_port" must be an integer' in str(info.value)
    assert "ADMINISTRATOR" in str(info.value)
    with pytest.raises(DriverInfoError) as info:
        driver.validate({"ipmi_address": "h", "ipmi_bridging": "dual", "ipmi_target_channel": 7})
    assert set(info.value.fields) == {
        "ipmi_target_address",
        "ipmi_transit_channel",
        "ipmi_transit_address",
    }
    driver.validate({"ipmi_address": "h", "ipmi_port": "6230", "ipmi_priv_level": "operator"})


def test_argv_never_carries_the_password() -> None:
    argv = ipmitool_argv(BASE, ["power", "status"])
    assert "pw-SECRET" not in " ".join(argv)
    assert argv[:5] == ["ipmitool", "-I", "lanplus", "-H", "10.0.0.9"]
    assert argv[argv.index("-p") + 1] == "623"
    assert argv[argv.index("-L") + 1] == "ADMINISTRATOR"
    assert argv[argv.index("-U") + 1] == "admin"
    assert "-E" in argv and argv[-2:] == ["power", "status"]


def test_argv_options() -> None:
    argv = ipmitool_argv(
        {
            "ipmi_address": "bmc",
            "ipmi_port": "6230",
            "ipmi_protocol_version": "1.5",
            "ipmi_bridging": "dual",
            "ipmi_transit_channel": 0,
            "ipmi_transit_address": "0x82",
            "ipmi_target_channel": 7,
            "ipmi_target_address": "0x72",
        },
        ["mc", "info"],
    )
    assert argv[1:3] == ["-I", "lan"] and "-U" not in argv
    assert argv[argv.index("-p") + 1] == "6230"
    assert argv[argv.index("-B") + 1 : argv.index("-B") + 6] == ["0", "-T", "0x82", "-b", "7"]
    assert argv[argv.index("-t") + 1] == "0x72"


def test_parse_power_status() -> None:
    assert parse_power_status("Chassis Power is on\n") is PowerState.POWER_ON
    assert parse_power_status("Chassis Power is off\n") is PowerState.POWER_OFF
    with pytest.raises(BmcError, match="cannot read the power state"):
        parse_power_status("Chassis Power Control: Up/On\n")


def test_parse_boot_flags() -> None:
    # version 1, parameter 5, flags: valid+persistent, selector 1 (PXE)
    assert parse_boot_flags(" 01 05 c0 04 00 00 00\n") == BootSetting(BootDevice.PXE, True)
    assert parse_boot_flags(" 01 05 00 08 00 00 00\n") == BootSetting(BootDevice.DISK, False)
    assert parse_boot_flags(" 01 05 80 18 00 00 00\n") == BootSetting(BootDevice.BIOS, False)
    assert parse_boot_flags(" 01 05 80 00 00 00 00\n") == BootSetting(None, False)
    with pytest.raises(BmcError):
        parse_boot_flags(" 01 04 00\n")


def test_classify() -> None:
    where = "bmc:623"
    assert classify(IpmiResult(0, "Chassis Power is on\n", "noise\n"), where, "u") is None
    wrong_pw = IpmiResult(
        1, "", "> RAKP 2 HMAC is invalid\nError: Unable to establish IPMI v2 / RMCP+ session\n"
    )
    error = classify(wrong_pw, where, "admin")
    assert isinstance(error, BmcAuthError) and "authentication failed" in str(error)
    assert "'admin'" in str(error) and "ipmi_password" in str(error)
    no_bmc = IpmiResult(1, "", "Get Auth Capabilities error\nError: Unable to establish …\n")
    assert isinstance(classify(no_bmc, where, "admin"), BmcUnreachable)
    refused = IpmiResult(1, "", "Set Chassis Power Control to Cycle failed: Command not supported")
    error = classify(refused, where, None)
    assert type(error) is BmcError and "Command not supported" in str(error)
    # A verbose probe's complaint is noise; only the last line tells why the command failed.
    low = IpmiResult(
        1,
        "",
        "Invalid completion code received: Insufficient privilege level\n"
        "Set Chassis Power Control to Up/On failed: Insufficient privilege level\n",
    )
    assert isinstance(classify(low, where, "u"), BmcAuthError)
    probe_noise = IpmiResult(
        0, "Chassis Power is on\n", "Invalid completion code received: Insufficient privilege\n"
    )
    assert classify(probe_noise, where, "u") is None


# ---- against ipmi_sim -----------------------------------------------------------------------


def fast() -> IpmiDriver:
    return IpmiDriver(retries=1, poll_interval=0.2, retry_interval=0.2)


@pytest.mark.interop
def test_power_round_trip(ipmi_sim: IpmiSim) -> None:
    driver = fast()
    info = ipmi_sim.info()
    assert driver.get_power_state(info) is PowerState.POWER_OFF
    assert driver.set_power_state(info, PowerState.POWER_ON, timeout=10) is None
    assert ipmi_sim.state("power") == "1"
    assert driver.get_power_state(info) is PowerState.POWER_ON
    driver.set_power_state(info, PowerState.POWER_OFF, timeout=10)
    assert ipmi_sim.state("power") == "0"
    assert driver.get_power_state(info) is PowerState.POWER_OFF
    # Soft off reaches the chassis as a graceful shutdown request.
    driver.set_power_state(info, PowerState.POWER_ON, timeout=10)
    driver.set_power_state(info, PowerState.SOFT_POWER_OFF, timeout=10)
    assert "set shutdown 1" in ipmi_sim.calls()
    assert driver.get_power_state(info) is PowerState.POWER_OFF


@pytest.mark.interop
def test_reboot_is_off_then_on(ipmi_sim: IpmiSim) -> None:
    driver = fast()
    info = ipmi_sim.info()
    ipmi_sim.set_state("power", "1")
    driver.reboot(info, timeout=10)
    sets = [c for c in ipmi_sim.calls() if c.startswith("set power")]
    assert sets == ["set power 0", "set power 1"]
    assert driver.get_power_state(info) is PowerState.POWER_ON


@pytest.mark.interop
def test_power_timeout_when_the_chassis_does_not_follow(ipmi_sim: IpmiSim) -> None:
    ipmi_sim.set_state("stuck", "1")
    driver = fast()
    started = time.monotonic()
    with pytest.raises(PowerTimeout, match='waiting for "power on"|time ran out') as info:
        driver.set_power_state(ipmi_sim.info(), PowerState.POWER_ON, timeout=1.5)
    assert 1.5 <= time.monotonic() - started < 5
    assert info.value.code == 504
    assert ipmi_sim.state("power") is None  # the chassis never changed


@pytest.mark.interop
def test_cipher_suite_discovery(ipmi_sim: IpmiSim) -> None:
    info = ipmi_sim.info()
    del info["ipmi_cipher_suite"]  # ipmitool asks the BMC which suites it has (and waits)
    assert fast().get_power_state(info) is PowerState.POWER_OFF


@pytest.mark.interop
def test_boot_device(ipmi_sim: IpmiSim) -> None:
    driver = fast()
    info = ipmi_sim.info()
    assert driver.set_boot_device(info, BootDevice.PXE) is None
    assert ipmi_sim.state("boot") == "pxe"
    assert driver.get_boot_device(info).device is BootDevice.PXE
    driver.set_boot_device(info, BootDevice.DISK, persistent=True)
    assert ipmi_sim.state("boot") == "default"
    assert driver.get_boot_device(info).device is BootDevice.DISK
    # ipmi_sim knows no safe mode: the refusal is an error, although ipmitool exits 0.
    with pytest.raises(BmcError, match='refused boot device "safe"'):
        driver.set_boot_device(info, BootDevice.SAFE)


@pytest.mark.interop
def test_wrong_password_is_an_authentication_error(ipmi_sim: IpmiSim) -> None:
    driver = fast()
    started = time.monotonic()
    with pytest.raises(BmcAuthError, match="authentication failed") as info:
        driver.get_power_state(ipmi_sim.info(ipmi_password="nope"))
    assert "ipmi_password" in str(info.value) and "nope" not in str(info.value)
    assert info.value.code == 400
    with pytest.raises(BmcAuthError, match="authentication failed"):
        driver.get_power_state(ipmi_sim.info(ipmi_username="mallory"))
    assert time.monotonic() - started < 15
    assert ipmi_sim.calls() == []  # nothing reached the chassis


@pytest.mark.interop
def test_privilege_level_is_enforced(ipmi_sim: IpmiSim) -> None:
    driver = fast()
    watcher = ipmi_sim.info(ipmi_username="watcher", ipmi_password="peek", ipmi_priv_level="USER")
    assert driver.get_power_state(watcher) is PowerState.POWER_OFF
    with pytest.raises(BmcAuthError, match="lacks the privilege.*ipmi_priv_level"):
        driver.set_power_state(watcher, PowerState.POWER_ON, timeout=5)
    assert ipmi_sim.state("power") is None


@pytest.mark.interop
def test_nothing_listening_is_unreachable(ipmi_sim: IpmiSim) -> None:
    driver = fast()
    info = {**ipmi_sim.info(), "ipmi_port": free_port()}
    started = time.monotonic()
    with pytest.raises(BmcUnreachable, match="no IPMI session"):
        driver.get_power_state(info)
    assert time.monotonic() - started < 15


# ---- a QEMU VM behind ipmi_sim: the lab's VMs powered over real IPMI ------------------------

VM_LAN_CONF = """\
name "pxeforge-vm"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  serial 15 127.0.0.1 {serial} codec VM
  startcmd "{qemu}"
  startnow false
  poweroff_wait 2
  kill_wait 2
  user 2 true "admin" "s3cret" admin 10 none md2 md5 straight
"""


@pytest.mark.interop
def test_ipmi_sim_powers_a_qemu_vm(tmp_path: Path) -> None:
    """ipmi_sim starts QEMU at power on (``startcmd``) and talks to its ``ipmi-bmc-extern``.

    Power state is "the QEMU process exists"; power off asks QEMU for a graceful shutdown over
    the VM serial link, then SIGTERMs it after ``poweroff_wait``.
    """
    for tool, package in (("ipmi_sim", "openipmi"), ("ipmitool", "ipmitool"),
                          ("qemu-system-x86_64", "qemu-system-x86")):  # fmt: skip
        need(tool, shutil.which(tool) is not None, f"apt-get install {package}")
    port, serial = free_port(socket.SOCK_DGRAM), free_port()
    qmp, pidfile = tmp_path / "vm.qmp", tmp_path / "vm.pid"
    qemu = (
        "qemu-system-x86_64 -machine pc,accel=tcg -m 64 -nodefaults -display none "
        f"-qmp unix:{qmp},server=on,wait=off -pidfile {pidfile} "
        f"-chardev socket,id=ipmi0,host=127.0.0.1,port={serial},reconnect=1 "
        "-device ipmi-bmc-extern,id=bmc0,chardev=ipmi0 -device isa-ipmi-kcs,bmc=bmc0"
    )
    (tmp_path / "lan.conf").write_text(VM_LAN_CONF.format(port=port, serial=serial, qemu=qemu))
    (tmp_path / "sim.emu").write_text(EMU)
    (tmp_path / "state").mkdir()
    with open(tmp_path / "sim.log", "wb") as out:
        sim = subprocess.Popen(
            ["ipmi_sim", "-c", str(tmp_path / "lan.conf"), "-f", str(tmp_path / "sim.emu"),
             "-s", str(tmp_path / "state"), "-n"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    info = {"ipmi_address": "127.0.0.1", "ipmi_port": port, "ipmi_username": "admin",
            "ipmi_password": "s3cret", "ipmi_cipher_suite": 3}  # fmt: skip
    driver = fast()
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                assert driver.get_power_state(info) is PowerState.POWER_OFF
                break
            except BmcUnreachable:
                assert time.monotonic() < deadline, "ipmi_sim did not answer"
        driver.set_power_state(info, PowerState.POWER_ON, timeout=20)
        _wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
        vm_pid = int(pidfile.read_text())
        _wait_for(lambda: _qemu_status(qmp) is not None)  # listening, not just bound
        assert _qemu_status(qmp) == "running"
        driver.set_power_state(info, PowerState.POWER_OFF, timeout=30)
        assert not _alive(vm_pid)
        # QEMU ended on the BMC's request over the ipmi-bmc-extern link: no SIGTERM was needed
        # (QEMU would have logged "terminating on signal 15").
        assert "terminating on signal" not in (tmp_path / "sim.log").read_text(errors="replace")
    finally:
        if pidfile.exists() and _alive(pid := int(pidfile.read_text().strip() or 0)):
            os.kill(pid, signal.SIGTERM)  # our VM, orphaned if ipmi_sim failed to stop it
        stop(sim)


def _wait_for(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {check}"
        time.sleep(0.05)


def _qemu_status(qmp: Path) -> str | None:
    try:
        with Qmp(str(qmp)) as monitor:
            return monitor.status()
    except BmcUnreachable:
        return None


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, waiting for a reaper that never comes, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
