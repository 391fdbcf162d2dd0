"""Hostile captures never crash the trace: a clear CaptureError, or a skip with a note.

Truncated files (cut at every kind of offset), garbage, impossible record lengths and snap
lengths, frames that are not IPv4, other link types, fragmented UDP (in order, out of order,
incomplete), frames cut by a small snap length, and random corruption (hypothesis).
"""

from __future__ import annotations

import io
import random
import struct
from ipaddress import IPv4Address
from pathlib import Path

import dpkt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trace_wire import SERVER_IP, SERVER_MAC, Wire, dora, mac_bytes, pxe_request

from pxeforge.errors import PxeforgeError
from pxeforge.protocols import tftp
from pxeforge.protocols.dhcp import MessageType
from pxeforge.trace import CaptureError, Trace, trace_bytes, trace_capture
from pxeforge.trace.decode import Ending
from pxeforge.trace.report import render_text, to_json

DATA = Path(__file__).resolve().parent.parent / "data"
BIOS = (DATA / "bios-ipxe-boot-control.pcap").read_bytes()
MAC = "52:54:00:77:00:10"
IP = IPv4Address("192.168.77.145")


def survives(data: bytes) -> Trace | None:
    """Trace ``data`` and render it every way; only CaptureError may escape."""
    try:
        trace = trace_bytes(data, "hostile")
    except CaptureError:
        return None
    render_text(trace)
    to_json(trace)
    return trace


def small_capture() -> Wire:
    w = Wire()
    t = dora(w, 0.0, MAC, IP, "pxelinux.0")
    w.tftp_transfer(
        t, MAC, IP, 2070, "pxelinux.0", 3000, options={"blksize": "1432"}, oack={"blksize": "1432"}
    )
    w.http_get(t + 1, MAC, IP, 40000, "/boot.ipxe", body=b"#!ipxe\nboot\n")
    return w


# -- files that are not captures -----------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\xd4\xc3", b"hello world, not a capture at all" * 3])
def test_not_a_capture_is_a_clear_error(data: bytes) -> None:
    with pytest.raises(CaptureError, match="hostile"):
        trace_bytes(data, "hostile")


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="cannot read"):
        trace_capture(tmp_path / "nope.pcap")
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    with pytest.raises(CaptureError, match="empty file"):
        trace_capture(empty)
    with pytest.raises(CaptureError, match="cannot read"):
        trace_capture(tmp_path)  # a directory
    assert issubclass(CaptureError, PxeforgeError)  # the CLI reports it as "pxeforge: …"


def test_random_garbage_is_refused() -> None:
    rng = random.Random(5)
    for _ in range(50):
        data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(24, 3000)))
        assert survives(data) is None or data[:4] in (b"\xa1\xb2\xc3\xd4", b"\n\r\r\n")


# -- truncation ----------------------------------------------------------------------------------


def test_truncated_everywhere() -> None:
    """Cut the real capture at 300 offsets: no crash, a note when a record was cut."""
    offsets = sorted({*range(80), *range(80, len(BIOS), len(BIOS) // 220), len(BIOS) - 1})
    for cut in offsets:
        trace = survives(BIOS[:cut])
        if cut < 24:
            assert trace is None
            continue
        assert trace is not None
        assert trace.stats.frames <= 516
        if trace.stats.frames < 516:
            assert any("truncated" in n for n in trace.stats.notes), cut


def test_truncated_pcap_keeps_what_came_before() -> None:
    data = small_capture().pcap()
    trace = survives(data[:-7])
    assert trace is not None
    assert any("cut short" in n for n in trace.stats.notes)
    assert len(trace.decoded.dhcp) == 4  # the DHCP exchange at the start is all there


# -- impossible lengths --------------------------------------------------------------------------


def test_huge_snaplen_and_record_length() -> None:
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 0xFFFFFFFF, 1)
    good = small_capture().pcap()[24:]
    bogus = struct.pack("<IIII", 1, 0, 0xFFFFFFF0, 0xFFFFFFF0) + b"x" * 100
    trace = survives(header + good + bogus)
    assert trace is not None
    assert len(trace.decoded.dhcp) == 4
    assert any("corrupt" in n for n in trace.stats.notes)


def test_pcapng_with_impossible_blocks() -> None:
    data = small_capture().pcapng()
    # an enhanced packet block claiming 3 GB, then one with a length that is not a multiple of 4
    for bad_len in (0xC0000000, 13, 4):
        bogus = struct.pack("<II", 6, bad_len) + bytes(32)
        trace = survives(data + bogus)
        assert trace is not None
        assert len(trace.decoded.dhcp) == 4
        assert trace.stats.notes, bad_len


def test_pcapng_huge_snaplen_interface() -> None:
    w = small_capture()
    out = io.BytesIO()
    idb = dpkt.pcapng.InterfaceDescriptionBlockLE(snaplen=0xFFFFFFFF)
    writer = dpkt.pcapng.Writer(out, idb=idb)
    for ts, frame in w.frames:
        writer.writepkt(frame, ts=ts)
    trace = survives(out.getvalue())
    assert trace is not None and trace.stats.frames == len(w.frames)


def test_big_endian_nanosecond_pcap() -> None:
    w = small_capture()
    out = io.BytesIO()
    out.write(struct.pack(">IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1))
    for ts, frame in w.frames:
        sec = int(ts)
        out.write(struct.pack(">IIII", sec, round((ts - sec) * 1e9), len(frame), len(frame)))
        out.write(frame)
    trace = survives(out.getvalue())
    assert trace is not None and trace.stats.format == "pcap"
    assert trace.start == pytest.approx(w.start)
    assert [m.time - trace.start for m in trace.decoded.dhcp] == pytest.approx(
        [0, 0.001, 0.01, 0.011], abs=1e-6
    )


# -- frames that are not IPv4, other link types --------------------------------------------------


def test_non_ip_frames_are_counted_not_decoded() -> None:
    w = small_capture()
    w.arp(5.0)
    ipv6 = dpkt.ethernet.Ethernet(
        src=mac_bytes(MAC), dst=b"\x33\x33\x00\x00\x00\x02", type=0x86DD, data=bytes(48)
    )
    w.frame(5.1, bytes(ipv6))
    w.frame(5.2, bytes.fromhex("ffffffffffff525400770010002e") + bytes(46))  # 802.3 + LLC
    w.frame(5.3, b"\x01\x02\x03")  # a runt
    w.frame(5.4, bytes.fromhex("ffffffffffff5254007700100800") + b"\x45\x00")  # IPv4 cut short
    trace = survives(w.pcap())
    assert trace is not None
    skipped = trace.stats.skipped
    assert skipped["ARP"] == 1 and skipped["IPv6"] == 1 and skipped["runt Ethernet frame"] == 1
    assert skipped["ethertype 0x002e"] == 1
    assert skipped["malformed IPv4/UDP/TCP"] == 1
    assert trace.client(MAC).chain[0].startswith("BIOS PXE firmware")
    assert "not decoded: 1 ARP, 1 IPv6" in render_text(trace)


def test_vlan_tagged_dhcp_is_decoded() -> None:
    w = Wire()
    disc = pxe_request(MAC, MessageType.DISCOVER).to_bytes()
    udp = dpkt.udp.UDP(sport=68, dport=67, ulen=8 + len(disc), data=disc)
    ip = dpkt.ip.IP(src=bytes(4), dst=b"\xff" * 4, p=17, data=udp)
    tag = struct.pack("!HH", 0x0064, 0x0800)  # VLAN 100, then IPv4
    frame = b"\xff" * 6 + mac_bytes(MAC) + b"\x81\x00" + tag + bytes(ip)
    w.frame(0.0, frame)
    trace = survives(w.pcap())
    assert trace is not None and [m.kind for m in trace.decoded.dhcp] == ["DISCOVER"]


@pytest.mark.parametrize("link", [113, 276, 101, 228, 0])
def test_other_link_types(link: int) -> None:
    w = small_capture()
    out = io.BytesIO()
    writer = dpkt.pcap.Writer(out, linktype=link, snaplen=65535)
    for ts, frame in w.frames:
        src, ethertype, ip = frame[6:12], frame[12:14], frame[14:]
        if link == 113:
            header = struct.pack("!HHH", 0, 1, 6) + src + b"\0\0" + ethertype
        elif link == 276:
            header = ethertype + b"\0\0" + struct.pack("!iHBB", 2, 1, 0, 6) + src + b"\0\0"
        elif link == 0:
            header = struct.pack("<I", 2)
        else:
            header = b""
        writer.writepkt(header + ip, ts=ts)
    trace = survives(out.getvalue())
    assert trace is not None
    assert [m.kind for m in trace.decoded.dhcp] == ["DISCOVER", "OFFER", "REQUEST", "ACK"]
    (transfer,) = trace.decoded.tftp
    assert transfer.ending is Ending.COMPLETE and transfer.bytes == 3000
    # without Ethernet the client is still known by the MAC DHCP gave its address to
    assert transfer.mac == MAC or trace.decoded.ip_macs[transfer.client] == MAC
    assert trace.client(MAC).files == ("pxelinux.0", "/boot.ipxe")


def test_unknown_link_type_is_skipped_with_a_count() -> None:
    out = io.BytesIO()
    writer = dpkt.pcap.Writer(out, linktype=147)
    writer.writepkt(b"\x00" * 60, ts=1.0)
    trace = survives(out.getvalue())
    assert trace is not None and trace.stats.skipped["link type 147 (not decoded)"] == 1


# -- fragments -----------------------------------------------------------------------------------


def fragments(payload: bytes, size: int, ident: int = 77) -> list[bytes]:
    """An IPv4 UDP datagram 0.0.0.0:68 → 255.255.255.255:67 in Ethernet frames of ``size``."""
    udp = bytes(dpkt.udp.UDP(sport=68, dport=67, ulen=8 + len(payload), data=payload))
    out = []
    for offset in range(0, len(udp), size):
        piece = udp[offset : offset + size]
        more = offset + size < len(udp)
        ip = dpkt.ip.IP(src=bytes(4), dst=b"\xff" * 4, p=17, id=ident, data=piece)
        ip.offset = offset // 8
        ip.mf = int(more)
        out.append(b"\xff" * 6 + mac_bytes(MAC) + b"\x08\x00" + bytes(ip))
    return out


@pytest.mark.parametrize("order", ["in-order", "reversed", "duplicated"])
def test_fragmented_dhcp_is_reassembled(order: str) -> None:
    disc = pxe_request(MAC, MessageType.DISCOVER).to_bytes()
    frames = fragments(disc, 96)
    assert len(frames) == 4
    if order == "reversed":
        frames.reverse()
    elif order == "duplicated":
        frames = frames[:2] + frames[1:]
    w = Wire()
    for i, frame in enumerate(frames):
        w.frame(i * 0.001, frame)
    trace = survives(w.pcap())
    assert trace is not None
    (msg,) = trace.decoded.dhcp
    assert msg.kind == "DISCOVER" and msg.frame == len(frames)  # numbered by its last fragment
    assert trace.client(MAC).arch == 0


def test_incomplete_fragments_are_reported_not_decoded() -> None:
    disc = pxe_request(MAC, MessageType.DISCOVER).to_bytes()
    frames = fragments(disc, 96)
    w = Wire()
    for i, frame in enumerate(frames):
        if i != 1:
            w.frame(i * 0.001, frame)
    trace = survives(w.pcap())
    assert trace is not None and not trace.decoded.dhcp
    assert trace.stats.skipped["IPv4 fragments never reassembled"] == 3
    assert any("fragmented datagram 0.0.0.0 → 255.255.255.255" in n for n in trace.stats.notes)


def test_fragmented_tftp_data_blocks() -> None:
    """blksize 4096 on a 1500-byte MTU: every DATA is three fragments."""
    w = Wire()
    t = dora(w, 0.0, MAC, IP, "pxelinux.0")
    w.tftp_request(t, MAC, IP, 2070, "big", {"blksize": "4096"})
    w.udp(
        t + 0.001,
        SERVER_MAC,
        MAC,
        SERVER_IP,
        40000,
        IP,
        2070,
        tftp.encode_oack({"blksize": "4096"}),
    )
    w.udp(t + 0.002, MAC, SERVER_MAC, IP, 2070, SERVER_IP, 40000, tftp.encode_ack(0))
    for block, size in ((1, 4096), (2, 1000)):
        data = tftp.encode_data(block, bytes(size))
        udp = bytes(dpkt.udp.UDP(sport=40000, dport=2070, ulen=8 + len(data), data=data))
        for offset in range(0, len(udp), 1480):
            ip = dpkt.ip.IP(
                src=SERVER_IP.packed,
                dst=IP.packed,
                p=17,
                id=900 + block,
                data=udp[offset : offset + 1480],
            )
            ip.offset, ip.mf = offset // 8, int(offset + 1480 < len(udp))
            w.frame(
                t + 0.003 * block, mac_bytes(MAC) + mac_bytes(SERVER_MAC) + b"\x08\x00" + bytes(ip)
            )
        w.udp(
            t + 0.003 * block + 0.001,
            MAC,
            SERVER_MAC,
            IP,
            2070,
            SERVER_IP,
            40000,
            tftp.encode_ack(block),
        )
    trace = survives(w.pcap())
    assert trace is not None
    (transfer,) = trace.decoded.tftp
    assert transfer.ending is Ending.COMPLETE and transfer.bytes == 5096 and transfer.blocks == 2


# -- snap length ---------------------------------------------------------------------------------


def test_small_snaplen_cuts_frames_but_not_the_counts() -> None:
    w = Wire()
    t = dora(w, 0.0, MAC, IP, "pxelinux.0")
    w.tftp_transfer(
        t, MAC, IP, 2070, "pxelinux.0", 5000, options={"blksize": "1432"}, oack={"blksize": "1432"}
    )
    out = io.BytesIO()
    out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 96, 1))
    for ts, frame in w.frames:
        sec = int(ts)
        cut = frame[:96]
        out.write(struct.pack("<IIII", sec, round((ts - sec) * 1e6), len(cut), len(frame)))
        out.write(cut)
    trace = survives(out.getvalue())
    assert trace is not None
    assert trace.stats.snaplen_cut == 8  # 4 DHCP + 4 DATA frames are longer than 96 bytes
    assert not trace.decoded.dhcp  # cut DHCP cannot be decoded …
    assert any("snap length" in n.text for n in trace.decoded.notes)  # … and says why
    (transfer,) = trace.decoded.tftp
    # DATA lengths come from the IP header: the transfer is still measured right
    assert transfer.ending is Ending.COMPLETE and transfer.bytes == 5000
    assert any(
        f.code == "capture-incomplete" and "snap length" in f.message for f in trace.findings
    )


# -- TCP oddities --------------------------------------------------------------------------------


def test_tcp_that_is_not_http_is_ignored() -> None:
    w = Wire()
    ack = dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH
    w.tcp(0.0, MAC, SERVER_MAC, IP, 5000, SERVER_IP, 22, 1, 1, ack, b"SSH-2.0-OpenSSH_9.2\r\n")
    w.tcp(0.1, SERVER_MAC, MAC, SERVER_IP, 22, IP, 5000, 1, 23, ack, bytes(range(256)) * 4)
    # a "request" whose head never ends within 64 KiB
    w.tcp(0.2, MAC, SERVER_MAC, IP, 5001, SERVER_IP, 80, 1, 1, ack, b"GET " + b"x" * 40000)
    w.tcp(0.3, MAC, SERVER_MAC, IP, 5001, SERVER_IP, 80, 40005, 1, ack, b"x" * 40000)
    trace = survives(w.pcap())
    assert trace is not None and not trace.decoded.http


# -- random corruption ---------------------------------------------------------------------------

_SMALL = small_capture()
_SAMPLES = (_SMALL.pcap(), _SMALL.pcapng())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.integers(0, 1),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=12),
    cut=st.integers(0, 10**6),
)
def test_corrupted_captures_never_crash(which: int, flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(_SAMPLES[which])
    for pos, value in flips:
        data[pos % len(data)] = value
    survives(bytes(data[: max(cut % (len(data) + 1), 1)]))
