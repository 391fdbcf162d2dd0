"""Mutation fuzzing of DHCP and TFTP datagrams: a pure, seeded mutator and a bounded sender.

Theory of operation
-------------------
`Mutator` takes real datagrams (captured DHCP requests, TFTP packets built with the codec)
and returns corrupted copies, one `Mutant` per call. It is pure: a ``random.Random`` seeded
by the caller is its only state, so the same seed gives the same stream (a failure found by a
fuzz run is reproduced by its seed and index). Each mutant applies one to three of these
(`Mutation`), chosen uniformly:

* ``bit-flip``: one to eight random bits.
* ``interesting``: one to four bytes (or a 16-bit word) replaced by 0x00, 0xff, 0x7f, 0x80.
* ``truncate``: cut at a random offset; ``extend``: garbage appended.
* ``length-lie``: a DHCP option's length byte changed (RFC 2132 §2 TLVs: it then runs into
  the next option or past the end); for TFTP a NUL terminator replaced, or one inserted, so
  the strings of RFC 1350 §5 / RFC 2347 split differently.
* ``duplicate``: a DHCP option or a TFTP option pair repeated (RFC 3396 concatenates DHCP
  repeats: a fixed-length option twice has the wrong length; RFC 2347 forbids TFTP repeats).
* ``splice``: the head of one datagram joined to the tail of another.
* ``huge``: huge declared values: a DHCP length byte of 255, option 57 = 65535, lease time
  2**32-1, overload (52) into fields full of long TLVs; TFTP option values of 20+ digits,
  block numbers and error codes of 65535, a file name of a thousand bytes.
* ``random-tail``: the header kept (240 bytes for DHCP, the opcode for TFTP), the rest random.
* ``empty``: zero bytes; ``random``: pure random bytes.

`codec_rejects` says whether our own codec refuses a datagram, so a run can predict how many
of its datagrams a server must count as dropped.

`run_fuzz` sends a bounded stream of mutants to one UDP address (at most ``count`` datagrams,
at most ``seconds``) and paces itself by flow control instead of a rate: every ``window``
datagrams it sends a good probe from a second socket and waits for the server's answer
(`Probe`), so the server's receive buffer never overflows and every datagram is parsed. For
TFTP it also chases transfers: DATA or OACK coming back to the fuzz socket from another port
reveals a transfer whose TID is that socket, and mutated ACK/ERROR/DATA datagrams then go to
that port from the fuzz socket (the right TID) and from a stranger socket (a wrong TID, RFC
1350 §4). ``python -m pxeforge.fuzz`` runs it from the command line and prints a JSON report.
It sends only to the address it is given; replies of a server to forged addresses inside the
datagrams are that server's business, so point it at a server in a network namespace.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import json
import random
import select
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pxeforge.errors import DhcpError, TftpError
from pxeforge.protocols.dhcp import (
    FLAG_BROADCAST,
    HEADER_SIZE,
    MessageType,
    Option,
    Packet,
    parse,
)
from pxeforge.protocols.tftp import (
    ErrorCode,
    Opcode,
    encode_ack,
    encode_data,
    encode_error,
    encode_oack,
    encode_request,
    parse_packet,
)

__all__ = [
    "Dialect",
    "FuzzReport",
    "Mutant",
    "Mutation",
    "Mutator",
    "Probe",
    "codec_rejects",
    "dhcp_option_spans",
    "dhcp_probe",
    "dhcp_seeds",
    "main",
    "run_fuzz",
    "tftp_probe",
    "tftp_request_seeds",
    "tftp_transfer_seeds",
]

Dialect = Literal["dhcp", "tftp"]

INTERESTING = (0x00, 0xFF, 0x7F, 0x80)
_INTERESTING_WORDS = (0x0000, 0xFFFF, 0x7FFF, 0x8000, 0x0001, 0xFFFE)
_HUGE_NUMBERS = (
    "99999999999999999999999999999999",
    "18446744073709551616",
    "4294967296",
    "65536",
    "65535",
    "-1",
    "0",
    "1" * 255,
)
_TFTP_OPTIONS = ("blksize", "tsize", "timeout", "windowsize")
_DHCP_END = 255
_DHCP_PAD = 0
_FILE_OFFSET = 108  # BOOTP header: sname at 44 (64 bytes), file at 108 (128 bytes)
_SNAME_OFFSET = 44


class Mutation(enum.StrEnum):
    BIT_FLIP = "bit-flip"
    INTERESTING = "interesting"
    TRUNCATE = "truncate"
    EXTEND = "extend"
    LENGTH_LIE = "length-lie"
    DUPLICATE = "duplicate"
    SPLICE = "splice"
    HUGE = "huge"
    RANDOM_TAIL = "random-tail"
    EMPTY = "empty"
    RANDOM = "random"


#: Mutations that end the stack: nothing sensible can be applied after them.
_FINAL = frozenset({Mutation.EMPTY, Mutation.RANDOM})


@dataclass(frozen=True, slots=True)
class Mutant:
    """One corrupted datagram: which seed it came from and what was done to it."""

    index: int  # position in the mutator's stream (0, 1, 2 …)
    seed: int  # index of the seed datagram it started from
    kinds: tuple[Mutation, ...]
    data: bytes


# ----------------------------------------------------------------------------- structure


def dhcp_option_spans(data: bytes) -> list[tuple[int, int]]:
    """``(offset, size)`` of each option TLV after the DHCP header, as far as lengths allow."""
    spans: list[tuple[int, int]] = []
    i, n = HEADER_SIZE, len(data)
    while i < n:
        code = data[i]
        if code == _DHCP_PAD:
            i += 1
            continue
        if code == _DHCP_END or i + 1 >= n:
            break
        size = 2 + data[i + 1]
        spans.append((i, size))
        i += size
    return spans


def _dhcp_end(data: bytes) -> int:
    """Where a new option goes: at the END option, or at the end of the walkable options."""
    spans = dhcp_option_spans(data)
    end = spans[-1][0] + spans[-1][1] if spans else HEADER_SIZE
    return min(end, len(data))


def _tftp_strings(data: bytes) -> tuple[int, list[tuple[int, int]]]:
    """(start, [(offset, length)]) of the NUL-terminated strings of an RRQ/WRQ/OACK/ERROR."""
    if len(data) < 2:
        return 0, []
    opcode = int.from_bytes(data[:2], "big")
    if opcode in (Opcode.RRQ, Opcode.WRQ, Opcode.OACK):
        start = 2
    elif opcode == Opcode.ERROR:
        start = 4
    else:
        return 0, []
    out: list[tuple[int, int]] = []
    i = start
    while i < len(data):
        j = data.find(b"\0", i)
        if j < 0:
            out.append((i, len(data) - i))
            break
        out.append((i, j - i))
        i = j + 1
    return start, out


# ------------------------------------------------------------------------------- mutator


class Mutator:
    """A seeded stream of mutants of ``seeds`` (see the module docstring).

    ``max_size`` bounds every mutant (datagrams are cut to it); ``kinds`` restricts the
    mutations used; ``stack`` is the largest number applied to one mutant.
    """

    def __init__(
        self,
        seeds: Sequence[bytes],
        dialect: Dialect,
        *,
        seed: int,
        max_size: int = 1500,
        kinds: Iterable[Mutation] = tuple(Mutation),
        stack: int = 3,
    ) -> None:
        if not seeds:
            raise ValueError("the mutator needs at least one seed datagram")
        if max_size < 1 or stack < 1:
            raise ValueError("max_size and stack must be at least 1")
        self.seeds = [bytes(s) for s in seeds]
        self.dialect: Dialect = dialect
        self.max_size = max_size
        self.kinds = tuple(kinds)
        if not self.kinds:
            raise ValueError("no mutation kinds")
        self.stack = stack
        self.seed = seed
        self._rng = random.Random(seed)
        self._index = 0

    def __iter__(self) -> Iterator[Mutant]:
        while True:
            yield self.mutate()

    def take(self, n: int) -> list[Mutant]:
        return [self.mutate() for _ in range(n)]

    def mutate(self) -> Mutant:
        rng = self._rng
        which = rng.randrange(len(self.seeds))
        data = self.seeds[which]
        kinds: list[Mutation] = []
        for _ in range(rng.randint(1, self.stack)):
            kind = rng.choice(self.kinds)
            kinds.append(kind)
            data = self._apply(kind, data)
            if kind in _FINAL:
                break
        index = self._index
        self._index += 1
        return Mutant(index, which, tuple(kinds), data[: self.max_size])

    # -- the mutations -------------------------------------------------------------------

    def _apply(self, kind: Mutation, data: bytes) -> bytes:
        rng = self._rng
        match kind:
            case Mutation.BIT_FLIP:
                return self._bit_flip(data)
            case Mutation.INTERESTING:
                return self._interesting(data)
            case Mutation.TRUNCATE:
                return data[: rng.randrange(len(data))] if data else data
            case Mutation.EXTEND:
                return data + self._garbage(rng.randint(1, 512))
            case Mutation.LENGTH_LIE:
                if self.dialect == "dhcp":
                    return self._dhcp_length_lie(data)
                return self._tftp_length_lie(data)
            case Mutation.DUPLICATE:
                if self.dialect == "dhcp":
                    return self._dhcp_duplicate(data)
                return self._tftp_duplicate(data)
            case Mutation.SPLICE:
                other = rng.choice(self.seeds)
                return data[: rng.randint(0, len(data))] + other[rng.randint(0, len(other)) :]
            case Mutation.HUGE:
                return self._dhcp_huge(data) if self.dialect == "dhcp" else self._tftp_huge(data)
            case Mutation.RANDOM_TAIL:
                head = HEADER_SIZE if self.dialect == "dhcp" else 2
                return data[:head] + self._garbage(rng.randint(0, 600))
            case Mutation.EMPTY:
                return b""
            case Mutation.RANDOM:
                return self._garbage(rng.randint(1, self.max_size))
        raise AssertionError(kind)  # pragma: no cover - the match is exhaustive

    def _garbage(self, n: int) -> bytes:
        return self._rng.randbytes(n)

    def _bit_flip(self, data: bytes) -> bytes:
        if not data:
            return data
        out = bytearray(data)
        for _ in range(self._rng.randint(1, 8)):
            bit = self._rng.randrange(8 * len(out))
            out[bit // 8] ^= 1 << (bit % 8)
        return bytes(out)

    def _interesting(self, data: bytes) -> bytes:
        rng = self._rng
        if not data:
            return bytes([rng.choice(INTERESTING)])
        out = bytearray(data)
        if len(out) >= 2 and rng.random() < 0.3:
            at = rng.randrange(len(out) - 1)
            out[at : at + 2] = rng.choice(_INTERESTING_WORDS).to_bytes(2, "big")
            return bytes(out)
        for _ in range(rng.randint(1, 4)):
            out[rng.randrange(len(out))] = rng.choice(INTERESTING)
        return bytes(out)

    # DHCP (RFC 2132 §2: code, length, value; 0 PAD and 255 END have no length)

    def _dhcp_length_lie(self, data: bytes) -> bytes:
        rng = self._rng
        spans = dhcp_option_spans(data)
        if not spans:
            return self._bit_flip(data)
        at, size = rng.choice(spans)
        length = size - 2
        lie = rng.choice(
            [length + 1, length - 1, length + rng.randint(2, 40), 0, 1, 255, rng.randrange(256)]
        )
        out = bytearray(data)
        out[at + 1] = lie % 256
        return bytes(out)

    def _dhcp_duplicate(self, data: bytes) -> bytes:
        rng = self._rng
        spans = dhcp_option_spans(data)
        if not spans:
            return self._bit_flip(data)
        at, size = rng.choice(spans)
        tlv = data[at : at + size]
        if rng.random() < 0.5:  # right after itself
            where = at + size
        else:  # just before END
            where = _dhcp_end(data)
        if rng.random() < 0.3 and len(tlv) > 2:  # same code, another value
            tlv = tlv[:2] + self._garbage(len(tlv) - 2)
        return data[:where] + tlv + data[where:]

    def _dhcp_huge(self, data: bytes) -> bytes:
        rng = self._rng
        choice = rng.randrange(5)
        spans = dhcp_option_spans(data)
        if choice == 0 and spans:
            at, _ = rng.choice(spans)
            out = bytearray(data)
            out[at + 1] = rng.choice((255, 254, 253))
            return bytes(out)
        end = _dhcp_end(data)
        if choice == 1:
            tlv = bytes((Option.MAX_MESSAGE_SIZE, 2)) + rng.choice(
                (b"\xff\xff", b"\0\0", b"\0\x01")
            )
        elif choice == 2:
            timer = rng.choice((Option.LEASE_TIME, Option.RENEWAL_TIME, Option.REBINDING_TIME))
            tlv = bytes((timer, 4)) + b"\xff\xff\xff\xff"
        elif choice == 3:  # one option split into many 255-byte chunks (RFC 3396)
            code = rng.choice((43, 60, 61, 77, 93, 97, 175, 55, 12))
            chunks = rng.randint(2, 5)
            tlv = b"".join(bytes((code, 255)) + self._garbage(255) for _ in range(chunks))
        else:  # overload into file and sname full of TLVs claiming more than they hold
            if len(data) < HEADER_SIZE:
                return data + bytes((52, 1, 3))
            out = bytearray(data)
            out[_SNAME_OFFSET : _SNAME_OFFSET + 64] = bytes((43, 255)) + self._garbage(62)
            out[_FILE_OFFSET : _FILE_OFFSET + 128] = bytes((60, 200)) + self._garbage(126)
            tlv = bytes((Option.OVERLOAD, 1, rng.choice((1, 2, 3))))
            return bytes(out[:end]) + tlv + bytes(out[end:])
        return data[:end] + tlv + data[end:]

    # TFTP (RFC 1350 §5, RFC 2347: NUL-terminated strings after the opcode)

    def _tftp_length_lie(self, data: bytes) -> bytes:
        rng = self._rng
        _, strings = _tftp_strings(data)
        if not strings:
            return self._interesting(data)
        at, length = rng.choice(strings)
        end = at + length
        if end < len(data) and rng.random() < 0.5:  # lose a terminator
            return data[:end] + bytes([rng.randint(1, 255)]) + data[end + 1 :]
        cut = at + rng.randint(0, length)  # split a string in two
        return data[:cut] + b"\0" + data[cut:]

    def _tftp_duplicate(self, data: bytes) -> bytes:
        rng = self._rng
        start, strings = _tftp_strings(data)
        if not strings:
            return data + data[2:]  # DATA/ACK: the body twice
        opcode = int.from_bytes(data[:2], "big")
        first = 2 if opcode in (Opcode.RRQ, Opcode.WRQ) else 0
        pairs = [
            (strings[i][0], strings[i + 1][0] + strings[i + 1][1] + 1)
            for i in range(first, len(strings) - 1, 2)
        ]
        if pairs:
            a, b = rng.choice(pairs)
            chunk = data[a:b]
            if rng.random() < 0.5:
                chunk = chunk.swapcase()
            return data + chunk
        at, length = rng.choice(strings)
        return data[: at + length] + b"\0" + data[at : at + length] + data[at + length :]

    def _tftp_huge(self, data: bytes) -> bytes:
        rng = self._rng
        opcode = int.from_bytes(data[:2], "big") if len(data) >= 2 else -1
        if opcode in (Opcode.DATA, Opcode.ACK, Opcode.ERROR) and len(data) >= 4:
            if rng.random() < 0.5:
                return data[:2] + rng.choice(_INTERESTING_WORDS).to_bytes(2, "big") + data[4:]
        if opcode in (Opcode.RRQ, Opcode.WRQ, Opcode.OACK) and rng.random() < 0.7:
            name = rng.choice(_TFTP_OPTIONS)
            value = rng.choice(_HUGE_NUMBERS)
            body = f"{name}\0{value}\0".encode()
            return data + body
        if opcode in (Opcode.RRQ, Opcode.WRQ):
            long_name = b"A" * rng.choice((255, 256, 511, 1024, self.max_size))
            return data[:2] + long_name + b"\0octet\0"
        return data + b"\0" * rng.randint(1, 1024)


# ------------------------------------------------------------------- seeds and verdicts


def dhcp_seeds() -> list[bytes]:
    """Requests built with the codec: PXE DISCOVER and REQUEST (BIOS, UEFI), iPXE, plain."""
    out: list[bytes] = []
    for i, (vendor, arch) in enumerate(
        [
            (b"PXEClient:Arch:00000:UNDI:002001", 0),
            (b"PXEClient:Arch:00007:UNDI:003016", 7),
            (b"HTTPClient:Arch:00016:UNDI:003001", 16),
        ]
    ):
        mac = bytes((0x52, 0x54, 0x00, 0xF0, 0x0D, i))
        common: dict[int, bytes] = {
            Option.VENDOR_CLASS: vendor,
            Option.CLIENT_ARCH: arch.to_bytes(2, "big"),
            Option.PARAMETER_REQUEST_LIST: bytes((1, 3, 6, 43, 60, 66, 67, 128, 175)),
            Option.MAX_MESSAGE_SIZE: (1472).to_bytes(2, "big"),
            Option.CLIENT_ID: b"\x01" + mac,
        }
        discover = Packet(
            xid=0x1000 + i,
            flags=FLAG_BROADCAST,
            chaddr=mac,
            options={Option.MESSAGE_TYPE: bytes([MessageType.DISCOVER]), **common},
        )
        request = Packet(
            xid=0x1000 + i,
            chaddr=mac,
            options={
                Option.MESSAGE_TYPE: bytes([MessageType.REQUEST]),
                Option.REQUESTED_IP: bytes((10, 0, 0, 100 + i)),
                Option.SERVER_ID: bytes((10, 0, 0, 1)),
                **common,
            },
        )
        out += [discover.to_bytes(), request.to_bytes()]
    ipxe = Packet(
        xid=0x2000,
        chaddr=bytes((0x52, 0x54, 0x00, 0xF0, 0x0D, 0xEE)),
        options={
            Option.MESSAGE_TYPE: bytes([MessageType.DISCOVER]),
            Option.USER_CLASS: b"iPXE",
            Option.IPXE_ENCAP: bytes((0xB1, 0x05, 0x01, 0x80, 0x86, 0x10, 0x0E, 0x13, 0x01, 0x01)),
        },
    )
    return [*out, ipxe.to_bytes()]


def tftp_request_seeds(files: Sequence[str] = ("pxelinux.0",)) -> list[bytes]:
    """What a listener receives: RRQs (plain, with options, netascii), a WRQ, stray packets."""
    out: list[bytes] = []
    for name in files:
        out += [
            encode_request(Opcode.RRQ, name),
            encode_request(Opcode.RRQ, name, "octet", {"tsize": "0", "blksize": "1468"}),
            encode_request(
                Opcode.RRQ, name, "octet", {"blksize": "1468", "windowsize": "4", "timeout": "1"}
            ),
            encode_request(Opcode.RRQ, name, "netascii"),
        ]
    out += [
        encode_request(Opcode.RRQ, "pxelinux.cfg/default"),
        encode_request(Opcode.RRQ, "pxelinux.cfg/01-52-54-00-12-34-56"),
        encode_request(Opcode.RRQ, "../../etc/passwd"),
        encode_request(Opcode.WRQ, "upload.bin", "octet", {"tsize": "1000"}),
        encode_ack(0),
        encode_error(ErrorCode.NOT_DEFINED, "stray"),
        encode_oack({"blksize": "512"}),
    ]
    return out


def tftp_transfer_seeds() -> list[bytes]:
    """What a transfer socket receives from its client: ACKs, ERRORs, stray DATA and OACK."""
    return [
        encode_ack(0),
        encode_ack(1),
        encode_ack(2),
        encode_ack(65535),
        encode_error(ErrorCode.OPTION_REFUSED, "User aborted the transfer"),
        encode_error(ErrorCode.NOT_DEFINED, ""),
        encode_data(1, b"x" * 512),
        encode_oack({"blksize": "1468", "tsize": "173792"}),
    ]


def codec_rejects(dialect: Dialect, data: bytes) -> bool:
    """True when our codec refuses ``data`` (DHCP: also a non-Ethernet client, keyed by MAC)."""
    if dialect == "dhcp":
        try:
            _ = parse(data).mac
        except DhcpError:
            return True
        return False
    try:
        parse_packet(data)
    except TftpError:
        return True
    return False


# -------------------------------------------------------------------------------- sender


@dataclass(frozen=True, slots=True)
class Probe:
    """A good datagram whose answer proves that everything sent before it was read.

    ``make(n)`` builds the n-th probe; ``matches(n, reply)`` recognises its answer on the
    probe socket, bound to ``bind``.
    """

    make: Callable[[int], bytes]
    matches: Callable[[int, bytes], bool]
    bind: tuple[str, int] = ("0.0.0.0", 0)
    device: str | None = None


_PROBE_XID = 0x7E570000
_PROBE_MAC = bytes((0x02, 0x7E, 0x57, 0x00, 0x00, 0x01))


def dhcp_probe(reply_port: int = 68, device: str | None = None) -> Probe:
    """A PXE DISCOVER asking for a broadcast reply, its xid numbering the probe; the OFFER
    comes back to ``reply_port`` (68, or the server's port + 1 on test ports)."""

    def make(n: int) -> bytes:
        return Packet(
            xid=(_PROBE_XID + n) & 0xFFFFFFFF,
            flags=FLAG_BROADCAST,
            chaddr=_PROBE_MAC,
            options={
                Option.MESSAGE_TYPE: bytes([MessageType.DISCOVER]),
                Option.VENDOR_CLASS: b"PXEClient:Arch:00000:UNDI:002001",
                Option.CLIENT_ARCH: b"\0\0",
            },
        ).to_bytes()

    def matches(n: int, reply: bytes) -> bool:
        xid = struct.pack("!I", (_PROBE_XID + n) & 0xFFFFFFFF)
        return len(reply) >= 8 and reply[4:8] == xid and reply[28:34] == _PROBE_MAC

    return Probe(make, matches, ("0.0.0.0", reply_port), device)


def tftp_probe() -> Probe:
    """An RRQ for a file that does not exist: ERROR 1 comes back at once."""

    def make(n: int) -> bytes:
        return encode_request(Opcode.RRQ, f"pxeforge-fuzz-probe-{n}")

    def matches(n: int, reply: bytes) -> bool:
        return reply[:2] == b"\0\5"

    return Probe(make, matches)


@dataclass
class FuzzReport:
    """What a run did. ``rejected``: mutants our codec refuses (the server's expected drops)."""

    sent: int = 0
    to_listener: int = 0
    right_tid: int = 0
    wrong_tid: int = 0
    rejected: int = 0  # of the datagrams sent to the listener
    probes: int = 0
    probe_timeouts: int = 0
    send_errors: int = 0
    replies: int = 0
    seconds: float = 0.0
    fuzz_port: int = 0  # the fuzz socket's port: the TID of the transfers it started
    transfer_ports: set[int] = field(default_factory=set)
    kinds: Counter[str] = field(default_factory=Counter)

    def as_json(self) -> dict[str, object]:
        return {
            "sent": self.sent,
            "to_listener": self.to_listener,
            "right_tid": self.right_tid,
            "wrong_tid": self.wrong_tid,
            "rejected": self.rejected,
            "probes": self.probes,
            "probe_timeouts": self.probe_timeouts,
            "send_errors": self.send_errors,
            "replies": self.replies,
            "seconds": round(self.seconds, 3),
            "fuzz_port": self.fuzz_port,
            "transfer_ports": sorted(self.transfer_ports),
            "kinds": dict(sorted(self.kinds.items())),
        }


def _udp(bind: tuple[str, int], device: str | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        if device:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
        sock.bind(bind)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


_MAX_CHASED = 256  # transfer ports remembered at once (the newest win)


def run_fuzz(
    target: tuple[str, int],
    mutator: Mutator,
    *,
    count: int,
    seconds: float,
    probe: Probe | None = None,
    window: int = 64,
    probe_timeout: float = 2.0,
    bind: tuple[str, int] = ("0.0.0.0", 0),
    device: str | None = None,
    chase: Mutator | None = None,
    chase_share: float = 0.3,
    extra_ports: Callable[[], Iterable[int]] | None = None,
    fuzz_socket: socket.socket | None = None,
) -> FuzzReport:
    """Send up to ``count`` mutants to ``target`` within ``seconds`` (see the module docstring).

    ``chase``: a mutator for transfer sockets (TFTP); ``chase_share`` of the datagrams go to
    transfer ports once some are known, half from the fuzz socket (right TID), half from a
    stranger socket (wrong TID). ``extra_ports()`` adds ports to chase (transfers of other
    clients, for wrong-TID datagrams only); it is asked once per window. ``fuzz_socket``: a
    bound UDP socket to send the mutants from, left open for the caller (to end the transfers
    it started, from their TID); by default one is bound to ``bind`` and closed at the end.
    """
    if count < 0 or seconds <= 0 or window < 1:
        raise ValueError("count >= 0, seconds > 0 and window >= 1 are required")
    report = FuzzReport()
    rng = random.Random(mutator.seed ^ 0x5EED)  # the choice of targets is seeded too
    host = target[0]
    with contextlib.ExitStack() as stack:
        if fuzz_socket is None:
            fuzz = stack.enter_context(_udp(bind, device))
        else:
            fuzz = fuzz_socket
            fuzz.setblocking(False)
        stranger = stack.enter_context(_udp((fuzz.getsockname()[0], 0), device))
        probe_sock = None
        if probe is not None:
            probe_sock = stack.enter_context(_udp(probe.bind, probe.device))
        report.fuzz_port = fuzz.getsockname()[1]
        chased: dict[int, None] = {}  # insertion-ordered set
        others: list[int] = []
        start = time.monotonic()
        deadline = start + seconds

        def drain() -> None:
            while True:
                try:
                    data, addr = fuzz.recvfrom(65536)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:  # ICMP errors surface here on some kernels
                    continue
                report.replies += 1
                if chase is not None and addr[1] != target[1] and data[:2] in (b"\0\3", b"\0\6"):
                    report.transfer_ports.add(addr[1])
                    chased.pop(addr[1], None)
                    chased[addr[1]] = None
                    if len(chased) > _MAX_CHASED:
                        del chased[next(iter(chased))]
            with contextlib.suppress(BlockingIOError, InterruptedError, OSError):
                while True:
                    stranger.recvfrom(65536)

        def send(sock: socket.socket, data: bytes, to: tuple[str, int]) -> bool:
            try:
                sock.sendto(data, to)
            except (BlockingIOError, InterruptedError):
                select.select([], [sock], [], 0.5)
                try:
                    sock.sendto(data, to)
                except OSError:
                    report.send_errors += 1
                    return False
            except OSError:
                report.send_errors += 1
                return False
            return True

        while report.sent < count and time.monotonic() < deadline:
            if report.sent % window == 0:
                if probe is not None and probe_sock is not None and report.sent:
                    left = max(0.0, deadline - time.monotonic())
                    _probe(probe, probe_sock, target, report, min(probe_timeout, left))
                if extra_ports is not None:
                    others = list(extra_ports())
            drain()
            ports = list(chased)
            if chase is not None and (ports or others) and rng.random() < chase_share:
                mutant = chase.mutate()
                right = bool(ports) and rng.random() < 0.5
                port = rng.choice(ports) if right else rng.choice(ports + others)
                if send(fuzz if right else stranger, mutant.data, (host, port)):
                    report.sent += 1
                    if right:
                        report.right_tid += 1
                    else:
                        report.wrong_tid += 1
                    for kind in mutant.kinds:
                        report.kinds[kind.value] += 1
                continue
            mutant = mutator.mutate()
            if send(fuzz, mutant.data, target):
                report.sent += 1
                report.to_listener += 1
                report.rejected += codec_rejects(mutator.dialect, mutant.data)
                for kind in mutant.kinds:
                    report.kinds[kind.value] += 1
        if probe is not None and probe_sock is not None:  # the last stretch is read too
            _probe(probe, probe_sock, target, report, probe_timeout)
        drain()
        report.seconds = time.monotonic() - start
    return report


def _probe(
    probe: Probe, sock: socket.socket, target: tuple[str, int], report: FuzzReport, timeout: float
) -> None:
    n = report.probes
    report.probes += 1
    try:
        sock.sendto(probe.make(n), target)
    except OSError:
        report.send_errors += 1
        return
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([sock], [], [], left)[0]:
            break
        try:
            reply = sock.recv(65536)
        except OSError:
            continue
        if probe.matches(n, reply):
            return
    report.probe_timeouts += 1


# ------------------------------------------------------------------------------------ CLI


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"{text!r}: want HOST:PORT")
    return host, int(port)


_DESCRIPTION = "Send a bounded stream of mutated DHCP or TFTP datagrams to one server."


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pxeforge.fuzz dhcp|tftp HOST:PORT [...]``: one bounded run, JSON report."""
    ap = argparse.ArgumentParser(prog="python -m pxeforge.fuzz", description=_DESCRIPTION)
    ap.add_argument("dialect", choices=["dhcp", "tftp"])
    ap.add_argument("target", type=_address, help="HOST:PORT of the server")
    ap.add_argument("--count", type=int, default=100_000, help="datagrams at most (100000)")
    ap.add_argument("--seconds", type=float, default=60.0, help="wall-clock cap (60)")
    ap.add_argument("--seed", type=int, default=1, help="mutator seed (1)")
    ap.add_argument("--seeds-hex", help="file of seed datagrams, one hex string a line")
    ap.add_argument("--file", action="append", default=[], help="TFTP: a file name to ask for")
    ap.add_argument("--bind", type=_address, default=("0.0.0.0", 0), help="fuzz socket address")
    ap.add_argument("--device", help="bind the sockets to this interface (SO_BINDTODEVICE)")
    ap.add_argument("--window", type=int, default=64, help="datagrams between probes (64)")
    ap.add_argument("--no-probe", action="store_true", help="no flow control")
    ap.add_argument("--reply-port", type=int, help="DHCP: where the probe's OFFER comes (68)")
    ap.add_argument("--max-size", type=int, default=1500, help="largest mutant (1500)")
    args = ap.parse_args(argv)
    dialect: Dialect = args.dialect
    if args.seeds_hex:
        with open(args.seeds_hex, encoding="ascii") as fh:
            seeds = [bytes.fromhex(line) for line in fh.read().split()]
    elif dialect == "dhcp":
        seeds = dhcp_seeds()
    else:
        seeds = tftp_request_seeds(args.file or ["pxelinux.0"])
    mutator = Mutator(seeds, dialect, seed=args.seed, max_size=args.max_size)
    probe: Probe | None = None
    chase: Mutator | None = None
    if dialect == "dhcp":
        reply_port = args.reply_port or (68 if args.target[1] == 67 else args.target[1] + 1)
        probe = dhcp_probe(reply_port, args.device)
    else:
        probe = tftp_probe()
        chase = Mutator(tftp_transfer_seeds(), "tftp", seed=args.seed + 1, max_size=args.max_size)
    report = run_fuzz(
        args.target,
        mutator,
        count=args.count,
        seconds=args.seconds,
        probe=None if args.no_probe else probe,
        window=args.window,
        bind=args.bind,
        device=args.device,
        chase=chase,
    )
    print(json.dumps(report.as_json()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
