"""End to end: real firmware boots the guest kernel through `pxeforge serve`, four ways.

Each test boots QEMU (TCG) in a private network namespace against ``pxeforge serve`` and
passes only when the guest kernel ran and its callback reached pxeforge with the VM's MAC and
the run's unique token that pxeforge put on the kernel command line. The capture then shows
that the VM walked the intended chain (which loader, which files over TFTP or HTTP), and the
milestones come in order: DHCP ACK, kernel request, callback.

    1. BIOS iPXE ROM → pxelinux.0 over TFTP → pxelinux.cfg → kernel+initrd over TFTP
    2. BIOS iPXE ROM → iPXE script over HTTP (two VMs at once)
    3. UEFI OVMF → shim (bootx64.efi) → GRUB (grubx64.efi) → kernel+initrd over TFTP
    4. UEFI OVMF → snponly.efi → iPXE script over HTTP
"""

from __future__ import annotations

import pytest

from pxeforge.boot.booter import KERNEL_REF
from pxeforge.config import BootMethod
from pxeforge.lab import procs
from pxeforge.lab.capture import EventKind, NetEvent
from pxeforge.lab.qemu import VmFirmware
from pxeforge.lab.run import LabResult

from .conftest import LabBoot

BIOS, UEFI = VmFirmware.BIOS, VmFirmware.UEFI
PXELINUX, IPXE = BootMethod.PXELINUX, BootMethod.IPXE


def _files(events: tuple[NetEvent, ...], mac: str, kind: EventKind, name: str) -> list[str]:
    """Paths the VM asked for (TFTP RRQ or HTTP GET), leading '/' and query removed."""
    return [
        e.path.split("?", 1)[0].lstrip("/")
        for e in events
        if e.mac == mac and e.kind is kind and e.name == name
    ]


def _first_ack_file(events: tuple[NetEvent, ...], mac: str) -> str:
    acks = [e for e in events if e.mac == mac and e.kind is EventKind.DHCP and e.name == "ACK"]
    assert acks, f"no DHCP ACK to {mac} in the capture"
    return acks[0].path


def _check_booted(result: LabResult) -> None:
    """Every VM called back with its MAC and our token; milestones in order."""
    for vm in result.vms:
        assert vm.ok, (
            f"{vm.name} ({result.path}): {vm.reason}\n--- console tail:\n"
            f"{procs.tail(vm.serial_log, 25)}\n--- server log tail:\n"
            f"{procs.tail(result.server_log, 25)}"
        )
        body = vm.callback_body
        assert body is not None
        assert body["mac"] == vm.mac
        assert f"pxelab.token={result.token}" in body["cmdline"].split()
        assert body["ip"].startswith("10.213.0.")
        assert vm.dhcp_ack is not None and vm.kernel is not None and vm.callback is not None
        assert 0 < vm.dhcp_ack < vm.kernel < vm.callback < 150
        print(
            f"{result.path}: {vm.name} ACK {vm.dhcp_ack:.1f} s, kernel {vm.kernel:.1f} s, "
            f"callback {vm.callback:.1f} s"
        )
    assert result.pcap.stat().st_size > 0


@pytest.mark.lab
def test_bios_ipxe_rom_pxelinux_tftp(lab_captures: LabBoot) -> None:
    result = lab_captures(BIOS, PXELINUX)
    _check_booted(result)
    mac = result.vms[0].mac
    assert _first_ack_file(result.events, mac) == "pxelinux.0"
    tftp = _files(result.events, mac, EventKind.TFTP, "RRQ")
    assert tftp[:2] == ["pxelinux.0", "ldlinux.c32"]
    configs = [f for f in tftp if f.startswith("pxelinux.cfg/")]
    assert "pxelinux.cfg/01-" + mac.replace(":", "-") in configs
    assert configs[-1] == "pxelinux.cfg/default"
    assert KERNEL_REF in tftp
    assert KERNEL_REF not in _files(result.events, mac, EventKind.HTTP, "GET")


@pytest.mark.lab
def test_bios_ipxe_rom_ipxe_script_http_two_vms(lab_captures: LabBoot) -> None:
    result = lab_captures(BIOS, IPXE, vms=2)
    assert len(result.vms) == 2
    assert len({vm.mac for vm in result.vms}) == 2
    _check_booted(result)
    ips = {vm.callback_body["ip"] for vm in result.vms if vm.callback_body}
    assert len(ips) == 2, f"two VMs, one address: {ips}"
    for vm in result.vms:
        assert _first_ack_file(result.events, vm.mac).startswith("http://10.213.0.1:")
        http = _files(result.events, vm.mac, EventKind.HTTP, "GET")
        assert KERNEL_REF in http
        assert not _files(result.events, vm.mac, EventKind.TFTP, "RRQ"), "iPXE used TFTP"


@pytest.mark.lab
def test_uefi_shim_grub_tftp(lab_captures: LabBoot) -> None:
    result = lab_captures(UEFI, PXELINUX)
    _check_booted(result)
    mac = result.vms[0].mac
    assert _first_ack_file(result.events, mac) == "bootx64.efi"
    tftp = _files(result.events, mac, EventKind.TFTP, "RRQ")
    assert tftp[0] == "bootx64.efi"
    assert "grubx64.efi" in tftp
    assert tftp.index("grubx64.efi") < tftp.index("grub/grub.cfg") < tftp.index(KERNEL_REF)


@pytest.mark.lab
def test_uefi_snponly_ipxe_script_http(lab_captures: LabBoot) -> None:
    result = lab_captures(UEFI, IPXE)
    _check_booted(result)
    mac = result.vms[0].mac
    assert _first_ack_file(result.events, mac) == "snponly.efi"
    tftp = _files(result.events, mac, EventKind.TFTP, "RRQ")
    assert set(tftp) == {"snponly.efi"}, f"only the iPXE loader over TFTP, got {tftp}"
    http = _files(result.events, mac, EventKind.HTTP, "GET")
    assert KERNEL_REF in http
    # the EFI stub finds the initrd only when the kernel line names it (docs/lab.md)
    cmdline = (result.vms[0].callback_body or {})["cmdline"]
    assert any(w.startswith("initrd=") for w in cmdline.split())
