"""Fixtures for the lab: skip reasons, and boots whose captures stay available.

``lab_captures(firmware, method, vms=1)`` boots that path once per test session (in a
session temporary directory) and returns the `LabResult`; later calls with the same arguments
get the same result, so tests that only read a boot's capture (``result.pcap``, e.g. the
``pxeforge trace`` tests) cost nothing extra. ``lab_boot(firmware, method, …)`` always boots
afresh into the test's own ``tmp_path``. Both tear the lab down before returning (namespace
deleted, QEMU, server and tcpdump stopped by PID) — `pxeforge.lab.run.Lab` does that in a
``finally`` — and print the live progress, which pytest shows when a test fails.

``agent_ramdisk`` is `pxeforge ramdisk build`'s output, built once per session.

Tests marked ``lab`` are skipped, with the reason, when not root or when /dev/net/tun, QEMU,
ip or tcpdump is missing; nowhere else.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pxeforge.config import BootMethod
from pxeforge.lab import netns
from pxeforge.lab.guest import default_cache_dir
from pxeforge.lab.qemu import QEMU, VmFirmware
from pxeforge.lab.run import Lab, LabConfig, LabResult
from pxeforge.ramdisk.build import BuildConfig, BuildResult, build_ramdisk

LabBoot = Callable[..., LabResult]

#: Seconds a single boot may take before it counts as failed (TCG boots take 25-50 s).
BOOT_TIMEOUT = 150.0


def lab_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "lab tests need root (network namespaces, taps)"
    if not Path("/dev/net/tun").exists():
        return "lab tests need /dev/net/tun (modprobe tun)"
    for tool, package in ((QEMU, "qemu-system-x86"), ("ip", "iproute2"), ("tcpdump", "tcpdump")):
        if shutil.which(tool) is None:
            return f"lab tests need {tool} (apt-get install {package})"
    return None


@pytest.fixture(autouse=True)
def _lab_requirements(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("lab") is not None:
        reason = lab_skip_reason()
        if reason is not None:
            pytest.skip(reason)


def _boot(
    workdir: Path, firmware: VmFirmware, method: BootMethod, *, vms: int = 1, cmdline: str = ""
) -> LabResult:
    config = LabConfig(
        firmware=firmware,
        boot_method=method,
        vms=vms,
        timeout=BOOT_TIMEOUT,
        workdir=workdir,
        cmdline=cmdline,
    )
    lab = Lab(config, report=print)
    try:
        with lab:
            result = lab.boot()
    finally:
        # Lab tears itself down; this is the safety net the test suite relies on anyway
        leaked = netns.exists(lab.name)
        lab.close()
    assert not leaked, f"the lab left its namespace {lab.name} behind"
    return result


@pytest.fixture(scope="session")
def agent_ramdisk(tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    """``pxeforge ramdisk build``'s kernel and initramfs, built once per session (the parts
    come from the shared cache, `default_cache_dir`, so a warm build only repacks)."""
    if shutil.which("apt-get") is None:
        pytest.skip("the ramdisk build downloads Debian packages with apt-get")
    proc = subprocess.run(["apt-cache", "show", "python3.11-minimal"], capture_output=True)
    if proc.returncode != 0:
        pytest.skip("apt knows no python3.11-minimal (not Debian 12?)")
    out = tmp_path_factory.mktemp("agent-ramdisk")
    result = build_ramdisk(BuildConfig(out=out, cache=default_cache_dir()))
    assert result.agent == "package", "the ramdisk carries the placeholder, not the agent"
    return result


@pytest.fixture
def lab_boot(tmp_path: Path) -> LabBoot:
    """Boot afresh: ``lab_boot(VmFirmware.BIOS, BootMethod.IPXE, vms=1, cmdline="")``."""
    counter = iter(range(1000))

    def boot(
        firmware: VmFirmware, method: BootMethod, *, vms: int = 1, cmdline: str = ""
    ) -> LabResult:
        workdir = tmp_path / f"lab-{firmware.value}-{method.value}-{next(counter)}"
        return _boot(workdir, firmware, method, vms=vms, cmdline=cmdline)

    return boot


@pytest.fixture(scope="session")
def lab_captures(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabBoot]:
    """One boot per (firmware, method, vms) per session; the result (and its pcap) is shared."""
    done: dict[tuple[VmFirmware, BootMethod, int], LabResult] = {}

    def boot(firmware: VmFirmware, method: BootMethod, *, vms: int = 1) -> LabResult:
        key = (firmware, method, vms)
        if key not in done:
            reason = lab_skip_reason()
            if reason is not None:
                pytest.skip(reason)
            workdir = tmp_path_factory.mktemp(f"lab-{firmware.value}-{method.value}-{vms}")
            done[key] = _boot(workdir, firmware, method, vms=vms)
        return done[key]

    yield boot
