"""TFTP, sans-I/O: the packet codec and the state machine of one read transfer.

Theory of operation
-------------------
`parse_packet` turns one datagram into a frozen packet value (`ReadRequest`, `AckPacket`, …) or
raises `TftpError` carrying the TFTP error code to answer with; the ``encode_*`` functions and
each packet's ``to_bytes()`` go the other way. Nothing here touches a socket or a clock.

A `ReadTransfer` is one RRQ being served. The caller feeds it what arrives on the transfer's
socket (`receive_datagram`, or `receive_ack` for an ACK it decoded itself) and the passing of
time (`handle_timer`), and after each call sends what `datagrams_to_send` returns and sleeps
until `get_timer`. Time is always passed in, so tests drive whole transfers with a fake clock
(the aioquic shape). A lock-step ACK of the block in flight, with the next block already read
ahead, takes a shortcut (`lock_step_ack`, which a server may also call directly to get the
next DATA without the queue) that leaves exactly the state the general path would.

Option negotiation (RFC 2347) happens in the constructor: ``blksize`` (RFC 2348, 8–65464,
clamped to ``TransferConfig.max_blksize``), ``tsize`` (RFC 2349, answered with the real size),
``timeout`` (RFC 2349, 1–255 s, echoed unchanged, used as our first retransmit delay) and
``windowsize`` (RFC 7440, clamped to ``TransferConfig.max_windowsize`` and to
``window_bytes`` of payload, so a window fits a default client socket buffer: peers.md, atftpd
stalls at blksize 8192 × windowsize 16 against a 208 KiB buffer). Out-of-range values are
ignored, unknown options are not echoed, and when nothing is accepted there is no OACK: DATA 1
goes out at once, as in plain RFC 1350.

Sending. Blocks are counted with an unbounded integer (``1`` is the first block) and put on the
wire modulo 2**16, so block numbers roll over from 65535 to 0 as tftp-hpa and curl expect —
RFC 1350 puts no limit on the file size. A file of exactly N blocks ends with an empty DATA.
Up to ``windowsize`` blocks are in flight; an ACK for any block of the window slides it to the
block after the acknowledged one (RFC 7440 §4: a partial-window ACK means "resend from here").
A duplicate or stale ACK never triggers a send: only the retransmit timer does (RFC 1350's
Sorcerer's Apprentice fix). The timer starts at ``timeout`` and backs off exponentially up to
``max_timeout``; after ``retries`` expirations without progress the transfer is given up.

Losses in a window. A window normally goes out in one burst. When its last block's ACK is late
(4 × the measured round trip, at least 2 ms) that block is sent once more — a tail-loss probe:
a client that lost the tail sees it out of order and answers at once with a partial-window ACK
(RFC 7440 §4; EDK2's Mtftp4 and atftp do), so a lost tail costs a round trip, not a timeout. A
loss — a partial-window ACK or a timeout — halves the burst and caps its growth just below the
size that lost; the rest of the window follows in bursts ``pace`` seconds apart, and each clean
window grows the burst by one block (after 64 clean windows the cap rises again). The window
itself never shrinks mid-transfer: clients such as EDK2 ACK only after ``windowsize`` blocks.

Ending. The ACK of the last block completes the transfer. RFC 1350 §6 lets the client stop
right after sending that ACK (dallying, to answer a retransmission, is only encouraged, and
curl or atftp do not), so a lost final ACK leaves us resending to nobody. Once the last block
is out, a client that has acknowledged something before and then stays silent
through ``final_retries`` resends ends the transfer as `Outcome.COMPLETE_UNCONFIRMED` — it most
likely has the file — after ~7 s with the defaults instead of the ~31 s of a timeout. A client
silent from the start still times out. An ERROR from the client ends a transfer
quietly; right after the OACK this is the normal tsize probe of OVMF (``RRQ … tsize=0
blksize=1468 windowsize=4``, OACK, ERROR 8) and the outcome is `Outcome.PROBED`.

netascii (RFC 764, as RFC 1350 uses it) is served through `NetasciiReader`: CR becomes CR NUL
and LF becomes CR LF, converted chunk by chunk; ``tsize`` reports the converted size.
"""

from __future__ import annotations

import enum
import struct
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from pxeforge.errors import ConfigError, TftpError

__all__ = [
    "DEFAULT_BLKSIZE",
    "MAX_BLKSIZE",
    "MAX_WINDOWSIZE",
    "MIN_BLKSIZE",
    "AckPacket",
    "DataPacket",
    "ErrorCode",
    "ErrorPacket",
    "Mode",
    "Negotiated",
    "NetasciiReader",
    "OackPacket",
    "Opcode",
    "OptionName",
    "Outcome",
    "Packet",
    "ReadRequest",
    "ReadTransfer",
    "TransferConfig",
    "TransferStats",
    "WriteRequest",
    "encode_ack",
    "encode_data",
    "encode_error",
    "encode_oack",
    "encode_request",
    "negotiate",
    "parse_packet",
]


class Opcode(enum.IntEnum):
    """RFC 1350 §5 and RFC 2347 (OACK)."""

    RRQ = 1
    WRQ = 2
    DATA = 3
    ACK = 4
    ERROR = 5
    OACK = 6


class ErrorCode(enum.IntEnum):
    """RFC 1350 appendix, plus 8 from RFC 2347."""

    NOT_DEFINED = 0
    FILE_NOT_FOUND = 1
    ACCESS_VIOLATION = 2
    DISK_FULL = 3
    ILLEGAL_OPERATION = 4
    UNKNOWN_TID = 5
    FILE_EXISTS = 6
    NO_SUCH_USER = 7
    OPTION_REFUSED = 8


class Mode(enum.Enum):
    """Transfer modes we serve. RFC 1350's "mail" is obsolete and refused."""

    NETASCII = "netascii"
    OCTET = "octet"


class OptionName(enum.StrEnum):
    """Options we negotiate (names are case-insensitive on the wire: RFC 2347)."""

    BLKSIZE = "blksize"  # RFC 2348
    TSIZE = "tsize"  # RFC 2349
    TIMEOUT = "timeout"  # RFC 2349
    WINDOWSIZE = "windowsize"  # RFC 7440


DEFAULT_BLKSIZE = 512  # RFC 1350
MIN_BLKSIZE = 8  # RFC 2348
MAX_BLKSIZE = 65464  # RFC 2348
MIN_TIMEOUT = 1  # RFC 2349, seconds
MAX_TIMEOUT = 255
MIN_WINDOWSIZE = 1  # RFC 7440
MAX_WINDOWSIZE = 65535
HEADER_SIZE = 4  # opcode + block number / error code
MAX_UDP_PAYLOAD = 65507  # IPv4: 65535 - 20 (IP header) - 8 (UDP header)
_MAX_DIGITS = 20  # longest decimal option value we take seriously
_MAX_OPTION_TEXT = 255  # longest option name or value we accept
_READ_AHEAD = 64 * 1024  # bytes read from the file at once (at least a whole burst)
_MIN_PROBE = 0.002  # seconds: earliest tail-loss probe after a window (4 × RTT otherwise)
_RELAX = 64  # clean windows at a lowered burst ceiling before it may grow by one block

_HEADER = struct.Struct("!HH")
_pack_header = _HEADER.pack
_OPCODE = struct.Struct("!H")


# --------------------------------------------------------------------------------------------
# Packets


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """RRQ. ``options`` maps lower-cased option names to their values, in wire order."""

    filename: str
    mode: Mode = Mode.OCTET
    options: Mapping[str, str] = field(default_factory=dict, hash=False)

    def to_bytes(self) -> bytes:
        return encode_request(Opcode.RRQ, self.filename, self.mode.value, self.options)


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """WRQ (parsed so it can be refused properly; pxeforge is a read-only server)."""

    filename: str
    mode: Mode = Mode.OCTET
    options: Mapping[str, str] = field(default_factory=dict, hash=False)

    def to_bytes(self) -> bytes:
        return encode_request(Opcode.WRQ, self.filename, self.mode.value, self.options)


@dataclass(frozen=True, slots=True)
class DataPacket:
    block: int  # wire block number, 0..65535
    payload: bytes

    def to_bytes(self) -> bytes:
        return encode_data(self.block, self.payload)


@dataclass(frozen=True, slots=True)
class AckPacket:
    block: int

    def to_bytes(self) -> bytes:
        return encode_ack(self.block)


@dataclass(frozen=True, slots=True)
class ErrorPacket:
    code: int  # usually an ErrorCode; kept as int so unknown codes survive
    message: str

    def to_bytes(self) -> bytes:
        return encode_error(self.code, self.message)


@dataclass(frozen=True, slots=True)
class OackPacket:
    options: Mapping[str, str] = field(default_factory=dict, hash=False)

    def to_bytes(self) -> bytes:
        return encode_oack(self.options)


Packet = ReadRequest | WriteRequest | DataPacket | AckPacket | ErrorPacket | OackPacket


def _fields(body: bytes, what: str) -> list[bytes]:
    """NUL-terminated strings; the body must end with NUL."""
    if not body.endswith(b"\0"):
        raise TftpError(f"{what}: missing NUL terminator", ErrorCode.ILLEGAL_OPERATION)
    return body[:-1].split(b"\0")


def _ascii(raw: bytes, what: str, code: int) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise TftpError(f"{what} is not ASCII", code) from None


def _parse_options(raw: list[bytes], what: str) -> dict[str, str]:
    # Some clients pad requests with extra NULs: trailing empty strings are not options.
    while raw and not raw[-1]:
        raw.pop()
    if len(raw) % 2:
        raise TftpError(f"{what}: option without a value", ErrorCode.OPTION_REFUSED)
    options: dict[str, str] = {}
    for i in range(0, len(raw), 2):
        name_raw, value_raw = raw[i], raw[i + 1]
        if not name_raw or len(name_raw) > _MAX_OPTION_TEXT or len(value_raw) > _MAX_OPTION_TEXT:
            raise TftpError(f"{what}: empty or over-long option", ErrorCode.OPTION_REFUSED)
        name = _ascii(name_raw, "option name", ErrorCode.OPTION_REFUSED).lower()
        value = _ascii(value_raw, f"option {name!r}", ErrorCode.OPTION_REFUSED)
        if name in options:
            raise TftpError(f"{what}: option {name!r} given twice", ErrorCode.OPTION_REFUSED)
        # Values are checked by `negotiate`, which ignores what it cannot use: real clients send
        # oddities such as atftp's literal "tsize enable", and tftp-hpa serves them too.
        options[name] = value
    return options


def _parse_request(opcode: int, data: bytes) -> ReadRequest | WriteRequest:
    what = "RRQ" if opcode == Opcode.RRQ else "WRQ"
    parts = _fields(data[2:], what)
    if len(parts) < 2:
        raise TftpError(f"{what}: no transfer mode", ErrorCode.ILLEGAL_OPERATION)
    try:
        filename = parts[0].decode("utf-8")
    except UnicodeDecodeError:
        raise TftpError(f"{what}: file name is not UTF-8", ErrorCode.ACCESS_VIOLATION) from None
    mode_text = _ascii(parts[1], "transfer mode", ErrorCode.ILLEGAL_OPERATION).lower()
    try:
        mode = Mode(mode_text)
    except ValueError:
        raise TftpError(
            f"{what}: unsupported transfer mode {mode_text[:16]!r}", ErrorCode.ILLEGAL_OPERATION
        ) from None
    options = _parse_options(parts[2:], what)
    if opcode == Opcode.RRQ:
        return ReadRequest(filename, mode, options)
    return WriteRequest(filename, mode, options)


def parse_packet(data: bytes) -> Packet:
    """Decode one datagram, or raise `TftpError` (with the error code to answer).

    Lenient in two harmless places only: an ACK may carry trailing bytes, and an ERROR's
    message may lack its NUL (both are read up to where they make sense).
    """
    if len(data) < 2:
        raise TftpError("datagram shorter than an opcode", ErrorCode.ILLEGAL_OPERATION)
    (opcode,) = _OPCODE.unpack_from(data)
    if opcode in (Opcode.RRQ, Opcode.WRQ):
        return _parse_request(opcode, data)
    if opcode == Opcode.OACK:
        body = data[2:]
        return OackPacket(_parse_options(_fields(body, "OACK"), "OACK") if body else {})
    if opcode not in (Opcode.DATA, Opcode.ACK, Opcode.ERROR):
        raise TftpError(f"unknown opcode {opcode}", ErrorCode.ILLEGAL_OPERATION)
    if len(data) < HEADER_SIZE:
        raise TftpError(f"truncated {Opcode(opcode).name}", ErrorCode.ILLEGAL_OPERATION)
    _, number = _HEADER.unpack_from(data)
    if opcode == Opcode.ACK:
        return AckPacket(number)
    if opcode == Opcode.DATA:
        if len(data) - HEADER_SIZE > MAX_BLKSIZE:
            raise TftpError("DATA larger than any block size", ErrorCode.ILLEGAL_OPERATION)
        return DataPacket(number, bytes(data[HEADER_SIZE:]))
    message = data[HEADER_SIZE:].split(b"\0", 1)[0]
    return ErrorPacket(number, message.decode("utf-8", errors="replace"))


def _encode_options(options: Mapping[str, str]) -> bytes:
    return b"".join(f"{k}\0{v}\0".encode("ascii") for k, v in options.items())


def encode_request(
    opcode: Opcode, filename: str, mode: str = "octet", options: Mapping[str, str] | None = None
) -> bytes:
    """RRQ/WRQ bytes (for tests and clients; the server only parses requests)."""
    body = filename.encode("utf-8") + b"\0" + mode.encode("ascii") + b"\0"
    return _OPCODE.pack(opcode) + body + _encode_options(options or {})


def encode_data(block: int, payload: bytes) -> bytes:
    """DATA with wire block number ``block`` (0..65535)."""
    return _HEADER.pack(Opcode.DATA, block) + payload


def encode_ack(block: int) -> bytes:
    return _HEADER.pack(Opcode.ACK, block)


def encode_error(code: int, message: str) -> bytes:
    text = message.replace("\0", " ").encode("utf-8", errors="replace")
    return _HEADER.pack(Opcode.ERROR, code) + text + b"\0"


def encode_oack(options: Mapping[str, str]) -> bytes:
    return _OPCODE.pack(Opcode.OACK) + _encode_options(options)


# --------------------------------------------------------------------------------------------
# Negotiation


@dataclass(frozen=True, slots=True)
class TransferConfig:
    """Server-side tuning of every transfer (the CLI fills it from `Settings`)."""

    timeout: float = 1.0  # first retransmit after this many seconds (a client's timeout wins)
    retries: int = 5  # give up after this many timeouts in a row without progress
    backoff: float = 2.0  # each timeout multiplies the retransmit delay by this …
    max_timeout: float = 8.0  # … up to this
    max_blksize: int = MAX_BLKSIZE  # largest blksize granted
    max_windowsize: int = 64  # largest windowsize granted
    # A granted window carries at most this many payload bytes (but at least one block), so it
    # fits a client's default 208 KiB socket buffer (datagrams cost ~2x their size there).
    window_bytes: int = 64 * 1024
    pace: float = 0.001  # seconds between the bursts of a window, once a loss split it
    # Once the last block is out, a client that has answered before and now stays silent
    # through this many resends most likely has the file and lost only its final ACK (RFC 1350
    # §6: the sender of the final ACK does not wait): the transfer ends COMPLETE_UNCONFIRMED.
    final_retries: int = 2
    max_transfers: int = 1000  # concurrent transfers per server; beyond: ERROR 0 "Server busy"

    def __post_init__(self) -> None:
        if not (self.timeout > 0 and self.max_timeout >= self.timeout):
            raise ConfigError("TFTP timeout must be > 0 and <= max_timeout")
        if self.retries < 0 or self.backoff < 1:
            raise ConfigError("TFTP retries must be >= 0 and backoff >= 1")
        if not MIN_BLKSIZE <= self.max_blksize <= MAX_BLKSIZE:
            raise ConfigError(f"TFTP max blksize must be {MIN_BLKSIZE}..{MAX_BLKSIZE}")
        if not MIN_WINDOWSIZE <= self.max_windowsize <= MAX_WINDOWSIZE:
            raise ConfigError(f"TFTP max windowsize must be {MIN_WINDOWSIZE}..{MAX_WINDOWSIZE}")
        if self.window_bytes < 1 or self.pace < 0:
            raise ConfigError("TFTP window_bytes must be >= 1 and pace >= 0")
        if self.final_retries < 0 or self.max_transfers < 1:
            raise ConfigError("TFTP final_retries must be >= 0 and max_transfers >= 1")


@dataclass(frozen=True, slots=True)
class Negotiated:
    """What an RRQ's options come to. ``oack`` is empty when no option was accepted."""

    blksize: int = DEFAULT_BLKSIZE
    windowsize: int = 1
    timeout: float = 1.0
    tsize_requested: bool = False
    oack: Mapping[str, str] = field(default_factory=dict, hash=False)


def _int(value: str) -> int | None:
    if value.isascii() and value.isdigit() and len(value) <= _MAX_DIGITS:
        return int(value)
    return None


def negotiate(options: Mapping[str, str], size: int, config: TransferConfig) -> Negotiated:
    """Apply RFC 2347/2348/2349/7440 to a request's options (``size``: the bytes to send)."""
    blksize, windowsize, timeout, tsize = DEFAULT_BLKSIZE, 1, config.timeout, False
    oack: dict[str, str] = {}
    for name, value in options.items():
        if name == OptionName.TSIZE:  # in an RRQ the value means nothing (RFC 2349 says 0)
            tsize = True
            oack[name] = str(size)
            continue
        number = _int(value)
        if number is None:
            continue  # not a number: ignored, like any option we cannot honour (RFC 2347)
        if name == OptionName.BLKSIZE and number >= MIN_BLKSIZE:
            blksize = min(number, config.max_blksize, MAX_UDP_PAYLOAD - HEADER_SIZE)
            oack[name] = str(blksize)
        elif name == OptionName.TIMEOUT and MIN_TIMEOUT <= number <= MAX_TIMEOUT:
            timeout = float(number)
            oack[name] = str(number)  # echoed unchanged (EDK2 checks it equals its request)
        elif name == OptionName.WINDOWSIZE and number >= MIN_WINDOWSIZE:
            windowsize = number  # clamped below, once blksize is known
            oack[name] = ""
    if OptionName.WINDOWSIZE in oack:
        by_bytes = max(1, config.window_bytes // blksize)
        windowsize = min(windowsize, config.max_windowsize, by_bytes)
        oack[OptionName.WINDOWSIZE] = str(windowsize)
    return Negotiated(blksize, windowsize, timeout, tsize, oack)


# --------------------------------------------------------------------------------------------
# netascii


class _Readable(Protocol):
    @property
    def size(self) -> int: ...

    def read_at(self, offset: int, length: int) -> bytes: ...


class NetasciiReader:
    """A file as netascii: CR → CR NUL, LF → CR LF, each byte on its own (as tftp-hpa does).

    The constructor reads the file once to learn the converted size (for ``tsize``) and where
    each 64 KiB source chunk lands; `read_at` then converts only the chunks it needs.
    """

    CHUNK = 64 * 1024

    def __init__(self, file: _Readable) -> None:
        self._file = file
        starts = [0]
        total = 0
        for offset in range(0, file.size, self.CHUNK):
            raw = file.read_at(offset, self.CHUNK)
            total += len(raw) + raw.count(b"\r") + raw.count(b"\n")
            starts.append(total)
        self._starts = starts
        self._size = total
        self._cached_index = -1
        self._cached = b""

    @property
    def size(self) -> int:
        return self._size

    @staticmethod
    def convert(raw: bytes) -> bytes:
        return raw.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")

    def _chunk(self, index: int) -> bytes:
        if index != self._cached_index:
            self._cached = self.convert(self._file.read_at(index * self.CHUNK, self.CHUNK))
            self._cached_index = index
        return self._cached

    def read_at(self, offset: int, length: int) -> bytes:
        pieces: list[bytes] = []
        index = bisect_right(self._starts, offset) - 1
        while length > 0 and index < len(self._starts) - 1:
            start = offset - self._starts[index]
            piece = self._chunk(index)[start : start + length]
            if not piece:
                break
            pieces.append(piece)
            offset += len(piece)
            length -= len(piece)
            index += 1
        return b"".join(pieces)


# --------------------------------------------------------------------------------------------
# The read transfer


class Outcome(enum.Enum):
    """How a transfer ended."""

    COMPLETE = "complete"  # the last block was acknowledged
    # the last block was sent and resent (`TransferConfig.final_retries`), then silence from a
    # client that had been acknowledging: its final ACK was most likely lost (RFC 1350 §6)
    COMPLETE_UNCONFIRMED = "complete_unconfirmed"
    PROBED = "probed"  # the client ended it right after the OACK (tsize probe: normal)
    CLIENT_ERROR = "client_error"  # the client sent ERROR during the transfer
    TIMED_OUT = "timed_out"  # no progress after `retries` retransmissions
    READ_ERROR = "read_error"  # the file could not be read, or changed size (we sent ERROR 0)
    CANCELLED = "cancelled"  # the server shut down or hit a bug (we sent ERROR 0)

    @property
    def failed(self) -> bool:
        """True when the transfer did not end the way either side wanted."""
        return self in (Outcome.TIMED_OUT, Outcome.READ_ERROR, Outcome.CANCELLED)


@dataclass(slots=True)
class TransferStats:
    """Counters of one transfer, updated in place (times in the caller's clock)."""

    started: float
    finished: float | None = None
    size: int = 0  # bytes of the file as sent (netascii: converted)
    bytes_sent: int = 0  # DATA payload bytes put on the wire, retransmissions included
    blocks: int = 0  # DATA datagrams sent, retransmissions included
    retransmits: int = 0  # DATA and OACK datagrams sent again
    timeouts: int = 0  # retransmit timer expirations
    probes: int = 0  # tail-loss probes sent (windowsize > 1)
    blksize: int = DEFAULT_BLKSIZE
    windowsize: int = 1
    tsize_requested: bool = False

    @property
    def seconds(self) -> float | None:
        return None if self.finished is None else self.finished - self.started


class _State(enum.Enum):
    OACK = "oack"  # OACK sent, waiting for ACK 0
    DATA = "data"
    DONE = "done"


class ReadTransfer:
    """One RRQ being served. Drive it with `receive_datagram` / `handle_timer`, then send
    `datagrams_to_send`, then wait until `get_timer`. The caller closes ``file`` when `done`."""

    def __init__(
        self,
        request: ReadRequest,
        file: _Readable,
        *,
        now: float,
        config: TransferConfig | None = None,
    ) -> None:
        self.request = request
        self.file = file
        self.config = cfg = config if config is not None else TransferConfig()
        self._source: _Readable = NetasciiReader(file) if request.mode is Mode.NETASCII else file
        size = self._source.size
        neg = negotiate(request.options, size, cfg)
        self.blksize = neg.blksize
        self.windowsize = neg.windowsize
        self.stats = TransferStats(
            started=now,
            size=size,
            blksize=neg.blksize,
            windowsize=neg.windowsize,
            tsize_requested=neg.tsize_requested,
        )
        self.outcome: Outcome | None = None
        self.done = False  # ended (see `outcome`); the caller then closes ``file``
        self.client_error: ErrorPacket | None = None  # what the client said, if it ended it
        self._size = size
        self._last = size // neg.blksize + 1  # the final (short, maybe empty) block
        self._final_len = size - (self._last - 1) * neg.blksize
        # retransmission
        self._base_timeout = neg.timeout
        self._timeout = neg.timeout
        self._max_timeout = max(cfg.max_timeout, neg.timeout)
        self._retries = 0
        self._deadline: float | None = None  # retransmit timer
        # the window: blocks [_base, _window_end) are in flight, _next is the next to send
        self._base = 1  # first block not yet acknowledged
        self._next = 1
        self._high = 0  # highest block ever sent
        self._window_end = min(1 + neg.windowsize, self._last + 1)
        self._lockstep = neg.windowsize == 1
        # the lock-step shortcut (`lock_step_ack`): the ACK it takes (-1: none) and the last
        # block it may send (full, already read ahead); set by `datagrams_to_send`
        self._fast_ack = -1
        self._fast_limit = 0
        # pacing: _burst blocks back to back, then the next burst `pace` later; a loss halves
        # _burst and caps _ceiling below the size that lost
        self._burst = neg.windowsize
        self._ceiling = neg.windowsize
        self._clean = True  # no loss signal in the current window
        self._clean_windows = 0  # in a row, at the ceiling
        self._pace = cfg.pace
        self._pace_at: float | None = None  # when the next burst may go (while blocks unsent)
        # tail-loss probe (windowsize > 1): resend the window's last block if its ACK is late
        self._probe_at: float | None = None
        self._srtt: float | None = None  # smoothed time from a window's last block to its ACK
        self._sent_at = now  # when the last window (or the OACK) went out
        self._resent = False  # the current window holds retransmissions (Karn: no RTT sample)
        # output
        self._outbox: list[bytes] = []
        self._oack = b""
        self._cache = memoryview(b"")  # file bytes read ahead, starting at offset _cache_at
        self._cache_at = 0
        if neg.oack:
            self._state = _State.OACK
            self._oack = encode_oack(neg.oack)
            self._outbox.append(self._oack)
            self._deadline = now + self._timeout
        else:
            self._state = _State.DATA
            self._pace_at = now

    # -- queries --------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When `handle_timer` (or, while pacing, `datagrams_to_send`) wants to run next."""
        if self._state is _State.DONE:
            return None
        if self._pace_at is not None:
            return self._pace_at
        probe = self._probe_at
        if probe is not None and (self._deadline is None or probe < self._deadline):
            return probe
        return self._deadline

    # -- inputs ---------------------------------------------------------------------------

    def receive_datagram(self, data: bytes, now: float) -> None:
        """A datagram from the client's TID. Raises `TftpError` if it does not decode."""
        if len(data) >= 4 and data[1] == 4 and data[0] == 0:  # ACK, the hot path
            self.receive_ack((data[2] << 8) | data[3], now)
            return
        if self._state is _State.DONE:
            return
        packet = parse_packet(data)
        if isinstance(packet, ErrorPacket):
            self.client_error = packet
            probed = self._state is _State.OACK
            self._finish(now, Outcome.PROBED if probed else Outcome.CLIENT_ERROR)
        # Anything else (DATA, a request, OACK) has no meaning here and is ignored.

    def receive_ack(self, block: int, now: float) -> None:
        """An ACK for wire block ``block`` from the client's TID (a server's hot path: it
        decodes ACKs itself and skips `receive_datagram`)."""
        datagram = self.lock_step_ack(block, now)
        if datagram is not None:
            self._outbox.append(datagram)
            return
        self._fast_ack = -1
        state = self._state
        if state is not _State.DATA:
            if state is _State.OACK and block == 0:  # RFC 2347: ACK 0 accepts the OACK
                self._state = _State.DATA
                if self.stats.retransmits == 0:
                    self._srtt = now - self._sent_at
                self._retries = 0
                self._timeout = self._base_timeout
                self._deadline = None
                self._pace_at = now
            return
        previous = self._base - 1
        delta = (block - previous) & 0xFFFF
        acked = previous + delta
        if delta == 0 or acked > self._high:
            return  # duplicate, stale or never sent: never answer it (Sorcerer's Apprentice)
        self._base = base = acked + 1
        self._retries = 0
        self._timeout = self._base_timeout
        last = self._last
        if acked >= last:
            self._finish(now, Outcome.COMPLETE)
            return
        windowsize = self.windowsize
        if windowsize > 1:
            self._probe_at = None
            if base < self._window_end:
                self._lost()  # a partial-window ACK: the client missed block `base`
            else:
                self._window_acked(now)
            self._clean = True
            self._resent = False
        end = base + windowsize
        self._window_end = end if end <= last else last + 1
        self._next = base
        self._deadline = None
        self._pace_at = now

    def lock_step_ack(self, block: int, now: float) -> bytes | None:
        """The lock-step shortcut of `receive_ack`, for servers: when ``block`` acknowledges
        the one block in flight, all was well when `datagrams_to_send` last ran (which arms
        the shortcut: no loss, no retransmission pending) and the next block is a full one
        already read ahead, move on and return that block's DATA for the caller to send.
        Nothing else is queued then, the transfer is not done and its timer only moved later.
        Otherwise change nothing and return None: the caller goes on with `receive_ack`. The
        state is the same as after the general path (tests compare both)."""
        if block != self._fast_ack:
            return None
        high = self._high + 1
        if high > self._fast_limit:
            return None
        blksize = self.blksize
        rel = (high - 1) * blksize - self._cache_at
        self._base = self._high = high
        self._next = self._window_end = high + 1
        self._deadline = now + self._timeout
        self._fast_ack = high & 0xFFFF
        stats = self.stats
        stats.blocks += 1
        stats.bytes_sent += blksize
        return _pack_header(3, high & 0xFFFF) + self._cache[rel : rel + blksize]

    def handle_timer(self, now: float) -> None:
        """Probe or retransmit if their time has come; an early call does nothing."""
        if self._state is _State.DONE:
            return
        self._fast_ack = -1
        if self._deadline is None or now < self._deadline:
            if self._probe_at is not None and now >= self._probe_at:
                self._probe_at = None
                self._probe()
            return
        self._retries += 1
        self.stats.timeouts += 1
        heard = self._base > 1 or self._oack  # the client acknowledged a block or the OACK
        if self._high == self._last and heard and self._retries > self.config.final_retries:
            self._finish(now, Outcome.COMPLETE_UNCONFIRMED)
            return
        if self._retries > self.config.retries:
            self._finish(now, Outcome.TIMED_OUT)
            return
        self._timeout = min(self._timeout * self.config.backoff, self._max_timeout)
        if self._state is _State.OACK:
            self._outbox.append(self._oack)
            self.stats.retransmits += 1
            self._sent_at = now
            self._deadline = now + self._timeout
            return
        if self.windowsize > 1:
            self._lost()
        self._next = self._base  # go back to the first unacknowledged block
        self._deadline = None
        self._probe_at = None
        self._pace_at = now

    def cancel(self, now: float, reason: str = "Server shutting down") -> None:
        """End the transfer from our side; tells the client with ERROR 0 ``reason``."""
        if self._state is not _State.DONE:
            self._outbox.append(encode_error(ErrorCode.NOT_DEFINED, reason))
            self._finish(now, Outcome.CANCELLED)

    # -- output ---------------------------------------------------------------------------

    def datagrams_to_send(self, now: float) -> list[bytes]:
        out = self._outbox
        if out:
            self._outbox = []
        else:
            out = []
        pace_at = self._pace_at
        if pace_at is not None and now >= pace_at and self._state is _State.DATA:
            self._send_burst(now, out)
            if self._outbox:  # the read failed: the ERROR goes out now
                out.extend(self._outbox)
                self._outbox = []
        # Arm the lock-step shortcut when one block is in flight and all is well
        if (
            self._lockstep
            and self._state is _State.DATA
            and self._pace_at is None
            and not self._retries
            and self._high >= self._base
        ):
            self._fast_ack = self._high & 0xFFFF
            self._fast_limit = min(
                self._last - 1, (self._cache_at + len(self._cache)) // self.blksize
            )
        else:
            self._fast_ack = -1
        return out

    # -- internals ------------------------------------------------------------------------

    def _window_acked(self, now: float) -> None:
        """A whole window was acknowledged: learn the round trip, grow the burst."""
        if not self._resent and self._next == self._window_end:
            sample = now - self._sent_at
            srtt = self._srtt
            self._srtt = sample if srtt is None else srtt + (sample - srtt) / 8
        if not self._clean:
            return
        if self._burst < self._ceiling:
            self._burst += 1
            self._clean_windows = 0
        elif self._ceiling < self.windowsize:
            # Every _RELAX clean windows at the ceiling, allow one more block: a single random
            # loss must not slow the rest of a long transfer.
            self._clean_windows += 1
            if self._clean_windows >= _RELAX:
                self._ceiling += 1
                self._clean_windows = 0

    def _lost(self) -> None:
        if self._clean:  # one reduction per window, however many signals it gives
            self._ceiling = max(1, min(self._ceiling, self._burst - 1))
            self._burst = max(1, self._burst // 2)
            self._clean = False
            self._clean_windows = 0

    def _probe(self) -> None:
        """Tail-loss probe: send the window's last block again. A client that got it ignores
        it (or repeats its ACK); one that lost the tail answers with a partial-window ACK
        (RFC 7440 §4, EDK2, atftp), so the loss costs a round trip, not a timeout."""
        block = self._window_end - 1
        if block < self._base or block > self._high:
            return
        start = (block - 1) * self.blksize
        length = self.blksize if block < self._last else self._final_len
        try:
            payload = self._source.read_at(start, length)
        except OSError:
            return  # the retransmit timer will try again (and report a lasting failure)
        if len(payload) != length:
            return  # the file changed; the next burst's read reports it
        self._outbox.append(_pack_header(Opcode.DATA, block & 0xFFFF) + payload)
        self._resent = True
        self.stats.retransmits += 1
        self.stats.probes += 1

    def _send_burst(self, now: float, out: list[bytes]) -> None:
        # The hot path: plain locals and conditionals, one read per _READ_AHEAD bytes.
        first = self._next
        end = self._window_end  # one past the last block of this burst
        if end - first > self._burst:
            end = first + self._burst
        blksize = self.blksize
        last = self._last
        if end <= last:
            want = (end - first) * blksize
        else:
            want = (last - first) * blksize + self._final_len
        start = (first - 1) * blksize
        rel = start - self._cache_at
        cache = self._cache
        if rel < 0 or rel + want > len(cache):
            length = self._size - start
            if length > _READ_AHEAD and length > want:
                length = want if want > _READ_AHEAD else _READ_AHEAD
            try:
                data = self._source.read_at(start, length)
            except OSError:
                self._fail(now, Outcome.READ_ERROR, "Read error")
                return
            if len(data) != length:
                self._fail(now, Outcome.READ_ERROR, "File changed during transfer")
                return
            self._cache = cache = memoryview(data)
            self._cache_at = start
            rel = 0
        if end - first == 1:
            out.append(_pack_header(3, first & 0xFFFF) + cache[rel : rel + blksize])
        else:
            append = out.append
            for block in range(first, end):
                append(_pack_header(3, block & 0xFFFF) + cache[rel : rel + blksize])
                rel += blksize
        stats = self.stats
        stats.blocks += end - first
        stats.bytes_sent += want
        high = self._high
        if first <= high:
            stats.retransmits += (high if high < end else end - 1) - first + 1
            self._resent = True
        if end - 1 > high:
            self._high = end - 1
        self._next = end
        if end < self._window_end:
            self._pace_at = now + self._pace
            return
        self._pace_at = None
        self._deadline = now + self._timeout
        if self.windowsize > 1:
            self._sent_at = now
            srtt = self._srtt
            delay = _MIN_PROBE if srtt is None or 4 * srtt < _MIN_PROBE else 4 * srtt
            if delay < self._timeout / 2:
                self._probe_at = now + delay

    def _fail(self, now: float, outcome: Outcome, message: str) -> None:
        self._outbox.append(encode_error(ErrorCode.NOT_DEFINED, message))
        self._finish(now, outcome)

    def _finish(self, now: float, outcome: Outcome) -> None:
        self._state = _State.DONE
        self._fast_ack = -1
        self.done = True
        self.outcome = outcome
        self.stats.finished = now
        self._deadline = None
        self._pace_at = None
        self._probe_at = None
