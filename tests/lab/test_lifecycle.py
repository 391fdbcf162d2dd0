"""Issue 4 end to end in the lab: a QEMU VM goes through a whole Ironic lifecycle in pxeforge.

``pxeforge serve`` runs in the lab namespace with its boot plane following the inventory, the
agent ramdisk from ``pxeforge ramdisk build`` as deploy kernel/ramdisk and the REST API on the
bridge (noauth). The VM starts powered *off* (QEMU ``-S``) with an empty 10 GiB disk; the node
uses the ``lab`` power driver, so every power action from here on is pxeforge's own, through
the VM's QMP socket. Through the API inside the namespace:

    enroll (driver lab, the VM's MAC as a port) → manage → manageable
    → inspect: the agent's inventory must describe the VM (CPUs, memory, disk, MAC)
    → provide: automated cleaning in the agent (erase_devices_metadata: the old partition
      table and backup GPT header planted on the disk are gone) → available
    → deploy a whole-disk raw image pxeforge itself serves (``pxeforge image upload``; sha256)
      → active: the VM's disk holds the image byte for byte, and the VM boots it — pxeforge
      answers it with local boot, the firmware falls through to the disk, and the deployed
      system prints ``PXEFORGE-DEPLOYED <token> boot_mode=<bios|uefi>`` on the serial console
    → undeploy → cleaning (the image's partition table is erased) → available

once on BIOS (iPXE ROM → pxelinux) and once on UEFI (OVMF → shim → GRUB). Two failures:
a deploy whose checksum is wrong ends in ``deploy failed`` naming the checksum, the disk byte
for byte as it was (the agent checks an image that fits its RAM before it writes), and a
node whose agent cannot reach the API ends in ``deploy failed`` after the configured (short)
``deploy_callback_timeout``.

Every phase is timed and printed (``-s``); the totals are what .ci/run spends here.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pxeforge.config import BootMethod
from pxeforge.lab import netns, procs
from pxeforge.lab.image import build_disk_image
from pxeforge.lab.qemu import Vm, VmFirmware
from pxeforge.lab.run import Lab, LabConfig
from pxeforge.ramdisk.build import BuildResult

CPUS = 2
MEMORY_MB = 768
DISK_MB = 10 * 1024  # sparse; the agent's root device must be >= 4 GiB
MIB = 1024 * 1024
#: Seconds one agent-ramdisk phase may take (boot + work): measured 30-60 s under TCG here.
PHASE_TIMEOUT = 240.0
#: Seconds from power on to the deployed system's marker (local boot; measured 15-20 s).
LOCAL_BOOT_TIMEOUT = 120.0
#: The server's wait timeouts (a stuck phase fails in pxeforge, not just in this test).
SERVER_SETTINGS: dict[str, str | int | float | bool] = {
    "deploy_callback_timeout": 300,
    "clean_callback_timeout": 300,
    "inspect_wait_timeout": 300,
    "check_provision_state_interval": 2,
}
NO_CALLBACK_TIMEOUT = 20  # seconds: the no-callback test's deploy_callback_timeout


class Timer:
    """Phase timings, printed at the end of each test."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.phases: list[tuple[str, float]] = []
        self.t0 = self._last = time.monotonic()

    def lap(self, phase: str) -> None:
        now = time.monotonic()
        self.phases.append((phase, now - self._last))
        print(f"[{self.name}] {phase}: {now - self._last:.1f} s")
        self._last = now

    def report(self) -> None:
        text = ", ".join(f"{p} {t:.0f}" for p, t in self.phases)
        print(f"[{self.name}] total {time.monotonic() - self.t0:.1f} s ({text})")


@dataclass
class Node:
    lab: Lab
    vm: Vm
    uuid: str

    def get(self) -> dict[str, Any]:
        node: dict[str, Any] = self.lab.api("GET", f"/v1/nodes/{self.uuid}")
        return node

    def provision(self, target: str, **extra: Any) -> None:
        self.lab.api("PUT", f"/v1/nodes/{self.uuid}/states/provision", {"target": target, **extra})

    def patch(self, ops: list[dict[str, Any]]) -> None:
        self.lab.api("PATCH", f"/v1/nodes/{self.uuid}", ops)

    def diagnosis(self) -> str:
        history = self.lab.api("GET", f"/v1/nodes/{self.uuid}/history")["history"]
        events = "\n".join(f"  {h['created_at']} {h['event']}" for h in history[-15:])
        return (
            f"\n--- node history (last 15):\n{events}"
            f"\n--- console tail:\n{procs.tail(self.vm.files.serial_log, 30)}"
            f"\n--- server log tail:\n{procs.tail(self.lab.server_log, 30)}"
        )

    def wait(self, state: str, timeout: float, fail: tuple[str, ...] = ()) -> dict[str, Any]:
        """Poll until ``provision_state`` is ``state``; a state in ``fail`` (or a failure state
        not asked for) ends the wait at once, with the node's history and the console."""
        failures = {"inspect failed", "clean failed", "deploy failed", "error", *fail} - {state}
        deadline = time.monotonic() + timeout
        while True:
            try:
                node = self.get()
            except Exception as exc:  # the API did not answer: show what the server said
                log = procs.tail(self.lab.server_log, 60)
                raise AssertionError(f"GET node failed: {exc!r}\n--- server log:\n{log}") from exc
            current = node["provision_state"]
            if current == state:
                return node
            if current in failures or time.monotonic() > deadline:
                why = "went" if current in failures else f"after {timeout:.0f} s still"
                raise AssertionError(
                    f"node {why} {current!r} (wanted {state!r}); last_error: "
                    f"{node['last_error']}{self.diagnosis()}"
                )
            if self.vm.exited() is not None:
                raise AssertionError(f"QEMU exited ({self.vm.exited()}){self.diagnosis()}")
            time.sleep(1.0)


def _lab_config(
    tmp_path: Path,
    ramdisk: BuildResult,
    firmware: VmFirmware,
    method: BootMethod,
    settings: dict[str, str | int | float | bool] = SERVER_SETTINGS,
) -> LabConfig:
    return LabConfig(
        firmware=firmware,
        boot_method=method,
        workdir=tmp_path / "lab",
        kernel=ramdisk.kernel,
        initrd=ramdisk.initramfs,
        inventory=True,
        memory_mb=MEMORY_MB,
        cpus=CPUS,
        disk_mb=DISK_MB,
        paused=True,  # powered off until pxeforge's lab driver powers it on
        router_advertisements=True,
        server_settings=settings,
        timeout=PHASE_TIMEOUT,
    )


@pytest.fixture
def lab_factory() -> Iterator[list[Lab]]:
    """The labs a test started: torn down whatever happens, and checked for leftovers."""
    labs: list[Lab] = []
    yield labs
    for lab in labs:
        lab.close()
        assert not netns.exists(lab.name), f"the lab left its namespace {lab.name} behind"
        assert all(vm.exited() is not None for vm in lab.vms), "a VM outlived its lab"


def _start(labs: list[Lab], config: LabConfig) -> tuple[Lab, Vm]:
    lab = Lab(config, report=print)
    labs.append(lab)  # closed by lab_factory, also when start() fails half-way
    lab.start()
    (vm,) = lab.start_vms()
    return lab, vm


def _enroll(lab: Lab, vm: Vm, **fields: Any) -> Node:
    body = {"driver": "lab", "name": vm.spec.name, "driver_info": lab.driver_info(vm), **fields}
    node = lab.api("POST", "/v1/nodes", body)
    lab.api("POST", "/v1/ports", {"address": vm.spec.mac, "node_uuid": node["uuid"]})
    return Node(lab, vm, node["uuid"])


def _upload(lab: Lab, image: Path) -> dict[str, Any]:
    """``pxeforge image upload`` inside the namespace, as an operator would."""
    api = f"http://{lab.server_ip}:{lab.config.api_port}"
    argv = netns.ns_exec(
        lab.name,
        [sys.executable, "-m", "pxeforge.cli.main", "image", "--url", api]
        + ["--data-dir", str(lab.workdir / "data"), "upload", str(image), "--json"],
    )
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"pxeforge image upload failed: {proc.stderr}{proc.stdout}"
    answer: dict[str, Any] = json.loads(proc.stdout)
    return answer


def _instance_info(url: str, sha256: str) -> list[dict[str, Any]]:
    info = {
        "image_source": url,
        "image_os_hash_algo": "sha256",
        "image_os_hash_value": sha256,
        "image_disk_format": "raw",
    }
    return [{"op": "add", "path": f"/instance_info/{k}", "value": v} for k, v in info.items()]


def _disk(vm: Vm) -> Path:
    assert vm.spec.disk is not None
    return vm.spec.disk


def _plant_old_metadata(disk: Path) -> None:
    """What a used disk carries: an MBR at the start, a backup GPT header in the last sector."""
    with open(disk, "r+b") as f:
        f.write(b"\xeb\x63\x90" + bytes(507) + b"\x55\xaa")
        f.seek(DISK_MB * MIB - 512)
        f.write(b"EFI PART" + bytes(504))


def _region(disk: Path, offset: int, size: int) -> bytes:
    with open(disk, "rb") as f:
        f.seek(offset)
        return f.read(size)


def _disk_sha256(disk: Path, size: int) -> str:
    digest = hashlib.sha256()
    with open(disk, "rb") as f:
        left = size
        while left:
            chunk = f.read(min(left, MIB))
            assert chunk, "disk shorter than the image"
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def _history_text(node: Node) -> str:
    history = node.lab.api("GET", f"/v1/nodes/{node.uuid}/history")["history"]
    return "\n".join(h["event"] for h in history)


def _check_inventory(node: Node, inventory: dict[str, Any], props: dict[str, Any]) -> None:
    inv = inventory["inventory"]
    assert inv["cpu"]["count"] == CPUS
    assert inv["memory"]["physical_mb"] == MEMORY_MB, inv["memory"]
    disks = {d["name"]: d for d in inv["disks"]}
    assert disks["/dev/vda"]["size"] == DISK_MB * MIB, inv["disks"]
    assert node.vm.spec.mac in [i["mac_address"] for i in inv["interfaces"]]
    assert props["cpus"] == CPUS and props["memory_mb"] == MEMORY_MB
    assert props["local_gb"] == DISK_MB // 1024 - 1


LIFECYCLES = [
    pytest.param(VmFirmware.BIOS, BootMethod.PXELINUX, id="bios-pxelinux"),
    pytest.param(VmFirmware.UEFI, BootMethod.PXELINUX, id="uefi-grub"),
]


@pytest.mark.lab
@pytest.mark.parametrize(("firmware", "method"), LIFECYCLES)
def test_lifecycle(
    agent_ramdisk: BuildResult,
    tmp_path: Path,
    lab_factory: list[Lab],
    firmware: VmFirmware,
    method: BootMethod,
) -> None:
    timer = Timer(f"{firmware.value}-{method.value}")
    token = f"{firmware.value}-{secrets.token_hex(4)}"
    image = build_disk_image(tmp_path / "deploy.raw", kernel=agent_ramdisk.kernel, token=token)
    lab, vm = _start(lab_factory, _lab_config(tmp_path, agent_ramdisk, firmware, method))
    node = _enroll(lab, vm)
    timer.lap("set-up")

    node.provision("manage")
    assert node.wait("manageable", 30)["power_state"] == "power off"
    node.provision("inspect")
    inspected = node.wait("manageable", PHASE_TIMEOUT, fail=("inspect failed",))
    inventory = lab.api("GET", f"/v1/nodes/{node.uuid}/inventory")
    _check_inventory(node, inventory, inspected["properties"])
    assert inspected["power_state"] == "power off"
    timer.lap("inspect")

    _plant_old_metadata(_disk(vm))
    node.provision("provide")
    node.wait("available", PHASE_TIMEOUT)
    disk = _disk(vm)
    assert _region(disk, 0, MIB) == bytes(MIB), "cleaning left the old MBR"
    assert _region(disk, DISK_MB * MIB - MIB, MIB) == bytes(MIB), "… or the backup GPT"
    assert "erase_devices_metadata" in _history_text(node)
    timer.lap("clean")

    uploaded = _upload(lab, image.path)
    assert uploaded["sha256"] == image.sha256 and uploaded["size"] == image.size
    node.patch(_instance_info(uploaded["url"], image.sha256))
    node.provision("active")
    console_start = vm.console_size()
    active = node.wait("active", PHASE_TIMEOUT)
    assert active["power_state"] == "power on"
    assert _disk_sha256(disk, image.size) == image.sha256, "the disk does not hold the image"
    timer.lap("deploy")
    line = vm.wait_console(image.marker, LOCAL_BOOT_TIMEOUT, start=console_start)
    assert f"{image.marker} boot_mode={firmware.value} " in line + " ", line
    timer.lap("local boot")

    node.provision("deleted")
    node.wait("available", PHASE_TIMEOUT)
    assert _region(disk, 0, MIB) == bytes(MIB), "undeploy's cleaning left the partition table"
    final = node.get()
    assert final["instance_info"] == {} and final["power_state"] == "power off"
    assert final["last_error"] is None
    timer.lap("undeploy + clean")
    timer.report()


@pytest.mark.lab
def test_deploy_with_a_wrong_checksum_fails(
    agent_ramdisk: BuildResult, tmp_path: Path, lab_factory: list[Lab]
) -> None:
    timer = Timer("wrong-checksum")
    image = build_disk_image(tmp_path / "deploy.raw", kernel=agent_ramdisk.kernel, token="bad")
    config = _lab_config(tmp_path, agent_ramdisk, VmFirmware.BIOS, BootMethod.PXELINUX)
    lab, vm = _start(lab_factory, config)
    node = _enroll(lab, vm, automated_clean=False)  # straight to available: no cleaning boot
    node.provision("manage")
    node.wait("manageable", 30)
    node.provision("provide")
    node.wait("available", 30)
    uploaded = _upload(lab, image.path)
    wrong = hashlib.sha256(b"not the image").hexdigest()
    node.patch(_instance_info(uploaded["url"], wrong))
    # an old system on the disk, where the image would go (and a little past it)
    disk = _disk(vm)
    old_size = image.size + MIB
    with open(disk, "r+b") as f:
        f.write(secrets.token_bytes(old_size))
    old = _disk_sha256(disk, old_size)
    # the agent checks an image in RAM first when it fits half of MemAvailable: the VM's
    # memory must leave room for that beside the unpacked ramdisk
    assert vm.spec.memory_mb == MEMORY_MB and MEMORY_MB * MIB >= 16 * image.size, MEMORY_MB
    timer.lap("set-up")

    node.provision("active")
    failed = node.wait("deploy failed", PHASE_TIMEOUT, fail=("active",))
    error = failed["last_error"] or ""
    assert "checksum" in error.lower(), error
    assert wrong in error, error  # it names the expected value …
    assert image.sha256 in error, error  # … and what the image really hashes to
    # checked before the disk was opened for writing: the old system is still there
    assert "the disk was not touched" in error, error
    assert _disk_sha256(disk, old_size) == old, "the disk is not as it was"
    timer.lap("deploy → deploy failed")
    timer.report()


@pytest.mark.lab
def test_a_ramdisk_that_never_calls_back_fails_the_deploy(
    agent_ramdisk: BuildResult, tmp_path: Path, lab_factory: list[Lab]
) -> None:
    timer = Timer("no-callback")
    settings = {**SERVER_SETTINGS, "deploy_callback_timeout": NO_CALLBACK_TIMEOUT}
    config = _lab_config(tmp_path, agent_ramdisk, VmFirmware.BIOS, BootMethod.PXELINUX, settings)
    lab, vm = _start(lab_factory, config)
    # The agent boots, but its API URL leads nowhere (the last ipa-api-url wins): it never
    # looks itself up, never heartbeats.
    dead_api = f"ipa-api-url=http://{lab.server_ip}:9"
    node = _enroll(lab, vm, automated_clean=False)
    node.patch([{"op": "add", "path": "/driver_info/kernel_append_params", "value": dead_api}])
    node.provision("manage")
    node.wait("manageable", 30)
    node.provision("provide")
    node.wait("available", 30)
    never_fetched = f"http://{lab.server_ip}:{config.http_port}/images/none.raw"
    node.patch(_instance_info(never_fetched, hashlib.sha256(b"").hexdigest()))
    timer.lap("set-up")

    node.provision("active")
    started = time.monotonic()
    node.wait("wait call-back", 30)
    failed = node.wait("deploy failed", NO_CALLBACK_TIMEOUT + 60, fail=("active",))
    took = time.monotonic() - started
    assert "timeout" in (failed["last_error"] or "").lower(), failed["last_error"]
    assert NO_CALLBACK_TIMEOUT <= took, f"failed after {took:.1f} s, before the timeout"
    # the ramdisk really ran and really missed: its console shows the agent starting
    assert "starting the agent" in vm.console()
    timer.lap("deploy → deploy failed")
    timer.report()
