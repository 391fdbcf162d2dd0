"""A qcow2 reader that converts an image to a raw disk: pure Python, standard library only.

Theory of operation (the format is QEMU's ``docs/interop/qcow2.txt``; all numbers big-endian):

* **Header** (`parse_header`, no I/O): magic ``QFI\\xfb``, version 2 or 3, ``cluster_bits``
  (9–21: clusters of 512 B to 2 MiB), the virtual ``size``, and where the L1 table is
  (``l1_table_offset``, ``l1_size`` entries). Version 3 adds feature bits and the header
  length; its byte 104 (when the header is longer) names the compression type. Refused, each
  with a message saying why: a backing file (this reader has only the one file), encryption
  (``crypt_method``), an external data file, extended L2 entries (subclusters), the *corrupt*
  bit, zstd compression (not in the standard library), any incompatible feature bit this
  reader does not know. The *dirty* bit only means the refcounts may be stale: the mapping
  this reader uses is fine, so it is accepted.
* **Mapping**: guest offset → L1 index (``offset // (cluster_size × cluster_size/8)``) → L2
  table (one cluster of 8-byte entries) → cluster. An L1 entry or L2 entry of 0 is an
  unallocated cluster: zeros (no backing file). L2 entry bits: 63 *copied* (ignored), 62
  *compressed*, 0 *reads as zeros* (v3). A standard entry's bits 9–55 are the host offset of
  the cluster (cluster-aligned). A compressed entry, with ``x = 62 - (cluster_bits - 8)``:
  bits 0..x-1 are the byte offset of the data, bits x..61 the number of 512-byte sectors it
  spans beyond the first, so it occupies ``(n + 1) × 512 - offset % 512`` bytes; the data is
  a raw deflate stream (``zlib`` with negative window bits) of exactly one cluster.
  `map_l2` turns one L2 table into `Extent`\\ s (pure).
* **Hostile images** never cause big allocations or reads outside the file: the L1 table is at
  most 32 MiB (QEMU's own limit) and must cover the virtual size, every table and cluster
  must lie in the file (a cluster that starts in the file but runs past its end reads as
  zeros past it, as QEMU's file driver does), L2 tables and data clusters must be
  cluster-aligned, and a compressed cluster must inflate to exactly one cluster.
  Every such fault is a `Qcow2Error` naming the offset.

`convert` writes the image to an open target, extent by extent (adjacent clusters of the
same kind merged, data reads up to `MAX_IO` bytes). Zeros are handled by target type —
**the choice**: a *regular file* is truncated and re-extended first, so unallocated and
all-zero clusters are simply skipped and stay holes (the result is sparse, like
``qemu-img convert``'s); a *block device* keeps whatever it held, so every zero range is
zeroed explicitly, with the kernel's ``BLKZEROOUT`` (the device may do it without transferring
data: write-zeroes or discard that reads back as zeros) and by writing zeros where the ioctl
is refused. Bytes of the device beyond the virtual size are left alone. A ``hasher`` sees
every byte of the virtual disk in order, zeros included, so the caller can verify the device
afterwards by re-reading it.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Final, Protocol

from pxeforge.agent.blockio import is_block, write_all, zero_range

__all__ = [
    "MAGIC",
    "MAX_IO",
    "MAX_L1_BYTES",
    "Extent",
    "Header",
    "Qcow2Error",
    "Qcow2Image",
    "convert",
    "is_qcow2",
    "map_l2",
    "parse_header",
]

MAGIC: Final = b"QFI\xfb"
MAX_L1_BYTES: Final = 32 * 1024 * 1024  # QEMU's QCOW_MAX_L1_SIZE
MAX_IO: Final = 8 * 1024 * 1024
MIN_CLUSTER_BITS: Final = 9
MAX_CLUSTER_BITS: Final = 21

INCOMPAT_DIRTY: Final = 1 << 0
INCOMPAT_CORRUPT: Final = 1 << 1
INCOMPAT_DATA_FILE: Final = 1 << 2
INCOMPAT_COMPRESSION: Final = 1 << 3
INCOMPAT_EXTL2: Final = 1 << 4
_KNOWN_INCOMPAT: Final = (
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2
)

OFFSET_MASK: Final = 0x00FF_FFFF_FFFF_FE00  # bits 9-55 of L1 and standard L2 entries
COMPRESSED: Final = 1 << 62
ZERO_FLAG: Final = 1 << 0

_V2: Final = struct.Struct(">4sIQIIQIIQQIIQ")  # 72 bytes
_V3: Final = struct.Struct(">QQQII")  # 72..104
_ZEROS: Final = bytes(1024 * 1024)


class Qcow2Error(ValueError):
    """The file is not a qcow2 image this reader can convert (the message says why)."""


@dataclass(frozen=True, slots=True)
class Header:
    version: int
    cluster_bits: int
    size: int  # virtual disk size in bytes
    l1_size: int  # entries
    l1_table_offset: int
    incompatible_features: int = 0
    header_length: int = 72

    @property
    def cluster_size(self) -> int:
        return 1 << self.cluster_bits

    @property
    def l2_entries(self) -> int:
        return self.cluster_size // 8

    @property
    def l1_needed(self) -> int:
        """L1 entries the virtual size needs."""
        span = self.cluster_size * self.l2_entries
        return -(-self.size // span)


def is_qcow2(head: bytes) -> bool:
    return head[:4] == MAGIC


def parse_header(data: bytes, file_size: int) -> Header:
    """The header at the start of ``data`` (at least 72 bytes, 112 for v3); checks it."""
    if len(data) < _V2.size or data[:4] != MAGIC:
        raise Qcow2Error("not a qcow2 image (no QFI\\xfb magic at offset 0)")
    fields = _V2.unpack_from(data)
    version, backing_offset, backing_size, cluster_bits, size = fields[1:6]
    crypt, l1_size, l1_offset = fields[6:9]
    if version not in (2, 3):
        raise Qcow2Error(f"qcow2 version {version} is not supported (only 2 and 3)")
    if not MIN_CLUSTER_BITS <= cluster_bits <= MAX_CLUSTER_BITS:
        raise Qcow2Error(f"cluster_bits {cluster_bits} is outside 9..21")
    cluster = 1 << cluster_bits
    incompatible, header_length, compression = 0, 72, 0
    if version == 3:
        if len(data) < _V2.size + _V3.size:
            raise Qcow2Error("the qcow2 v3 header is truncated")
        incompatible, _compatible, _autoclear, _refcount_order, header_length = _V3.unpack_from(
            data, _V2.size
        )
        if header_length < 104 or header_length > cluster:
            raise Qcow2Error(f"qcow2 v3 header_length {header_length} is invalid")
        if header_length > 104:
            if len(data) < 105:
                raise Qcow2Error("the qcow2 v3 header is truncated")
            compression = data[104]
    if backing_offset:
        name = ""
        if backing_offset + backing_size <= len(data) and backing_size <= 1023:
            name = data[backing_offset : backing_offset + backing_size].decode(errors="replace")
        raise Qcow2Error(
            f"the image has a backing file{f' ({name!r})' if name else ''}: only "
            "self-contained images can be written (qemu-img convert -O qcow2 flattens it)"
        )
    if crypt:
        method = {1: "AES", 2: "LUKS"}.get(crypt, str(crypt))
        raise Qcow2Error(f"the image is encrypted ({method}): encrypted images are not supported")
    unknown = incompatible & ~_KNOWN_INCOMPAT
    if unknown:
        raise Qcow2Error(
            f"the image uses incompatible features this reader does not know (bits {unknown:#x})"
        )
    if incompatible & INCOMPAT_DATA_FILE:
        raise Qcow2Error("the image keeps its data in an external data file: not supported")
    if incompatible & INCOMPAT_CORRUPT:
        raise Qcow2Error("the image is marked corrupt (qemu-img check -r all repairs it)")
    if incompatible & INCOMPAT_EXTL2:
        raise Qcow2Error("the image has extended L2 entries (subclusters): not supported")
    if compression != 0:
        kind = {1: "zstd"}.get(compression, f"type {compression}")
        raise Qcow2Error(f"the image's clusters are compressed with {kind}: only zlib is supported")
    header = Header(version, cluster_bits, size, l1_size, l1_offset, incompatible, header_length)
    if size >= 1 << 63:
        raise Qcow2Error(f"virtual size {size} is absurd")
    if l1_size * 8 > MAX_L1_BYTES:
        raise Qcow2Error(f"L1 table of {l1_size} entries is larger than {MAX_L1_BYTES} bytes")
    if l1_size < header.l1_needed:
        raise Qcow2Error(
            f"L1 table of {l1_size} entries cannot map {size} bytes ({header.l1_needed} needed)"
        )
    if l1_size:
        if l1_offset % cluster:
            raise Qcow2Error(f"L1 table offset {l1_offset:#x} is not cluster-aligned")
        if l1_offset + l1_size * 8 > file_size:
            raise Qcow2Error(
                f"L1 table at {l1_offset:#x} ({l1_size} entries) runs past the "
                f"end of the file ({file_size} bytes)"
            )
    return header


@dataclass(frozen=True, slots=True)
class Extent:
    """``length`` bytes of the virtual disk at ``guest``: zeros, data at ``host``, or one
    compressed cluster of ``csize`` bytes at ``host``."""

    guest: int
    length: int
    kind: str  # "zero" | "data" | "compressed"
    host: int = 0
    csize: int = 0


def map_l2(table: bytes, header: Header, guest_base: int, file_size: int) -> list[Extent]:
    """The extents one L2 table maps, from ``guest_base`` up to the virtual size."""
    cluster = header.cluster_size
    n = min(len(table) // 8, -(-(header.size - guest_base) // cluster))
    entries = struct.unpack_from(f">{n}Q", table)
    x = 62 - (header.cluster_bits - 8)
    out: list[Extent] = []
    for i, entry in enumerate(entries):
        guest = guest_base + i * cluster
        length = min(cluster, header.size - guest)
        if entry & COMPRESSED:
            host = entry & ((1 << x) - 1)
            sectors = ((entry >> x) & ((1 << (header.cluster_bits - 8)) - 1)) + 1
            csize = sectors * 512 - (host & 511)
            if host >= file_size:
                raise Qcow2Error(
                    f"compressed cluster for guest offset {guest:#x} is at "
                    f"{host:#x}, past the end of the file"
                )
            out.append(Extent(guest, length, "compressed", host, min(csize, file_size - host)))
            continue
        host = entry & OFFSET_MASK
        if entry & ZERO_FLAG or not host:
            out.append(Extent(guest, length, "zero"))
            continue
        if host % cluster:
            raise Qcow2Error(
                f"data cluster for guest offset {guest:#x} is at {host:#x}, not cluster-aligned"
            )
        if host >= file_size:
            raise Qcow2Error(
                f"data cluster for guest offset {guest:#x} is at {host:#x}, past "
                f"the end of the file ({file_size} bytes)"
            )
        out.append(Extent(guest, length, "data", host))
    return out


def _merge(extents: Iterator[Extent]) -> Iterator[Extent]:
    """Adjacent zero extents, and data extents contiguous on both sides, as one (≤ MAX_IO)."""
    pending: Extent | None = None
    for ext in extents:
        if pending is not None:
            if ext.kind == pending.kind == "zero":
                pending = Extent(pending.guest, pending.length + ext.length, "zero")
                continue
            if (
                ext.kind == pending.kind == "data"
                and pending.host + pending.length == ext.host
                and pending.length + ext.length <= MAX_IO
            ):
                pending = Extent(pending.guest, pending.length + ext.length, "data", pending.host)
                continue
            yield pending
        pending = ext
    if pending is not None:
        yield pending


class Qcow2Image:
    """A qcow2 image open for reading: its `header` and its `extents`."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.file_size = os.fstat(file.fileno()).st_size
        head = self._pread(0, min(self.file_size, 4096))
        self.header = parse_header(head, self.file_size)

    def _pread(self, offset: int, length: int) -> bytes:
        return os.pread(self.file.fileno(), length, offset)

    def _l1(self) -> tuple[int, ...]:
        h = self.header
        raw = self._pread(h.l1_table_offset, h.l1_needed * 8)
        return struct.unpack(f">{h.l1_needed}Q", raw)

    def extents(self) -> Iterator[Extent]:
        """Every byte of the virtual disk, in order, as merged extents."""
        return _merge(self._extents())

    def _extents(self) -> Iterator[Extent]:
        h = self.header
        cluster = h.cluster_size
        span = cluster * h.l2_entries
        for index, entry in enumerate(self._l1()):
            base = index * span
            length = min(span, h.size - base)
            l2 = entry & OFFSET_MASK
            if not l2:
                yield Extent(base, length, "zero")
                continue
            if l2 % cluster or l2 + cluster > self.file_size:
                raise Qcow2Error(f"L2 table {index} at {l2:#x} is not a cluster in the file")
            yield from map_l2(self._pread(l2, cluster), h, base, self.file_size)

    def read(self, ext: Extent) -> bytes:
        """The bytes of a data or compressed extent."""
        if ext.kind == "data":
            data = self._pread(ext.host, ext.length)
            if len(data) < ext.length:  # runs past the end of the file: zeros, as QEMU reads
                data += bytes(ext.length - len(data))
            return data
        if ext.kind == "compressed":
            raw = self._pread(ext.host, ext.csize)
            cluster = self.header.cluster_size
            try:
                data = zlib.decompressobj(-15).decompress(raw, cluster)
            except zlib.error as exc:
                raise Qcow2Error(
                    f"compressed cluster at {ext.host:#x} (guest {ext.guest:#x}) "
                    f"does not inflate: {exc}"
                ) from None
            if len(data) != cluster:
                raise Qcow2Error(
                    f"compressed cluster at {ext.host:#x} (guest {ext.guest:#x}) "
                    f"inflates to {len(data)} bytes, not {cluster}"
                )
            return data[: ext.length]
        return bytes(ext.length)


class _Hasher(Protocol):
    def update(self, data: Any, /) -> None: ...


def _hash_zeros(hasher: _Hasher | None, length: int) -> None:
    if hasher is None:
        return
    while length > 0:
        n = min(len(_ZEROS), length)
        hasher.update(memoryview(_ZEROS)[:n])
        length -= n


def convert(
    image: Qcow2Image,
    fd: int,
    *,
    hasher: _Hasher | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Write the virtual disk to ``fd`` (a block device or a regular file); its size.

    The caller has checked that the target is large enough (`Header.size`).
    """
    size = image.header.size
    block = is_block(fd)
    if not block:
        old = os.fstat(fd).st_size
        os.ftruncate(fd, 0)  # every byte of the old file is now a hole
        os.ftruncate(fd, max(old, size))
    done = 0
    for ext in image.extents():
        if ext.kind == "zero":
            if block:
                zero_range(fd, ext.guest, ext.length)
            _hash_zeros(hasher, ext.length)
        else:
            data = image.read(ext)
            if block or data.count(0) != len(data):
                write_all(fd, data, ext.guest)
            if hasher is not None:
                hasher.update(data)
        done = ext.guest + ext.length
        if progress is not None:
            progress(done, size)
    if done != size:
        raise Qcow2Error(f"the image maps {done} of its {size} bytes")
    return size
