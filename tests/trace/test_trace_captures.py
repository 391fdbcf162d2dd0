"""`pxeforge trace` on the two real captures in tests/data (from ../shared/data/captures).

Both are pcapng despite the name, recorded on the lab bridge with a filter that kept control
packets only: the server's HTTP data segments and the TFTP data of snponly.efi are missing,
which the trace must say rather than misread. The text report is compared with a golden file
(tests/trace/golden/<capture>.txt, regenerated with UPDATE_TESTDATA=1); the facts that matter
are also asserted one by one, so a golden refresh cannot hide a regression in them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pxeforge.trace import Trace, trace_bytes, trace_capture
from pxeforge.trace.decode import Ending
from pxeforge.trace.findings import Severity
from pxeforge.trace.report import SCHEMA, render_text, to_json

DATA = Path(__file__).resolve().parent.parent / "data"
GOLDEN = Path(__file__).resolve().parent / "golden"
BIOS = DATA / "bios-ipxe-boot-control.pcap"
UEFI = DATA / "uefi-ipxe-boot-control.pcap"
MAC = "52:54:00:77:00:10"
UUID = "5a1ab000-0000-4000-8000-525400770010"


def flat(text: str) -> str:
    """The report with line wrapping undone (phrases can be searched across lines)."""
    return " ".join(text.split())


def trace_of(path: Path) -> Trace:
    return trace_bytes(path.read_bytes(), path.name)


@pytest.mark.parametrize("capture", [BIOS, UEFI], ids=lambda p: p.stem)
def test_golden_text(capture: Path) -> None:
    text = render_text(trace_of(capture))
    golden = GOLDEN / f"{capture.stem}.txt"
    if os.environ.get("UPDATE_TESTDATA"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text(), f"regenerate with UPDATE_TESTDATA=1 pytest {__file__}"


def test_file_and_memory_give_the_same_trace() -> None:
    from_file = trace_capture(BIOS)
    assert from_file.name == str(BIOS)
    assert render_text(from_file).split("\n", 1)[1] == render_text(trace_of(BIOS)).split("\n", 1)[1]


def test_bios_ipxe_boot_facts() -> None:
    trace = trace_of(BIOS)
    assert trace.stats.format == "pcapng" and trace.stats.frames == 516
    (client,) = trace.clients
    assert client.mac == MAC and client.uuid == UUID
    assert client.arch == 0 and client.arch_name == "x86 BIOS"
    assert [str(a) for a in client.addresses] == ["192.168.77.145"]
    assert client.chain == (
        "iPXE (x86 BIOS)",
        "boot.ipxe",
        "vmlinuz",
        "initrd.gz",
        'OS DHCP client (vendor class "pxelab-guest")',
        "callback",
    )
    ipxe, os_stage = client.stages
    assert ipxe.boot_file == "http://192.168.77.1:8080/boot.ipxe" and ipxe.ipxe
    assert (
        ipxe.user_classes == ("iPXE",) and ipxe.vendor_class == "PXEClient:Arch:00000:UNDI:002001"
    )
    assert os_stage.arch is None and os_stage.vendor_class == "pxelab-guest"
    assert [x.path for x in trace.decoded.http] == ["/boot.ipxe", "/vmlinuz", "/initrd.gz", "/cb"]
    vmlinuz = trace.decoded.http[1]
    # the response head is not in this capture: the size comes from TCP sequence numbers
    assert (vmlinuz.status, vmlinuz.outcome, vmlinuz.wire_bytes) == (None, "not-captured", 8247437)
    assert trace.decoded.http[0].body_prefix.startswith(b"#!ipxe\n")
    assert [(f.code, f.severity) for f in trace.findings] == [
        ("ipxe-proxydhcp-wait", Severity.INFO),
        ("capture-incomplete", Severity.INFO),
    ]
    wait = trace.findings[0]
    assert [e.frame for e in wait.evidence] == [2, 5]
    text = flat(render_text(trace))
    for expected in (
        "93 client-arch 0 = x86 BIOS → bios firmware (loader pxelinux.0 or undionly.kpxe)",
        "94 client-ndi UNDI 2.1 (1.2.1)",
        '77 user-class "iPXE" (bare string, as iPXE sends it) → the client is iPXE',
        "175 ipxe-encap iPXE 1.0.0; NIC PCI 1af4:1000; features DNS ELF HTTP ISCSI",
        "97 client-uuid 5a1ab000-0000-4000-8000-525400770010 (type 0, wire 00b01a5a 0000 0040",
        "first three fields little-endian",
        "options as in #1",
        "boot callback: HTTP GET",
        "… 13.0 s later …",
    ):
        assert expected in text, expected


def test_uefi_ovmf_probe_and_chain() -> None:
    trace = trace_of(UEFI)
    (client,) = trace.clients
    assert client.mac == MAC and client.uuid == UUID
    assert client.arch == 7 and client.arch_name == "x64 UEFI"
    assert client.chain == (
        "UEFI PXE firmware (x64 UEFI, UNDI 3.0)",
        "snponly.efi",
        "iPXE (x64 UEFI)",
        "boot.ipxe",
        "vmlinuz",
        "initrd.gz",
        'OS DHCP client (vendor class "pxelab-guest")',
        "callback",
    )
    ovmf, ipxe, _ = client.stages
    assert ovmf.boot_file == "snponly.efi" and not ovmf.ipxe
    assert ovmf.vendor_class == "PXEClient:Arch:00007:UNDI:003000"
    assert ipxe.vendor_class == "PXEClient:Arch:00007:UNDI:003010" and ipxe.ipxe
    probe, load = trace.decoded.tftp
    # OVMF: RRQ tsize=0 blksize=1468 windowsize=4, OACK, ERROR 8, then again without tsize
    assert probe.filename == load.filename == "snponly.efi"
    assert dict(probe.options) == {"tsize": "0", "blksize": "1468", "windowsize": "4"}
    assert probe.ending is Ending.PROBE and probe.tsize == 173792
    assert probe.failure is not None and (probe.failure.code, probe.failure.by) == (8, "client")
    assert (probe.request_frame, probe.oack_frame, probe.failure.frame) == (5, 6, 7)
    assert load.ending is Ending.NOT_CAPTURED and "tsize" not in load.options
    assert probe.refused_options == load.refused_options == ("windowsize",)
    (refused,) = [f for f in trace.findings if f.code == "tftp-option-refused"]
    assert refused.severity is Severity.INFO
    assert [e.frame for e in refused.evidence] == [5, 6, 8, 9]
    assert not [f for f in trace.findings if f.severity is not Severity.INFO]
    text = flat(render_text(trace))
    assert "a size probe — OVMF asks tsize=0, learns the size (173792 bytes)" in text
    assert "came from iPXE (x64 UEFI): snponly.efi was loaded and ran" in text
    assert "broadcast flag set: replies must be broadcast" in text


def test_json_schema() -> None:
    data = to_json(trace_of(UEFI))
    json.dumps(data)  # serialisable as is
    assert data["schema"] == SCHEMA
    assert set(data) == {
        "schema",
        "capture",
        "clients",
        "events",
        "transfers",
        "findings",
        "summary",
    }
    assert data["capture"]["frames"] == 910 and data["capture"]["format"] == "pcapng"
    (client,) = data["clients"]
    assert client["mac"] == MAC and client["arch"] == 7 and client["firmware"] == "efi-x64"
    assert client["chain"][:3] == [
        "UEFI PXE firmware (x64 UEFI, UNDI 3.0)",
        "snponly.efi",
        "iPXE (x64 UEFI)",
    ]
    tftp = [t for t in data["transfers"] if t["protocol"] == "tftp"]
    assert [t["outcome"] for t in tftp] == ["probe", "not-captured"]
    assert tftp[0]["error"] == {
        "code": 8,
        "message": "User aborted the transfer",
        "by": "client",
        "frame": 7,
    }
    http = [t for t in data["transfers"] if t["protocol"] == "http"]
    assert [t["file"] for t in http] == ["/boot.ipxe", "/vmlinuz", "/initrd.gz", "/cb"]
    assert http[-1]["role"] == "callback"
    kinds = [e["kind"] for e in data["events"]]
    assert kinds.count("dhcp") == 14 and kinds.count("tftp") == 2 and kinds.count("http") == 4
    first = data["events"][0]
    assert first["frame"] == 1 and first["t"] == 0.0 and first["message"] == "DISCOVER"
    assert first["arch"] == 7 and first["broadcast"] is True
    assert data["events"][4]["transfer"] == "tftp-1"
    for finding in data["findings"]:
        assert set(finding) == {"code", "severity", "client", "message", "evidence"}
        assert all(set(e) == {"frame", "t", "what"} for e in finding["evidence"])
    assert data["summary"] == {"error": 0, "warning": 0, "info": 3}
