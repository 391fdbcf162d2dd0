"""The agent ramdisk (`pxeforge ramdisk build`) boots in the lab, on BIOS and on UEFI.

Each test builds the ramdisk (warm: the cache is the one tests/ramdisk/test_build.py and the
lab share), hands its kernel and initramfs to ``pxeforge serve`` through `LabConfig`, and boots
a QEMU VM (TCG) in a private namespace. The VM passes when the *image's own Python* called
back: its /init loaded the NIC driver from the generated modules.dep, picked the interface,
got a DHCP lease from pxeforge, and ran the lab hook, which POSTs the MAC, the address, the
kernel command line (with the run's token), the Python and OpenSSL versions and the loaded
modules. The serial console must then show the agent being started.

    1. BIOS iPXE ROM → pxelinux.0 → kernel + 16 MB initramfs over TFTP, BOOTIF= on the line
    2. UEFI OVMF → snponly.efi → iPXE script → kernel + initramfs over HTTP, no BOOTIF
       (the first interface with carrier is used)
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pxeforge.config import BootMethod
from pxeforge.lab import netns, procs
from pxeforge.lab.guest import default_cache_dir
from pxeforge.lab.qemu import VmFirmware, vm_mac
from pxeforge.lab.run import Lab, LabConfig, LabResult
from pxeforge.ramdisk.build import BuildConfig, BuildResult, build_ramdisk
from pxeforge.ramdisk.build_init import PLACEHOLDER_MESSAGE

BOOT_TIMEOUT = 150.0  # the lab's verdict deadline (a TCG boot here takes ~30-45 s)
BOOT_TARGET = 90.0  # seconds from VM start to the ramdisk's callback (measured ~35-45 s)


@pytest.fixture(scope="module")
def agent_ramdisk(tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    if shutil.which("apt-get") is None:
        pytest.skip("the ramdisk build downloads Debian packages with apt-get")
    proc = subprocess.run(["apt-cache", "show", "python3.11-minimal"], capture_output=True)
    if proc.returncode != 0:
        pytest.skip("apt knows no python3.11-minimal (not Debian 12?)")
    out = tmp_path_factory.mktemp("agent-ramdisk")
    return build_ramdisk(BuildConfig(out=out, cache=default_cache_dir()))


def _boot(
    workdir: Path, firmware: VmFirmware, method: BootMethod, image: BuildResult, cmdline: str
) -> LabResult:
    config = LabConfig(
        firmware=firmware,
        boot_method=method,
        timeout=BOOT_TIMEOUT,
        workdir=workdir,
        cmdline=cmdline,
        kernel=image.kernel,
        initrd=image.initramfs,
    )
    lab = Lab(config, report=print)
    try:
        with lab:
            result = lab.boot()
    finally:
        leaked = netns.exists(lab.name)
        lab.close()
    assert not leaked, f"the lab left its namespace {lab.name} behind"
    return result


def _check(result: LabResult, image: BuildResult, *, bootif: bool, uefi: bool) -> None:
    vm = result.vms[0]
    console = vm.serial_log.read_text(errors="replace")
    assert vm.ok, (
        f"{result.path}: {vm.reason}\n--- console tail:\n{procs.tail(vm.serial_log, 40)}"
        f"\n--- server log tail:\n{procs.tail(result.server_log, 20)}"
    )
    body = vm.callback_body
    assert body is not None
    assert body["source"] == "pxeforge-ramdisk"
    assert body["mac"] == vm.mac
    assert body["ip"].startswith("10.213.0.")
    assert f"pxelab.token={result.token}" in body["cmdline"].split()
    assert body["kernel"] == image.data["kernel"]["release"]
    assert body["python"].startswith("3.11.")
    assert body["openssl"].startswith("OpenSSL 3.")
    assert body["sha256_ok"] is True
    assert {"virtio_net", "virtio_pci", "net_failover", "failover"} <= set(body["modules"])
    assert body["agent"] == image.agent
    assert body["boot_mode"] == ("uefi" if uefi else "bios")
    assert (body["efivars"] > 0) is uefi  # efivarfs loaded and mounted on UEFI only
    assert "pxeforge-ramdisk: modprobe" not in console, "a module failed to load"
    assert f"DHCP on eth0 ({vm.mac})" in console
    assert ("no interface has the BOOTIF address" in console) is False
    if bootif:
        assert f"BOOTIF=01-{vm.mac.replace(':', '-')}" in body["cmdline"]
    assert "starting the agent (attempt 1)" in console
    if image.agent == "placeholder":
        assert PLACEHOLDER_MESSAGE in console
    assert vm.callback is not None and vm.kernel is not None
    assert vm.callback < BOOT_TARGET, f"callback after {vm.callback:.1f} s"
    print(
        f"{result.path}: kernel requested {vm.kernel:.1f} s, ramdisk called back "
        f"{vm.callback:.1f} s after VM start ({image.initramfs_size} byte initramfs)"
    )


@pytest.mark.lab
def test_ramdisk_boots_on_bios_over_tftp_with_bootif(
    agent_ramdisk: BuildResult, tmp_path: Path
) -> None:
    mac = vm_mac(0, VmFirmware.BIOS)
    result = _boot(
        tmp_path / "bios",
        VmFirmware.BIOS,
        BootMethod.PXELINUX,
        agent_ramdisk,
        f"BOOTIF=01-{mac.replace(':', '-')}",
    )
    _check(result, agent_ramdisk, bootif=True, uefi=False)


@pytest.mark.lab
def test_ramdisk_boots_on_uefi_over_http(agent_ramdisk: BuildResult, tmp_path: Path) -> None:
    result = _boot(tmp_path / "uefi", VmFirmware.UEFI, BootMethod.IPXE, agent_ramdisk, "")
    _check(result, agent_ramdisk, bootif=False, uefi=True)
