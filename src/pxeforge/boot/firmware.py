"""Which firmware a client runs, and which boot loader it gets: one table each.

Theory of operation
-------------------
A PXE or UEFI HTTP client names its pre-boot environment in DHCP option 93 (RFC 4578 §2.1);
the values are the IANA "Processor Architecture Types" registry (DHCPv6 parameters). That
number alone picks a `Firmware` (`FIRMWARE_BY_ARCH`), and the firmware plus the configured
`BootMethod` pick a loader file in the boot root (`LOADERS`), the names `pxeforge assets fetch`
installs. Nothing else chooses a loader: no vendor-class string matching.

Types 7 and 9 are both treated as x86-64 UEFI. RFC 4578 §2.1 named 7 "EFI BC" and 9
"EFI x86-64"; IANA had them the other way round, EDK2 follows IANA, and an RFC erratum (2016)
aligned the RFC with IANA (7 = x64 UEFI, 9 = EBC). Firmware of both vintages exists, and EFI
byte code clients do not exist in practice, so 9 means x64 too.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from types import MappingProxyType

from pxeforge.boot.machine import Firmware
from pxeforge.config import BootMethod

__all__ = [
    "FIRMWARE_BY_ARCH",
    "LOADERS",
    "ClientArch",
    "firmware_for_arch",
    "loader_for",
]


class ClientArch(IntEnum):
    """Option 93 values: IANA "Processor Architecture Types" (RFC 4578, RFC 5970)."""

    X86_BIOS = 0
    NEC_PC98 = 1  # deprecated
    ITANIUM = 2
    DEC_ALPHA = 3  # deprecated
    ARC_X86 = 4  # deprecated
    INTEL_LEAN_CLIENT = 5  # deprecated
    X86_UEFI = 6
    X64_UEFI = 7
    EFI_XSCALE = 8  # deprecated
    EBC = 9  # x64 UEFI in pre-erratum firmware
    ARM32_UEFI = 10
    ARM64_UEFI = 11
    POWERPC_OPEN_FIRMWARE = 12
    POWERPC_EPAPR = 13
    POWER_OPAL_V3 = 14
    X86_UEFI_HTTP = 15
    X64_UEFI_HTTP = 16
    EBC_HTTP = 17
    ARM32_UEFI_HTTP = 18
    ARM64_UEFI_HTTP = 19
    PC_AT_BIOS_HTTP = 20
    ARM32_UBOOT = 21
    ARM64_UBOOT = 22
    ARM32_UBOOT_HTTP = 23
    ARM64_UBOOT_HTTP = 24
    RISCV32_UEFI = 25
    RISCV32_UEFI_HTTP = 26
    RISCV64_UEFI = 27
    RISCV64_UEFI_HTTP = 28
    RISCV128_UEFI = 29
    RISCV128_UEFI_HTTP = 30
    S390_BASIC = 31
    S390_EXTENDED = 32
    MIPS32_UEFI = 33
    MIPS64_UEFI = 34
    SUNWAY32_UEFI = 35
    SUNWAY64_UEFI = 36
    LOONGARCH32_UEFI = 37
    LOONGARCH32_UEFI_HTTP = 38
    LOONGARCH64_UEFI = 39
    LOONGARCH64_UEFI_HTTP = 40
    ARM_RPIBOOT = 41


# Architectures we have loaders for. Every other type (Itanium, RISC-V, U-Boot, s390 …) is
# Firmware.UNKNOWN: we do not guess a loader for a machine we cannot boot.
FIRMWARE_BY_ARCH: Mapping[int, Firmware] = MappingProxyType(
    {
        ClientArch.X86_BIOS: Firmware.BIOS,
        ClientArch.X86_UEFI: Firmware.EFI_IA32,
        ClientArch.X64_UEFI: Firmware.EFI_X64,
        ClientArch.EBC: Firmware.EFI_X64,  # see the module docstring: 7 and 9 alike
        ClientArch.ARM32_UEFI: Firmware.EFI_ARM32,
        ClientArch.ARM64_UEFI: Firmware.EFI_ARM64,
        ClientArch.X86_UEFI_HTTP: Firmware.HTTP_IA32,
        ClientArch.X64_UEFI_HTTP: Firmware.HTTP_X64,
        ClientArch.ARM32_UEFI_HTTP: Firmware.HTTP_ARM32,
        ClientArch.ARM64_UEFI_HTTP: Firmware.HTTP_ARM64,
    }
)

_P, _I = BootMethod.PXELINUX, BootMethod.IPXE

# (firmware, method) → loader file name in the boot root. PXELINUX on UEFI means shim
# (signed, renamed to the removable-media name) which then loads grub from the same directory.
# HTTP-boot firmware gets the same files as URLs. No entry: we cannot boot that combination.
LOADERS: Mapping[tuple[Firmware, BootMethod], str] = MappingProxyType(
    {
        (Firmware.BIOS, _P): "pxelinux.0",
        (Firmware.BIOS, _I): "undionly.kpxe",
        (Firmware.EFI_X64, _P): "bootx64.efi",
        (Firmware.EFI_X64, _I): "snponly.efi",
        (Firmware.EFI_IA32, _P): "bootia32.efi",
        (Firmware.EFI_IA32, _I): "snponly-ia32.efi",
        (Firmware.EFI_ARM64, _P): "bootaa64.efi",
        (Firmware.EFI_ARM64, _I): "snponly-arm64.efi",
        (Firmware.HTTP_X64, _P): "bootx64.efi",
        (Firmware.HTTP_X64, _I): "snponly.efi",
        (Firmware.HTTP_IA32, _P): "bootia32.efi",
        (Firmware.HTTP_IA32, _I): "snponly-ia32.efi",
        (Firmware.HTTP_ARM64, _P): "bootaa64.efi",
        (Firmware.HTTP_ARM64, _I): "snponly-arm64.efi",
    }
)


def firmware_for_arch(arch: int | None) -> Firmware:
    """The firmware an option-93 value means; UNKNOWN when absent or unsupported."""
    if arch is None:
        return Firmware.UNKNOWN
    return FIRMWARE_BY_ARCH.get(arch, Firmware.UNKNOWN)


def loader_for(firmware: Firmware, method: BootMethod) -> str | None:
    """The loader file for this firmware and boot method, or None if there is none."""
    return LOADERS.get((firmware, method))
