"""The RPM reader against rpmbuild-made packages, with rpm and ``rpm2cpio | cpio`` as oracles."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from pxeforge.assets.rpm import RpmPackage, Tag, parse_header
from pxeforge.errors import AssetError
from pxeforge.ramdisk.compress import Compression

from .conftest import fake_pe

PAYLOADS = {
    "w9.gzdio": Compression.GZIP,
    "w2.xzdio": Compression.XZ,
    "w19.zstdio": Compression.ZSTD,
    "w9.bzdio": Compression.BZIP2,
}

SHIM = fake_pe(b"fake shim " * 500)
GRUB = fake_pe(b"fake grub " * 900)


@pytest.fixture(scope="module", params=list(PAYLOADS))
def shim_rpm(request: pytest.FixtureRequest, build_rpm: Callable[..., Path]) -> Path:
    """A shim-x64-like rpm, the layout of the seed's CentOS notes."""
    return build_rpm(
        "shim-x64",
        request.param,
        files={
            "/boot/efi/EFI/centos/shim.efi": SHIM,
            "/boot/efi/EFI/centos/grubx64.efi": GRUB,
            "/boot/efi/EFI/centos/mmx64.efi": fake_pe(b"mok manager"),
            "/boot/efi/EFI/BOOT/BOOTX64.EFI": SHIM,
        },
        symlinks={"/boot/efi/EFI/centos/shimx64.efi": "shim.efi"},
        hardlinks={"/boot/efi/EFI/centos/grubx64-copy.efi": "/boot/efi/EFI/centos/grubx64.efi"},
    )


def _rpm_q(rpm: Path, fmt: str) -> str:
    return subprocess.run(
        ["rpm", "-qp", "--nosignature", "--nodigest", "--qf", fmt, str(rpm)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _snapshot(d: Path) -> dict[str, tuple[object, ...]]:
    out: dict[str, tuple[object, ...]] = {}
    for top, dirs, files in os.walk(d):
        for n in dirs + files:
            p = Path(top) / n
            s = p.lstat()
            rel = os.path.relpath(p, d)
            if stat.S_ISLNK(s.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(s.st_mode):
                out[rel] = ("dir", stat.S_IMODE(s.st_mode))
            else:
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
                out[rel] = ("file", stat.S_IMODE(s.st_mode), s.st_mtime, s.st_nlink, digest)
    return out


def test_headers_match_rpm(shim_rpm: Path) -> None:
    pkg = RpmPackage.open(shim_rpm)
    expect = _rpm_q(shim_rpm, "%{NAME}|%{VERSION}|%{RELEASE}|%{ARCH}|%{PAYLOADCOMPRESSOR}|"
                    "%{PAYLOADFORMAT}|%{SOURCERPM}")  # fmt: skip
    assert expect == "|".join(
        [
            pkg.name,
            pkg.header.string(Tag.VERSION),
            pkg.header.string(Tag.RELEASE),
            pkg.arch,
            pkg.payload_compressor,
            pkg.payload_format,
            pkg.source,
        ]
    )
    assert pkg.version == "15.8-3.el7"
    listed = _rpm_q(shim_rpm, "[%{FILENAMES}\\n]").splitlines()
    assert pkg.file_list() == listed
    # detected by magic, told by rpm from the header tag: the same, and each kind is covered
    assert pkg.compression.value == _rpm_q(shim_rpm, "%{PAYLOADCOMPRESSOR}")
    assert pkg.compression in PAYLOADS.values()


def test_extract_matches_rpm2cpio_cpio(shim_rpm: Path, tmp_path: Path) -> None:
    gnu, ours = tmp_path / "gnu", tmp_path / "ours"
    gnu.mkdir()
    subprocess.run(f"rpm2cpio {shim_rpm} | cpio --quiet -idm", shell=True, cwd=gnu, check=True)
    made = RpmPackage.open(shim_rpm).extract(ours)
    assert "boot/efi/EFI/centos/shim.efi" in made
    snap = _snapshot(ours)
    assert snap == _snapshot(gnu)
    assert snap["boot/efi/EFI/centos/shimx64.efi"] == ("link", "shim.efi")
    assert snap["boot/efi/EFI/centos/grubx64-copy.efi"][3] == 2  # a real hard link
    assert (ours / "boot/efi/EFI/centos/shim.efi").read_bytes() == SHIM


def test_read_follows_links(shim_rpm: Path) -> None:
    pkg = RpmPackage.open(shim_rpm)
    got = pkg.read(
        [
            "./boot/efi/EFI/centos/shimx64.efi",
            "/boot/efi/EFI/centos/grubx64-copy.efi",
            "boot/efi/EFI/BOOT/BOOTX64.EFI",
        ]
    )
    assert list(got.values()) == [SHIM, GRUB, SHIM]
    files = pkg.files()
    assert files["boot/efi/EFI/centos/shimx64.efi"].kind == "symlink"
    assert {files[n].kind for n in pkg.names()} <= {"file", "symlink", "hardlink"}
    with pytest.raises(AssetError, match="no 'boot/efi/EFI/centos/nothing.efi'"):
        pkg.read_one("boot/efi/EFI/centos/nothing.efi")


def test_truncated_and_corrupt_rpms(shim_rpm: Path) -> None:
    raw = shim_rpm.read_bytes()
    for cut in [0, 50, 96, 100, 200, 1000, 3000, len(raw) - 200, len(raw) - 1]:
        with pytest.raises(AssetError):
            list(RpmPackage.parse(raw[:cut]).entries())
    bad = bytearray(raw)
    bad[96 + 8 : 96 + 12] = (0x7FFFFFFF).to_bytes(4, "big")  # absurd index count
    with pytest.raises(AssetError, match="absurd header"):
        RpmPackage.parse(bytes(bad))
    with pytest.raises(AssetError, match="no header magic"):
        parse_header(b"\x00" * 64, 0)
    with pytest.raises(AssetError, match="not an rpm"):
        RpmPackage.parse(b"!<arch>\n" + bytes(200))
