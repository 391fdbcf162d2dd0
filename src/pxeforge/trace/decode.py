"""Protocol decoding of a capture: DHCP messages, TFTP transfers, HTTP exchanges. No I/O.

Theory of operation
-------------------
`Decoder.feed` takes the `Segment`s of `trace.capture` in capture order; `Decoder.finish`
returns a frozen `Decoded`. The decoding is done with the project's own codecs
(`protocols.dhcp.parse`, `protocols.tftp.parse_packet`); nothing is re-implemented here.

**DHCP** — any UDP datagram to or from port 67, 68 or 4011 (PXE boot server discovery and
ProxyDHCP, PXE 2.1 §2.2) that carries the magic cookie is parsed; one that does not decode
becomes a `Note` with the codec's reason.

**TFTP** (RFC 1350 §4) — a request goes to port 69; the server answers from a fresh port
(its "TID") to the request's source port, and the rest of the transfer uses those two ports.
A transfer is therefore keyed by the client's address and port: a datagram *to* that
endpoint from the request's server is the server's, a datagram *from* it to the server's TID
is the client's. A second identical request from the same port before any answer is a
retransmitted RRQ. Block numbers are tracked as unbounded integers across the 65535 → 0
rollover. How a transfer ended (`Ending`) is decided at the end of the capture: the last
block acknowledged; the client's ERROR right after the OACK (a size probe: OVMF asks
``tsize=0``, reads the OACK and aborts with ERROR 8, RFC 2347 §5); an ERROR from either side;
the same block sent again and again with no ACK (timed out); a transfer cut short; no answer
at all; or no DATA captured although the client went on (a filtered capture).

**HTTP** (RFC 9112) — each TCP connection is reassembled per direction by sequence number
(no full TCP stack: retransmitted bytes are dropped, out-of-order segments wait, bounded). A
connection is HTTP when the client's first bytes are a request line or the server's a status
line. Bodies are framed by Content-Length, chunked coding or the close; only their first
`BODY_PREFIX` bytes are kept (for callbacks, heartbeats and iPXE scripts). Bytes the peer
acknowledged but the capture does not hold (a snap length, a filter, a lossy capture) are a
gap: a body skips over it and stays in step; a gap where a head should be loses the rest of
the connection, whose bytes are still counted (from sequence numbers) for the request being
answered.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address
from types import MappingProxyType

from pxeforge.errors import DhcpError, TftpError
from pxeforge.protocols import dhcp, tftp
from pxeforge.trace.capture import Segment, TcpFlag

__all__ = [
    "BODY_PREFIX",
    "DHCP_PORTS",
    "Decoded",
    "Decoder",
    "DhcpMessage",
    "Ending",
    "HttpExchange",
    "Note",
    "TftpFailure",
    "TftpTransfer",
]

DHCP_PORTS = frozenset((67, 68, 4011))  # RFC 2131 §4.1; 4011: PXE boot server (PXE 2.1)
TFTP_PORT = 69  # RFC 1350 §4
BODY_PREFIX = 4096  # bytes of each HTTP body kept
MAX_HEAD = 64 * 1024  # an HTTP head longer than this is not one
MAX_PENDING = 4 * 1024 * 1024  # out-of-order TCP bytes waiting per direction
_RETRANSMIT_FRAMES = 10  # frames kept as evidence of retransmissions
_HTTP_METHODS = (b"GET ", b"HEAD ", b"POST ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH ")
_SEQ_MOD = 1 << 32


@dataclass(frozen=True, slots=True)
class Note:
    """Something the decoder could not make sense of (with where)."""

    frame: int | None
    time: float | None
    text: str


# --------------------------------------------------------------------------------------------
# DHCP


@dataclass(frozen=True, slots=True)
class DhcpMessage:
    """One DHCP/BOOTP message as captured."""

    frame: int
    time: float
    src: IPv4Address
    sport: int
    dst: IPv4Address
    dport: int
    src_mac: str | None
    packet: dhcp.Packet

    @property
    def mac(self) -> str:
        """The client's hardware address (``chaddr``), or ``hw:<hex>`` when not Ethernet."""
        try:
            return self.packet.mac
        except DhcpError:
            return "hw:" + self.packet.chaddr[: min(self.packet.hlen, 16)].hex()

    @property
    def kind(self) -> str:
        """DISCOVER, OFFER… or BOOTREQUEST/BOOTREPLY for plain BOOTP."""
        mtype = self.packet.message_type
        if mtype is not None:
            return mtype.name
        return "BOOTREQUEST" if self.packet.op == dhcp.BOOTREQUEST else "BOOTREPLY"

    @property
    def is_reply(self) -> bool:
        return self.packet.op == dhcp.BOOTREPLY

    @property
    def server_id(self) -> IPv4Address | None:
        try:
            return self.packet.server_id
        except DhcpError:
            return None

    @property
    def server(self) -> IPv4Address:
        """Who answered: option 54, else the source address."""
        return self.server_id or self.src

    @property
    def boot_server_port(self) -> bool:
        """Sent to or from port 4011 (PXE boot server / ProxyDHCP REQUEST–ACK)."""
        return self.sport == 4011 or self.dport == 4011

    @property
    def proxy(self) -> bool:
        """A ProxyDHCP reply: no address given, PXEClient vendor class (PXE 2.1 §2.2.3)."""
        p = self.packet
        vendor = p.options.get(dhcp.Option.VENDOR_CLASS, b"")
        return self.is_reply and not int(p.yiaddr) and vendor.startswith(b"PXEClient")

    @property
    def boot_file(self) -> str | None:
        return self.packet.boot_file_name


# --------------------------------------------------------------------------------------------
# TFTP


class Ending(enum.StrEnum):
    """How a transfer ended, as far as the capture shows."""

    COMPLETE = "complete"  # the last (short) block was sent
    PROBE = "probe"  # the client aborted right after the OACK: a size probe (OVMF)
    ABORTED = "aborted"  # the client sent ERROR during the transfer
    ERROR = "error"  # the server answered ERROR (file not found…)
    TIMED_OUT = "timed-out"  # the same block sent again and again, never acknowledged
    UNFINISHED = "unfinished"  # stops part-way (capture ended, or the client vanished)
    NOT_CAPTURED = "not-captured"  # no data in the capture, but the client carried on
    NO_ANSWER = "no-answer"  # the server never answered the request


@dataclass(frozen=True, slots=True)
class TftpFailure:
    code: int
    message: str
    by: str  # "server" or "client"
    frame: int
    time: float


@dataclass(frozen=True, slots=True)
class TftpTransfer:
    """One TFTP request and everything that followed it on its ports."""

    index: int
    mac: str | None
    client: IPv4Address
    client_port: int
    server: IPv4Address
    server_port: int | None  # the transfer's port chosen by the server (None: no answer)
    opcode: str  # "RRQ" or "WRQ"
    filename: str
    mode: str
    options: Mapping[str, str]  # as requested
    oack: Mapping[str, str] | None  # None: no OACK was sent
    request_frame: int
    request_time: float
    request_resends: tuple[int, ...]
    oack_frame: int | None
    end_frame: int
    end_time: float
    blksize: int
    windowsize: int
    blocks: int  # distinct blocks seen (highest block number reached)
    data_packets: int
    retransmits: int  # DATA (and OACK) datagrams sent again
    bytes: int  # file bytes: exact when complete, else what the capture shows
    missing_blocks: int  # blocks never seen (not captured)
    acks: int
    duplicate_acks: int
    ending: Ending
    failure: TftpFailure | None
    retransmit_frames: tuple[int, ...]
    first_data_frame: int | None
    first_data_time: float | None
    last_ack_seen: bool
    tail_resends: int  # resends of the last block with no ACK after them
    stray_packets: int  # datagrams from a second server port (the RRQ answered twice)

    @property
    def seconds(self) -> float:
        return max(self.end_time - self.request_time, 0.0)

    @property
    def throughput(self) -> float | None:
        """Bytes per second from the request to the last packet, when data moved."""
        if not self.bytes or self.seconds <= 0:
            return None
        return self.bytes / self.seconds

    @property
    def tsize(self) -> int | None:
        """The size the server announced in its OACK (RFC 2349)."""
        value = (self.oack or {}).get("tsize", "")
        return int(value) if value.isdigit() else None

    @property
    def refused_options(self) -> tuple[str, ...]:
        """Options the client asked for that the server did not acknowledge (RFC 2347 §3)."""
        oack = self.oack or {}
        return tuple(name for name in self.options if name not in oack)


@dataclass(slots=True)
class _TftpFlow:
    index: int
    mac: str | None
    client: IPv4Address
    client_port: int
    server: IPv4Address
    request: tftp.ReadRequest | tftp.WriteRequest
    request_frame: int
    request_time: float
    resends: list[int] = field(default_factory=list)
    tid: int | None = None
    oack: dict[str, str] | None = None
    oack_frame: int | None = None
    blksize: int = tftp.DEFAULT_BLKSIZE
    windowsize: int = 1
    highest: int = 0  # highest absolute block number seen
    final: int | None = None  # absolute number of the short (last) block
    final_size: int = 0
    bytes_seen: int = 0
    data_packets: int = 0
    retransmits: int = 0
    retransmit_frames: list[int] = field(default_factory=list)
    gaps: int = 0
    acks: int = 0
    dup_acks: int = 0
    last_ack: int = -1
    last_ack_abs: int = -1
    tail_resends: int = 0
    failure: TftpFailure | None = None
    first_data_frame: int | None = None
    first_data_time: float | None = None
    last_frame: int = 0
    last_time: float = 0.0
    stray: int = 0
    answered: bool = False

    def absolute(self, wire: int, reference: int) -> int:
        """The unbounded block number nearest ``reference`` whose low 16 bits are ``wire``."""
        base = reference & ~0xFFFF
        candidate = base | wire
        if candidate < reference - 0x8000:
            candidate += 0x10000
        elif candidate > reference + 0x8000 and candidate >= 0x10000:
            candidate -= 0x10000
        return candidate


# --------------------------------------------------------------------------------------------
# HTTP


@dataclass(frozen=True, slots=True)
class HttpExchange:
    """One HTTP request and its response (when captured)."""

    index: int
    mac: str | None
    client: IPv4Address
    client_port: int
    server: IPv4Address
    server_port: int
    method: str
    target: str
    version: str
    host: str
    user_agent: str
    request_frame: int
    request_time: float
    request_body: bytes
    request_body_length: int
    status: int | None
    reason: str
    response_frame: int | None
    response_time: float | None
    content_length: int | None
    content_type: str
    body_bytes: int
    body_prefix: bytes  # the body's first bytes; without a head, what was captured of it
    wire_bytes: int  # server bytes counted from sequence numbers when the head is missing
    missing_bytes: int  # response bytes the capture does not hold
    end_frame: int
    end_time: float
    complete: bool
    head_captured: bool

    @property
    def outcome(self) -> str:
        if self.head_captured:
            return "complete" if self.complete else "incomplete"
        return "not-captured" if self.wire_bytes else "no-response"

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def seconds(self) -> float:
        return max(self.end_time - self.request_time, 0.0)

    @property
    def response_bytes(self) -> int:
        """Body bytes, or the server's byte count when only that is known."""
        return self.body_bytes if self.head_captured else self.wire_bytes


@dataclass(slots=True)
class _Message:
    start: tuple[str, str, str]  # method/target/version, or version/status/reason
    headers: dict[str, str]
    frame: int
    time: float
    body_bytes: int = 0
    body_prefix: bytearray = field(default_factory=bytearray)
    missing: int = 0
    end_frame: int = 0
    end_time: float = 0.0
    complete: bool = False
    chunked: bool = False
    length: int | None = None


class _Parser:
    """One direction of an HTTP/1.x connection: heads, bodies, gaps."""

    def __init__(self, flow: _TcpFlow, requests: bool) -> None:
        self.flow = flow
        self.requests = requests
        self.state = "head"
        self.buf = bytearray()
        self.remaining = 0
        self.current: _Message | None = None
        self.messages: list[_Message] = []
        self.lost = False

    # -- input

    def data(self, data: bytes, time: float, frame: int) -> None:
        view = memoryview(data)
        while view.nbytes:
            if self.state == "lost":
                self.flow.lost(
                    self.requests, view.nbytes, time, frame, bytes(view[:BODY_PREFIX]), True
                )
                return
            if self.state == "head":
                view = self._head(view, time, frame)
            elif self.state == "body":
                take = min(self.remaining, view.nbytes)
                self._body(view[:take], time, frame)
                self.remaining -= take
                view = view[take:]
                if not self.remaining:
                    self._done(time, frame)
            elif self.state == "close":
                self._body(view, time, frame)
                return
            elif self.state == "chunk-size":
                view = self._chunk_line(view, time, frame)
            elif self.state == "chunk-data":
                take = min(self.remaining, view.nbytes)
                self._body(view[:take], time, frame)
                self.remaining -= take
                view = view[take:]
                if not self.remaining:
                    self.state, self.remaining = "chunk-crlf", 2
            elif self.state == "chunk-crlf":
                take = min(self.remaining, view.nbytes)
                self.remaining -= take
                view = view[take:]
                if not self.remaining:
                    self.state = "chunk-size"
            elif self.state == "trailer":
                view = self._trailer(view, time, frame)

    def gap(self, count: int, time: float, frame: int) -> None:
        """``count`` bytes the capture does not hold."""
        cur = self.current
        if self.state in ("body", "chunk-data") and cur is not None and count <= self.remaining:
            cur.body_bytes += count
            cur.missing += count
            self.remaining -= count
            if not self.remaining:
                if self.state == "body":
                    self._done(time, frame)
                else:
                    self.state, self.remaining = "chunk-crlf", 2
            return
        if self.state == "close" and cur is not None:
            cur.body_bytes += count
            cur.missing += count
            return
        # a gap where a head (or a chunk header) should be: the rest cannot be framed
        self._lose()
        self.flow.lost(self.requests, count, time, frame)

    def end(self, time: float, frame: int) -> None:
        cur = self.current
        if cur is None:
            return
        if self.state == "close":
            cur.complete = True
        cur.end_time, cur.end_frame = time, frame
        self.messages.append(cur)
        self.current = None

    # -- states

    def _lose(self) -> None:
        if self.current is not None:
            self.messages.append(self.current)
            self.current = None
        self.state = "lost"
        self.lost = True

    def _head(self, view: memoryview, time: float, frame: int) -> memoryview:
        self.buf += view
        end = self.buf.find(b"\r\n\r\n")
        skip = 4
        if end < 0:
            end, skip = self.buf.find(b"\n\n"), 2
        if end < 0:
            if len(self.buf) > MAX_HEAD or not self._plausible():
                self._lose()
                self.flow.lost(self.requests, len(self.buf), time, frame, bytes(self.buf), True)
            return view[view.nbytes :]
        head = bytes(self.buf[:end])
        rest = bytes(self.buf[end + skip :])
        self.buf.clear()
        if not self._start(head, time, frame):
            self._lose()
            self.flow.lost(self.requests, len(head) + skip + len(rest), time, frame, head, True)
            return memoryview(b"")
        return memoryview(rest)

    def _plausible(self) -> bool:
        start = bytes(self.buf[:8])
        if self.requests:
            return _request_start(start)
        return b"HTTP/".startswith(start[:5])

    def _start(self, head: bytes, time: float, frame: int) -> bool:
        text = head.decode("latin-1")
        lines = text.replace("\r\n", "\n").split("\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2:
            return False
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers.setdefault(name.strip().lower(), value.strip())
        if self.requests:
            if not any(head.startswith(m) for m in _HTTP_METHODS):
                return False
            method, target = parts[0], parts[1]
            version = parts[2] if len(parts) > 2 else ""
            msg = _Message((method, target, version), headers, frame, time)
        else:
            if not parts[0].startswith("HTTP/") or not parts[1].isdigit():
                return False
            msg = _Message(
                (parts[0], parts[1], parts[2] if len(parts) > 2 else ""), headers, frame, time
            )
        self.current = msg
        self._framing(msg, time, frame)
        return True

    def _framing(self, msg: _Message, time: float, frame: int) -> None:
        headers = msg.headers
        length_text = headers.get("content-length", "")
        length = int(length_text) if length_text.isdigit() else None
        msg.length = length
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if not self.requests:
            status = int(msg.start[1])
            method = self.flow.method_for(len([m for m in self.messages if not _informational(m)]))
            if status < 200 or status in (204, 304) or method == "HEAD":
                self._done(time, frame)
                return
        if chunked:
            msg.chunked = True
            self.state = "chunk-size"
        elif length is not None:
            if length == 0:
                self._done(time, frame)
                return
            self.state, self.remaining = "body", length
        elif self.requests:
            self._done(time, frame)
        else:
            self.state = "close"

    def _body(self, view: memoryview, time: float, frame: int) -> None:
        cur = self.current
        if cur is None:
            return
        cur.body_bytes += view.nbytes
        room = BODY_PREFIX - len(cur.body_prefix)
        if room > 0:
            cur.body_prefix += view[:room]
        cur.end_time, cur.end_frame = time, frame

    def _chunk_line(self, view: memoryview, time: float, frame: int) -> memoryview:
        self.buf += view
        end = self.buf.find(b"\n")
        if end < 0:
            if len(self.buf) > 1024:
                self._lose()
            return view[view.nbytes :]
        line = bytes(self.buf[:end]).split(b";", 1)[0].strip()
        rest = bytes(self.buf[end + 1 :])
        self.buf.clear()
        try:
            size = int(line, 16)
        except ValueError:
            self._lose()
            return memoryview(b"")
        if size == 0:
            self.state = "trailer"
        else:
            self.state, self.remaining = "chunk-data", size
        return memoryview(rest)

    def _trailer(self, view: memoryview, time: float, frame: int) -> memoryview:
        self.buf += view
        end = self.buf.find(b"\n")
        if end < 0:
            return view[view.nbytes :]
        line = bytes(self.buf[:end]).strip()
        rest = bytes(self.buf[end + 1 :])
        self.buf.clear()
        if not line:
            self._done(time, frame)
        return memoryview(rest)

    def _done(self, time: float, frame: int) -> None:
        cur = self.current
        if cur is None:
            return
        cur.complete = True
        cur.end_time, cur.end_frame = time, frame
        self.messages.append(cur)
        self.current = None
        self.state = "head"


def _request_start(head: bytes) -> bool:
    """``head`` (the first bytes of a stream, maybe fewer than a method) opens a request."""
    return any(m.startswith(head) or head.startswith(m) for m in _HTTP_METHODS)


def _informational(msg: _Message) -> bool:
    return msg.start[1].isdigit() and 100 <= int(msg.start[1]) < 200


class _HalfStream:
    """In-order delivery of one direction's bytes by sequence number."""

    def __init__(self, sink: _Parser) -> None:
        self.sink = sink
        self.base: int | None = None  # sequence number of offset 0
        self.next = 0
        self.pending: dict[int, tuple[bytes, int, float, int]] = {}
        self.pending_bytes = 0
        self.fin_at: int | None = None
        self.missing = 0
        self.retransmitted = 0
        self.last_time = 0.0
        self.last_frame = 0

    @property
    def done(self) -> bool:
        """This side sent FIN and everything before it was delivered (or counted missing)."""
        return self.fin_at is not None and self.next >= self.fin_at and not self.pending

    def _offset(self, seq: int) -> int:
        assert self.base is not None
        diff = (seq - self.base) % _SEQ_MOD
        return diff - _SEQ_MOD if diff >= _SEQ_MOD // 2 else diff

    def syn(self, seq: int) -> None:
        self.base = (seq + 1) % _SEQ_MOD

    def segment(self, seg: Segment) -> None:
        if self.base is None:
            self.base = seg.seq
        off = self._offset(seg.seq)
        if seg.flags & TcpFlag.FIN:
            self.fin_at = off + seg.length
        if not seg.length:
            return
        self.last_time, self.last_frame = seg.time, seg.frame
        end = off + seg.length
        if end <= self.next:
            self.retransmitted += 1
            return
        if off > self.next:
            if off not in self.pending:
                self.pending[off] = (seg.payload, seg.length, seg.time, seg.frame)
                self.pending_bytes += len(seg.payload)
            if self.pending_bytes > MAX_PENDING:
                self._skip_to(min(self.pending), seg.time, seg.frame)
            return
        self._deliver(off, seg.payload, seg.length, seg.time, seg.frame)
        self._drain()

    def acked(self, ack: int, time: float, frame: int) -> None:
        """The peer acknowledged everything before ``ack``: what we lack was not captured."""
        if self.base is None:
            return
        upto = self._offset(ack)
        if self.fin_at is not None:
            upto = min(upto, self.fin_at)
        if upto > self.next and upto - self.next < _SEQ_MOD // 4:
            self._skip_to(upto, time, frame)

    def close(self, time: float, frame: int) -> None:
        while self.pending:
            self._skip_to(min(self.pending), time, frame)
        if self.fin_at is not None and self.fin_at > self.next:
            self._skip_to(self.fin_at, time, frame)
        self.sink.end(time, frame)

    def _skip_to(self, upto: int, time: float, frame: int) -> None:
        while self.next < upto:
            waiting = [o for o in self.pending if o <= self.next]
            if waiting:
                self._drain()
                continue
            later = [o for o in self.pending if o > self.next]
            stop = min([upto, *later])
            count = stop - self.next
            self.missing += count
            self.next = stop
            self.sink.gap(count, time, frame)
            self._drain()

    def _deliver(self, off: int, payload: bytes, length: int, time: float, frame: int) -> None:
        start = self.next - off
        data = payload[start:]
        wire = length - start
        self.next = off + length
        if data:
            self.sink.data(bytes(data), time, frame)
        if len(data) < wire:  # cut by the snap length
            self.missing += wire - len(data)
            self.sink.gap(wire - len(data), time, frame)

    def _drain(self) -> None:
        while self.pending:
            off = min(self.pending)
            if off > self.next:
                return
            payload, length, time, frame = self.pending.pop(off)
            self.pending_bytes -= len(payload)
            if off + length > self.next:
                self._deliver(off, payload, length, time, frame)


@dataclass(slots=True)
class _Lost:
    bytes: int = 0
    time: float = 0.0
    frame: int = 0
    sample: bytearray = field(default_factory=bytearray)  # captured bytes after the loss
    missing: int = 0  # of ``bytes``, those the capture does not hold


class _TcpFlow:
    """One TCP connection, HTTP or not (decided by its first bytes)."""

    def __init__(self, client: tuple[IPv4Address, int], server: tuple[IPv4Address, int]) -> None:
        self.client = client
        self.server = server
        self.mac: str | None = None
        self.kind = "unknown"  # "http", "other"
        self.requests = _Parser(self, requests=True)
        self.responses = _Parser(self, requests=False)
        self.up = _HalfStream(self.requests)
        self.down = _HalfStream(self.responses)
        self.lost_by_request: dict[int, _Lost] = {}
        self.closed = False

    def method_for(self, index: int) -> str:
        msgs = self.requests.messages
        if index < len(msgs):
            return msgs[index].start[0]
        cur = self.requests.current
        return cur.start[0] if cur is not None else ""

    def lost(
        self,
        requests: bool,
        count: int,
        time: float,
        frame: int,
        sample: bytes = b"",
        captured: bool = False,
    ) -> None:
        """``count`` bytes of this direction cannot be framed (``sample``: what was captured)."""
        if requests:
            return
        answered = len([m for m in self.responses.messages if not _informational(m)])
        waiting = len(self.requests.messages) - 1
        index = max(answered, waiting)
        entry = self.lost_by_request.setdefault(index, _Lost())
        entry.bytes += count
        if not captured:
            entry.missing += count
        entry.time, entry.frame = time, frame
        room = BODY_PREFIX - len(entry.sample)
        if room > 0 and sample:
            entry.sample += sample[:room]

    def segment(self, seg: Segment) -> None:
        from_client = (seg.src, seg.sport) == self.client
        half, other = (self.up, self.down) if from_client else (self.down, self.up)
        if seg.flags & TcpFlag.SYN:
            half.syn(seg.seq)
        elif seg.length or seg.flags & TcpFlag.FIN:
            if self.kind == "unknown" and seg.length:
                head = seg.payload[:8]
                is_http = _request_start(head) if from_client else head.startswith(b"HTTP/")
                self.kind = "http" if is_http else "other"
            if self.kind == "http":
                half.segment(seg)
        if seg.flags & TcpFlag.ACK and self.kind == "http":
            other.acked(seg.ack, seg.time, seg.frame)
        if seg.flags & TcpFlag.RST:
            self.closed = True
        elif self.up.done and self.down.done:
            self.closed = True  # both sides sent FIN and every byte before it is accounted for

    def finish(self, time: float, frame: int) -> None:
        self.up.close(time, frame)
        self.down.close(time, frame)


# --------------------------------------------------------------------------------------------
# the decoder


@dataclass(frozen=True, slots=True)
class Decoded:
    dhcp: tuple[DhcpMessage, ...]
    tftp: tuple[TftpTransfer, ...]
    http: tuple[HttpExchange, ...]
    notes: tuple[Note, ...]
    ip_macs: Mapping[IPv4Address, str]  # client addresses → MAC (from frames and DHCP)
    http_missing_bytes: int  # HTTP bytes acknowledged but absent from the capture


class Decoder:
    """Feed segments in capture order, then `finish`."""

    def __init__(self) -> None:
        self._dhcp: list[DhcpMessage] = []
        self._notes: list[Note] = []
        self._tftp_open: dict[tuple[IPv4Address, int], _TftpFlow] = {}
        self._tftp_done: list[_TftpFlow] = []
        self._tftp_count = 0
        self._tcp: dict[tuple[IPv4Address, int, IPv4Address, int], _TcpFlow] = {}
        self._tcp_done: list[_TcpFlow] = []
        self._ip_macs: dict[IPv4Address, str] = {}
        self._last_frame = 0
        self._last_time = 0.0

    def note(self, seg: Segment | None, text: str) -> None:
        if len(self._notes) < 200:
            self._notes.append(Note(seg.frame if seg else None, seg.time if seg else None, text))

    def feed(self, seg: Segment) -> None:
        self._last_frame, self._last_time = seg.frame, seg.time
        if seg.is_udp:
            if seg.sport in DHCP_PORTS or seg.dport in DHCP_PORTS:
                if self._dhcp_datagram(seg):
                    return
            self._tftp_datagram(seg)
        elif seg.is_tcp:
            self._tcp_segment(seg)

    # -- DHCP

    def _dhcp_datagram(self, seg: Segment) -> bool:
        data = seg.payload
        if len(data) < dhcp.HEADER_SIZE or data[236:240] != b"\x63\x82\x53\x63":
            if seg.dport in (67, 68) or seg.sport in (67, 68):
                if seg.truncated:
                    self.note(seg, "DHCP datagram cut short by the capture's snap length")
                else:
                    self.note(seg, f"UDP {seg.sport}→{seg.dport} is not a DHCP message")
                return True
            return False
        try:
            packet = dhcp.parse(data)
        except DhcpError as exc:
            self.note(seg, f"malformed DHCP from {seg.src}: {exc}")
            return True
        msg = DhcpMessage(
            seg.frame, seg.time, seg.src, seg.sport, seg.dst, seg.dport, seg.src_mac, packet
        )
        self._dhcp.append(msg)
        if msg.is_reply and int(packet.yiaddr) and not msg.mac.startswith("hw:"):
            self._ip_macs.setdefault(packet.yiaddr, msg.mac)
        if not msg.is_reply and int(packet.ciaddr) and not msg.mac.startswith("hw:"):
            self._ip_macs.setdefault(packet.ciaddr, msg.mac)
        return True

    # -- TFTP

    def _tftp_datagram(self, seg: Segment) -> None:
        if seg.dport == TFTP_PORT:
            self._tftp_request(seg)
            return
        flow = self._tftp_open.get((seg.dst, seg.dport))
        if (
            flow is not None
            and (flow.tid is None or flow.tid == seg.sport)
            and seg.src == flow.server
        ):
            self._tftp_from_server(flow, seg)
            return
        if flow is not None and seg.src == flow.server and flow.tid is not None:
            flow.stray += 1
            return
        flow = self._tftp_open.get((seg.src, seg.sport))
        if flow is not None and flow.tid == seg.dport and seg.dst == flow.server:
            self._tftp_from_client(flow, seg)

    def _parse_tftp(self, seg: Segment) -> tftp.Packet | None:
        try:
            return tftp.parse_packet(seg.payload)
        except TftpError as exc:
            if seg.truncated:
                return None
            self.note(seg, f"malformed TFTP {seg.src}:{seg.sport} → {seg.dst}:{seg.dport}: {exc}")
            return None

    def _tftp_request(self, seg: Segment) -> None:
        packet = self._parse_tftp(seg)
        if packet is None:
            return
        if not isinstance(packet, tftp.ReadRequest | tftp.WriteRequest):
            self.note(seg, f"TFTP {type(packet).__name__} sent to port 69 (only requests go there)")
            return
        key = (seg.src, seg.sport)
        old = self._tftp_open.get(key)
        if old is not None:
            same = old.request == packet and dict(old.request.options) == dict(packet.options)
            if same and not old.answered and old.failure is None:
                old.resends.append(seg.frame)
                old.last_frame, old.last_time = seg.frame, seg.time
                return
            self._tftp_done.append(self._tftp_open.pop(key))
        self._tftp_count += 1
        mac = seg.src_mac or self._ip_macs.get(seg.src)
        if seg.src_mac is not None:
            self._ip_macs.setdefault(seg.src, seg.src_mac)
        self._tftp_open[key] = _TftpFlow(
            self._tftp_count,
            mac,
            seg.src,
            seg.sport,
            seg.dst,
            packet,
            seg.frame,
            seg.time,
            last_frame=seg.frame,
            last_time=seg.time,
        )

    def _tftp_from_server(self, flow: _TftpFlow, seg: Segment) -> None:
        if seg.payload[:2] == b"\x00\x03" and len(seg.payload) >= 4:
            # DATA: decoded by hand only to survive a payload cut by the snap length
            packet: tftp.Packet | None = tftp.DataPacket(
                int.from_bytes(seg.payload[2:4], "big"), b""
            )
        else:
            packet = self._parse_tftp(seg)
        if packet is None:
            return
        flow.tid = seg.sport
        flow.answered = True
        flow.last_frame, flow.last_time = seg.frame, seg.time
        if isinstance(packet, tftp.OackPacket):
            if flow.oack is None:
                flow.oack = dict(packet.options)
                flow.oack_frame = seg.frame
                blksize = flow.oack.get("blksize", "")
                if blksize.isdigit():
                    flow.blksize = int(blksize)
                window = flow.oack.get("windowsize", "")
                if window.isdigit():
                    flow.windowsize = int(window)
            else:
                self._retransmit(flow, seg)
        elif isinstance(packet, tftp.DataPacket):
            size = seg.length - 4
            flow.data_packets += 1
            if flow.first_data_frame is None:
                flow.first_data_frame, flow.first_data_time = seg.frame, seg.time
            block = flow.absolute(packet.block, flow.highest)
            if block <= flow.highest:
                self._retransmit(flow, seg)
                if block == flow.highest:
                    flow.tail_resends += 1
            else:
                flow.gaps += max(block - flow.highest - 1, 0)
                flow.highest = block
                flow.bytes_seen += size
                flow.tail_resends = 0
                if size < flow.blksize:
                    flow.final, flow.final_size = block, size
        elif isinstance(packet, tftp.ErrorPacket):
            if flow.failure is None:
                flow.failure = TftpFailure(
                    packet.code, packet.message, "server", seg.frame, seg.time
                )
        else:
            self.note(seg, f"TFTP {type(packet).__name__} from the server's transfer port")

    def _retransmit(self, flow: _TftpFlow, seg: Segment) -> None:
        flow.retransmits += 1
        if len(flow.retransmit_frames) < _RETRANSMIT_FRAMES:
            flow.retransmit_frames.append(seg.frame)

    def _tftp_from_client(self, flow: _TftpFlow, seg: Segment) -> None:
        packet = self._parse_tftp(seg)
        if packet is None:
            return
        flow.last_frame, flow.last_time = seg.frame, seg.time
        if isinstance(packet, tftp.AckPacket):
            flow.acks += 1
            absolute = flow.absolute(packet.block, max(flow.highest, flow.last_ack_abs, 0))
            if absolute == flow.last_ack_abs:
                flow.dup_acks += 1
            if absolute >= flow.highest:
                flow.tail_resends = 0
            flow.last_ack, flow.last_ack_abs = packet.block, absolute
        elif isinstance(packet, tftp.ErrorPacket):
            if flow.failure is None:
                flow.failure = TftpFailure(
                    packet.code, packet.message, "client", seg.frame, seg.time
                )
        else:
            self.note(seg, f"TFTP {type(packet).__name__} from the client's transfer port")

    def _tftp_result(self, flow: _TftpFlow, client_active_after: bool) -> TftpTransfer:
        failure = flow.failure
        blocks = flow.highest
        complete = flow.final is not None
        if complete and flow.final is not None:
            total = (flow.final - 1) * flow.blksize + flow.final_size
        else:
            total = flow.bytes_seen
        if failure is not None and failure.by == "server":
            ending = Ending.ERROR
        elif failure is not None:
            # an abort right after the OACK, before any data, is a probe of the options
            probe = flow.first_data_frame is None and flow.oack is not None
            ending = Ending.PROBE if probe else Ending.ABORTED
        elif complete:
            ending = Ending.COMPLETE
        elif not flow.answered:
            ending = Ending.NO_ANSWER
        elif flow.first_data_frame is None and client_active_after:
            ending = Ending.NOT_CAPTURED
        elif flow.tail_resends >= 2:
            ending = Ending.TIMED_OUT
        else:
            ending = Ending.UNFINISHED
        request = flow.request
        return TftpTransfer(
            index=flow.index,
            mac=flow.mac,
            client=flow.client,
            client_port=flow.client_port,
            server=flow.server,
            server_port=flow.tid,
            opcode="RRQ" if isinstance(request, tftp.ReadRequest) else "WRQ",
            filename=request.filename,
            mode=request.mode.value,
            options=MappingProxyType(dict(request.options)),
            oack=None if flow.oack is None else MappingProxyType(flow.oack),
            request_frame=flow.request_frame,
            request_time=flow.request_time,
            request_resends=tuple(flow.resends),
            oack_frame=flow.oack_frame,
            end_frame=flow.last_frame,
            end_time=flow.last_time,
            blksize=flow.blksize,
            windowsize=flow.windowsize,
            blocks=blocks,
            data_packets=flow.data_packets,
            retransmits=flow.retransmits,
            bytes=total,
            missing_blocks=flow.gaps,
            acks=flow.acks,
            duplicate_acks=flow.dup_acks,
            ending=ending,
            failure=failure,
            retransmit_frames=tuple(flow.retransmit_frames),
            first_data_frame=flow.first_data_frame,
            first_data_time=flow.first_data_time,
            last_ack_seen=complete and flow.last_ack_abs >= (flow.final or 0),
            tail_resends=flow.tail_resends,
            stray_packets=flow.stray,
        )

    # -- TCP / HTTP

    def _tcp_segment(self, seg: Segment) -> None:
        a, b = (seg.src, seg.sport), (seg.dst, seg.dport)
        key = (a[0], a[1], b[0], b[1]) if a <= b else (b[0], b[1], a[0], a[1])
        flow = self._tcp.get(key)
        syn_only = seg.flags & TcpFlag.SYN and not seg.flags & TcpFlag.ACK
        if flow is not None and syn_only and flow.up.base != (seg.seq + 1) % _SEQ_MOD:
            self._tcp_close(key)  # a new connection on the same ports
            flow = None
        if flow is None:
            if syn_only:
                flow = _TcpFlow(a, b)
            elif seg.flags & TcpFlag.SYN:  # SYN-ACK: the sender is the server
                flow = _TcpFlow(b, a)
            elif seg.length:
                head = seg.payload[:8]
                if head.startswith(b"HTTP/"):
                    flow = _TcpFlow(b, a)
                else:
                    flow = _TcpFlow(a, b)
            else:
                return  # a bare ACK of a connection we know nothing about
            self._tcp[key] = flow
        if (seg.src, seg.sport) == flow.client and seg.src_mac is not None:
            flow.mac = flow.mac or seg.src_mac
            self._ip_macs.setdefault(seg.src, seg.src_mac)
        flow.segment(seg)
        if flow.closed:
            self._tcp_close(key)

    def _tcp_close(self, key: tuple[IPv4Address, int, IPv4Address, int]) -> None:
        flow = self._tcp.pop(key)
        if flow.kind == "http":
            flow.finish(
                max(flow.up.last_time, flow.down.last_time),
                max(flow.up.last_frame, flow.down.last_frame),
            )
            self._tcp_done.append(flow)

    def _exchanges(self) -> tuple[list[HttpExchange], int]:
        out: list[HttpExchange] = []
        missing_total = 0
        flows = sorted(
            self._tcp_done,
            key=lambda f: f.requests.messages[0].time if f.requests.messages else 0.0,
        )
        for flow in flows:
            missing_total += flow.up.missing + flow.down.missing
            responses = [m for m in flow.responses.messages if not _informational(m)]
            for i, req in enumerate(flow.requests.messages):
                resp = responses[i] if i < len(responses) else None
                lost = flow.lost_by_request.get(i)
                method, target, version = req.start
                if resp is not None:
                    end_time, end_frame = resp.end_time or resp.time, resp.end_frame or resp.frame
                elif lost is not None:
                    end_time, end_frame = lost.time, lost.frame
                else:
                    end_time, end_frame = req.end_time or req.time, req.end_frame or req.frame
                if lost is not None and resp is not None:
                    end_time, end_frame = max((end_time, end_frame), (lost.time, lost.frame))
                out.append(
                    HttpExchange(
                        index=0,
                        mac=flow.mac,
                        client=flow.client[0],
                        client_port=flow.client[1],
                        server=flow.server[0],
                        server_port=flow.server[1],
                        method=method,
                        target=target,
                        version=version,
                        host=req.headers.get("host", ""),
                        user_agent=req.headers.get("user-agent", ""),
                        request_frame=req.frame,
                        request_time=req.time,
                        request_body=bytes(req.body_prefix),
                        request_body_length=req.body_bytes,
                        status=int(resp.start[1]) if resp is not None else None,
                        reason=resp.start[2] if resp is not None else "",
                        response_frame=resp.frame if resp is not None else None,
                        response_time=resp.time if resp is not None else None,
                        content_length=resp.length if resp is not None else None,
                        content_type=resp.headers.get("content-type", "") if resp else "",
                        body_bytes=resp.body_bytes if resp is not None else 0,
                        body_prefix=bytes(resp.body_prefix)
                        if resp is not None
                        else bytes(lost.sample if lost is not None else b""),
                        wire_bytes=lost.bytes if lost is not None else 0,
                        missing_bytes=(resp.missing if resp is not None else 0)
                        + (lost.missing if lost is not None else 0),
                        end_frame=end_frame,
                        end_time=end_time,
                        complete=resp.complete if resp is not None else False,
                        head_captured=resp is not None,
                    )
                )
        out.sort(key=lambda x: (x.request_time, x.request_frame))
        numbered = [_renumber(x, i + 1) for i, x in enumerate(out)]
        return numbered, missing_total

    # -- the end

    def finish(self, mac_last_seen: Mapping[str, tuple[int, float]] | None = None) -> Decoded:
        """Close every open transfer and connection; ``mac_last_seen`` from the capture."""
        seen = mac_last_seen or {}
        for key in list(self._tcp):
            self._tcp_close(key)
        flows = self._tftp_done + list(self._tftp_open.values())
        self._tftp_open.clear()
        transfers: list[TftpTransfer] = []
        for flow in sorted(flows, key=lambda f: f.index):
            last = seen.get(flow.mac or "")
            active_after = last is not None and last[0] > flow.last_frame
            transfers.append(self._tftp_result(flow, active_after))
        exchanges, missing = self._exchanges()
        return Decoded(
            dhcp=tuple(self._dhcp),
            tftp=tuple(transfers),
            http=tuple(exchanges),
            notes=tuple(self._notes),
            ip_macs=MappingProxyType(dict(self._ip_macs)),
            http_missing_bytes=missing,
        )


def _renumber(x: HttpExchange, index: int) -> HttpExchange:
    return replace(x, index=index)
