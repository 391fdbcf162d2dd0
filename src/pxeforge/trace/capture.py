"""Reading a capture file: pcap/pcapng records → IPv4 UDP datagrams and TCP segments.

Theory of operation
-------------------
`Capture.open` maps the file (or takes bytes: `Capture.from_bytes`) and `Capture.segments`
walks it once, lazily, so a capture of a multi-gigabyte transfer is never held in memory as
Python objects. Every length is bounds-checked before it is used.

dpkt reads what occurs once per file or section — the pcap file header, pcapng section and
interface blocks with their options — and names the layouts. The per-packet headers (pcap
record, pcapng packet block, Ethernet, SLL, IPv4, UDP, TCP) are fixed layouts read with
precompiled structs: dpkt's generic `Packet` classes cost about 10 µs per header, which made
a 140,000-frame TFTP capture take 13 s to read; the structs bring the whole trace to a few µs
per frame.

* **Containers.** pcap (libpcap savefile: micro- or nanosecond magic, either byte order,
  the "modified" Kuznetzov header) and pcapng (sections in either byte order, several
  interfaces each with its own link type and ``if_tsresol``/``if_tsoffset``; enhanced, simple
  and obsolete packet blocks). A record that runs past the end of the file, a block whose
  length fields are impossible, or a header that is not a capture at all stop the walk with a
  note (`CaptureStats.notes`); what was read before is kept. A file with no valid header at
  all is a `CaptureError`.
* **Links.** Ethernet (with up to two 802.1Q tags), Linux "cooked" SLL and SLL2
  (``tcpdump -i any``), raw IP, and BSD loopback. Other link types are skipped and counted.
* **IPv4** (RFC 791). IPv6 and ARP are counted, not decoded. Fragments are reassembled
  (RFC 791 §3.2, RFC 815): pieces are kept per (source, destination, protocol, id) until the
  last one and every hole is filled; at most `MAX_PENDING_DATAGRAMS` datagrams wait, each for
  at most `FRAGMENT_TIMEOUT` seconds of capture time, and anything left is reported. The
  reassembled datagram carries the frame number of its last fragment.
* **UDP** (RFC 768) and **TCP** (RFC 9293) headers. A payload cut short by the capture's
  snap length is marked ``truncated``; ``length`` is always the size on the wire, so sequence
  arithmetic and byte counts stay right.

Every frame's source MAC is remembered with the time it was last seen (ARP included), which
is how the analysis knows whether a client went silent.
"""

from __future__ import annotations

import mmap
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from ipaddress import IPv4Address
from pathlib import Path

import dpkt

from pxeforge.errors import PxeforgeError

__all__ = [
    "FRAGMENT_TIMEOUT",
    "IPPROTO_TCP",
    "IPPROTO_UDP",
    "MAX_PENDING_DATAGRAMS",
    "Capture",
    "CaptureError",
    "CaptureStats",
    "Frame",
    "LinkType",
    "Segment",
    "TcpFlag",
]

FRAGMENT_TIMEOUT = 30.0  # seconds of capture time a fragmented datagram may wait (RFC 791: 15 s+)
MAX_PENDING_DATAGRAMS = 256  # fragmented datagrams waiting for their other pieces
MAX_RECORD = 64 * 1024 * 1024  # a record larger than this is corruption, not a packet
_MAX_IP_DATAGRAM = 65535
IPPROTO_TCP = 6  # RFC 790 assigned numbers
IPPROTO_UDP = 17


class CaptureError(PxeforgeError):
    """The file cannot be read as a capture at all (missing, empty, not pcap or pcapng)."""


class LinkType(IntEnum):
    """tcpdump.org link-layer header types we decode."""

    NULL = 0  # BSD loopback: 4-byte address family, host byte order
    ETHERNET = 1
    RAW = 101  # raw IPv4/IPv6
    LOOP = 108  # OpenBSD loopback: 4-byte address family, network byte order
    LINUX_SLL = 113
    IPV4 = 228
    LINUX_SLL2 = 276


_RAW_ALIASES = {12: LinkType.RAW, 14: LinkType.RAW}  # DLT_RAW on some BSDs


class TcpFlag(IntEnum):
    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured record. ``time`` is seconds since the epoch; ``number`` counts from 1."""

    number: int
    time: float
    link: int
    data: bytes
    wire_len: int


@dataclass(frozen=True, slots=True)
class Segment:
    """A UDP datagram or TCP segment (after IPv4 reassembly).

    ``payload`` is what the capture holds; ``length`` is the payload size on the wire (they
    differ only when ``truncated``). TCP fields are 0 for UDP.
    """

    frame: int
    time: float
    src_mac: str | None
    dst_mac: str | None
    src: IPv4Address
    dst: IPv4Address
    proto: int  # 6 TCP, 17 UDP
    sport: int
    dport: int
    payload: bytes
    length: int
    truncated: bool = False
    seq: int = 0
    ack: int = 0
    flags: int = 0
    fragments: int = 1

    @property
    def is_udp(self) -> bool:
        return self.proto == IPPROTO_UDP

    @property
    def is_tcp(self) -> bool:
        return self.proto == IPPROTO_TCP


@dataclass(slots=True)
class CaptureStats:
    """What the walk saw besides segments; filled while `Capture.segments` runs."""

    format: str = ""
    frames: int = 0
    first_time: float | None = None
    last_time: float | None = None
    link_types: set[int] = field(default_factory=set)
    skipped: Counter[str] = field(default_factory=Counter)  # reason → frames
    notes: list[str] = field(default_factory=list)
    snaplen_cut: int = 0  # frames captured shorter than they were on the wire
    mac_last_seen: dict[str, tuple[int, float]] = field(default_factory=dict)  # frame, time

    def note(self, text: str) -> None:
        if len(self.notes) < 100:
            self.notes.append(text)
        elif len(self.notes) == 100:
            self.notes.append("… further notes suppressed")


_MACS: dict[bytes, str] = {}
_ADDRESSES: dict[bytes, IPv4Address] = {}
_CACHE_MAX = 65536


def _mac(raw: bytes) -> str:
    """``aa:bb:cc:dd:ee:ff`` (memoised: a capture holds few distinct MACs)."""
    text = _MACS.get(raw)
    if text is None:
        text = raw.hex(":")
        if len(_MACS) < _CACHE_MAX:
            _MACS[raw] = text
    return text


def _address(raw: bytes) -> IPv4Address:
    address = _ADDRESSES.get(raw)
    if address is None:
        address = IPv4Address(raw)
        if len(_ADDRESSES) < _CACHE_MAX:
            _ADDRESSES[raw] = address
    return address


# --------------------------------------------------------------------------------------------
# containers


# Record headers (dpkt.pcap.PktHdr / PktModHdr layouts): seconds, fraction, caplen, len[, …]
_REC_BE, _REC_LE = struct.Struct(">IIII"), struct.Struct("<IIII")
_REC_MOD_BE, _REC_MOD_LE = struct.Struct(">IIIIIHBB"), struct.Struct("<IIIIIHBB")
_PCAP_MAGICS = {
    dpkt.pcap.TCPDUMP_MAGIC: (dpkt.pcap.FileHdr, _REC_BE, 1e6),
    dpkt.pcap.TCPDUMP_MAGIC_NANO: (dpkt.pcap.FileHdr, _REC_BE, 1e9),
    dpkt.pcap.MODPCAP_MAGIC: (dpkt.pcap.FileHdr, _REC_MOD_BE, 1e6),
    dpkt.pcap.PMUDPCT_MAGIC: (dpkt.pcap.LEFileHdr, _REC_LE, 1e6),
    dpkt.pcap.PMUDPCT_MAGIC_NANO: (dpkt.pcap.LEFileHdr, _REC_LE, 1e9),
    dpkt.pcap.PACPDOM_MAGIC: (dpkt.pcap.LEFileHdr, _REC_MOD_LE, 1e6),
}
# pcapng packet blocks after type and length (EPB: interface id u32; PB: u16 + drops u16)
_EPB = {True: struct.Struct("<IIIII"), False: struct.Struct(">IIIII")}
_PB = {True: struct.Struct("<HHIIII"), False: struct.Struct(">HHIIII")}
_PCAPNG_SHB = 0x0A0D0D0A
_PCAPNG_BOM = 0x1A2B3C4D
_PCAPNG_IDB = 1
_PCAPNG_PB = 2
_PCAPNG_SPB = 3
_PCAPNG_EPB = 6
_OPT_TSRESOL = 9
_OPT_TSOFFSET = 14


@dataclass(slots=True)
class _Interface:
    link: int
    snaplen: int
    divisor: float = 1e6
    offset: int = 0


def _pcap_frames(buf: bytes | mmap.mmap, stats: CaptureStats) -> Iterator[Frame]:
    (magic,) = struct.unpack_from(">I", buf, 0)
    file_cls, rec, divisor = _PCAP_MAGICS[magic]
    fh = file_cls(bytes(buf[:24]))
    link = int(fh.linktype) & 0xFFFF  # upper bits: FCS length (pcap "LINKTYPE_" field)
    stats.format = "pcap"
    hdr_len = rec.size
    pos, n, number = 24, len(buf), 0
    while pos < n:
        if pos + hdr_len > n:
            stats.note(
                f"capture ends inside a record header at byte {pos} (file truncated); "
                f"{number} frames read"
            )
            return
        sec, frac, caplen, wire_len = rec.unpack_from(buf, pos)[:4]
        if caplen > MAX_RECORD:
            stats.note(
                f"record {number + 1} at byte {pos} claims {caplen} bytes: corrupt file; "
                f"stopped after {number} frames"
            )
            return
        start = pos + hdr_len
        if start + caplen > n:
            stats.note(
                f"record {number + 1} is cut short: {caplen} bytes announced, "
                f"{n - start} left (file truncated); stopped after {number} frames"
            )
            return
        number += 1
        pos = start + caplen
        yield Frame(
            number, sec + frac / divisor, link, bytes(buf[start:pos]), max(wire_len, caplen)
        )


def _idb_clock(idb: dpkt.pcapng.InterfaceDescriptionBlock, little: bool) -> tuple[float, int]:
    """if_tsresol and if_tsoffset of an interface (defaults: microseconds, offset 0)."""
    divisor, offset = 1e6, 0
    for opt in idb.opts:
        value = bytes(opt.data)
        if opt.code == _OPT_TSRESOL and value:
            res = value[0]
            divisor = float(2 ** (res & 0x7F) if res & 0x80 else 10 ** (res & 0x7F))
        elif opt.code == _OPT_TSOFFSET and len(value) == 8:
            (offset,) = struct.unpack(("<" if little else ">") + "q", value)
    return divisor, offset


def _pcapng_frames(buf: bytes | mmap.mmap, stats: CaptureStats) -> Iterator[Frame]:
    stats.format = "pcapng"
    pos, n, number = 0, len(buf), 0
    little = True
    interfaces: list[_Interface] = []
    while pos < n:
        if pos + 12 > n:
            stats.note(f"capture ends inside a block header at byte {pos} (file truncated)")
            return
        (btype,) = struct.unpack_from("<I", buf, pos)
        if btype == _PCAPNG_SHB:
            (bom,) = struct.unpack_from("<I", buf, pos + 8)
            if bom == _PCAPNG_BOM:
                little = True
            elif bom == 0x4D3C2B1A:
                little = False
            else:
                stats.note(f"section header at byte {pos} has no byte-order magic: stopped")
                return
            interfaces = []
        order = "<" if little else ">"
        btype, blen = struct.unpack_from(order + "II", buf, pos)
        if blen < 12 or blen % 4 or blen > MAX_RECORD:
            stats.note(
                f"block at byte {pos} has an impossible length {blen}: corrupt file; "
                f"stopped after {number} frames"
            )
            return
        if pos + blen > n:
            stats.note(
                f"block at byte {pos} is cut short ({blen} bytes announced, {n - pos} left; "
                f"file truncated); stopped after {number} frames"
            )
            return
        raw = bytes(buf[pos : pos + blen])
        pos += blen
        try:
            if btype == _PCAPNG_SHB:
                shb_cls = (
                    dpkt.pcapng.SectionHeaderBlockLE if little else dpkt.pcapng.SectionHeaderBlock
                )
                shb = shb_cls(raw)
                if int(shb.v_major) != 1:
                    stats.note(f"pcapng version {shb.v_major}.{shb.v_minor} is unknown: stopped")
                    return
                continue
            if btype == _PCAPNG_IDB:
                idb_cls = (
                    dpkt.pcapng.InterfaceDescriptionBlockLE
                    if little
                    else dpkt.pcapng.InterfaceDescriptionBlock
                )
                idb = idb_cls(raw)
                divisor, offset = _idb_clock(idb, little)
                interfaces.append(_Interface(int(idb.linktype), int(idb.snaplen), divisor, offset))
                continue
            if btype in (_PCAPNG_EPB, _PCAPNG_PB):
                if btype == _PCAPNG_EPB:
                    ifid, ts_high, ts_low, caplen, wire_len = _EPB[little].unpack_from(raw, 8)
                else:
                    ifid, _, ts_high, ts_low, caplen, wire_len = _PB[little].unpack_from(raw, 8)
                if 28 + caplen > blen - 4:
                    stats.note(f"packet block ending at byte {pos} overruns itself: skipped")
                    continue
                if ifid >= len(interfaces):
                    stats.note(f"packet block ending at byte {pos} names unknown interface {ifid}")
                    continue
                iface = interfaces[ifid]
                number += 1
                yield Frame(
                    number,
                    iface.offset + ((ts_high << 32) | ts_low) / iface.divisor,
                    iface.link,
                    raw[28 : 28 + caplen],
                    max(wire_len, caplen),
                )
            elif btype == _PCAPNG_SPB:
                if not interfaces:
                    stats.note(f"simple packet block ending at byte {pos} before any interface")
                    continue
                (wire_len,) = struct.unpack_from(order + "I", raw, 8)
                iface = interfaces[0]
                caplen = min(wire_len, blen - 16, iface.snaplen or wire_len)
                number += 1
                # no timestamp in a simple packet block: keep time flowing from the last frame
                ts = stats.last_time if stats.last_time is not None else 0.0
                yield Frame(number, ts, iface.link, raw[12 : 12 + caplen], wire_len)
        except (dpkt.UnpackError, struct.error, ValueError) as exc:
            stats.note(f"unreadable block ending at byte {pos}: {exc}; skipped")


# --------------------------------------------------------------------------------------------
# link, IP, transport


@dataclass(slots=True)
class _Pending:
    first_time: float
    pieces: dict[int, tuple[bytes, int]] = field(default_factory=dict)  # offset → bytes, wire len
    total: int | None = None  # payload length, known once the last fragment arrived
    count: int = 0


class _Reassembler:
    """IPv4 fragment reassembly with bounded memory (RFC 815 hole filling, simplified)."""

    def __init__(self, stats: CaptureStats) -> None:
        self.stats = stats
        self.pending: dict[tuple[bytes, bytes, int, int], _Pending] = {}

    def add(
        self,
        key: tuple[bytes, bytes, int, int],
        offset: int,
        more: bool,
        piece: bytes,
        wire_len: int,
        now: float,
    ) -> tuple[bytes, int, bool, int] | None:
        """Add a fragment; (payload, wire length, truncated, fragments) once complete.

        Overlaps keep the first copy. A piece cut by the snap length still fills its whole
        wire extent; the payload then stops at the first byte the capture does not hold.
        """
        self._expire(now)
        entry = self.pending.get(key)
        if entry is None:
            if len(self.pending) >= MAX_PENDING_DATAGRAMS:
                self.stats.skipped["IPv4 fragment (too many datagrams waiting)"] += 1
                return None
            entry = self.pending[key] = _Pending(now)
        entry.count += 1
        if offset + wire_len > _MAX_IP_DATAGRAM:
            del self.pending[key]
            self.stats.skipped["IPv4 fragments never reassembled"] += entry.count
            self.stats.note(f"IPv4 fragment at offset {offset} exceeds 65535 bytes: dropped")
            return None
        entry.pieces.setdefault(offset, (piece, wire_len))
        if not more:
            entry.total = offset + wire_len
        if entry.total is None:
            return None
        covered = 0
        for off in sorted(entry.pieces):
            if off > covered:
                return None  # a hole: wait for more
            covered = max(covered, off + entry.pieces[off][1])
        if covered < entry.total:
            return None
        out = bytearray()
        for off in sorted(entry.pieces):
            data = entry.pieces[off][0]
            if off > len(out):
                break  # the previous piece was cut by the snap length
            out += data[len(out) - off :]
        del self.pending[key]
        payload = bytes(out[: entry.total])
        return payload, entry.total, len(payload) < entry.total, entry.count

    def _expire(self, now: float) -> None:
        stale = [k for k, e in self.pending.items() if now - e.first_time > FRAGMENT_TIMEOUT]
        for key in stale:
            self._report(key, self.pending.pop(key), "timed out")

    def finish(self) -> None:
        for key, entry in list(self.pending.items()):
            self._report(key, entry, "still incomplete at the end of the capture")
        self.pending.clear()

    def _report(self, key: tuple[bytes, bytes, int, int], entry: _Pending, why: str) -> None:
        src, dst, proto, ident = key
        self.stats.skipped["IPv4 fragments never reassembled"] += entry.count
        self.stats.note(
            f"fragmented datagram {IPv4Address(src)} → {IPv4Address(dst)} (protocol {proto}, "
            f"id {ident}) {why}: {entry.count} fragment(s) dropped"
        )


_ETH_IPV4, _ETH_IPV6, _ETH_ARP = 0x0800, 0x86DD, 0x0806
_ETH_VLAN = (0x8100, 0x88A8, 0x9100)
_ETH_HEADER = struct.Struct("!6s6sH")  # IEEE 802.3: destination, source, ethertype
# dpkt.sll.SLL: packet type, ARPHRD type, address length, address (8), protocol
_SLL = struct.Struct("!HHH8sH")
# dpkt.sll2.SLL2: protocol, reserved, interface index, ARPHRD type, packet type, length, address
_SLL2 = struct.Struct("!HHiHBB8s")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")  # RFC 791 §3.1
_UDP = struct.Struct("!HHHH")  # RFC 768
_TCP = struct.Struct("!HHIIBB")  # RFC 9293 §3.1: ports, seq, ack, data offset, flags


def _link_ipv4(frame: Frame, stats: CaptureStats) -> tuple[bytes, str | None, str | None] | None:
    """(IPv4 packet bytes, source MAC, destination MAC), or None (counted as skipped)."""
    data, link = frame.data, _RAW_ALIASES.get(frame.link, frame.link)
    src_mac = dst_mac = None
    if link == LinkType.ETHERNET:
        if len(data) < 14:
            stats.skipped["runt Ethernet frame"] += 1
            return None
        dst_raw, src_raw, ethertype = _ETH_HEADER.unpack_from(data)
        dst_mac, src_mac, off = _mac(dst_raw), _mac(src_raw), 14
        for _ in range(2):  # 802.1Q / QinQ tags
            if ethertype not in _ETH_VLAN or off + 4 > len(data):
                break
            ethertype = int.from_bytes(data[off + 2 : off + 4], "big")
            off += 4
        payload = data[off:]
    elif link in (LinkType.LINUX_SLL, LinkType.LINUX_SLL2):
        layout = _SLL if link == LinkType.LINUX_SLL else _SLL2
        if len(data) < layout.size:
            stats.skipped["runt Linux cooked frame"] += 1
            return None
        if link == LinkType.LINUX_SLL:
            _, _, hlen, addr, ethertype = layout.unpack_from(data)
        else:
            ethertype, _, _, _, _, hlen, addr = layout.unpack_from(data)
        if hlen == 6:  # the sender's address, either direction
            src_mac = _mac(addr[:6])
        payload = data[layout.size :]
    elif link in (LinkType.RAW, LinkType.IPV4):
        ethertype = _ETH_IPV4 if data[:1] and data[0] >> 4 == 4 else _ETH_IPV6
        payload = data
    elif link in (LinkType.NULL, LinkType.LOOP):
        if len(data) < 4:
            stats.skipped["runt loopback frame"] += 1
            return None
        family = int.from_bytes(data[:4], "big" if link == LinkType.LOOP else "little")
        if family > 0xFFFF:  # written on a host of the other byte order
            family = int.from_bytes(data[:4], "little" if link == LinkType.LOOP else "big")
        ethertype = _ETH_IPV4 if family == 2 else _ETH_IPV6
        payload = data[4:]
    else:
        stats.skipped[f"link type {frame.link} (not decoded)"] += 1
        return None
    if src_mac is not None:
        stats.mac_last_seen[src_mac] = (frame.number, frame.time)
    if ethertype != _ETH_IPV4:
        name = {_ETH_IPV6: "IPv6", _ETH_ARP: "ARP"}.get(ethertype, f"ethertype {ethertype:#06x}")
        stats.skipped[name] += 1
        return None
    return payload, src_mac, dst_mac


# --------------------------------------------------------------------------------------------
# the capture


class Capture:
    """A capture file, walked lazily. Use as a context manager (the file is memory-mapped)."""

    def __init__(self, data: bytes | mmap.mmap, name: str = "<capture>") -> None:
        self.name = name
        self._data = data
        self.stats = CaptureStats()
        self._frames = self._container()

    @classmethod
    def open(cls, path: str | Path) -> Capture:
        """Map ``path``. CaptureError if it cannot be opened or is not pcap/pcapng."""
        path = Path(path)
        try:
            with path.open("rb") as fh:
                size = fh.seek(0, 2)
                if size == 0:
                    raise CaptureError(f"{path}: empty file, not a capture")
                data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as exc:
            raise CaptureError(f"{path}: cannot read: {exc.strerror or exc}") from None
        try:
            return cls(data, str(path))
        except CaptureError:
            data.close()
            raise

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "<capture>") -> Capture:
        return cls(data, name)

    def close(self) -> None:
        if isinstance(self._data, mmap.mmap):
            self._data.close()

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _container(self) -> Iterator[Frame]:
        buf = self._data
        if len(buf) < 24:
            raise CaptureError(f"{self.name}: {len(buf)} bytes is too short for a capture")
        (magic,) = struct.unpack_from(">I", buf, 0)
        if magic in _PCAP_MAGICS:
            return _pcap_frames(buf, self.stats)
        if magic == _PCAPNG_SHB:
            return _pcapng_frames(buf, self.stats)
        raise CaptureError(
            f"{self.name}: not a pcap or pcapng file (starts with {bytes(buf[:4]).hex()}); "
            "write captures with tcpdump -w or dumpcap"
        )

    def frames(self) -> Iterator[Frame]:
        """Every record, in file order (one walk only)."""
        stats = self.stats
        for frame in self._frames:
            stats.frames += 1
            if stats.first_time is None:
                stats.first_time = frame.time
            stats.last_time = frame.time
            stats.link_types.add(frame.link)
            if frame.wire_len > len(frame.data):
                stats.snaplen_cut += 1
            yield frame

    def segments(self) -> Iterator[Segment]:
        """Every IPv4 UDP datagram and TCP segment, reassembled, in capture order."""
        stats = self.stats
        frags = _Reassembler(stats)
        for frame in self.frames():
            linked = _link_ipv4(frame, stats)
            if linked is None:
                continue
            raw, src_mac, dst_mac = linked
            try:
                yield from self._ip(frame, raw, src_mac, dst_mac, frags)
            except (dpkt.UnpackError, struct.error, ValueError, IndexError) as exc:
                stats.skipped["malformed IPv4/UDP/TCP"] += 1
                stats.note(f"frame {frame.number}: malformed IPv4 packet ({exc}): skipped")
        frags.finish()

    def _ip(
        self,
        frame: Frame,
        raw: bytes,
        src_mac: str | None,
        dst_mac: str | None,
        frags: _Reassembler,
    ) -> Iterator[Segment]:
        stats = self.stats
        if len(raw) < 20 or raw[0] >> 4 != 4:
            stats.skipped["malformed IPv4/UDP/TCP"] += 1
            return
        hl = (raw[0] & 0x0F) * 4
        if hl < 20 or len(raw) < hl:
            stats.skipped["malformed IPv4/UDP/TCP"] += 1
            stats.note(f"frame {frame.number}: IPv4 header length {hl} is impossible")
            return
        _, _, total, ident, flags_offset, _, proto, _, src_raw, dst_raw = _IPV4.unpack_from(raw)
        total = total or len(raw)  # 0: TCP segmentation offload on the capturing host
        if total < hl:
            stats.skipped["malformed IPv4/UDP/TCP"] += 1
            stats.note(f"frame {frame.number}: IPv4 total length {total} < header {hl}")
            return
        body = raw[hl:total]
        wire_body = total - hl
        if len(raw) < total and frame.wire_len <= len(frame.data):
            # not cut by the snap length: the length field claims bytes that never existed
            stats.note(f"frame {frame.number}: IPv4 length {total} exceeds the frame: cut to fit")
            wire_body = len(body)
        if proto not in (IPPROTO_UDP, IPPROTO_TCP):
            stats.skipped[f"IP protocol {proto}"] += 1
            return
        src, dst = _address(src_raw), _address(dst_raw)
        fragments = 1
        truncated = len(body) < wire_body
        offset, more = (flags_offset & 0x1FFF) * 8, bool(flags_offset & 0x2000)
        if more or offset:
            key = (src_raw, dst_raw, proto, ident)
            done = frags.add(key, offset, more, body, wire_body, frame.time)
            if done is None:
                return
            body, wire_body, truncated, fragments = done
        yield from self._transport(
            frame, proto, src, dst, src_mac, dst_mac, body, wire_body, truncated, fragments
        )

    def _transport(
        self,
        frame: Frame,
        proto: int,
        src: IPv4Address,
        dst: IPv4Address,
        src_mac: str | None,
        dst_mac: str | None,
        body: bytes,
        wire_body: int,
        truncated: bool,
        fragments: int,
    ) -> Iterator[Segment]:
        stats = self.stats
        if proto == IPPROTO_UDP:
            if len(body) < 8:
                stats.skipped["malformed IPv4/UDP/TCP"] += 1
                return
            sport, dport, ulen, _ = _UDP.unpack_from(body)
            if ulen < 8 or ulen > wire_body:
                ulen = wire_body  # a bad UDP length: trust IP (as tcpdump does, with a warning)
            payload = body[8:ulen]
            yield Segment(
                frame.number,
                frame.time,
                src_mac,
                dst_mac,
                src,
                dst,
                proto,
                sport,
                dport,
                payload,
                ulen - 8,
                truncated or len(payload) < ulen - 8,
                fragments=fragments,
            )
            return
        if len(body) < 20:
            stats.skipped["malformed IPv4/UDP/TCP"] += 1
            return
        doff = (body[12] >> 4) * 4
        if doff < 20 or doff > wire_body or doff > len(body):
            stats.skipped["malformed IPv4/UDP/TCP"] += 1
            stats.note(f"frame {frame.number}: TCP header length {doff} is impossible")
            return
        sport, dport, seq, ack, _, flags = _TCP.unpack_from(body)
        payload = body[doff:]
        yield Segment(
            frame.number,
            frame.time,
            src_mac,
            dst_mac,
            src,
            dst,
            proto,
            sport,
            dport,
            payload,
            wire_body - doff,
            truncated or len(payload) < wire_body - doff,
            seq=seq,
            ack=ack,
            flags=flags,
            fragments=fragments,
        )
