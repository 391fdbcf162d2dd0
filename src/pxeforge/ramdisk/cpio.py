"""cpio archives: the format of Linux initramfs images and of RPM payloads.

Theory of operation
-------------------
A cpio archive is a run of (header, name, data) records closed by a record named
``TRAILER!!!``. Four header flavours exist (cpio(5), and the kernel's
Documentation/driver-api/early-userspace/buffer-format.rst for newc):

    newc  "070701"  13 fields of 8 ASCII hex digits; header+name and data padded to 4 bytes
    crc   "070702"  newc whose ``check`` field is the sum of the data bytes (mod 2**32)
    odc   "070707"  POSIX.1 portable: octal fields, no padding, one 18-bit device number
    bin   0o070707  old binary: 16-bit words in either byte order, 32-bit values as two
                    words high-first; header+name and data padded to 2 bytes

All four are read; newc and crc are written (the kernel reads only those). The pure functions
`parse_archive`/`read_archive` and `write_archive` turn bytes into frozen `Entry` values and
back: reading what GNU ``cpio -o`` wrote and writing it again gives the same bytes, trailer and
512-byte block padding included (``block_size``).

Hard links, the newc way: every link is a record with the same (dev, ino); GNU cpio gives the
data to the *last* record of a group and writes the others with size 0. `pack_directory`
reproduces that order exactly (the deferral rules of GNU cpio's ``copyout.c``), so packing a tree
in ``find . | LC_ALL=C sort`` order gives byte-for-byte what ``cpio -H newc -o`` gives.

An initramfs is several archives back to back: usually an uncompressed early-microcode archive,
zero padding, then a compressed main archive (the kernel's ``unpack_to_rootfs`` in
init/initramfs.c skips zeros between them and sniffs each compression magic). `iter_segments`
walks that sequence and `read_image` flattens it.

`extract` writes entries below a directory and never outside it: names that are absolute or
contain ``..`` are refused, parent directories are resolved as if the directory were ``/`` (a
symlink ``lib -> /usr/lib`` in the image leads to ``DEST/usr/lib``, never to the host's),
the final path component is replaced rather than followed, a relative symlink that climbs above
the directory is refused, and sizes are capped. Errors are `UnsafeArchive` (the archive's
fault) or `AssetError` (it does not decode).
"""

from __future__ import annotations

import enum
import io
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final, Literal

from pxeforge.errors import AssetError
from pxeforge.ramdisk.compress import DEFAULT_MAX_SIZE, Compression, decompress_prefix, detect

__all__ = [
    "TRAILER",
    "Entry",
    "Format",
    "Segment",
    "UnsafeArchive",
    "extract",
    "extract_image",
    "iter_entries",
    "iter_segments",
    "pack_directory",
    "parse_archive",
    "read_archive",
    "read_image",
    "write_archive",
    "write_entry",
    "write_trailer",
]

TRAILER: Final = "TRAILER!!!"
_MAX_NAME: Final = 4096  # PATH_MAX; anything longer is an absurd (hostile or corrupt) header
DEFAULT_MAX_ENTRY: Final = 1 << 30  # one member above 1 GiB is refused unless asked for
_NEWC_LEN: Final = 110
_ODC_LEN: Final = 76
_BIN_LEN: Final = 26
_NONZERO: Final = re.compile(rb"[^\x00]")


class Format(enum.Enum):
    NEWC = "newc"
    CRC = "crc"
    ODC = "odc"
    BIN = "bin"  # old binary; byte order is detected on read


_MAGIC_NEWC: Final = b"070701"
_MAGIC_CRC: Final = b"070702"
_MAGIC_ODC: Final = b"070707"
_MAGIC_BIN_LE: Final = b"\xc7\x71"
_MAGIC_BIN_BE: Final = b"\x71\xc7"


class UnsafeArchive(AssetError):
    """An archive member that would escape the extraction directory, or is absurdly large."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One cpio record. ``data`` is the file's contents, or a symlink's target (as in cpio)."""

    name: str
    mode: int  # st_mode: file type bits and permissions
    data: bytes = b""
    uid: int = 0
    gid: int = 0
    nlink: int = 1
    mtime: int = 0
    ino: int = 0
    dev_major: int = 0
    dev_minor: int = 0
    rdev_major: int = 0
    rdev_minor: int = 0
    check: int = 0  # crc format: sum of data bytes; 0 elsewhere

    @classmethod
    def file(cls, name: str, data: bytes, mode: int = 0o644, **kw: int) -> Entry:
        return cls(name, stat.S_IFREG | mode, data, **kw)

    @classmethod
    def directory(cls, name: str, mode: int = 0o755, **kw: int) -> Entry:
        return cls(name, stat.S_IFDIR | mode, b"", **kw)

    @classmethod
    def symlink(cls, name: str, target: str, **kw: int) -> Entry:
        return cls(name, stat.S_IFLNK | 0o777, os.fsencode(target), **kw)

    @classmethod
    def device(
        cls, name: str, kind: int, major: int, minor: int, mode: int = 0o600, **kw: int
    ) -> Entry:
        """``kind`` is stat.S_IFCHR or stat.S_IFBLK."""
        return cls(name, kind | mode, b"", rdev_major=major, rdev_minor=minor, **kw)

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def perms(self) -> int:
        return stat.S_IMODE(self.mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)

    @property
    def is_device(self) -> bool:
        return stat.S_ISCHR(self.mode) or stat.S_ISBLK(self.mode)

    @property
    def link_target(self) -> str:
        """A symlink's target (the record's data) as a path string."""
        return os.fsdecode(self.data)

    @property
    def inode_key(self) -> tuple[int, int, int]:
        """What makes records hard links of each other."""
        return (self.dev_major, self.dev_minor, self.ino)

    @property
    def path(self) -> str:
        """The name without leading ``./`` or ``/`` (``"."`` for the top directory)."""
        name = self.name
        while name.startswith("./"):
            name = name[2:]
        name = name.lstrip("/")
        return name or "."


@dataclass(frozen=True, slots=True)
class Segment:
    """One archive of an initramfs image."""

    offset: int  # where its bytes start in the image
    length: int  # how many image bytes it spans (compressed size if compressed)
    compression: Compression
    format: Format
    entries: tuple[Entry, ...] = field(repr=False)


# --------------------------------------------------------------------------- reading


def _decode_name(raw: bytes) -> str:
    return os.fsdecode(raw)


class _Cursor:
    """Reads exact byte counts from a stream and tracks the offset from the archive start."""

    __slots__ = ("pos", "stream")

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.pos = 0

    def read(self, n: int, what: str) -> bytes:
        data = self.stream.read(n) if n else b""
        if len(data) != n:
            raise AssetError(
                f"cpio archive truncated at offset {self.pos + len(data)}: "
                f"{what} wants {n} bytes, {len(data)} left"
            )
        self.pos += n
        return data

    def align(self, to: int) -> None:
        pad = -self.pos % to
        if pad:
            self.read(pad, "padding")


def _hex_fields(raw: bytes, pos: int) -> list[int]:
    try:
        return [int(raw[i : i + 8], 16) for i in range(6, _NEWC_LEN, 8)]
    except ValueError:
        raise AssetError(f"cpio newc header at offset {pos} has a non-hex field") from None


def _check_sizes(namesize: int, filesize: int, pos: int, max_entry: int) -> None:
    if namesize < 2 or namesize > _MAX_NAME + 1:
        raise UnsafeArchive(f"cpio header at offset {pos}: absurd name size {namesize}")
    if filesize > max_entry:
        raise UnsafeArchive(
            f"cpio header at offset {pos}: member of {filesize} bytes exceeds the "
            f"{max_entry}-byte limit"
        )


def _read_name(cur: _Cursor, namesize: int, pos: int) -> str:
    raw = cur.read(namesize, "name")
    if raw[-1:] != b"\x00" or b"\x00" in raw[:-1]:
        raise AssetError(f"cpio header at offset {pos}: name is not one NUL-terminated string")
    return _decode_name(raw[:-1])


def _read_newc(cur: _Cursor, magic: bytes, max_entry: int) -> Entry:
    pos = cur.pos - 6
    raw = magic + cur.read(_NEWC_LEN - 6, "newc header")
    ino, mode, uid, gid, nlink, mtime, filesize, dmaj, dmin, rmaj, rmin, namesize, check = (
        _hex_fields(raw, pos)
    )
    _check_sizes(namesize, filesize, pos, max_entry)
    name = _read_name(cur, namesize, pos)
    cur.align(4)
    data = cur.read(filesize, f"data of {name!r}")
    cur.align(4)
    if magic == _MAGIC_CRC and stat.S_ISREG(mode) and filesize:
        if sum(data) & 0xFFFFFFFF != check:
            raise AssetError(f"cpio crc archive: checksum mismatch for {name!r} (offset {pos})")
    return Entry(name, mode, data, uid, gid, nlink, mtime, ino, dmaj, dmin, rmaj, rmin, check)


def _read_odc(cur: _Cursor, max_entry: int) -> Entry:
    pos = cur.pos - 6
    raw = cur.read(_ODC_LEN - 6, "odc header")
    widths = (6, 6, 6, 6, 6, 6, 6, 11, 6, 11)
    values: list[int] = []
    at = 0
    try:
        for w in widths:
            values.append(int(raw[at : at + w], 8))
            at += w
    except ValueError:
        raise AssetError(f"cpio odc header at offset {pos} has a non-octal field") from None
    dev, ino, mode, uid, gid, nlink, rdev, mtime, namesize, filesize = values
    _check_sizes(namesize, filesize, pos, max_entry)
    name = _read_name(cur, namesize, pos)
    data = cur.read(filesize, f"data of {name!r}")
    return Entry(
        name, mode, data, uid, gid, nlink, mtime, ino,
        os.major(dev), os.minor(dev), os.major(rdev), os.minor(rdev),
    )  # fmt: skip


def _read_bin(cur: _Cursor, magic: bytes, max_entry: int) -> Entry:
    pos = cur.pos - 2
    order: Literal["little", "big"] = "little" if magic == _MAGIC_BIN_LE else "big"
    raw = magic + cur.read(_BIN_LEN - 2, "binary header")
    w = [int.from_bytes(raw[i : i + 2], order) for i in range(0, _BIN_LEN, 2)]
    _, dev, ino, mode, uid, gid, nlink, rdev, mt_hi, mt_lo, namesize, fs_hi, fs_lo = w
    mtime = mt_hi << 16 | mt_lo
    filesize = fs_hi << 16 | fs_lo
    _check_sizes(namesize, filesize, pos, max_entry)
    name = _read_name(cur, namesize, pos)
    cur.align(2)
    data = cur.read(filesize, f"data of {name!r}")
    cur.align(2)
    return Entry(
        name, mode, data, uid, gid, nlink, mtime, ino,
        os.major(dev), os.minor(dev), os.major(rdev), os.minor(rdev),
    )  # fmt: skip


def _format_of(head: bytes) -> Format | None:
    if head[:6] == _MAGIC_NEWC:
        return Format.NEWC
    if head[:6] == _MAGIC_CRC:
        return Format.CRC
    if head[:6] == _MAGIC_ODC:
        return Format.ODC
    if head[:2] in (_MAGIC_BIN_LE, _MAGIC_BIN_BE):
        return Format.BIN
    return None


def _read_record(cur: _Cursor, max_entry: int) -> tuple[Format, Entry]:
    pos = cur.pos
    head = cur.read(2, "magic")
    if head in (_MAGIC_BIN_LE, _MAGIC_BIN_BE):
        return Format.BIN, _read_bin(cur, head, max_entry)
    head += cur.read(4, "magic")
    if head in (_MAGIC_NEWC, _MAGIC_CRC):
        return (Format.NEWC if head == _MAGIC_NEWC else Format.CRC), _read_newc(
            cur, head, max_entry
        )
    if head == _MAGIC_ODC:
        return Format.ODC, _read_odc(cur, max_entry)
    if head == b"07070X":
        raise AssetError(
            "rpm large-file payload (stripped cpio, 07070X headers) is not supported by pxeforge"
        )
    raise AssetError(f"not a cpio header at offset {pos}: {head!r}")


def _iter_records(cur: _Cursor, max_entry: int, formats: list[Format]) -> Iterator[Entry]:
    while True:
        fmt, entry = _read_record(cur, max_entry)
        if not formats:
            formats.append(fmt)
        elif fmt is not formats[0]:
            raise AssetError(
                f"cpio archive mixes {formats[0].value} and {fmt.value} headers "
                f"(record {entry.name!r})"
            )
        if entry.name == TRAILER:
            return
        yield entry


def iter_entries(stream: IO[bytes], *, max_entry: int = DEFAULT_MAX_ENTRY) -> Iterator[Entry]:
    """Entries of one archive read from a stream, up to (not including) its trailer."""
    yield from _iter_records(_Cursor(stream), max_entry, [])


def parse_archive(
    data: bytes, offset: int = 0, *, max_entry: int = DEFAULT_MAX_ENTRY
) -> tuple[list[Entry], int, Format]:
    """One uncompressed archive starting at ``data[offset]``: (entries without the trailer,
    the offset just past the trailer record and its padding, the header format)."""
    stream = io.BytesIO(data)
    stream.seek(offset)
    cur = _Cursor(stream)
    formats: list[Format] = []
    entries = list(_iter_records(cur, max_entry, formats))
    return entries, offset + cur.pos, formats[0]


def read_archive(data: bytes, *, max_entry: int = DEFAULT_MAX_ENTRY) -> list[Entry]:
    """The entries of one archive (compressed or not), without the trailer."""
    kind = detect(data[:8])
    if kind is not Compression.NONE:
        data, _ = decompress_prefix(data, kind)
    return parse_archive(data, max_entry=max_entry)[0]


def _skip_zeros(data: bytes, pos: int) -> int:
    found = _NONZERO.search(data, pos)
    return len(data) if found is None else found.start()


def iter_segments(
    data: bytes, *, max_entry: int = DEFAULT_MAX_ENTRY, max_size: int = DEFAULT_MAX_SIZE
) -> Iterator[Segment]:
    """Every archive of an initramfs image, in order: uncompressed archives and compressed
    streams (each holding one or more archives), separated by zero padding."""
    pos = _skip_zeros(data, 0)
    while pos < len(data):
        kind = detect(data[pos : pos + 8])
        if kind is Compression.NONE:
            entries, end, fmt = parse_archive(data, pos, max_entry=max_entry)
            yield Segment(pos, end - pos, kind, fmt, tuple(entries))
            pos = _skip_zeros(data, end)
            continue
        plain, used = decompress_prefix(data[pos:], kind, max_size=max_size)
        inner = _skip_zeros(plain, 0)
        if inner >= len(plain):
            raise AssetError(f"{kind.value} stream at offset {pos} holds no cpio archive")
        while inner < len(plain):
            entries, end, fmt = parse_archive(plain, inner, max_entry=max_entry)
            yield Segment(pos, used, kind, fmt, tuple(entries))
            inner = _skip_zeros(plain, end)
        pos = _skip_zeros(data, pos + used)


def read_image(data: bytes, *, max_entry: int = DEFAULT_MAX_ENTRY) -> list[Entry]:
    """All entries of all archives of an initramfs image, in order."""
    return [e for seg in iter_segments(data, max_entry=max_entry) for e in seg.entries]


# --------------------------------------------------------------------------- writing


def _encode_name(name: str) -> bytes:
    raw = os.fsencode(name)
    if b"\x00" in raw:
        raise AssetError(f"cpio member name {name!r} contains NUL")
    if len(raw) > _MAX_NAME:
        raise AssetError(f"cpio member name longer than {_MAX_NAME} bytes: {name[:60]!r}…")
    return raw + b"\x00"


def write_entry(entry: Entry, fmt: Format = Format.NEWC, offset: int = 0) -> bytes:
    """One record (header, name, data, padding) as it sits at ``offset`` of an archive."""
    if fmt not in (Format.NEWC, Format.CRC):
        raise AssetError(f"writing cpio {fmt.value} is not supported (newc and crc are)")
    name = _encode_name(entry.name)
    check = entry.check
    if fmt is Format.CRC:
        check = sum(entry.data) & 0xFFFFFFFF if entry.is_file else 0
    values = (
        entry.ino, entry.mode, entry.uid, entry.gid, entry.nlink, entry.mtime, len(entry.data),
        entry.dev_major, entry.dev_minor, entry.rdev_major, entry.rdev_minor, len(name), check,
    )  # fmt: skip
    for v in values:
        if not 0 <= v <= 0xFFFFFFFF:
            raise AssetError(f"cpio member {entry.name!r}: value {v} does not fit a newc field")
    magic = _MAGIC_CRC if fmt is Format.CRC else _MAGIC_NEWC
    head = magic + b"".join(b"%08X" % v for v in values) + name
    head += b"\x00" * (-(offset + len(head)) % 4)
    return head + entry.data + b"\x00" * (-len(entry.data) % 4)


def write_trailer(fmt: Format = Format.NEWC, offset: int = 0, block_size: int = 512) -> bytes:
    """The closing record, then zeros up to a multiple of ``block_size`` (GNU cpio: 512)."""
    rec = write_entry(Entry(TRAILER, 0, nlink=1), fmt, offset)
    end = offset + len(rec)
    return rec + b"\x00" * (-end % block_size if block_size > 1 else 0)


def write_archive(
    entries: Iterable[Entry], fmt: Format = Format.NEWC, *, block_size: int = 512
) -> bytes:
    """Entries, then the trailer, padded to ``block_size`` (512 like GNU cpio; 4 for none)."""
    parts: list[bytes] = []
    pos = 0
    for e in entries:
        rec = write_entry(e, fmt, pos)
        parts.append(rec)
        pos += len(rec)
    parts.append(write_trailer(fmt, pos, block_size))
    return b"".join(parts)


# --------------------------------------------------------------------------- packing


def _entry_from_stat(name: str, path: Path, st: os.stat_result) -> Entry:
    if stat.S_ISREG(st.st_mode):
        data = path.read_bytes()
    elif stat.S_ISLNK(st.st_mode):
        data = os.fsencode(os.readlink(path))
    else:
        data = b""
    special = stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
    return Entry(
        name=name,
        mode=st.st_mode,
        data=data,
        uid=st.st_uid,
        gid=st.st_gid,
        nlink=st.st_nlink,
        mtime=int(st.st_mtime) & 0xFFFFFFFF,
        ino=st.st_ino & 0xFFFFFFFF,
        dev_major=os.major(st.st_dev),
        dev_minor=os.minor(st.st_dev),
        rdev_major=os.major(st.st_rdev) if special else 0,
        rdev_minor=os.minor(st.st_rdev) if special else 0,
    )


def _walk_names(root: Path) -> list[str]:
    names = ["."]
    for top, dirs, files in os.walk(root, followlinks=False):
        rel = os.path.relpath(top, root)
        for n in dirs + files:
            names.append(n if rel == "." else f"{rel}/{n}")
    # `find . | LC_ALL=C sort` order: compare "./name" bytewise ("." itself comes first)
    names.sort(key=lambda n: b"." if n == "." else b"./" + os.fsencode(n))
    return names


def pack_directory(root: Path, names: Iterable[str] | None = None) -> list[Entry]:
    """Entries for a directory tree, as ``find . | LC_ALL=C sort | cpio -H newc -o`` makes
    them: names relative without ``./``, real inode numbers, hard-linked regular files
    deferred so the last link of each group carries the data. ``names`` (relative to
    ``root``) overrides the walk and its order."""
    root = Path(root)
    order = _walk_names(root) if names is None else list(names)
    out: list[Entry] = []
    deferred: list[Entry] = []  # newest first, as GNU cpio pushes them
    seen: dict[tuple[int, int, int], int] = {}
    for name in order:
        path = root if name == "." else root / name
        try:
            st = path.lstat()
            entry = _entry_from_stat(name, path, st)
        except OSError as exc:
            raise AssetError(f"cannot pack {path}: {exc.strerror}") from None
        if not (entry.is_file and entry.nlink > 1):
            out.append(entry)
            continue
        key = entry.inode_key
        seen[key] = seen.get(key, 0) + 1
        if seen[key] < entry.nlink:
            deferred.insert(0, entry)
            continue
        # the group is complete: the earlier links go out empty, this one carries the data
        for d in [d for d in deferred if d.inode_key == key]:
            out.append(_without_data(d))
            deferred.remove(d)
        out.append(entry)
    # links whose other names are outside the tree: within each group the record met first
    # (the last in the list) carries the data
    while deferred:
        d = deferred.pop(0)
        if any(x.inode_key == d.inode_key for x in deferred):
            out.append(_without_data(d))
        else:
            out.append(d)
    return out


def _without_data(e: Entry) -> Entry:
    return Entry(
        e.name, e.mode, b"", e.uid, e.gid, e.nlink, e.mtime, e.ino,
        e.dev_major, e.dev_minor, e.rdev_major, e.rdev_minor, 0,
    )  # fmt: skip


# --------------------------------------------------------------------------- extracting


def _member_parts(name: str) -> tuple[str, ...]:
    if "\x00" in name:
        raise UnsafeArchive(f"member name {name!r} contains NUL")
    if name.startswith("/"):
        raise UnsafeArchive(f"member {name!r} has an absolute name; refused")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise UnsafeArchive(f"member {name!r} climbs out with '..'; refused")
    return parts


_MAX_HOPS: Final = 40  # like the kernel's MAXSYMLINKS


def _resolve_dir(dest: Path, parts: tuple[str, ...], create: bool) -> tuple[str, ...]:
    """Resolve ``parts`` as directories below ``dest`` as if ``dest`` were ``/``: symlinks
    on the way are followed inside ``dest`` only. Missing directories are created (0755)
    when ``create``. Returns the resolved parts (no symlinks left)."""
    done: list[str] = []
    todo = list(parts)
    hops = 0
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        here = dest.joinpath(*done, part)
        try:
            st = here.lstat()
        except FileNotFoundError:
            if not create:
                raise AssetError(f"{here} does not exist") from None
            here.mkdir(mode=0o755)
            done.append(part)
            continue
        if stat.S_ISDIR(st.st_mode):
            done.append(part)
        elif stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > _MAX_HOPS:
                raise UnsafeArchive(f"too many symlinks resolving {'/'.join(parts)!r}")
            target = os.readlink(here)
            if target.startswith("/"):
                done = []
            todo = target.split("/") + todo
        else:
            raise AssetError(f"{here} is in the way: not a directory")
    return tuple(done)


def _climbs_out(parent: tuple[str, ...], target: str) -> bool:
    """Whether a relative symlink in ``parent`` pointing at ``target`` leaves the root."""
    depth = len(parent)
    for p in target.split("/"):
        if p == "..":
            depth -= 1
            if depth < 0:
                return True
        elif p not in ("", "."):
            depth += 1
    return False


def _remove_existing(path: Path, for_dir: bool) -> bool:
    """Clear the way for a new member; True if a directory already stands there."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        if for_dir:
            return True
        try:
            path.rmdir()
        except OSError:
            raise AssetError(f"{path}: a non-empty directory is in the way") from None
        return False
    path.unlink()
    return False


def _write_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def extract(
    entries: Iterable[Entry],
    dest: Path,
    *,
    preserve_owner: bool | None = None,
    devices: bool | None = None,
    allow_absolute_symlinks: bool = True,
    max_total: int = DEFAULT_MAX_SIZE,
) -> list[str]:
    """Write one archive's entries below ``dest`` (created if missing); return the names made.

    Modes, mtimes, symlinks, hard links and FIFOs are restored; owners when
    ``preserve_owner`` (default: when running as root); device nodes when ``devices``
    (default: when root; otherwise they are skipped and left out of the result). Existing
    files are replaced. Directory modes and mtimes are set last, so read-only directories
    still receive their contents. Raises `UnsafeArchive` for a member that would land outside
    ``dest``, a relative symlink that climbs above it, an absolute symlink when
    ``allow_absolute_symlinks`` is false, or more than ``max_total`` bytes of data.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = os.geteuid() == 0
    chown = root if preserve_owner is None else preserve_owner
    mknod = root if devices is None else devices
    made: list[str] = []
    dirs: list[tuple[Path, Entry]] = []
    links: dict[tuple[int, int, int], Path] = {}  # inode key → first path written with it
    waiting: dict[tuple[int, int, int], list[tuple[Path, Entry]]] = {}
    total = 0

    def finish(path: Path, e: Entry) -> None:
        if chown:
            os.lchown(path, e.uid, e.gid)
        if not e.is_symlink:
            os.chmod(path, e.perms)
        os.utime(path, (e.mtime, e.mtime), follow_symlinks=False)

    for e in entries:
        parts = _member_parts(e.name)
        total += len(e.data)
        if total > max_total:
            raise UnsafeArchive(f"archive holds more than {max_total} bytes; refused")
        if not parts:  # "." itself
            if e.is_dir:
                dirs.append((dest, e))
            continue
        parent = _resolve_dir(dest, parts[:-1], create=True)
        path = dest.joinpath(*parent, parts[-1])
        kind = stat.S_IFMT(e.mode)
        if _remove_existing(path, e.is_dir):
            dirs.append((path, e))
            made.append(e.path)
            continue
        if e.is_dir:
            path.mkdir(mode=0o700)
            dirs.append((path, e))
        elif e.is_file:
            key = e.inode_key
            if e.nlink > 1 and key in links:
                os.link(links[key], path)
            elif e.nlink > 1 and not e.data:
                waiting.setdefault(key, []).append((path, e))
                continue
            else:
                _write_file(path, e.data)
                if e.nlink > 1:
                    links[key] = path
                    for other, oe in waiting.pop(key, []):
                        os.link(path, other)
                        finish(other, oe)
                        made.append(oe.path)
            finish(path, e)
        elif e.is_symlink:
            target = e.link_target
            if target.startswith("/"):
                if not allow_absolute_symlinks:
                    raise UnsafeArchive(f"symlink {e.name!r} -> {target!r} is absolute; refused")
            elif _climbs_out(parent, target):
                raise UnsafeArchive(
                    f"symlink {e.name!r} -> {target!r} points outside the directory; refused"
                )
            os.symlink(target, path)
            finish(path, e)
        elif kind in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK):
            if kind != stat.S_IFIFO and not mknod:
                continue
            os.mknod(path, kind | 0o600, os.makedev(e.rdev_major, e.rdev_minor))
            finish(path, e)
        else:
            raise AssetError(f"member {e.name!r} has unknown file type {kind:#o}")
        made.append(e.path)
    # hard-link groups whose data never came: an empty file, linked
    for group in waiting.values():
        (first, fe), *rest = group
        _write_file(first, b"")
        finish(first, fe)
        made.append(fe.path)
        for other, oe in rest:
            os.link(first, other)
            made.append(oe.path)
    for path, e in reversed(dirs):
        finish(path, e)
    return made


def extract_image(
    data: bytes,
    dest: Path,
    *,
    preserve_owner: bool | None = None,
    devices: bool | None = None,
    allow_absolute_symlinks: bool = True,
    max_total: int = DEFAULT_MAX_SIZE,
) -> list[str]:
    """Extract every archive of an initramfs image below ``dest``, in order (later archives
    overwrite earlier ones, as in the kernel). Options as for `extract`; ``max_total`` counts
    over the whole image."""
    made: list[str] = []
    left = max_total
    for seg in iter_segments(data, max_size=max_total):
        made += extract(
            seg.entries,
            dest,
            preserve_owner=preserve_owner,
            devices=devices,
            allow_absolute_symlinks=allow_absolute_symlinks,
            max_total=left,
        )
        left -= sum(len(e.data) for e in seg.entries)
    return made
