"""Broken boots, synthesized: each finding is raised, with the frames that show it.

Every capture is built packet by packet (`trace_wire.Wire`: our DHCP and TFTP codecs for the
payloads, dpkt for the frames and the pcap file) and read back by `trace_bytes`, exactly as
`pxeforge trace` reads a file.
"""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address

import pytest
from trace_wire import (
    ROGUE_IP,
    ROGUE_MAC,
    SERVER_IP,
    Wire,
    dora,
    proxy_offer,
    pxe_request,
    server_reply,
)

from pxeforge.protocols.dhcp import MessageType
from pxeforge.trace import Trace, trace_bytes
from pxeforge.trace.decode import Ending
from pxeforge.trace.findings import Finding, Severity
from pxeforge.trace.report import render_text

MAC = "52:54:00:77:00:10"
IP = IPv4Address("192.168.77.145")


def flat(text: str) -> str:
    """The report with line wrapping undone (phrases can be searched across lines)."""
    return " ".join(text.split())


def traced(wire: Wire, *, pcapng: bool = False) -> Trace:
    return trace_bytes(wire.pcapng() if pcapng else wire.pcap(), "synth.pcap")


def only(trace: Trace, code: str) -> Finding:
    found = [f for f in trace.findings if f.code == code]
    assert len(found) == 1, f"{code}: {[f.code for f in trace.findings]}"
    return found[0]


def frames(finding: Finding) -> set[int]:
    return {e.frame for e in finding.evidence}


def codes(trace: Trace) -> set[str]:
    return {f.code for f in trace.findings}


# -- a healthy boot is quiet ---------------------------------------------------------------------


def test_healthy_pxelinux_boot_has_no_findings_and_reads_like_the_seed() -> None:
    w = Wire()
    t = dora(w, 0.0, MAC, IP, "pxelinux.0")
    _, t = w.tftp_transfer(
        t,
        MAC,
        IP,
        2070,
        "pxelinux.0",
        42430,
        options={"blksize": "1432", "tsize": "0"},
        oack={"blksize": "1432", "tsize": "42430"},
    )
    _, t = w.tftp_transfer(
        t,
        MAC,
        IP,
        49152,
        "ldlinux.c32",
        5000,
        options={"tsize": "0", "blksize": "1408"},
        oack={"tsize": "5000", "blksize": "1408"},
        tid=40001,
    )
    names = [
        "pxelinux.cfg/5a1ab000-0000-4000-8000-525400770010",
        "pxelinux.cfg/01-52-54-00-77-00-10",
        *(f"pxelinux.cfg/{'C0A84D91'[:n]}" for n in range(8, 0, -1)),
    ]
    port = 49153
    for name in names:
        _, t = w.tftp_transfer(
            t,
            MAC,
            IP,
            port,
            name,
            0,
            options={"tsize": "0", "blksize": "1408"},
            error=(1, "File not found"),
            tid=69,
        )
        port += 1
    _, t = w.tftp_transfer(
        t,
        MAC,
        IP,
        port,
        "pxelinux.cfg/default",
        300,
        options={"tsize": "0", "blksize": "1408"},
        oack={"tsize": "300", "blksize": "1408"},
        tid=40002,
    )
    _, t = w.tftp_transfer(
        t,
        MAC,
        IP,
        port + 1,
        "vmlinuz",
        100_000,
        options={"tsize": "0", "blksize": "1408"},
        oack={"tsize": "100000", "blksize": "1408"},
        tid=40003,
    )
    trace = traced(w)
    assert trace.findings == ()
    client = trace.client(MAC)
    assert client.arch == 0 and client.arch_name == "x86 BIOS"
    assert client.uuid == "5a1ab000-0000-4000-8000-525400770010"
    (search,) = client.searches
    assert search.summary == (
        "pxelinux looked for its config: uuid → 01-mac → 8 hex-IP prefixes → default; "
        "served: default"
    )
    assert client.chain == (
        "BIOS PXE firmware (x86 BIOS, UNDI 2.1)",
        "pxelinux.0",
        "ldlinux.c32",
        "vmlinuz",
    )
    text = flat(render_text(trace))
    assert "= option 97" in text and "= MAC" in text and "= 192.168.77.145" in text
    assert "findings: none" in text
    vmlinuz = [x for x in trace.decoded.tftp if x.filename == "vmlinuz"][0]
    assert vmlinuz.ending is Ending.COMPLETE
    assert (vmlinuz.bytes, vmlinuz.blocks, vmlinuz.retransmits) == (100_000, 72, 0)


# -- DHCP ----------------------------------------------------------------------------------------


def test_second_dhcp_server_is_rogue_with_both_servers_in_evidence() -> None:
    w = Wire()
    disc = pxe_request(MAC, MessageType.DISCOVER)
    w.dhcp_client(0.0, disc)
    good = w.dhcp_server(0.001, server_reply(disc, MessageType.OFFER, yiaddr=IP, file="pxelinux.0"))
    rogue_offer = server_reply(
        disc, MessageType.OFFER, yiaddr=IPv4Address("10.9.9.9"), server=ROGUE_IP
    )
    rogue = w.dhcp_server(0.002, rogue_offer, server=ROGUE_IP, server_mac=ROGUE_MAC)
    req = pxe_request(MAC, MessageType.REQUEST, server_id=SERVER_IP, requested=IP)
    w.dhcp_client(0.01, req)
    ack = w.dhcp_server(0.011, server_reply(req, MessageType.ACK, yiaddr=IP, file="pxelinux.0"))
    trace = traced(w)
    finding = only(trace, "rogue-dhcp")
    assert finding.severity is Severity.ERROR and finding.mac == MAC
    assert {good, rogue, ack} <= frames(finding)
    assert str(ROGUE_IP) in finding.message and ROGUE_MAC in finding.message
    assert "10.9.9.9" in finding.message
    assert "offer-without-request" not in codes(trace)  # the same xid was requested


def test_proxydhcp_beside_a_dhcp_server_is_not_rogue() -> None:
    w = Wire()
    disc = pxe_request(MAC, MessageType.DISCOVER)
    w.dhcp_client(0.0, disc)
    w.dhcp_server(0.001, server_reply(disc, MessageType.OFFER, yiaddr=IP))
    w.dhcp_server(
        0.002,
        proxy_offer(disc, server=ROGUE_IP, file="pxelinux.0"),
        server=ROGUE_IP,
        server_mac=ROGUE_MAC,
    )
    req = pxe_request(MAC, MessageType.REQUEST, server_id=SERVER_IP, requested=IP)
    w.dhcp_client(0.01, req)
    w.dhcp_server(0.011, server_reply(req, MessageType.ACK, yiaddr=IP))
    trace = traced(w)
    assert not {"rogue-dhcp", "no-boot-file", "offer-without-request"} & codes(trace)
    text = flat(render_text(trace))
    assert f"ProxyDHCP OFFER from {ROGUE_IP}" in text
    assert trace.client(MAC).stages[0].boot_file == "pxelinux.0"


def test_proxydhcp_boot_server_on_port_4011() -> None:
    """PXE 2.1 §2.2.3: address from the DHCP server, boot file from the boot server on 4011."""
    w = Wire()
    disc = pxe_request(MAC, MessageType.DISCOVER)
    w.dhcp_client(0.0, disc)
    w.dhcp_server(0.001, server_reply(disc, MessageType.OFFER, yiaddr=IP))
    w.dhcp_server(
        0.002,
        proxy_offer(disc, server=ROGUE_IP, file="pxelinux.0"),
        server=ROGUE_IP,
        server_mac=ROGUE_MAC,
    )
    req = pxe_request(MAC, MessageType.REQUEST, server_id=SERVER_IP, requested=IP)
    w.dhcp_client(0.01, req)
    w.dhcp_server(0.011, server_reply(req, MessageType.ACK, yiaddr=IP))
    boot = pxe_request(MAC, MessageType.REQUEST, xid=0x4011)
    boot = replace(boot, ciaddr=IP)
    w.dhcp_client(0.02, boot, dst=ROGUE_IP, port=4011)
    ack = proxy_offer(boot, server=ROGUE_IP, file="pxelinux.0")
    ack = replace(ack, options={**ack.options, 53: bytes((MessageType.ACK,))})
    w.dhcp_server(0.021, ack, server=ROGUE_IP, server_mac=ROGUE_MAC, port=4011)
    trace = traced(w)
    assert not trace.findings
    text = flat(render_text(trace))
    assert f"PXE boot-server DHCP REQUEST 192.168.77.145:68 → {ROGUE_IP}:4011" in text
    assert f"ProxyDHCP ACK from {ROGUE_IP}" in text
    assert trace.client(MAC).stages[0].boot_file == "pxelinux.0"


def test_offers_never_requested_then_silence() -> None:
    w = Wire()
    offers = []
    for i, t in enumerate((0.0, 4.0, 8.0)):
        disc = pxe_request(MAC, MessageType.DISCOVER, xid=0x99, secs=4 + 4 * i)
        w.dhcp_client(t, disc)
        offers.append(w.dhcp_server(t + 0.001, server_reply(disc, MessageType.OFFER, yiaddr=IP)))
    w.arp(40.0)
    trace = traced(w)
    finding = only(trace, "offer-without-request")
    assert finding.severity is Severity.ERROR  # it never got an address
    assert frames(finding) == set(offers)
    assert "3 OFFER(s)" in finding.message
    silent = only(trace, "client-silent")
    assert "after an OFFER" in silent.message
    assert offers[-1] in frames(silent)


def test_no_dhcp_answer() -> None:
    w = Wire()
    sent = [w.dhcp_client(t, pxe_request(MAC, MessageType.DISCOVER, xid=7)) for t in (0, 4, 12)]
    trace = traced(w)
    finding = only(trace, "no-dhcp-answer")
    assert frames(finding) == set(sent) and finding.severity is Severity.ERROR


def test_request_to_another_server() -> None:
    w = Wire()
    disc = pxe_request(MAC, MessageType.DISCOVER)
    w.dhcp_client(0.0, disc)
    offer = w.dhcp_server(
        0.001, server_reply(disc, MessageType.OFFER, yiaddr=IP, file="pxelinux.0")
    )
    req = pxe_request(MAC, MessageType.REQUEST, server_id=ROGUE_IP, requested=IP)
    request = w.dhcp_client(0.01, req)
    w.dhcp_server(
        0.011,
        server_reply(req, MessageType.ACK, yiaddr=IP, server=ROGUE_IP),
        server=ROGUE_IP,
        server_mac=ROGUE_MAC,
    )
    trace = traced(w)
    finding = only(trace, "request-other-server")
    assert {offer, request} <= frames(finding)
    assert str(ROGUE_IP) in finding.message
    assert "rogue-dhcp" in codes(trace)


def test_nak() -> None:
    w = Wire()
    req = pxe_request(MAC, MessageType.REQUEST, server_id=SERVER_IP, requested=IP)
    w.dhcp_client(0.0, req)
    nak = w.dhcp_server(0.001, server_reply(req, MessageType.NAK, yiaddr=IPv4Address(0)))
    finding = only(traced(w), "dhcp-nak")
    assert frames(finding) == {nak}


# -- loaders and files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "ipxe", "file", "fits"),
    [
        (7, False, "pxelinux.0", False),
        (7, False, "undionly.kpxe", False),
        (9, False, "lpxelinux.0", False),
        (0, False, "bootx64.efi", False),
        (0, False, "grubx64.efi", False),
        (0, False, "http://192.168.77.1:8080/boot.ipxe", False),
        (7, False, "bootaa64.efi", False),
        (11, False, "shimx64.efi", False),
        (7, False, "snponly.efi", True),
        (7, False, "EFI/BOOT/BOOTX64.EFI", True),
        (0, False, "pxelinux.0", True),
        (0, True, "http://192.168.77.1:8080/boot.ipxe", True),
        (16, False, "http://192.168.77.1/bootx64.efi", True),
        (7, True, "boot.ipxe", True),
    ],
)
def test_loader_for_the_wrong_architecture(arch: int, ipxe: bool, file: str, fits: bool) -> None:
    w = Wire()
    disc = pxe_request(MAC, MessageType.DISCOVER, arch=arch, ipxe=ipxe)
    first = w.dhcp_client(0.0, disc)
    offer = w.dhcp_server(0.001, server_reply(disc, MessageType.OFFER, yiaddr=IP, file=file))
    trace = traced(w)
    found = [f for f in trace.findings if f.code == "loader-mismatch"]
    if fits:
        assert not found
        return
    (finding,) = found
    assert finding.severity is Severity.ERROR
    assert frames(finding) == {first, offer}
    assert f'"{file}"' in finding.message and f"Option 93 = {arch}" in finding.message


def test_arch7_given_pxelinux_reads_as_such() -> None:
    w = Wire()
    dora(w, 0.0, MAC, IP, "pxelinux.0", arch=7)
    finding = only(traced(w), "loader-mismatch")
    assert finding.message.startswith(
        'arch 7 (x64 UEFI) client was given "pxelinux.0", which looks like a bios file'
    )
    assert "bootx64.efi or snponly.efi" in finding.message


def test_pxe_client_without_a_boot_file() -> None:
    w = Wire()
    dora(w, 0.0, MAC, IP, None)
    finding = only(traced(w), "no-boot-file")
    assert finding.severity is Severity.ERROR


def test_tftp_error_1_for_the_boot_file() -> None:
    w = Wire()
    t = dora(w, 0.0, MAC, IP, "pxelinux.0")
    rrq, _ = w.tftp_transfer(
        t,
        MAC,
        IP,
        2070,
        "pxelinux.0",
        0,
        options={"blksize": "1432", "tsize": "0"},
        error=(1, "File not found"),
    )
    trace = traced(w)
    finding = only(trace, "boot-file-not-found")
    assert finding.severity is Severity.ERROR
    assert frames(finding) == {rrq, rrq + 1}
    assert '"pxelinux.0"' in finding.message and 'ERROR 1 "File not found"' in finding.message
    # the blksize was never negotiated: no option finding for a refused request
    assert "tftp-option-refused" not in codes(trace)
    assert 'error 1 "File not found" from the server' in flat(render_text(trace))


def test_missing_ldlinux_is_a_warning_but_config_misses_are_not() -> None:
    w = Wire()
    t = dora(w, 0.0, MAC, IP, "pxelinux.0")
    _, t = w.tftp_transfer(
        t, MAC, IP, 2070, "pxelinux.0", 1000, oack={"tsize": "1000"}, options={"tsize": "0"}
    )
    rrq, t = w.tftp_transfer(t, MAC, IP, 2071, "ldlinux.c32", 0, error=(1, "File not found"))
    _, t = w.tftp_transfer(t, MAC, IP, 2072, "pxelinux.cfg/default", 0, error=(1, "File not found"))
    trace = traced(w)
    finding = only(trace, "file-not-found")
    assert finding.severity is Severity.WARNING and rrq in frames(finding)
    assert "ldlinux.c32" in finding.message


def test_http_404_is_boot_file_not_found() -> None:
    w = Wire()
    t = dora(w, 0.0, MAC, IP, "http://192.168.77.1:8080/boot.ipxe", ipxe=True)
    req, _ = w.http_get(t, MAC, IP, 40000, "/vmlinuz", status="404 Not Found", body=b"no\n")
    trace = traced(w)
    finding = only(trace, "boot-file-not-found")
    assert req in frames(finding)
    (x,) = trace.decoded.http
    assert (x.status, x.body_bytes, x.outcome) == (404, 3, "complete")


def test_tftp_server_never_answers() -> None:
    w = Wire()
    t = dora(w, 0.0, MAC, IP, "pxelinux.0")
    first = w.tftp_request(t, MAC, IP, 2070, "pxelinux.0", {"tsize": "0"})
    again = [w.tftp_request(t + d, MAC, IP, 2070, "pxelinux.0", {"tsize": "0"}) for d in (1, 3)]
    trace = traced(w)
    finding = only(trace, "tftp-no-answer")
    assert {first, *again} <= frames(finding) and "3 times" in finding.message
    (transfer,) = trace.decoded.tftp
    assert transfer.ending is Ending.NO_ANSWER and transfer.request_resends == tuple(again)


# -- TFTP options, retransmits -------------------------------------------------------------------


def test_blksize_not_acknowledged() -> None:
    w = Wire()
    t = dora(w, 0.0, MAC, IP, "pxelinux.0")
    rrq, _ = w.tftp_transfer(
        t,
        MAC,
        IP,
        2070,
        "pxelinux.0",
        2000,
        options={"blksize": "1432", "tsize": "0"},
        oack={"tsize": "2000"},
    )
    trace = traced(w)
    finding = only(trace, "tftp-option-refused")
    assert finding.severity is Severity.WARNING
    assert frames(finding) == {rrq, rrq + 1}  # the RRQ and the OACK without blksize
    assert "blksize=1432" in finding.message and "512-byte blocks" in finding.message
    (transfer,) = trace.decoded.tftp
    assert transfer.refused_options == ("blksize",)
    assert (transfer.blksize, transfer.blocks, transfer.bytes) == (512, 4, 2000)
    assert "not acknowledged: blksize=1432 (RFC 2348)" in flat(render_text(trace))


def test_no_oack_at_all_refuses_every_option() -> None:
    w = Wire()
    t = dora(w, 0.0, MAC, IP, "pxelinux.0")
    rrq, _ = w.tftp_transfer(
        t,
        MAC,
        IP,
        2070,
        "pxelinux.0",
        700,
        options={"blksize": "1432", "windowsize": "4"},
        oack=None,
    )
    trace = traced(w)
    found = sorted(
        (f for f in trace.findings if f.code == "tftp-option-refused"),
        key=lambda f: f.severity.rank,
    )
    assert [f.severity for f in found] == [Severity.WARNING, Severity.INFO]
    assert frames(found[0]) == {rrq, rrq + 1}  # RRQ, then DATA 1 with no OACK
    assert "no OACK: the server ignored every option" in flat(render_text(trace))


def test_retransmit_storm() -> None:
    w = Wire()
    t = dora(w, 0.0, MAC, IP, "pxelinux.0")
    _, t = w.tftp_transfer(
        t,
        MAC,
        IP,
        2070,
        "pxelinux.0",
        100 * 1432 + 10,
        options={"blksize": "1432"},
        oack={"blksize": "1432"},
        resend=range(10, 40),
        resend_times=2,
    )
    trace = traced(w)
    finding = only(trace, "retransmit-storm")
    (transfer,) = trace.decoded.tftp
    assert transfer.ending is Ending.COMPLETE
    assert (transfer.retransmits, transfer.blocks) == (60, 101)
    assert set(transfer.retransmit_frames) <= frames(finding)
    assert len(transfer.retransmit_frames) == 10
    assert "60 DATA blocks" in finding.message


def test_a_few_retransmits_are_not_a_storm() -> None:
    w = Wire()
    t = dora(w, 0.0, MAC, IP, "pxelinux.0")
    w.tftp_transfer(t, MAC, IP, 2070, "pxelinux.0", 300 * 512, resend=(5, 90))
    trace = traced(w)
    assert "retransmit-storm" not in codes(trace)
    assert trace.decoded.tftp[0].retransmits == 2


# -- iPXE ----------------------------------------------------------------------------------------


def test_ipxe_chainload_loop() -> None:
    w = Wire()
    t = dora(w, 0.0, MAC, IP, "undionly.kpxe")  # the BIOS ROM: fine
    _, t = w.tftp_transfer(t, MAC, IP, 2070, "undionly.kpxe", 70000)
    acks = []
    rrqs = []
    for cycle in range(2):
        start = t + 1
        t = dora(w, start, MAC, IP, "undionly.kpxe", ipxe=True, xid=0x500 + cycle)
        acks.append(len(w.frames))
        rrq, t = w.tftp_transfer(t, MAC, IP, 2071 + cycle, "undionly.kpxe", 70000)
        rrqs.append(rrq)
    trace = traced(w)
    finding = only(trace, "ipxe-loop")
    assert finding.severity is Severity.ERROR
    assert set(acks) <= frames(finding) and set(rrqs) <= frames(finding)
    assert "2 time(s), fetched 3 time(s)" in finding.message
    stages = [s.label for s in trace.client(MAC).stages]
    assert stages == ["BIOS PXE firmware (x86 BIOS, UNDI 2.1)", "iPXE (x86 BIOS)"]


def test_ipxe_given_a_script_is_no_loop() -> None:
    w = Wire()
    t = dora(w, 0.0, MAC, IP, "undionly.kpxe")
    _, t = w.tftp_transfer(t, MAC, IP, 2070, "undionly.kpxe", 70000)
    t = dora(w, t + 1, MAC, IP, "http://192.168.77.1:8080/boot.ipxe", ipxe=True, xid=0x77)
    w.http_get(t, MAC, IP, 40000, "/boot.ipxe", body=b"#!ipxe\nkernel http://x/vmlinuz\nboot\n")
    trace = traced(w)
    assert "ipxe-loop" not in codes(trace)
    assert trace.client(MAC).chain == (
        "BIOS PXE firmware (x86 BIOS, UNDI 2.1)",
        "undionly.kpxe",
        "iPXE (x86 BIOS)",
        "boot.ipxe",
    )
    assert "iPXE script: kernel http://x/vmlinuz | boot" in flat(render_text(trace))


def test_ipxe_waiting_for_proxydhcp_is_noted() -> None:
    w = Wire()
    disc = pxe_request(MAC, MessageType.DISCOVER, ipxe=True, xid=5)
    w.dhcp_client(0.0, disc)
    offer = w.dhcp_server(0.001, server_reply(disc, MessageType.OFFER, yiaddr=IP, file="x.ipxe"))
    req = pxe_request(MAC, MessageType.REQUEST, ipxe=True, xid=5, server_id=SERVER_IP)
    request = w.dhcp_client(3.05, req)
    w.dhcp_server(3.051, server_reply(req, MessageType.ACK, yiaddr=IP, file="x.ipxe"))
    finding = only(traced(w), "ipxe-proxydhcp-wait")
    assert finding.severity is Severity.INFO and frames(finding) == {offer, request}


# -- silence -------------------------------------------------------------------------------------


def test_client_silent_in_the_middle_of_a_transfer() -> None:
    w = Wire()
    t = dora(w, 0.0, MAC, IP, "pxelinux.0")
    rrq, t = w.tftp_transfer(
        t,
        MAC,
        IP,
        2070,
        "vmlinuz",
        100 * 1408,
        options={"tsize": "0", "blksize": "1408"},
        oack={"tsize": str(100 * 1408), "blksize": "1408"},
        stop_after=20,
    )
    w.arp(60.0)
    trace = traced(w)
    (transfer,) = trace.decoded.tftp
    assert transfer.ending is Ending.TIMED_OUT and transfer.blocks == 20
    assert transfer.tail_resends == 3
    finding = only(trace, "client-silent")
    assert "vmlinuz" in finding.message and rrq in frames(finding)
    assert "20 blocks" in finding.message and "of 140.8 kB" in finding.message
    assert "timed out: block 20 sent 4 times with no ACK" in flat(render_text(trace))


def test_client_silent_after_its_ack() -> None:
    w = Wire()
    dora(w, 0.0, MAC, IP, "pxelinux.0")
    w.arp(30.0)
    trace = traced(w)
    finding = only(trace, "client-silent")
    assert 'named the boot file "pxelinux.0", which it never asked for' in finding.message
    assert trace.client(MAC).chain == (
        "BIOS PXE firmware (x86 BIOS, UNDI 2.1)",
        "pxelinux.0 (not fetched)",
    )


def test_silence_threshold_is_a_parameter() -> None:
    w = Wire()
    dora(w, 0.0, MAC, IP, "pxelinux.0")
    w.arp(30.0)
    data = w.pcap()
    assert "client-silent" not in codes(trace_bytes(data, silent_after=60))
    assert "client-silent" in codes(trace_bytes(data, silent_after=20))


def test_a_client_that_booted_is_not_silent() -> None:
    w = Wire()
    t = dora(w, 0.0, MAC, IP, "http://192.168.77.1:8080/boot.ipxe", ipxe=True)
    _, t = w.http_get(t, MAC, IP, 40000, "/vmlinuz", body=bytes(5000))
    w.http_get(
        t + 5,
        MAC,
        IP,
        40001,
        "/_pxeforge/callback",
        method="POST",
        request_body=b'{"mac": "52:54:00:77:00:10"}',
        body=b"ok\n",
    )
    w.arp(100.0)
    trace = traced(w)
    assert "client-silent" not in codes(trace)
    assert trace.client(MAC).callback
    assert "boot callback: HTTP POST /_pxeforge/callback → 200 OK" in flat(render_text(trace))


def test_pcapng_gives_the_same_findings() -> None:
    w = Wire()
    dora(w, 0.0, MAC, IP, "pxelinux.0", arch=7)
    assert (
        codes(traced(w, pcapng=True))
        == codes(traced(w))
        == {"loader-mismatch", "tftp-no-answer"} - {"tftp-no-answer"}
    )
