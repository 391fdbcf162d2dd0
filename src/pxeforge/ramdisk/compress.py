"""Compressed streams as found in initramfs images and packages: detect by magic, (de)compress.

Theory of operation
-------------------
Nothing here trusts a file name: `detect` looks at the first bytes only, the way the Linux
kernel's ``decompress_method()`` (lib/decompress.c) picks a decompressor for an initramfs
segment. The magics are:

    gzip        1f 8b (RFC 1952 §2.3.1)
    xz          fd 37 7a 58 5a 00 (".xz" file format §2.1.1.1)
    zstd        28 b5 2f fd (RFC 8878 §3.1.1, little-endian 0xFD2FB528)
    bzip2       42 5a 68 ("BZh", then the block size digit)
    lzma        5d 00 00 (LZMA-alone: properties byte 0x5d, then the dictionary size)
    lz4-legacy  02 21 4c 18 (little-endian 0x184C2102, the format the kernel reads)
    lz4 frame   04 22 4d 18 and lzo 89 4c 5a 4f are recognised only to be refused clearly

`decompress_prefix` decodes exactly one compressed stream at the start of a buffer and says how
many input bytes it used, because an initramfs is a *sequence* of segments (an uncompressed
early-microcode cpio, then a compressed main cpio, maybe more) and the next segment starts
right after the stream's end. Every decoder is fed in bounded chunks and the output is counted,
so a decompression bomb stops at ``max_size`` instead of filling memory.

gzip, xz/lzma and bzip2 come from the standard library, zstd from the ``zstandard`` package.
lz4-legacy has no library here, so this module carries a small pure-Python decoder for it (the
block format is public: lz4 ``doc/lz4_Block_format.md``); writing lz4 is not supported.
`open_reader` wraps a binary stream for streaming use (``tarfile`` in ``r|`` mode).
"""

from __future__ import annotations

import bz2
import enum
import gzip
import lzma
import zlib
from typing import IO, Any, Final, cast

import zstandard

from pxeforge.errors import AssetError

__all__ = [
    "DECODE_ERRORS",
    "DEFAULT_MAX_SIZE",
    "Compression",
    "UnsupportedCompression",
    "compress",
    "decompress",
    "decompress_prefix",
    "detect",
    "open_reader",
]

DEFAULT_MAX_SIZE: Final = 8 << 30  # 8 GiB: far above any real initramfs or package payload
_CHUNK: Final = 64 << 10  # input fed to a decoder at a time (zstd: 1/16th, see _decode_zstd)
_LZ4_LEGACY_BLOCK: Final = 8 << 20  # a legacy lz4 block decodes to at most 8 MiB
_LZ4_LEGACY_BOUND: Final = _LZ4_LEGACY_BLOCK + _LZ4_LEGACY_BLOCK // 255 + 16  # LZ4_COMPRESSBOUND


class Compression(enum.Enum):
    """A compression format, named as the ``file``/kernel tools name it."""

    NONE = "none"
    GZIP = "gzip"
    XZ = "xz"
    ZSTD = "zstd"
    BZIP2 = "bzip2"
    LZMA = "lzma"
    LZ4_LEGACY = "lz4-legacy"
    LZ4_FRAME = "lz4"  # recognised, not supported
    LZO = "lzo"  # recognised, not supported

    @property
    def supported(self) -> bool:
        return self not in (Compression.LZ4_FRAME, Compression.LZO)


# Longest magic first, so that no prefix of another magic wins.
_MAGICS: Final[tuple[tuple[bytes, Compression], ...]] = (
    (b"\xfd7zXZ\x00", Compression.XZ),
    (b"\x89LZO", Compression.LZO),
    (b"\x28\xb5\x2f\xfd", Compression.ZSTD),
    (b"\x02\x21\x4c\x18", Compression.LZ4_LEGACY),
    (b"\x04\x22\x4d\x18", Compression.LZ4_FRAME),
    (b"BZh", Compression.BZIP2),
    (b"\x5d\x00\x00", Compression.LZMA),
    (b"\x1f\x8b", Compression.GZIP),
)

_LZ4_LEGACY_MAGIC: Final = b"\x02\x21\x4c\x18"

# What a streaming reader from `open_reader` may raise on corrupt input.
DECODE_ERRORS: Final[tuple[type[BaseException], ...]] = (
    OSError,
    EOFError,
    zlib.error,
    lzma.LZMAError,
    zstandard.ZstdError,
    ValueError,
)


class UnsupportedCompression(AssetError):
    """The data is compressed in a format pxeforge cannot handle; the message names it."""


def detect(head: bytes) -> Compression:
    """The compression of a stream, from its first bytes (6 are enough). NONE if no magic."""
    for magic, kind in _MAGICS:
        if head.startswith(magic):
            return kind
    return Compression.NONE


def _refuse(kind: Compression) -> UnsupportedCompression:
    return UnsupportedCompression(
        f"{kind.value} compressed data is not supported by pxeforge "
        f"(supported: gzip, xz, zstd, bzip2, lzma, lz4-legacy); "
        f"decompress it with the {kind.value} tool first"
    )


def _too_big(kind: Compression, max_size: int) -> AssetError:
    return AssetError(f"{kind.value} stream decompresses to more than {max_size} bytes; refused")


def _corrupt(kind: Compression, exc: BaseException | str) -> AssetError:
    return AssetError(f"corrupt {kind.value} stream: {exc}")


def _decode_stdlib(data: bytes, kind: Compression, max_size: int) -> tuple[bytes, int]:
    dec: Any
    if kind is Compression.GZIP:
        dec = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    elif kind is Compression.XZ:
        dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    elif kind is Compression.LZMA:
        dec = lzma.LZMADecompressor(format=lzma.FORMAT_ALONE)
    else:
        dec = bz2.BZ2Decompressor()
    out = bytearray()
    pos = 0
    pending = b""  # input the decoder has not taken yet (max_length reached)
    try:
        while True:
            if not pending:
                if pos >= len(data):
                    break
                pending = data[pos : pos + _CHUNK]
                pos += len(pending)
            # Ask for one byte more than allowed: getting it means the limit is crossed (so
            # input held back by max_length only ever matters when we are about to refuse).
            out += dec.decompress(pending, max_size - len(out) + 1)
            pending = dec.unconsumed_tail if kind is Compression.GZIP else b""
            if len(out) > max_size:
                raise _too_big(kind, max_size)
            if dec.eof:
                break
    except (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError) as exc:
        raise _corrupt(kind, exc) from None
    if not dec.eof:
        raise _corrupt(kind, "truncated (no end of stream)")
    consumed = pos - len(pending) - len(dec.unused_data)
    return bytes(out), consumed


def _decode_zstd(data: bytes, max_size: int) -> tuple[bytes, int]:
    dec = zstandard.ZstdDecompressor().decompressobj()
    out = bytearray()
    pos = 0
    step = _CHUNK // 16  # zstd can expand hugely (RLE blocks): feed small bites, check often
    try:
        while pos < len(data) and not dec.eof:
            piece = data[pos : pos + step]
            pos += len(piece)
            out += dec.decompress(piece)
            if len(out) > max_size:
                raise _too_big(Compression.ZSTD, max_size)
    except zstandard.ZstdError as exc:
        raise _corrupt(Compression.ZSTD, exc) from None
    if not dec.eof:
        raise _corrupt(Compression.ZSTD, "truncated (no end of frame)")
    return bytes(out), pos - len(dec.unused_data)


def _lz4_block(src: memoryview, out: bytearray, limit: int) -> None:
    """Decode one lz4 block (lz4 doc/lz4_Block_format.md) and append it to ``out``."""
    i = 0
    n = len(src)
    start = len(out)
    while i < n:
        token = src[i]
        i += 1
        length = token >> 4
        if length == 15:
            while True:
                if i >= n:
                    raise ValueError("literal length runs past the block")
                b = src[i]
                i += 1
                length += b
                if b != 255:
                    break
        if i + length > n:
            raise ValueError("literals run past the block")
        out += src[i : i + length]
        i += length
        if i >= n:
            break  # the last sequence has literals only
        if i + 2 > n:
            raise ValueError("match offset runs past the block")
        offset = src[i] | (src[i + 1] << 8)
        i += 2
        if offset == 0 or offset > len(out) - start:
            raise ValueError(f"match offset {offset} points before the block")
        mlen = token & 15
        if mlen == 15:
            while True:
                if i >= n:
                    raise ValueError("match length runs past the block")
                b = src[i]
                i += 1
                mlen += b
                if b != 255:
                    break
        mlen += 4
        if len(out) - start + mlen > limit:
            raise ValueError("block decodes to more than 8 MiB")
        begin = len(out) - offset
        if offset >= mlen:
            out += out[begin : begin + mlen]
        else:  # overlapping copy: the pattern repeats with period `offset`
            pattern = bytes(out[begin:])
            reps, rest = divmod(mlen, offset)
            out += pattern * reps + pattern[:rest]


def _decode_lz4_legacy(data: bytes, max_size: int) -> tuple[bytes, int]:
    """Legacy lz4 frames: magic, then blocks of (le32 compressed size, data). The format has no
    end marker: the stream ends at the end of input, at a zero word (padding), or at a word
    too large to be a block size (the next initramfs segment)."""
    kind = Compression.LZ4_LEGACY
    view = memoryview(data)
    out = bytearray()
    pos = 0
    while len(data) - pos >= 4:
        word = data[pos : pos + 4]
        size = int.from_bytes(word, "little")
        if word == _LZ4_LEGACY_MAGIC:
            pos += 4  # (another) frame header
            continue
        if size == 0 or size > _LZ4_LEGACY_BOUND:
            break  # padding, or the next segment: no lz4 block can be this large
        if pos + 4 + size > len(data):
            raise _corrupt(kind, f"block of {size} bytes at offset {pos} is truncated")
        try:
            _lz4_block(view[pos + 4 : pos + 4 + size], out, _LZ4_LEGACY_BLOCK)
        except ValueError as exc:
            raise _corrupt(kind, f"block at offset {pos}: {exc}") from None
        pos += 4 + size
        if len(out) > max_size:
            raise _too_big(kind, max_size)
    return bytes(out), pos


def decompress_prefix(
    data: bytes, kind: Compression | None = None, *, max_size: int = DEFAULT_MAX_SIZE
) -> tuple[bytes, int]:
    """Decode the one compressed stream that starts ``data``: (output, input bytes used).

    ``kind`` defaults to `detect`. NONE returns the data whole. Raises `AssetError` on corrupt or
    truncated input or output above ``max_size``, `UnsupportedCompression` for lz4-frame / lzo.
    """
    if kind is None:
        kind = detect(data[:8])
    match kind:
        case Compression.NONE:
            if len(data) > max_size:
                raise _too_big(kind, max_size)
            return bytes(data), len(data)
        case Compression.GZIP | Compression.XZ | Compression.LZMA | Compression.BZIP2:
            return _decode_stdlib(data, kind, max_size)
        case Compression.ZSTD:
            return _decode_zstd(data, max_size)
        case Compression.LZ4_LEGACY:
            return _decode_lz4_legacy(data, max_size)
        case _:
            raise _refuse(kind)


def decompress(
    data: bytes, kind: Compression | None = None, *, max_size: int = DEFAULT_MAX_SIZE
) -> bytes:
    """Decode all of ``data``: one stream, or several of the same kind back to back (like
    ``gzip -dc`` on concatenated members), ignoring trailing zero padding. Anything else after
    the stream is an error."""
    if kind is None:
        kind = detect(data[:8])
    out, pos = decompress_prefix(data, kind, max_size=max_size)
    if kind is Compression.NONE:
        return out
    parts = [out]
    total = len(out)
    while pos < len(data):
        rest = data[pos:]
        if not rest.strip(b"\x00"):
            break
        if detect(rest[:8]) is not kind:
            raise _corrupt(kind, f"unexpected data after the stream at offset {pos}")
        more, used = decompress_prefix(rest, kind, max_size=max_size - total)
        parts.append(more)
        total += len(more)
        pos += used
    return b"".join(parts)


def compress(data: bytes, kind: Compression, *, level: int | None = None) -> bytes:
    """Compress ``data`` as ``kind``. Defaults mirror the tools' (gzip -6… see below).

    xz output uses the CRC32 check, as the kernel's xz decoder requires for an initramfs.
    """
    match kind:
        case Compression.NONE:
            return bytes(data)
        case Compression.GZIP:
            return gzip.compress(data, compresslevel=6 if level is None else level, mtime=0)
        case Compression.XZ:
            return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, preset=level)
        case Compression.LZMA:
            return lzma.compress(data, format=lzma.FORMAT_ALONE, preset=level)
        case Compression.BZIP2:
            return bz2.compress(data, compresslevel=9 if level is None else level)
        case Compression.ZSTD:
            return zstandard.ZstdCompressor(level=3 if level is None else level).compress(data)
        case _:
            if not kind.supported:
                raise _refuse(kind)
            raise UnsupportedCompression(
                f"writing {kind.value} is not supported by pxeforge; "
                "choose gzip, xz, zstd, bzip2 or lzma"
            )


class _Lz4LegacyReader:
    """A minimal read() stream over a legacy lz4 stream (decoded block by block)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._buf = b""
        self._done = False

    def _fill(self) -> None:
        word = self._raw.read(4)
        while word == _LZ4_LEGACY_MAGIC:
            word = self._raw.read(4)
        size = int.from_bytes(word, "little") if len(word) == 4 else 0
        if size == 0 or size > _LZ4_LEGACY_BOUND:
            self._done = True
            return
        block = self._raw.read(size)
        if len(block) != size:
            raise _corrupt(Compression.LZ4_LEGACY, "truncated block")
        out = bytearray()
        try:
            _lz4_block(memoryview(block), out, _LZ4_LEGACY_BLOCK)
        except ValueError as exc:
            raise _corrupt(Compression.LZ4_LEGACY, exc) from None
        self._buf += bytes(out)

    def read(self, n: int = -1) -> bytes:
        while not self._done and (n < 0 or len(self._buf) < n):
            self._fill()
        if n < 0:
            n = len(self._buf)
        chunk, self._buf = self._buf[:n], self._buf[n:]
        return chunk

    def close(self) -> None:
        self._done = True


def open_reader(raw: IO[bytes], kind: Compression | None = None) -> IO[bytes]:
    """A read-only stream of ``raw`` decompressed (``raw`` must support ``peek`` or ``seek``
    when ``kind`` is None, to sniff the magic). Errors while reading are `DECODE_ERRORS`."""
    if kind is None:
        if hasattr(raw, "peek"):
            head = raw.peek(8)[:8]
        else:
            where = raw.tell()
            head = raw.read(8)
            raw.seek(where)
        kind = detect(head)
    match kind:
        case Compression.NONE:
            return raw
        case Compression.GZIP:
            return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
        case Compression.XZ | Compression.LZMA:
            fmt = lzma.FORMAT_XZ if kind is Compression.XZ else lzma.FORMAT_ALONE
            return cast(IO[bytes], lzma.LZMAFile(raw, mode="rb", format=fmt))
        case Compression.BZIP2:
            return cast(IO[bytes], bz2.BZ2File(raw, mode="rb"))
        case Compression.ZSTD:
            reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
            return cast(IO[bytes], reader)
        case Compression.LZ4_LEGACY:
            return cast(IO[bytes], _Lz4LegacyReader(raw))
        case _:
            raise _refuse(kind)
