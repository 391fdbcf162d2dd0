"""DHCP/BOOTP message codec: bytes ⇄ `Packet`, no I/O (sans-I/O).

Theory of operation
-------------------
A DHCP message (RFC 2131 §2) is a fixed 236-byte BOOTP header, the magic cookie 99.130.83.99
(RFC 2132 §2) and a list of options. `parse` turns one UDP payload into a frozen `Packet`;
`Packet.to_bytes` turns it back. Nothing here knows about sockets, leases or boot policy.

Options are kept as raw bytes in ``Packet.options`` (``dict[int, bytes]``, in wire order), so
an option this module has never heard of survives a decode/encode round trip untouched. Typed
views (`Packet.ip_option`, `Packet.u32`, `Packet.text` …) decode on access.

Rules applied, and where they come from:

* Options are code/length/value triples; PAD (0) has no length, END (255) stops the walk
  (RFC 2132 §3). A missing END is tolerated: real clients omit it, and trailing PAD is fine.
* An option may appear several times; the values are concatenated in order — options field,
  then ``file``, then ``sname`` (RFC 3396 §7). The encoder splits values longer than 255 bytes
  the same way (RFC 3396 §5).
* Option 52 (overload, RFC 2132 §9.3) says ``file`` (1), ``sname`` (2) or both (3) carry more
  options. The decoder merges them and returns those fields zeroed; option 52 itself is wire
  framing and is not kept in ``options``. The encoder overloads ``file`` then ``sname`` (when
  they are empty) if the options do not fit the size the client accepts (option 57).
* Options with a fixed length (53, 50, 54, 51 …) are length-checked while decoding, so a
  typed accessor on a parsed packet never fails.
* Replies are at least 300 bytes long: the BOOTP minimum (RFC 1542 §3.1.1, RFC 2131 §2).

Every malformed input raises `DhcpError` naming the byte offset — never an IndexError or
struct.error: a server logs the message, counts a drop and carries on.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from ipaddress import IPv4Address
from types import MappingProxyType

from pxeforge.boot.machine import normalize_mac
from pxeforge.errors import DhcpError

__all__ = [
    "BOOTREPLY",
    "BOOTREQUEST",
    "FLAG_BROADCAST",
    "HEADER_SIZE",
    "MAGIC_COOKIE",
    "MIN_PACKET_SIZE",
    "MessageType",
    "Option",
    "Packet",
    "ip_bytes",
    "make_reply",
    "max_reply_size",
    "parse",
    "u16_bytes",
    "u32_bytes",
]


class MessageType(IntEnum):
    """Option 53 values (RFC 2132 §9.6; 9–18 from RFC 3203, 4388, 6926, 7724)."""

    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8
    FORCERENEW = 9
    LEASEQUERY = 10
    LEASEUNASSIGNED = 11
    LEASEUNKNOWN = 12
    LEASEACTIVE = 13
    BULKLEASEQUERY = 14
    LEASEQUERYDONE = 15
    ACTIVELEASEQUERY = 16
    LEASEQUERYSTATUS = 17
    TLS = 18


class Option(IntEnum):
    """DHCP option codes we name (IANA "BOOTP Vendor Extensions and DHCP Options").

    Codes not listed here are still decoded and kept as plain ints.
    """

    PAD = 0
    SUBNET_MASK = 1
    TIME_OFFSET = 2
    ROUTER = 3
    TIME_SERVER = 4
    NAME_SERVER = 5
    DNS = 6
    LOG_SERVER = 7
    HOSTNAME = 12
    BOOT_FILE_SIZE = 13
    DOMAIN_NAME = 15
    ROOT_PATH = 17
    INTERFACE_MTU = 26
    BROADCAST_ADDRESS = 28
    STATIC_ROUTE = 33
    NTP_SERVERS = 42
    VENDOR_SPECIFIC = 43
    REQUESTED_IP = 50
    LEASE_TIME = 51
    OVERLOAD = 52
    MESSAGE_TYPE = 53
    SERVER_ID = 54
    PARAMETER_REQUEST_LIST = 55
    MESSAGE = 56
    MAX_MESSAGE_SIZE = 57
    RENEWAL_TIME = 58
    REBINDING_TIME = 59
    VENDOR_CLASS = 60
    CLIENT_ID = 61
    TFTP_SERVER_NAME = 66
    BOOTFILE_NAME = 67
    USER_CLASS = 77
    CLIENT_FQDN = 81
    RELAY_AGENT_INFO = 82
    CLIENT_ARCH = 93  # RFC 4578 §2.1
    CLIENT_NDI = 94  # RFC 4578 §2.2
    CLIENT_UUID = 97  # RFC 4578 §2.3
    DOMAIN_SEARCH = 119  # RFC 3397
    CLASSLESS_STATIC_ROUTE = 121  # RFC 3442
    TFTP_SERVER_ADDRESS = 150  # RFC 5859
    IPXE_ENCAP = 175  # iPXE's encapsulated options (include/ipxe/dhcp.h)
    PXELINUX_MAGIC = 208  # RFC 5071
    PXELINUX_CONFIG_FILE = 209
    PXELINUX_PATH_PREFIX = 210
    PXELINUX_REBOOT_TIME = 211
    END = 255


BOOTREQUEST = 1
BOOTREPLY = 2
FLAG_BROADCAST = 0x8000  # RFC 2131 §2, figure 2
MAGIC_COOKIE = 0x63825363  # RFC 2132 §2
HEADER_SIZE = 240  # BOOTP header (236) + magic cookie
MIN_PACKET_SIZE = 300  # BOOTP minimum message size (RFC 1542 §3.1.1)

# op htype hlen hops xid secs flags ciaddr yiaddr siaddr giaddr chaddr sname file cookie
_HEADER = struct.Struct("!BBBBIHHIIII16s64s128sI")
_HEADER_OUT = struct.Struct("!BBBBIHH4s4s4s4s16s64s128sI")
assert _HEADER.size == HEADER_SIZE
_SNAME_OFFSET = 44
_FILE_OFFSET = 108
_CHADDR_LEN, _SNAME_LEN, _FILE_LEN = 16, 64, 128
_ZERO_IP = IPv4Address(0)
_EMPTY_SNAME = bytes(_SNAME_LEN)
_EMPTY_FILE = bytes(_FILE_LEN)
_IP_UDP_HEADERS = 28  # IPv4 (no options) + UDP: option 57 counts them, our payload does not

# Options whose length RFC 2132 fixes; checked while decoding so accessors cannot fail.
_FIXED_LENGTH: Mapping[int, int] = MappingProxyType(
    {
        Option.SUBNET_MASK: 4,
        Option.BROADCAST_ADDRESS: 4,
        Option.REQUESTED_IP: 4,
        Option.LEASE_TIME: 4,
        Option.OVERLOAD: 1,
        Option.MESSAGE_TYPE: 1,
        Option.SERVER_ID: 4,
        Option.MAX_MESSAGE_SIZE: 2,
        Option.RENEWAL_TIME: 4,
        Option.REBINDING_TIME: 4,
    }
)
_FIXED_CODES = frozenset(int(code) for code in _FIXED_LENGTH)
_MESSAGE_TYPES = frozenset(int(t) for t in MessageType)
# plain ints for the hot paths (enum attribute lookups cost more than the work around them)
_OPT_MESSAGE_TYPE = int(Option.MESSAGE_TYPE)
_OPT_OVERLOAD = int(Option.OVERLOAD)
_FRAMING = frozenset((int(Option.PAD), int(Option.END), _OPT_OVERLOAD))
_OVERLOAD_FILE, _OVERLOAD_SNAME = 1, 2


def ip_bytes(*ips: IPv4Address) -> bytes:
    """Encode one or more IPv4 addresses as an option value (4 bytes each)."""
    return b"".join(ip.packed for ip in ips)


def u32_bytes(value: int) -> bytes:
    """Encode an unsigned 32-bit option value (lease times…), network order."""
    return value.to_bytes(4, "big")


def u16_bytes(value: int) -> bytes:
    """Encode an unsigned 16-bit option value (option 57…), network order."""
    return value.to_bytes(2, "big")


def _pad_field(name: str, value: bytes, size: int) -> bytes:
    if len(value) == size:
        return value
    if len(value) > size:
        raise ValueError(f"Packet.{name} holds at most {size} bytes, got {len(value)}")
    return value + bytes(size - len(value))


@dataclass(frozen=True, slots=True)
class Packet:
    """One DHCP/BOOTP message. Build with keywords; ``parse`` and ``to_bytes`` convert.

    ``chaddr``, ``sname`` and ``file`` are stored at their full wire size (16, 64 and 128
    bytes): shorter values given to the constructor are NUL-padded, so ``file=b"pxelinux.0"``
    works and equality after a round trip holds. ``options`` maps option code → raw value in
    insertion (wire) order; do not mutate it after construction.
    """

    op: int = BOOTREQUEST
    htype: int = 1
    hlen: int = 6
    hops: int = 0
    xid: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: IPv4Address = _ZERO_IP
    yiaddr: IPv4Address = _ZERO_IP
    siaddr: IPv4Address = _ZERO_IP
    giaddr: IPv4Address = _ZERO_IP
    chaddr: bytes = bytes(_CHADDR_LEN)
    sname: bytes = _EMPTY_SNAME
    file: bytes = _EMPTY_FILE
    options: dict[int, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.chaddr) != _CHADDR_LEN:
            object.__setattr__(self, "chaddr", _pad_field("chaddr", self.chaddr, _CHADDR_LEN))
        if len(self.sname) != _SNAME_LEN:
            object.__setattr__(self, "sname", _pad_field("sname", self.sname, _SNAME_LEN))
        if len(self.file) != _FILE_LEN:
            object.__setattr__(self, "file", _pad_field("file", self.file, _FILE_LEN))

    # -- typed views -------------------------------------------------------------------------

    @property
    def message_type(self) -> MessageType | None:
        """Option 53, or None for plain BOOTP (or a value we do not know, on built packets)."""
        value = self.options.get(Option.MESSAGE_TYPE)
        if value is None or len(value) != 1 or value[0] not in _MESSAGE_TYPES:
            return None
        return MessageType(value[0])

    @property
    def mac(self) -> str:
        """The client's Ethernet address, ``aa:bb:cc:dd:ee:ff``.

        Raises DhcpError for anything but Ethernet (htype 1, hlen 6): we key clients by MAC.
        """
        if self.htype != 1 or self.hlen != 6:
            raise DhcpError(
                f"client hardware type {self.htype} / length {self.hlen} is not Ethernet (1/6)"
            )
        return normalize_mac(self.chaddr[:6])

    @property
    def broadcast(self) -> bool:
        """The client asked for broadcast replies (flags bit 0x8000, RFC 2131 §4.1)."""
        return bool(self.flags & FLAG_BROADCAST)

    def get(self, code: int) -> bytes | None:
        """Raw value of an option, or None."""
        return self.options.get(code)

    def _fixed(self, code: int, size: int) -> bytes | None:
        value = self.options.get(code)
        if value is not None and len(value) != size:
            raise DhcpError(f"option {code} has {len(value)} bytes, expected {size}")
        return value

    def ip_option(self, code: int) -> IPv4Address | None:
        """An option holding one IPv4 address (50, 54 …). DhcpError if not 4 bytes long."""
        value = self._fixed(code, 4)
        return None if value is None else IPv4Address(value)

    def u16(self, code: int) -> int | None:
        """An unsigned 16-bit option (57 …). DhcpError if not 2 bytes long."""
        value = self._fixed(code, 2)
        return None if value is None else int.from_bytes(value, "big")

    def u32(self, code: int) -> int | None:
        """An unsigned 32-bit option (51, 58, 59 …). DhcpError if not 4 bytes long."""
        value = self._fixed(code, 4)
        return None if value is None else int.from_bytes(value, "big")

    def text(self, code: int) -> str | None:
        """A text option (60, 66, 67 …) decoded as Latin-1, trailing NULs removed."""
        value = self.options.get(code)
        return None if value is None else value.decode("latin-1").rstrip("\0")

    @property
    def param_request_list(self) -> tuple[int, ...]:
        """Option 55: the option codes the client asks for, in its order."""
        return tuple(self.options.get(Option.PARAMETER_REQUEST_LIST, b""))

    @property
    def requested_ip(self) -> IPv4Address | None:
        """Option 50."""
        return self.ip_option(Option.REQUESTED_IP)

    @property
    def server_id(self) -> IPv4Address | None:
        """Option 54."""
        return self.ip_option(Option.SERVER_ID)

    @property
    def client_id(self) -> bytes | None:
        """Option 61, raw (type byte first)."""
        return self.options.get(Option.CLIENT_ID)

    @property
    def max_message_size(self) -> int | None:
        """Option 57: the largest DHCP message (IP datagram) the client accepts."""
        return self.u16(Option.MAX_MESSAGE_SIZE)

    @property
    def boot_file_name(self) -> str | None:
        """Option 67, else the BOOTP ``file`` field up to its first NUL; None when both empty."""
        name = self.text(Option.BOOTFILE_NAME)
        if name:
            return name
        raw = self.file.split(b"\0", 1)[0]
        return raw.decode("latin-1") if raw else None

    # -- encoding ----------------------------------------------------------------------------

    def to_bytes(self, max_size: int = 1500) -> bytes:
        """Encode as a UDP payload of at most ``max_size`` bytes (at least 300, BOOTP).

        Option 53 goes first, the rest in insertion order; values over 255 bytes are split
        (RFC 3396). Options that do not fit overflow into ``file`` and then ``sname`` when
        those are empty, announced by option 52. DhcpError if they still do not fit.
        """
        limit = max(max_size, MIN_PACKET_SIZE)
        items = _ordered_items(self.options)
        body = b"".join(_encode_option(code, value) for code, value in items)
        sname, file = self.sname, self.file
        if HEADER_SIZE + len(body) + 1 <= limit:
            options = body + b"\xff"
        else:
            options, file, sname = _overload(items, limit - HEADER_SIZE, file, sname)
        header = _HEADER_OUT.pack(
            self.op,
            self.htype,
            self.hlen,
            self.hops,
            self.xid,
            self.secs,
            self.flags,
            self.ciaddr.packed,
            self.yiaddr.packed,
            self.siaddr.packed,
            self.giaddr.packed,
            self.chaddr,
            sname,
            file,
            MAGIC_COOKIE,
        )
        out = header + options
        if len(out) < MIN_PACKET_SIZE:
            out += bytes(MIN_PACKET_SIZE - len(out))
        return out


def _ordered_items(options: Mapping[int, bytes]) -> list[tuple[int, bytes]]:
    """Options in encoding order: 53 first, then insertion order. Refuses framing codes."""
    items: list[tuple[int, bytes]] = []
    first: list[tuple[int, bytes]] = []
    for code, value in options.items():
        if code == _OPT_MESSAGE_TYPE:
            first.append((code, value))
        elif code in _FRAMING or not 0 < code < 255:
            raise ValueError(f"option {code} cannot be set by hand: it is wire framing")
        else:
            items.append((code, value))
    return first + items


def _encode_option(code: int, value: bytes) -> bytes:
    if len(value) <= 255:
        return bytes((code, len(value))) + value
    return b"".join(
        bytes((code, len(value[i : i + 255]))) + value[i : i + 255]
        for i in range(0, len(value), 255)
    )


def _overload(
    items: list[tuple[int, bytes]], space: int, file: bytes, sname: bytes
) -> tuple[bytes, bytes, bytes]:
    """Spread options over the options field, then ``file``, then ``sname`` (RFC 2131 §4.1).

    Filling is strictly sequential so the decoded option order is the encoded one. An option
    that does not fit the current area whole goes whole to the next area if it fits there,
    else it is split across both (RFC 3396 §7 concatenation makes that legal).
    """
    # Each area: (capacity without its END byte, overload bit). The options field keeps room
    # for option 52 (3 bytes).
    areas: list[tuple[int, int]] = [(space - 1 - 3, 0)]
    if file == _EMPTY_FILE:
        areas.append((_FILE_LEN - 1, _OVERLOAD_FILE))
    if sname == _EMPTY_SNAME:
        areas.append((_SNAME_LEN - 1, _OVERLOAD_SNAME))
    parts: list[list[bytes]] = [[] for _ in areas]
    used = [0] * len(areas)
    total = sum(len(_encode_option(c, v)) for c, v in items)
    ai = 0
    for code, value in items:
        pos = 0
        while True:
            cap = areas[ai][0]
            room = cap - used[ai]
            chunk = min(len(value) - pos, 255)
            if chunk + 2 <= room:
                parts[ai].append(bytes((code, chunk)) + value[pos : pos + chunk])
                used[ai] += chunk + 2
                pos += chunk
                if pos >= len(value):
                    break
                continue
            next_cap = areas[ai + 1][0] if ai + 1 < len(areas) else 0
            if room >= 3 and chunk + 2 > next_cap:
                take = room - 2
                parts[ai].append(bytes((code, take)) + value[pos : pos + take])
                used[ai] += take + 2
                pos += take
            ai += 1
            if ai == len(areas):
                raise DhcpError(
                    f"reply options ({total} bytes) do not fit a {space + HEADER_SIZE}-byte "
                    "message even with option overload (the client's option 57 is too small)"
                )
    overload = 0
    for (_, bit), chunks in zip(areas, parts, strict=True):
        if chunks:
            overload |= bit
    main = parts[0]
    if overload:
        # option 52 goes right after option 53, which stays first
        at = 1 if items and items[0][0] == Option.MESSAGE_TYPE else 0
        main.insert(at, bytes((Option.OVERLOAD, 1, overload)))
    options_field = b"".join(main) + b"\xff"
    for (_, bit), chunks in zip(areas[1:], parts[1:], strict=True):
        if not chunks:
            continue
        filled = b"".join(chunks) + b"\xff"
        if bit == _OVERLOAD_FILE:
            file = filled + bytes(_FILE_LEN - len(filled))
        else:
            sname = filled + bytes(_SNAME_LEN - len(filled))
    return options_field, file, sname


# -- decoding --------------------------------------------------------------------------------


def _walk(
    data: bytes,
    start: int,
    end: int,
    options: dict[int, bytes],
    seen_at: dict[int, int],
    where: str,
) -> None:
    """Decode the option TLVs in ``data[start:end]`` into ``options`` (RFC 3396 concatenation).

    ``seen_at`` records the offset of the first occurrence of each fixed-length option.
    """
    i = start
    while i < end:
        code = data[i]
        if code == 0:  # PAD
            i += 1
            continue
        if code == 255:  # END
            return
        if i + 1 >= end:
            raise DhcpError(f"option {code} at offset {i} in {where}: length byte missing")
        length = data[i + 1]
        stop = i + 2 + length
        if stop > end:
            raise DhcpError(
                f"option {code} at offset {i} in {where}: length {length} runs past the end "
                f"of the field ({end - i - 2} bytes left)"
            )
        value = data[i + 2 : stop]
        old = options.get(code)
        if old is None:
            options[code] = value
            if code in _FIXED_CODES:
                seen_at[code] = i
        else:
            options[code] = old + value
        i = stop


def parse(data: bytes | bytearray | memoryview) -> Packet:
    """Decode one DHCP/BOOTP UDP payload. Raises DhcpError (with the byte offset) if malformed."""
    buf = bytes(data)
    n = len(buf)
    if n < HEADER_SIZE:
        raise DhcpError(f"DHCP message too short: {n} bytes, the header needs {HEADER_SIZE}")
    (
        op,
        htype,
        hlen,
        hops,
        xid,
        secs,
        flags,
        ciaddr,
        yiaddr,
        siaddr,
        giaddr,
        chaddr,
        sname,
        file,
        cookie,
    ) = _HEADER.unpack_from(buf, 0)
    if cookie != MAGIC_COOKIE:
        raise DhcpError(f"bad magic cookie {cookie:#010x} at offset 236 (not a DHCP message)")
    if op not in (BOOTREQUEST, BOOTREPLY):
        raise DhcpError(f"op {op} at offset 0 is neither BOOTREQUEST (1) nor BOOTREPLY (2)")
    options: dict[int, bytes] = {}
    seen_at: dict[int, int] = {}
    _walk(buf, HEADER_SIZE, n, options, seen_at, "options")
    overload_raw = options.pop(_OPT_OVERLOAD, None)
    if overload_raw is not None:
        at = seen_at.pop(_OPT_OVERLOAD)
        if len(overload_raw) != 1 or not 1 <= overload_raw[0] <= 3:
            raise DhcpError(
                f"option 52 (overload) at offset {at}: value {overload_raw.hex()} is not 1, 2 or 3"
            )
        overload = overload_raw[0]
        extra: dict[int, bytes] = {}
        extra_seen: dict[int, int] = {}
        # RFC 3396 §7: concatenate options field, then file, then sname
        if overload & _OVERLOAD_FILE:
            _walk(buf, _FILE_OFFSET, _FILE_OFFSET + _FILE_LEN, extra, extra_seen, "file")
            file = _EMPTY_FILE
        if overload & _OVERLOAD_SNAME:
            _walk(buf, _SNAME_OFFSET, _SNAME_OFFSET + _SNAME_LEN, extra, extra_seen, "sname")
            sname = _EMPTY_SNAME
        if Option.OVERLOAD in extra:
            raise DhcpError(
                f"option 52 (overload) at offset {extra_seen[Option.OVERLOAD]} inside an "
                "overloaded field"
            )
        for code, value in extra.items():
            old = options.get(code)
            if old is None:
                options[code] = value
                if code in extra_seen:
                    seen_at[code] = extra_seen[code]
            else:
                options[code] = old + value
    for code, at in seen_at.items():
        value = options[code]
        want = _FIXED_LENGTH[code]
        if len(value) != want:
            raise DhcpError(
                f"option {code} at offset {at} has {len(value)} bytes, RFC 2132 fixes {want}"
            )
    mtype = options.get(_OPT_MESSAGE_TYPE)
    if mtype is not None and mtype[0] not in _MESSAGE_TYPES:
        at = seen_at[_OPT_MESSAGE_TYPE]
        raise DhcpError(f"option 53 at offset {at}: unknown DHCP message type {mtype[0]}")
    return Packet(
        op=op,
        htype=htype,
        hlen=hlen,
        hops=hops,
        xid=xid,
        secs=secs,
        flags=flags,
        ciaddr=IPv4Address(ciaddr) if ciaddr else _ZERO_IP,
        yiaddr=IPv4Address(yiaddr) if yiaddr else _ZERO_IP,
        siaddr=IPv4Address(siaddr) if siaddr else _ZERO_IP,
        giaddr=IPv4Address(giaddr) if giaddr else _ZERO_IP,
        chaddr=chaddr,
        sname=sname,
        file=file,
        options=options,
    )


# -- replies ---------------------------------------------------------------------------------


def make_reply(
    request: Packet,
    message_type: MessageType,
    *,
    server_id: IPv4Address,
    yiaddr: IPv4Address = _ZERO_IP,
    siaddr: IPv4Address = _ZERO_IP,
    options: Mapping[int, bytes] = MappingProxyType({}),
    file: bytes = b"",
    sname: bytes = b"",
    echo_client_id: bool = True,
) -> Packet:
    """A server reply to ``request`` (RFC 2131 §4.3.1 table 3).

    op=2; xid, flags, giaddr, htype, hlen and chaddr come from the request; hops and secs are
    0; ciaddr is copied into an ACK (answer to INFORM, or to a renewing/rebinding REQUEST,
    which is when the client filled ciaddr). Options: 53, 54, then ``options`` in order, then
    the client identifier 61 echoed (RFC 6842; ``echo_client_id=False`` to skip) and the
    relay agent information 82 echoed unchanged, last (RFC 3046 §2.2). A NAK through a
    relay gets the broadcast flag (RFC 2131 §4.1).
    """
    out: dict[int, bytes] = {
        Option.MESSAGE_TYPE: bytes((message_type,)),
        Option.SERVER_ID: server_id.packed,
    }
    for code, value in options.items():
        if code not in out:
            out[code] = value
    client_id = request.options.get(Option.CLIENT_ID)
    if echo_client_id and client_id is not None and Option.CLIENT_ID not in out:
        out[Option.CLIENT_ID] = client_id
    relay = request.options.get(Option.RELAY_AGENT_INFO)
    if relay is not None:
        out.pop(Option.RELAY_AGENT_INFO, None)
        out[Option.RELAY_AGENT_INFO] = relay
    ciaddr = request.ciaddr if message_type == MessageType.ACK else _ZERO_IP
    flags = request.flags
    if message_type == MessageType.NAK and int(request.giaddr):
        flags |= FLAG_BROADCAST  # RFC 2131 §4.1: the relay must broadcast a NAK
    return Packet(
        op=BOOTREPLY,
        htype=request.htype,
        hlen=request.hlen,
        hops=0,
        xid=request.xid,
        secs=0,
        flags=flags,
        ciaddr=ciaddr,
        yiaddr=yiaddr,
        siaddr=siaddr,
        giaddr=request.giaddr,
        chaddr=request.chaddr,
        sname=sname,
        file=file,
        options=out,
    )


def max_reply_size(request: Packet, mtu: int = 1500) -> int:
    """The UDP payload size a reply to ``request`` may use.

    Option 57 counts the whole IP datagram (RFC 2132 §9.10; at least 576); the result is
    capped by ``mtu`` and has the IP and UDP headers (28 bytes) taken off.
    """
    try:
        asked = request.max_message_size
    except DhcpError:
        asked = None
    size = 576 if asked is None else max(asked, 576)
    return min(size, mtu) - _IP_UDP_HEADERS
