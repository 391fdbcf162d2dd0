"""RPM packages, read without rpm: ``rpm2cpio x.rpm | cpio -idmv`` in pure Python.

Theory of operation
-------------------
An RPM file is (rpm's doc/manual/format.md, and the LSB "Package File Format" chapter):

    lead       96 bytes: magic ed ab ee db, version, type, arch, name[66], os, sigtype
    signature  a header structure, then zero padding to a multiple of 8 bytes
    header     a header structure (no padding)
    payload    a cpio archive (newc), compressed with gzip, xz, zstd, bzip2 or lzma

A header structure is the magic ``8e ad e8 01``, 4 reserved bytes, the big-endian entry count
and store size, then that many 16-byte index entries (tag, type, offset, count; all 32-bit
big-endian) and the data store they point into. Values are decoded by type (`TagType`).
The tags used here are named once in `Tag`. File names are rebuilt from BASENAMES, DIRNAMES
and DIRINDEXES (or OLDFILENAMES in very old packages). The payload's compression is sniffed
from its bytes (PAYLOADCOMPRESSOR is only reported); it is read with `pxeforge.ramdisk.cpio`,
whose extractor refuses members that would leave the target directory. The large-file
"stripped" payload (``07070X`` headers, rpm >= 4.12 for files of 4 GiB and more) is refused
with a clear message.
"""

from __future__ import annotations

import enum
import io
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from pxeforge.errors import AssetError
from pxeforge.ramdisk import cpio
from pxeforge.ramdisk.compress import DECODE_ERRORS, Compression, detect, open_reader

from .deb import PackageFile, normalize_member, resolve_link

__all__ = [
    "LEAD_MAGIC",
    "Header",
    "RpmPackage",
    "Tag",
    "TagType",
    "is_rpm",
    "parse_header",
]

LEAD_MAGIC: Final = b"\xed\xab\xee\xdb"
HEADER_MAGIC: Final = b"\x8e\xad\xe8\x01"
_LEAD_LEN: Final = 96
_MAX_INDEX: Final = 0x10000  # rpm's own sanity limits are of this order
_MAX_STORE: Final = 256 << 20
_MAX_PAYLOAD: Final = 8 << 30


class TagType(enum.IntEnum):
    NULL = 0
    CHAR = 1
    INT8 = 2
    INT16 = 3
    INT32 = 4
    INT64 = 5
    STRING = 6
    BIN = 7
    STRING_ARRAY = 8
    I18NSTRING = 9


class Tag(enum.IntEnum):
    NAME = 1000
    VERSION = 1001
    RELEASE = 1002
    EPOCH = 1003
    SUMMARY = 1004
    ARCH = 1022
    OLDFILENAMES = 1027
    FILESIZES = 1028
    FILEMODES = 1030
    FILELINKTOS = 1036
    SOURCERPM = 1044
    DIRINDEXES = 1116
    BASENAMES = 1117
    DIRNAMES = 1118
    PAYLOADFORMAT = 1124
    PAYLOADCOMPRESSOR = 1125
    PAYLOADFLAGS = 1126


Value = str | bytes | tuple[int, ...] | tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Header:
    """A decoded header structure: tag → value, and how many bytes it took."""

    values: Mapping[int, Value]
    length: int

    def string(self, tag: int, default: str = "") -> str:
        v = self.values.get(tag)
        if isinstance(v, str):
            return v
        if isinstance(v, tuple) and v and isinstance(v[0], str):
            return v[0]
        return default

    def strings(self, tag: int) -> tuple[str, ...]:
        v = self.values.get(tag)
        if isinstance(v, str):
            return (v,)
        if isinstance(v, tuple) and all(isinstance(x, str) for x in v):
            return tuple(str(x) for x in v)
        return ()

    def ints(self, tag: int) -> tuple[int, ...]:
        v = self.values.get(tag)
        if isinstance(v, tuple) and all(isinstance(x, int) for x in v):
            return tuple(int(x) for x in v)
        return ()


_INT_FORMATS: Final = {
    TagType.CHAR: ("B", 1),
    TagType.INT8: ("B", 1),
    TagType.INT16: ("H", 2),
    TagType.INT32: ("I", 4),
    TagType.INT64: ("Q", 8),
}


def _strings(store: bytes, offset: int, count: int, where: str) -> tuple[str, ...]:
    out: list[str] = []
    pos = offset
    for _ in range(count):
        end = store.find(b"\x00", pos)
        if end < 0:
            raise AssetError(f"{where}: unterminated string in header store")
        out.append(store[pos:end].decode("utf-8", "surrogateescape"))
        pos = end + 1
    return tuple(out)


def parse_header(data: bytes, offset: int, *, where: str = "rpm") -> Header:
    """Decode the header structure at ``data[offset]``."""
    head = data[offset : offset + 16]
    if len(head) < 16 or head[:4] != HEADER_MAGIC:
        raise AssetError(f"{where}: no header magic at offset {offset}")
    nindex, hsize = struct.unpack(">II", head[8:16])
    if nindex > _MAX_INDEX or hsize > _MAX_STORE:
        raise AssetError(f"{where}: absurd header ({nindex} entries, {hsize}-byte store)")
    index_at = offset + 16
    store_at = index_at + 16 * nindex
    end = store_at + hsize
    if end > len(data):
        raise AssetError(f"{where}: header at offset {offset} is truncated")
    store = data[store_at:end]
    values: dict[int, Value] = {}
    for i in range(nindex):
        tag, typ, off, count = struct.unpack_from(">iIiI", data, index_at + 16 * i)
        if off < 0 or off > hsize:
            raise AssetError(f"{where}: tag {tag} points outside the header store")
        try:
            ttype = TagType(typ)
        except ValueError:
            raise AssetError(f"{where}: tag {tag} has unknown type {typ}") from None
        if ttype in _INT_FORMATS:
            fmt, size = _INT_FORMATS[ttype]
            if off + size * count > hsize:
                raise AssetError(f"{where}: tag {tag} runs past the header store")
            values[tag] = struct.unpack_from(f">{count}{fmt}", store, off)
        elif ttype is TagType.STRING:
            values[tag] = _strings(store, off, 1, where)[0]
        elif ttype in (TagType.STRING_ARRAY, TagType.I18NSTRING):
            values[tag] = _strings(store, off, count, where)
        elif ttype is TagType.BIN:
            if off + count > hsize:
                raise AssetError(f"{where}: tag {tag} runs past the header store")
            values[tag] = store[off : off + count]
    return Header(values, end - offset)


def is_rpm(path: Path) -> bool:
    """Whether the file starts with the rpm lead magic."""
    try:
        with Path(path).open("rb") as f:
            return f.read(4) == LEAD_MAGIC
    except OSError:
        return False


@dataclass(frozen=True, slots=True)
class RpmPackage:
    """An RPM read into memory: headers decoded, payload kept compressed until asked for."""

    path: Path
    header: Header
    signature: Header
    payload: bytes = field(repr=False)

    @classmethod
    def open(cls, path: Path) -> RpmPackage:
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise AssetError(f"cannot read {path}: {exc.strerror or exc}") from None
        return cls.parse(data, path)

    @classmethod
    def parse(cls, data: bytes, path: Path = Path("<memory>")) -> RpmPackage:
        where = str(path)
        if len(data) < _LEAD_LEN or data[:4] != LEAD_MAGIC:
            raise AssetError(f"{where} is not an rpm (no lead magic ed ab ee db)")
        major = data[4]
        if major < 3:
            raise AssetError(f"{where}: rpm format version {major} is too old")
        sig = parse_header(data, _LEAD_LEN, where=where)
        at = _LEAD_LEN + sig.length
        at += -at % 8
        header = parse_header(data, at, where=where)
        payload_at = at + header.length
        if len(data) - payload_at > _MAX_PAYLOAD:
            raise AssetError(f"{where}: payload larger than {_MAX_PAYLOAD} bytes; refused")
        return cls(path, header, sig, data[payload_at:])

    # -- metadata

    @property
    def name(self) -> str:
        return self.header.string(Tag.NAME)

    @property
    def version(self) -> str:
        """``[epoch:]version-release``, as rpm prints it."""
        epoch = self.header.ints(Tag.EPOCH)
        ver = f"{self.header.string(Tag.VERSION)}-{self.header.string(Tag.RELEASE)}"
        return f"{epoch[0]}:{ver}" if epoch else ver

    @property
    def arch(self) -> str:
        return self.header.string(Tag.ARCH)

    @property
    def source(self) -> str:
        """The source rpm's file name (``shim-15.8-3.el7.src.rpm``), else the name."""
        return self.header.string(Tag.SOURCERPM) or self.name

    @property
    def kind(self) -> str:
        return "rpm"

    @property
    def payload_compressor(self) -> str:
        return self.header.string(Tag.PAYLOADCOMPRESSOR, "gzip")

    @property
    def payload_format(self) -> str:
        return self.header.string(Tag.PAYLOADFORMAT, "cpio")

    @property
    def compression(self) -> Compression:
        """What the payload really is (by magic)."""
        return detect(self.payload[:8])

    def file_list(self) -> list[str]:
        """Paths the header lists, absolute (``/boot/efi/EFI/centos/shim.efi``)."""
        base = self.header.strings(Tag.BASENAMES)
        if base:
            dirs = self.header.strings(Tag.DIRNAMES)
            idx = self.header.ints(Tag.DIRINDEXES)
            if len(idx) != len(base) or any(i >= len(dirs) for i in idx):
                raise AssetError(f"{self.path}: DIRINDEXES do not match BASENAMES/DIRNAMES")
            return [dirs[i] + b for i, b in zip(idx, base, strict=True)]
        return list(self.header.strings(Tag.OLDFILENAMES))

    # -- payload

    def entries(self) -> Iterator[cpio.Entry]:
        """The payload's cpio entries, decompressed as a stream."""
        kind = self.compression
        if not kind.supported:
            raise AssetError(
                f"{self.path}: payload compression {kind.value} is not supported by pxeforge"
            )
        raw = io.BufferedReader(io.BytesIO(self.payload))
        stream = open_reader(raw, kind)
        try:
            yield from cpio.iter_entries(stream)
            while stream.read(1 << 16):  # to the end, so the stream's own checksum is verified
                pass
        except DECODE_ERRORS as exc:
            raise AssetError(f"{self.path}: payload does not decompress: {exc}") from None
        finally:
            stream.close()
            raw.close()

    def _indexed(self) -> tuple[dict[str, PackageFile], dict[str, bytes]]:
        entries = list(self.entries())
        index: dict[str, PackageFile] = {}
        data: dict[str, bytes] = {}
        for e in entries:
            name = normalize_member(e.name)
            if name is None:
                continue
            index[name] = _package_file(name, e)
            if e.data and e.is_file:
                data[name] = e.data
        _hardlinks(index, entries)
        return index, data

    def files(self) -> dict[str, PackageFile]:
        """Every payload path, normalised (``boot/efi/EFI/centos/shim.efi``)."""
        return self._indexed()[0]

    def names(self) -> list[str]:
        """Paths of files and symlinks, sorted."""
        return sorted(p for p, pf in self.files().items() if pf.kind != "dir")

    def read(self, paths: Iterable[str]) -> dict[str, bytes]:
        """Contents of the given paths (symlinks and hard links followed inside the package),
        keyed by the path as asked."""
        index, data = self._indexed()
        return {p: data.get(resolve_link(index, normalize_member(p) or p), b"") for p in paths}

    def read_one(self, path: str) -> bytes:
        return self.read([path])[path]

    def extract(
        self,
        dest: Path,
        *,
        preserve_owner: bool | None = None,
        devices: bool | None = None,
        allow_absolute_symlinks: bool = True,
    ) -> list[str]:
        """``rpm2cpio | cpio -idm`` into ``dest`` (see `pxeforge.ramdisk.cpio.extract`)."""
        return cpio.extract(
            self.entries(),
            dest,
            preserve_owner=preserve_owner,
            devices=devices,
            allow_absolute_symlinks=allow_absolute_symlinks,
        )


def _package_file(name: str, e: cpio.Entry) -> PackageFile:
    if e.is_dir:
        kind = "dir"
    elif e.is_symlink:
        kind = "symlink"
    elif e.is_file:
        kind = "file"
    else:
        kind = "other"
    return PackageFile(name, len(e.data), e.perms, kind, e.link_target if e.is_symlink else "")


def _hardlinks(index: dict[str, PackageFile], entries: list[cpio.Entry]) -> None:
    """Point the empty records of a newc hard-link group at the one holding the data."""
    holder: dict[tuple[int, int, int], str] = {}
    for e in entries:
        if e.is_file and e.nlink > 1 and e.data:
            name = normalize_member(e.name)
            if name is not None:
                holder[e.inode_key] = name
    for e in entries:
        name = normalize_member(e.name)
        if name is None or not (e.is_file and e.nlink > 1 and not e.data):
            continue
        target = holder.get(e.inode_key)
        if target is not None and target != name:
            index[name] = PackageFile(name, 0, e.perms, "hardlink", target)
