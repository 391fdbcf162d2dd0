"""`pxeforge trace` on captures the lab records of real firmware booting through pxeforge.

Each boot path is the session's shared boot (``lab_captures`` in tests/lab/conftest.py: QEMU
under TCG in a private network namespace, tcpdump on the bridge, torn down before the result
returns), so tests/lab/test_boot_paths.py and these share four boots; the trace of its pcap must
show the chain the firmware really walked, the OVMF size probe, the pxelinux/GRUB config
searches, transfers whose byte counts match what the server announced (tsize, Content-Length),
the callback — and no error or warning finding. The lab's own tests (tests/lab) check the boot
itself; these check that the trace tells it right.

Skipped, with the reason, when not root or when /dev/net/tun, QEMU, ip or tcpdump is missing.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from pxeforge.boot.booter import KERNEL_REF
from pxeforge.config import BootMethod
from pxeforge.lab.qemu import VmFirmware
from pxeforge.lab.run import LabResult
from pxeforge.trace import Trace, trace_capture
from pxeforge.trace.decode import Ending
from pxeforge.trace.findings import Severity
from pxeforge.trace.report import render_text, to_json

from .conftest import LabBoot

pytestmark = pytest.mark.lab

BIOS, UEFI = VmFirmware.BIOS, VmFirmware.UEFI
PXELINUX, IPXE = BootMethod.PXELINUX, BootMethod.IPXE
OS_STAGE = 'OS DHCP client (vendor class "pxelab-guest")'
KERNEL = KERNEL_REF.rsplit("/", 1)[-1]


LabTrace = Callable[..., tuple[LabResult, Trace]]


@pytest.fixture
def lab_trace(lab_captures: LabBoot) -> LabTrace:
    """The shared session boot of a path (tests/lab/conftest.py), traced."""

    def boot(firmware: VmFirmware, method: BootMethod, *, vms: int = 1) -> tuple[LabResult, Trace]:
        result = lab_captures(firmware, method, vms=vms)
        trace = trace_capture(result.pcap)
        print(render_text(trace))
        return result, trace

    return boot


def check_common(result: LabResult, trace: Trace) -> None:
    """Every VM booted, is a client of the trace, called back; nothing wrong was found."""
    assert result.ok, [vm.reason for vm in result.vms]
    assert {c.mac for c in trace.clients} == {vm.mac for vm in result.vms}
    bad = [f for f in trace.findings if f.severity is not Severity.INFO]
    assert not bad, [(f.code, f.message) for f in bad]
    for vm in result.vms:
        client = trace.client(vm.mac)
        assert client.callback and client.chain[-2:] == (OS_STAGE, "callback")
        assert client.stages[-1].vendor_class == "pxelab-guest"
    for t in trace.decoded.tftp:
        if t.ending is Ending.COMPLETE and t.tsize is not None:
            assert t.bytes == t.tsize, t.filename  # block arithmetic agrees with the server
    for x in trace.decoded.http:
        assert x.head_captured and x.status == 200, x.target
        if x.content_length is not None:
            assert x.body_bytes == x.content_length, x.target
    json.dumps(to_json(trace))


def test_bios_pxelinux(lab_trace: LabTrace) -> None:
    result, trace = lab_trace(BIOS, PXELINUX)
    check_common(result, trace)
    client = trace.client(result.vms[0].mac)
    assert client.arch == 0 and client.arch_name == "x86 BIOS"
    assert client.chain[:4] == ("iPXE (x86 BIOS)", "pxelinux.0", "ldlinux.c32", KERNEL)
    (search,) = client.searches
    assert search.loader == "pxelinux" and search.served == ("default",)
    assert "01-mac → 8 hex-IP prefixes → default; served: default" in search.summary
    kernel = next(t for t in trace.decoded.tftp if t.filename.endswith(KERNEL_REF))
    assert kernel.ending is Ending.COMPLETE and kernel.blksize == 1408
    assert kernel.bytes == kernel.tsize and kernel.bytes > 1_000_000


def test_bios_ipxe_two_vms(lab_trace: LabTrace) -> None:
    result, trace = lab_trace(BIOS, IPXE, vms=2)
    check_common(result, trace)
    assert len(trace.clients) == 2
    for vm in result.vms:
        client = trace.client(vm.mac)
        assert client.chain == (
            "iPXE (x86 BIOS)",
            "boot.ipxe",
            "ipxe",
            KERNEL,
            "initrd-0",
            OS_STAGE,
            "callback",
        )
    # pxeforge sets 175.176 = 1: iPXE does not wait for ProxyDHCP
    assert "ipxe-proxydhcp-wait" not in {f.code for f in trace.findings}
    kernels = [x for x in trace.decoded.http if x.path.endswith(KERNEL_REF)]
    assert len(kernels) == 2 and all(x.complete and x.body_bytes > 1_000_000 for x in kernels)


def test_uefi_shim_grub(lab_trace: LabTrace) -> None:
    result, trace = lab_trace(UEFI, PXELINUX)
    check_common(result, trace)
    client = trace.client(result.vms[0].mac)
    assert client.arch == 7 and client.arch_name == "x64 UEFI"
    assert client.chain[:3] == (
        "UEFI PXE firmware (x64 UEFI, UNDI 3.0)",
        "bootx64.efi",
        "grubx64.efi",
    )
    probe = trace.decoded.tftp[0]
    assert probe.filename == "bootx64.efi" and probe.ending is Ending.PROBE
    assert probe.failure is not None and probe.failure.code == 8 and probe.tsize
    loaded = trace.decoded.tftp[1]
    assert loaded.filename == "bootx64.efi" and loaded.ending is Ending.COMPLETE
    assert loaded.bytes == probe.tsize and loaded.windowsize == 4  # pxeforge grants RFC 7440
    loaders = {s.loader: s for s in client.searches}
    assert set(loaders) == {"shim", "grub"}
    assert loaders["grub"].summary.endswith("grub.cfg; served: grub.cfg")


def test_uefi_snponly_ipxe(lab_trace: LabTrace) -> None:
    result, trace = lab_trace(UEFI, IPXE)
    check_common(result, trace)
    client = trace.client(result.vms[0].mac)
    assert client.chain == (
        "UEFI PXE firmware (x64 UEFI, UNDI 3.0)",
        "snponly.efi",
        "iPXE (x64 UEFI)",
        "boot.ipxe",
        "ipxe",
        KERNEL,
        "initrd-0",
        OS_STAGE,
        "callback",
    )
    probe, loaded = trace.decoded.tftp[:2]
    assert probe.ending is Ending.PROBE and loaded.ending is Ending.COMPLETE
    assert loaded.bytes == probe.tsize
    assert "a size probe — OVMF asks tsize=0" in " ".join(render_text(trace).split())
