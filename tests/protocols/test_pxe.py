"""PXE/iPXE option meaning: the seed's DISCOVER rebuilt byte by byte, UUIDs, 77, 175, 43."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pxeforge.boot.machine import Firmware
from pxeforge.errors import DhcpError
from pxeforge.protocols.dhcp import MAGIC_COOKIE, MessageType, Option, Packet, parse
from pxeforge.protocols.pxe import (
    DiscoveryControl,
    IpxeFeature,
    IpxeSetting,
    PxeVendorOption,
    client_arch,
    client_arches,
    encode_ipxe_encap,
    encode_pxe_vendor_options,
    encode_user_classes,
    ipxe_features,
    ipxe_options,
    is_http_client,
    is_ipxe,
    is_pxe_client,
    machine_from_packet,
    ndi,
    parse_ipxe_encap,
    parse_pxe_vendor_options,
    user_classes,
    uuid_from_option97,
    vendor_class,
)


def dotted(text: str) -> bytes:
    """tcpdump's ``a.b.c`` decimal byte notation."""
    return bytes(int(part) for part in text.split("."))


def tlv(code: int, value: bytes) -> bytes:
    return bytes((code, len(value))) + value


# /work/shared/seeds/000_*.txt: tcpdump -vv of an iPXE ROM's DISCOVER (an OpenStack Ironic
# node), "length 396". Rebuilt here field by field, in the order tcpdump printed them.
SEED_MAC = bytes.fromhex("fa165eec78e6")
SEED_175 = dotted(
    "177.5.1.26.244.16.0.235.3.1.0.0.23.1.1.34.1.1.19.1.1.17.1.1.39.1.1.25.1.1.16.1.2"
    ".33.1.1.21.1.1.24.1.1.18.1.1"
)
SEED_97 = dotted("0.201.216.180.247.232.204.140.65.139.82.138.111.18.78.134.85")
SEED_55 = bytes([1, 3, 6, 7, 12, 15, 17, 43, 60, 66, 67, 119, *range(128, 136), 175, 203])
SEED_DISCOVER = (
    struct.pack(
        "!BBBBIHHIIII16s64s128sI",
        1,
        1,
        6,
        0,
        0x96CF6856,
        4,
        0x0000,
        0,
        0,
        0,
        0,
        SEED_MAC.ljust(16, b"\0"),
        bytes(64),
        bytes(128),
        MAGIC_COOKIE,
    )  # fmt: skip
    + tlv(53, b"\x01")
    + tlv(57, (1472).to_bytes(2, "big"))
    + tlv(93, b"\x00\x00")
    + tlv(94, dotted("1.2.1"))
    + tlv(60, b"PXEClient:Arch:00000:UNDI:002001")
    + tlv(77, b"iPXE")
    + tlv(55, SEED_55)
    + tlv(175, SEED_175)
    + tlv(61, b"\x01" + SEED_MAC)
    + tlv(97, SEED_97)
    + b"\xff"
)


def test_seed_discover_decodes() -> None:
    assert len(SEED_DISCOVER) == 396  # tcpdump: "length 396"
    p = parse(SEED_DISCOVER)
    assert p.message_type is MessageType.DISCOVER
    assert p.mac == "fa:16:5e:ec:78:e6"
    assert (p.xid, p.secs, p.broadcast) == (0x96CF6856, 4, False)
    assert list(p.options) == [53, 57, 93, 94, 60, 77, 55, 175, 61, 97]
    assert p.max_message_size == 1472
    assert len(p.param_request_list) == 22
    assert client_arch(p) == 0 and client_arches(p) == (0,)
    assert ndi(p) == (1, 2, 1)
    assert vendor_class(p) == "PXEClient:Arch:00000:UNDI:002001"
    assert is_pxe_client(p) and not is_http_client(p)
    assert user_classes(p) == ("iPXE",) and is_ipxe(p)
    assert p.client_id == b"\x01" + SEED_MAC
    assert len(p.options[Option.IPXE_ENCAP]) == 45 and len(p.options[Option.CLIENT_UUID]) == 17
    sub = ipxe_options(p)
    assert sub[IpxeSetting.BUS_ID] == bytes.fromhex("011af41000")  # PCI 1af4:1000 virtio-net
    assert sub[IpxeSetting.VERSION] == b"\x01\x00\x00"  # iPXE 1.0.0
    assert sub[IpxeFeature.PXE_EXT] == b"\x02"
    assert ipxe_features(p) == {
        IpxeFeature.DNS, IpxeFeature.ELF, IpxeFeature.HTTP, IpxeFeature.ISCSI,
        IpxeFeature.MENU, IpxeFeature.MULTIBOOT, IpxeFeature.PXE_EXT, IpxeFeature.PXE,
        IpxeFeature.TFTP, IpxeFeature.BZIMAGE, IpxeFeature.AOE,
    }  # fmt: skip
    # 97: type 0, then c9 d8 b4 f7 | e8 cc | 8c 41 | 8b 52 | 8a 6f 12 4e 86 55 with the first
    # three fields little-endian
    assert uuid_from_option97(p.options[Option.CLIENT_UUID]) == (
        "f7b4d8c9-cce8-418c-8b52-8a6f124e8655"
    )
    m = machine_from_packet(p)
    assert m.mac == "fa:16:5e:ec:78:e6"
    assert (m.arch, m.firmware, m.ipxe, m.http_client, m.ip) == (
        0,
        Firmware.BIOS,
        True,
        False,
        None,
    )
    assert m.uuid == "f7b4d8c9-cce8-418c-8b52-8a6f124e8655"
    assert p.to_bytes() == SEED_DISCOVER


# -- option 97 -------------------------------------------------------------------------------


def test_uuid_matches_the_lab_capture() -> None:
    # dhcp-fields.txt: "97 uuid=5a1ab000-0000-4000-8000-525400770010" (QEMU -uuid)
    wire = bytes.fromhex("0000b01a5a000000408000525400770010")
    assert uuid_from_option97(wire) == "5a1ab000-0000-4000-8000-525400770010"


def test_uuid_forms() -> None:
    guid = bytes(range(1, 17))
    assert uuid_from_option97(b"\x00" + guid) == "04030201-0605-0807-090a-0b0c0d0e0f10"
    assert uuid_from_option97(guid) == "04030201-0605-0807-090a-0b0c0d0e0f10"  # no type byte
    assert uuid_from_option97(b"\x01" + guid) is None  # unknown type
    assert uuid_from_option97(b"\x00" + guid[:14]) is None
    assert uuid_from_option97(b"") is None
    assert uuid_from_option97(b"\x00" + bytes(16)) is None  # SMBIOS "not set"
    assert uuid_from_option97(b"\x00" + b"\xff" * 16) is None  # SMBIOS "not present"


# -- 93, 94, 60, 77 --------------------------------------------------------------------------


def test_client_arch_forms() -> None:
    assert client_arch(Packet()) is None and client_arches(Packet()) == ()
    assert client_arch(Packet(options={93: b"\x00\x07"})) == 7
    listed = Packet(options={93: b"\x00\x10\x00\x07"})
    assert client_arch(listed) == 16 and client_arches(listed) == (16, 7)
    assert client_arch(Packet(options={93: b"\x07"})) is None
    with pytest.raises(DhcpError, match="odd length 3"):
        client_arches(Packet(options={93: b"\x00\x07\x00"}))
    assert client_arch(Packet(options={93: b"\x00\x07\x00"})) == 7


def test_ndi_forms() -> None:
    assert ndi(Packet(options={94: b"\x01\x03\x0a"})) == (1, 3, 10)
    assert ndi(Packet(options={94: b"\x01\x03"})) is None
    assert ndi(Packet()) is None


def test_vendor_class_kinds() -> None:
    http = Packet(options={60: b"HTTPClient:Arch:00016:UNDI:003001"})
    assert is_http_client(http) and not is_pxe_client(http)
    plain = Packet(options={60: b"pxelab-guest"})
    assert not is_http_client(plain) and not is_pxe_client(plain)
    assert vendor_class(plain) == "pxelab-guest" and vendor_class(Packet()) is None


@pytest.mark.parametrize(
    ("value", "classes", "ipxe"),
    [
        (b"iPXE", ("iPXE",), True),
        (b"\x04iPXE", ("iPXE",), True),  # RFC 3004
        (b"\x03foo\x04iPXE", ("foo", "iPXE"), True),
        (b"\x0aTinkerbell", ("Tinkerbell",), False),
        (b"iPXE-custom", ("iPXE-custom",), False),
        (b"\x05iPXE", ("\x05iPXE",), False),  # not RFC 3004, not printable: one string
        (b"", (), False),
    ],
)
def test_user_classes(value: bytes, classes: tuple[str, ...], ipxe: bool) -> None:
    p = Packet(options={77: value})
    assert user_classes(p) == classes
    assert is_ipxe(p) is ipxe


def test_option_175_alone_means_ipxe() -> None:
    assert is_ipxe(Packet(options={175: b"\xeb\x03\x01\x00\x00"}))
    assert not is_ipxe(Packet())


def test_encode_user_classes() -> None:
    assert encode_user_classes("iPXE", "x") == b"\x04iPXE\x01x"
    assert user_classes(Packet(options={77: encode_user_classes("a b", "iPXE")})) == (
        "a b",
        "iPXE",
    )
    with pytest.raises(ValueError):
        encode_user_classes("")


# -- option 175 ------------------------------------------------------------------------------


def test_ipxe_encap_round_trip() -> None:
    sub = parse_ipxe_encap(SEED_175)
    assert list(sub)[:2] == [IpxeSetting.BUS_ID, IpxeSetting.VERSION]
    assert len(sub) == 13
    assert encode_ipxe_encap(sub) == SEED_175
    assert encode_ipxe_encap({IpxeSetting.NO_PXEDHCP: b"\x01"}) == b"\xb0\x01\x01"
    assert parse_ipxe_encap(b"\x00\xb0\x01\x01\xff\x12") == {0xB0: b"\x01"}  # PAD, END


def test_ipxe_feature_codes_from_ipxe_headers() -> None:
    # include/ipxe/features.h and include/ipxe/dhcp.h
    assert (IpxeFeature.PXE_EXT, IpxeFeature.ISCSI, IpxeFeature.HTTP) == (0x10, 0x11, 0x13)
    assert (IpxeFeature.EFI, IpxeFeature.MENU, IpxeFeature.NFS) == (0x24, 0x27, 0x29)
    assert (IpxeSetting.NO_PXEDHCP, IpxeSetting.BUS_ID, IpxeSetting.VERSION) == (176, 177, 235)


@pytest.mark.parametrize(
    ("value", "message"),
    [(b"\xb0", "no length byte"), (b"\xb0\x05\x01", "runs 4 bytes past the end")],
)
def test_ipxe_encap_malformed(value: bytes, message: str) -> None:
    with pytest.raises(DhcpError, match=message):
        parse_ipxe_encap(value)


@given(st.binary(max_size=80))
def test_sub_option_parsers_only_raise_dhcp_error(value: bytes) -> None:
    for parser in (parse_ipxe_encap, parse_pxe_vendor_options):
        try:
            parser(value)
        except DhcpError:
            pass
    p = Packet(options={77: value, 93: value, 94: value, 97: value, 60: value, 175: value})
    try:
        machine_from_packet(p)
    except DhcpError:
        pass


# -- option 43 -------------------------------------------------------------------------------


def test_pxe_vendor_options_default_is_skip_discovery() -> None:
    # what pixiecore and tinkerbell send in ProxyDHCP offers: 6 = 8, then END
    assert encode_pxe_vendor_options() == b"\x06\x01\x08\xff"
    assert parse_pxe_vendor_options(b"\x06\x01\x08\xff") == {6: b"\x08"}
    assert DiscoveryControl.SKIP == 8


def test_pxe_vendor_options_menu() -> None:
    value = encode_pxe_vendor_options(
        discovery_control=DiscoveryControl.NO_BROADCAST | DiscoveryControl.NO_MULTICAST,
        boot_servers=[(0x8000, [IPv4Address("10.0.0.1")])],
        boot_menu=[(0x8000, "pxeforge")],
        menu_prompt=(5, "Press F8"),
        boot_item=(0x8000, 0),
    )
    sub = parse_pxe_vendor_options(value)
    assert sub == {
        PxeVendorOption.DISCOVERY_CONTROL: b"\x03",
        PxeVendorOption.BOOT_SERVERS: b"\x80\x00\x01\x0a\x00\x00\x01",
        PxeVendorOption.BOOT_MENU: b"\x80\x00\x08pxeforge",
        PxeVendorOption.MENU_PROMPT: b"\x05Press F8",
        PxeVendorOption.BOOT_ITEM: b"\x80\x00\x00\x00",
    }
    assert value.endswith(b"\xff")
    assert encode_pxe_vendor_options(discovery_control=None) == b"\xff"


# -- machines --------------------------------------------------------------------------------


def test_machine_from_packet_fields() -> None:
    p = Packet(
        ciaddr=IPv4Address("10.0.0.9"),
        chaddr=b"\x52\x54\x00\x00\x00\x01",
        options={53: b"\x03", 93: b"\x00\x10", 60: b"HTTPClient:Arch:00016:UNDI:003001"},
    )
    m = machine_from_packet(p)
    assert m.arch == 16 and m.firmware is Firmware.HTTP_X64
    assert m.http_client and not m.ipxe and m.uuid is None
    assert m.ip == IPv4Address("10.0.0.9")
    with pytest.raises(DhcpError):
        machine_from_packet(Packet(htype=32, hlen=20))
