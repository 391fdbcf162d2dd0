"""Compression detection and codecs, checked against the real command-line tools."""

from __future__ import annotations

import io
import lzma
import os
import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pxeforge.errors import AssetError
from pxeforge.ramdisk.compress import (
    Compression,
    UnsupportedCompression,
    compress,
    decompress,
    decompress_prefix,
    detect,
    open_reader,
)

WRITABLE = [
    Compression.GZIP,
    Compression.XZ,
    Compression.ZSTD,
    Compression.BZIP2,
    Compression.LZMA,
]

# the tool that decompresses each format to stdout
TOOLS = {
    Compression.GZIP: ["gzip", "-dc"],
    Compression.XZ: ["xz", "-dc"],
    Compression.ZSTD: ["zstd", "-dcq"],
    Compression.BZIP2: ["bzip2", "-dc"],
    Compression.LZMA: ["xz", "--format=lzma", "-dc"],
    Compression.LZ4_LEGACY: ["lz4", "-dc"],
}
# …and compresses stdin to stdout
PACKERS = {
    Compression.GZIP: ["gzip", "-c"],
    Compression.XZ: ["xz", "-c", "--check=crc32"],
    Compression.ZSTD: ["zstd", "-cq"],
    Compression.BZIP2: ["bzip2", "-c"],
    Compression.LZMA: ["xz", "--format=lzma", "-c"],
    Compression.LZ4_LEGACY: ["lz4", "-l", "-c"],
}


def _sample() -> bytes:
    # compressible but not trivial: text, a binary run, random bytes
    text = b"".join(b"line %d of the initramfs sample\n" % i for i in range(20000))
    return text + bytes(range(256)) * 300 + os.urandom(50000) + b"\x00" * 70000


def _tool(argv: list[str], data: bytes) -> bytes:
    if shutil.which(argv[0]) is None:
        pytest.skip(f"{argv[0]} is not installed")
    return subprocess.run(argv, input=data, capture_output=True, check=True).stdout


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\x1f\x8b\x08\x00", Compression.GZIP),
        (b"\xfd7zXZ\x00\x00", Compression.XZ),
        (b"\x28\xb5\x2f\xfd\x00", Compression.ZSTD),
        (b"BZh91AY", Compression.BZIP2),
        (b"\x5d\x00\x00\x80\x00", Compression.LZMA),
        (b"\x02\x21\x4c\x18", Compression.LZ4_LEGACY),
        (b"\x04\x22\x4d\x18", Compression.LZ4_FRAME),
        (b"\x89LZO\x00", Compression.LZO),
        (b"070701", Compression.NONE),
        (b"", Compression.NONE),
        (b"\x1f", Compression.NONE),
    ],
)
def test_detect(head: bytes, kind: Compression) -> None:
    assert detect(head) is kind


@pytest.mark.parametrize("kind", WRITABLE, ids=lambda k: k.value)
def test_our_output_is_read_by_the_tool(kind: Compression) -> None:
    data = _sample()
    packed = compress(data, kind)
    assert detect(packed) is kind
    assert len(packed) < len(data)
    assert _tool(TOOLS[kind], packed) == data


@pytest.mark.parametrize("kind", [*WRITABLE, Compression.LZ4_LEGACY], ids=lambda k: k.value)
def test_tool_output_is_read_by_us(kind: Compression) -> None:
    data = _sample()
    packed = _tool(PACKERS[kind], data)
    assert detect(packed) is kind
    assert decompress(packed) == data
    out, used = decompress_prefix(packed + b"NEXT SEGMENT")
    assert (out, used) == (data, len(packed))
    assert open_reader(io.BufferedReader(io.BytesIO(packed))).read() == data


def test_lz4_legacy_many_blocks_and_overlapping_matches() -> None:
    # > 8 MiB forces several legacy blocks; runs force matches that overlap their source
    data = (b"ab" * 3_000_000) + os.urandom(1000) + (b"x" * 3_000_000) + b"tail"
    packed = _tool(PACKERS[Compression.LZ4_LEGACY], data)
    assert decompress(packed, Compression.LZ4_LEGACY) == data


def test_xz_uses_crc32_for_the_kernel() -> None:
    packed = compress(b"hello", Compression.XZ)
    # stream flags (xz spec §2.1.1.2): second byte is the check type, 0x01 = CRC32
    assert packed[6:8] == b"\x00\x01"
    assert lzma.decompress(packed) == b"hello"


def test_concatenated_members_and_zero_padding() -> None:
    a, b = b"first member\n" * 100, b"second member\n" * 100
    packed = compress(a, Compression.GZIP) + compress(b, Compression.GZIP) + b"\x00" * 300
    assert decompress(packed) == a + b
    assert decompress_prefix(packed)[0] == a
    with pytest.raises(AssetError, match="unexpected data"):
        decompress(compress(a, Compression.GZIP) + b"junk")


@pytest.mark.parametrize("kind", WRITABLE, ids=lambda k: k.value)
def test_bomb_is_stopped(kind: Compression) -> None:
    packed = compress(b"\x00" * (20 << 20), kind)
    assert len(packed) < (4 << 20)
    with pytest.raises(AssetError, match="more than 1048576 bytes"):
        decompress(packed, max_size=1 << 20)
    assert len(decompress(packed, max_size=20 << 20)) == 20 << 20


@pytest.mark.parametrize("kind", WRITABLE, ids=lambda k: k.value)
def test_truncated_and_corrupt_streams(kind: Compression) -> None:
    packed = compress(_sample()[:100000], kind)
    for cut in (len(packed) // 2, len(packed) - 1, 10):
        with pytest.raises(AssetError, match=f"corrupt {kind.value}"):
            decompress(packed[:cut], kind)
    bad = bytearray(packed)
    for i in range(40, len(bad) - 40, max(1, len(bad) // 7)):
        bad[i] ^= 0x55
    with pytest.raises(AssetError):
        decompress(bytes(bad), kind)


def test_lz4_corrupt_block() -> None:
    good = _tool(PACKERS[Compression.LZ4_LEGACY], b"hello hello hello hello" * 50)
    with pytest.raises(AssetError, match="corrupt lz4-legacy"):
        decompress(good[:-3], Compression.LZ4_LEGACY)
    # a match offset pointing before the start of the block
    bogus = b"\x02\x21\x4c\x18" + (4).to_bytes(4, "little") + b"\x00\x10\x00\x00"
    with pytest.raises(AssetError, match="points before the block"):
        decompress(bogus)


@pytest.mark.parametrize("kind", [Compression.LZ4_FRAME, Compression.LZO])
def test_unsupported_formats_are_named(kind: Compression) -> None:
    magic = {Compression.LZ4_FRAME: b"\x04\x22\x4d\x18rest", Compression.LZO: b"\x89LZOrest"}
    with pytest.raises(UnsupportedCompression, match=f"{kind.value} compressed data"):
        decompress(magic[kind])
    with pytest.raises(UnsupportedCompression):
        compress(b"x", kind)
    with pytest.raises(UnsupportedCompression, match="writing lz4-legacy"):
        compress(b"x", Compression.LZ4_LEGACY)


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=5000), kind=st.sampled_from(WRITABLE))
def test_roundtrip_property(data: bytes, kind: Compression) -> None:
    packed = compress(data, kind)
    assert decompress(packed) == data
    assert decompress_prefix(packed + b"\x07tail", kind) == (data, len(packed))
