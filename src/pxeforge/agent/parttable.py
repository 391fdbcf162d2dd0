"""Partition tables read from the disk itself: MBR (with logical partitions) and GPT.

Theory of operation: cleaning must find every partition whose start and end hold metadata,
also when the running kernel does not list them in sysfs (a kernel without the partition
parsers, a table written after boot, a table the kernel rejected). `read_partitions` reads
the table through a ``pread(offset, length)`` callable and returns ``(start, size)`` byte
ranges; the parsing functions are pure.

* **GPT** (UEFI spec §5.3): header at LBA 1 (the backup at the last LBA when the primary is
  unreadable), signature ``EFI PART``; entries of ``entry_size`` bytes at
  ``partition_entry_lba``; an entry with a zero type GUID is unused; first/last LBA
  inclusive. CRCs are *not* required: a damaged table still tells where partitions were,
  and erasing a little more is the safe side of cleaning.
* **MBR**: four entries at 446 (type 0 unused, ``0xEE`` a GPT's protective entry); extended
  partitions (``0x05``, ``0x0f``, ``0x85``) chain EBRs whose first entry is a logical
  partition relative to its EBR and whose second links the next EBR relative to the
  extended partition's start.

Bounds: at most `MAX_ENTRIES` GPT entries and `MAX_LOGICAL` EBRs are read, and only ranges
inside the disk are returned: a hostile table costs a few reads, never a big allocation.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

__all__ = ["MAX_ENTRIES", "MAX_LOGICAL", "parse_gpt_header", "parse_mbr", "read_partitions"]

MAX_ENTRIES: Final = 256
MAX_LOGICAL: Final = 128
_EXTENDED: Final = frozenset({0x05, 0x0F, 0x85})
_GPT: Final = struct.Struct("<8sIIIIQQQQ16sQII")

Reader = Callable[[int, int], bytes]


def parse_mbr(sector: bytes) -> list[tuple[int, int, int]]:
    """``(type, first LBA, sectors)`` of the used entries of an MBR (or EBR) sector."""
    if len(sector) < 512 or sector[510:512] != b"\x55\xaa":
        return []
    out = []
    for i in range(4):
        kind = sector[446 + 16 * i + 4]
        start, count = struct.unpack_from("<II", sector, 446 + 16 * i + 8)
        if kind and count:
            out.append((kind, start, count))
    return out


def parse_gpt_header(sector: bytes) -> tuple[int, int, int] | None:
    """``(entries LBA, number of entries, entry size)`` of a GPT header, or None."""
    if len(sector) < _GPT.size:
        return None
    fields = _GPT.unpack_from(sector)
    if fields[0] != b"EFI PART":
        return None
    entries_lba, count, size = fields[10], fields[11], fields[12]
    if size < 128 or size > 4096 or size % 8 or count == 0:
        return None
    return entries_lba, min(count, MAX_ENTRIES), size


def _gpt(read: Reader, disk_size: int, block: int) -> list[tuple[int, int]] | None:
    for lba in (1, disk_size // block - 1):
        header = parse_gpt_header(read(lba * block, block))
        if header is None:
            continue
        entries_lba, count, size = header
        raw = read(entries_lba * block, count * size)
        out = []
        for i in range(len(raw) // size):
            entry = raw[i * size : i * size + 128]
            if entry[:16] == bytes(16):
                continue
            first, last = struct.unpack_from("<QQ", entry, 32)
            out.append((first * block, (last - first + 1) * block))
        return out
    return None


def _mbr(read: Reader, block: int) -> list[tuple[int, int]]:
    out = []
    for kind, start, count in parse_mbr(read(0, 512)):
        if kind == 0xEE:
            continue
        out.append((start * block, count * block))
        if kind not in _EXTENDED:
            continue
        ebr = start
        for _ in range(MAX_LOGICAL):
            entries = parse_mbr(read(ebr * block, 512))
            if not entries:
                break
            kind1, rel, n = entries[0]
            if kind1 not in _EXTENDED:
                out.append(((ebr + rel) * block, n * block))
            nxt = [e for e in entries[1:] if e[0] in _EXTENDED]
            if not nxt or nxt[0][1] == 0:
                break
            ebr = start + nxt[0][1]
    return out


def read_partitions(read: Reader, disk_size: int, block: int = 512) -> list[tuple[int, int]]:
    """``(start, size)`` in bytes of the partitions the disk's own table lists, sorted."""
    found = _gpt(read, disk_size, block)
    if found is None:
        found = _mbr(read, block)
    inside = {(s, n) for s, n in found if n > 0 and 0 <= s and s + n <= disk_size}
    return sorted(inside)
