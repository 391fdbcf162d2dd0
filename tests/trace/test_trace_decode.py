"""The decoder's harder parts: TCP reassembly under HTTP, TFTP windows and block rollover,
GRUB and shim lookups recognised, ports associated the RFC 1350 way."""

from __future__ import annotations

from ipaddress import IPv4Address

import dpkt
from trace_wire import SERVER_IP, SERVER_MAC, Wire, dora

from pxeforge.protocols import tftp
from pxeforge.trace import Trace, trace_bytes
from pxeforge.trace.decode import Ending
from pxeforge.trace.report import render_text

MAC = "52:54:00:77:00:10"
IP = IPv4Address("192.168.77.145")
ACK, PSH, SYN, FIN = dpkt.tcp.TH_ACK, dpkt.tcp.TH_PUSH, dpkt.tcp.TH_SYN, dpkt.tcp.TH_FIN


def traced(w: Wire) -> Trace:
    return trace_bytes(w.pcap(), "synth.pcap")


def flat(text: str) -> str:
    return " ".join(text.split())


# -- HTTP ----------------------------------------------------------------------------------------


def test_http_get_with_a_multi_segment_body() -> None:
    w = Wire()
    body = bytes(range(256)) * 40  # 10240 bytes: 8 segments
    first, _ = w.http_get(0.0, MAC, IP, 40000, "/vmlinuz", body=body)
    (x,) = traced(w).decoded.http
    assert (x.method, x.target, x.status, x.reason) == ("GET", "/vmlinuz", 200, "OK")
    assert (x.content_length, x.body_bytes, x.missing_bytes) == (10240, 10240, 0)
    assert x.complete and x.head_captured and x.request_frame == first and x.mac == MAC
    assert x.body_prefix == body[:4096]


def test_http_out_of_order_and_retransmitted_segments() -> None:
    w = Wire()
    c, s = (IP, 40000), (SERVER_IP, 8080)
    w.tcp(0.0, MAC, SERVER_MAC, *c, *s, 100, 0, SYN)
    w.tcp(0.001, SERVER_MAC, MAC, *s, *c, 900, 101, SYN | ACK)
    request = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
    w.tcp(0.002, MAC, SERVER_MAC, *c, *s, 101, 901, PSH | ACK, request)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n"
    response = head + b"0123456789" * 3
    r0, r1, r2 = response[:20], response[20:50], response[50:]
    seq = 901
    w.tcp(0.003, SERVER_MAC, MAC, *s, *c, seq + 20, 130, ACK, r1)  # early
    w.tcp(0.004, SERVER_MAC, MAC, *s, *c, seq, 130, ACK, r0)
    w.tcp(0.005, SERVER_MAC, MAC, *s, *c, seq, 130, ACK, r0)  # retransmitted
    w.tcp(0.006, SERVER_MAC, MAC, *s, *c, seq + 50, 130, PSH | ACK, r2)
    w.tcp(0.007, MAC, SERVER_MAC, *c, *s, 130, seq + len(response), ACK)
    (x,) = traced(w).decoded.http
    assert (x.status, x.body_bytes, x.missing_bytes, x.complete) == (200, 30, 0, True)
    assert x.body_prefix == b"0123456789" * 3


def test_http_chunked_and_keep_alive() -> None:
    w = Wire()
    c, s = (IP, 40001), (SERVER_IP, 8080)
    w.tcp(0.0, MAC, SERVER_MAC, *c, *s, 0, 0, SYN)
    w.tcp(0.001, SERVER_MAC, MAC, *s, *c, 5000, 1, SYN | ACK)
    cseq, sseq = 1, 5001
    script = b"#!ipxe\nkernel http://10.0.0.1/vmlinuz\ninitrd http://10.0.0.1/initrd\nboot\n"
    responses = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + f"{len(script[:20]):x}\r\n".encode()
        + script[:20]
        + b"\r\n"
        + f"{len(script[20:]):x};ext=1\r\n".encode()
        + script[20:]
        + b"\r\n0\r\n\r\n",
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope",
    ]
    for i, (path, response) in enumerate(zip(("/boot.ipxe", "/missing"), responses, strict=True)):
        request = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        w.tcp(0.01 + i, MAC, SERVER_MAC, *c, *s, cseq, sseq, PSH | ACK, request)
        cseq += len(request)
        for off in range(0, len(response), 25):
            w.tcp(0.02 + i, SERVER_MAC, MAC, *s, *c, sseq, cseq, ACK, response[off : off + 25])
            sseq += len(response[off : off + 25])
    trace = traced(w)
    first, second = trace.decoded.http
    assert (first.path, first.status, first.body_bytes, first.complete) == (
        "/boot.ipxe",
        200,
        len(script),
        True,
    )
    assert first.body_prefix == script
    assert (second.path, second.status, second.body_bytes) == ("/missing", 404, 4)
    text = flat(render_text(trace))
    assert (
        "iPXE script: kernel http://10.0.0.1/vmlinuz | initrd http://10.0.0.1/initrd | boot" in text
    )


def test_http_fin_retransmitted_before_a_hole_is_filled() -> None:
    """A server FIN seen twice must not end the connection while a hole is still open."""
    w = Wire()
    c, s = (IP, 40005), (SERVER_IP, 8080)
    w.tcp(0.0, MAC, SERVER_MAC, *c, *s, 0, 0, SYN)
    w.tcp(0.001, SERVER_MAC, MAC, *s, *c, 7000, 1, SYN | ACK)
    request = b"GET /k HTTP/1.1\r\nHost: x\r\n\r\n"
    w.tcp(0.002, MAC, SERVER_MAC, *c, *s, 1, 7001, PSH | ACK, request)
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 3000\r\n\r\n" + bytes(3000)
    a, b, rest = response[:1000], response[1000:2000], response[2000:]
    cack = 1 + len(request)
    w.tcp(0.003, SERVER_MAC, MAC, *s, *c, 7001, cack, ACK, a)
    end = 7001 + len(response)
    w.tcp(0.004, SERVER_MAC, MAC, *s, *c, 7001 + 2000, cack, FIN | PSH | ACK, rest)  # b is lost
    w.tcp(0.005, MAC, SERVER_MAC, *c, *s, cack, 7001 + 1000, ACK)  # duplicate ACK: the hole
    w.tcp(0.2, SERVER_MAC, MAC, *s, *c, 7001 + 2000, cack, FIN | PSH | ACK, rest)  # FIN again
    w.tcp(0.4, SERVER_MAC, MAC, *s, *c, 7001 + 1000, cack, ACK, b)  # the hole, retransmitted
    w.tcp(0.401, MAC, SERVER_MAC, *c, *s, cack, end + 1, FIN | ACK)
    (x,) = traced(w).decoded.http
    assert (x.status, x.body_bytes, x.missing_bytes, x.complete) == (200, 3000, 0, True)


def test_http_gap_in_a_body_keeps_the_connection_in_step() -> None:
    """A segment the capture lost, acknowledged by the client: counted, and parsing goes on."""
    w = Wire()
    body = bytes(6000)
    w.http_get(0.0, MAC, IP, 40002, "/big", body=body, mss=1000, drop_segments=(3,))
    (x,) = traced(w).decoded.http
    assert (x.status, x.body_bytes, x.missing_bytes, x.complete) == (200, 6000, 1000, True)


def test_http_head_not_captured_is_counted_from_sequence_numbers() -> None:
    w = Wire()
    body = bytes(5000)
    w.http_get(0.0, MAC, IP, 40003, "/vmlinuz", body=body, mss=1000, drop_segments=(0,))
    trace = traced(w)
    (x,) = trace.decoded.http
    head = len(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\nContent-Type: text/plain\r\n\r\n")
    assert (x.status, x.outcome, x.wire_bytes, x.missing_bytes) == (
        None,
        "not-captured",
        5000 + head,
        1000,
    )
    assert "response head not captured; 5.1 kB sent by the server" in flat(render_text(trace))


def test_agent_lookup_and_heartbeat_are_named() -> None:
    w = Wire()
    _, t = w.http_get(
        0.0,
        MAC,
        IP,
        40010,
        "/v1/lookup?addresses=52:54:00:77:00:10",
        status="404 Not Found",
        body=b'{"error": "not found"}',
    )
    w.http_get(
        t,
        MAC,
        IP,
        40011,
        "/v1/heartbeat/node-1",
        method="POST",
        request_body=b'{"callback_url": "http://10.0.0.5:9999"}',
        status="202 Accepted",
    )
    trace = traced(w)
    text = flat(render_text(trace))
    assert "agent lookup: HTTP GET /v1/lookup?addresses=52:54:00:77:00:10 → 404 Not Found" in text
    assert "looked up by addresses=52:54:00:77:00:10" in text
    assert "agent heartbeat: HTTP POST /v1/heartbeat/node-1 → 202 Accepted" in text
    assert 'node node-1 body {"callback_url": "http://10.0.0.5:9999"}' in text
    assert [f.code for f in trace.findings] == ["agent-lookup-failed"]
    assert trace.client(MAC).callback  # a heartbeat means the ramdisk is up


# -- TFTP ----------------------------------------------------------------------------------------


def test_windowsize_transfer_acks_every_window() -> None:
    w = Wire()
    t = dora(w, 0.0, MAC, IP, "bootx64.efi", arch=7)
    w.tftp_request(t, MAC, IP, 1500, "bootx64.efi", {"blksize": "1468", "windowsize": "4"})
    send = lambda dt, data: w.udp(t + dt, SERVER_MAC, MAC, SERVER_IP, 45000, IP, 1500, data)  # noqa: E731
    recv = lambda dt, data: w.udp(t + dt, MAC, SERVER_MAC, IP, 1500, SERVER_IP, 45000, data)  # noqa: E731
    send(0.001, tftp.encode_oack({"blksize": "1468", "windowsize": "4"}))
    recv(0.002, tftp.encode_ack(0))
    size = 9 * 1468 + 100
    for block in range(1, 11):
        send(
            0.003 + block * 0.0001,
            tftp.encode_data(block, bytes(min(1468, size - (block - 1) * 1468))),
        )
        if block % 4 == 0 or block == 10:
            recv(0.004 + block * 0.0001, tftp.encode_ack(block))
    trace = traced(w)
    (x,) = trace.decoded.tftp
    assert (x.ending, x.bytes, x.blocks, x.windowsize, x.acks) == (Ending.COMPLETE, size, 10, 4, 4)
    assert x.retransmits == 0 and x.refused_options == () and x.last_ack_seen
    assert not trace.findings


def test_block_numbers_roll_over() -> None:
    """70,000 blocks of 8 bytes: block 65535 is followed by block 0 (tftp-hpa, curl)."""
    w = Wire()
    t = dora(w, 0.0, MAC, IP, "pxelinux.0")
    size = 70_000 * 8 + 3
    w.tftp_transfer(
        t,
        MAC,
        IP,
        2070,
        "big.img",
        size,
        options={"blksize": "8"},
        oack={"blksize": "8"},
        step=0.00001,
    )
    (x,) = traced(w).decoded.tftp
    assert x.ending is Ending.COMPLETE
    assert (x.blocks, x.bytes, x.retransmits, x.missing_blocks) == (70_001, size, 0, 0)


def test_server_answering_twice_and_rrq_resent() -> None:
    w = Wire()
    t = dora(w, 0.0, MAC, IP, "pxelinux.0")
    first = w.tftp_request(t, MAC, IP, 2070, "pxelinux.0")
    again = w.tftp_request(t + 1, MAC, IP, 2070, "pxelinux.0")  # before any answer
    w.udp(t + 1.001, SERVER_MAC, MAC, SERVER_IP, 41000, IP, 2070, tftp.encode_data(1, bytes(100)))
    w.udp(t + 1.002, SERVER_MAC, MAC, SERVER_IP, 41001, IP, 2070, tftp.encode_data(1, bytes(100)))
    w.udp(t + 1.003, MAC, SERVER_MAC, IP, 2070, SERVER_IP, 41000, tftp.encode_ack(1))
    (x,) = traced(w).decoded.tftp
    assert x.request_frame == first and x.request_resends == (again,)
    assert (x.server_port, x.stray_packets, x.ending, x.bytes) == (41000, 1, Ending.COMPLETE, 100)


def test_grub_and_shim_lookups_are_recognised() -> None:
    w = Wire()
    t = dora(w, 0.0, MAC, IP, "bootx64.efi", arch=7)
    port = 1500
    _, t = w.tftp_transfer(
        t,
        MAC,
        IP,
        port,
        "bootx64.efi",
        950_000,
        options={"blksize": "1468"},
        oack={"blksize": "1468"},
        step=0.00001,
    )
    for name in ("revocations_sku.efi", "revocations_sbat.efi", "shim_certificate_0.efi"):
        port += 1
        _, t = w.tftp_transfer(t, MAC, IP, port, name, 0, error=(1, "File not found"))
    port += 1
    _, t = w.tftp_transfer(t, MAC, IP, port, "grubx64.efi", 30_000, step=0.00001)
    lookups = [f"/grub/x86_64-efi/{n}.lst" for n in ("command", "fs", "crypto", "terminal")]
    lookups += ["/grub/grub.cfg-01-52-54-00-77-00-10", "/grub/grub.cfg-C0A84D91"]
    for name in lookups:
        port += 1
        _, t = w.tftp_transfer(t, MAC, IP, port, name, 0, error=(1, "File not found"))
    port += 1
    _, t = w.tftp_transfer(t, MAC, IP, port, "/grub/grub.cfg", 400)
    trace = traced(w)
    shim, grub = trace.client(MAC).searches
    assert shim.loader == "shim" and shim.served == ()
    assert shim.summary.startswith("shim probed its optional files (revocations_sku.efi")
    assert grub.summary == (
        "GRUB looked for its config: 4 module lists (*.lst) → grub.cfg-01-mac → 1 hex-IP name "
        "→ grub.cfg; served: grub.cfg"
    )
    assert not trace.findings  # every miss here is a normal probe
    assert trace.client(MAC).chain == (
        "UEFI PXE firmware (x64 UEFI, UNDI 3.0)",
        "bootx64.efi",
        "grubx64.efi",
    )
