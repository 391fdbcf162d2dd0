"""cpio reader/writer/extractor, with GNU cpio as the oracle."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pxeforge.errors import AssetError
from pxeforge.ramdisk.compress import Compression, compress
from pxeforge.ramdisk.cpio import (
    Entry,
    Format,
    UnsafeArchive,
    extract,
    extract_image,
    iter_entries,
    iter_segments,
    pack_directory,
    parse_archive,
    read_archive,
    read_image,
    write_archive,
    write_entry,
)

ROOT = os.geteuid() == 0
needs_cpio = pytest.mark.usefixtures("gnu_cpio")
needs_root = pytest.mark.skipif(not ROOT, reason="owners and device nodes need root")

MTIME = 1_600_000_000


def _gnu(argv: str, cwd: Path, data: bytes | None = None) -> bytes:
    proc = subprocess.run(argv, shell=True, cwd=cwd, input=data, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout


def make_tree(top: Path) -> Path:
    """A tree with every kind of member cpio has to get right."""
    d = top / "tree"
    d.mkdir()
    (d / "bin").mkdir()
    (d / "bin" / "tool").write_bytes(b"#!/bin/sh\necho tool\n")
    os.chmod(d / "bin" / "tool", 0o755)
    (d / "bin" / "suid").write_bytes(b"\x7fELF" + bytes(300))
    os.chmod(d / "bin" / "suid", 0o4755)
    (d / "empty").write_bytes(b"")
    (d / "secret").write_bytes(b"s" * 5)
    os.chmod(d / "secret", 0o600)
    (d / "etc" / "deep" / "er").mkdir(parents=True)
    (d / "etc" / "deep" / "er" / "conf").write_text("a=1\n")
    (d / "etc" / "name with space").write_text("x")
    (d / "etc" / "ünïcode").write_text("u")
    (d / os.fsdecode(b"raw\xffbytes")).write_bytes(b"not utf-8 name")
    (d / "-dash").write_text("sorts before the dot")
    (d / "a.b").write_text("sorts between a and a/")
    (d / "a").mkdir()
    (d / "a" / "x").write_bytes(os.urandom(5000))
    # hard links: a complete group of three, and a group with a link outside the tree
    (d / "h1").write_bytes(b"hard linked\n")
    os.link(d / "h1", d / "etc" / "h2")
    os.link(d / "h1", d / "bin" / "h3")
    (d / "half").write_bytes(b"other link lives outside\n")
    os.link(d / "half", top / "outside-link")
    (d / "link-rel").symlink_to("bin/tool")
    (d / "link-abs").symlink_to("/usr/bin/env")
    (d / "lib").symlink_to("a")
    (d / "ro").mkdir()
    (d / "ro" / "inside").write_text("in a read-only dir")
    os.mkfifo(d / "fifo")
    if ROOT:
        os.mknod(d / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        os.mknod(d / "loop9", stat.S_IFBLK | 0o660, os.makedev(7, 9))
        os.chown(d / "secret", 1234, 5678)
        os.lchown(d / "link-rel", 42, 43)
        os.chown(d / "etc" / "deep", 7, 8)
    for path in sorted(d.rglob("*"), key=lambda p: -len(p.parts)):
        os.utime(path, (MTIME + 7, MTIME + len(path.name)), follow_symlinks=False)
    os.chmod(d / "ro", 0o555)
    os.utime(d / "ro", (MTIME, MTIME + 99))
    os.utime(d, (MTIME, MTIME + 1))
    return d


def snapshot(d: Path, dir_mtimes: bool = True) -> dict[str, tuple[object, ...]]:
    """Everything cpio is meant to preserve, per relative name; a regular file also lists the
    other names in the tree that share its inode (its hard links)."""
    out: dict[str, tuple[object, ...]] = {}
    by_ino: dict[int, list[str]] = {}
    for top, dirs, files in os.walk(d):
        for n in [*dirs, *files, *([] if top != str(d) else ["."])]:
            p = Path(top) / n if n != "." else d
            s = p.lstat()
            rel = os.path.relpath(p, d)
            kind = stat.S_IFMT(s.st_mode)
            common: tuple[object, ...] = (kind, s.st_uid, s.st_gid)
            if stat.S_ISLNK(s.st_mode):
                out[rel] = (*common, os.readlink(p))
            elif stat.S_ISDIR(s.st_mode):
                out[rel] = (*common, stat.S_IMODE(s.st_mode), s.st_mtime if dir_mtimes else 0)
            elif stat.S_ISREG(s.st_mode):
                by_ino.setdefault(s.st_ino, []).append(rel)
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
                out[rel] = (*common, stat.S_IMODE(s.st_mode), s.st_mtime, digest, s.st_ino)
            else:
                out[rel] = (*common, stat.S_IMODE(s.st_mode), s.st_mtime, s.st_rdev)
    for names in by_ino.values():
        for rel in names:
            out[rel] = (*out[rel][:-1], tuple(sorted(names)))
    return out


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path)


# --------------------------------------------------------------------- byte-exact with GNU


@needs_cpio
def test_pack_directory_is_byte_exact_with_gnu_cpio(tree: Path) -> None:
    gnu = _gnu("find . | LC_ALL=C sort | cpio --quiet -H newc -o", tree)
    ours = write_archive(pack_directory(tree))
    assert len(ours) % 512 == 0
    assert ours == gnu


@needs_cpio
@pytest.mark.parametrize("fmt", ["newc", "crc"])
def test_gnu_archive_reads_and_rewrites_byte_exact(tree: Path, fmt: str) -> None:
    gnu = _gnu(f"find . | cpio --quiet -H {fmt} -o", tree)  # readdir order, not sorted
    entries, end, found = parse_archive(gnu)
    assert found is Format(fmt)
    assert gnu[end:].strip(b"\x00") == b""
    assert write_archive(entries, found) == gnu
    # and the entries describe the tree: every name, hard links with data once per group
    assert sorted(e.path for e in entries) == sorted(snapshot(tree))
    h = [e for e in entries if e.path in ("h1", "etc/h2", "bin/h3")]
    assert sorted(len(e.data) for e in h) == [0, 0, 12]
    assert {e.inode_key for e in h} == {h[0].inode_key}
    sym = next(e for e in entries if e.path == "link-abs")
    assert sym.is_symlink and sym.link_target == "/usr/bin/env"


@needs_cpio
@pytest.mark.parametrize("fmt", ["odc", "bin"])
def test_old_formats_read_like_newc(tree: Path, fmt: str) -> None:
    names = "find . | LC_ALL=C sort | cpio --quiet -H {} -o"
    newc = {e.path: e for e in read_archive(_gnu(names.format("newc"), tree))}
    old = read_archive(_gnu(names.format(fmt), tree))
    assert sorted(e.path for e in old) == sorted(newc)
    for e in old:
        n = newc[e.path]
        assert (e.mode, e.uid & 0xFFFF, e.nlink) == (n.mode, n.uid & 0xFFFF, n.nlink), e.path
        if e.is_file and n.data:
            assert e.data == n.data, e.path
        if e.is_device:
            assert (e.rdev_major, e.rdev_minor) == (n.rdev_major, n.rdev_minor)


# --------------------------------------------------------------------- extraction


@needs_cpio
def test_what_we_pack_gnu_extracts_identically(tree: Path, tmp_path: Path) -> None:
    archive = write_archive(pack_directory(tree))
    out = tmp_path / "gnu-out"
    out.mkdir()
    _gnu("cpio --quiet -idm", out, archive)
    # GNU cpio does not restore directory mtimes (it writes into them afterwards)
    assert snapshot(out, dir_mtimes=False) == snapshot(tree, dir_mtimes=False)


@needs_cpio
@pytest.mark.parametrize("fmt", ["newc", "crc", "odc"])
def test_we_extract_like_gnu(tree: Path, tmp_path: Path, fmt: str) -> None:
    archive = _gnu(f"find . | cpio --quiet -H {fmt} -o", tree)
    gnu_out, our_out = tmp_path / "gnu", tmp_path / "ours"
    gnu_out.mkdir()
    _gnu("cpio --quiet -idm", gnu_out, archive)
    made = extract(read_archive(archive), our_out)
    assert snapshot(our_out, dir_mtimes=False) == snapshot(gnu_out, dir_mtimes=False)
    # …and we also restore directory mtimes and modes, read-only directory included
    assert snapshot(our_out) == snapshot(tree)
    assert stat.S_IMODE((our_out / "ro").stat().st_mode) == 0o555
    assert len(made) == len(snapshot(tree)) - 1  # every member but "." itself
    ino = {(our_out / p).stat().st_ino for p in ("h1", "etc/h2", "bin/h3")}
    assert len(ino) == 1


@needs_cpio
def test_our_crc_archive_is_verified_by_gnu(tree: Path, tmp_path: Path) -> None:
    archive = write_archive(pack_directory(tree), Format.CRC)
    assert archive.startswith(b"070702")
    out = tmp_path / "o"
    out.mkdir()
    _gnu("cpio --quiet -idm -H crc", out, archive)
    assert snapshot(out, dir_mtimes=False) == snapshot(tree, dir_mtimes=False)
    bad = bytearray(archive)
    where = bad.index(b"hard linked\n")
    bad[where] ^= 1
    with pytest.raises(AssetError, match="checksum mismatch"):
        read_archive(bytes(bad))


def test_extract_replaces_existing_files_and_keeps_dirs(tmp_path: Path) -> None:
    dest = tmp_path / "d"
    extract([Entry.directory("x"), Entry.file("x/f", b"old"), Entry.symlink("s", "x")], dest)
    extract([Entry.directory("x", 0o700), Entry.file("x/f", b"new"), Entry.file("s", b"f")], dest)
    assert (dest / "x" / "f").read_bytes() == b"new"
    assert (dest / "s").is_file() and not (dest / "s").is_symlink()
    assert stat.S_IMODE((dest / "x").stat().st_mode) == 0o700


def test_hard_links_without_data_become_one_empty_file(tmp_path: Path) -> None:
    es = [Entry.file("a", b"", nlink=2, ino=5), Entry.file("b", b"", nlink=2, ino=5)]
    made = extract(es, tmp_path / "d")
    assert sorted(made) == ["a", "b"]
    a, b = (tmp_path / "d" / "a").stat(), (tmp_path / "d" / "b").stat()
    assert a.st_ino == b.st_ino and a.st_size == 0


@needs_root
def test_device_nodes_need_root_or_are_skipped(tmp_path: Path) -> None:
    es = [Entry.device("dev/console", stat.S_IFCHR, 5, 1), Entry.file("keep", b"k")]
    made = extract(es, tmp_path / "root")
    st_ = (tmp_path / "root" / "dev" / "console").lstat()
    assert stat.S_ISCHR(st_.st_mode) and os.major(st_.st_rdev) == 5
    assert extract(es, tmp_path / "user", devices=False) == ["keep"]
    assert made == ["dev/console", "keep"]


# --------------------------------------------------------------------- safety


@pytest.mark.parametrize(
    "name", ["../evil", "a/../../evil", "/etc/evil", "a/b/../../../evil", "ok/../../evil"]
)
def test_names_that_escape_are_refused(tmp_path: Path, name: str) -> None:
    dest = tmp_path / "d"
    with pytest.raises(UnsafeArchive):
        extract([Entry.file(name, b"pwned")], dest)
    assert not (tmp_path / "evil").exists()


def test_symlinked_parents_stay_inside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "d"
    es = [
        Entry.symlink("up", "/"),  # absolute: means the image root, i.e. dest
        Entry.file("up/etc/passwd", b"image passwd"),
        Entry.symlink("host", str(outside)),  # absolute path of a real host directory
        Entry.file("host/file", b"must not reach the host"),
        Entry.symlink("rel", "../.."),  # climbs: refused below
    ]
    extract(es[:4], dest)
    assert (dest / "etc" / "passwd").read_bytes() == b"image passwd"
    assert (dest / str(outside).lstrip("/") / "file").read_bytes() == b"must not reach the host"
    assert list(outside.iterdir()) == []
    with pytest.raises(UnsafeArchive, match="points outside"):
        extract(es[4:], dest)
    # a relative link that looks harmless by name but sits under an absolute one
    with pytest.raises(UnsafeArchive, match="points outside"):
        extract([Entry.symlink("deep/er", "/"), Entry.symlink("deep/er/x", "../y")], dest)
    with pytest.raises(UnsafeArchive, match="absolute"):
        extract([Entry.symlink("abs", "/etc")], dest, allow_absolute_symlinks=False)


def test_symlink_loops_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsafeArchive, match="too many symlinks"):
        extract([Entry.symlink("a", "b"), Entry.symlink("b", "a"), Entry.file("a/f", b"")],
                tmp_path / "d")  # fmt: skip


def test_absurd_sizes_are_refused(tmp_path: Path) -> None:
    big = write_archive([Entry.file("f", b"x" * 1000)])
    with pytest.raises(UnsafeArchive, match="exceeds the 100-byte limit"):
        read_archive(big, max_entry=100)
    header = bytearray(write_entry(Entry.file("f", b"")))
    header[94:102] = b"00100000"  # namesize 1 MiB
    with pytest.raises(UnsafeArchive, match="absurd name size"):
        read_archive(bytes(header))
    with pytest.raises(UnsafeArchive, match="more than 1500 bytes"):
        extract(
            [Entry.file("a", b"x" * 1000), Entry.file("b", b"x" * 1000)], tmp_path, max_total=1500
        )


def test_every_truncation_is_a_clean_error(tree: Path) -> None:
    archive = write_archive(pack_directory(tree), block_size=4)
    for cut in range(0, len(archive) - 1, 7):
        with pytest.raises(AssetError):
            read_archive(archive[:cut])
    assert len(read_archive(archive)) == len(pack_directory(tree))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_corrupt_headers_never_crash(data: st.DataObject) -> None:
    archive = bytearray(write_archive([Entry.directory("d"), Entry.file("d/f", b"hello" * 9)]))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(archive) - 1))
        archive[i] = data.draw(st.integers(0, 255))
    try:
        read_archive(bytes(archive))
    except AssetError:
        pass


# --------------------------------------------------------------------- writer basics


def test_newc_layout_by_hand() -> None:
    rec = write_entry(Entry.file("ab", b"xyz", mode=0o644, mtime=1, ino=2))
    assert rec[:6] == b"070701"
    assert rec[6:14] == b"00000002" and rec[14:22] == b"000081A4"
    assert rec[94:102] == b"00000003"  # namesize includes the NUL
    # header (110) + name (3) padded to 116; data (3) padded to 120
    assert rec[110:116] == b"ab\x00\x00\x00\x00"
    assert rec[116:] == b"xyz\x00" and len(rec) == 120
    assert write_archive([], block_size=4).endswith(b"TRAILER!!!\x00\x00\x00\x00")


def test_streaming_reader_matches_bytes_reader(tree: Path) -> None:
    archive = write_archive(pack_directory(tree))
    assert list(iter_entries(io.BytesIO(archive))) == read_archive(archive)


def test_values_that_do_not_fit_are_refused() -> None:
    with pytest.raises(AssetError, match="does not fit"):
        write_entry(Entry.file("f", b"", uid=1 << 32))
    with pytest.raises(AssetError, match="NUL"):
        write_entry(Entry.file("a\x00b", b""))
    with pytest.raises(AssetError, match="not supported"):
        write_entry(Entry.file("f", b""), Format.ODC)


# --------------------------------------------------------------------- initramfs images


@needs_cpio
def test_initramfs_with_early_microcode_and_compressed_main(tree: Path, tmp_path: Path) -> None:
    early_dir = tmp_path / "early"
    (early_dir / "kernel" / "x86" / "microcode").mkdir(parents=True)
    (early_dir / "kernel" / "x86" / "microcode" / "GenuineIntel.bin").write_bytes(b"\xaa" * 3000)
    early = _gnu("find . | LC_ALL=C sort | cpio --quiet -H newc -o", early_dir)  # 512-padded
    main = write_archive(pack_directory(tree))
    extra = write_archive([Entry.file("etc/added-later", b"overlay")], block_size=4)
    image = (
        early
        + compress(main, Compression.GZIP)
        + b"\x00" * 13
        + compress(extra, Compression.ZSTD)
        + compress(extra + main, Compression.XZ)  # one stream, two archives
    )
    segs = list(iter_segments(image))
    kinds = [(s.compression, s.format) for s in segs]
    assert kinds == [
        (Compression.NONE, Format.NEWC),
        (Compression.GZIP, Format.NEWC),
        (Compression.ZSTD, Format.NEWC),
        (Compression.XZ, Format.NEWC),
        (Compression.XZ, Format.NEWC),
    ]
    assert segs[0].offset == 0 and segs[0].length < len(early)
    assert segs[1].offset == len(early)
    assert segs[3].offset == segs[4].offset and segs[3].length == segs[4].length
    assert segs[-1].offset + segs[-1].length == len(image)
    assert [e.path for e in segs[1].entries] == [e.path for e in pack_directory(tree)]
    names = [e.path for e in read_image(image)]
    assert names.count("etc/added-later") == 2
    assert "kernel/x86/microcode/GenuineIntel.bin" in names
    out = tmp_path / "unpacked"
    extract_image(image, out)
    assert (out / "etc" / "added-later").read_bytes() == b"overlay"
    assert (out / "kernel" / "x86" / "microcode" / "GenuineIntel.bin").stat().st_size == 3000
    assert (out / "bin" / "tool").read_bytes() == (tree / "bin" / "tool").read_bytes()
    # GNU cpio reads the same main archive after gzip -dc
    listing = _gnu("gzip -dc | cpio --quiet -it", tmp_path, compress(main, Compression.GZIP))
    assert sorted(listing.splitlines()) == sorted(
        os.fsencode(n) for n in names[-len(segs[4].entries) :]
    )


def test_read_archive_accepts_compressed_input() -> None:
    es = [Entry.directory("d"), Entry.file("d/f", b"data", mtime=5)]
    for kind in (Compression.GZIP, Compression.ZSTD, Compression.BZIP2, Compression.NONE):
        assert read_archive(compress(write_archive(es), kind)) == es


def test_compressed_stream_without_archive_is_an_error() -> None:
    with pytest.raises(AssetError, match="holds no cpio archive"):
        list(iter_segments(compress(b"\x00" * 100, Compression.GZIP)))
    with pytest.raises(AssetError, match="not a cpio header"):
        read_image(b"garbage that is not an archive")
