"""What the PXE and iPXE options of a DHCP packet mean, and how to write ours. No I/O.

Theory of operation
-------------------
`protocols.dhcp` keeps option values as raw bytes; this module reads the ones a network-boot
client sends and builds the ones a boot server answers with:

* 93 client architecture (RFC 4578 §2.1): a list of 16-bit types, the first is the one in use.
  Its values are `ClientArch` (defined with the firmware table in `boot.firmware`).
* 94 client network interface identifier (RFC 4578 §2.2): type 1 (UNDI), major, minor.
* 97 client machine identifier (RFC 4578 §2.3): type 0 and a 16-byte SMBIOS UUID whose first
  three fields are little-endian on the wire, like EFI GUIDs. `uuid_from_option97` gives the
  canonical text pxelinux asks for (``pxelinux.cfg/<uuid>``) and QEMU's ``-uuid`` shows.
* 60 vendor class: ``PXEClient:Arch:xxxxx:UNDI:yyyzzz`` (PXE 2.1 §2.2) or ``HTTPClient…``
  (UEFI 2.5+ HTTP boot).
* 77 user class: iPXE sends the bare string ``iPXE``; RFC 3004 wants length-prefixed items.
  Both are read.
* 175 iPXE encapsulated options (iPXE ``include/ipxe/dhcp.h``): the client lists its features
  (`IpxeFeature`, one byte each, from ``include/ipxe/features.h``) and its version and NIC bus
  id; servers may set settings (`IpxeSetting`), e.g. 0xb0 "no-pxedhcp" = 1 so iPXE does not
  wait ~3 s for ProxyDHCP offers.
* 43 PXE vendor options in ProxyDHCP replies (PXE 2.1 §2.2.4, table 2-1): sub-option 6 discovery
  control 8 ("skip boot server discovery when a boot file name is given" — what pixiecore and
  tinkerbell send) makes the ROM load the file from the offer at once.

`machine_from_packet` condenses a client request into a `Machine` for the boot plane.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from enum import IntEnum, IntFlag
from ipaddress import IPv4Address
from types import MappingProxyType

from pxeforge.boot.firmware import ClientArch, firmware_for_arch
from pxeforge.boot.machine import Machine
from pxeforge.errors import DhcpError
from pxeforge.protocols.dhcp import Option, Packet

__all__ = [
    "HTTP_CLIENT",
    "IPXE_USER_CLASS",
    "PXE_CLIENT",
    "ClientArch",
    "DiscoveryControl",
    "IpxeFeature",
    "IpxeSetting",
    "PxeVendorOption",
    "client_arch",
    "client_arches",
    "encode_ipxe_encap",
    "encode_pxe_vendor_options",
    "encode_user_classes",
    "ipxe_features",
    "ipxe_options",
    "is_http_client",
    "is_ipxe",
    "is_pxe_client",
    "machine_from_packet",
    "ndi",
    "parse_ipxe_encap",
    "parse_pxe_vendor_options",
    "user_classes",
    "uuid_from_option97",
    "vendor_class",
]

PXE_CLIENT = "PXEClient"
HTTP_CLIENT = "HTTPClient"
IPXE_USER_CLASS = "iPXE"


class IpxeFeature(IntEnum):
    """Feature markers inside option 175 (iPXE include/ipxe/features.h, range 0x10–0x4f).

    The client sends each as a one-byte option whose value is the feature's version.
    """

    PXE_EXT = 0x10  # PXE API extensions
    ISCSI = 0x11
    AOE = 0x12
    HTTP = 0x13
    HTTPS = 0x14
    TFTP = 0x15
    FTP = 0x16
    DNS = 0x17
    BZIMAGE = 0x18
    MULTIBOOT = 0x19
    SLAM = 0x1A
    SRP = 0x1B
    NBI = 0x20
    PXE = 0x21
    ELF = 0x22
    COMBOOT = 0x23
    EFI = 0x24
    FCOE = 0x25
    VLAN = 0x26
    MENU = 0x27
    SDI = 0x28
    NFS = 0x29


class IpxeSetting(IntEnum):
    """Other option-175 sub-options (iPXE include/ipxe/dhcp.h, ``DHCP_EB_*``)."""

    PRIORITY = 0x01  # signed byte: preference among several DHCP offers
    KEEP_SAN = 0x08
    SKIP_SAN_BOOT = 0x09
    SCRIPTLET = 0x51
    SYSLOGS_SERVER = 0x55
    TRUST = 0x5A
    CERT = 0x5B
    KEY = 0x5C
    CROSS_CERT = 0x5D
    NO_PXEDHCP = 0xB0  # 1: do not wait for ProxyDHCP, ignore PXE options
    BUS_ID = 0xB1  # NIC: bus type (1 = PCI), vendor id, device id
    USE_CACHED = 0xB2  # obsolete
    BIOS_DRIVE = 0xBD
    USERNAME = 0xBE
    PASSWORD = 0xBF
    REVERSE_USERNAME = 0xC0
    REVERSE_PASSWORD = 0xC1
    UID = 0xC2
    GID = 0xC3
    VERSION = 0xEB  # major, minor, patch


class PxeVendorOption(IntEnum):
    """Option 43 sub-options for PXE clients (PXE 2.1 specification, table 2-1)."""

    MTFTP_IP = 1
    MTFTP_CPORT = 2
    MTFTP_SPORT = 3
    MTFTP_TMOUT = 4
    MTFTP_DELAY = 5
    DISCOVERY_CONTROL = 6
    DISCOVERY_MCAST_ADDR = 7
    BOOT_SERVERS = 8
    BOOT_MENU = 9
    MENU_PROMPT = 10
    MCAST_ADDRS_ALLOC = 11
    CREDENTIAL_TYPES = 12
    BOOT_ITEM = 71
    END = 255


class DiscoveryControl(IntFlag):
    """Bits of sub-option 6 (PXE 2.1 table 2-1; names as in iPXE's dhcp.h)."""

    NO_BROADCAST = 1  # do not broadcast boot server discovery
    NO_MULTICAST = 2  # do not multicast boot server discovery
    ONLY_LISTED = 4  # accept only servers in sub-option 8
    SKIP = 8  # a boot file name is in the offer: download it, no discovery, no menu


# -- client identification -------------------------------------------------------------------


def client_arches(p: Packet) -> tuple[int, ...]:
    """All architecture types in option 93 (a client may list several); () if absent.

    DhcpError if the option's length is odd (RFC 4578 §2.1 wants pairs of octets).
    """
    value = p.get(Option.CLIENT_ARCH)
    if not value:
        return ()
    if len(value) % 2:
        raise DhcpError(f"option 93 (client arch) has odd length {len(value)}")
    return tuple(int.from_bytes(value[i : i + 2], "big") for i in range(0, len(value), 2))


def client_arch(p: Packet) -> int | None:
    """The architecture type in use: the first of option 93, None when absent or too short."""
    value = p.get(Option.CLIENT_ARCH)
    if value is None or len(value) < 2:
        return None
    return int.from_bytes(value[:2], "big")


def ndi(p: Packet) -> tuple[int, int, int] | None:
    """Option 94 as (interface type, major, minor), e.g. (1, 2, 1) for UNDI 2.1."""
    value = p.get(Option.CLIENT_NDI)
    if value is None or len(value) != 3:
        return None
    return value[0], value[1], value[2]


def uuid_from_option97(value: bytes) -> str | None:
    """Canonical lower-case text of the SMBIOS UUID in an option-97 value, or None.

    The value is a type byte (0) and 16 bytes whose first three fields are little-endian.
    Some old ROMs leave the type byte out; a bare 16-byte value is accepted as the UUID.
    The all-zero and all-ones UUIDs ("not set" in SMBIOS) give None: they name no machine.
    """
    if len(value) == 17 and value[0] == 0:
        raw = value[1:]
    elif len(value) == 16:
        raw = value
    else:
        return None
    if raw in (bytes(16), b"\xff" * 16):
        return None
    return str(uuid.UUID(bytes_le=bytes(raw)))


def vendor_class(p: Packet) -> str | None:
    """Option 60 as text."""
    return p.text(Option.VENDOR_CLASS)


def is_pxe_client(p: Packet) -> bool:
    """Option 60 starts with ``PXEClient`` (PXE firmware, and iPXE)."""
    value = p.get(Option.VENDOR_CLASS)
    return value is not None and value.startswith(PXE_CLIENT.encode())


def is_http_client(p: Packet) -> bool:
    """Option 60 starts with ``HTTPClient`` (UEFI HTTP boot)."""
    value = p.get(Option.VENDOR_CLASS)
    return value is not None and value.startswith(HTTP_CLIENT.encode())


def _rfc3004_items(value: bytes) -> list[bytes] | None:
    items: list[bytes] = []
    i = 0
    while i < len(value):
        length = value[i]
        if length == 0 or i + 1 + length > len(value):
            return None
        items.append(value[i + 1 : i + 1 + length])
        i += 1 + length
    return items


def user_classes(p: Packet) -> tuple[str, ...]:
    """Option 77 as a tuple of strings; () when absent.

    RFC 3004 makes it a list of length-prefixed items; iPXE, like most clients, sends one bare
    string. A value that is printable text is taken as one bare string; otherwise it is read
    as an RFC 3004 list if it parses as one exactly, else as one bare string.
    """
    value = p.get(Option.USER_CLASS)
    if not value:
        return ()
    if value.isascii() and all(32 <= b < 127 for b in value):
        return (value.decode("ascii"),)
    items = _rfc3004_items(value)
    if items is None:
        return (value.decode("latin-1").rstrip("\0"),)
    return tuple(item.decode("latin-1") for item in items)


def encode_user_classes(*classes: str) -> bytes:
    """An RFC 3004 option-77 value (for tests and clients we simulate)."""
    out = bytearray()
    for item in classes:
        raw = item.encode("latin-1")
        if not 0 < len(raw) < 256:
            raise ValueError(f"a user class is 1-255 bytes, got {len(raw)}")
        out.append(len(raw))
        out += raw
    return bytes(out)


def is_ipxe(p: Packet) -> bool:
    """The client is iPXE: user class ``iPXE`` (bare or RFC 3004) or option 175 present."""
    return Option.IPXE_ENCAP in p.options or IPXE_USER_CLASS in user_classes(p)


# -- option 175 ------------------------------------------------------------------------------


def _parse_tlv(value: bytes, what: str) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    i, n = 0, len(value)
    while i < n:
        code = value[i]
        if code == 0:
            i += 1
            continue
        if code == 255:
            break
        if i + 1 >= n:
            raise DhcpError(f"{what}: sub-option {code} at offset {i} has no length byte")
        stop = i + 2 + value[i + 1]
        if stop > n:
            raise DhcpError(
                f"{what}: sub-option {code} at offset {i} runs {stop - n} bytes past the end"
            )
        out[code] = out.get(code, b"") + value[i + 2 : stop]
        i = stop
    return out


def _encode_tlv(options: Mapping[int, bytes], what: str) -> bytes:
    out = bytearray()
    for code, value in options.items():
        if not 0 < code < 255:
            raise ValueError(f"{what}: sub-option code {code} is reserved")
        if len(value) > 255:
            raise ValueError(f"{what}: sub-option {code} is {len(value)} bytes, at most 255")
        out += bytes((code, len(value)))
        out += value
    return bytes(out)


def parse_ipxe_encap(value: bytes) -> dict[int, bytes]:
    """Option 175's sub-options (code → value, in order). DhcpError if malformed."""
    return _parse_tlv(value, "option 175 (iPXE)")


def encode_ipxe_encap(options: Mapping[int, bytes]) -> bytes:
    """An option-175 value from sub-options, e.g. ``{IpxeSetting.NO_PXEDHCP: b"\\x01"}``."""
    return _encode_tlv(options, "option 175 (iPXE)")


def ipxe_options(p: Packet) -> dict[int, bytes]:
    """The client's option-175 sub-options ({} when absent). DhcpError if malformed."""
    value = p.get(Option.IPXE_ENCAP)
    return {} if value is None else parse_ipxe_encap(value)


def ipxe_features(p: Packet) -> frozenset[int]:
    """The feature markers (0x10–0x4f) the iPXE client announces in option 175."""
    return frozenset(code for code in ipxe_options(p) if 0x10 <= code <= 0x4F)


# -- option 43 -------------------------------------------------------------------------------


def encode_pxe_vendor_options(
    *,
    discovery_control: int | None = DiscoveryControl.SKIP,
    boot_servers: Sequence[tuple[int, Sequence[IPv4Address]]] = (),
    boot_menu: Sequence[tuple[int, str]] = (),
    menu_prompt: tuple[int, str] | None = None,
    boot_item: tuple[int, int] | None = None,
    extra: Mapping[int, bytes] = MappingProxyType({}),
) -> bytes:
    """An option-43 value for a PXE client (PXE 2.1 table 2-1), END-terminated.

    The default — only discovery control 8 — tells the ROM to download the boot file named in
    the offer without boot server discovery or menu, which is what a ProxyDHCP reply wants.
    ``boot_servers``: (server type, addresses); ``boot_menu``: (server type, description);
    ``menu_prompt``: (timeout seconds, text); ``boot_item``: (server type, layer).
    """
    options: dict[int, bytes] = {}
    if discovery_control is not None:
        options[PxeVendorOption.DISCOVERY_CONTROL] = bytes((discovery_control,))
    if boot_servers:
        options[PxeVendorOption.BOOT_SERVERS] = b"".join(
            kind.to_bytes(2, "big") + bytes((len(ips),)) + b"".join(ip.packed for ip in ips)
            for kind, ips in boot_servers
        )
    if boot_menu:
        menu = bytearray()
        for kind, text in boot_menu:
            raw = text.encode("latin-1")
            menu += kind.to_bytes(2, "big") + bytes((len(raw),)) + raw
        options[PxeVendorOption.BOOT_MENU] = bytes(menu)
    if menu_prompt is not None:
        timeout, text = menu_prompt
        options[PxeVendorOption.MENU_PROMPT] = bytes((timeout,)) + text.encode("latin-1")
    if boot_item is not None:
        kind, layer = boot_item
        options[PxeVendorOption.BOOT_ITEM] = kind.to_bytes(2, "big") + layer.to_bytes(2, "big")
    options.update(extra)
    return _encode_tlv(options, "option 43 (PXE)") + b"\xff"


def parse_pxe_vendor_options(value: bytes) -> dict[int, bytes]:
    """Option 43's PXE sub-options (code → value). DhcpError if malformed."""
    return _parse_tlv(value, "option 43 (PXE)")


# -- the machine -----------------------------------------------------------------------------


def machine_from_packet(p: Packet) -> Machine:
    """What the boot plane knows about the client that sent ``p``.

    DhcpError if the hardware address is not Ethernet (see `Packet.mac`).
    """
    arch = client_arch(p)
    raw_uuid = p.get(Option.CLIENT_UUID)
    return Machine(
        mac=p.mac,
        arch=arch,
        firmware=firmware_for_arch(arch),
        uuid=None if raw_uuid is None else uuid_from_option97(raw_uuid),
        ipxe=is_ipxe(p),
        http_client=is_http_client(p),
        ip=p.ciaddr if int(p.ciaddr) else None,
    )
