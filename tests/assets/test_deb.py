"""The .deb reader against binutils ar, dpkg-deb and real Debian packages."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from pxeforge.assets.deb import (
    DebPackage,
    normalize_member,
    parse_control,
    read_ar,
)
from pxeforge.errors import AssetError
from pxeforge.ramdisk.compress import Compression, compress

needs = pytest.mark.skipif


def _run(argv: list[str], cwd: Path | None = None) -> bytes:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout


def ar_bytes(members: list[tuple[str, bytes]], bsd: bool = False) -> bytes:
    """A hand-made ar archive; BSD puts long names in front of the data (#1/N)."""
    out = bytearray(b"!<arch>\n")
    for name, data in members:
        raw = name.encode()
        if bsd and (len(raw) > 16 or " " in name):
            field, data = f"#1/{len(raw)}", raw + data
        else:
            field = name
        header = f"{field:<16}{0:<12}{0:<6}{0:<6}{0o100644:<8o}{len(data):<10}".encode() + b"`\n"
        assert len(header) == 60
        out += header + data + (b"\n" if len(data) % 2 else b"")
    return bytes(out)


def tar_bytes(members: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for m in members:
            if isinstance(m, tuple):
                ti, data = m
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            else:
                tf.addfile(m)
    return buf.getvalue()


def make_deb(
    path: Path,
    data_members: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]],
    kind: Compression = Compression.GZIP,
    bsd: bool = False,
) -> Path:
    suffix = {
        Compression.GZIP: ".gz",
        Compression.XZ: ".xz",
        Compression.ZSTD: ".zst",
        Compression.BZIP2: ".bz2",
        Compression.LZMA: ".lzma",
        Compression.NONE: "",
    }[kind]
    control = b"Package: hand-made\nVersion: 1:2.0-3\nArchitecture: all\nSource: src (2.0-1)\n"
    ctl = tar_bytes([(tarfile.TarInfo("./control"), control)])
    data = tar_bytes(data_members)
    path.write_bytes(
        ar_bytes(
            [
                ("debian-binary", b"2.0\n"),
                ("control.tar" + suffix, compress(ctl, kind)),
                ("data.tar" + suffix, compress(data, kind)),
            ],
            bsd=bsd,
        )
    )
    return path


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _link(name: str, target: str, hard: bool = False) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    ti.linkname = target
    return ti


# --------------------------------------------------------------------- ar


@needs(shutil.which("ar") is None, reason="binutils ar not installed")
def test_ar_index_matches_binutils(tmp_path: Path) -> None:
    names = ["short", "a-name-longer-than-sixteen.bin", "odd", "another-very-long-member-name"]
    for i, n in enumerate(names):
        (tmp_path / n).write_bytes(os.urandom(100 + i))  # odd and even sizes
    _run(["ar", "rc", "x.a", *names], cwd=tmp_path)
    archive = tmp_path / "x.a"
    with archive.open("rb") as f:
        members = [m for m in read_ar(f) if m.name != "//"]
        assert [m.name for m in members] == names
        for m in members:
            f.seek(m.offset)
            assert f.read(m.size) == _run(["ar", "p", str(archive), m.name])


def test_bsd_long_names(tmp_path: Path) -> None:
    raw = ar_bytes([("tiny", b"1"), ("a long bsd member name", b"xyz")], bsd=True)
    members = read_ar(io.BytesIO(raw))
    assert [(m.name, m.size) for m in members] == [("tiny", 1), ("a long bsd member name", 3)]
    assert raw[members[1].offset : members[1].offset + 3] == b"xyz"


def test_not_ar_and_broken_headers() -> None:
    with pytest.raises(AssetError, match="not an ar archive"):
        read_ar(io.BytesIO(b"PK\x03\x04 zip"))
    bad = bytearray(ar_bytes([("m", b"data")]))
    bad[8 + 58] = ord("x")
    with pytest.raises(AssetError, match="bad ar member header"):
        read_ar(io.BytesIO(bytes(bad)))
    bad = bytearray(ar_bytes([("m", b"data")]))
    bad[8 + 48 : 8 + 58] = b"12x4      "
    with pytest.raises(AssetError, match="bad size"):
        read_ar(io.BytesIO(bytes(bad)))


# --------------------------------------------------------------------- hand-made debs


@pytest.mark.parametrize(
    "kind",
    [
        Compression.GZIP,
        Compression.XZ,
        Compression.ZSTD,
        Compression.BZIP2,
        Compression.LZMA,
        Compression.NONE,
    ],
    ids=lambda k: k.value,
)
def test_every_data_tar_compression(tmp_path: Path, kind: Compression) -> None:
    deb = make_deb(
        tmp_path / "x.deb",
        [
            _file("./usr/lib/x/loader.efi", b"MZ loader"),
            _link("./usr/lib/x/alias.efi", "loader.efi"),
            _link("./usr/lib/y/abs.efi", "/usr/lib/x/loader.efi"),
            _link("./usr/lib/x/hard.efi", "./usr/lib/x/loader.efi", hard=True),
            _link("./usr/lib/dirlink", "x"),
        ],
        kind,
        bsd=kind is Compression.LZMA,
    )
    pkg = DebPackage.open(deb)
    assert (pkg.name, pkg.version, pkg.arch, pkg.source) == ("hand-made", "1:2.0-3", "all", "src")
    got = pkg.read(
        [
            "usr/lib/x/loader.efi",
            "./usr/lib/x/alias.efi",
            "/usr/lib/y/abs.efi",
            "usr/lib/x/hard.efi",
            "usr/lib/dirlink/loader.efi",
        ]
    )
    assert set(got.values()) == {b"MZ loader"}
    assert pkg.files()["usr/lib/x/alias.efi"].kind == "symlink"


def test_hostile_members_are_never_served(tmp_path: Path) -> None:
    deb = make_deb(
        tmp_path / "evil.deb",
        [
            _file("../../evil", b"escape"),
            _file("./ok/../../evil2", b"escape"),
            _file("/abs/file", b"absolute names are read as relative"),
            _link("./usr/bad", "../../../etc/passwd"),
            _link("./usr/loop1", "loop2"),
            _link("./usr/loop2", "loop1"),
            _link("./usr/dangling", "nothing-here"),
        ],
    )
    pkg = DebPackage.open(deb)
    assert sorted(pkg.files()) == ["abs/file", "usr/bad", "usr/dangling", "usr/loop1", "usr/loop2"]
    assert pkg.read_one("abs/file") == b"absolute names are read as relative"
    with pytest.raises(AssetError, match="climbs out"):
        pkg.read_one("usr/bad")
    with pytest.raises(AssetError, match="too many links"):
        pkg.read_one("usr/loop1")
    with pytest.raises(AssetError, match="no 'usr/nothing-here'"):
        pkg.read_one("usr/dangling")
    with pytest.raises(AssetError, match="no '../../evil'"):
        pkg.read_one("../../evil")
    assert not (tmp_path.parent / "evil").exists()


def test_broken_debs_fail_cleanly(tmp_path: Path) -> None:
    good = make_deb(tmp_path / "good.deb", [_file("./f", os.urandom(3000))], Compression.XZ)
    raw = good.read_bytes()
    for cut in [*range(0, len(raw) - 2, max(1, len(raw) // 40)), len(raw) - 2]:
        bad = tmp_path / "bad.deb"
        bad.write_bytes(raw[:cut])
        with pytest.raises(AssetError):
            DebPackage.open(bad).read_one("f")
    no_binary = tmp_path / "lib.a"
    no_binary.write_bytes(ar_bytes([("foo.o", b"\x7fELF")]))
    with pytest.raises(AssetError, match="not a .deb"):
        DebPackage.open(no_binary)
    with pytest.raises(AssetError, match="cannot read"):
        DebPackage.open(tmp_path / "absent.deb")


def test_control_and_names() -> None:
    text = "Package: p\nVersion: 1\nDescription: short\n long line\n .\n more\n\nPackage: q\n"
    assert parse_control(text) == {
        "Package": "p",
        "Version": "1",
        "Description": "short\nlong line\n.\nmore",
    }
    assert normalize_member("./usr/./lib//x") == "usr/lib/x"
    assert normalize_member("/etc/x") == "etc/x"
    assert normalize_member("a/../../x") is None
    assert normalize_member("./") == "."


# --------------------------------------------------------------------- dpkg-deb as oracle


@needs(shutil.which("dpkg-deb") is None, reason="dpkg-deb not installed")
@pytest.mark.parametrize("kind", ["gzip", "xz", "zstd", "none"])
def test_dpkg_built_debs(tmp_path: Path, kind: str) -> None:
    tree = tmp_path / "tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        "Package: built\nVersion: 0.1-1\nArchitecture: all\nMaintainer: t <t@t>\n"
        "Description: test\n"
    )
    (tree / "boot").mkdir()
    (tree / "boot" / "ipxe.efi").write_bytes(os.urandom(70000))
    (tree / "usr" / "lib" / "ipxe").mkdir(parents=True)
    (tree / "usr" / "lib" / "ipxe" / "ipxe.efi").symlink_to("/boot/ipxe.efi")
    deb = tmp_path / "built.deb"
    _run(["dpkg-deb", "--root-owner-group", f"-Z{kind}", "--build", str(tree), str(deb)])
    pkg = DebPackage.open(deb)
    assert pkg.name == "built" and pkg.version == "0.1-1"
    expected = (tree / "boot" / "ipxe.efi").read_bytes()
    assert pkg.read_one("usr/lib/ipxe/ipxe.efi") == expected


@needs(shutil.which("dpkg-deb") is None, reason="dpkg-deb not installed")
def test_real_debian_packages_match_dpkg_deb(debian_debs: dict[str, Path], tmp_path: Path) -> None:
    total = 0
    for name, deb in debian_debs.items():
        pkg = DebPackage.open(deb)
        fields = _run(["dpkg-deb", "-f", str(deb), "Package", "Version"]).decode().splitlines()
        assert fields == [f"Package: {pkg.name}", f"Version: {pkg.version}"]
        assert pkg.name == name
        out = tmp_path / name
        _run(["dpkg-deb", "-x", str(deb), str(out)])
        regular = [p for p, pf in pkg.files().items() if pf.kind == "file"]
        on_disk = sorted(
            os.path.relpath(Path(top) / f, out)
            for top, _, fs in os.walk(out)
            for f in fs
            if not (Path(top) / f).is_symlink()
        )
        assert sorted(regular) == on_disk
        for path, data in pkg.read(regular).items():
            assert data == (out / path).read_bytes(), path
        total += len(regular)
    assert total > 200  # syslinux-common alone has ~200 files
