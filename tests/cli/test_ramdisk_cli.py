"""`pxeforge ramdisk …` through click's CliRunner, and once as a real process."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pxeforge.cli.main import cli
from pxeforge.cli.ramdisk import ramdisk
from pxeforge.ramdisk.compress import Compression, compress, decompress, detect
from pxeforge.ramdisk.cpio import Entry, read_archive, write_archive
from pxeforge.ramdisk.tools import LAYOUT_NAME, scan_image

PXEFORGE = [sys.executable, "-m", "pxeforge"]
MTIME = 1_600_000_000


def run(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(ramdisk, [str(a) for a in args], env=env)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    d = tmp_path / "tree"
    (d / "bin").mkdir(parents=True)
    (d / "bin" / "busybox").write_bytes(b"\x7fELF" + bytes(2000))
    (d / "bin" / "busybox").chmod(0o755)
    (d / "bin" / "sh").symlink_to("busybox")
    (d / "init").write_text("#!/bin/sh\nexec /bin/sh\n")
    (d / "init").chmod(0o755)
    (d / "etc").mkdir()
    (d / "etc" / "hostname").write_text("deploy\n")
    os.link(d / "etc" / "hostname", d / "etc" / "hostname.bak")
    for p in sorted(d.rglob("*"), key=lambda p: -len(p.parts)):
        os.utime(p, (MTIME, MTIME), follow_symlinks=False)
    os.utime(d, (MTIME, MTIME))
    return d


@pytest.fixture
def image(tmp_path: Path, tree: Path) -> Path:
    """A layered image: an uncompressed early archive, then a gzip'd main archive."""
    early = write_archive(
        [
            Entry.directory("kernel", mtime=MTIME, nlink=2),
            Entry.file("kernel/GenuineIntel.bin", b"\xaa" * 100, mtime=MTIME, ino=1),
        ]
    )
    path = tmp_path / "initrd.img"
    assert run("pack", tree, path).exit_code == 0
    path.write_bytes(early + path.read_bytes())
    return path


def test_ls_shows_segments_and_entries(image: Path) -> None:
    result = run("ls", image)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "segment 0: offset 0, 512 bytes, none, newc, 2 entries"
    assert lines[1:3] == ["kernel", "kernel/GenuineIntel.bin"]
    assert lines[3].startswith("segment 1: offset 512, ") and "gzip, newc, 8 entries" in lines[3]
    assert lines[4:] == [
        ".", "bin", "bin/busybox", "bin/sh", "etc", "etc/hostname", "etc/hostname.bak", "init",
    ]  # fmt: skip
    long = run("ls", "-l", "--segment", "1", image, env={"TZ": "UTC"}).stdout.splitlines()
    assert long[3] == "lrwxrwxrwx   1 root     root            7 Sep 13  2020 bin/sh -> busybox"
    assert long[5:7] == [  # hard links: the last record carries the data
        "-rw-r--r--   2 root     root            0 Sep 13  2020 etc/hostname",
        "-rw-r--r--   2 root     root            7 Sep 13  2020 etc/hostname.bak",
    ]
    doc = json.loads(run("ls", "--json", image).stdout)
    assert [s["compression"] for s in doc["segments"]] == ["none", "gzip"]
    assert doc["segments"][1]["entries"][3] == {
        "name": "bin/sh", "mode": "120777", "uid": 0, "gid": 0, "nlink": 1, "mtime": MTIME,
        "size": 7, "ino": 3, "target": "busybox",
    }  # fmt: skip


def test_unpack_pack_round_trip_is_byte_exact(image: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run("unpack", image, out)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"unpacked 9 members from 2 segments into {out}\n"
    assert (out / LAYOUT_NAME).is_file()
    assert (out / "kernel" / "GenuineIntel.bin").read_bytes() == b"\xaa" * 100
    assert (out / "etc" / "hostname").stat().st_ino == (out / "etc" / "hostname.bak").stat().st_ino
    again = tmp_path / "again.img"
    result = run("pack", out, again)
    assert result.exit_code == 0, result.output
    assert "2 segments (none, gzip)" in result.stdout and "layout from unpack" in result.stdout
    assert again.read_bytes() == image.read_bytes()
    # other compressions of the main segment; the early one stays uncompressed
    for kind in ("xz", "zstd", "none"):
        assert run("pack", "--compress", kind, out, again).exit_code == 0
        streams = scan_image(again.read_bytes()).streams
        assert [s.compression.value for s in streams] == ["none", kind]
    assert run("pack", "--flat", out, again).exit_code == 0
    assert len(scan_image(again.read_bytes()).archives) == 1


def test_pack_options(tree: Path, tmp_path: Path) -> None:
    img = tmp_path / "x.img"
    result = run("pack", "--compress", "xz", "--level", "1", "--owner", "7:8", tree, img)
    assert result.exit_code == 0, result.output
    assert detect(img.read_bytes()) is Compression.XZ
    entries = read_archive(img.read_bytes())
    assert {(e.uid, e.gid) for e in entries} == {(7, 8)}
    assert run("pack", "--mtime", str(MTIME - 10), tree, img).exit_code == 0
    assert {e.mtime for e in read_archive(img.read_bytes())} == {MTIME - 10}
    assert run("pack", tree, img, env={"SOURCE_DATE_EPOCH": str(MTIME - 20)}).exit_code == 0
    assert {e.mtime for e in read_archive(img.read_bytes())} == {MTIME - 20}
    first = img.read_bytes()
    assert run("pack", tree, img, env={"SOURCE_DATE_EPOCH": str(MTIME - 20)}).exit_code == 0
    assert img.read_bytes() == first


def test_inject_in_place_and_to_another_file(image: Path, tmp_path: Path) -> None:
    image.chmod(0o640)
    early = image.read_bytes()[:512]
    agent = tmp_path / "agent"
    agent.write_text("#!/bin/sh\necho hi\n")
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "a.conf").write_text("a=1\n")
    result = run("inject", image, f"{agent}:/usr/bin/", f"{conf}:/etc/pxeforge")
    assert result.exit_code == 0, result.output
    data = image.read_bytes()
    assert data[:512] == early
    assert stat.S_IMODE(image.stat().st_mode) == 0o640  # replaced in place, mode kept
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".initrd.img.")]
    main = {e.path: e for e in scan_image(data).archives[-1].entries}
    assert main["usr/bin/agent"].data == b"#!/bin/sh\necho hi\n"
    assert main["etc/pxeforge/a.conf"].data == b"a=1\n"
    assert detect(data[512:]) is Compression.GZIP
    other = tmp_path / "other.img"
    result = run("inject", "-o", other, "--compress", "zstd", image, f"{agent}:/init")
    assert result.exit_code == 0, result.output
    assert image.read_bytes() == data
    last = scan_image(other.read_bytes()).streams[-1]
    assert last.compression is Compression.ZSTD
    assert {e.path: e.data for e in last.archives[-1].entries}["init"] == b"#!/bin/sh\necho hi\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ls", "{tmp}/missing.img"], "does not exist"),
        (["ls", "--segment", "2", "{image}"], "has 2 segments (0-1)"),
        (["pack", "--level", "12", "{tmp}/tree", "{tmp}/o.img"], "out of range for gzip (0-9)"),
        (["pack", "--compress", "rar", "{tmp}/tree", "{tmp}/o.img"], "'rar' is not one of"),
        (["pack", "--owner", "root", "{tmp}/tree", "{tmp}/o.img"], "is not UID:GID"),
        (["inject", "{image}", "{tmp}/missing"], "no such file or directory"),
        (["inject", "{image}", "{tmp}/tree:"], "empty destination"),
        (["inject", "{image}"], "Missing argument"),
        (["unpack", "--segment", "-1", "{image}", "{tmp}/o"], "-1 is not in the range"),
    ],
)
def test_usage_errors_exit_2(image: Path, tmp_path: Path, args: list[str], message: str) -> None:
    argv = [a.format(tmp=tmp_path, image=image) for a in args]
    result = CliRunner().invoke(ramdisk, argv)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_errors_exit_1_with_a_clear_message(image: Path, tmp_path: Path) -> None:
    hostile = tmp_path / "hostile.img"
    hostile.write_bytes(
        compress(write_archive([Entry.file("ok", b"x"), Entry.file("../evil", b"x")]),
                 Compression.GZIP)
    )  # fmt: skip
    garbage = tmp_path / "garbage.img"
    garbage.write_bytes(b"this is not an initramfs")
    out = tmp_path / "out"
    cases = [
        (["unpack", hostile, out], "member '../evil' climbs out with '..'; refused"),
        (["ls", garbage], "not a cpio header at offset 0"),
        (["inject", garbage, image], "not a cpio header"),
        (["pack", tmp_path / "tree", tmp_path / "no-such-dir" / "x.img"], "No such file"),
        (["unpack", image, image.parent], "is not empty (use --force"),
        (["ls", "--max-size", "100", image], "more than 100 bytes"),
    ]
    for args, message in cases:
        result = run(*args)
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr.startswith("Error: ") and message in result.stderr, result.stderr
        assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not out.exists() and not (tmp_path / "evil").exists()
    assert garbage.read_bytes() == b"this is not an initramfs"


def _huge_member() -> bytes:
    rec = bytearray(write_archive([Entry.file("f", b"")], block_size=4))
    rec[54:62] = b"FFFFFFFF"  # filesize: 4 GiB, with no data behind it
    return bytes(rec)


def hostile(outside: Path) -> dict[str, tuple[bytes, str]]:
    return {
        "dotdot": (write_archive([Entry.file("a/../../x", b"x")]), "climbs out"),
        "absolute": (write_archive([Entry.file("/etc/pxeforge-x", b"x")]), "absolute name"),
        "symlink-then-file": (
            write_archive([Entry.symlink("s", str(outside)), Entry.file("s/x", b"x")]),
            "would be written through the symlink 's'",
        ),
        "symlink-climbs": (write_archive([Entry.symlink("s", "../../..")]), "points outside"),
        "huge-member": (_huge_member(), "exceeds the 1073741824-byte limit"),
        "bomb": (gzip.compress(bytes(4 << 20)), "more than 1000000 bytes"),
    }


@pytest.mark.parametrize(
    "case", ["dotdot", "absolute", "symlink-then-file", "symlink-climbs", "huge-member", "bomb"]
)
def test_hostile_images_exit_1_and_write_nothing(tmp_path: Path, case: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    data, message = hostile(outside)[case]
    img = tmp_path / "hostile.img"
    img.write_bytes(data)
    out = tmp_path / "out"
    result = run("unpack", "--max-size", "1000000", img, out)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("Error: ") and message in result.stderr, result.stderr
    assert not out.exists() and list(outside.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hostile.img", "outside"]
    assert not Path("/etc/pxeforge-x").exists()


def test_main_cli_knows_the_group(image: Path) -> None:
    result = CliRunner().invoke(cli, ["ramdisk", "ls", str(image)])
    assert result.exit_code == 0 and "segment 1:" in result.stdout
    assert "ramdisk" in CliRunner().invoke(cli, ["--help"]).stdout


@pytest.mark.skipif(shutil.which("cpio") is None, reason="GNU cpio missing")
def test_real_process(tree: Path, tmp_path: Path) -> None:
    img = tmp_path / "initrd.img"
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(MTIME)}
    proc = subprocess.run(
        [*PXEFORGE, "ramdisk", "pack", str(tree), str(img)],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"wrote {img}: ")
    listing = subprocess.run(
        "gzip -dc | cpio --quiet -t", shell=True, input=img.read_bytes(), capture_output=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert listing.stdout.splitlines()[:3] == [b".", b"bin", b"bin/busybox"]
    evil = tmp_path / "evil.img"
    evil.write_bytes(gzip.compress(write_archive([Entry.file("/etc/pxeforge-evil", b"x")])))
    proc = subprocess.run(
        [*PXEFORGE, "ramdisk", "unpack", str(evil), str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr == "Error: member '/etc/pxeforge-evil' has an absolute name; refused\n"
    assert not Path("/etc/pxeforge-evil").exists() and not (tmp_path / "out").exists()
    proc = subprocess.run(
        [*PXEFORGE, "ramdisk", "pack", "--level", "99", str(tree), str(img)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "out of range" in proc.stderr
    assert decompress(img.read_bytes())  # the earlier image is untouched
