"""Packet capture of a lab boot, and the boot milestones read back from it.

Theory of operation
-------------------
`Capture` runs tcpdump on the lab bridge (``--immediate-mode -U``: every packet reaches the
file at once, and the last ones are not lost at exit, docs/lab.md). The pcap is the lab's
source of truth for timing: `PcapReader` (sans-I/O: feed it bytes as the file grows, get whole
records back) and `frame_events` turn frames into `NetEvent`s — DHCP messages (by ``chaddr``),
TFTP read requests and errors, HTTP request lines and status lines (by Ethernet address) — and
`Milestones` picks the three moments a boot is judged by: the first DHCP ACK, the first request
for the kernel, the callback POST. Only what the lab needs is decoded; nothing here is a
general dissector.

Formats: pcap (libpcap "savefile", micro- or nanosecond magic, either byte order; link type 1
Ethernet), IPv4 (RFC 791), UDP (RFC 768), BOOTP/DHCP (RFC 951, RFC 2131 §2, options RFC 2132),
TFTP (RFC 1350 §5), HTTP/1.1 request and status lines (RFC 9112 §3, §4).
"""

from __future__ import annotations

import enum
import struct
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pxeforge.errors import StartupError
from pxeforge.lab import procs
from pxeforge.lab.netns import ns_exec

__all__ = [
    "CALLBACK_PATH",
    "Capture",
    "EventKind",
    "Milestones",
    "NetEvent",
    "PcapReader",
    "frame_events",
    "milestones",
    "read_events",
]

CALLBACK_PATH = "/_pxeforge/callback"

_PCAP_MAGIC_US = 0xA1B2C3D4
_PCAP_MAGIC_NS = 0xA1B23C4D
_LINKTYPE_ETHERNET = 1
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"  # section header block type (byte-order independent)
_PCAPNG_IDB = 1  # interface description block
_PCAPNG_EPB = 6  # enhanced packet block
_PCAPNG_IF_TSRESOL = 9
_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_VLAN = 0x8100
_IPPROTO_TCP = 6
_IPPROTO_UDP = 17
_DHCP_MAGIC = b"\x63\x82\x53\x63"
_DHCP_SERVER_PORT = 67
_DHCP_CLIENT_PORT = 68
_OPT_PAD, _OPT_END, _OPT_MESSAGE_TYPE, _OPT_BOOTFILE = 0, 255, 53, 67
_DHCP_TYPES = {
    1: "DISCOVER",
    2: "OFFER",
    3: "REQUEST",
    4: "DECLINE",
    5: "ACK",
    6: "NAK",
    7: "RELEASE",
    8: "INFORM",
}
_TFTP_RRQ, _TFTP_ERROR = 1, 5
_HTTP_METHODS = (b"GET ", b"HEAD ", b"POST ", b"PUT ")


class EventKind(enum.Enum):
    DHCP = "dhcp"  # name: DISCOVER/OFFER/REQUEST/ACK…
    TFTP = "tftp"  # name: RRQ or ERROR
    HTTP = "http"  # name: the method, or the status code of a response


@dataclass(frozen=True, slots=True)
class NetEvent:
    """One packet that matters to a boot, attributed to a client MAC."""

    time: float  # capture timestamp, seconds since the epoch
    mac: str  # the client's MAC (lower case, colons)
    kind: EventKind
    name: str  # DHCP message type, "RRQ"/"ERROR", HTTP method or status code
    path: str = ""  # boot file (DHCP), file name (TFTP), request target (HTTP)
    text: str = ""  # a one-line human rendering

    @property
    def from_client(self) -> bool:
        return self.name in ("DISCOVER", "REQUEST", "DECLINE", "RELEASE", "INFORM", "RRQ") or (
            self.kind is EventKind.HTTP and not self.name.isdigit()
        )


class PcapReader:
    """Incremental pcap/pcapng parser: `feed` bytes as the file grows, get whole records.

    Classic pcap is what tcpdump ``-w`` writes; pcapng (what Wireshark tools write) is read
    too, Ethernet interfaces only: section header, interface descriptions (for
    ``if_tsresol``) and enhanced / simple packet blocks.
    """

    def __init__(self) -> None:
        self._buf = b""
        self._format = ""  # "pcap" or "pcapng" once the header is seen
        self._endian = "<"
        self._tick = 1e-6  # classic pcap: seconds per timestamp unit
        self._ifaces: list[tuple[int, float]] = []  # pcapng: (linktype, seconds per tick)
        self.linktype: int | None = None

    def feed(self, data: bytes) -> list[tuple[float, bytes]]:
        self._buf += data
        if not self._format:
            if len(self._buf) < 24:
                return []
            if self._buf[:4] == _PCAPNG_SHB:
                self._format = "pcapng"
            else:
                self._pcap_header()
        return self._pcapng_blocks() if self._format == "pcapng" else self._pcap_records()

    def _pcap_header(self) -> None:
        for endian in "<>":
            (magic,) = struct.unpack(endian + "I", self._buf[:4])
            if magic in (_PCAP_MAGIC_US, _PCAP_MAGIC_NS):
                self._endian = endian
                self._tick = 1e-9 if magic == _PCAP_MAGIC_NS else 1e-6
                break
        else:
            raise ValueError(f"not a pcap file (magic {self._buf[:4].hex()})")
        (self.linktype,) = struct.unpack(self._endian + "I", self._buf[20:24])
        self._format = "pcap"
        self._buf = self._buf[24:]

    def _pcap_records(self) -> list[tuple[float, bytes]]:
        out: list[tuple[float, bytes]] = []
        pos = 0
        header = struct.Struct(self._endian + "IIII")
        while len(self._buf) - pos >= 16:
            sec, frac, caplen, _origlen = header.unpack_from(self._buf, pos)
            if len(self._buf) - pos - 16 < caplen:
                break
            frame = self._buf[pos + 16 : pos + 16 + caplen]
            scale = 1e-9 if self._tick == 1e-9 else 1e-6
            out.append((sec + frac * scale, frame))
            pos += 16 + caplen
        self._buf = self._buf[pos:]
        return out

    def _pcapng_blocks(self) -> list[tuple[float, bytes]]:
        out: list[tuple[float, bytes]] = []
        pos = 0
        while len(self._buf) - pos >= 12:
            block_type = self._buf[pos : pos + 4]
            if block_type == _PCAPNG_SHB:
                bom = self._buf[pos + 8 : pos + 12]
                self._endian = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
                self._ifaces = []
            (btype, blen) = struct.unpack_from(self._endian + "II", self._buf, pos)
            if blen < 12 or blen % 4:
                raise ValueError(f"pcapng: bad block length {blen}")
            if len(self._buf) - pos < blen:
                break
            body = self._buf[pos + 8 : pos + blen - 4]
            if btype == _PCAPNG_IDB and len(body) >= 8:
                (linktype,) = struct.unpack_from(self._endian + "H", body, 0)
                self._ifaces.append((linktype, self._tsresol(body[8:])))
                self.linktype = self._ifaces[0][0]
            elif btype == _PCAPNG_EPB and len(body) >= 20:
                iface, hi, lo, caplen, _orig = struct.unpack_from(self._endian + "IIIII", body)
                if iface < len(self._ifaces) and self._ifaces[iface][0] == _LINKTYPE_ETHERNET:
                    out.append((((hi << 32) | lo) * self._ifaces[iface][1], body[20 : 20 + caplen]))
            pos += blen
        self._buf = self._buf[pos:]
        return out

    def _tsresol(self, options: bytes) -> float:
        """Seconds per timestamp unit from an IDB's options (default microseconds)."""
        i = 0
        while i + 4 <= len(options):
            code, length = struct.unpack_from(self._endian + "HH", options, i)
            if code == 0:
                break
            if code == _PCAPNG_IF_TSRESOL and length >= 1:
                value = options[i + 4]
                return 2.0 ** -(value & 0x7F) if value & 0x80 else 10.0**-value
            i += 4 + (length + 3) // 4 * 4
        return 1e-6


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _dhcp_options(data: bytes) -> dict[int, bytes]:
    opts: dict[int, bytes] = {}
    i = 240
    while i < len(data):
        code = data[i]
        if code == _OPT_END:
            break
        if code == _OPT_PAD:
            i += 1
            continue
        if i + 1 >= len(data):
            break
        length = data[i + 1]
        opts.setdefault(code, b"")
        opts[code] += data[i + 2 : i + 2 + length]  # RFC 3396: split options concatenate
        i += 2 + length
    return opts


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("latin-1")


def _dhcp_event(ts: float, payload: bytes) -> NetEvent | None:
    if len(payload) < 240 or payload[236:240] != _DHCP_MAGIC:
        return None
    opts = _dhcp_options(payload)
    mtype = opts.get(_OPT_MESSAGE_TYPE, b"")
    name = _DHCP_TYPES.get(mtype[0], f"TYPE{mtype[0]}") if mtype else "BOOTP"
    mac = _mac(payload[28:34])
    bootfile = _cstr(opts[_OPT_BOOTFILE]) if _OPT_BOOTFILE in opts else _cstr(payload[108:236])
    text = f"DHCP {name}"
    if payload[0] == 2:  # BOOTREPLY
        yiaddr = ".".join(str(b) for b in payload[16:20])
        text += f" {yiaddr}"
        if bootfile:
            text += f" file={bootfile}"
    return NetEvent(ts, mac, EventKind.DHCP, name, bootfile, text)


def _tftp_event(ts: float, mac: str, payload: bytes, *, by_client: bool = False) -> NetEvent | None:
    if len(payload) < 4:
        return None
    (opcode,) = struct.unpack("!H", payload[:2])
    if opcode == _TFTP_RRQ:
        fields = payload[2:].split(b"\0")
        if len(fields) < 2:
            return None
        name = fields[0].decode("latin-1")
        pairs = [f.decode("latin-1") for f in fields[2:] if f]
        opts = " ".join(f"{k}={v}" for k, v in zip(pairs[::2], pairs[1::2], strict=False))
        return NetEvent(ts, mac, EventKind.TFTP, "RRQ", name, f"TFTP RRQ {name} {opts}".strip())
    if opcode == _TFTP_ERROR:
        (code,) = struct.unpack("!H", payload[2:4])
        msg = _cstr(payload[4:])
        who = " (sent by the client)" if by_client else ""
        text = f"TFTP ERROR {code} {msg}".strip() + who
        return NetEvent(ts, mac, EventKind.TFTP, "ERROR", "", text)
    return None


def _http_event(ts: float, src: str, dst: str, payload: bytes) -> NetEvent | None:
    line = payload.split(b"\r\n", 1)[0].decode("latin-1")
    if payload.startswith(_HTTP_METHODS):
        method, _, rest = line.partition(" ")
        target = rest.rsplit(" ", 1)[0]
        return NetEvent(ts, src, EventKind.HTTP, method, target, f"HTTP {method} {target}")
    if payload.startswith(b"HTTP/1."):
        parts = line.split(" ", 2)
        if len(parts) >= 2 and parts[1].isdigit():
            return NetEvent(ts, dst, EventKind.HTTP, parts[1], "", f"HTTP {' '.join(parts[1:])}")
    return None


def frame_events(
    ts: float,
    frame: bytes,
    *,
    tftp_port: int = 69,
    http_port: int = 8080,
    server_mac: str | None = None,
) -> Iterator[NetEvent]:
    """The boot events one Ethernet frame carries (zero or one).

    A TFTP ERROR travels between two ephemeral ports; it is the client's when it comes from
    anyone but ``server_mac`` (OVMF sends ERROR 8 after a size probe), else the server's.
    """
    if len(frame) < 14:
        return
    dst, src = _mac(frame[0:6]), _mac(frame[6:12])
    (ethertype,) = struct.unpack("!H", frame[12:14])
    off = 14
    if ethertype == _ETHERTYPE_VLAN and len(frame) >= 18:
        (ethertype,) = struct.unpack("!H", frame[16:18])
        off = 18
    if ethertype != _ETHERTYPE_IPV4 or len(frame) < off + 20:
        return
    ihl = (frame[off] & 0x0F) * 4
    proto = frame[off + 9]
    (frag,) = struct.unpack("!H", frame[off + 6 : off + 8])
    if frag & 0x1FFF:  # not the first fragment: no transport header
        return
    l4 = frame[off + ihl :]
    if proto == _IPPROTO_UDP and len(l4) >= 8:
        sport, dport = struct.unpack("!HH", l4[:4])
        payload = l4[8:]
        if {sport, dport} == {_DHCP_SERVER_PORT, _DHCP_CLIENT_PORT}:
            event = _dhcp_event(ts, payload)
        elif dport == tftp_port:
            event = _tftp_event(ts, src, payload)
        elif payload[:2] == b"\x00\x05":  # ERROR, from/to a transfer port
            by_client = server_mac is not None and src != server_mac
            event = _tftp_event(ts, src if by_client else dst, payload, by_client=by_client)
        else:
            event = None
        if event is not None:
            yield event
    elif proto == _IPPROTO_TCP and len(l4) >= 20:
        sport, dport = struct.unpack("!HH", l4[:4])
        payload = l4[(l4[12] >> 4) * 4 :]
        if payload and http_port in (sport, dport):
            event = _http_event(ts, src, dst, payload)
            if event is not None:
                yield event


def read_events(
    path: Path, *, tftp_port: int = 69, http_port: int = 8080, server_mac: str | None = None
) -> list[NetEvent]:
    """Every boot event in a finished pcap file."""
    reader = PcapReader()
    return [
        event
        for ts, frame in reader.feed(path.read_bytes())
        for event in frame_events(
            ts, frame, tftp_port=tftp_port, http_port=http_port, server_mac=server_mac
        )
    ]


@dataclass(frozen=True, slots=True)
class Milestones:
    """Capture timestamps (epoch seconds) of the three moments a boot is judged by."""

    dhcp_ack: float | None = None
    kernel: float | None = None  # first TFTP RRQ / HTTP GET of the kernel
    callback: float | None = None  # the guest's POST /_pxeforge/callback


def _is_kernel(path: str, kernel_names: frozenset[str]) -> bool:
    """``kernel_names`` holds file names (``vmlinuz``) or root-relative paths (``a/kernel``)."""
    clean = path.split("?", 1)[0].lstrip("/")
    return clean in kernel_names or PurePosixPath(clean).name in kernel_names


def milestones(events: Iterable[NetEvent], mac: str, kernel_names: Iterable[str]) -> Milestones:
    """The first ACK to ``mac``, its first request for a file named in ``kernel_names``, and
    its first callback POST."""
    names = frozenset(kernel_names)
    ack = kernel = callback = None
    for ev in events:
        if ev.mac != mac:
            continue
        if ack is None and ev.kind is EventKind.DHCP and ev.name == "ACK":
            ack = ev.time
        elif (
            kernel is None
            and ((ev.kind is EventKind.TFTP and ev.name == "RRQ") or ev.name == "GET")
            and _is_kernel(ev.path, names)
        ):
            kernel = ev.time
        elif callback is None and ev.name == "POST" and ev.path.startswith(CALLBACK_PATH):
            callback = ev.time
    return Milestones(ack, kernel, callback)


class Capture:
    """tcpdump writing every frame on ``interface`` inside namespace ``ns`` to ``path``."""

    def __init__(self, ns: str, interface: str, path: Path, log: Path) -> None:
        self.ns, self.interface, self.path, self.log = ns, interface, path, log
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        return ns_exec(
            self.ns,
            ["tcpdump", "-i", self.interface, "-w", str(self.path), "-n", "-s", "0"]
            + ["--immediate-mode", "-U", "-Z", "root"],
        )

    def start(self, timeout: float = 10.0) -> None:
        """Start tcpdump and wait until it listens (so no early packet is missed)."""
        self.proc = procs.start(self.argv(), self.log, what="tcpdump")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "listening on" in procs.tail(self.log):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise StartupError(f"lab: tcpdump did not start: {procs.tail(self.log, 5)}")

    def stop(self) -> None:
        """SIGINT lets tcpdump flush and close the file; then it is waited for."""
        if self.proc is not None:
            procs.stop(self.proc, sig=2, grace=5.0)
