"""An initramfs image as data: its streams, its cpio archives, and their listing.

Theory of operation
-------------------
An initramfs image is a run of *streams* separated by zero bytes: an uncompressed cpio archive
(typically the early-microcode one, ``kernel/x86/microcode/GenuineIntel.bin``), then one or more
compressed streams, each holding one or more cpio archives (the kernel's ``unpack_to_rootfs`` in
init/initramfs.c walks exactly this; Documentation/driver-api/early-userspace/buffer-format.rst).
`scan_image` turns the bytes into an `Image`: its `Stream`\\ s (compression, offset, the zero
bytes after), and in each the `Archive`\\ s with their entries and the zero padding that follows
them, so that a writer can put every byte back. The flattened list of archives is what the CLI
calls *segments* (``--segment N``). The gzip level is read back from the header's XFL byte
(RFC 1952 §2.3.1: 2 = level 9, 4 = level 1); xz and zstd do not record theirs.

`format_entry` prints a member as ``cpio -t`` / ``cpio -tv`` do (GNU cpio's long format: mode
string, links, owner names from this host's passwd, size or ``major, minor``, ``Mon dd HH:MM``
within six months and ``Mon dd  YYYY`` otherwise, name, ``-> target``).
"""

from __future__ import annotations

import functools
import grp
import os
import pwd
import re
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from pxeforge.errors import AssetError, ConfigError
from pxeforge.ramdisk.compress import Compression, decompress_prefix, detect
from pxeforge.ramdisk.cpio import DEFAULT_MAX_ENTRY, Entry, Format, parse_archive

__all__ = [
    "DEFAULT_MAX_IMAGE",
    "LEVELS",
    "WRITABLE",
    "Archive",
    "Image",
    "Stream",
    "check_level",
    "format_entry",
    "scan_image",
]

DEFAULT_MAX_IMAGE: Final = 2 << 30  # decompressed bytes of one image held in memory at most
_BLOCK: Final = 512  # GNU cpio's output block size
_SIX_MONTHS: Final = 6 * 30 * 24 * 3600  # `ls -l` / `cpio -tv`: older shows the year
_NONZERO: Final = re.compile(rb"[^\x00]")

# Compressions `pack` and `inject` can write, and the levels each accepts.
WRITABLE: Final = (
    Compression.GZIP,
    Compression.XZ,
    Compression.ZSTD,
    Compression.BZIP2,
    Compression.LZMA,
    Compression.NONE,
)
LEVELS: Final[Mapping[Compression, range]] = {
    Compression.GZIP: range(10),
    Compression.XZ: range(10),
    Compression.LZMA: range(10),
    Compression.BZIP2: range(1, 10),
    Compression.ZSTD: range(1, 23),
    Compression.NONE: range(0),
}


def check_level(kind: Compression, level: int | None) -> None:
    """Raise `ConfigError` when ``level`` is not a level of ``kind``."""
    if level is None:
        return
    allowed = LEVELS.get(kind, range(0))
    if not allowed:
        raise ConfigError(f"--level does not apply to {kind.value} output")
    if level not in allowed:
        raise ConfigError(
            f"--level {level} is out of range for {kind.value} ({allowed[0]}-{allowed[-1]})"
        )


# --------------------------------------------------------------------------- scanning


@dataclass(frozen=True, slots=True)
class Archive:
    """One cpio archive of an image (one *segment*)."""

    index: int  # among all archives of the image: the segment number
    stream: int  # index of the stream that holds it
    format: Format
    start: int  # offset in the stream's plain bytes
    end: int  # just past its trailer record
    zeros: int  # zero bytes after it, up to the next archive or the end of the stream
    entries: tuple[Entry, ...] = field(repr=False)

    @property
    def block_size(self) -> int:
        """512 when the zeros pad the archive to a 512-byte multiple (GNU cpio), else 4."""
        return _BLOCK if self.zeros >= -(self.end - self.start) % _BLOCK else 4

    @property
    def padding(self) -> int:
        """Zero bytes after the archive beyond its block padding."""
        if self.block_size == _BLOCK:
            return self.zeros - (-(self.end - self.start) % _BLOCK)
        return self.zeros


@dataclass(frozen=True, slots=True)
class Stream:
    """A run of image bytes: one uncompressed archive, or one compressed stream."""

    index: int
    offset: int  # where it starts in the image
    length: int  # image bytes it spans (an uncompressed archive: with its zero padding)
    compression: Compression
    level: int | None  # compression level when the stream's header tells it (gzip), else None
    zeros: int  # zero bytes after it in the image (always 0 after an uncompressed archive)
    lead: int  # zero bytes at the start of its plain bytes, before the first archive
    archives: tuple[Archive, ...]
    plain: bytes = field(repr=False)  # its decompressed bytes (uncompressed: the bytes as is)


@dataclass(frozen=True, slots=True)
class Image:
    size: int
    leading: int  # zero bytes before the first stream
    streams: tuple[Stream, ...]

    @property
    def archives(self) -> tuple[Archive, ...]:
        return tuple(a for s in self.streams for a in s.archives)

    def archive(self, index: int) -> Archive:
        found = self.archives
        if not 0 <= index < len(found):
            raise IndexError(f"the image has {len(found)} segments (0-{len(found) - 1})")
        return found[index]


def _skip_zeros(data: bytes, pos: int) -> int:
    found = _NONZERO.search(data, pos)
    return len(data) if found is None else found.start()


def _gzip_level(head: bytes) -> int | None:
    """RFC 1952 §2.3.1 XFL: 2 = maximum compression (level 9), 4 = fastest (level 1)."""
    if len(head) < 10:
        return None
    return {2: 9, 4: 1}.get(head[8])


def scan_image(
    data: bytes, *, max_entry: int = DEFAULT_MAX_ENTRY, max_size: int = DEFAULT_MAX_IMAGE
) -> Image:
    """Every stream and archive of an initramfs image. Raises `AssetError` for bytes that are
    not one, `UnsafeArchive` for absurd member sizes, and refuses to decompress more than
    ``max_size`` bytes in all."""
    streams: list[Stream] = []
    count = 0
    budget = max_size
    pos = leading = _skip_zeros(data, 0)
    while pos < len(data):
        kind = detect(data[pos : pos + 8])
        if kind is Compression.NONE:
            entries, end, fmt = parse_archive(data, pos, max_entry=max_entry)
            nxt = _skip_zeros(data, end)
            arch = Archive(count, len(streams), fmt, 0, end - pos, nxt - end, tuple(entries))
            plain = data[pos:nxt]
            streams.append(Stream(len(streams), pos, nxt - pos, kind, None, 0, 0, (arch,), plain))
            count += 1
            pos = nxt
            continue
        if budget <= 0:
            raise AssetError(f"image decompresses to more than {max_size} bytes; refused")
        plain, used = decompress_prefix(data[pos:], kind, max_size=budget)
        budget -= len(plain)
        lead = inner = _skip_zeros(plain, 0)
        if inner >= len(plain):
            raise AssetError(f"{kind.value} stream at offset {pos} holds no cpio archive")
        archives: list[Archive] = []
        while inner < len(plain):
            entries, end, fmt = parse_archive(plain, inner, max_entry=max_entry)
            nxt = _skip_zeros(plain, end)
            archives.append(
                Archive(count, len(streams), fmt, inner, end, nxt - end, tuple(entries))
            )
            count += 1
            inner = nxt
        level = _gzip_level(data[pos : pos + 10]) if kind is Compression.GZIP else None
        after = _skip_zeros(data, pos + used)
        streams.append(
            Stream(
                len(streams), pos, used, kind, level, after - pos - used, lead,
                tuple(archives), plain,
            )
        )  # fmt: skip
        pos = after
    if not streams:
        raise AssetError("the image is empty (no cpio archive)")
    return Image(len(data), leading, tuple(streams))


# --------------------------------------------------------------------------- listing


@functools.lru_cache(maxsize=256)
def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


@functools.lru_cache(maxsize=256)
def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
                  "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")  # fmt: skip


def _when(mtime: int, now: float) -> str:
    """``Mon dd HH:MM`` within six months before ``now``, else ``Mon dd  YYYY`` (local time)."""
    t = time.localtime(mtime)
    day = f"{_MONTHS[t.tm_mon - 1]} {t.tm_mday:2d}"
    if 0 <= now - mtime <= _SIX_MONTHS:
        return f"{day} {t.tm_hour:02d}:{t.tm_min:02d}"
    return f"{day}  {t.tm_year}"


def format_entry(
    entry: Entry, *, long: bool = False, numeric: bool = False, now: float | None = None
) -> bytes:
    """One line of a listing (without newline), as ``cpio -t`` (the name) or ``cpio -tv``
    (mode, links, owner, size or device numbers, mtime, name, ``-> target``) prints it.
    Bytes, because member names need not be valid UTF-8."""
    name = os.fsencode(entry.name)
    if not long:
        return name
    if numeric:
        owner = f"{entry.uid:<8d} {entry.gid:<8d}"
    else:
        owner = f"{_user(entry.uid):<8.8} {_group(entry.gid):<8.8}"
    if entry.is_device:
        size = f"{entry.rdev_major:3d}, {entry.rdev_minor:3d}"
    else:
        size = f"{entry.size:8d}"
    when = _when(entry.mtime, time.time() if now is None else now)
    head = f"{stat.filemode(entry.mode)} {entry.nlink:3d} {owner} {size} {when} "
    line = head.encode() + name
    if entry.is_symlink:
        line += b" -> " + entry.data
    return line
