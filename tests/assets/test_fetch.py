"""Filling a boot root: from real Debian packages (apt-get download, a loopback mirror) and
from user-given .deb/.rpm files; the CLI through click's CliRunner."""

from __future__ import annotations

import hashlib
import http.server
import json
import lzma
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from pxeforge.assets.deb import DebPackage
from pxeforge.assets.fetch import (
    LOADERS,
    MANIFEST,
    check_loader,
    compare_versions,
    fetch_assets,
    read_manifest,
)
from pxeforge.cli.assets import assets
from pxeforge.errors import AssetError, ConfigError

from .conftest import fake_nbp, fake_pe

REQUIRED = ["pxelinux.0", "ldlinux.c32", "bootx64.efi", "grubx64.efi", "undionly.kpxe",
            "snponly.efi"]  # fmt: skip
LOADER = {ld.name: ld for ld in LOADERS}


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def assert_real_loaders(root: Path) -> None:
    """The files are the real programs: x86 PXE code, 32-bit ELF modules, x86-64 PE images."""
    for name in ("pxelinux.0", "undionly.kpxe"):
        data = (root / name).read_bytes()
        assert data[0] == 0xEA, name  # far jmp
        seg_off = int.from_bytes(data[3:5], "little") * 16 + int.from_bytes(data[1:3], "little")
        assert 0x7C00 <= seg_off < 0x7C00 + 0x200, name
    assert (root / "pxelinux.0").read_bytes()[:5] == b"\xea\x24\x7c\x00\x00"  # jmp 0:7c24
    for name in ("ldlinux.c32", "libutil.c32", "menu.c32"):
        assert (root / name).read_bytes()[:5] == b"\x7fELF\x01", name
    for name in ("bootx64.efi", "grubx64.efi", "snponly.efi"):
        data = (root / name).read_bytes()
        pe = int.from_bytes(data[0x3C:0x40], "little")
        assert data[:2] == b"MZ" and data[pe : pe + 6] == b"PE\x00\x00\x64\x86", name
    assert b"shim" in (root / "bootx64.efi").read_bytes()
    assert b"GNU GRUB" in (root / "grubx64.efi").read_bytes()
    assert b"iPXE" in (root / "snponly.efi").read_bytes()


def assert_manifest_true(root: Path) -> dict[str, dict[str, object]]:
    files = read_manifest(root)
    for name, rec in files.items():
        assert rec["sha256"] == _sha(root / name), name
        assert rec["size"] == (root / name).stat().st_size, name
    return files


# --------------------------------------------------------------------- pure parts


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="dpkg not installed")
def test_version_order_matches_dpkg() -> None:
    versions = [
        "1.0", "1.0-1", "1.0-2", "1.0~rc1", "1.0~~", "1:0.9", "0:1.0", "1.0a", "1.0+b1", "1.00",
        "6.04~git20190206.bf6db5b4+dfsg1-3", "3:6.04~git20190206.bf6db5b4+dfsg1-3", "2.06-13",
        "1+2.06+13+deb12u2", "1+2.06+13+deb12u1", "1.51~1+deb12u1+16.1-2~deb12u1", "10", "9",
        "1.0.0+git-20190125.36a4c85-5.1", "1.0.0+git-20190125.36a4c85-5", "a", "A", "1.0-1.1",
    ]  # fmt: skip
    for a in versions:
        for b in versions:
            ours = compare_versions(a, b)
            lt = subprocess.run(["dpkg", "--compare-versions", a, "lt", b]).returncode == 0
            eq = subprocess.run(["dpkg", "--compare-versions", a, "eq", b]).returncode == 0
            assert ours == (-1 if lt else 0 if eq else 1), (a, b)


def test_check_loader_refuses_the_wrong_kind() -> None:
    check_loader(LOADER["bootx64.efi"], fake_pe(b"x"))
    check_loader(LOADER["pxelinux.0"], fake_nbp(b"x" * 100))
    check_loader(LOADER["ldlinux.c32"], b"\x7fELF\x01\x01\x01")
    with pytest.raises(AssetError, match="bootx64.efi: not a PE"):
        check_loader(LOADER["bootx64.efi"], b"\x7fELF\x02 an ELF, not PE" + bytes(64))
    arm = bytearray(fake_pe(b"x"))
    arm[0x44:0x46] = (0xAA64).to_bytes(2, "little")
    with pytest.raises(AssetError, match="0xaa64 is not x86-64"):
        check_loader(LOADER["grubx64.efi"], bytes(arm))
    with pytest.raises(AssetError, match="no far jump"):
        check_loader(LOADER["undionly.kpxe"], fake_pe(b"x"))
    with pytest.raises(AssetError, match="outside the program"):
        check_loader(LOADER["pxelinux.0"], b"\xea\x00\x00\x00\xf0 jump to the BIOS")
    with pytest.raises(AssetError, match="not a 32-bit ELF"):
        check_loader(LOADER["menu.c32"], b"\x7fELF\x02 64-bit")


# --------------------------------------------------------------------- --from files


def test_from_rpms_like_the_seed(build_rpm: Callable[..., Path], tmp_path: Path) -> None:
    shim = build_rpm(
        "shim-x64", "w2.xzdio",
        files={"/boot/efi/EFI/centos/shim.efi": fake_pe(b"SHIM")},
    )  # fmt: skip
    grub = build_rpm(
        "grub2-efi-x64", "w19.zstdio",
        files={"/boot/efi/EFI/centos/grubx64.efi": fake_pe(b"GRUB")},
        version="2.02", release="0.87.el7.centos",
    )  # fmt: skip
    syslinux = build_rpm(
        "syslinux", "w9.gzdio",
        files={
            "/usr/share/syslinux/pxelinux.0": fake_nbp(b"PXELINUX" * 50),
            "/usr/share/syslinux/ldlinux.c32": b"\x7fELF\x01 ldlinux",
            "/usr/share/syslinux/menu.c32": b"\x7fELF\x01 menu",
        },
        version="4.05", release="15.el7",
    )  # fmt: skip
    root, cache = tmp_path / "root", tmp_path / "cache"
    result = fetch_assets(root, cache, files=[shim, grub, syslinux])
    assert not cache.exists()  # --from never downloads
    assert (root / "bootx64.efi").read_bytes().endswith(b"SHIM")
    assert (root / "grubx64.efi").read_bytes().endswith(b"GRUB")
    assert (root / "pxelinux.0").read_bytes().startswith(b"\xea\x05\x7c")
    by_name = {f.name: f for f in result.installed}
    assert set(by_name) == {"bootx64.efi", "grubx64.efi", "pxelinux.0", "ldlinux.c32", "menu.c32"}
    assert by_name["grubx64.efi"].version == "2.02-0.87.el7.centos"
    assert by_name["grubx64.efi"].member == "boot/efi/EFI/centos/grubx64.efi"
    assert by_name["bootx64.efi"].origin == "file"
    assert "undionly.kpxe" in result.missing and "snponly.efi" in result.missing
    files = assert_manifest_true(root)
    assert files["bootx64.efi"]["package"] == "shim-x64"
    assert files["bootx64.efi"]["source"] == "shim-x64-15.8-3.el7.src.rpm"
    assert sorted(p.name for p in root.iterdir()) == sorted([*by_name, MANIFEST])


def test_from_files_that_hold_no_loader(build_rpm: Callable[..., Path], tmp_path: Path) -> None:
    other = build_rpm("other", "w9.gzdio", files={"/usr/share/doc/other/README": b"hi"})
    with pytest.raises(AssetError, match="contains a boot loader pxeforge knows"):
        fetch_assets(tmp_path / "root", tmp_path / "cache", files=[other])
    wrong = build_rpm(
        "bad-shim", "w9.gzdio", files={"/boot/efi/EFI/centos/shim.efi": b"MZ but not PE"}
    )
    with pytest.raises(AssetError, match="bootx64.efi: not a PE"):
        fetch_assets(tmp_path / "root", tmp_path / "cache", files=[wrong])
    assert not (tmp_path / "root" / "bootx64.efi").exists()
    text = tmp_path / "notes.txt"
    text.write_text("not a package")
    with pytest.raises(AssetError, match="neither a .deb nor an .rpm"):
        fetch_assets(tmp_path / "root", tmp_path / "cache", files=[text])
    with pytest.raises(ConfigError, match="only amd64"):
        fetch_assets(tmp_path / "root", tmp_path / "cache", files=[text], arch="arm64")


def test_replacement_is_atomic_and_manifest_merges(
    build_rpm: Callable[..., Path], tmp_path: Path
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    old = root / "bootx64.efi"
    old.write_bytes(b"old contents")
    keep = tmp_path / "held-open-elsewhere"
    os.link(old, keep)  # an open TFTP transfer would hold the old inode like this
    shim = build_rpm("shim-a", "w9.gzdio", files={"/boot/efi/EFI/x/shimx64.efi": fake_pe(b"S")})
    grub = build_rpm("grub-a", "w9.gzdio", files={"/boot/efi/EFI/x/grubx64.efi": fake_pe(b"G")})
    fetch_assets(root, tmp_path / "c", files=[shim])
    assert keep.read_bytes() == b"old contents"  # replaced by rename, not rewritten in place
    assert old.stat().st_ino != keep.stat().st_ino
    fetch_assets(root, tmp_path / "c", files=[grub])
    files = assert_manifest_true(root)
    assert set(files) == {"bootx64.efi", "grubx64.efi"}  # the first run's record is kept
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []  # no temp files


def test_real_debs_as_files(debian_debs: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = fetch_assets(root, tmp_path / "cache", files=list(debian_debs.values()))
    assert result.missing == ()
    assert_real_loaders(root)
    shim = DebPackage.open(debian_debs["shim-signed"])
    assert (root / "bootx64.efi").read_bytes() == shim.read_one("usr/lib/shim/shimx64.efi.signed")
    files = assert_manifest_true(root)
    assert files["grubx64.efi"]["member"] == "usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed"
    assert files["grubx64.efi"]["package"] == "grub-efi-amd64-signed"
    assert files["ldlinux.c32"]["source"] == "syslinux"


# --------------------------------------------------------------------- mirror over loopback


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def mirror(debian_debs: dict[str, Path], tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A Debian-layout mirror of the real packages, served on 127.0.0.1 (ephemeral port)."""
    top = tmp_path / "mirror"
    stanzas = []
    for name, deb in debian_debs.items():
        pkg = DebPackage.open(deb)
        pool = Path("pool/main") / name[0] / name / deb.name.replace("%3a", "")
        (top / pool).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(deb, top / pool)
        stanzas.append(
            f"Package: {pkg.name}\nVersion: {pkg.version}\nArchitecture: {pkg.arch}\n"
            f"Filename: {pool}\nSize: {deb.stat().st_size}\nSHA256: {_sha(deb)}\n"
        )
        # an older version too: the newest must win
        stanzas.append(
            f"Package: {pkg.name}\nVersion: 0.1-1\nArchitecture: {pkg.arch}\n"
            f"Filename: pool/main/old/{name}_0.1-1.deb\nSize: 1\nSHA256: {'0' * 64}\n"
        )
    index = top / "dists/bookworm/main/binary-amd64"
    index.mkdir(parents=True)
    (index / "Packages.xz").write_bytes(lzma.compress("\n".join(stanzas).encode()))

    def handler(*args: object, **kw: object) -> _Quiet:
        return _Quiet(*args, directory=str(top), **kw)  # type: ignore[arg-type]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", top
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_mirror_download_then_offline(mirror: tuple[str, Path], tmp_path: Path) -> None:
    url, top = mirror
    root, cache = tmp_path / "root", tmp_path / "cache"
    events: list[str] = []
    result = fetch_assets(root, cache, mirror=url, progress=lambda e: events.append(e.kind))
    assert {f.origin for f in result.installed} == {"mirror"}
    assert "advance" in events
    assert_real_loaders(root)
    assert_manifest_true(root)
    # the mirror goes away: a warm run needs no network
    shutil.rmtree(top)
    result = fetch_assets(root, cache, mirror=url)
    assert {f.origin for f in result.installed} == {"cache"}
    with pytest.raises(AssetError, match="cannot download"):
        fetch_assets(root, cache, mirror=url, refresh=True)


def test_mirror_hash_mismatch_is_refused(mirror: tuple[str, Path], tmp_path: Path) -> None:
    url, top = mirror
    (deb,) = top.glob("pool/main/i/ipxe/*.deb")
    deb.write_bytes(deb.read_bytes()[:-1] + b"\x00")
    with pytest.raises(AssetError, match="does not match the index"):
        fetch_assets(tmp_path / "root", tmp_path / "cache", mirror=url)
    assert list((tmp_path / "cache" / "debs").glob("ipxe*")) == []


def test_file_mirror(mirror: tuple[str, Path], tmp_path: Path) -> None:
    _, top = mirror
    result = fetch_assets(tmp_path / "root", tmp_path / "cache", mirror=top.as_uri())
    assert len(result.installed) == len(LOADERS)
    with pytest.raises(ConfigError, match="scheme 'ftp'"):
        fetch_assets(tmp_path / "r2", tmp_path / "c2", mirror="ftp://example.invalid/debian")


# --------------------------------------------------------------------- the CLI, for real


def test_cli_fetch_real_download_then_warm(
    apt_ready: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pxeforge.cli.main import cli

    root, cache = tmp_path / "tftpboot", tmp_path / "cache"
    runner = CliRunner()
    res = runner.invoke(cli, ["assets", "fetch", "--root", str(root), "--cache", str(cache)])
    assert res.exit_code == 0, res.output
    for name in REQUIRED:
        assert (root / name).is_file(), name
        line = next(ln for ln in res.stdout.splitlines() if ln.startswith(str(root / name) + " "))
        assert f"sha256:{_sha(root / name)}" in line
        assert f" {(root / name).stat().st_size} " in line
    assert_real_loaders(root)
    files = assert_manifest_true(root)
    assert {files[n]["origin"] for n in REQUIRED} == {"apt"}
    assert files["bootx64.efi"]["package"] == "shim-signed"
    assert files["snponly.efi"]["package"] == "ipxe"
    assert f"manifest: {root / MANIFEST}" in res.stdout
    # warm: an apt-get that fails if called proves no download is attempted
    fake = tmp_path / "fake-bin"
    fake.mkdir()
    (fake / "apt-get").write_text("#!/bin/sh\necho 'no network allowed' >&2\nexit 1\n")
    (fake / "apt-get").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    before = {p.name: p.stat().st_mtime_ns for p in (cache / "debs").iterdir()}
    res = runner.invoke(assets, ["fetch", "--root", str(root), "--cache", str(cache)])
    assert res.exit_code == 0, res.output
    assert "cached: " in res.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (cache / "debs").iterdir()} == before
    assert {assert_manifest_true(root)[n]["origin"] for n in REQUIRED} == {"cache"}
    # with nothing cached, the fake apt-get's failure is reported, exit code 1
    res = runner.invoke(assets, ["fetch", "--root", str(root), "--cache", str(tmp_path / "c2")])
    assert res.exit_code == 1
    assert "apt-get download failed: no network allowed" in res.output


def test_cli_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    res = runner.invoke(assets, ["fetch", "--root", str(tmp_path / "r"), "--from", str(notes)])
    assert res.exit_code == 1
    assert "neither a .deb nor an .rpm" in res.output
    res = runner.invoke(assets, ["fetch", "--arch", "arm64"])
    assert res.exit_code == 2 and "arm64" in res.output
    res = runner.invoke(assets, ["fetch", "--from", str(tmp_path / "absent.rpm")])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_module_entry_point() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pxeforge.cli.assets", "fetch", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0
    assert "--mirror URL" in proc.stdout and "--from FILE" in proc.stdout


def test_manifest_document(build_rpm: Callable[..., Path], tmp_path: Path) -> None:
    shim = build_rpm("shim-m", "w9.gzdio", files={"/boot/efi/EFI/x/shim.efi": fake_pe(b"M")})
    fetch_assets(tmp_path / "root", tmp_path / "c", files=[shim])
    doc = json.loads((tmp_path / "root" / MANIFEST).read_text())
    assert doc["generator"] == "pxeforge assets fetch"
    assert set(doc["files"]["bootx64.efi"]) == {
        "size", "sha256", "package", "version", "source", "arch", "member", "package_file",
        "origin", "firmware",
    }  # fmt: skip
    assert doc["files"]["bootx64.efi"]["firmware"] == "uefi"
    assert doc["files"]["bootx64.efi"]["package_file"] == shim.name
