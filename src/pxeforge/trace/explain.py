"""What DHCP options, architectures and boot file names mean, in words. Pure functions.

Theory of operation
-------------------
`explain_option` turns one option of a decoded `Packet` into ``(name, text)``: the IANA name
("BOOTP Vendor Extensions and DHCP Options"; RFC 2132 for 1–76, RFC 4578 for 93/94/97,
RFC 3004 for 77, iPXE's ``include/ipxe/dhcp.h`` for 175 and 203, RFC 5071 for 208–211) and
the value decoded the way a person reads it — addresses, durations, the architecture with the
firmware it implies (`boot.firmware`), the UNDI version, the option-97 GUID with its mixed byte
order spelled out, iPXE's features by name. The PXE meaning comes from `protocols.pxe`; this
module only words it.

`file_kind` classifies a boot file name by heuristics (extensions and the names the usual
loaders ship under) so a BIOS client handed an EFI binary, or the other way round, can be told
apart from a correct answer; `loader_fits` compares that with the client's firmware.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable
from ipaddress import IPv4Address

from pxeforge.boot.firmware import ClientArch, firmware_for_arch, loader_for
from pxeforge.boot.machine import Firmware
from pxeforge.config import BootMethod
from pxeforge.errors import DhcpError
from pxeforge.protocols import pxe
from pxeforge.protocols.dhcp import MessageType, Option, Packet

__all__ = [
    "FileKind",
    "arch_label",
    "explain_option",
    "file_kind",
    "firmware_loaders",
    "is_ipxe_loader",
    "loader_fits",
    "option_name",
    "request_list",
]

# -- names -----------------------------------------------------------------------------------

_NAMES: dict[int, str] = {
    1: "subnet-mask",
    2: "time-offset",
    3: "router",
    4: "time-server",
    5: "name-server",
    6: "domain-name-server",
    7: "log-server",
    8: "cookie-server",
    9: "lpr-server",
    10: "impress-server",
    11: "resource-location-server",
    12: "host-name",
    13: "boot-file-size",
    14: "merit-dump-file",
    15: "domain-name",
    16: "swap-server",
    17: "root-path",
    18: "extensions-path",
    19: "ip-forwarding",
    20: "non-local-source-routing",
    21: "policy-filter",
    22: "max-datagram-reassembly",
    23: "default-ip-ttl",
    24: "path-mtu-aging-timeout",
    25: "path-mtu-plateau-table",
    26: "interface-mtu",
    27: "all-subnets-local",
    28: "broadcast-address",
    29: "perform-mask-discovery",
    30: "mask-supplier",
    31: "router-discovery",
    32: "router-solicitation-address",
    33: "static-route",
    34: "trailer-encapsulation",
    35: "arp-cache-timeout",
    36: "ethernet-encapsulation",
    37: "tcp-default-ttl",
    38: "tcp-keepalive-interval",
    39: "tcp-keepalive-garbage",
    40: "nis-domain",
    41: "nis-servers",
    42: "ntp-servers",
    43: "vendor-specific",
    44: "netbios-name-servers",
    45: "netbios-dd-server",
    46: "netbios-node-type",
    47: "netbios-scope",
    48: "x-font-servers",
    49: "x-display-managers",
    50: "requested-address",
    51: "lease-time",
    52: "overload",
    53: "message-type",
    54: "server-id",
    55: "parameter-request-list",
    56: "message",
    57: "max-message-size",
    58: "renewal-time",
    59: "rebinding-time",
    60: "vendor-class",
    61: "client-id",
    62: "netware-domain",
    63: "netware-options",
    64: "nis+-domain",
    65: "nis+-servers",
    66: "tftp-server-name",
    67: "bootfile-name",
    68: "mobile-ip-home-agent",
    69: "smtp-server",
    70: "pop3-server",
    71: "nntp-server",
    72: "www-server",
    73: "finger-server",
    74: "irc-server",
    75: "streettalk-server",
    76: "stda-server",
    77: "user-class",
    78: "slp-directory-agent",
    79: "slp-service-scope",
    80: "rapid-commit",
    81: "client-fqdn",
    82: "relay-agent-info",
    83: "isns",
    85: "nds-servers",
    86: "nds-tree-name",
    87: "nds-context",
    88: "bcmcs-domains",
    89: "bcmcs-addresses",
    90: "authentication",
    91: "client-last-transaction-time",
    92: "associated-ip",
    93: "client-arch",
    94: "client-ndi",
    95: "ldap",
    97: "client-uuid",
    98: "user-auth",
    99: "geoconf-civic",
    100: "posix-timezone",
    101: "tzdb-timezone",
    108: "ipv6-only-preferred",
    114: "captive-portal",
    116: "auto-config",
    117: "name-service-search",
    118: "subnet-selection",
    119: "domain-search",
    120: "sip-servers",
    121: "classless-static-route",
    124: "vi-vendor-class",
    125: "vi-vendor-specific",
    150: "tftp-server-address",
    175: "ipxe-encap",
    203: "ipxe-iscsi-initiator-iqn",
    208: "pxelinux-magic",
    209: "pxelinux-config-file",
    210: "pxelinux-path-prefix",
    211: "pxelinux-reboot-time",
    252: "wpad",
}
for _code in range(128, 136):
    _NAMES[_code] = f"pxe-vendor-{_code}"  # RFC 4578 §2.4: "PXE - undefined (vendor specific)"

_IP_LIST = frozenset((3, 4, 5, 6, 7, 8, 9, 10, 11, 41, 42, 44, 45, 48, 49, 65, 68, 69, 70, 71))
_IP_LIST |= frozenset((72, 73, 74, 75, 76, 85, 89, 150))
_IP_ONE = frozenset((1, 16, 28, 32, 50, 54, 118))
_TEXT = frozenset((12, 14, 15, 17, 18, 40, 47, 56, 60, 62, 64, 66, 67, 86, 87, 100, 101))
_TEXT |= frozenset((114, 203, 209, 210, 252))
_SECONDS = frozenset((24, 35, 38, 51, 58, 59, 91, 108, 211))
_U16 = frozenset((13, 22, 26, 57))
_U8 = frozenset((23, 37, 46))
_BOOL = frozenset((19, 20, 27, 29, 30, 31, 34, 36, 39, 116))

_ARCH_LABELS: dict[int, str] = {
    ClientArch.X86_BIOS: "x86 BIOS",
    ClientArch.NEC_PC98: "NEC PC-98",
    ClientArch.ITANIUM: "Itanium",
    ClientArch.DEC_ALPHA: "DEC Alpha",
    ClientArch.ARC_X86: "Arc x86",
    ClientArch.INTEL_LEAN_CLIENT: "Intel Lean Client",
    ClientArch.X86_UEFI: "x86 (32-bit) UEFI",
    ClientArch.X64_UEFI: "x64 UEFI",
    ClientArch.EFI_XSCALE: "EFI XScale",
    ClientArch.EBC: "EFI byte code (x64 UEFI in pre-erratum firmware)",
    ClientArch.ARM32_UEFI: "ARM 32-bit UEFI",
    ClientArch.ARM64_UEFI: "ARM 64-bit UEFI",
    ClientArch.X86_UEFI_HTTP: "x86 UEFI HTTP boot",
    ClientArch.X64_UEFI_HTTP: "x64 UEFI HTTP boot",
    ClientArch.ARM32_UEFI_HTTP: "ARM 32-bit UEFI HTTP boot",
    ClientArch.ARM64_UEFI_HTTP: "ARM 64-bit UEFI HTTP boot",
    ClientArch.PC_AT_BIOS_HTTP: "x86 BIOS HTTP boot",
}

_PARAM_SHORT: dict[int, str] = {
    1: "subnet-mask",
    3: "router",
    6: "dns",
    7: "log-server",
    12: "host-name",
    15: "domain-name",
    17: "root-path",
    43: "vendor-specific",
    60: "vendor-class",
    66: "tftp-server",
    67: "bootfile",
    119: "domain-search",
    175: "ipxe",
}


def option_name(code: int) -> str:
    """The option's IANA name in lower case (``option-N`` when unassigned)."""
    return _NAMES.get(code, f"option-{code}")


def arch_label(arch: int | None) -> str:
    """``"x64 UEFI"`` for 7, the IANA name for the rest, ``"none"`` for None."""
    if arch is None:
        return "none"
    if arch in _ARCH_LABELS:
        return _ARCH_LABELS[arch]
    try:
        return ClientArch(arch).name.replace("_", " ")
    except ValueError:
        return f"unassigned type {arch}"


def firmware_loaders(firmware: Firmware) -> tuple[str, ...]:
    """The loaders pxeforge serves this firmware (pxelinux/shim method, then iPXE)."""
    names = (loader_for(firmware, BootMethod.PXELINUX), loader_for(firmware, BootMethod.IPXE))
    return tuple(n for n in names if n is not None)


def request_list(codes: Iterable[int]) -> str:
    """Option 55 in words, PXE's 128–135 run folded: ``1 subnet-mask, 3 router, …``."""
    out: list[str] = []
    codes = list(codes)
    i = 0
    while i < len(codes):
        code = codes[i]
        j = i
        while j + 1 < len(codes) and codes[j + 1] == codes[j] + 1 and 128 <= codes[j + 1] <= 135:
            j += 1
        if 128 <= code <= 135 and j > i:
            out.append(f"{code}-{codes[j]} pxe-vendor")
            i = j + 1
            continue
        out.append(f"{code} {_PARAM_SHORT.get(code, option_name(code))}")
        i += 1
    return ", ".join(out)


# -- values ----------------------------------------------------------------------------------


def _duration(seconds: int) -> str:
    """``52 min 30 s``; ``infinite`` for 0xffffffff (RFC 2132 §9.2)."""
    if seconds == 0xFFFFFFFF:
        return "infinite"
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size} {unit}")
            seconds %= size
    return " ".join(parts) or "0 s"


def _text(value: bytes) -> str:
    return json.dumps(value.decode("latin-1").rstrip("\0"), ensure_ascii=False)


def _ips(value: bytes) -> str | None:
    if not value or len(value) % 4:
        return None
    return ", ".join(str(IPv4Address(value[i : i + 4])) for i in range(0, len(value), 4))


def _vendor_class(text: str) -> str:
    """PXE 2.1 §2.2: ``PXEClient:Arch:xxxxx:UNDI:yyyzzz``; UEFI 2.5 ``HTTPClient:…``."""
    parts = text.split(":")
    if parts[0] not in (pxe.PXE_CLIENT, pxe.HTTP_CLIENT):
        return "not a PXE client"
    what = "PXE client" if parts[0] == pxe.PXE_CLIENT else "UEFI HTTP boot client"
    fields = dict(zip(parts[1::2], parts[2::2], strict=False))
    bits = [what]
    if fields.get("Arch", "").isdigit():
        bits.append(f"arch {int(fields['Arch'])}")
    undi = fields.get("UNDI", "")
    if len(undi) == 6 and undi.isdigit():
        bits.append(f"UNDI {int(undi[:3])}.{int(undi[3:])}")
    return ", ".join(bits)


def _client_id(value: bytes) -> str:
    if len(value) == 7 and value[0] == 1:
        return f"type 1 (Ethernet) {':'.join(f'{b:02x}' for b in value[1:])}"
    if value and value[0] == 255 and len(value) >= 5:
        return f"type 255 (RFC 4361): IAID {value[1:5].hex()}, DUID {value[5:].hex()}"
    if value:
        return f"type {value[0]}: {value[1:].hex()}"
    return "empty"


def _uuid(value: bytes) -> str:
    """Option 97 (RFC 4578 §2.3) with the byte order explained."""
    text = pxe.uuid_from_option97(value)
    raw = value[1:] if len(value) == 17 else value
    if len(raw) != 16:
        return f"{value.hex()} (not a type-0 16-byte UUID: ignored)"
    if text is None:
        return f'{raw.hex()} (the all-zero/all-ones UUID: "not set" in SMBIOS)'
    wire = f"{raw[:4].hex()} {raw[4:6].hex()} {raw[6:8].hex()} {raw[8:10].hex()} {raw[10:].hex()}"
    prefix = "type 0, " if len(value) == 17 else "no type byte, "
    return (
        f"{text} ({prefix}wire {wire}: SMBIOS order, the first three fields little-endian "
        f"and byte-swapped here; pxelinux asks for pxelinux.cfg/{text})"
    )


def _ndi(value: bytes) -> str:
    if len(value) != 3:
        return f"{value.hex()} (should be 3 bytes)"
    kind = "UNDI" if value[0] == 1 else f"interface type {value[0]}"
    return f"{kind} {value[1]}.{value[2]} ({value[0]}.{value[1]}.{value[2]})"


def _arch(value: bytes) -> str:
    if len(value) < 2 or len(value) % 2:
        return f"{value.hex()} (odd length: malformed)"
    arches = [int.from_bytes(value[i : i + 2], "big") for i in range(0, len(value), 2)]
    first = arches[0]
    firmware = firmware_for_arch(first)
    text = f"{first} = {arch_label(first)}"
    if firmware is Firmware.UNKNOWN:
        text += " → no loader pxeforge knows for it"
    else:
        loaders = " or ".join(firmware_loaders(firmware))
        text += f" → {firmware.value} firmware (loader {loaders})"
    if first in (ClientArch.X64_UEFI, ClientArch.EBC):
        text += "; 7 and 9 both mean x64 UEFI (RFC 4578 erratum)"
    if len(arches) > 1:
        text += f"; also lists {', '.join(str(a) for a in arches[1:])}"
    return text


_EB_VERSION, _EB_BUS_ID, _EB_PRIORITY = 0xEB, 0xB1, 0x01


def _ipxe_encap(value: bytes) -> str:
    try:
        subs = pxe.parse_ipxe_encap(value)
    except DhcpError as exc:
        return f"{value.hex()} (malformed: {exc})"
    bits: list[str] = []
    if len(subs.get(_EB_VERSION, b"")) == 3:
        bits.append("iPXE " + ".".join(str(b) for b in subs[_EB_VERSION]))
    bus = subs.get(_EB_BUS_ID, b"")
    if len(bus) == 5 and bus[0] == 1:
        bits.append(f"NIC PCI {bus[1:3].hex()}:{bus[3:5].hex()}")
    features: list[str] = []
    settings: list[str] = []
    for code, sub in subs.items():
        if code in (_EB_VERSION, _EB_BUS_ID):
            continue
        if 0x10 <= code <= 0x4F:
            try:
                name = pxe.IpxeFeature(code).name
            except ValueError:
                name = f"feature-{code:#04x}"
            version = int.from_bytes(sub, "big") if sub else 0
            features.append(name if version == 1 else f"{name} v{version}")
            continue
        try:
            sname = pxe.IpxeSetting(code).name.lower().replace("_", "-")
        except ValueError:
            sname = f"{code:#04x}"
        if code == pxe.IpxeSetting.NO_PXEDHCP and sub == b"\x01":
            settings.append("no-pxedhcp=1 (do not wait for ProxyDHCP)")
        elif code == _EB_PRIORITY and len(sub) == 1:
            settings.append(f"priority={int.from_bytes(sub, 'big', signed=True)}")
        else:
            settings.append(f"{sname}={sub.hex()}")
    if features:
        bits.append("features " + " ".join(features))
    bits.extend(settings)
    return "; ".join(bits) if bits else "empty"


def _pxe_vendor(value: bytes) -> str:
    try:
        subs = pxe.parse_pxe_vendor_options(value)
    except DhcpError:
        return value.hex()
    bits: list[str] = []
    for code, sub in subs.items():
        if code == pxe.PxeVendorOption.DISCOVERY_CONTROL and len(sub) == 1:
            flags = pxe.DiscoveryControl(sub[0] & 0x0F)
            names = [
                (f.name or "").lower().replace("_", "-") for f in pxe.DiscoveryControl if f in flags
            ]
            extra = " (boot the offered file at once, no menu)" if sub[0] & 8 else ""
            bits.append(f"discovery-control={sub[0]} {'+'.join(names)}{extra}")
        else:
            try:
                name = pxe.PxeVendorOption(code).name.lower().replace("_", "-")
            except ValueError:
                name = str(code)
            bits.append(f"{name}={sub.hex()}")
    return "PXE: " + "; ".join(bits) if bits else "PXE: empty"


def _user_class(p: Packet, value: bytes) -> str:
    classes = pxe.user_classes(p)
    printable = all(32 <= b < 127 for b in value)
    shape = "bare string, as iPXE sends it" if printable else "RFC 3004 list"
    text = ", ".join(f'"{c}"' for c in classes)
    if pxe.IPXE_USER_CLASS in classes:
        return f"{text} ({shape}) → the client is iPXE"
    return f"{text} ({shape})"


def explain_option(p: Packet, code: int, value: bytes) -> str:
    """One option's value in words (``value`` is the raw option as the packet holds it)."""
    if code == Option.MESSAGE_TYPE and len(value) == 1:
        try:
            return MessageType(value[0]).name
        except ValueError:
            return f"unknown type {value[0]}"
    if code == Option.CLIENT_ARCH:
        return _arch(value)
    if code == Option.CLIENT_NDI:
        return _ndi(value)
    if code == Option.CLIENT_UUID:
        return _uuid(value)
    if code == Option.IPXE_ENCAP:
        return _ipxe_encap(value)
    if code == Option.USER_CLASS:
        return _user_class(p, value)
    if code == Option.VENDOR_CLASS:
        text = value.decode("latin-1").rstrip("\0")
        return f'"{text}" ({_vendor_class(text)})'
    if code == Option.PARAMETER_REQUEST_LIST:
        return request_list(value)
    if code == Option.CLIENT_ID:
        return _client_id(value)
    if code == Option.VENDOR_SPECIFIC:
        if pxe.is_pxe_client(p) or p.op == 2:
            return _pxe_vendor(value)
        return value.hex()
    if code == Option.MAX_MESSAGE_SIZE and len(value) == 2:
        return f"{int.from_bytes(value, 'big')} bytes"
    if code in _IP_ONE and len(value) == 4:
        return str(IPv4Address(value))
    if code in _IP_LIST:
        ips = _ips(value)
        if ips is not None:
            return ips
    if code in _SECONDS and len(value) == 4:
        seconds = int.from_bytes(value, "big")
        return f"{seconds} s ({_duration(seconds)})" if seconds >= 60 else f"{seconds} s"
    if code in _U16 and len(value) == 2:
        return str(int.from_bytes(value, "big"))
    if code in _U8 and len(value) == 1:
        return str(value[0])
    if code in _BOOL and len(value) == 1:
        return "yes" if value[0] else "no"
    if code in _TEXT:
        return _text(value)
    if code == Option.PXELINUX_MAGIC:
        return "f1:00:74:7e (pxelinux honours 209–211)" if value == b"\xf1\x00t~" else value.hex()
    if code == Option.DOMAIN_SEARCH:
        return _domain_search(value)
    return value.hex() if value else "(empty)"


def _domain_search(value: bytes) -> str:
    """RFC 3397: DNS names, possibly compressed; shown as text, or hex when odd."""
    names: list[str] = []
    i = 0
    labels: list[str] = []
    while i < len(value):
        length = value[i]
        if length == 0:
            names.append(".".join(labels))
            labels = []
            i += 1
            continue
        if length & 0xC0:
            return value.hex()
        labels.append(value[i + 1 : i + 1 + length].decode("latin-1"))
        i += 1 + length
    return ", ".join(names) if names else value.hex()


# -- boot files ------------------------------------------------------------------------------


class FileKind(enum.Enum):
    """What a boot file name looks like it is for."""

    BIOS = "bios"  # a PXE NBP for legacy BIOS: pxelinux.0, undionly.kpxe, *.pxe, *.0
    EFI_X64 = "efi-x64"
    EFI_IA32 = "efi-ia32"
    EFI_ARM64 = "efi-arm64"
    EFI_ARM32 = "efi-arm32"
    EFI = "efi"  # an EFI binary whose architecture the name does not tell
    URL = "url"  # an http(s):// URL: for iPXE or UEFI HTTP boot clients
    SCRIPT = "script"  # an iPXE script by name (*.ipxe)
    UNKNOWN = "unknown"


_EFI_ARCH = (
    (re.compile(r"aa64|arm64|aarch64"), FileKind.EFI_ARM64),
    (re.compile(r"ia32|i386|x86(?!_?64)"), FileKind.EFI_IA32),
    (re.compile(r"x64|x86_64|amd64"), FileKind.EFI_X64),
    (re.compile(r"arm"), FileKind.EFI_ARM32),
)
_BIOS_SUFFIXES = (".0", ".kpxe", ".kkpxe", ".kkkpxe", ".pxe", ".com", ".lkrn", ".n12")
_IPXE_LOADERS = re.compile(r"(undionly|ipxe|snponly|snp)[^/]*\.(k*pxe|efi|lkrn|usb)$")


def file_kind(name: str) -> FileKind:
    """Guess what ``name`` is for from its spelling alone."""
    low = name.strip().lower()
    if low.startswith(("http://", "https://")):
        return FileKind.URL
    base = low.rsplit("/", 1)[-1]
    if base.endswith(".ipxe"):
        return FileKind.SCRIPT
    if base.endswith(".efi") or base.startswith(("shim", "grubnet", "bootx64", "bootaa64")):
        for pattern, kind in _EFI_ARCH:
            if pattern.search(base):
                return kind
        return FileKind.EFI
    if base.endswith(_BIOS_SUFFIXES):
        return FileKind.BIOS
    return FileKind.UNKNOWN


def is_ipxe_loader(name: str) -> bool:
    """``undionly.kpxe``, ``ipxe.efi``, ``snponly.efi``, ``ipxe.pxe`` … (by name)."""
    return bool(_IPXE_LOADERS.search(name.strip().lower().rsplit("/", 1)[-1]))


_FITS: dict[Firmware, frozenset[FileKind]] = {
    Firmware.BIOS: frozenset({FileKind.BIOS}),
    Firmware.EFI_X64: frozenset({FileKind.EFI_X64, FileKind.EFI}),
    Firmware.EFI_IA32: frozenset({FileKind.EFI_IA32, FileKind.EFI}),
    Firmware.EFI_ARM64: frozenset({FileKind.EFI_ARM64, FileKind.EFI}),
    Firmware.EFI_ARM32: frozenset({FileKind.EFI_ARM32, FileKind.EFI}),
    Firmware.HTTP_X64: frozenset({FileKind.EFI_X64, FileKind.EFI, FileKind.URL}),
    Firmware.HTTP_IA32: frozenset({FileKind.EFI_IA32, FileKind.EFI, FileKind.URL}),
    Firmware.HTTP_ARM64: frozenset({FileKind.EFI_ARM64, FileKind.EFI, FileKind.URL}),
    Firmware.HTTP_ARM32: frozenset({FileKind.EFI_ARM32, FileKind.EFI, FileKind.URL}),
}


def loader_fits(firmware: Firmware, ipxe: bool, name: str) -> bool | None:
    """Whether a client of this firmware can run ``name``; None when we cannot tell.

    iPXE runs scripts and URLs on any platform; plain PXE firmware only TFTP file names of
    its own architecture (and UEFI HTTP-boot firmware URLs too).
    """
    kind = file_kind(name)
    if kind is FileKind.UNKNOWN or firmware is Firmware.UNKNOWN:
        return None
    if ipxe and kind in (FileKind.URL, FileKind.SCRIPT):
        return True
    if kind is FileKind.SCRIPT:
        return False  # PXE firmware would try to execute the script text
    return kind in _FITS.get(firmware, frozenset())
