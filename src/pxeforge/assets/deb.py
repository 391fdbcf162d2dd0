"""Debian binary packages (.deb), read without dpkg.

Theory of operation
-------------------
A .deb is an ``ar`` archive (deb(5)): ``debian-binary`` ("2.0\\n"), ``control.tar.*`` and
``data.tar.*``, where ``*`` is gz, xz, zst, bz2, lzma or nothing. The ar format (ar(5), and
the System V ABI's "Archive File" section) is the magic ``!<arch>\\n`` followed by members,
each a 60-byte ASCII header

    name[16] mtime[12] uid[6] gid[6] mode[8, octal] size[10] "`\\n"

then ``size`` bytes of data padded to an even offset with ``\\n``. Long names come in two
dialects: GNU ends names with ``/``, keeps a ``//`` table of long names referenced as ``/N``
(byte offset into the table) and a ``/`` symbol table; BSD writes ``#1/N`` and puts the N-byte
name at the start of the member's data. Both are read.

The tar members are streamed (``tarfile`` mode ``r|``) through `pxeforge.ramdisk.compress`,
which sniffs the compression from the bytes, not from the member's suffix. Nothing here
writes to disk: `DebPackage.read` returns the requested members' bytes, so a hostile member
name (``../../etc/passwd``) can never be written anywhere. Names are normalised to relative
paths (``usr/lib/shim/shimx64.efi.signed``); names that are absolute after normalisation or
climb with ``..`` are dropped from the index. Symlinks and hard links inside the package are
followed inside the package (``/boot/ipxe.efi`` from a link in ``usr/lib/ipxe`` means the
package's own ``boot/ipxe.efi``).
"""

from __future__ import annotations

import io
import posixpath
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

from pxeforge.errors import AssetError
from pxeforge.ramdisk.compress import DECODE_ERRORS, Compression, detect, open_reader

__all__ = [
    "AR_MAGIC",
    "ArMember",
    "DebPackage",
    "PackageFile",
    "is_deb",
    "normalize_member",
    "parse_control",
    "read_ar",
    "tar_kind",
    "resolve_link",
]

AR_MAGIC: Final = b"!<arch>\n"
_AR_HEADER: Final = 60
_MAX_MEMBER: Final = 1 << 30  # a single file above 1 GiB in a boot package is refused
_MAX_HOPS: Final = 40


@dataclass(frozen=True, slots=True)
class ArMember:
    name: str
    offset: int  # where the member's data starts in the file (after a BSD name)
    size: int  # data bytes (without a BSD name)
    mtime: int
    uid: int
    gid: int
    mode: int


@dataclass(frozen=True, slots=True)
class PackageFile:
    """One path inside a package, as its archive lists it."""

    path: str  # normalised: relative, no "./"
    size: int
    mode: int  # permission bits
    kind: str  # "file", "dir", "symlink", "hardlink", "other"
    link: str = ""  # symlink target as written, or the hard link's (normalised) target


def _field(raw: bytes, what: str, where: int, base: int = 10) -> int:
    text = raw.strip()
    if not text:
        return 0
    try:
        return int(text, base)
    except ValueError:
        raise AssetError(f"ar header at offset {where}: bad {what} {raw!r}") from None


def read_ar(f: IO[bytes], *, source: str = "archive") -> list[ArMember]:
    """Index an ar archive read from a seekable binary stream."""
    f.seek(0)
    if f.read(8) != AR_MAGIC:
        raise AssetError(f"{source} is not an ar archive (no '!<arch>' magic)")
    members: list[ArMember] = []
    long_names = b""
    end_of_file = f.seek(0, io.SEEK_END)
    pos = 8
    while True:
        f.seek(pos)
        head = f.read(_AR_HEADER)
        if not head:
            break
        if len(head) < _AR_HEADER or head[58:60] != b"`\n":
            if not head.strip(b"\n"):
                break  # trailing newline padding
            raise AssetError(f"{source}: bad ar member header at offset {pos}")
        raw_name = head[0:16].rstrip(b" ")
        size = _field(head[48:58], "size", pos)
        data_at = pos + _AR_HEADER
        if raw_name.startswith(b"#1/"):  # BSD: the name is the start of the data
            n = _field(raw_name[3:], "BSD name length", pos)
            if n > size:
                raise AssetError(f"{source}: BSD name longer than its member at offset {pos}")
            name_b = f.read(n).rstrip(b"\x00")
            data_at += n
            size -= n
        elif raw_name == b"//":  # GNU long name table
            long_names = f.read(size)
            name_b = b"//"
        elif raw_name.startswith(b"/") and raw_name[1:].isdigit():
            at = int(raw_name[1:])
            end = long_names.find(b"/\n", at)
            if end < 0:
                end = long_names.find(b"\n", at)
            if at >= len(long_names) or end < 0:
                raise AssetError(f"{source}: long name reference {raw_name!r} is out of range")
            name_b = long_names[at:end]
        elif raw_name in (b"/", b"/SYM64/", b"__.SYMDEF", b"__.SYMDEF SORTED"):
            name_b = raw_name  # symbol tables: kept, never a deb member
        else:
            name_b = raw_name[:-1] if raw_name.endswith(b"/") else raw_name
        if size < 0:
            raise AssetError(f"{source}: negative member size at offset {pos}")
        if data_at + size > end_of_file:
            raise AssetError(f"{source}: member {name_b!r} is truncated (file ends early)")
        members.append(
            ArMember(
                name=name_b.decode("utf-8", "replace"),
                offset=data_at,
                size=size,
                mtime=_field(head[16:28], "mtime", pos),
                uid=_field(head[28:34], "uid", pos),
                gid=_field(head[34:40], "gid", pos),
                mode=_field(head[40:48], "mode", pos, 8),
            )
        )
        pos = data_at + size
        pos += pos % 2
    return members


class FileSlice(io.RawIOBase):
    """A read-only window onto part of a file: one ar member."""

    def __init__(self, f: IO[bytes], offset: int, size: int) -> None:
        self._f = f
        self._start = offset
        self._end = offset + size
        self._pos = offset

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(buf), self._end - self._pos)
        if n <= 0:
            return 0
        self._f.seek(self._pos)
        data = self._f.read(n)
        buf[: len(data)] = data
        self._pos += len(data)
        return len(data)


def normalize_member(name: str) -> str | None:
    """``./usr/lib/x`` → ``usr/lib/x``; None for names that escape (absolute after
    stripping a ``./``… prefix is fine, ``..`` components are not)."""
    name = name.replace("\\", "/") if "\\" in name else name
    while name.startswith("./"):
        name = name[2:]
    name = name.lstrip("/")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts or "\x00" in name:
        return None
    return "/".join(parts) or "."


def resolve_link(index: Mapping[str, PackageFile], path: str) -> str:
    """Follow symlinks and hard links inside a package until a regular file; the package
    root is ``/`` for absolute targets. Raises `AssetError` for loops, dangling links and
    targets that climb above the root."""
    seen = 0
    while True:
        # resolve symlinked directories on the way first
        parts = path.split("/")
        for i in range(1, len(parts)):
            head = "/".join(parts[:i])
            pf = index.get(head)
            if pf is not None and pf.kind == "symlink":
                path = _join_link(head, pf.link) + "/" + "/".join(parts[i:])
                seen += 1
                break
        else:
            pf = index.get(path)
            if pf is None:
                raise AssetError(f"no {path!r} in the package")
            if pf.kind == "file":
                return path
            if pf.kind == "symlink":
                path = _join_link(path, pf.link)
            elif pf.kind == "hardlink":
                path = pf.link
            else:
                raise AssetError(f"{path!r} in the package is a {pf.kind}, not a file")
            seen += 1
        if seen > _MAX_HOPS:
            raise AssetError(f"too many links resolving {path!r} in the package")


def _join_link(link_path: str, target: str) -> str:
    base = "" if target.startswith("/") else posixpath.dirname(link_path)
    joined = posixpath.normpath(posixpath.join("/", base, target))
    if not target.startswith("/"):
        # count the climb: normpath clamps "/.." to "/", which would hide an escape
        depth = len([p for p in base.split("/") if p])
        for p in target.split("/"):
            depth += -1 if p == ".." else (0 if p in ("", ".") else 1)
            if depth < 0:
                raise AssetError(f"link {link_path!r} -> {target!r} climbs out of the package")
    return joined.lstrip("/")


def parse_control(text: str) -> dict[str, str]:
    """A deb822 stanza (``Field: value`` lines, continuation lines indented)."""
    fields: dict[str, str] = {}
    last: str | None = None
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        if line[0] in " \t":
            if last is not None:
                fields[last] += "\n" + line.strip()
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise AssetError(f"control file line is not 'Field: value': {line!r}")
        last = key.strip()
        fields[last] = value.strip()
    return fields


def tar_kind(ti: tarfile.TarInfo) -> str:
    """A tar member's kind as `PackageFile.kind` spells it."""
    if ti.isreg():
        return "file"
    if ti.isdir():
        return "dir"
    if ti.issym():
        return "symlink"
    if ti.islnk():
        return "hardlink"
    return "other"


@dataclass(frozen=True, slots=True)
class DebPackage:
    """An indexed .deb on disk. `open` reads the ar index and the control file; the data
    archive is streamed again by each `files`/`read` call (it is not held in memory)."""

    path: Path
    members: tuple[ArMember, ...]
    control: Mapping[str, str]
    _index: dict[str, PackageFile] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def open(cls, path: Path) -> DebPackage:
        path = Path(path)
        try:
            with path.open("rb") as f:
                members = tuple(read_ar(f, source=str(path)))
                names = {m.name for m in members}
                if "debian-binary" not in names:
                    raise AssetError(f"{path} is an ar archive but not a .deb (no debian-binary)")
                deb = cls(path, members, {})
                raw = deb._read_tar_member(f, "control.tar", {"control"}).get("control")
        except OSError as exc:
            raise AssetError(f"cannot read {path}: {exc.strerror or exc}") from None
        if raw is None:
            raise AssetError(f"{path}: control.tar has no control file")
        control = parse_control(raw.decode("utf-8", "replace"))
        for key in ("Package", "Version"):
            if key not in control:
                raise AssetError(f"{path}: control file has no {key} field")
        return cls(path, members, control)

    # -- metadata

    @property
    def name(self) -> str:
        return self.control["Package"]

    @property
    def version(self) -> str:
        return self.control["Version"]

    @property
    def arch(self) -> str:
        return self.control.get("Architecture", "")

    @property
    def source(self) -> str:
        """The source package (``Source:`` without its version), else the package name."""
        src = self.control.get("Source", "").split(" ")[0]
        return src or self.name

    @property
    def kind(self) -> str:
        return "deb"

    # -- contents

    def _member(self, prefix: str) -> ArMember:
        for m in self.members:
            if m.name == prefix or m.name.startswith(prefix + "."):
                return m
        raise AssetError(f"{self.path}: no {prefix}.* member")

    def _iter_tar(
        self, f: IO[bytes], prefix: str
    ) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
        m = self._member(prefix)
        f.seek(m.offset)
        kind = detect(f.read(8))
        if not kind.supported:
            raise AssetError(f"{self.path}: {m.name} uses unsupported {kind.value} compression")
        raw = io.BufferedReader(FileSlice(f, m.offset, m.size))
        stream = open_reader(raw, kind) if kind is not Compression.NONE else raw
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tf:
                for ti in tf:
                    yield tf, ti
        except tarfile.TarError as exc:
            raise AssetError(f"{self.path}: {m.name} is not a valid tar archive: {exc}") from None
        except DECODE_ERRORS as exc:
            raise AssetError(f"{self.path}: {m.name} does not decompress: {exc}") from None
        finally:
            stream.close()
            raw.close()

    def _read_tar_member(self, f: IO[bytes], prefix: str, wanted: set[str]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for tf, ti in self._iter_tar(f, prefix):
            name = normalize_member(ti.name)
            if name is None or name not in wanted or not ti.isreg():
                continue
            if ti.size > _MAX_MEMBER:
                raise AssetError(f"{self.path}: member {name!r} is {ti.size} bytes; refused")
            fh = tf.extractfile(ti)
            if fh is None:
                continue
            out[name] = fh.read()
        return out

    def files(self) -> dict[str, PackageFile]:
        """Every path of data.tar, by normalised name (cached after the first call)."""
        if not self._index:
            index: dict[str, PackageFile] = {}
            with self._open() as f:
                for _, ti in self._iter_tar(f, "data.tar"):
                    name = normalize_member(ti.name)
                    if name is None:
                        continue
                    kind = tar_kind(ti)
                    link = ti.linkname
                    if kind == "hardlink":
                        link = normalize_member(link) or ""
                    index[name] = PackageFile(name, ti.size, ti.mode & 0o7777, kind, link)
            self._index.update(index)
        return dict(self._index)

    def _open(self) -> IO[bytes]:
        try:
            return self.path.open("rb")
        except OSError as exc:
            raise AssetError(f"cannot read {self.path}: {exc.strerror or exc}") from None

    def read(self, paths: Iterable[str]) -> dict[str, bytes]:
        """The contents of the given paths (links followed inside the package), keyed by the
        path as asked. Raises `AssetError` naming the first missing path."""
        index = self.files()
        asked = {p: normalize_member(p) or p for p in paths}
        real = {p: resolve_link(index, n) for p, n in asked.items()}
        with self._open() as f:
            data = self._read_tar_member(f, "data.tar", set(real.values()))
        missing = [p for p, r in real.items() if r not in data]
        if missing:
            raise AssetError(f"{self.path}: could not read {missing[0]!r}")
        return {p: data[r] for p, r in real.items()}

    def read_one(self, path: str) -> bytes:
        return self.read([path])[path]

    def names(self) -> list[str]:
        """Paths of files and symlinks (what a loader could be), sorted."""
        return sorted(
            p for p, pf in self.files().items() if pf.kind in ("file", "symlink", "hardlink")
        )


def is_deb(path: Path) -> bool:
    """Whether the file starts with the ar magic (a .deb, or another ar archive)."""
    try:
        with Path(path).open("rb") as f:
            return f.read(8) == AR_MAGIC
    except OSError:
        return False
