"""DHCP codec: golden decode of real captures, round trips, malformed input, RFC 3396 / overload.

The golden file tests/data/dhcp-golden.txt is regenerated with UPDATE_TESTDATA=1.
"""

from __future__ import annotations

import os
import struct
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path

import dpkt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pxeforge.boot.firmware import ClientArch
from pxeforge.errors import DhcpError
from pxeforge.protocols import pxe
from pxeforge.protocols.dhcp import (
    FLAG_BROADCAST,
    MAGIC_COOKIE,
    MessageType,
    Option,
    Packet,
    ip_bytes,
    make_reply,
    max_reply_size,
    parse,
    u16_bytes,
    u32_bytes,
)

DATA = Path(__file__).resolve().parent.parent / "data"
GOLDEN = DATA / "dhcp-golden.txt"
CAPTURES = sorted(DATA.glob("*.pcap"))
DHCP_PORTS = (67, 68)


def read_captured() -> list[tuple[str, int, float, str, bytes]]:
    """Every DHCP datagram in tests/data/*.pcap: (file, index, t, "src -> dst", payload)."""
    out: list[tuple[str, int, float, str, bytes]] = []
    for path in CAPTURES:
        with path.open("rb") as fh:
            magic = fh.read(4)
            fh.seek(0)
            reader = dpkt.pcapng.Reader(fh) if magic == b"\n\r\r\n" else dpkt.pcap.Reader(fh)
            t0: float | None = None
            index = 0
            for ts, frame in reader:
                eth = dpkt.ethernet.Ethernet(frame)
                ip = eth.data
                if not isinstance(ip, dpkt.ip.IP) or not isinstance(ip.data, dpkt.udp.UDP):
                    continue
                udp = ip.data
                if udp.sport not in DHCP_PORTS or udp.dport not in DHCP_PORTS:
                    continue
                t0 = ts if t0 is None else t0
                index += 1
                route = f"{IPv4Address(ip.src)}:{udp.sport} -> {IPv4Address(ip.dst)}:{udp.dport}"
                out.append((path.name, index, float(ts - t0), route, bytes(udp.data)))
    return out


CAPTURED = read_captured()


def test_captures_are_present() -> None:
    names = {c[0] for c in CAPTURED}
    assert names == {"bios-ipxe-boot-control.pcap", "uefi-ipxe-boot-control.pcap"}
    assert len(CAPTURED) == 24
    kinds = [parse(c[4]).message_type for c in CAPTURED]
    assert kinds.count(MessageType.DISCOVER) == 7
    assert kinds.count(MessageType.OFFER) == 7
    assert kinds.count(MessageType.REQUEST) == 5
    assert kinds.count(MessageType.ACK) == 5


# -- golden decode ---------------------------------------------------------------------------

_IP_OPTIONS = {Option.SUBNET_MASK, Option.ROUTER, Option.DNS, Option.BROADCAST_ADDRESS}
_IP_OPTIONS |= {Option.REQUESTED_IP, Option.SERVER_ID, Option.NTP_SERVERS}
_U32_OPTIONS = {Option.LEASE_TIME, Option.RENEWAL_TIME, Option.REBINDING_TIME}
_TEXT_OPTIONS = {Option.HOSTNAME, Option.DOMAIN_NAME, Option.VENDOR_CLASS}
_TEXT_OPTIONS |= {Option.TFTP_SERVER_NAME, Option.BOOTFILE_NAME}


def _name(enum: type[Option] | type[pxe.IpxeFeature] | type[pxe.IpxeSetting], code: int) -> str:
    try:
        return enum(code).name
    except ValueError:
        return "?"


def describe_option(code: int, value: bytes) -> str:
    if code == Option.MESSAGE_TYPE:
        return MessageType(value[0]).name
    if code in _IP_OPTIONS:
        return ", ".join(str(IPv4Address(value[i : i + 4])) for i in range(0, len(value), 4))
    if code in _U32_OPTIONS:
        return str(int.from_bytes(value, "big"))
    if code == Option.MAX_MESSAGE_SIZE:
        return str(int.from_bytes(value, "big"))
    if code in _TEXT_OPTIONS:
        return repr(value.decode("latin-1"))
    if code == Option.PARAMETER_REQUEST_LIST:
        return ",".join(str(b) for b in value)
    if code == Option.CLIENT_ARCH:
        arches = [int.from_bytes(value[i : i + 2], "big") for i in range(0, len(value), 2)]
        return ", ".join(f"{a} ({ClientArch(a).name})" for a in arches)
    if code == Option.CLIENT_NDI:
        return ".".join(str(b) for b in value)
    if code == Option.CLIENT_UUID:
        return f"{value.hex()} = {pxe.uuid_from_option97(value)}"
    if code == Option.CLIENT_ID:
        return f"type {value[0]} {value[1:].hex(':')}"
    if code == Option.USER_CLASS:
        return repr(value.decode("latin-1"))
    return value.hex()


def describe(name: str, index: int, t: float, route: str, data: bytes) -> str:
    p = parse(data)
    lines = [
        f"### {name} #{index} t={t:.6f}s {route} ({len(data)} bytes)",
        f"op={p.op} htype={p.htype} hlen={p.hlen} hops={p.hops} xid={p.xid:#010x} "
        f"secs={p.secs} flags={p.flags:#06x} broadcast={p.broadcast}",
        f"ciaddr={p.ciaddr} yiaddr={p.yiaddr} siaddr={p.siaddr} giaddr={p.giaddr}",
        f"chaddr={p.mac} sname={p.sname.rstrip(bytes(1))!r} file={p.file.rstrip(bytes(1))!r}",
        f"message={p.message_type.name if p.message_type else 'BOOTP'} "
        f"boot_file_name={p.boot_file_name!r}",
        "options (wire order):",
    ]
    for code, value in p.options.items():
        lines.append(
            f"  {code:3d} {_name(Option, code):<22} len={len(value):<3} "
            f"{describe_option(code, value)}"
        )
    for code, value in pxe.ipxe_options(p).items():
        kind = pxe.IpxeFeature if 0x10 <= code <= 0x4F else pxe.IpxeSetting
        lines.append(f"      175.{code:#04x} {_name(kind, code):<14} {value.hex()}")
    if p.op == 2:
        return "\n".join(lines) + "\n"
    m = pxe.machine_from_packet(p)
    lines.append(
        f"machine: arch={m.arch} firmware={m.firmware.value} uuid={m.uuid} ipxe={m.ipxe} "
        f"http_client={m.http_client} pxe_client={pxe.is_pxe_client(p)} ndi={pxe.ndi(p)} "
        f"user_classes={pxe.user_classes(p)} ip={m.ip}"
    )
    return "\n".join(lines) + "\n"


def golden_text() -> str:
    header = (
        "# Decode of every DHCP datagram in tests/data/*.pcap, by tests/protocols/test_dhcp.py.\n"
        "# Regenerate: UPDATE_TESTDATA=1 pytest tests/protocols/test_dhcp.py\n\n"
    )
    return header + "\n".join(describe(*c) for c in CAPTURED)


def test_golden_decode() -> None:
    text = golden_text()
    if os.environ.get("UPDATE_TESTDATA") == "1":
        GOLDEN.write_text(text)
    assert GOLDEN.read_text() == text, "decode changed: rerun with UPDATE_TESTDATA=1 and review"


def test_golden_matches_lab_decode() -> None:
    """Spot checks against the lab's own decode (dhcp-fields.txt), independent of the golden."""
    discover = parse(CAPTURED[0][4])
    assert list(discover.options) == [53, 57, 93, 94, 60, 77, 55, 175, 61, 97]
    assert discover.secs == 4 and not discover.broadcast
    assert discover.param_request_list == (
        1, 3, 6, 7, 12, 15, 17, 26, 43, 60, 66, 67, 119,
        128, 129, 130, 131, 132, 133, 134, 135, 175, 203,
    )  # fmt: skip
    ovmf = next(parse(c[4]) for c in CAPTURED if c[0].startswith("uefi"))
    assert ovmf.broadcast
    assert list(ovmf.options) == [53, 57, 55, 97, 94, 93, 60]
    ovmf_request = next(
        parse(c[4])
        for c in CAPTURED
        if c[0].startswith("uefi") and parse(c[4]).message_type is MessageType.REQUEST
    )
    assert ovmf_request.max_message_size == 65280
    assert ovmf_request.requested_ip == IPv4Address("192.168.77.145")
    assert ovmf_request.server_id == IPv4Address("192.168.77.1")


# -- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("capture", CAPTURED, ids=[f"{c[0]}#{c[1]}" for c in CAPTURED])
def test_captured_round_trip(capture: tuple[str, int, float, str, bytes]) -> None:
    data = capture[4]
    p = parse(data)
    again = p.to_bytes()
    assert parse(again) == p
    # none of the captures uses overload or split options: the encoding is byte-exact
    assert again == data


def test_minimum_size_and_end() -> None:
    p = Packet(xid=1, chaddr=b"\x52\x54\x00\x00\x00\x01", options={53: b"\x01"})
    data = p.to_bytes()
    assert len(data) == 300
    assert data[236:240] == struct.pack("!I", MAGIC_COOKIE)
    assert data[240:244] == b"\x35\x01\x01\xff"
    assert data[244:] == bytes(56)


def test_message_type_goes_first() -> None:
    p = Packet(options={54: b"\x0a\x00\x00\x01", 53: b"\x02"})
    assert p.to_bytes()[240:249] == b"\x35\x01\x02\x36\x04\x0a\x00\x00\x01"


def test_short_fields_are_padded() -> None:
    p = Packet(chaddr=b"\x01\x02\x03\x04\x05\x06", file=b"pxelinux.0", sname=b"srv")
    assert len(p.chaddr) == 16 and len(p.file) == 128 and len(p.sname) == 64
    assert p.boot_file_name == "pxelinux.0"
    assert parse(p.to_bytes()) == p
    with pytest.raises(ValueError, match="at most 128"):
        Packet(file=bytes(129))


# -- RFC 3396 long options and RFC 2131 overload ----------------------------------------------


def _raw(options: bytes, *, file: bytes = bytes(128), sname: bytes = bytes(64)) -> bytes:
    header = struct.pack(
        "!BBBBIHHIIII16s64s128sI",
        1, 1, 6, 0, 0x1234, 0, 0, 0, 0, 0, 0,
        b"\x52\x54\x00\x12\x34\x56".ljust(16, b"\0"), sname, file, MAGIC_COOKIE,
    )  # fmt: skip
    return header + options


def test_split_option_is_concatenated() -> None:
    p = parse(_raw(b"\x35\x01\x01\x2b\x02ab\x3c\x01x\x2b\x03cde\xff"))
    assert p.options == {53: b"\x01", 43: b"abcde", 60: b"x"}
    assert list(p.options) == [53, 43, 60]


def test_long_value_is_split_on_encode() -> None:
    value = bytes(range(256)) * 2 + b"tail"  # 516 bytes: chunks of 255, 255, 6
    p = Packet(options={53: b"\x05", 43: value})
    data = p.to_bytes()
    assert data[243:245] == b"\x2b\xff"
    assert data[243 + 257 : 243 + 259] == b"\x2b\xff"
    assert data[243 + 514 : 243 + 516] == b"\x2b\x06"
    assert parse(data) == p


def test_overload_decode_merges_file_then_sname() -> None:
    file = b"\x2b\x02cd\x0c\x04host\xff".ljust(128, b"\0")
    sname = b"\x2b\x01e\x0f\x03dom\xff".ljust(64, b"\0")
    p = parse(_raw(b"\x35\x01\x02\x34\x01\x03\x2b\x02ab\xff", file=file, sname=sname))
    assert p.options == {53: b"\x02", 43: b"abcde", 12: b"host", 15: b"dom"}
    assert list(p.options) == [53, 43, 12, 15]
    assert p.file == bytes(128) and p.sname == bytes(64)
    assert Option.OVERLOAD not in p.options
    assert p.boot_file_name is None


def test_overload_file_only_keeps_sname() -> None:
    file = b"\x43\x0apxelinux.0".ljust(128, b"\0")  # no END in the field: tolerated
    sname = b"server".ljust(64, b"\0")
    p = parse(_raw(b"\x35\x01\x02\x34\x01\x01\xff", file=file, sname=sname))
    assert p.options == {53: b"\x02", 67: b"pxelinux.0"}
    assert p.sname == sname and p.file == bytes(128)
    assert p.boot_file_name == "pxelinux.0"


def _big_packet(**fields: bytes) -> Packet:
    return Packet(
        xid=7,
        chaddr=b"\x52\x54\x00\x00\x00\x07",
        options={
            53: b"\x05",
            54: b"\x0a\x00\x00\x01",
            43: bytes(range(200)),
            60: b"x" * 150,
            77: b"y" * 100,
            12: b"host",
        },
        **fields,
    )


def test_overload_encode_uses_file_then_sname() -> None:
    p = _big_packet()
    data = p.to_bytes(576)
    assert len(data) == 576
    assert data[240:246] == b"\x35\x01\x05\x34\x01\x03"  # 53 first, then 52 = file+sname
    assert data[236 + 4 + 3 + 3] == 54
    assert data[108] != 0 and data[44] != 0
    assert parse(data) == p
    # with room to spare, no overload at all
    roomy = p.to_bytes(1500)
    assert b"\x34\x01" not in roomy[240:246]
    assert parse(roomy) == p


def test_overload_skips_a_used_file_field() -> None:
    p = replace(_big_packet(file=b"pxelinux.0"), options={**_big_packet().options, 77: b"y"})
    data = p.to_bytes(576)
    assert data[240:246] == b"\x35\x01\x05\x34\x01\x02"  # sname only
    assert data[108:118] == b"pxelinux.0"
    assert parse(data) == p


def test_overload_that_cannot_fit_is_an_error() -> None:
    p = replace(_big_packet(), options={**_big_packet().options, 61: b"z" * 255})
    with pytest.raises(DhcpError, match="do not fit"):
        p.to_bytes(576)


def test_framing_options_cannot_be_set() -> None:
    for code in (0, 52, 255):
        with pytest.raises(ValueError, match="framing"):
            Packet(options={code: b"\x01"}).to_bytes()


# -- malformed input -------------------------------------------------------------------------

MALFORMED = [
    ("short", b"\x01" * 239, "too short: 239 bytes"),
    ("cookie", _raw(b"")[:236] + b"\x63\x82\x53\x00", "magic cookie 0x63825300 at offset 236"),
    ("op", b"\x03" + _raw(b"\xff")[1:], "op 3 at offset 0"),
    ("no length", _raw(b"\x35\x01\x01\x0c"), "option 12 at offset 243 in options: length byte"),
    ("past end", _raw(b"\x35\x01\x01\x0c\x05ab"), "option 12 at offset 243 in options: length 5"),
    ("53 length", _raw(b"\x35\x02\x01\x01\xff"), "option 53 at offset 240 has 2 bytes"),
    ("53 twice", _raw(b"\x35\x01\x01\x35\x01\x03\xff"), "option 53 at offset 240 has 2 bytes"),
    ("53 value", _raw(b"\x35\x01\x63\xff"), "option 53 at offset 240: unknown DHCP message type"),
    ("54 length", _raw(b"\x35\x01\x01\x36\x03abc\xff"), "option 54 at offset 243 has 3 bytes"),
    ("57 length", _raw(b"\x39\x01\x01\xff"), "option 57 at offset 240 has 1 bytes"),
    ("overload 0", _raw(b"\x34\x01\x00\xff"), "option 52 (overload) at offset 240: value 00"),
    ("overload 4", _raw(b"\x34\x01\x04\xff"), "option 52 (overload) at offset 240: value 04"),
    ("overload len", _raw(b"\x34\x02\x01\x01\xff"), "option 52 (overload) at offset 240"),
    (
        "file past end",
        _raw(b"\x34\x01\x01\xff", file=bytes(126) + b"\x0c\x05"),
        "option 12 at offset 234 in file: length 5",
    ),
    (
        "nested overload",
        _raw(b"\x34\x01\x02\xff", sname=b"\x34\x01\x01".ljust(64, b"\0")),
        "option 52 (overload) at offset 44 inside",
    ),
]


@pytest.mark.parametrize(
    ("data", "message"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed(data: bytes, message: str) -> None:
    with pytest.raises(DhcpError) as info:
        parse(data)
    assert message in str(info.value)


def test_missing_end_and_padding_are_fine() -> None:
    assert parse(_raw(b"\x35\x01\x01")).message_type is MessageType.DISCOVER
    assert parse(_raw(b"\x00\x00\x35\x01\x01\x00")).options == {53: b"\x01"}
    assert parse(_raw(b"\x35\x01\x01\xff" + b"\x99" * 60)).options == {53: b"\x01"}
    bootp = parse(_raw(b""))
    assert bootp.message_type is None and bootp.options == {}


def test_parse_accepts_memoryview_and_bytearray() -> None:
    data = CAPTURED[0][4]
    assert parse(memoryview(data)) == parse(bytearray(data)) == parse(data)


# -- accessors -------------------------------------------------------------------------------


def test_accessors() -> None:
    p = Packet(
        flags=FLAG_BROADCAST,
        chaddr=b"\xfa\x16\x5e\xec\x78\xe6",
        options={
            53: b"\x03",
            50: ip_bytes(IPv4Address("10.0.0.5")),
            54: ip_bytes(IPv4Address("10.0.0.1")),
            51: u32_bytes(3600),
            57: u16_bytes(1472),
            55: bytes([1, 3, 6, 67]),
            61: b"\x01\xfa\x16\x5e\xec\x78\xe6",
            67: b"boot.ipxe\0\0",
            3: ip_bytes(IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2")),
        },
    )
    assert p.message_type is MessageType.REQUEST
    assert p.mac == "fa:16:5e:ec:78:e6"
    assert p.broadcast
    assert p.requested_ip == IPv4Address("10.0.0.5")
    assert p.server_id == IPv4Address("10.0.0.1")
    assert p.u32(Option.LEASE_TIME) == 3600
    assert p.u16(Option.MAX_MESSAGE_SIZE) == 1472 == p.max_message_size
    assert p.param_request_list == (1, 3, 6, 67)
    assert p.client_id == b"\x01\xfa\x16\x5e\xec\x78\xe6"
    assert p.text(Option.BOOTFILE_NAME) == "boot.ipxe" == p.boot_file_name
    assert p.get(Option.HOSTNAME) is None and p.text(Option.HOSTNAME) is None
    assert p.ip_option(Option.HOSTNAME) is None and p.u32(Option.RENEWAL_TIME) is None
    with pytest.raises(DhcpError, match="option 3 has 8 bytes, expected 4"):
        p.ip_option(Option.ROUTER)
    assert Packet().message_type is None
    assert Packet(options={53: b"\x63"}).message_type is None


def test_mac_needs_ethernet() -> None:
    with pytest.raises(DhcpError, match="not Ethernet"):
        _ = Packet(htype=6).mac
    with pytest.raises(DhcpError, match="not Ethernet"):
        _ = Packet(hlen=8).mac


def test_max_reply_size() -> None:
    assert max_reply_size(Packet()) == 548
    assert max_reply_size(Packet(options={57: u16_bytes(1472)})) == 1444
    assert max_reply_size(Packet(options={57: u16_bytes(65280)})) == 1472
    assert max_reply_size(Packet(options={57: u16_bytes(300)})) == 548
    assert max_reply_size(Packet(options={57: b"\x01"})) == 548


# -- replies ---------------------------------------------------------------------------------

SERVER = IPv4Address("192.168.77.1")


def test_make_reply_copies_the_request() -> None:
    request = parse(CAPTURED[0][4])
    reply = make_reply(
        request,
        MessageType.OFFER,
        server_id=SERVER,
        yiaddr=IPv4Address("192.168.77.145"),
        siaddr=SERVER,
        options={51: u32_bytes(3600), 1: ip_bytes(IPv4Address("255.255.255.0"))},
        file=b"pxelinux.0",
    )
    assert reply.op == 2 and reply.hops == 0 and reply.secs == 0
    assert (reply.xid, reply.flags, reply.chaddr) == (request.xid, request.flags, request.chaddr)
    assert reply.giaddr == request.giaddr and reply.ciaddr == IPv4Address(0)
    assert list(reply.options) == [53, 54, 51, 1, 61]
    assert reply.options[61] == request.options[61]  # RFC 6842
    assert reply.message_type is MessageType.OFFER and reply.server_id == SERVER
    assert reply.boot_file_name == "pxelinux.0"
    wire = parse(reply.to_bytes(max_reply_size(request)))
    assert wire == reply


def test_make_reply_ack_keeps_ciaddr_and_echoes_relay_info() -> None:
    request = Packet(
        xid=99,
        hops=1,
        ciaddr=IPv4Address("10.1.0.20"),
        giaddr=IPv4Address("10.1.0.1"),
        chaddr=b"\x52\x54\x00\x00\x00\x09",
        options={53: b"\x08", 82: b"\x01\x04port\x02\x03abc", 61: b"\x01abcdef"},
    )
    ack = make_reply(
        request, MessageType.ACK, server_id=SERVER, options={82: b"mine"}, echo_client_id=False
    )
    assert ack.ciaddr == IPv4Address("10.1.0.20")
    assert ack.giaddr == IPv4Address("10.1.0.1") and ack.hops == 0
    assert list(ack.options) == [53, 54, 82]
    assert ack.options[82] == b"\x01\x04port\x02\x03abc"
    offer = make_reply(request, MessageType.OFFER, server_id=SERVER)
    assert offer.ciaddr == IPv4Address(0)
    nak = make_reply(request, MessageType.NAK, server_id=SERVER)
    assert nak.broadcast  # through a relay a NAK is broadcast (RFC 2131 §4.1)
    local_nak = make_reply(
        replace(request, giaddr=IPv4Address(0)), MessageType.NAK, server_id=SERVER
    )
    assert not local_nak.broadcast


# -- properties (hypothesis) -----------------------------------------------------------------

_FIXED = {1: 4, 28: 4, 50: 4, 51: 4, 54: 4, 57: 2, 58: 4, 59: 4}
_free_codes = st.integers(1, 254).filter(lambda c: c not in _FIXED and c not in (52, 53))


@st.composite
def packets(draw: st.DrawFn) -> Packet:
    options: dict[int, bytes] = {}
    if draw(st.booleans()):
        options[53] = bytes([draw(st.sampled_from(list(MessageType)))])
    for code in draw(st.lists(st.sampled_from(sorted(_FIXED)), max_size=4, unique=True)):
        options[code] = draw(st.binary(min_size=_FIXED[code], max_size=_FIXED[code]))
    for code in draw(st.lists(_free_codes, max_size=12, unique=True)):
        options[code] = draw(st.binary(max_size=draw(st.sampled_from([8, 40, 300]))))
    ip = st.builds(IPv4Address, st.integers(0, 2**32 - 1))
    return Packet(
        op=draw(st.sampled_from([1, 2])),
        htype=draw(st.integers(0, 255)),
        hlen=draw(st.integers(0, 255)),
        hops=draw(st.integers(0, 255)),
        xid=draw(st.integers(0, 2**32 - 1)),
        secs=draw(st.integers(0, 2**16 - 1)),
        flags=draw(st.integers(0, 2**16 - 1)),
        ciaddr=draw(ip),
        yiaddr=draw(ip),
        siaddr=draw(ip),
        giaddr=draw(ip),
        chaddr=draw(st.binary(min_size=16, max_size=16)),
        sname=draw(st.binary(max_size=64)),
        file=draw(st.binary(max_size=128)),
        options=options,
    )


def _decodes_or_dhcp_error(data: bytes) -> None:
    try:
        p = parse(data)
    except DhcpError:
        return
    # whatever decodes must encode again and decode the same
    assert parse(p.to_bytes(65535)) == p


@given(packets())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_round_trip_generated(p: Packet) -> None:
    assert parse(p.to_bytes(65535)) == p


@given(packets(), st.integers(300, 1500))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_round_trip_with_size_limit(p: Packet, limit: int) -> None:
    try:
        data = p.to_bytes(limit)
    except DhcpError:
        return  # does not fit even with overload
    assert len(data) <= max(limit, 300)
    assert parse(data) == p


@pytest.mark.parametrize("capture", CAPTURED[:6], ids=[f"{c[0]}#{c[1]}" for c in CAPTURED[:6]])
def test_truncation_of_captures_at_every_offset(
    capture: tuple[str, int, float, str, bytes],
) -> None:
    data = capture[4]
    for cut in range(len(data) + 1):
        _decodes_or_dhcp_error(data[:cut])


@given(packets(), st.data())
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
def test_truncation_of_generated_packets(p: Packet, data: st.DataObject) -> None:
    raw = p.to_bytes(65535)
    cut = data.draw(st.integers(0, len(raw)))
    _decodes_or_dhcp_error(raw[:cut])


@given(st.binary(max_size=700))
@settings(max_examples=500)
def test_random_bytes(data: bytes) -> None:
    _decodes_or_dhcp_error(data)


@given(st.binary(min_size=0, max_size=400))
@settings(max_examples=500)
def test_random_options_after_a_valid_header(tail: bytes) -> None:
    _decodes_or_dhcp_error(_raw(tail))


@given(st.sampled_from(CAPTURED), st.lists(st.integers(0, 8 * 1500 - 1), min_size=1, max_size=8))
@settings(max_examples=500)
def test_bit_flips(capture: tuple[str, int, float, str, bytes], bits: list[int]) -> None:
    data = bytearray(capture[4])
    for bit in bits:
        bit %= 8 * len(data)
        data[bit // 8] ^= 1 << (bit % 8)
    _decodes_or_dhcp_error(bytes(data))


@given(st.integers(0, 254), st.integers(0, 255), st.binary(max_size=128), st.binary(max_size=64))
@settings(max_examples=300)
def test_random_overloaded_fields(code: int, overload: int, file: bytes, sname: bytes) -> None:
    raw = _raw(
        b"\x35\x01\x01" + bytes((52, 1, overload & 3 or 3, code, 0)),
        file=file.ljust(128, b"\0"),
        sname=sname.ljust(64, b"\0"),
    )
    _decodes_or_dhcp_error(raw)
