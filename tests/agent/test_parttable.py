"""Partition tables parsed by the agent itself: GPT (primary, backup), MBR with logical
partitions, and hostile tables that stay bounded."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

from pxeforge.agent.parttable import read_partitions

from .conftest import MIB, write_gpt


def _reader(data: bytes | bytearray) -> Callable[[int, int], bytes]:
    return lambda offset, n: bytes(data[offset : offset + n])


def _mbr_entry(buf: bytearray, sector: int, index: int, kind: int, start: int, count: int) -> None:
    struct.pack_into("<B3sB3sII", buf, sector * 512 + 446 + 16 * index, 0, b"\0\0\0", kind,
                     b"\0\0\0", start, count)  # fmt: skip
    buf[sector * 512 + 510 : sector * 512 + 512] = b"\x55\xaa"


def test_gpt_primary_and_backup(tmp_path: Path) -> None:
    path = tmp_path / "disk"
    path.write_bytes(bytes(16 * MIB))
    write_gpt(str(path), 16 * MIB, [(34, 2081), (4096, 8191)])
    data = bytearray(path.read_bytes())
    want = [(34 * 512, 2048 * 512), (4096 * 512, 4096 * 512)]
    assert read_partitions(_reader(data), len(data)) == want
    data[512:1024] = bytes(512)  # the primary header is gone: the backup still tells
    assert read_partitions(_reader(data), len(data)) == want


def test_mbr_with_logical_partitions() -> None:
    data = bytearray(8 * MIB)
    _mbr_entry(data, 0, 0, 0x83, 2048, 2048)
    _mbr_entry(data, 0, 1, 0x05, 4096, 8192)  # extended: 4096 .. 12287
    _mbr_entry(data, 4096, 0, 0x83, 63, 1000)  # logical 1 at 4159
    _mbr_entry(data, 4096, 1, 0x05, 2048, 4000)  # next EBR at 4096 + 2048
    _mbr_entry(data, 6144, 0, 0x82, 63, 500)  # logical 2 at 6207
    _mbr_entry(data, 0, 2, 0x83, 1 << 30, 100)  # past the disk's end: ignored
    got = read_partitions(_reader(data), len(data))
    assert got == [(2048 * 512, 2048 * 512), (4096 * 512, 8192 * 512),
                   (4159 * 512, 1000 * 512), (6207 * 512, 500 * 512)]  # fmt: skip


def test_hostile_tables_are_bounded() -> None:
    data = bytearray(4 * MIB)
    _mbr_entry(data, 0, 0, 0x05, 1, 100)
    _mbr_entry(data, 1, 0, 0x05, 0, 0)  # no logical entry, just links
    _mbr_entry(data, 1, 1, 0x05, 0, 1)  # an EBR that links to itself: the walk stops
    reads: list[int] = []

    def read(offset: int, n: int) -> bytes:
        reads.append(n)
        return bytes(data[offset : offset + n])

    assert read_partitions(read, len(data)) == [(512, 100 * 512)]
    assert len(reads) < 200 and max(reads) <= 512 * 2
    # a GPT header claiming 2^32 entries of 4 GiB each: refused or capped, never read whole
    gpt = bytearray(1 * MIB)
    struct.pack_into("<8sIIIIQQQQ16sQII", gpt, 512, b"EFI PART", 0x10000, 92, 0, 0, 1, 2047,
                     34, 2000, bytes(16), 2, 0xFFFFFFFF, 0xFFFFFFF8)  # fmt: skip
    reads.clear()
    data = gpt
    assert read_partitions(read, len(gpt)) == []
    assert max(reads) <= 512
    struct.pack_into("<II", gpt, 512 + 80, 0xFFFFFFFF, 128)
    reads.clear()
    assert read_partitions(read, len(gpt)) == []
    assert max(reads) <= 256 * 128
