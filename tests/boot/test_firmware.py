"""The option-93 → firmware table and the (firmware, method) → loader table."""

from __future__ import annotations

import pytest

from pxeforge.boot.firmware import (
    FIRMWARE_BY_ARCH,
    LOADERS,
    ClientArch,
    firmware_for_arch,
    loader_for,
)
from pxeforge.boot.machine import Firmware
from pxeforge.config import BootMethod

P, I = BootMethod.PXELINUX, BootMethod.IPXE  # noqa: E741


@pytest.mark.parametrize(
    ("arch", "firmware"),
    [
        (0, Firmware.BIOS),
        (6, Firmware.EFI_IA32),
        (7, Firmware.EFI_X64),
        (9, Firmware.EFI_X64),  # RFC 4578 erratum: 7 and 9 alike
        (10, Firmware.EFI_ARM32),
        (11, Firmware.EFI_ARM64),
        (15, Firmware.HTTP_IA32),
        (16, Firmware.HTTP_X64),
        (18, Firmware.HTTP_ARM32),
        (19, Firmware.HTTP_ARM64),
        (2, Firmware.UNKNOWN),  # Itanium
        (17, Firmware.UNKNOWN),  # EBC over HTTP
        (20, Firmware.UNKNOWN),  # PC/AT BIOS over HTTP
        (27, Firmware.UNKNOWN),  # RISC-V 64 UEFI
        (41, Firmware.UNKNOWN),
        (0xFFFF, Firmware.UNKNOWN),
        (None, Firmware.UNKNOWN),
    ],
)
def test_firmware_for_arch(arch: int | None, firmware: Firmware) -> None:
    assert firmware_for_arch(arch) is firmware


def test_iana_registry_numbers() -> None:
    assert [a.value for a in ClientArch] == list(range(42))
    assert ClientArch.X64_UEFI == 7 and ClientArch.EBC == 9
    assert ClientArch.X64_UEFI_HTTP == 16 and ClientArch.ARM64_UEFI_HTTP == 19
    assert ClientArch.LOONGARCH64_UEFI == 39


def test_http_arches_are_http_firmware() -> None:
    for arch, firmware in FIRMWARE_BY_ARCH.items():
        assert firmware.is_http_boot == ClientArch(arch).name.endswith("_HTTP")
        assert firmware is not Firmware.UNKNOWN


@pytest.mark.parametrize(
    ("firmware", "pxelinux", "ipxe"),
    [
        (Firmware.BIOS, "pxelinux.0", "undionly.kpxe"),
        (Firmware.EFI_X64, "bootx64.efi", "snponly.efi"),
        (Firmware.EFI_IA32, "bootia32.efi", "snponly-ia32.efi"),
        (Firmware.EFI_ARM64, "bootaa64.efi", "snponly-arm64.efi"),
        (Firmware.HTTP_X64, "bootx64.efi", "snponly.efi"),
        (Firmware.HTTP_IA32, "bootia32.efi", "snponly-ia32.efi"),
        (Firmware.HTTP_ARM64, "bootaa64.efi", "snponly-arm64.efi"),
        (Firmware.EFI_ARM32, None, None),
        (Firmware.HTTP_ARM32, None, None),
        (Firmware.UNKNOWN, None, None),
    ],
)
def test_loader_for(firmware: Firmware, pxelinux: str | None, ipxe: str | None) -> None:
    assert loader_for(firmware, P) == pxelinux
    assert loader_for(firmware, I) == ipxe


def test_every_loader_is_a_plain_file_name() -> None:
    for name in LOADERS.values():
        assert name and "/" not in name and name == name.strip()
