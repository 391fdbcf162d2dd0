"""The lab's deployable disk image: its MBR and config (pure) and the files it holds.

That it boots is shown where it matters, by the lab tests that deploy it or boot it from a
VM's disk on BIOS and on UEFI (tests/lab/test_lifecycle.py, tests/lab/test_local_boot.py):
each waits for the image's own /init to name its token and the firmware it found.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest

from pxeforge.errors import AssetError
from pxeforge.lab.guest import Guest, build_guest, default_cache_dir
from pxeforge.lab.image import (
    DEFAULT_IMAGE_MB,
    DEPLOYED_MARKER,
    PARTITION_START,
    DiskImage,
    SyslinuxFiles,
    build_disk_image,
    deployed_init,
    mbr,
    syslinux_cfg,
)

TOOLS = ("mkfs.fat", "mcopy", "syslinux")


def test_mbr_has_the_boot_code_and_one_active_partition() -> None:
    sector = mbr(b"\xfa" * 440, 2048, 47104)
    assert len(sector) == 512 and sector[510:] == b"\x55\xaa"
    assert sector[:440] == b"\xfa" * 440
    entry = sector[446:462]
    assert entry[0] == 0x80 and entry[4] == 0x0E
    assert struct.unpack("<II", entry[8:16]) == (2048, 47104)
    assert entry[1:4] == bytes([32, 33, 0])  # LBA 2048 = C/H/S 0/32/33 (255 heads, 63 sectors)
    assert sector[462:510] == bytes(48)  # no other partition
    with pytest.raises(ValueError):
        mbr(b"\0" * 441, 2048, 1)
    with pytest.raises(ValueError):
        mbr(b"", 0, 1)


def test_config_and_init_carry_the_token() -> None:
    cfg = syslinux_cfg("t0k", "foo=1")
    assert "    LINUX /vmlinuz\n" in cfg and "    INITRD /initrd.gz\n" in cfg
    assert "    APPEND console=ttyS0,115200 quiet pxeforge.deployed=t0k foo=1\n" in cfg
    init = deployed_init("t0k")
    assert f'echo "{DEPLOYED_MARKER} t0k boot_mode=$mode' in init
    assert DiskImage(Path("x"), 1, "0", "t0k").marker == f"{DEPLOYED_MARKER} t0k"


def _skip_without_tools() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {missing} (apt-get install dosfstools mtools syslinux syslinux-efi)")
    if not SyslinuxFiles().efi64.is_file():
        pytest.skip("needs syslinux-efi")


def test_bad_tokens_and_missing_files_are_refused(tmp_path: Path) -> None:
    kernel = tmp_path / "k"
    kernel.write_bytes(b"k")
    for bad in ("", "a b", "a;b", "é"):
        with pytest.raises(ValueError, match="token"):
            build_disk_image(tmp_path / "x.raw", kernel=kernel, token=bad)
    with pytest.raises(AssetError, match="syslinux-efi"):
        build_disk_image(
            tmp_path / "x.raw",
            kernel=kernel,
            token="t",
            syslinux=SyslinuxFiles(efi64=tmp_path / "nothing.efi"),
        )
    assert not (tmp_path / "x.raw").exists()


@pytest.fixture(scope="module")
def guest() -> Guest:
    try:
        return build_guest(default_cache_dir())
    except AssetError as exc:
        pytest.skip(f"no lab guest kernel: {exc}")


@pytest.fixture(scope="module")
def image(guest: Guest, tmp_path_factory: pytest.TempPathFactory) -> DiskImage:
    _skip_without_tools()
    out = tmp_path_factory.mktemp("image") / "disk.raw"
    started = time.monotonic()
    img = build_disk_image(out, kernel=guest.kernel, token="imgtest-1")
    print(f"image built in {time.monotonic() - started:.1f} s")
    return img


def _mdir(image: Path, path: str) -> str:
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    proc = subprocess.run(
        ["mdir", "-a", "-b", f"-i{image}@@{PARTITION_START * 512}", path],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return proc.stdout


def test_image_layout(image: DiskImage, guest: Guest) -> None:
    data = image.path.read_bytes()
    assert image.size == len(data) == DEFAULT_IMAGE_MB * 1024 * 1024
    assert hashlib.sha256(data).hexdigest() == image.sha256
    assert data[:440] == SyslinuxFiles().mbr_bin.read_bytes().ljust(440, b"\0")
    assert data[510:512] == b"\x55\xaa"
    boot = data[PARTITION_START * 512 : PARTITION_START * 512 + 512]
    assert boot[54:62] == b"FAT16   " and boot[510:] == b"\x55\xaa"
    assert struct.unpack("<I", boot[28:32])[0] == PARTITION_START  # hidden sectors
    top = _mdir(image.path, "::/")
    for name in ("::/vmlinuz", "::/initrd.gz", "::/syslinux.cfg", "::/ldlinux.sys"):
        assert name in top.splitlines(), top
    efi = _mdir(image.path, "::/EFI/BOOT")
    for name in ("BOOTX64.EFI", "ldlinux.e64", "syslinux.cfg"):
        assert f"::/EFI/BOOT/{name}" in efi.splitlines(), efi
    assert guest.kernel.read_bytes() in data  # FAT16 with one file written once: contiguous
