"""Both codecs cut at every offset, on every captured datagram and on generated packets.

Fills what tests/protocols leaves out: there, only the first six captured DHCP datagrams are
cut at every offset, generated DHCP packets are cut at one random offset each, and TFTP is cut
only on hand-written packets (no captured ones, no generated round trip). Here every captured
datagram of both protocols is cut at every offset, generated packets of both codecs round-trip
(hypothesis) and are cut at every offset, and whatever decodes must encode to bytes that
decode to the same value.
"""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pxeforge.errors import DhcpError, TftpError
from pxeforge.protocols.dhcp import HEADER_SIZE, MessageType, Option, Packet, make_reply, parse
from pxeforge.protocols.tftp import (
    AckPacket,
    DataPacket,
    ErrorPacket,
    Mode,
    OackPacket,
    ReadRequest,
    WriteRequest,
    parse_packet,
)
from pxeforge.protocols.tftp import Packet as TftpPacket

from .fuzzlab import Captured, captured_udp, is_dhcp, tftp_datagrams

CAPTURED = captured_udp()
DHCP = [c for c in CAPTURED if is_dhcp(c)]
TFTP = tftp_datagrams()


def test_the_captures_hold_both_protocols() -> None:
    # the truncation tests below are only as good as this corpus
    assert len(DHCP) == 24
    assert {c.dst[1] for c in DHCP} == {67, 68}
    kinds = sorted(type(parse_packet(c.payload)).__name__ for c in TFTP)
    assert kinds == ["ErrorPacket", "OackPacket", "OackPacket", "ReadRequest", "ReadRequest"]


def dhcp_prefixes_behave(data: bytes) -> int:
    """Cut ``data`` at every offset; return how many prefixes decoded."""
    decoded = 0
    for cut in range(len(data) + 1):
        try:
            p = parse(data[:cut])
        except DhcpError:
            continue
        assert cut >= HEADER_SIZE, f"a {cut}-byte prefix decoded without a whole header"
        assert parse(p.to_bytes(65535)) == p, f"cut at {cut} decodes but does not round-trip"
        decoded += 1
    return decoded


def tftp_prefixes_behave(data: bytes) -> int:
    decoded = 0
    for cut in range(len(data) + 1):
        try:
            p = parse_packet(data[:cut])
        except TftpError as exc:
            assert 0 <= exc.code <= 8, exc.code
            continue
        assert cut >= 2, "a datagram without an opcode decoded"
        assert parse_packet(p.to_bytes()) == p, f"cut at {cut} decodes but does not round-trip"
        decoded += 1
    return decoded


@pytest.mark.parametrize("capture", DHCP, ids=[c.id for c in DHCP])
def test_captured_dhcp_cut_at_every_offset(capture: Captured) -> None:
    data = capture.payload
    assert parse(data).to_bytes(65535)  # whole, it is valid
    # every prefix ending at an option boundary decodes (END and padding are optional);
    # a cut inside an option is an error, never an exception of another kind
    assert dhcp_prefixes_behave(data) >= 2


@pytest.mark.parametrize("capture", TFTP, ids=[c.id for c in TFTP])
def test_captured_tftp_cut_at_every_offset(capture: Captured) -> None:
    data = capture.payload
    packet = parse_packet(data)
    assert packet.to_bytes() == data  # captured bytes are exactly what we would send
    tftp_prefixes_behave(data)


def test_captured_tftp_decodes_as_the_firmware_meant() -> None:
    rrq = parse_packet(TFTP[0].payload)
    assert rrq == ReadRequest(
        "snponly.efi", Mode.OCTET, {"tsize": "0", "blksize": "1468", "windowsize": "4"}
    )
    assert parse_packet(TFTP[2].payload) == ErrorPacket(8, "User aborted the transfer")


# ------------------------------------------------------------------ generated DHCP


_ip = st.builds(IPv4Address, st.integers(0, 2**32 - 1))


@st.composite
def dhcp_packets(draw: st.DrawFn) -> Packet:
    options: dict[int, bytes] = {Option.MESSAGE_TYPE: bytes([draw(st.sampled_from(MessageType))])}
    fixed = {1: 4, 28: 4, 50: 4, 51: 4, 54: 4, 57: 2, 58: 4, 59: 4}  # RFC 2132 sizes
    for code in draw(st.lists(st.sampled_from(sorted(fixed)), max_size=3, unique=True)):
        options[code] = draw(st.binary(min_size=fixed[code], max_size=fixed[code]))
    free = st.integers(1, 254).filter(lambda c: c not in fixed and c not in (52, 53))
    for code in draw(st.lists(free, max_size=10, unique=True)):
        options[code] = draw(st.binary(max_size=draw(st.sampled_from([4, 60, 400]))))
    return Packet(
        op=draw(st.sampled_from([1, 2])),
        xid=draw(st.integers(0, 2**32 - 1)),
        flags=draw(st.integers(0, 2**16 - 1)),
        ciaddr=draw(_ip),
        giaddr=draw(_ip),
        chaddr=draw(st.binary(min_size=16, max_size=16)),
        sname=draw(st.binary(max_size=64)),
        file=draw(st.binary(max_size=128)),
        options=options,
    )


@given(dhcp_packets(), st.sampled_from([576, 1500]))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_generated_dhcp_cut_at_every_offset(p: Packet, limit: int) -> None:
    try:
        data = p.to_bytes(limit)  # may overload into file/sname (RFC 2132 §9.3)
    except DhcpError:
        return  # does not fit even with overload
    assert parse(data) == p
    dhcp_prefixes_behave(data)


def test_reply_with_overload_cut_at_every_offset() -> None:
    request = Packet(
        xid=7,
        chaddr=bytes.fromhex("525400123456"),
        options={Option.MESSAGE_TYPE: bytes([MessageType.DISCOVER])},
    )
    reply = make_reply(
        request,
        MessageType.OFFER,
        server_id=IPv4Address("10.0.0.1"),
        yiaddr=IPv4Address("10.0.0.100"),
        options={43: bytes(200), 60: b"PXEClient", 67: b"x" * 200},
    )
    data = reply.to_bytes(576)  # too big for 576 without overload: file and sname are used
    assert data[HEADER_SIZE:].find(bytes((52, 1))) >= 0
    assert parse(data) == reply
    assert dhcp_prefixes_behave(data) >= 1


# ------------------------------------------------------------------ generated TFTP

# Strings travel NUL-terminated: no NUL inside. Option names are case-insensitive (parsed
# lower-case) ASCII; values ASCII. An empty value is left out: see
# test_an_empty_last_option_value_does_not_round_trip.
_text = st.text(st.characters(codec="ascii", exclude_characters="\0"), max_size=40)
_name = st.text(
    st.characters(codec="ascii", exclude_characters="\0", exclude_categories=("Lu",)),
    min_size=1,
    max_size=20,
)
_value = st.text(st.characters(codec="ascii", exclude_characters="\0"), min_size=1, max_size=30)
_options = st.dictionaries(_name, _value, max_size=5)
_filename = st.text(st.characters(exclude_characters="\0", codec="utf-8"), max_size=60)
_block = st.integers(0, 65535)

tftp_packets: st.SearchStrategy[TftpPacket] = st.one_of(
    st.builds(ReadRequest, _filename, st.sampled_from(Mode), _options),
    st.builds(WriteRequest, _filename, st.sampled_from(Mode), _options),
    st.builds(DataPacket, _block, st.binary(max_size=1468)),
    st.builds(AckPacket, _block),
    st.builds(ErrorPacket, _block, _text),
    st.builds(OackPacket, _options),
)


@given(tftp_packets)
@settings(max_examples=400, deadline=None)
def test_generated_tftp_round_trip(packet: TftpPacket) -> None:
    assert parse_packet(packet.to_bytes()) == packet


@given(tftp_packets)
@settings(max_examples=150, deadline=None)
def test_generated_tftp_cut_at_every_offset(packet: TftpPacket) -> None:
    tftp_prefixes_behave(packet.to_bytes())


def test_an_empty_last_option_value_does_not_round_trip() -> None:
    """Found here: ``to_bytes`` encodes an empty option value, ``parse_packet`` takes the
    trailing empty string for padding (some clients pad requests with NULs) and then sees an
    option without a value. The codec is lenient on input on purpose; the asymmetry is
    recorded, not a server bug: no real client sends an empty value last."""
    wire = ReadRequest("f", Mode.OCTET, {"x": ""}).to_bytes()
    assert wire == b"\0\1f\0octet\0x\0\0"
    with pytest.raises(TftpError):
        parse_packet(wire)
