"""QEMU command lines and the QMP client (pure, plus one real QEMU when installed)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from pxeforge.lab.netns import ns_exec
from pxeforge.lab.qemu import (
    OVMF_CODE,
    QEMU,
    Vm,
    VmFiles,
    VmFirmware,
    VmSpec,
    qemu_argv,
    vm_mac,
    vm_uuid,
)


def _spec(fw: VmFirmware, accel: str = "tcg") -> VmSpec:
    return VmSpec(name="vm0", mac=vm_mac(0, fw), tap="tap0", firmware=fw, accel=accel)


def _opt(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_macs_and_uuids_are_fixed_and_distinct() -> None:
    macs = {vm_mac(i, fw) for i in range(8) for fw in VmFirmware}
    assert len(macs) == 16
    assert vm_mac(0) == "52:54:00:77:00:10"
    assert vm_mac(1, VmFirmware.UEFI) == "52:54:00:77:01:11"
    assert vm_uuid("52:54:00:77:00:10") == "5a1ab000-0000-4000-8000-525400770010"
    with pytest.raises(ValueError):
        vm_mac(240)


def test_bios_command_line(tmp_path: Path) -> None:
    files = VmFiles.in_dir(tmp_path, "vm0")
    argv = qemu_argv(_spec(VmFirmware.BIOS), files)
    assert argv[0] == QEMU
    assert _opt(argv, "-machine") == ["pc,accel=tcg"]
    assert _opt(argv, "-boot") == ["n"]
    assert _opt(argv, "-fw_cfg") == [f"name=etc/sercon-port,file={files.sercon}"]
    assert _opt(argv, "-device") == ["virtio-net-pci,netdev=net0,mac=52:54:00:77:00:10"]
    assert _opt(argv, "-netdev") == ["tap,id=net0,ifname=tap0,script=no,downscript=no"]
    assert _opt(argv, "-uuid") == ["5a1ab000-0000-4000-8000-525400770010"]
    assert _opt(argv, "-serial") == [f"file:{files.serial_log}"]
    assert _opt(argv, "-qmp") == [f"unix:{files.qmp_socket},server=on,wait=off"]
    assert _opt(argv, "-display") == ["none"]
    assert "-no-reboot" in argv
    assert "-drive" not in argv


def test_uefi_command_line(tmp_path: Path) -> None:
    files = VmFiles.in_dir(tmp_path, "vm0")
    argv = qemu_argv(_spec(VmFirmware.UEFI, accel="kvm"), files)
    assert _opt(argv, "-machine") == ["q35,accel=kvm"]
    assert _opt(argv, "-drive") == [
        f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
        f"if=pflash,format=raw,unit=1,file={files.vars}",
    ]
    # EDK2's own PXE (no iPXE option ROM), and the NIC first in the boot order
    assert _opt(argv, "-device") == [
        "virtio-net-pci,netdev=net0,mac=52:54:00:77:01:10,romfile=,bootindex=1"
    ]
    assert "-boot" not in argv
    assert all(v.startswith("name=opt/org.tianocore/") for v in _opt(argv, "-fw_cfg"))


def test_disk_paused_and_ovmf_network_options(tmp_path: Path) -> None:
    files = VmFiles.in_dir(tmp_path, "vm0")
    disk = tmp_path / "d.raw"
    bios = VmSpec("vm0", vm_mac(0), "tap0", VmFirmware.BIOS, disk=disk, paused=True)
    argv = qemu_argv(bios, files)
    assert "-S" in argv  # powered off until QMP cont (the lab power driver)
    assert f"file={disk},format=raw,if=none,id=disk0,cache=unsafe" in _opt(argv, "-drive")
    assert "virtio-blk-pci,drive=disk0" in _opt(argv, "-device")  # BIOS: -boot n, then disk
    uefi = VmSpec("vm0", vm_mac(0, VmFirmware.UEFI), "tap0", VmFirmware.UEFI, disk=disk)
    argv = qemu_argv(uefi, files)
    assert "-S" not in argv
    # OVMF: network first, the disk next (local boot hands back to the firmware)
    assert "virtio-blk-pci,drive=disk0,bootindex=2" in _opt(argv, "-device")
    assert _opt(argv, "-fw_cfg") == [
        "name=opt/org.tianocore/IPv6PXESupport,string=no",
        "name=opt/org.tianocore/IPv6Support,string=no",
    ]


def test_vm_runs_inside_the_namespace(tmp_path: Path) -> None:
    vm = Vm(_spec(VmFirmware.BIOS), VmFiles.in_dir(tmp_path, "vm0"), "pxf-1-0")
    assert vm.argv()[:4] == ns_exec("pxf-1-0", [])[:4] == ["ip", "netns", "exec", "pxf-1-0"]
    assert vm.argv()[4:] == qemu_argv(vm.spec, vm.files)


@pytest.mark.skipif(shutil.which(QEMU) is None, reason=f"{QEMU} not installed")
def test_qmp_talks_to_a_real_qemu_and_quits_it(tmp_path: Path) -> None:
    """A VM with no network and no firmware work to do: QMP status, then quit."""
    from pxeforge.lab import procs
    from pxeforge.lab.qemu import Qmp

    sock = tmp_path / "q.qmp"
    argv = [QEMU, "-machine", "none", "-nodefaults", "-display", "none", "-S"]
    argv += ["-qmp", f"unix:{sock},server=on,wait=off"]
    proc = procs.start(argv, tmp_path / "qemu.log", what="qemu")
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        qmp = Qmp(sock)
        assert qmp.command("query-status")["status"] == "prelaunch"
        assert qmp.command("quit") == {}
        assert proc.wait(timeout=10) == 0
    finally:
        procs.stop(proc)


class _BareVm(Vm):
    """A Vm whose QEMU has no machine, no network and no namespace: enough for QMP."""

    def __init__(self, tmp_path: Path, extra: list[str]) -> None:
        super().__init__(_spec(VmFirmware.BIOS), VmFiles.in_dir(tmp_path, "vm0"), "unused")
        self.extra = extra

    def argv(self) -> list[str]:
        return [QEMU, "-machine", "none", "-nodefaults", "-display", "none", "-S"] + [
            "-qmp", f"unix:{self.files.qmp_socket},server=on,wait=off", *self.extra
        ]  # fmt: skip


@pytest.mark.skipif(shutil.which(QEMU) is None, reason=f"{QEMU} not installed")
def test_wait_qmp_returns_once_qemu_answers_and_fails_when_it_exits(tmp_path: Path) -> None:
    from pxeforge.errors import StartupError

    vm = _BareVm(tmp_path, [])
    vm.start()
    try:
        vm.wait_qmp(timeout=20)  # no sleep before: the socket appears while we wait
        assert vm.qmp().command("query-status")["status"] == "prelaunch"
    finally:
        vm.stop()
    broken = _BareVm(tmp_path, ["-no-such-option"])
    broken.start()
    with pytest.raises(StartupError, match="exited"):
        broken.wait_qmp(timeout=20)
    broken.stop()
