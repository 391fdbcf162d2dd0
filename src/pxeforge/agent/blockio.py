"""Raw I/O on a disk (or a regular file standing in for one): open, size, write, zero, re-read.

Theory of operation: everything goes through file descriptors and positional calls
(``os.pwrite``, ``os.preadv``) so there is no shared file position between threads. A block
device is opened ``O_EXCL`` (the kernel refuses while it is mounted or held by another
device-mapper/RAID user), a regular file is never created or truncated here. Zeroing uses
the kernel's ``BLKZEROOUT`` on block devices (it drops the range from the page cache and may
let the device do the work: write-zeroes, or a discard that reads back as zeros) and
falls back to writing zeros. `drop_cache` (``fsync`` then ``posix_fadvise(DONTNEED)``) makes
the next read come from the device rather than from the page cache, which is what
`hash_range` needs to verify what reached the disk.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import stat
import struct
from collections.abc import Callable
from typing import Final

__all__ = [
    "IO_CHUNK",
    "drop_cache",
    "hash_range",
    "is_block",
    "open_target",
    "size_of",
    "write_all",
    "zero_range",
]

IO_CHUNK: Final = 4 * 1024 * 1024
_BLKZEROOUT: Final = 0x127F  # _IO(0x12, 127): zero [start, start+len) of a block device
_ZEROS: Final = bytes(1024 * 1024)


def open_target(path: str) -> int:
    """``path`` open for reading and writing (``O_EXCL`` when it is a block device)."""
    flags = os.O_RDWR | os.O_CLOEXEC
    if stat.S_ISBLK(os.stat(path).st_mode):
        flags |= os.O_EXCL
    return os.open(path, flags)


def is_block(fd: int) -> bool:
    return stat.S_ISBLK(os.fstat(fd).st_mode)


def size_of(fd: int) -> int:
    """Size in bytes of a block device or regular file."""
    return os.lseek(fd, 0, os.SEEK_END)


def write_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(f"pwrite wrote nothing at offset {offset}")
        view, offset = view[n:], offset + n


def zero_range(fd: int, offset: int, length: int) -> None:
    """Make ``length`` bytes at ``offset`` read as zeros."""
    if length <= 0:
        return
    if is_block(fd) and offset % 512 == 0 and length % 512 == 0:
        try:
            fcntl.ioctl(fd, _BLKZEROOUT, struct.pack("=QQ", offset, length))
            return
        except OSError:
            pass  # the device or driver refuses: write the zeros
    end = offset + length
    while offset < end:
        n = min(len(_ZEROS), end - offset)
        write_all(fd, memoryview(_ZEROS)[:n], offset)
        offset += n


def drop_cache(fd: int) -> None:
    """Flush to the device and drop the cached pages: the next read hits the device."""
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def hash_range(
    fd: int,
    length: int,
    algo: str,
    *,
    offset: int = 0,
    progress: Callable[[int], None] | None = None,
) -> str:
    """The hex digest of ``length`` bytes at ``offset`` (short read: OSError)."""
    h = hashlib.new(algo)
    buf = bytearray(IO_CHUNK)
    done = 0
    while done < length:
        want = min(IO_CHUNK, length - done)
        view = memoryview(buf)[:want]
        n = os.preadv(fd, [view], offset + done)
        if n <= 0:
            raise OSError(f"read back stopped at byte {done} of {length}")
        h.update(view[:n])
        done += n
        if progress is not None:
            progress(done)
    return h.hexdigest()
