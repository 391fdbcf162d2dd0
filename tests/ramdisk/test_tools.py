"""Image-level ramdisk operations (scan, list, unpack, pack, inject), with GNU cpio as oracle."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxeforge.errors import AssetError, ConfigError
from pxeforge.ramdisk.compress import Compression, compress, decompress, detect
from pxeforge.ramdisk.cpio import (
    Entry,
    Format,
    extract,
    read_archive,
    write_archive,
    write_entry,
)
from pxeforge.ramdisk.tools import (
    LAYOUT_NAME,
    Injection,
    Layout,
    format_entry,
    inject,
    pack,
    parse_injection,
    read_layout,
    scan_image,
    unpack,
    write_atomic,
)

from .test_cpio import MTIME, make_tree, snapshot

ROOT = os.geteuid() == 0
needs_cpio = pytest.mark.usefixtures("gnu_cpio")
needs_root = pytest.mark.skipif(not ROOT, reason="owners, device nodes and chroot need root")

# the command-line compressor of each kind (when installed; else our codec stands in for it)
PACKERS = {
    Compression.GZIP: "gzip -c",
    Compression.XZ: "xz -c --check=crc32",
    Compression.ZSTD: "zstd -c -q",
    Compression.NONE: "cat",
}
KINDS = list(PACKERS)
GNU_SORTED = "find . | LC_ALL=C sort | cpio --quiet -H newc -o"


def sh(cmd: str, cwd: Path, data: bytes | None = None, env: dict[str, str] | None = None) -> bytes:
    proc = subprocess.run(
        cmd,
        shell=True,
        cwd=cwd,
        input=data,
        capture_output=True,
        check=False,
        env=None if env is None else {**os.environ, **env},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout


def gnu_image(tree: Path, kind: Compression) -> bytes:
    """``find . | cpio -H newc -o | <compressor>``, in readdir order like the seed's recipe."""
    archive = sh("find . | cpio --quiet -H newc -o", tree)
    if shutil.which(PACKERS[kind].split()[0]) is None:
        return compress(archive, kind)
    return sh(PACKERS[kind], tree, archive)


def gnu_extract(image: bytes, dest: Path) -> None:
    """``<decompressor> | cpio -idm`` into ``dest``."""
    dest.mkdir(exist_ok=True)
    sh("cpio --quiet -idm", dest, decompress(image))


def tree_snapshot(d: Path, dir_mtimes: bool = True) -> dict[str, tuple[object, ...]]:
    """`snapshot` without our layout file."""
    snap = snapshot(d, dir_mtimes)
    snap.pop(LAYOUT_NAME, None)
    return snap


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path)


@pytest.fixture
def local_tree(tmp_path: Path) -> Path:
    """`make_tree` without the hard link that points outside the tree: every link count is
    then what the archive itself implies, as `pack` writes it."""
    d = make_tree(tmp_path)
    (tmp_path / "outside-link").unlink()
    return d


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def make_early(top: Path) -> Path:
    d = top / "early"
    (d / "kernel" / "x86" / "microcode").mkdir(parents=True)
    blob = d / "kernel" / "x86" / "microcode" / "GenuineIntel.bin"
    blob.write_bytes(bytes(range(256)) * 12)
    for p in (blob, *blob.parents[:3], d):
        os.utime(p, (MTIME, MTIME - 5))
    return d


# --------------------------------------------------------------------- GNU images, read


@needs_cpio
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.value)
def test_gnu_images_list_like_cpio_tv(tree: Path, kind: Compression, utc: None) -> None:
    image = gnu_image(tree, kind)
    img = scan_image(image)
    assert [(s.compression, len(s.archives)) for s in img.streams] == [(kind, 1)]
    (arch,) = img.archives
    plain = decompress(image, kind)
    assert sh("cpio --quiet -t", tree, plain).splitlines() == [
        format_entry(e) for e in arch.entries
    ]
    for flags, numeric in (("-tv", False), ("-tvn", True)):
        gnu = sh(f"cpio --quiet {flags}", tree, plain, env={"TZ": "UTC"}).splitlines()
        now = time.time()
        ours = [format_entry(e, long=True, numeric=numeric, now=now) for e in arch.entries]
        assert ours == gnu
    # a symlink, a device and a hard link as cpio shows them
    lines = {e.path: format_entry(e, long=True) for e in arch.entries}
    assert lines["link-rel"].endswith(b" link-rel -> bin/tool")
    assert lines["-dash"].startswith(b"-rw-r--r--   1 ")
    if ROOT:
        assert b"   1,   3 " in lines["null"] and lines["null"].startswith(b"crw-r--r--")


@needs_cpio
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.value)
def test_gnu_images_unpack_like_cpio_idm(tree: Path, tmp_path: Path, kind: Compression) -> None:
    image = gnu_image(tree, kind)
    gnu_out = tmp_path / "gnu"
    gnu_extract(image, gnu_out)
    ours = tmp_path / "ours"
    result = unpack(image, ours)
    assert result.layout == ours / LAYOUT_NAME and result.skipped == ()
    # same tree as GNU cpio (which leaves directory mtimes as extraction made them)…
    assert tree_snapshot(ours, dir_mtimes=False) == tree_snapshot(gnu_out, dir_mtimes=False)
    # …and the original one exactly: directory mtimes and the top's too, despite the layout file
    assert tree_snapshot(ours) == tree_snapshot(tree)
    h = {(ours / p).stat().st_ino for p in ("h1", "etc/h2", "bin/h3")}
    assert len(h) == 1


# --------------------------------------------------------------------- pack


@needs_cpio
def test_pack_is_byte_exact_with_gnu_cpio_reproducible(local_tree: Path) -> None:
    gnu = sh(f"{GNU_SORTED} --reproducible", local_tree)
    ours = pack(local_tree, compression=Compression.NONE)
    assert not ours.from_layout and ours.entries == len(read_archive(gnu))
    assert ours.data == gnu
    gz = pack(local_tree).data  # gzip by default
    assert detect(gz) is Compression.GZIP and decompress(gz) == gnu


@needs_cpio
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.value)
def test_what_we_pack_gnu_extracts_identically(
    tree: Path, tmp_path: Path, kind: Compression
) -> None:
    image = pack(tree, compression=kind).data
    assert detect(image) is kind
    out = tmp_path / "gnu"
    gnu_extract(image, out)
    assert tree_snapshot(out, dir_mtimes=False) == tree_snapshot(tree, dir_mtimes=False)


def test_pack_is_deterministic(tree: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    sh(f"cp -a {tree} {copy}", tmp_path)  # other inode numbers, same everything else
    a, b = pack(tree).data, pack(copy).data
    assert a == b
    entries = read_archive(a)
    assert [e.ino for e in entries if e.path == "."] == [0]
    assert {e.dev_major for e in entries} == {0} and {e.dev_minor for e in entries} == {0}
    clamped = read_archive(pack(tree, mtime=MTIME + 3, owner=(0, 0)).data)
    assert max(e.mtime for e in clamped) == MTIME + 3
    assert {(e.uid, e.gid) for e in clamped} == {(0, 0)}
    assert min(e.mtime for e in clamped) == min(e.mtime for e in entries)


CASES = [
    (Compression.GZIP, None, None),
    (Compression.GZIP, 9, None),  # the gzip header says "maximum compression": level read back
    (Compression.GZIP, 1, None),
    (Compression.XZ, None, None),
    (Compression.XZ, 9, 9),  # xz does not say: give the level again
    (Compression.ZSTD, None, None),
    (Compression.ZSTD, 19, 19),
    (Compression.NONE, None, None),
]


@pytest.mark.parametrize(("kind", "level", "again"), CASES, ids=lambda v: str(v))
def test_unpack_then_pack_is_byte_exact(
    tree: Path, tmp_path: Path, kind: Compression, level: int | None, again: int | None
) -> None:
    first = pack(tree, compression=kind, level=level).data
    out = tmp_path / "out"
    unpack(first, out)
    second = pack(out, level=again)
    assert second.from_layout
    assert second.data == first
    if level not in (None, 9, 1):
        assert pack(out).data != first  # the level matters, and was not guessed


def test_pack_sorts_new_names_and_drops_deleted_ones(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    unpack(pack(tree).data, out)
    (out / "etc" / "zz-new").write_text("new")
    (out / "a" / "0-new").write_text("new")
    (out / "secret").unlink()
    names = [e.path for e in read_archive(pack(out).data)]
    assert "secret" not in names and names.count("etc/zz-new") == 1
    plain = [n for n in names if n not in ("h1", "etc/h2", "bin/h3")]  # hard links come last
    assert plain == sorted(plain, key=lambda n: b"." if n == "." else b"./" + os.fsencode(n))
    assert names.index("a/0-new") < names.index("a/x")


# --------------------------------------------------------------------- layered images


@needs_cpio
def test_early_microcode_image_round_trips_with_its_layout(
    local_tree: Path, tmp_path: Path
) -> None:
    early = sh(f"{GNU_SORTED} --reproducible", make_early(tmp_path))
    main = compress(sh(f"{GNU_SORTED} --reproducible", local_tree), Compression.GZIP)
    image = early + main
    img = scan_image(image)
    assert [(s.offset, s.compression) for s in img.streams] == [
        (0, Compression.NONE),
        (len(early), Compression.GZIP),
    ]
    assert img.archives[0].block_size == 512 and img.archives[1].block_size == 512
    out = tmp_path / "out"
    unpack(image, out)
    blob = out / "kernel" / "x86" / "microcode" / "GenuineIntel.bin"
    assert blob.read_bytes() == bytes(range(256)) * 12
    layout = read_layout(out)
    assert layout is not None
    assert [s.compression for s in layout.streams] == [Compression.NONE, Compression.GZIP]
    assert "." in layout.streams[0].archives[0].shadowed  # the early "." is hidden by main's
    # unpack + pack gives the very same image: early archive uncompressed, main gzip'd
    assert pack(out).data == image
    # a change lands in the main archive; the early one keeps its bytes
    (out / "etc" / "added").write_text("added after unpack\n")
    changed = pack(out).data
    assert changed[: len(early)] == early
    listing = sh(f"tail -c +{len(early) + 1} | gzip -dc | cpio --quiet -t", tmp_path, changed)
    assert b"etc/added" in listing.splitlines()
    assert sh("cpio --quiet -t", tmp_path, changed).splitlines() == [
        b".", b"kernel", b"kernel/x86", b"kernel/x86/microcode",
        b"kernel/x86/microcode/GenuineIntel.bin",
    ]  # fmt: skip
    # --flat: one gzip'd archive of everything
    flat = scan_image(pack(out, flat=True).data)
    assert len(flat.archives) == 1 and flat.streams[0].compression is Compression.GZIP
    # one segment alone, with its own layout
    seg = tmp_path / "seg"
    result = unpack(image, seg, segment=0)
    assert result.segments == 1 and sorted(os.listdir(seg)) == [LAYOUT_NAME, "kernel"]
    assert pack(seg).data == early


def test_several_archives_in_one_stream_and_odd_padding(tmp_path: Path) -> None:
    one = write_archive(
        [Entry.directory("a", mtime=5, nlink=2), Entry.file("a/f", b"1", mtime=5, ino=1)]
    )
    two = write_archive([Entry.file("a/f", b"2", mtime=6)], block_size=4)
    image = b"\x00" * 8 + compress(one + bytes(12) + two, Compression.ZSTD) + bytes(3)
    img = scan_image(image)
    assert img.leading == 8 and len(img.streams) == 1 and img.streams[0].zeros == 3
    a, b = img.archives
    assert (a.block_size, a.padding, b.block_size, b.padding) == (512, 12, 4, 0)
    out = tmp_path / "out"
    unpack(image, out)
    assert (out / "a" / "f").read_bytes() == b"2"
    assert (out / "a").stat().st_mtime == 5  # the second archive wrote into it
    assert pack(out).data == image


# --------------------------------------------------------------------- inject


@needs_cpio
def test_inject_into_gnu_image(tree: Path, tmp_path: Path) -> None:
    image = sh("find . | cpio --quiet -H newc -o | gzip -c", tree)
    src = tmp_path / "src"
    (src / "conf" / "sub").mkdir(parents=True)
    (src / "conf" / "a.cfg").write_text("a\n")
    (src / "conf" / "sub" / "b.cfg").write_text("b\n")
    os.link(src / "conf" / "a.cfg", src / "conf" / "sub" / "a-link")
    (src / "conf" / "to-a").symlink_to("a.cfg")
    agent = tmp_path / "agent.sh"
    agent.write_text("#!/bin/sh\necho agent\n")
    agent.chmod(0o750)
    new = inject(
        image,
        [
            Injection(agent, "/usr/bin/agent"),  # parents created
            Injection(src / "conf", "/etc/pxeforge"),  # a tree merged recursively
            parse_injection(f"{agent}:/bin/"),  # into a directory
            Injection(agent, "secret"),  # replaces a member
        ],
    )
    assert detect(new) is Compression.GZIP
    listing = sh("gzip -dc | cpio --quiet -t", tmp_path, new).splitlines()
    for name in (b"usr", b"usr/bin", b"usr/bin/agent", b"etc/pxeforge/sub/b.cfg",
                 b"etc/pxeforge/to-a", b"bin/agent.sh"):  # fmt: skip
        assert name in listing, name
    assert listing.count(b"secret") == 1
    out = tmp_path / "gnu"
    out.mkdir()
    sh("gzip -dc | cpio --quiet -idm", out, new)
    assert (out / "usr" / "bin" / "agent").read_text() == "#!/bin/sh\necho agent\n"
    assert stat.S_IMODE((out / "usr" / "bin" / "agent").stat().st_mode) == 0o750
    assert (out / "secret").read_text() == "#!/bin/sh\necho agent\n"
    assert (out / "etc" / "pxeforge" / "sub" / "a-link").stat().st_ino == (
        out / "etc" / "pxeforge" / "a.cfg"
    ).stat().st_ino
    assert os.readlink(out / "etc" / "pxeforge" / "to-a") == "a.cfg"
    assert (out / "bin" / "tool").read_bytes() == (tree / "bin" / "tool").read_bytes()
    # everything that was there still is
    before = tree_snapshot(tree, dir_mtimes=False)
    after = tree_snapshot(out, dir_mtimes=False)
    assert {k: v for k, v in after.items() if k in before and k != "secret"} == {
        k: v for k, v in before.items() if k != "secret"
    }


@needs_cpio
def test_inject_replacing_a_hard_link_keeps_the_group_whole(tree: Path, tmp_path: Path) -> None:
    image = pack(tree).data
    data = read_archive(decompress(image))
    assert [e.path for e in data if e.data == b"hard linked\n"] == ["h1"]  # carries the data
    repl = tmp_path / "new-h1"
    repl.write_text("replacement\n")
    new = inject(image, [Injection(repl, "/h1")])
    out = tmp_path / "gnu"
    out.mkdir()
    sh("gzip -dc | cpio --quiet -idm", out, new)
    assert (out / "h1").read_text() == "replacement\n"
    assert (out / "etc" / "h2").read_text() == "hard linked\n"
    assert (out / "etc" / "h2").stat().st_ino == (out / "bin" / "h3").stat().st_ino
    assert (out / "etc" / "h2").stat().st_nlink == 2


def test_inject_follows_the_images_symlinks(tmp_path: Path) -> None:
    entries = [
        Entry.directory(".", mtime=1),
        Entry.directory("usr", mtime=1),
        Entry.directory("usr/lib", mtime=1),
        Entry.symlink("lib", "usr/lib", mtime=1),
        Entry.symlink("lib64", "/usr/lib", mtime=1),
        Entry.file("usr/lib/old.so", b"old", mtime=1),
    ]
    image = compress(write_archive(entries), Compression.XZ)
    so = tmp_path / "mod.so"
    so.write_bytes(b"\x7fELF mod")
    overlay = tmp_path / "overlay"
    (overlay / "lib64" / "extra").mkdir(parents=True)
    (overlay / "lib64" / "extra" / "x.so").write_bytes(b"x")
    new = inject(image, [Injection(so, "/lib/mod.so"), Injection(overlay, "/")])
    assert detect(new) is Compression.XZ
    got = {e.path: e for e in read_archive(decompress(new))}
    assert got["lib"].is_symlink and got["lib64"].is_symlink  # never replaced by directories
    assert got["usr/lib/mod.so"].data == b"\x7fELF mod"
    assert got["usr/lib/extra/x.so"].data == b"x"
    assert "lib/mod.so" not in got and "lib64/extra" not in got
    # a file can not replace a directory, and '..' is refused
    with pytest.raises(AssetError, match="is a directory in the image"):
        inject(write_archive([Entry.directory("d"), Entry.directory("d/mod.so")]),
               [Injection(so, "/d/")])  # fmt: skip
    with pytest.raises(AssetError, match="is a file in the image"):
        inject(write_archive([Entry.file("lib64", b"")]), [Injection(overlay, "/")])
    with pytest.raises(ConfigError, match=r"\.\."):
        inject(image, [Injection(so, "/usr/../../etc/x")])


def test_inject_keeps_earlier_segments_byte_for_byte(local_tree: Path, tmp_path: Path) -> None:
    early = write_archive(
        [Entry.directory("kernel"), Entry.file("kernel/GenuineIntel.bin", b"\xaa" * 700)]
    )
    image = early + pack(local_tree, compression=Compression.ZSTD).data
    extra = tmp_path / "extra"
    extra.write_text("x")
    new = inject(image, [Injection(extra, "/etc/extra")], compression=Compression.GZIP)
    assert new[: len(early)] == early
    img = scan_image(new)
    assert [s.compression for s in img.streams] == [Compression.NONE, Compression.GZIP]
    main = {e.path: e for e in img.archives[-1].entries}
    assert main["etc/extra"].data == b"x" and "kernel/GenuineIntel.bin" not in main
    # new inode numbers never collide with the image's
    inos = [e.ino for e in img.archives[-1].entries if not e.is_file or e.nlink == 1]
    assert len(inos) == len(set(inos))


def test_inject_into_an_uncompressed_crc_archive(tmp_path: Path) -> None:
    image = write_archive([Entry.file("f", b"abc")], Format.CRC)
    extra = tmp_path / "g"
    extra.write_bytes(b"ghi")
    new = inject(image, [Injection(extra)])
    assert new.startswith(b"070702") and len(new) % 512 == 0
    assert [(e.path, e.data) for e in read_archive(new)] == [("f", b"abc"), ("g", b"ghi")]


@needs_root
@needs_cpio
def test_inject_into_a_debian_style_busybox_image(tmp_path: Path) -> None:
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox-static is not installed")
    root = tmp_path / "initramfs"
    for d in ("bin", "conf", "dev", "etc", "proc", "run", "scripts/init-top", "sys", "usr/bin"):
        (root / d).mkdir(parents=True)
    shutil.copy2(busybox, root / "bin" / "busybox")
    for applet in ("sh", "cat", "echo"):
        (root / "bin" / applet).symlink_to("busybox")
    (root / "init").write_text("#!/bin/sh\nexec /bin/sh\n")
    (root / "init").chmod(0o755)
    (root / "conf" / "initramfs.conf").write_text("MODULES=most\n")
    os.mknod(root / "dev" / "console", stat.S_IFCHR | 0o600, os.makedev(5, 1))
    image = sh("find . | cpio --quiet -H newc -o | gzip -9 -c", root)
    agent = tmp_path / "pxeforge-agent"
    agent.write_text('#!/bin/sh\necho "agent sees $(cat /etc/pxeforge/url)"\n')
    agent.chmod(0o755)
    conf = tmp_path / "pxeforge"
    conf.mkdir()
    (conf / "url").write_text("http://10.0.0.1:8080\n")
    path = tmp_path / "initrd.img"
    path.write_bytes(image)
    write_atomic(
        path, inject(image, [Injection(agent, "/usr/bin/"), Injection(conf, "/etc/pxeforge")])
    )
    new = path.read_bytes()
    assert detect(new) is Compression.GZIP
    listing = sh("gzip -dc | cpio --quiet -t", tmp_path, new).splitlines()
    assert b"usr/bin/pxeforge-agent" in listing and b"etc/pxeforge/url" in listing
    out = tmp_path / "out"
    out.mkdir()
    sh("gzip -dc | cpio --quiet -idm", out, new)
    assert stat.S_ISCHR((out / "dev" / "console").lstat().st_mode)
    ran = subprocess.run(
        ["chroot", str(out), "/bin/sh", "-c", "/usr/bin/pxeforge-agent"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == b"agent sees http://10.0.0.1:8080\n"


def test_parse_injection(tmp_path: Path) -> None:
    f = tmp_path / "a:b"
    f.write_text("colon in the name")
    assert parse_injection(str(f)) == Injection(f, None)
    assert parse_injection(f"{f}:/x") == Injection(f, "/x")
    g = tmp_path / "g"
    g.write_text("")
    assert parse_injection(f"{g}:/x:y") == Injection(g, "/x:y")
    with pytest.raises(ConfigError, match="empty destination"):
        parse_injection(f"{g}:")


# --------------------------------------------------------------------- hostile images


def _absurd_header(field_at: int, value: int) -> bytes:
    rec = bytearray(write_entry(Entry.file("f", b"")))
    rec[field_at : field_at + 8] = b"%08X" % value
    return bytes(rec)


def hostile_images(tmp_path: Path) -> dict[str, tuple[bytes, str]]:
    outside = tmp_path / "outside"
    benign = write_archive([Entry.directory("ok"), Entry.symlink("ok/here", "/ok")])
    return {
        "dotdot": (write_archive([Entry.file("../escaped", b"x")]), "climbs out"),
        "deep-dotdot": (write_archive([Entry.file("a/../../escaped", b"x")]), "climbs out"),
        "absolute": (
            compress(write_archive([Entry.file(str(outside / "abs"), b"x")]), Compression.GZIP),
            "absolute name",
        ),
        "symlink-climbs": (
            write_archive([Entry.symlink("esc", "../../outside"), Entry.file("esc/x", b"x")]),
            "points outside",
        ),
        "through-absolute-symlink": (
            write_archive([Entry.symlink("esc", str(outside)), Entry.file("esc/x", b"x")]),
            "through the symlink",
        ),
        "through-inner-symlink": (
            write_archive(
                [Entry.directory("d"), Entry.symlink("d/up", ".."), Entry.file("d/up/x", b"x")]
            ),
            "through the symlink",
        ),
        "through-earlier-segment": (
            benign + compress(write_archive([Entry.file("ok/here/x", b"x")]), Compression.ZSTD),
            "through the symlink",
        ),
        "huge-member": (_absurd_header(54, 0xFFFFFFFF), "exceeds"),
        "huge-name": (_absurd_header(94, 0x7FFFFFFF), "absurd name size"),
        "bomb": (
            compress(write_archive([Entry.file("zeros", bytes(8 << 20))]), Compression.GZIP),
            "more than",
        ),
    }


HOSTILE = [
    "dotdot", "deep-dotdot", "absolute", "symlink-climbs", "through-absolute-symlink",
    "through-inner-symlink", "through-earlier-segment", "huge-member", "huge-name", "bomb",
]  # fmt: skip


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_images_are_refused_before_writing(tmp_path: Path, case: str) -> None:
    image, message = hostile_images(tmp_path)[case]
    dest = tmp_path / "dest"
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(AssetError, match=message):
        unpack(image, dest, max_size=1 << 20)
    assert not dest.exists()  # nothing at all was written
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not (tmp_path / "outside").exists()


def test_unpack_refuses_a_non_empty_directory_and_the_layout_name(tmp_path: Path) -> None:
    image = write_archive([Entry.file("f", b"x")])
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "keep").write_text("mine")
    with pytest.raises(AssetError, match="not empty"):
        unpack(image, dest)
    unpack(image, dest, force=True)
    assert (dest / "keep").read_text() == "mine" and (dest / "f").read_bytes() == b"x"
    named = write_archive([Entry.file(LAYOUT_NAME, b"{}")])
    with pytest.raises(AssetError, match="--no-layout"):
        unpack(named, tmp_path / "e")
    assert unpack(named, tmp_path / "e", layout=False).layout is None
    with pytest.raises(AssetError, match="is not a directory"):
        unpack(image, dest / "f")
    with pytest.raises(AssetError, match="segments"):
        unpack(image, tmp_path / "g", segment=1)


def test_unpack_without_root_skips_devices(tmp_path: Path) -> None:
    image = write_archive([Entry.device("console", stat.S_IFCHR, 5, 1), Entry.file("f", b"")])
    result = unpack(image, tmp_path / "d", devices=False)
    assert result.skipped == ("console",) and result.made == ("f",)


def test_layout_file_errors(tmp_path: Path) -> None:
    for text, message in (
        ("not json", "not JSON"),
        ("{}", "not a version 1"),
        ('{"pxeforge-ramdisk": 1, "streams": []}', "without archives"),
        ('{"pxeforge-ramdisk": 1, "streams": [{"compression": "rar"}]}', "malformed"),
    ):
        with pytest.raises(AssetError, match=message):
            Layout.from_json(text)
    d = tmp_path / "d"
    d.mkdir()
    (d / LAYOUT_NAME).write_text('{"pxeforge-ramdisk": 2}')
    with pytest.raises(AssetError, match="not a version 1"):
        pack(d)
    assert detect(pack(d, flat=True).data) is Compression.GZIP
    # a layout round-trips through JSON, shadowed entries and odd names included
    e = Entry.file(os.fsdecode(b"raw\xffname"), b"\x00data", mode=0o600, uid=3, mtime=9)
    layout = Layout.of_image(
        scan_image(write_archive([e]) + compress(write_archive([e]), Compression.GZIP))
    )
    assert Layout.from_json(layout.to_json()) == layout
    assert json.loads(layout.to_json())["streams"][0]["archives"][0]["shadowed"]


def lz4_legacy(data: bytes) -> bytes:
    """A legacy lz4 stream of literal-only blocks (lz4 doc/lz4_Block_format.md)."""
    out = b"\x02\x21\x4c\x18"
    for at in range(0, len(data), 1 << 20):
        chunk = data[at : at + (1 << 20)]
        n = len(chunk)
        block = bytes([min(n, 15) << 4])
        if n >= 15:
            rest = n - 15
            block += b"\xff" * (rest // 255) + bytes([rest % 255])
        block += chunk
        out += len(block).to_bytes(4, "little") + block
    return out


def test_levels_and_compressions_that_cannot_be_written(tree: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="out of range for gzip"):
        pack(tree, level=12)
    with pytest.raises(ConfigError, match="does not apply"):
        pack(tree, compression=Compression.NONE, level=3)
    image = lz4_legacy(write_archive([Entry.file("f", b"lz4 " * 100)]))
    assert scan_image(image).streams[0].compression is Compression.LZ4_LEGACY
    unpack(image, tmp_path / "d")
    assert (tmp_path / "d" / "f").read_bytes() == b"lz4 " * 100
    with pytest.raises(AssetError, match="--compress"):
        pack(tmp_path / "d")
    assert detect(pack(tmp_path / "d", compression=Compression.XZ).data) is Compression.XZ
    g = tmp_path / "g"
    g.write_text("g")
    with pytest.raises(AssetError, match="--compress"):
        inject(image, [Injection(g)])
    new = inject(image, [Injection(g)], compression=Compression.ZSTD)
    assert [e.path for e in read_archive(new)] == ["f", "g"]


def test_extracted_tree_matches_core_extract(tree: Path, tmp_path: Path) -> None:
    """unpack is the core extractor plus checks: same result as `extract` on the entries."""
    image = pack(tree, compression=Compression.XZ).data
    a, b = tmp_path / "a", tmp_path / "b"
    unpack(image, a, layout=False)
    extract(read_archive(image), b)
    assert snapshot(a) == snapshot(b)
