"""Small file-system helpers shared by the asset, ramdisk and build code."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(
    path: Path, data: bytes, *, mode: int | None = None, make_parents: bool = False
) -> None:
    """Replace ``path`` with ``data`` atomically: a temporary file in the same directory,
    fsync, rename, fsync of the directory. A reader sees the old file or the new one, never a
    mix, and a crash leaves one of the two. ``mode`` None keeps the mode of the file being
    replaced (a new file gets 0666 minus the umask). ``make_parents`` creates missing parent
    directories; otherwise a missing directory is the caller's error (FileNotFoundError)."""
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    if mode is None:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            umask = os.umask(0o022)
            os.umask(umask)
            mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
