"""The lab's capture reader: pcap/pcapng records, boot events and milestones (no root)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from pxeforge.lab.capture import (
    EventKind,
    Milestones,
    PcapReader,
    frame_events,
    milestones,
    read_events,
)

DATA = Path(__file__).parent.parent / "data"
MAC = "52:54:00:77:00:10"
SERVER_MAC = "52:54:00:fe:00:01"


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _frame(src: str, dst: str, proto: int, l4: bytes) -> bytes:
    """Ethernet + IPv4 (no options) around a transport header+payload."""
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0, 64, proto, 0, bytes(4), bytes(4))
    return _mac(dst) + _mac(src) + b"\x08\x00" + ip + l4


def _udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def _tcp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x18, 65535, 0, 0) + payload


def _dhcp(op: int, mac: str, msg_type: int, yiaddr: bytes = bytes(4), bootfile: str = "") -> bytes:
    head = struct.pack(
        "!BBBBIHH4s4s4s4s", op, 1, 6, 0, 1, 0, 0, bytes(4), yiaddr, bytes(4), bytes(4)
    )
    head += _mac(mac) + bytes(10) + bytes(64) + bytes(128)
    opts = bytes([53, 1, msg_type])
    if bootfile:
        opts += bytes([67, len(bootfile)]) + bootfile.encode()
    return head + b"\x63\x82\x53\x63" + opts + b"\xff"


def _pcap(frames: list[tuple[float, bytes]], *, nanos: bool = False, big: bool = False) -> bytes:
    e = ">" if big else "<"
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    out = struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, 65535, 1)
    for ts, frame in frames:
        sec = int(ts)
        frac = round((ts - sec) * (1e9 if nanos else 1e6))
        out += struct.pack(e + "IIII", sec, frac, len(frame), len(frame)) + frame
    return out


def _boot_frames() -> list[tuple[float, bytes]]:
    def up(proto: int, l4: bytes, dst: str = SERVER_MAC) -> bytes:  # client → server
        return _frame(MAC, dst, proto, l4)

    def down(proto: int, l4: bytes) -> bytes:  # server → client
        return _frame(SERVER_MAC, MAC, proto, l4)

    ack = _dhcp(2, MAC, 5, b"\x0a\xd5\x00\x64", "pxelinux.0")
    rrq = b"\x00\x01pxelinux.0\x00octet\x00blksize\x001432\x00"
    post = b"POST /_pxeforge/callback HTTP/1.1\r\nHost: x\r\n\r\n{}"
    t = 1000.0
    return [
        (t + 0.0, up(17, _udp(68, 67, _dhcp(1, MAC, 1)), dst="ff:ff:ff:ff:ff:ff")),
        (t + 1.0, down(17, _udp(67, 68, ack))),
        (t + 2.0, up(17, _udp(2070, 69, rrq))),
        (t + 2.5, down(17, _udp(50000, 2071, b"\x00\x05\x00\x01File not found\x00"))),
        (t + 2.6, up(17, _udp(2072, 50001, b"\x00\x05\x00\x08User aborted\x00"))),
        (t + 3.0, up(17, _udp(2073, 69, b"\x00\x01/_pxeforge/kernel\x00octet\x00"))),
        (t + 9.0, up(6, _tcp(40000, 8080, post))),
        (t + 9.1, down(6, _tcp(8080, 40000, b"HTTP/1.1 200 OK\r\n\r\n"))),
        (t + 9.2, down(6, _tcp(8080, 40000, b""))),  # a bare ACK
    ]


def test_events_from_synthetic_boot() -> None:
    reader = PcapReader()
    records = reader.feed(_pcap(_boot_frames()))
    assert reader.linktype == 1
    events = [e for ts, f in records for e in frame_events(ts, f, server_mac=SERVER_MAC)]
    assert [e.text for e in events] == [
        "DHCP DISCOVER",
        "DHCP ACK 10.213.0.100 file=pxelinux.0",
        "TFTP RRQ pxelinux.0 blksize=1432",
        "TFTP ERROR 1 File not found",
        "TFTP ERROR 8 User aborted (sent by the client)",
        "TFTP RRQ /_pxeforge/kernel",
        "HTTP POST /_pxeforge/callback",
        "HTTP 200 OK",
    ]
    assert {e.mac for e in events} == {MAC}
    assert [e.kind for e in events][:3] == [EventKind.DHCP, EventKind.DHCP, EventKind.TFTP]
    assert events[1].path == "pxelinux.0"
    assert events[0].from_client and not events[1].from_client
    m = milestones(events, MAC, {"_pxeforge/kernel"})
    assert m == Milestones(dhcp_ack=1001.0, kernel=1003.0, callback=1009.0)
    assert milestones(events, "52:54:00:00:00:99", {"_pxeforge/kernel"}) == Milestones()
    # a kernel matched by file name too, with or without the leading slash
    assert milestones(events, MAC, {"kernel"}).kernel == 1003.0


@pytest.mark.parametrize("nanos", [False, True])
@pytest.mark.parametrize("big", [False, True])
def test_pcap_byte_orders_and_resolutions(nanos: bool, big: bool) -> None:
    data = _pcap(_boot_frames(), nanos=nanos, big=big)
    records = PcapReader().feed(data)
    assert len(records) == 9
    assert records[1][0] == pytest.approx(1001.0)
    assert records[3][0] == pytest.approx(1002.5)


def test_pcap_fed_byte_by_byte_gives_the_same_records() -> None:
    data = _pcap(_boot_frames())
    whole = PcapReader().feed(data)
    reader = PcapReader()
    pieces = []
    for i in range(len(data)):
        pieces += reader.feed(data[i : i + 1])
    assert pieces == whole
    # a growing file: a half-written record waits for the rest
    reader = PcapReader()
    assert reader.feed(data[: 24 + 10]) == []
    assert reader.feed(data[24 + 10 :]) == whole


def test_not_a_capture() -> None:
    with pytest.raises(ValueError, match="not a pcap"):
        PcapReader().feed(b"GIF89a" + bytes(40))


def test_real_pcapng_captures() -> None:
    """The shared captures of real clients (pcapng, written by Wireshark tools)."""
    bios = read_events(DATA / "bios-ipxe-boot-control.pcap")
    names = [(e.kind, e.name) for e in bios if e.mac == MAC]
    assert names[:6] == [(EventKind.DHCP, n) for n in ("DISCOVER", "OFFER") * 2] + [
        (EventKind.DHCP, "REQUEST"),
        (EventKind.DHCP, "ACK"),
    ]
    gets = [e.path for e in bios if e.name == "GET"]
    assert gets[:3] == ["/boot.ipxe", "/vmlinuz", "/initrd.gz"]
    m = milestones(bios, MAC, {"vmlinuz"})
    assert m.dhcp_ack is not None and m.kernel is not None
    assert 3.0 < m.dhcp_ack - bios[0].time < 3.2  # the ACK after two DISCOVERs (secs 4, 10)
    assert 16.0 < m.kernel - bios[0].time < 16.3

    uefi = read_events(DATA / "uefi-ipxe-boot-control.pcap", server_mac="00:00:00:00:00:00")
    texts = [e.text for e in uefi]
    # OVMF's size probe: RRQ with tsize, then ERROR 8 from the client, then RRQ without tsize
    i = texts.index("TFTP RRQ snponly.efi tsize=0 blksize=1468 windowsize=4")
    assert texts[i + 1] == "TFTP ERROR 8 User aborted the transfer (sent by the client)"
    assert texts[i + 2] == "TFTP RRQ snponly.efi blksize=1468 windowsize=4"
