"""Boot files: the handle every server reads from, and the one safe way into the boot root.

A `BootFile` is either on disk (``path`` set: servers may use sendfile / pread) or rendered in
memory. `FileSource` is the seam the TFTP and HTTP servers read through; `RootFiles` is the
plain implementation over ``--root``. Path rules (`safe_relpath`) are shared by TFTP and HTTP so
both refuse exactly the same names.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Protocol

from pxeforge.errors import AccessViolation, FileNotFound

__all__ = [
    "BootFile",
    "DiskFile",
    "FileSource",
    "MemoryFile",
    "RootFiles",
    "safe_relpath",
]

_MAX_PATH = 1024


class BootFile(Protocol):
    """An open boot file. ``read_at`` never changes shared state, so retransmits are trivial."""

    @property
    def name(self) -> str: ...

    @property
    def size(self) -> int: ...

    @property
    def path(self) -> Path | None:
        """The file on disk (for sendfile), or None when rendered in memory."""
        ...

    def read_at(self, offset: int, length: int) -> bytes: ...

    def close(self) -> None: ...


@dataclass(slots=True)
class MemoryFile:
    """A rendered file (pxelinux.cfg/…, grub.cfg, iPXE script)."""

    name: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def path(self) -> Path | None:
        return None

    def read_at(self, offset: int, length: int) -> bytes:
        return self.data[offset : offset + length]

    def close(self) -> None:
        pass


class DiskFile:
    """A regular file opened read-only; reads use pread so one fd serves any offset."""

    __slots__ = ("_fd", "name", "path", "size")

    def __init__(self, name: str, path: Path, fd: int, size: int) -> None:
        self.name = name
        self.path: Path | None = path
        self._fd = fd
        self.size = size

    @classmethod
    def open(cls, name: str, path: Path) -> DiskFile:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise FileNotFound(f"{name}: not found") from None
        except PermissionError:
            raise AccessViolation(f"{name}: permission denied") from None
        except OSError as exc:
            raise FileNotFound(f"{name}: cannot open ({exc.strerror})") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise FileNotFound(f"{name}: not a regular file")
        return cls(name, path, fd, st.st_size)

    def read_at(self, offset: int, length: int) -> bytes:
        return os.pread(self._fd, length, offset)

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:  # a leaked handle must not leak an fd
        if getattr(self, "_fd", -1) >= 0:
            os.close(self._fd)


class FileSource(Protocol):
    """Where servers get files. Raises `FileNotFound` or `AccessViolation`."""

    def open(self, path: str, client: IPv4Address | None) -> BootFile: ...


def safe_relpath(requested: str) -> str:
    """Normalise a client's file name into a relative POSIX path, or refuse it.

    Accepts a leading ``/`` (pxelinux and GRUB send one, iPXE does not) and ``\\`` separators
    (Windows-style loaders). Refuses NUL and control characters, ``..`` components, and
    over-long names with `AccessViolation`. An empty result means the root itself.
    """
    if len(requested) > _MAX_PATH:
        raise AccessViolation("file name too long")
    if any(ord(c) < 0x20 or c == "\x7f" for c in requested):
        raise AccessViolation("control character in file name")
    parts = []
    for part in requested.replace("\\", "/").split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise AccessViolation("'..' in file name")
        parts.append(part)
    return "/".join(parts)


class RootFiles:
    """Real files under one directory, never outside it (symlinks included)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def resolve(self, requested: str) -> Path:
        """The real path for a request, or `AccessViolation`/`FileNotFound`."""
        rel = safe_relpath(requested)
        if not rel:
            raise FileNotFound("no file name")
        root = os.path.realpath(self.root)
        real = os.path.realpath(os.path.join(root, rel))
        if os.path.commonpath([root, real]) != root:
            raise AccessViolation(f"{rel}: outside the boot root")
        return Path(real)

    def open(self, path: str, client: IPv4Address | None = None) -> BootFile:
        rel = safe_relpath(path)
        return DiskFile.open(rel, self.resolve(path))
