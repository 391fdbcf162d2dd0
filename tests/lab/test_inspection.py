"""Issue 4's first slice, end to end in the lab: a QEMU VM is inspected by pxeforge's own agent.

``pxeforge serve`` runs in the lab namespace *without* ``--kernel``: its boot plane follows the
inventory (`pxeforge.inventory.booter.InventoryBooter`), with the agent ramdisk from
``pxeforge ramdisk build`` as ``--deploy-kernel``/``--deploy-ramdisk`` and the REST API on the
bridge address (noauth). The test, through the API inside the namespace:

    enroll (manual-management, the VM's MAC as a port) → manage → manageable → inspect
    → inspect wait; then it powers the VM on itself (manual management): BIOS iPXE ROM →
    pxelinux.0 → the agent's pxelinux config (ipa-api-url, BOOTIF) → kernel + initramfs over
    TFTP → /init → DHCP → ``python3 -m pxeforge.agent``: lookup, heartbeat,
    ``POST /v1/continue_inspection`` → manageable.

The stored inventory must describe the VM: its CPU count (-smp), its memory (-m), its disk
(a sparse raw image on virtio-blk) and its NIC's MAC; the node's properties follow from it.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from pxeforge.config import BootMethod
from pxeforge.lab import netns, procs
from pxeforge.lab.guest import default_cache_dir
from pxeforge.lab.qemu import VmFirmware, vm_mac
from pxeforge.lab.run import Lab, LabConfig, fetch_callbacks
from pxeforge.ramdisk.build import BuildConfig, BuildResult, build_ramdisk

CPUS = 2
MEMORY_MB = 768
DISK_MB = 10 * 1024  # sparse; Ironic's root disk must be >= 4 GiB
INSPECT_TIMEOUT = 180.0  # seconds from VM start to manageable (TCG; measured below)
INSPECT_TARGET = 120.0


@pytest.fixture(scope="module")
def agent_ramdisk(tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    if shutil.which("apt-get") is None:
        pytest.skip("the ramdisk build downloads Debian packages with apt-get")
    proc = subprocess.run(["apt-cache", "show", "python3.11-minimal"], capture_output=True)
    if proc.returncode != 0:
        pytest.skip("apt knows no python3.11-minimal (not Debian 12?)")
    out = tmp_path_factory.mktemp("agent-ramdisk")
    return build_ramdisk(BuildConfig(out=out, cache=default_cache_dir()))


def _wait_state(lab: Lab, uuid: str, state: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        node: dict[str, Any] = lab.api("GET", f"/v1/nodes/{uuid}")
        if node["provision_state"] == state:
            return node
        if node["provision_state"] in ("inspect failed", "enroll") and state != "enroll":
            raise AssertionError(f"node went {node['provision_state']}: {node['last_error']}")
        if time.monotonic() > deadline:
            raise AssertionError(f"node still {node['provision_state']!r}, not {state!r}")
        for vm in lab.vms:
            assert vm.exited() is None or state == "manageable", f"QEMU exited: {vm.exited()}"
        time.sleep(1.0)


@pytest.mark.lab
def test_agent_inspects_a_vm(agent_ramdisk: BuildResult, tmp_path: Path) -> None:
    assert agent_ramdisk.agent == "package", "the ramdisk carries the placeholder, not the agent"
    config = LabConfig(
        firmware=VmFirmware.BIOS,
        boot_method=BootMethod.PXELINUX,
        timeout=INSPECT_TIMEOUT,
        workdir=tmp_path / "lab",
        kernel=agent_ramdisk.kernel,
        initrd=agent_ramdisk.initramfs,
        inventory=True,
        memory_mb=MEMORY_MB,
        cpus=CPUS,
        disk_mb=DISK_MB,
    )
    lab = Lab(config, report=print)
    mac = vm_mac(0, VmFirmware.BIOS)
    try:
        with lab:
            node = lab.api("POST", "/v1/nodes", {"driver": "manual-management", "name": "vm0"})
            uuid = node["uuid"]
            lab.api("POST", "/v1/ports", {"address": mac, "node_uuid": uuid})
            lab.api("PUT", f"/v1/nodes/{uuid}/states/provision", {"target": "manage"})
            _wait_state(lab, uuid, "manageable", 30.0)
            lab.api("PUT", f"/v1/nodes/{uuid}/states/provision", {"target": "inspect"})
            _wait_state(lab, uuid, "inspect wait", 30.0)

            (vm,) = lab.start_vms()  # manual management: we are the hand on the power button
            started = time.monotonic()
            try:
                node = _wait_state(lab, uuid, "manageable", INSPECT_TIMEOUT)
            except AssertionError as exc:
                raise AssertionError(
                    f"{exc}\n--- console tail:\n{procs.tail(vm.files.serial_log, 40)}"
                    f"\n--- server log tail:\n{procs.tail(lab.server_log, 30)}"
                ) from None
            took = time.monotonic() - started
            data = lab.api("GET", f"/v1/nodes/{uuid}/inventory")
            ports = lab.api("GET", f"/v1/ports?node_uuid={uuid}")["ports"]
            callbacks = fetch_callbacks(lab.name, lab.server_ip, config.http_port)
            console = vm.files.serial_log.read_text(errors="replace")
    finally:
        leaked = netns.exists(lab.name)
        lab.close()
    assert not leaked, f"the lab left its namespace {lab.name} behind"

    # the ramdisk booted with the command line the inventory booter rendered (the lab hook
    # posted its /proc/cmdline before the agent started)
    (hook,) = [c for c in callbacks if c.get("mac") == mac]
    words = hook["cmdline"].split()
    api = f"http://{lab.server_ip}:{config.api_port}"
    assert f"ipa-api-url={api}" in words
    assert f"ipa-inspection-callback-url={api}/v1/continue_inspection" in words
    assert f"BOOTIF=01-{mac.replace(':', '-')}" in words
    assert f"pxelab.token={lab.token}" in words  # --agent-cmdline reached the kernel
    assert "starting the agent (attempt 1)" in console

    inv = data["inventory"]
    assert inv["cpu"]["count"] == CPUS
    assert inv["cpu"]["architecture"] == "x86_64"
    total_mb = inv["memory"]["total"] // (1024 * 1024)
    assert MEMORY_MB - 128 < total_mb <= MEMORY_MB, inv["memory"]
    assert inv["memory"]["physical_mb"] == MEMORY_MB, inv["memory"]
    disks = {d["name"]: d for d in inv["disks"]}
    assert "/dev/vda" in disks, inv["disks"]
    assert disks["/dev/vda"]["size"] == DISK_MB * 1024 * 1024
    macs = [i["mac_address"] for i in inv["interfaces"]]
    assert mac in macs, macs
    assert inv["boot"]["pxe_interface"] == mac

    props = node["properties"]
    assert props["cpus"] == CPUS
    assert props["memory_mb"] == MEMORY_MB
    assert props["local_gb"] == DISK_MB // 1024 - 1
    assert props["cpu_arch"] == "x86_64"
    assert node["power_state"] == "power off"
    assert [p["address"] for p in ports] == [mac]  # the enrolled port, not a duplicate
    print(f"BIOS/pxelinux inspection: VM start → manageable in {took:.1f} s")
    assert took < INSPECT_TARGET, f"inspection took {took:.1f} s"
