"""Initramfs images as whole objects: list, unpack, pack and inject (``pxeforge ramdisk …``).

Theory of operation
-------------------
This module is the facade of the image operations; the parts live beside it:
`pxeforge.ramdisk.image` (scan an image into streams and archives; ``cpio -tv`` listing),
`pxeforge.ramdisk.layout` (the ``.pxeforge-ramdisk.json`` file), `pxeforge.ramdisk.inject`
(edit the last archive in memory). Here are `unpack` and `pack`.

`unpack` extracts every archive below one directory, in order (later archives win, as in the
kernel), with `pxeforge.ramdisk.cpio.extract`, after a pre-flight pass that refuses a hostile
image before anything is written: absolute names, ``..``, members that would be written
*through* a symlink of the image (GNU cpio 2.13 refuses those too: CVE-2015-1197), relative
symlinks climbing above the root, and more data than ``max_size``. Directory mtimes are set
again once every archive is in (the kernel's ``dir_utime`` also runs last), then the `Layout`
is written without touching the top directory's mode or mtime.

`pack` is ``find . | LC_ALL=C sort | cpio -H newc -o --reproducible | gzip``: names sorted
bytewise, hard links deferred like GNU cpio (the last link carries the data), inode numbers
renumbered from 0 in order of appearance, device numbers of the filesystem zeroed, a
directory's link count computed from the archive (2 + its subdirectories) and a file's from
its links in the archive (a link outside the tree does not count); ``mtime`` clamps timestamps
(``SOURCE_DATE_EPOCH``). So a tree packs to the same bytes wherever it is copied, and matches
GNU ``cpio --reproducible`` whenever no hard link leaves the tree. With a layout file it
rebuilds the same streams and archives: recorded names go back to their archive, in their
recorded order (in `pack` order with the new ones when they were in it), new files go to the
last archive, deleted ones are dropped, shadowed members come back from the layout. So unpack +
pack of an image pxeforge packed gives the same bytes as long as the compression level is the
same (gzip's is read back from its header; xz and zstd need ``level`` again when it was not the
default).
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pxeforge.errors import AssetError
from pxeforge.fsutil import write_atomic
from pxeforge.ramdisk.compress import Compression, compress
from pxeforge.ramdisk.cpio import (
    Entry,
    Format,
    UnsafeArchive,
    extract,
    pack_directory,
    write_archive,
)
from pxeforge.ramdisk.image import (
    DEFAULT_MAX_IMAGE,
    LEVELS,
    WRITABLE,
    Archive,
    Image,
    Stream,
    check_level,
    format_entry,
    scan_image,
)
from pxeforge.ramdisk.inject import Injection, inject, parse_injection
from pxeforge.ramdisk.layout import (
    LAYOUT_NAME,
    ArchiveLayout,
    Layout,
    StreamLayout,
    read_layout,
)

__all__ = [
    "DEFAULT_MAX_IMAGE",
    "LAYOUT_NAME",
    "LEVELS",
    "WRITABLE",
    "Archive",
    "ArchiveLayout",
    "Image",
    "Injection",
    "Layout",
    "PackResult",
    "Stream",
    "StreamLayout",
    "UnpackResult",
    "check_level",
    "format_entry",
    "inject",
    "pack",
    "parse_injection",
    "read_layout",
    "scan_image",
    "unpack",
    "write_atomic",
]


# --------------------------------------------------------------------------- unpacking


@dataclass(frozen=True, slots=True)
class UnpackResult:
    dest: Path
    segments: int  # archives extracted
    made: tuple[str, ...]  # member paths created
    skipped: tuple[str, ...]  # members not created (device nodes when not root)
    layout: Path | None  # the layout file written


def _member_parts(name: str) -> tuple[str, ...]:
    if "\x00" in name:
        raise UnsafeArchive(f"member name {name!r} contains NUL; refused")
    if name.startswith("/"):
        raise UnsafeArchive(f"member {name!r} has an absolute name; refused")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise UnsafeArchive(f"member {name!r} climbs out with '..'; refused")
    return parts


def _climbs_out(depth: int, target: str) -> bool:
    for p in target.split("/"):
        if p == "..":
            depth -= 1
            if depth < 0:
                return True
        elif p not in ("", "."):
            depth += 1
    return False


def _preflight(entries: Iterable[Entry], max_size: int, layout: bool) -> None:
    """Refuse a hostile image before anything is written (see the module docstring)."""
    links: dict[str, str] = {}  # path → target of the symlinks the image has made so far
    total = 0
    for e in entries:
        parts = _member_parts(e.name)
        total += len(e.data)
        if total > max_size:
            raise UnsafeArchive(f"the image holds more than {max_size} bytes of data; refused")
        for i in range(1, len(parts)):
            via = "/".join(parts[:i])
            if via in links:
                raise UnsafeArchive(
                    f"member {e.name!r} would be written through the symlink "
                    f"{via!r} -> {links[via]!r}; refused"
                )
        path = "/".join(parts)
        if layout and path == LAYOUT_NAME:
            raise AssetError(
                f"the image has a member named {LAYOUT_NAME}, the layout file's name; "
                "unpack it with --no-layout"
            )
        if e.is_symlink:
            target = e.link_target
            if not target.startswith("/") and _climbs_out(len(parts) - 1, target):
                raise UnsafeArchive(
                    f"symlink {e.name!r} -> {target!r} points outside the directory; refused"
                )
            links[path] = target
        else:
            links.pop(path, None)


def unpack(
    data: bytes,
    dest: Path,
    *,
    segment: int | None = None,
    layout: bool = True,
    force: bool = False,
    max_size: int = DEFAULT_MAX_IMAGE,
    preserve_owner: bool | None = None,
    devices: bool | None = None,
) -> UnpackResult:
    """Extract an image's archives (all, or only ``segment``) below ``dest``, like
    ``cpio -idm`` of each in turn, and record the layout unless ``layout`` is false.

    ``dest`` must be missing or empty unless ``force``. Owners and device nodes are restored
    when running as root (see `pxeforge.ramdisk.cpio.extract`). Raises `UnsafeArchive` for a
    hostile image (nothing written), `AssetError` for one that does not decode."""
    dest = Path(dest)
    image = scan_image(data, max_size=max_size)
    try:
        chosen = [image.archive(segment)] if segment is not None else list(image.archives)
    except IndexError as exc:
        raise AssetError(str(exc)) from None
    _preflight((e for a in chosen for e in a.entries), max_size, layout)
    if dest.exists() or dest.is_symlink():
        if not dest.is_dir():
            raise AssetError(f"{dest} exists and is not a directory")
        if not force and any(dest.iterdir()):
            raise AssetError(f"{dest} is not empty (use --force to extract over it)")
    made: list[str] = []
    left = max_size
    for a in chosen:
        made += extract(
            a.entries, dest, preserve_owner=preserve_owner, devices=devices, max_total=left
        )
        left -= sum(len(e.data) for e in a.entries)
    _restore_dir_times(dest, chosen)
    wanted = {e.path for a in chosen for e in a.entries} - {"."}
    skipped = tuple(sorted(wanted - set(made)))
    written: Path | None = None
    if layout:
        written = dest / LAYOUT_NAME
        _write_keeping_dir_times(written, Layout.of_image(image, segment).to_json().encode())
    return UnpackResult(dest, len(chosen), tuple(made), skipped, written)


def _restore_dir_times(dest: Path, archives: Sequence[Archive]) -> None:
    """Directory mtimes once every archive is in (a later archive writing into a directory
    of an earlier one changes its mtime; the kernel also sets them all at the very end)."""
    dirs: dict[str, Entry] = {}
    for a in archives:
        for e in a.entries:
            if e.is_dir:
                dirs[e.path] = e
            else:
                dirs.pop(e.path, None)
    top = dest.resolve()
    for path, e in sorted(dirs.items(), key=lambda item: -item[0].count("/")):
        where = dest if path == "." else dest / path
        if where.resolve() == top or top in where.resolve().parents:
            os.utime(where, (e.mtime, e.mtime), follow_symlinks=False)


def _write_keeping_dir_times(path: Path, data: bytes) -> None:
    """Write a file into a directory without changing the directory's mode or mtime (they
    came from the image's ``.`` entry)."""
    parent = path.parent
    st = parent.stat()
    writable = os.access(parent, os.W_OK)
    if not writable:
        os.chmod(parent, stat.S_IMODE(st.st_mode) | stat.S_IWUSR)
    try:
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    finally:
        if not writable:
            os.chmod(parent, stat.S_IMODE(st.st_mode))
        os.utime(parent, ns=(st.st_atime_ns, st.st_mtime_ns))


# --------------------------------------------------------------------------- packing


@dataclass(frozen=True, slots=True)
class PackResult:
    data: bytes
    layout: Layout  # what was built (from the layout file, or a single gzip'd archive)
    from_layout: bool  # whether DIR's layout file was followed
    entries: int  # members written, over all archives


def _sort_key(name: str) -> bytes:
    """``find . | LC_ALL=C sort`` order ("." first, then "./name" compared bytewise)."""
    return b"." if name == "." else b"./" + os.fsencode(name)


def _walk(root: Path) -> list[str]:
    """Every path below ``root`` (``.`` included) without following symlinks, minus the
    layout file, in `_sort_key` order."""
    names = ["."]
    for top, dirs, files in os.walk(root, followlinks=False):
        rel = os.path.relpath(top, root)
        for n in dirs + files:
            if rel == "." and n == LAYOUT_NAME:
                continue
            names.append(n if rel == "." else f"{rel}/{n}")
    return sorted(names, key=_sort_key)


def _norm(name: str) -> str:
    """A member name as a relative path ("." for the top)."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    return "/".join(parts) or "."


def _owner_of(owner: tuple[int, int] | None, e: Entry) -> tuple[int, int]:
    return (e.uid, e.gid) if owner is None else owner


def _link_order(
    paths: Sequence[str], group_of: Mapping[str, object], defer: bool
) -> list[tuple[str, bool]]:
    """Archive order of ``paths`` and whether each record carries its file's data.

    ``group_of`` maps hard-linked paths to their inode; a group counts only its members in
    ``paths``. The last record of a group carries the data. With ``defer`` (what GNU cpio
    does for newc), a group's earlier links wait and go out, newest first, just before its
    last one; otherwise the order is kept."""
    size: dict[object, int] = {}
    for p in paths:
        if p in group_of:
            size[group_of[p]] = size.get(group_of[p], 0) + 1
    out: list[tuple[str, bool]] = []
    waiting: list[str] = []
    seen: dict[object, int] = {}
    for p in paths:
        key = group_of.get(p)
        if key is None or size[key] == 1:
            out.append((p, True))
            continue
        seen[key] = seen.get(key, 0) + 1
        last = seen[key] == size[key]
        if not defer:
            out.append((p, last))
        elif not last:
            waiting.insert(0, p)
        else:
            out += [(w, False) for w in waiting if group_of[w] == key]
            waiting = [w for w in waiting if group_of[w] != key]
            out.append((p, True))
    return out


def _normalize(
    entries: Sequence[Entry],
    order: Sequence[str],
    group_of: Mapping[str, object],
    *,
    mtime: int | None,
    owner: tuple[int, int] | None,
) -> list[Entry]:
    """Make an archive's headers independent of the filesystem they came from: inodes
    renumbered from 0 in order of appearance in ``order`` (paths as met, before hard links
    are deferred), links sharing theirs (``cpio --renumber-inodes``), device numbers zeroed
    (``--ignore-devno``), link counts computed from the archive, mtimes clamped to
    ``mtime``, owners replaced by ``owner``."""
    size: dict[object, int] = {}
    subdirs: dict[str, int] = {}
    for e in entries:
        if e.path in group_of:
            size[group_of[e.path]] = size.get(group_of[e.path], 0) + 1
        if e.is_dir and e.path != ".":
            parent = e.path.rpartition("/")[0] or "."
            subdirs[parent] = subdirs.get(parent, 0) + 1
    numbers: dict[object, int] = {}
    for p in [*order, *(e.path for e in entries)]:
        numbers.setdefault(group_of.get(p, ("own", p)), len(numbers))
    out: list[Entry] = []
    for e in entries:
        key = group_of.get(e.path, ("own", e.path))
        ino = numbers[key]
        if e.path in group_of:
            nlink = size[key]
        else:
            nlink = 2 + subdirs.get(e.path, 0) if e.is_dir else 1
        uid, gid = _owner_of(owner, e)
        out.append(
            dataclasses.replace(
                e,
                ino=ino,
                nlink=nlink,
                dev_major=0,
                dev_minor=0,
                uid=uid,
                gid=gid,
                mtime=e.mtime if mtime is None else min(e.mtime, mtime),
            )
        )
    return out


def _pack_archive(
    root: Path,
    alayout: ArchiveLayout,
    kept: list[str],
    new: list[str],
    *,
    mtime: int | None,
    owner: tuple[int, int] | None,
) -> list[Entry]:
    """The entries of one archive: ``kept`` (recorded names still in the tree, in recorded
    order and spelling) plus ``new`` (paths of the tree no archive has).

    Recorded names that were in `pack` order (sorted, hard links deferred like GNU cpio) are
    packed in that order with the new ones; any other recorded order is kept as it is, with
    the new names after it."""
    spelled = {_norm(n): n for n in reversed(kept)}
    recorded = list(dict.fromkeys(_norm(n) for n in kept))
    stats: dict[str, Entry] = {}
    for p in sorted({*recorded, *new}, key=_sort_key):
        stats[p] = pack_directory(root, [p])[0]  # one path: its entry with its data
    group_of: dict[str, object] = {
        p: e.inode_key
        for p, e in stats.items()
        if e.is_file and e.nlink > 1 and e.name not in alayout.shadowed
    }
    canonical = _link_order(sorted(recorded, key=_sort_key), group_of, defer=True)
    if [p for p, _ in canonical] == recorded:
        order = list(stats)
        records = _link_order(order, group_of, defer=True)
    else:
        order = recorded + new
        records = _link_order(order, group_of, defer=False)
    entries: list[Entry] = []
    for p, carries in records:
        name = spelled.get(p, p)
        e = alayout.shadowed.get(name) or dataclasses.replace(
            stats[p], name=name, data=stats[p].data if carries else b""
        )
        entries.append(e)
    return _normalize(entries, order, group_of, mtime=mtime, owner=owner)


def pack(
    root: Path,
    *,
    compression: Compression | None = None,
    level: int | None = None,
    mtime: int | None = None,
    owner: tuple[int, int] | None = None,
    flat: bool = False,
) -> PackResult:
    """Pack a directory tree into an image (see the module docstring).

    Without a layout file (or with ``flat``): one newc archive, ``compression`` (default gzip).
    With one: the recorded streams, ``compression``/``level`` applying to the last one."""
    root = Path(root)
    if not root.is_dir():
        raise AssetError(f"{root} is not a directory")
    found = None if flat else read_layout(root)
    if found is None:
        layout = Layout.single(compression or Compression.GZIP, level)
    else:
        layout = found
        if compression is not None or level is not None:
            last = layout.streams[-1]
            kind = compression or last.compression
            lvl = level if level is not None else (last.level if kind is last.compression else None)
            streams = (*layout.streams[:-1], dataclasses.replace(last, compression=kind, level=lvl))
            layout = dataclasses.replace(layout, streams=streams)
    for i, s in enumerate(layout.streams):
        if s.compression not in WRITABLE:
            fix = "--compress" if i == len(layout.streams) - 1 else "--flat"
            raise AssetError(
                f"the layout's stream {i} is {s.compression.value}, which pxeforge cannot "
                f"write; choose another compression with {fix}"
            )
        check_level(s.compression, s.level)
    tree = _walk(root)
    present = set(tree)
    every = [a for s in layout.streams for a in s.archives]
    known = {_norm(n) for a in every for n in a.names}
    # the top directory is only packed when an archive had it ("." is in every find . list)
    new = [n for n in tree if n not in known and (n != "." or found is None)]
    out = bytearray(layout.leading)
    count = 0
    for s in layout.streams:
        plain = bytearray(s.lead)
        for a in s.archives:
            kept = [n for n in a.names if _norm(n) in present]
            entries = _pack_archive(
                root, a, kept, new if a is every[-1] else [], mtime=mtime, owner=owner
            )
            count += len(entries)
            fmt = a.format if a.format in (Format.NEWC, Format.CRC) else Format.NEWC
            plain += write_archive(entries, fmt, block_size=a.block_size)
            plain += bytes(a.padding)
        out += compress(bytes(plain), s.compression, level=s.level)
        out += bytes(s.padding)
    return PackResult(bytes(out), layout, found is not None, count)


# --------------------------------------------------------------------------- files
