"""An image tree in memory: files, directories, symlinks and device nodes by path.

Theory of operation
-------------------
The build assembles each part of the ramdisk as a `Tree` (path → `Node`) and turns it into
newc entries with fixed metadata, so identical inputs give identical bytes: entries sorted by
path (``LC_ALL=C sort`` order, parents first), owner 0:0, one mtime for all, inodes numbered
1, 2, 3… in that order, no hard links. Parent directories are added implicitly (mode 0755), as
the kernel's initramfs unpacker needs a directory before anything in it.

`resolve` follows symlinks inside the tree as if it were ``/`` (``/lib64/ld-linux…`` →
``lib/x86_64-linux-gnu/ld-linux…``). `write` stages the tree in a real directory, which the build
needs to run the image's own Python at build time.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from pxeforge.errors import AssetError
from pxeforge.ramdisk import cpio

__all__ = ["Node", "NodeKind", "Tree"]

NodeKind = Literal["file", "dir", "symlink", "chr", "blk"]
_MAX_HOPS: Final = 40


@dataclass(frozen=True, slots=True)
class Node:
    kind: NodeKind
    mode: int  # permission bits only
    data: bytes = b""  # a file's contents
    target: str = ""  # a symlink's target, as written
    rdev: tuple[int, int] = (0, 0)  # a device node's (major, minor)


def _norm(path: str) -> str:
    norm = posixpath.normpath("/" + path).lstrip("/")
    if not norm or norm == ".":
        raise AssetError(f"image path {path!r} names the root")
    return norm


class Tree:
    """Paths (relative, normalised: ``usr/bin/python3``) to nodes."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}

    def __len__(self) -> int:
        return len(self.nodes)

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and path in self.nodes

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.nodes))

    def get(self, path: str) -> Node | None:
        return self.nodes.get(path)

    def _parents(self, path: str) -> None:
        parent = posixpath.dirname(path)
        while parent:
            node = self.nodes.get(parent)
            if node is None:
                self.nodes[parent] = Node("dir", 0o755)
            elif node.kind != "dir":
                raise AssetError(f"image path {parent!r} is a {node.kind}, not a directory")
            else:
                break
            parent = posixpath.dirname(parent)

    def _put(self, path: str, node: Node) -> str:
        path = _norm(path)
        old = self.nodes.get(path)
        if old is not None and old.kind == "dir" and node.kind != "dir":
            if any(p.startswith(path + "/") for p in self.nodes):
                raise AssetError(f"image path {path!r} is a non-empty directory")
        self._parents(path)
        self.nodes[path] = node
        return path

    def add_file(self, path: str, data: bytes, mode: int = 0o644) -> str:
        return self._put(path, Node("file", mode & 0o7777, data=data))

    def add_dir(self, path: str, mode: int = 0o755) -> str:
        return self._put(path, Node("dir", mode & 0o7777))

    def add_symlink(self, path: str, target: str) -> str:
        return self._put(path, Node("symlink", 0o777, target=target))

    def add_device(self, path: str, kind: Literal["chr", "blk"], major: int, minor: int) -> str:
        return self._put(path, Node(kind, 0o600, rdev=(major, minor)))

    def remove(self, path: str) -> None:
        self.nodes.pop(path, None)

    def resolve(self, path: str) -> str | None:
        """The path of the file or directory ``path`` leads to, symlinks followed inside the
        tree; None when it dangles or loops."""
        parts = _norm(path).split("/")
        done: list[str] = []
        hops = 0
        while parts:
            part = parts.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if done:
                    done.pop()
                continue
            cur = "/".join([*done, part])
            node = self.nodes.get(cur)
            if node is None:
                return None
            if node.kind == "symlink":
                hops += 1
                if hops > _MAX_HOPS:
                    return None
                target = node.target
                if target.startswith("/"):
                    done = []
                parts = [p for p in target.split("/") if p] + parts
                continue
            done.append(part)
        return "/".join(done) or None

    def size(self) -> int:
        """Bytes of file contents."""
        return sum(len(n.data) for n in self.nodes.values())

    def entries(self, mtime: int = 0) -> list[cpio.Entry]:
        """newc entries, sorted, with fixed owners, mtime and inode numbers."""
        out: list[cpio.Entry] = []
        for ino, path in enumerate(sorted(self.nodes), start=1):
            node = self.nodes[path]
            kw = {"mtime": mtime, "ino": ino}
            if node.kind == "file":
                out.append(cpio.Entry.file(path, node.data, node.mode, **kw))
            elif node.kind == "dir":
                out.append(cpio.Entry.directory(path, node.mode, nlink=2, **kw))
            elif node.kind == "symlink":
                out.append(cpio.Entry.symlink(path, node.target, **kw))
            else:
                kind = stat.S_IFCHR if node.kind == "chr" else stat.S_IFBLK
                out.append(cpio.Entry.device(path, kind, *node.rdev, mode=node.mode, **kw))
        return out

    def archive(self, mtime: int = 0) -> bytes:
        """The tree as one uncompressed newc archive (512-byte padded, like GNU cpio)."""
        return cpio.write_archive(self.entries(mtime))

    @classmethod
    def from_entries(cls, entries: list[cpio.Entry]) -> Tree:
        tree = cls()
        for e in entries:
            if e.path == "." or e.name == cpio.TRAILER:
                continue
            if e.is_dir:
                tree.add_dir(e.path, e.perms)
            elif e.is_symlink:
                tree.add_symlink(e.path, e.link_target)
            elif e.is_file:
                tree.add_file(e.path, e.data, e.perms)
            elif e.is_device:
                kind: Literal["chr", "blk"] = "chr" if stat.S_ISCHR(e.mode) else "blk"
                tree.add_device(e.path, kind, e.rdev_major, e.rdev_minor)
        return tree

    def write(self, root: Path) -> None:
        """Stage the tree below ``root`` (device nodes are skipped: they need root)."""
        root.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.nodes):
            node = self.nodes[path]
            dest = root / path
            if node.kind == "dir":
                dest.mkdir(exist_ok=True)
            elif node.kind == "file":
                dest.write_bytes(node.data)
                dest.chmod(node.mode)
            elif node.kind == "symlink":
                if dest.is_symlink() or dest.exists():
                    dest.unlink()
                os.symlink(node.target, dest)
