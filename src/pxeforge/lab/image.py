"""A small whole-disk image that boots on BIOS *and* UEFI: what the lab deploys.

Theory of operation
-------------------
An image deploy ends when the machine boots its own disk, so a deploy test needs a disk image
that proves it booted: `build_disk_image` makes one (≤ 32 MiB, a few seconds) and the system
on it prints ``PXEFORGE-DEPLOYED <token> boot_mode=<bios|uefi>`` on the serial console
(`DiskImage.marker`), then idles — the node stays powered on, as a deployed machine does.

Layout (an ``msdos`` partition table, so both firmware kinds read it)::

    LBA 0        MBR: syslinux's ``mbr.bin`` boot code (boots the active partition), one
                 partition entry: active, type 0x0e (FAT16, LBA), LBA 2048 to the end
    LBA 2048     FAT16 "PXEFORGE" (mkfs.fat, hidden sectors 2048):
                   ldlinux.sys, ldlinux.c32   BIOS syslinux (``syslinux --install``, mtools:
                                              nothing is mounted)
                   EFI/BOOT/BOOTX64.EFI       syslinux.efi (efi64): UEFI's removable-media
                   EFI/BOOT/ldlinux.e64       loader, found by OVMF on any FAT partition
                   syslinux.cfg               at the top (BIOS) and beside BOOTX64.EFI (UEFI)
                   EFI/BOOT/syslinux.cfg
                   vmlinuz, initrd.gz         the kernel and a busybox initramfs

BIOS: SeaBIOS → mbr.bin → the partition's boot sector → ldlinux.sys → syslinux.cfg. UEFI:
OVMF's boot manager (or GRUB's ``chainloader`` / iPXE's ``exit`` on pxeforge's local boot
answer) → ``\\EFI\\BOOT\\BOOTX64.EFI`` → syslinux.efi reads the config in its own directory.
Both boot ``/vmlinuz`` with ``console=ttyS0`` and ``pxeforge.deployed=<token>``.

The kernel is any x86-64 Linux with a built-in serial console and initramfs support — the
lab's Debian kernel (`pxeforge.lab.guest`). The initramfs is the host's static busybox and a
generated ``/init`` (`deployed_init`); no modules: it needs neither disk nor network.

`mbr` and `syslinux_cfg` are pure; the rest runs ``mkfs.fat`` (dosfstools), ``mmd``/``mcopy``
(mtools) and ``syslinux`` (Debian package syslinux), and reads ``mbr.bin``, ``syslinux.efi`` and
``ldlinux.e64`` from syslinux-common and syslinux-efi. A missing tool is an `AssetError`
naming the package.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pxeforge.errors import AssetError
from pxeforge.lab.guest import BUSYBOX, build_initramfs

__all__ = [
    "DEFAULT_IMAGE_MB",
    "DEPLOYED_MARKER",
    "DiskImage",
    "SyslinuxFiles",
    "build_disk_image",
    "deployed_init",
    "mbr",
    "syslinux_cfg",
]

DEPLOYED_MARKER: Final = "PXEFORGE-DEPLOYED"
DEFAULT_IMAGE_MB: Final = 24
SECTOR: Final = 512
PARTITION_START: Final = 2048  # LBA: 1 MiB, the usual alignment
PARTITION_TYPE_FAT16_LBA: Final = 0x0E
MBR_BOOTCODE_MAX: Final = 440  # bytes before the disk signature
VOLUME_LABEL: Final = "PXEFORGE"
VOLUME_ID: Final = "70786667"  # fixed: two builds with one token are the same bytes


@dataclass(frozen=True, slots=True)
class SyslinuxFiles:
    """Where Debian's syslinux packages put the pieces (overridable for other layouts)."""

    mbr_bin: Path = Path("/usr/lib/syslinux/mbr/mbr.bin")  # syslinux-common
    efi64: Path = Path("/usr/lib/SYSLINUX.EFI/efi64/syslinux.efi")  # syslinux-efi
    ldlinux_e64: Path = Path("/usr/lib/syslinux/modules/efi64/ldlinux.e64")  # syslinux-common
    installer: str = "syslinux"  # syslinux (mtools flavour: writes into an unmounted image)


@dataclass(frozen=True, slots=True)
class DiskImage:
    path: Path
    size: int  # bytes
    sha256: str
    token: str

    @property
    def marker(self) -> str:
        """What the deployed system prints (followed by `` boot_mode=bios`` or ``=uefi``)."""
        return f"{DEPLOYED_MARKER} {self.token}"


def _chs(lba: int) -> bytes:
    """The 3-byte CHS address of ``lba`` (255 heads, 63 sectors), clamped as tools do."""
    cyl, rest = divmod(lba, 255 * 63)
    head, sector = divmod(rest, 63)
    if cyl > 1023:
        cyl, head, sector = 1023, 254, 62
    return bytes([head, ((cyl >> 2) & 0xC0) | (sector + 1), cyl & 0xFF])


def mbr(bootcode: bytes, start: int, sectors: int, ptype: int = PARTITION_TYPE_FAT16_LBA) -> bytes:
    """An MBR sector: ``bootcode`` and one active partition of ``sectors`` from LBA ``start``."""
    if len(bootcode) > MBR_BOOTCODE_MAX:
        raise ValueError(f"MBR boot code is {len(bootcode)} bytes; at most 440 fit")
    if start < 1 or sectors < 1 or start + sectors > 0xFFFFFFFF:
        raise ValueError(f"partition LBA {start}+{sectors} does not fit an MBR")
    entry = (
        b"\x80"
        + _chs(start)
        + bytes([ptype])
        + _chs(start + sectors - 1)
        + struct.pack("<II", start, sectors)
    )
    sector = bootcode.ljust(MBR_BOOTCODE_MAX, b"\0") + b"PXFG" + b"\0\0" + entry
    return sector.ljust(510, b"\0") + b"\x55\xaa"


def syslinux_cfg(token: str, cmdline: str = "") -> str:
    """The one syslinux.cfg (BIOS and EFI read the same syntax)."""
    append = f"console=ttyS0,115200 quiet pxeforge.deployed={token} {cmdline}".strip()
    return (
        "SERIAL 0 115200\n"
        "DEFAULT deployed\n"
        "PROMPT 0\n"
        "TIMEOUT 0\n"
        "LABEL deployed\n"
        "    LINUX /vmlinuz\n"
        "    INITRD /initrd.gz\n"
        f"    APPEND {append}\n"
    )


def deployed_init(token: str) -> str:
    """The deployed system's ``/init``: say who it is on the console, then idle."""
    return f"""\
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mode=bios
[ -d /sys/firmware/efi ] && mode=uefi
echo "{DEPLOYED_MARKER} {token} boot_mode=$mode kernel=$(uname -r)"
while :; do sleep 3600; done
"""


def _check_token(token: str) -> None:
    if not token or not all(c.isascii() and (c.isalnum() or c in "-_.") for c in token):
        raise ValueError(f"image token {token!r}: letters, digits, '-', '_' or '.' only")


def _run(argv: Sequence[str], package: str) -> None:
    if shutil.which(argv[0]) is None:
        raise AssetError(f"{argv[0]} not found: apt-get install {package}")
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    proc = subprocess.run(list(argv), capture_output=True, text=True, env=env, timeout=120)
    if proc.returncode != 0:
        raise AssetError(
            f"{' '.join(argv)} failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-500:]}"
        )


def _read(path: Path, package: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise AssetError(f"{path}: {exc.strerror} (apt-get install {package})") from None


def build_disk_image(
    out: Path,
    *,
    kernel: Path,
    token: str,
    size_mb: int = DEFAULT_IMAGE_MB,
    cmdline: str = "",
    busybox: Path = BUSYBOX,
    syslinux: SyslinuxFiles = SyslinuxFiles(),
) -> DiskImage:
    """Write the image to ``out`` (see the module docstring) and describe it."""
    _check_token(token)
    if not 8 <= size_mb <= 1024:
        raise ValueError(f"image size {size_mb} MiB: 8-1024")
    bootcode = _read(syslinux.mbr_bin, "syslinux-common")
    efi = _read(syslinux.efi64, "syslinux-efi")
    ldlinux_e64 = _read(syslinux.ldlinux_e64, "syslinux-common")
    initrd = build_initramfs(deployed_init(token), _read(busybox, "busybox-static"), {})
    config = syslinux_cfg(token, cmdline).encode()
    sectors = size_mb * 1024 * 1024 // SECTOR - PARTITION_START

    with tempfile.TemporaryDirectory(prefix="pxeforge-image-") as tmp:
        work = Path(tmp)
        fs = work / "fs.img"
        files = {"initrd.gz": initrd, "syslinux.cfg": config, "BOOTX64.EFI": efi}
        files["ldlinux.e64"] = ldlinux_e64
        for name, data in files.items():
            (work / name).write_bytes(data)
        _run(
            ["mkfs.fat", "-F", "16", "-n", VOLUME_LABEL, "-i", VOLUME_ID, "--invariant"]
            + ["-h", str(PARTITION_START), "-C", str(fs), str(sectors * SECTOR // 1024)],
            "dosfstools",
        )
        _run([syslinux.installer, "--install", str(fs)], "syslinux")
        image = f"-i{fs}"
        _run(["mmd", image, "::/EFI", "::/EFI/BOOT"], "mtools")
        copies = [
            (kernel, "::/vmlinuz"),
            (work / "initrd.gz", "::/initrd.gz"),
            (work / "syslinux.cfg", "::/syslinux.cfg"),
            (work / "syslinux.cfg", "::/EFI/BOOT/syslinux.cfg"),
            (work / "BOOTX64.EFI", "::/EFI/BOOT/BOOTX64.EFI"),
            (work / "ldlinux.e64", "::/EFI/BOOT/ldlinux.e64"),
        ]
        for src, dst in copies:
            _run(["mcopy", image, str(src), dst], "mtools")

        out.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        tmp_out = out.with_name(f".{out.name}.tmp")
        with open(tmp_out, "wb") as f, open(fs, "rb") as src_fs:
            head = mbr(bootcode, PARTITION_START, sectors).ljust(PARTITION_START * SECTOR, b"\0")
            f.write(head)
            digest.update(head)
            while chunk := src_fs.read(1 << 20):
                f.write(chunk)
                digest.update(chunk)
            size = f.tell()
        os.replace(tmp_out, out)
    if size != size_mb * 1024 * 1024:
        raise AssetError(f"{out}: {size} bytes, expected {size_mb} MiB (mkfs.fat rounded?)")
    return DiskImage(out, size, digest.hexdigest(), token)
