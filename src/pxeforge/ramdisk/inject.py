"""Editing an image in memory: add or replace members of its last archive.

Theory of operation
-------------------
`inject` scans the image (`pxeforge.ramdisk.image.scan_image`), edits the entries of the last
archive and writes that archive back into its stream; every byte before the stream (the early
archive, earlier streams, earlier archives of the same stream) is kept as it is, so is the
zero padding around it, and the stream keeps its compression (and gzip level) unless told
otherwise.

Sources are read from disk the way ``cpio -o`` would (`pxeforge.ramdisk.cpio.pack_directory`:
``lstat``, so a symlink is added as a symlink): a directory's contents merge into DEST (its
existing directories are kept, its files replaced), anything else becomes DEST, or goes inside
it when DEST ends with ``/`` or is a directory of the image. Destinations are resolved through
the image's own symlinks, as if the image were ``/`` (``/lib/x`` lands in ``usr/lib/x`` when the
image has ``lib -> usr/lib``), so a merged-/usr layout is never broken by a directory entry
replacing its symlink (the kernel would delete the symlink: ``clean_path`` in
init/initramfs.c). Missing parents are added (0755). A replaced member leaves its position and
the new one is appended; when it was a hard link, the rest of its group keeps the data. New
entries get inode numbers above every number in the archive and device numbers 0, so they never
join an existing hard-link group.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pxeforge.errors import AssetError, ConfigError
from pxeforge.ramdisk.compress import Compression, compress
from pxeforge.ramdisk.cpio import Entry, Format, pack_directory, write_archive
from pxeforge.ramdisk.image import DEFAULT_MAX_IMAGE, WRITABLE, Image, check_level, scan_image

__all__ = ["Injection", "inject", "parse_injection"]

_MAX_HOPS: Final = 40  # symlinks followed resolving one path (the kernel's MAXSYMLINKS)


def _owner_of(owner: tuple[int, int] | None, e: Entry) -> tuple[int, int]:
    return (e.uid, e.gid) if owner is None else owner


@dataclass(frozen=True, slots=True)
class Injection:
    """``SRC[:DEST]``: a host path and where it goes in the image (None: ``/<basename>``)."""

    src: Path
    dest: str | None = None


def parse_injection(arg: str) -> Injection:
    """``SRC`` or ``SRC:DEST``; a SRC that exists with its colon wins over the split."""
    if os.path.lexists(arg) or ":" not in arg:
        return Injection(Path(arg))
    src, _, dest = arg.rpartition(":")
    if not os.path.lexists(src):
        first, _, rest = arg.partition(":")
        if os.path.lexists(first):
            src, dest = first, rest
    if not dest:
        raise ConfigError(f"{arg!r}: empty destination after ':'")
    return Injection(Path(src), dest)


class _Editor:
    """The last archive of an image, edited in memory, with a path view of the whole image
    (later archives win) to resolve destinations through the image's symlinks."""

    def __init__(self, image: Image, mtime: int | None, owner: tuple[int, int] | None) -> None:
        self.entries: list[Entry] = list(image.archives[-1].entries)
        self.view: dict[str, Entry] = {}
        for a in image.archives:
            for e in a.entries:
                self.view[e.path] = e
        self.next_ino = max((e.ino for e in self.entries), default=0) + 1
        self.mtime = mtime
        self.owner = owner
        self.new_dirs: set[str] = set()

    def _ino(self) -> int:
        n = self.next_ino
        self.next_ino += 1
        return n

    def _clamp(self, mtime: int) -> int:
        return mtime if self.mtime is None else min(mtime, self.mtime)

    def resolve(self, parts: Sequence[str], dir_mtime: int | None) -> tuple[str, ...] | None:
        """``parts`` as a directory inside the image, its symlinks followed as if the image
        were ``/``. Missing directories are added (0755, ``dir_mtime``); when ``dir_mtime``
        is None, nothing is added and the answer is None unless the directory exists."""
        done: list[str] = []
        todo = list(parts)
        hops = 0
        while todo:
            part = todo.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if done:
                    done.pop()
                continue
            path = "/".join([*done, part])
            e = self.view.get(path)
            if e is None:
                if dir_mtime is None:
                    return None
                uid, gid = self.owner or (0, 0)
                self.add(Entry.directory(path, uid=uid, gid=gid, mtime=self._clamp(dir_mtime),
                                         nlink=2, ino=self._ino()))  # fmt: skip
                self.new_dirs.add(path)
                done.append(part)
            elif e.is_dir:
                done.append(part)
            elif e.is_symlink:
                hops += 1
                if hops > _MAX_HOPS:
                    raise AssetError(f"too many symlinks resolving /{'/'.join(parts)} in the image")
                target = e.link_target
                if target.startswith("/"):
                    done = []
                todo = target.split("/") + todo
            elif dir_mtime is None:
                return None
            else:
                raise AssetError(f"/{path} in the image is not a directory")
        return tuple(done)

    def remove(self, path: str) -> None:
        """Drop the last archive's records of ``path``, keeping hard-link groups whole: the
        others get the link count and, if the removed record carried it, the data."""
        while True:
            idx = [i for i, e in enumerate(self.entries) if e.path == path]
            if not idx:
                return
            old = self.entries.pop(idx[-1])
            if not (old.is_file and old.nlink > 1):
                continue
            rest = [
                j for j, e in enumerate(self.entries) if e.is_file and e.inode_key == old.inode_key
            ]
            for j in rest:
                self.entries[j] = dataclasses.replace(self.entries[j], nlink=len(rest))
            if rest and old.data and not self.entries[rest[-1]].data:
                self.entries[rest[-1]] = dataclasses.replace(self.entries[rest[-1]], data=old.data)

    def add(self, e: Entry) -> None:
        self.remove(e.path)
        self.entries.append(e)
        self.view[e.path] = e

    def place(self, item: Injection) -> None:
        """Add one ``SRC[:DEST]``: a directory's contents merge into DEST; anything else
        becomes DEST, or goes inside it when DEST ends with ``/`` or is a directory."""
        try:
            st = item.src.lstat()
        except OSError as exc:
            raise AssetError(f"cannot read {item.src}: {exc.strerror}") from None
        when = int(st.st_mtime)
        base = os.path.basename(os.path.normpath(item.src))
        dest = item.dest if item.dest is not None else "/" + base
        if "\x00" in dest or ".." in dest.split("/"):
            raise ConfigError(f"destination {dest!r} must not contain '..'")
        parts = tuple(p for p in dest.split("/") if p not in ("", "."))
        if stat.S_ISDIR(st.st_mode):
            found = pack_directory(item.src.resolve())
        else:
            if dest.endswith("/") or not parts or self.resolve(parts, None) is not None:
                parts = (*parts, base)
            found = pack_directory(item.src.parent, [item.src.name])
            found = [dataclasses.replace(found[0], name=".")]
        self._merge(found, parts, when)

    def _merge(self, found: list[Entry], dest: tuple[str, ...], when: int) -> None:
        groups: dict[tuple[int, int, int], int] = {}
        for e in found:
            if e.is_file and e.nlink > 1:
                groups[e.inode_key] = groups.get(e.inode_key, 0) + 1
        numbers: dict[tuple[int, int, int], int] = {}
        for e in found:
            full = dest + tuple(p for p in e.path.split("/") if p not in ("", "."))
            if not full:  # a directory merged into the image root
                continue
            parent = self.resolve(full[:-1], when)
            assert parent is not None
            path = "/".join((*parent, full[-1]))
            there = self.view.get(path)
            if e.is_dir:
                if there is not None and there.is_symlink:
                    self.resolve(full, when)  # merge into its target (created if missing)
                    continue
                if there is not None and there.is_dir:
                    continue  # merge into it, keeping its metadata
                if there is not None:
                    raise AssetError(f"/{path} is a file in the image, not a directory")
            elif there is not None and there.is_dir:
                raise AssetError(f"/{path} is a directory in the image; cannot replace it")
            linked = e.is_file and groups.get(e.inode_key, 1) > 1
            ino = numbers.setdefault(e.inode_key, self._ino()) if linked else self._ino()
            uid, gid = _owner_of(self.owner, e)
            self.add(
                dataclasses.replace(
                    e,
                    name=path,
                    ino=ino,
                    nlink=groups[e.inode_key] if linked else (2 if e.is_dir else 1),
                    dev_major=0,
                    dev_minor=0,
                    uid=uid,
                    gid=gid,
                    mtime=self._clamp(e.mtime),
                )
            )
            if e.is_dir:
                self.new_dirs.add(path)

    def finish(self) -> list[Entry]:
        """The archive's entries; directories added get their link count (2 + their
        subdirectories in the archive)."""
        subdirs: dict[str, int] = {}
        for e in self.entries:
            if e.is_dir and e.path != ".":
                parent = e.path.rpartition("/")[0] or "."
                subdirs[parent] = subdirs.get(parent, 0) + 1
        return [
            dataclasses.replace(e, nlink=2 + subdirs.get(e.path, 0))
            if e.is_dir and e.path in self.new_dirs
            else e
            for e in self.entries
        ]


def inject(
    data: bytes,
    items: Sequence[Injection],
    *,
    compression: Compression | None = None,
    level: int | None = None,
    mtime: int | None = None,
    owner: tuple[int, int] | None = None,
    max_size: int = DEFAULT_MAX_IMAGE,
) -> bytes:
    """The image with ``items`` added to (or replacing members of) its last archive; every
    other byte before that archive's stream is kept as is (see the module docstring)."""
    image = scan_image(data, max_size=max_size)
    stream = image.streams[-1]
    arch = stream.archives[-1]
    kind = compression or stream.compression
    if kind not in WRITABLE:
        raise AssetError(
            f"the image's last stream is {kind.value}, which pxeforge cannot write; "
            "choose another compression with --compress"
        )
    lvl = level if level is not None else (stream.level if kind is stream.compression else None)
    check_level(kind, lvl)
    editor = _Editor(image, mtime, owner)
    for item in items:
        editor.place(item)
    fmt = arch.format if arch.format in (Format.NEWC, Format.CRC) else Format.NEWC
    plain = (
        stream.plain[: arch.start]
        + write_archive(editor.finish(), fmt, block_size=arch.block_size)
        + bytes(arch.padding)
    )
    end = stream.offset + stream.length
    return data[: stream.offset] + compress(plain, kind, level=lvl) + data[end:]
