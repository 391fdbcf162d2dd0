"""Boot decisions (every arch × method × iPXE), replies to the captured clients, destinations."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path

import dpkt
import pytest

from pxeforge.boot.firmware import firmware_for_arch
from pxeforge.boot.machine import Firmware, Machine
from pxeforge.boot.offer import (
    BOOT_SCRIPT,
    BROADCAST,
    BootAnswer,
    boot_answer,
    build_reply,
    reply_destination,
)
from pxeforge.config import BootMethod
from pxeforge.protocols.dhcp import (
    FLAG_BROADCAST,
    MessageType,
    Option,
    Packet,
    ip_bytes,
    make_reply,
    max_reply_size,
    parse,
    u32_bytes,
)
from pxeforge.protocols.pxe import machine_from_packet, parse_pxe_vendor_options

DATA = Path(__file__).resolve().parent.parent / "data"
SERVER = IPv4Address("10.0.0.1")
BASE = "http://10.0.0.1:8080"
SCRIPT = f"{BASE}/{BOOT_SCRIPT}"
P, I = BootMethod.PXELINUX, BootMethod.IPXE  # noqa: E741
MAC = "52:54:00:aa:bb:cc"


def h(name: str) -> str:
    return f"{BASE}/{name}"


# arch → file for (pxelinux, plain PXE), (pxelinux, iPXE), (ipxe, plain PXE), (ipxe, iPXE)
TABLE: dict[int | None, tuple[str | None, str | None, str | None, str | None]] = {
    0: ("pxelinux.0", "pxelinux.0", "undionly.kpxe", SCRIPT),
    6: ("bootia32.efi", "bootia32.efi", "snponly-ia32.efi", SCRIPT),
    7: ("bootx64.efi", "bootx64.efi", "snponly.efi", SCRIPT),
    9: ("bootx64.efi", "bootx64.efi", "snponly.efi", SCRIPT),
    10: (None, None, None, SCRIPT),
    11: ("bootaa64.efi", "bootaa64.efi", "snponly-arm64.efi", SCRIPT),
    15: (h("bootia32.efi"), h("bootia32.efi"), h("snponly-ia32.efi"), SCRIPT),
    16: (h("bootx64.efi"), h("bootx64.efi"), h("snponly.efi"), SCRIPT),
    18: (None, None, None, SCRIPT),
    19: (h("bootaa64.efi"), h("bootaa64.efi"), h("snponly-arm64.efi"), SCRIPT),
    2: (None, None, None, SCRIPT),
    None: (None, None, None, SCRIPT),
}
CASES = [
    (arch, method, ipxe, files[2 * (method is I) + ipxe])
    for arch, files in TABLE.items()
    for method in (P, I)
    for ipxe in (False, True)
]


def machine(arch: int | None, *, ipxe: bool = False, http_client: bool = False) -> Machine:
    return Machine(
        mac=MAC, arch=arch, firmware=firmware_for_arch(arch), ipxe=ipxe, http_client=http_client
    )


@pytest.mark.parametrize(
    ("arch", "method", "ipxe", "expected"),
    CASES,
    ids=[f"arch{c[0]}-{c[1].value}-{'ipxe' if c[2] else 'pxe'}" for c in CASES],
)
def test_boot_answer_table(
    arch: int | None, method: BootMethod, ipxe: bool, expected: str | None
) -> None:
    m = machine(arch, ipxe=ipxe)
    answer = boot_answer(m, method, SERVER, BASE)
    if expected is None:
        assert answer is None
        return
    assert answer is not None
    assert answer.file == expected and answer.siaddr == SERVER
    opts = answer.options
    assert opts[Option.BOOTFILE_NAME] == expected.encode() + b"\0"
    assert answer.is_url == expected.startswith("http://")
    assert (Option.TFTP_SERVER_NAME in opts) == (not answer.is_url)
    if not answer.is_url:
        assert opts[Option.TFTP_SERVER_NAME] == b"10.0.0.1"
    http_firmware = m.firmware.is_http_boot
    assert opts.get(Option.VENDOR_CLASS) == (b"HTTPClient" if http_firmware else None)
    assert opts.get(Option.IPXE_ENCAP) == (b"\xb0\x01\x01" if ipxe else None)
    assert Option.VENDOR_SPECIFIC not in opts


def test_http_client_vendor_class_without_http_arch() -> None:
    answer = boot_answer(machine(7, http_client=True), P, SERVER, BASE + "/")
    assert answer is not None
    assert answer.file == h("bootx64.efi")  # trailing slash of http_base does not double
    assert answer.options[Option.VENDOR_CLASS] == b"HTTPClient"


def test_proxy_mode_options() -> None:
    pxe_answer = boot_answer(machine(0), P, SERVER, BASE, proxy=True)
    assert pxe_answer is not None and pxe_answer.file == "pxelinux.0"
    assert pxe_answer.options[Option.VENDOR_CLASS] == b"PXEClient"
    vendor = pxe_answer.options[Option.VENDOR_SPECIFIC]
    assert parse_pxe_vendor_options(vendor) == {6: b"\x08"}
    ipxe_answer = boot_answer(machine(0, ipxe=True), I, SERVER, BASE, proxy=True)
    assert ipxe_answer is not None and ipxe_answer.file == SCRIPT
    assert Option.IPXE_ENCAP not in ipxe_answer.options  # we are the ProxyDHCP it waits for
    assert ipxe_answer.options[Option.VENDOR_CLASS] == b"PXEClient"
    http_answer = boot_answer(machine(16), I, SERVER, BASE, proxy=True)
    assert http_answer is not None and http_answer.file == h("snponly.efi")
    assert http_answer.options[Option.VENDOR_CLASS] == b"HTTPClient"
    assert Option.VENDOR_SPECIFIC not in http_answer.options


# -- the real clients ------------------------------------------------------------------------


def captured() -> list[tuple[str, str, Packet]]:
    """(capture name, destination IP, packet) for every DHCP datagram, in order."""
    out: list[tuple[str, str, Packet]] = []
    for path in sorted(DATA.glob("*.pcap")):
        with path.open("rb") as fh:
            for _ts, frame in dpkt.pcapng.Reader(fh):
                ip = dpkt.ethernet.Ethernet(frame).data
                if isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.udp.UDP):
                    if {ip.data.sport, ip.data.dport} == {67, 68}:
                        out.append((path.name, str(IPv4Address(ip.dst)), parse(ip.data.data)))
    return out


CAPTURED = captured()
PAIRS = [
    (a[2], b[1], b[2])
    for a, b in zip(CAPTURED, CAPTURED[1:], strict=False)
    if a[2].op == 1 and b[2].op == 2 and a[2].xid == b[2].xid
]


def discover_of(capture: str, vendor_class: bytes) -> Packet:
    return next(
        p
        for name, _, p in CAPTURED
        if name.startswith(capture)
        and p.message_type is MessageType.DISCOVER
        and p.get(Option.VENDOR_CLASS) == vendor_class
    )


IPXE_ROM = discover_of("bios", b"PXEClient:Arch:00000:UNDI:002001")
OVMF = discover_of("uefi", b"PXEClient:Arch:00007:UNDI:003000")
IPXE_EFI = discover_of("uefi", b"PXEClient:Arch:00007:UNDI:003010")
GUEST = discover_of("bios", b"pxelab-guest")


@pytest.mark.parametrize(
    ("request_", "method", "file"),
    [
        (IPXE_ROM, P, "pxelinux.0"),  # pxelinux.0 runs on the iPXE ROM's PXE stack
        (IPXE_ROM, I, SCRIPT),
        (OVMF, P, "bootx64.efi"),
        (OVMF, I, "snponly.efi"),
        (IPXE_EFI, P, "bootx64.efi"),
        (IPXE_EFI, I, SCRIPT),
        (GUEST, P, None),  # the booted Linux guest: no option 93, no boot file
        (GUEST, I, None),
    ],
    ids=[
        "ipxe-rom-pxelinux",
        "ipxe-rom-ipxe",
        "ovmf-pxelinux",
        "ovmf-ipxe",
        "ipxe-efi-pxelinux",
        "ipxe-efi-ipxe",
        "guest-pxelinux",
        "guest-ipxe",
    ],
)
def test_replies_to_captured_discovers(
    request_: Packet, method: BootMethod, file: str | None
) -> None:
    m = machine_from_packet(request_)
    answer = boot_answer(m, method, SERVER, BASE)
    if file is None:
        assert answer is None
        return
    assert answer is not None and answer.file == file
    offer = build_reply(
        request_,
        MessageType.OFFER,
        answer,
        server_id=SERVER,
        yiaddr=IPv4Address("10.0.0.50"),
        options={Option.LEASE_TIME: u32_bytes(3600), Option.SUBNET_MASK: ip_bytes(SERVER)},
    )
    wire = parse(offer.to_bytes(max_reply_size(request_)))
    assert wire == offer
    assert wire.boot_file_name == file
    assert wire.file.rstrip(b"\0") == file.encode()  # BOOTP file field too
    assert wire.siaddr == SERVER and wire.server_id == SERVER
    assert wire.xid == request_.xid and wire.chaddr == request_.chaddr
    assert list(wire.options)[:4] == [53, 54, 51, 1]
    assert (Option.IPXE_ENCAP in wire.options) == m.ipxe


@pytest.mark.parametrize("method", [P, I])
def test_offer_and_ack_carry_the_same_file(method: BootMethod) -> None:
    seen = 0
    for request, _, _ in PAIRS:
        if (
            request.message_type is not MessageType.REQUEST
            or Option.CLIENT_ARCH not in request.options
        ):
            continue
        discover = next(p for _, _, p in CAPTURED if p.xid == request.xid and p.message_type == 1)
        assert machine_from_packet(discover) == machine_from_packet(request)
        a = boot_answer(machine_from_packet(discover), method, SERVER, BASE)
        b = boot_answer(machine_from_packet(request), method, SERVER, BASE)
        assert a == b and a is not None
        seen += 1
    assert seen == 3


def test_captured_server_made_the_same_choices() -> None:
    """The lab's reference server ran method ipxe: its OFFERs and ACKs name our files."""
    base = "http://192.168.77.1:8080"
    checked = 0
    for request, _, reply in PAIRS:
        m = machine_from_packet(request)
        if m.arch is None:
            continue
        answer = boot_answer(m, I, IPv4Address("192.168.77.1"), base)
        assert answer is not None
        assert reply.boot_file_name == answer.file
        checked += 1
    assert checked == 8


# -- destinations (RFC 2131 §4.1) ------------------------------------------------------------


def _request(**fields: object) -> Packet:
    base = Packet(xid=1, chaddr=b"\x52\x54\x00\xaa\xbb\xcc", options={53: b"\x01"})
    return replace(base, **fields)  # type: ignore[arg-type]


YIADDR = IPv4Address("10.0.0.50")
RELAY = IPv4Address("10.9.0.1")


@pytest.mark.parametrize(
    ("request_", "kind", "yiaddr", "expected"),
    [
        (_request(), MessageType.OFFER, YIADDR, ("10.0.0.50", 68, True)),
        (_request(flags=FLAG_BROADCAST), MessageType.OFFER, YIADDR, (BROADCAST, 68, False)),
        (_request(), MessageType.OFFER, IPv4Address(0), (BROADCAST, 68, False)),
        (_request(), MessageType.NAK, IPv4Address(0), (BROADCAST, 68, False)),
        (
            _request(ciaddr=IPv4Address("10.0.0.7")),
            MessageType.ACK,
            IPv4Address(0),
            ("10.0.0.7", 68, False),
        ),
        (
            _request(ciaddr=IPv4Address("10.0.0.7")),
            MessageType.NAK,
            IPv4Address(0),
            (BROADCAST, 68, False),
        ),
        (_request(giaddr=RELAY), MessageType.OFFER, YIADDR, ("10.9.0.1", 67, False)),
        (_request(giaddr=RELAY), MessageType.NAK, IPv4Address(0), ("10.9.0.1", 67, False)),
        (
            _request(giaddr=RELAY, ciaddr=IPv4Address("10.0.0.7")),
            MessageType.ACK,
            YIADDR,
            ("10.9.0.1", 67, False),
        ),
    ],
    ids=[
        "unicast-yiaddr",
        "broadcast-flag",
        "no-yiaddr",
        "nak",
        "ciaddr",
        "nak-with-ciaddr",
        "relay",
        "relay-nak",
        "relay-over-ciaddr",
    ],
)
def test_reply_destination(
    request_: Packet, kind: MessageType, yiaddr: IPv4Address, expected: tuple[str, int, bool]
) -> None:
    reply = make_reply(request_, kind, server_id=SERVER, yiaddr=yiaddr)
    assert reply_destination(request_, reply) == expected
    if kind is MessageType.NAK and int(request_.giaddr):
        assert reply.broadcast  # the relay broadcasts it


def test_reply_destination_ports_are_parameters() -> None:
    request = _request()
    reply = make_reply(request, MessageType.OFFER, server_id=SERVER, yiaddr=YIADDR)
    assert reply_destination(request, reply, client_port=10068) == ("10.0.0.50", 10068, True)
    relayed = _request(giaddr=RELAY)
    reply = make_reply(relayed, MessageType.OFFER, server_id=SERVER, yiaddr=YIADDR)
    assert reply_destination(relayed, reply, server_port=10067) == ("10.9.0.1", 10067, False)


def test_destinations_match_the_captures() -> None:
    """OVMF sets the broadcast flag and got a broadcast; iPXE got unicast to yiaddr."""
    for request, destination, reply in PAIRS:
        address, port, arp = reply_destination(request, reply)
        assert address == destination
        assert port == 68 and arp == (destination != BROADCAST)


def test_build_reply_without_answer_and_with_long_url() -> None:
    plain = build_reply(GUEST, MessageType.OFFER, None, server_id=SERVER, yiaddr=YIADDR)
    assert plain.boot_file_name is None and plain.siaddr == IPv4Address(0)
    long_url = "http://10.0.0.1:8080/" + "x" * 200
    answer = BootAnswer(file=long_url, siaddr=SERVER, options={67: long_url.encode()})
    reply = build_reply(IPXE_ROM, MessageType.OFFER, answer, server_id=SERVER, yiaddr=YIADDR)
    assert reply.file == bytes(128)  # does not fit the BOOTP field: option 67 only
    assert reply.boot_file_name == long_url


def test_unknown_firmware_has_no_answer_even_if_pxe() -> None:
    m = Machine(mac=MAC, arch=27, firmware=Firmware.UNKNOWN)
    assert boot_answer(m, P, SERVER, BASE) is None
    assert boot_answer(m, I, SERVER, BASE) is None
