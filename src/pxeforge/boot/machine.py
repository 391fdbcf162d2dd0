"""What a booting machine is, and what it should boot.

`Machine` is everything the boot plane learns about a client from its DHCP packet (and later
from TFTP/HTTP requests). `BootSpec` is the answer of a `Booter`: a kernel, initrds and a
command line, or an iPXE script. Both are plain frozen values with no behaviour.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from ipaddress import IPv4Address

__all__ = ["BootSpec", "Firmware", "Machine", "normalize_mac"]


class Firmware(enum.Enum):
    """Which boot loader family a client can run. Chosen from DHCP option 93 only."""

    BIOS = "bios"  # x86 legacy PXE (arch 0)
    EFI_IA32 = "efi-ia32"  # 32-bit x86 UEFI (arch 6)
    EFI_X64 = "efi-x64"  # x86-64 UEFI PXE (arch 7 and 9, treated alike: RFC 4578 erratum)
    EFI_ARM32 = "efi-arm32"  # arch 10
    EFI_ARM64 = "efi-arm64"  # arch 11
    HTTP_IA32 = "http-ia32"  # UEFI HTTP boot, arch 15
    HTTP_X64 = "http-x64"  # UEFI HTTP boot, arch 16
    HTTP_ARM32 = "http-arm32"  # arch 18
    HTTP_ARM64 = "http-arm64"  # arch 19
    UNKNOWN = "unknown"

    @property
    def is_http_boot(self) -> bool:
        return self.value.startswith("http-")

    @property
    def is_efi(self) -> bool:
        return self is not Firmware.BIOS and self is not Firmware.UNKNOWN


def normalize_mac(mac: str | bytes) -> str:
    """Return a MAC as lower-case ``aa:bb:cc:dd:ee:ff``; accepts bytes, ``-``, ``:`` or bare hex."""
    if isinstance(mac, bytes):
        if len(mac) != 6:
            raise ValueError(f"a MAC address has 6 bytes, not {len(mac)}")
        return ":".join(f"{b:02x}" for b in mac)
    hexdigits = mac.strip().lower().replace(":", "").replace("-", "").replace(".", "")
    if len(hexdigits) != 12 or any(c not in "0123456789abcdef" for c in hexdigits):
        raise ValueError(f"not a MAC address: {mac!r}")
    return ":".join(hexdigits[i : i + 2] for i in range(0, 12, 2))


@dataclass(frozen=True, slots=True)
class Machine:
    """A network-booting client as seen on the wire.

    ``arch`` is the raw option-93 value (None when absent), ``firmware`` its meaning.
    ``uuid`` is the SMBIOS UUID from option 97 in canonical text form (first three fields
    already byte-swapped from the wire's little-endian), as pxelinux uses it.
    """

    mac: str
    arch: int | None = None
    firmware: Firmware = Firmware.UNKNOWN
    uuid: str | None = None
    ipxe: bool = False  # option 77 "iPXE" or option 175 present
    http_client: bool = False  # option 60 starts with "HTTPClient"
    ip: IPv4Address | None = None


@dataclass(frozen=True, slots=True)
class BootSpec:
    """What to boot. Kernel and initrds are *file references* resolved by the booter.

    A reference is either a path relative to the boot root (``"vmlinuz"``) or an absolute URL
    (``"http://…"``) handed to the client as is. ``ipxe_script``, when set, replaces the
    generated iPXE script. ``extra`` carries renderer options (e.g. ``{"ks": url}``).
    """

    kernel: str
    initrds: tuple[str, ...] = ()
    cmdline: str = ""
    message: str = ""
    ipxe_script: str | None = None
    localboot: bool = False  # boot from local disk instead of the kernel
    extra: dict[str, str] = field(default_factory=dict)
