"""The lab driver against real QEMU processes, driven over their QMP sockets.

``-machine none`` is a VM with no CPU work at all; the ``pc`` runs boot SeaBIOS with no disk
(it spins looking for one), enough to show what resets do to a real machine. A guest shutdown
is produced the way an OS does it: writing S5 to the ACPI PM1a control register (I/O port
0x604 on QEMU's PIIX4 as SeaBIOS sets it up), here through the monitor's ``o`` command.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pxeforge.drivers.base import (
    BmcUnreachable,
    BootDevice,
    BootSetting,
    Driver,
    DriverInfoError,
    PowerState,
    PowerTimeout,
    UnsupportedError,
)
from pxeforge.drivers.lab import LabDriver, Qmp, QmpCommandError, lab_power_state

from .conftest import need, stop

QEMU = "qemu-system-x86_64"


class Vm:
    def __init__(self, proc: subprocess.Popen[bytes], socket: Path) -> None:
        self.proc, self.socket = proc, socket

    @property
    def info(self) -> dict[str, str]:
        return {"lab_qmp_socket": str(self.socket)}

    def status(self) -> str:
        with Qmp(str(self.socket)) as qmp:
            return qmp.status()

    def guest_shutdown(self, timeout: float = 10.0) -> None:
        """What an OS does to power off: S5 into PM1a_CNT (SLP_EN, SLP_TYP 0).

        The port exists once SeaBIOS has set the PM I/O base, a moment after reset: retry.
        """
        deadline = time.monotonic() + timeout
        with Qmp(str(self.socket)) as qmp:
            while qmp.status() != "shutdown":
                assert time.monotonic() < deadline, "the guest shutdown did not happen"
                qmp.execute("human-monitor-command", **{"command-line": "o /w 0x604 0x2000"})
                time.sleep(0.05)


StartVm = Callable[..., Vm]


@pytest.fixture
def start_vm() -> Iterator[StartVm]:
    need(QEMU, shutil.which(QEMU) is not None, "apt-get install qemu-system-x86")
    root = Path(tempfile.mkdtemp(prefix="pxeforge-labdrv-"))
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> Vm:
        sock = root / f"vm{len(procs)}.qmp"
        argv = [QEMU, "-nodefaults", "-display", "none", "-m", "64",
                "-qmp", f"unix:{sock},server=on,wait=off", *args]  # fmt: skip
        with open(root / "qemu.log", "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        procs.append(proc)
        vm = Vm(proc, sock)
        deadline = time.monotonic() + 30
        while True:  # the socket file appears (bind) a moment before QEMU listens on it
            try:
                vm.status()
                return vm
            except BmcUnreachable:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"QEMU did not start: {(root / 'qemu.log').read_text()}")
                time.sleep(0.02)

    try:
        yield start
    finally:
        for proc in procs:
            stop(proc)
        shutil.rmtree(root, ignore_errors=True)


def test_offline() -> None:
    driver = LabDriver()
    assert isinstance(driver, Driver)
    with pytest.raises(DriverInfoError, match='missing "lab_qmp_socket"'):
        driver.validate({})
    with pytest.raises(DriverInfoError, match="absolute path"):
        driver.validate({"lab_qmp_socket": "vm0.qmp"})
    assert lab_power_state("running") is PowerState.POWER_ON
    assert lab_power_state("prelaunch") is PowerState.POWER_OFF
    assert lab_power_state("shutdown") is PowerState.POWER_OFF
    assert lab_power_state("guest-panicked") is PowerState.ERROR


def test_no_vm_is_unreachable(tmp_path: Path) -> None:
    with pytest.raises(BmcUnreachable, match="is the VM running"):
        LabDriver().get_power_state({"lab_qmp_socket": str(tmp_path / "gone.qmp")})


def test_power_cycle(start_vm: StartVm) -> None:
    vm = start_vm("-machine", "none")
    driver = LabDriver()
    assert driver.get_power_state(vm.info) is PowerState.POWER_ON
    driver.set_power_state(vm.info, PowerState.POWER_OFF, timeout=20)
    assert vm.status() == "prelaunch"  # stopped and reset: nothing runs
    assert driver.get_power_state(vm.info) is PowerState.POWER_OFF
    driver.set_power_state(vm.info, PowerState.POWER_OFF, timeout=20)  # already off
    driver.set_power_state(vm.info, PowerState.POWER_ON, timeout=20)
    assert vm.status() == "running"
    driver.reboot(vm.info, timeout=20)
    assert vm.status() == "running"
    assert vm.proc.poll() is None


def test_starts_off_with_dash_s(start_vm: StartVm) -> None:
    vm = start_vm("-machine", "none", "-S")
    driver = LabDriver()
    assert driver.get_power_state(vm.info) is PowerState.POWER_OFF
    driver.reboot(vm.info, timeout=20)  # rebooting an off machine powers it on
    assert vm.status() == "running"


def test_reset_survives_no_reboot(start_vm: StartVm) -> None:
    # The lab boots VMs with -no-reboot: a reset would end QEMU unless the driver takes over.
    vm = start_vm("-machine", "pc,accel=tcg", "-no-reboot")
    driver = LabDriver()
    driver.set_power_state(vm.info, PowerState.POWER_OFF, timeout=20)
    assert vm.proc.poll() is None and vm.status() == "prelaunch"
    driver.set_power_state(vm.info, PowerState.POWER_ON, timeout=20)
    driver.reboot(vm.info, timeout=20)
    assert vm.proc.poll() is None and vm.status() == "running"


def test_guest_shutdown_then_power_on(start_vm: StartVm) -> None:
    vm = start_vm("-machine", "pc,accel=tcg", "-no-reboot")
    driver = LabDriver()
    assert driver.get_power_state(vm.info) is PowerState.POWER_ON  # takes no action
    driver.set_power_state(vm.info, PowerState.POWER_ON, timeout=20)  # sets the actions
    vm.guest_shutdown()
    time.sleep(0.2)
    assert vm.proc.poll() is None  # paused by the driver's shutdown=pause, not exited
    assert vm.status() == "shutdown"
    assert driver.get_power_state(vm.info) is PowerState.POWER_OFF
    driver.set_power_state(vm.info, PowerState.POWER_ON, timeout=20)  # reset, then cont
    assert vm.status() == "running"


def test_soft_off_needs_a_guest_that_listens(start_vm: StartVm) -> None:
    vm = start_vm("-machine", "pc,accel=tcg")
    started = time.monotonic()
    with pytest.raises(PowerTimeout, match="ACPI"):
        LabDriver().set_power_state(vm.info, PowerState.SOFT_POWER_OFF, timeout=1)
    assert time.monotonic() - started < 5
    assert vm.status() == "running"  # SeaBIOS ignores the power button


def test_boot_device(start_vm: StartVm) -> None:
    vm = start_vm("-machine", "none")
    driver = LabDriver()
    assert driver.set_boot_device(vm.info, BootDevice.PXE) is not None
    assert driver.get_boot_device(vm.info) == BootSetting(BootDevice.PXE, True)
    assert "local-boot" in (driver.set_boot_device(vm.info, BootDevice.DISK, True) or "")
    assert driver.get_boot_device(vm.info) == BootSetting(BootDevice.PXE, True)
    with pytest.raises(UnsupportedError, match="always boots from the network"):
        driver.set_boot_device(vm.info, BootDevice.CDROM)


def test_qmp_errors_are_reported(start_vm: StartVm) -> None:
    vm = start_vm("-machine", "none")
    with Qmp(str(vm.socket)) as qmp, pytest.raises(QmpCommandError) as info:
        qmp.execute("no-such-command")
    assert info.value.error_class == "CommandNotFound"
