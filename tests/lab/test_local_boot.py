"""Local boot reaches the disk: an ``active`` node that boots from the network first ends up in
the system on its own disk — through iPXE, on BIOS and on UEFI.

(The pxelinux ``localboot 0`` and GRUB chainload answers are exercised by the lifecycle tests,
tests/lab/test_lifecycle.py, at the end of each deploy.)

The VM's disk starts as a copy of the lab's bootable image (`pxeforge.lab.image`); the node is
enrolled with the ``lab`` power driver, managed and *adopted* (Ironic's way to take over a
machine that is already deployed) → ``active``. Powering it on through the API starts the VM's
firmware, which boots from the network: pxeforge answers the ``active`` node with a local boot
iPXE script, and the firmware must go on to the disk, whose system prints its marker.

* BIOS: QEMU's iPXE ROM → ``boot.ipxe`` → ``sanboot --drive 0x80`` (the disk via INT 13h).
* UEFI: OVMF → snponly.efi → ``boot.ipxe`` → ``exit 1`` → OVMF's next boot option. With a
  plain ``exit`` iPXE returned EFI_SUCCESS and OVMF stopped in its setup menu; the failure
  status makes it go on (through HTTP boot over IPv4, which gets iPXE again) to the disk.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pxeforge.config import BootMethod
from pxeforge.lab import netns, procs
from pxeforge.lab.image import build_disk_image
from pxeforge.lab.qemu import VmFirmware
from pxeforge.lab.run import Lab, LabConfig
from pxeforge.ramdisk.build import BuildResult

BOOT_TIMEOUT = 150.0  # power on → marker (measured: BIOS ~15-20 s, UEFI ~40 s: two iPXE runs)


@pytest.mark.lab
@pytest.mark.parametrize(
    ("firmware", "evidence"),
    [
        pytest.param(VmFirmware.BIOS, "Booting from SAN device 0x80", id="bios-ipxe-sanboot"),
        pytest.param(VmFirmware.UEFI, "Error 0x00000001", id="uefi-ipxe-exit"),
    ],
)
def test_an_active_node_boots_its_disk_through_ipxe(
    agent_ramdisk: BuildResult, tmp_path: Path, firmware: VmFirmware, evidence: str
) -> None:
    image = build_disk_image(
        tmp_path / "disk.raw", kernel=agent_ramdisk.kernel, token=f"local-{firmware.value}"
    )
    config = LabConfig(
        firmware=firmware,
        boot_method=BootMethod.IPXE,
        workdir=tmp_path / "lab",
        kernel=agent_ramdisk.kernel,  # the deploy ramdisk: an active node never gets it
        initrd=agent_ramdisk.initramfs,
        inventory=True,
        disk_image=image.path,
        paused=True,
        router_advertisements=True,
    )
    lab = Lab(config, report=print)
    try:
        with lab:
            (vm,) = lab.start_vms()
            body = {"driver": "lab", "name": "vm0", "driver_info": lab.driver_info(vm)}
            uuid = lab.api("POST", "/v1/nodes", body)["uuid"]
            lab.api("POST", "/v1/ports", {"address": vm.spec.mac, "node_uuid": uuid})
            for verb, state in (("manage", "manageable"), ("adopt", "active")):
                lab.api("PUT", f"/v1/nodes/{uuid}/states/provision", {"target": verb})
                deadline = time.monotonic() + 30
                while (node := lab.api("GET", f"/v1/nodes/{uuid}"))["provision_state"] != state:
                    assert time.monotonic() < deadline, f"{verb}: {node['provision_state']}"
                    time.sleep(0.5)
            assert node["power_state"] == "power off"  # QEMU -S: prelaunch

            started = time.monotonic()
            lab.api("PUT", f"/v1/nodes/{uuid}/states/power", {"target": "power on"})
            try:
                line = vm.wait_console(image.marker, BOOT_TIMEOUT)
            except TimeoutError as exc:
                raise AssertionError(
                    f"{exc}\n--- server log tail:\n{procs.tail(lab.server_log, 20)}"
                ) from None
            took = time.monotonic() - started
            console = vm.console()
            node = lab.api("GET", f"/v1/nodes/{uuid}")
            answered = lab.ra.answered if lab.ra is not None else 0
    finally:
        lab.close()
    assert not netns.exists(lab.name)

    assert f"{image.marker} boot_mode={firmware.value} " in line + " ", line
    assert "iPXE" in console and evidence in console, "not the iPXE local-boot path"
    # pxeforge answered the machine with its local-boot script (not nothing, not the agent)
    log = lab.server_log.read_text(errors="replace")
    assert f"iPXE script for {vm.spec.mac}" in log
    assert node["provision_state"] == "active" and node["power_state"] == "power on"
    assert answered >= 1, "iPXE's router solicitation went unanswered"
    print(f"{firmware.value}: power on → deployed system up in {took:.1f} s")
