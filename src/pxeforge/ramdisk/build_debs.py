"""Debian packages for the ramdisk: which ones, and their files in one pass.

Theory of operation
-------------------
*Which packages.* The image takes programs from a few root packages (busybox-static,
python3.11-minimal, libpython3.11-stdlib, qemu-utils) and needs the shared libraries they
load. `library_packages` walks apt's dependency graph (``apt-cache depends --recurse``, local
and quick) from the roots, following ``Depends``/``Pre-Depends`` only into library packages
(Debian section ``libs``, from ``apt-cache show``: ``zlib1g`` is one, ``perl-base`` and
``tar`` are not) and never into the ``skip`` set (libraries that serve only
Python extension modules the image leaves out: readline, ncurses, sqlite, Berkeley DB, NIS). An
alternative group ``a | b`` takes its first member apt knows. That decides what to download;
which *files* of those packages go into the image is decided later from the ELF dynamic
sections (`pxeforge.ramdisk.build_elf`), so a package too many costs a download, never space.

*Their files.* A .deb is an ar archive whose ``data.tar.*`` holds the files (deb(5)).
`iter_members` streams that tar once — the kernel package decompresses to ~400 MB, so a second
pass costs ~12 s here — and hands out every member's metadata, with contents only for the
regular files the caller keeps. Names are normalised and names that climb out (``..``) are
skipped, as `pxeforge.assets.deb` does.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pxeforge.assets.deb import FileSlice, PackageFile, normalize_member, read_ar, tar_kind
from pxeforge.errors import AssetError
from pxeforge.ramdisk.compress import DECODE_ERRORS, Compression, detect, open_reader

__all__ = [
    "DependencyGraph",
    "Member",
    "apt_depends",
    "apt_sections",
    "iter_members",
    "library_packages",
    "parse_apt_depends",
]

_MAX_MEMBER: Final = 1 << 30
_LIBRARY_SECTIONS: Final = frozenset({"libs", "oldlibs"})
_DEP_LINE: Final = re.compile(r"^\s*(\|?)(PreDepends|Depends):\s*(\S+)")

#: package → its dependency groups; each group lists alternatives, first choice first.
DependencyGraph = Mapping[str, Sequence[tuple[str, ...]]]


@dataclass(frozen=True, slots=True)
class Member:
    """A path of a package; ``data`` holds a kept regular file's contents."""

    file: PackageFile
    data: bytes = b""


def iter_members(path: Path, keep: Callable[[PackageFile], bool]) -> Iterator[Member]:
    """Every member of the .deb's data archive, in archive order, in one streaming pass;
    regular files for which ``keep`` is true come with their contents."""
    try:
        f = path.open("rb")
    except OSError as exc:
        raise AssetError(f"cannot read {path}: {exc.strerror or exc}") from None
    with f:
        members = read_ar(f, source=str(path))
        data = next((m for m in members if m.name.startswith("data.tar")), None)
        if data is None:
            raise AssetError(f"{path} has no data.tar member: not a .deb")
        f.seek(data.offset)
        kind = detect(f.read(8))
        if not kind.supported:
            raise AssetError(f"{path}: {data.name} uses unsupported {kind.value} compression")
        raw = io.BufferedReader(FileSlice(f, data.offset, data.size), buffer_size=1 << 20)
        stream = open_reader(raw, kind) if kind is not Compression.NONE else raw
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tf:
                for ti in tf:
                    name = normalize_member(ti.name)
                    if name is None or name == ".":
                        continue
                    kind_s = tar_kind(ti)
                    link = ti.linkname
                    if kind_s == "hardlink":
                        link = normalize_member(link) or ""
                    pf = PackageFile(name, ti.size, ti.mode & 0o7777, kind_s, link)
                    content = b""
                    if kind_s == "file" and keep(pf):
                        if ti.size > _MAX_MEMBER:
                            raise AssetError(f"{path}: {name} is {ti.size} bytes; refused")
                        fh = tf.extractfile(ti)
                        content = fh.read() if fh is not None else b""
                    yield Member(pf, content)
        except tarfile.TarError as exc:
            raise AssetError(f"{path}: {data.name} is not a valid tar archive: {exc}") from None
        except DECODE_ERRORS as exc:
            raise AssetError(f"{path}: {data.name} does not decompress: {exc}") from None
        finally:
            stream.close()
            raw.close()


def parse_apt_depends(text: str) -> dict[str, list[tuple[str, ...]]]:
    """The output of ``apt-cache depends`` (any number of packages) as a graph. A line
    starting with ``|`` is an alternative of the line after it (``a | b``)."""
    graph: dict[str, list[tuple[str, ...]]] = {}
    current: list[tuple[str, ...]] | None = None
    pending: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            current = graph.setdefault(line.strip(), [])
            pending = []
            continue
        match = _DEP_LINE.match(line)
        if match is None or current is None:
            continue  # Recommends, Breaks…, or the target list of a virtual package
        alt, _kind_s, name = match.groups()
        pending.append(name)
        if not alt:
            current.append(tuple(pending))
            pending = []
    return graph


def apt_depends(roots: Sequence[str]) -> dict[str, list[tuple[str, ...]]]:
    """The dependency graph below ``roots`` as apt's lists know it (no network)."""
    apt_cache = shutil.which("apt-cache")
    if apt_cache is None:
        raise AssetError("the ramdisk build needs apt (apt-cache) to choose its packages")
    argv = [apt_cache, "depends", "--recurse", "--no-recommends", "--no-suggests"]
    argv += ["--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", *roots]
    proc = subprocess.run(
        argv, capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"}, check=False
    )
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        raise AssetError(f"apt-cache depends {' '.join(roots)}: {why} (run apt-get update?)")
    return parse_apt_depends(proc.stdout)


def apt_sections(packages: Iterable[str]) -> dict[str, str]:
    """Each package's Debian section (``libs``, ``utils``…) from apt's lists (no network)."""
    names = sorted(set(packages))
    apt_cache = shutil.which("apt-cache")
    if apt_cache is None:
        raise AssetError("the ramdisk build needs apt (apt-cache) to choose its packages")
    proc = subprocess.run(
        [apt_cache, "show", "--no-all-versions", *names],
        capture_output=True,
        text=True,
        env={**os.environ, "LC_ALL": "C"},
        check=False,
    )
    sections: dict[str, str] = {}
    package = ""
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition(":")
        if not sep or line[:1].isspace():
            continue
        if key == "Package":
            package = value.strip()
        elif key == "Section" and package:
            sections.setdefault(package, value.strip().rsplit("/", 1)[-1])
    return sections


def library_packages(
    roots: Iterable[str],
    graph: DependencyGraph,
    sections: Mapping[str, str],
    skip: Iterable[str] = (),
) -> list[str]:
    """The roots and every library package they need through the graph, sorted."""
    skipped = set(skip)
    chosen: set[str] = set()
    todo = list(roots)
    while todo:
        pkg = todo.pop()
        if pkg in chosen:
            continue
        chosen.add(pkg)
        for group in graph.get(pkg, ()):
            real = [a for a in group if not a.startswith("<") and a in graph]
            if not real:
                continue
            first = real[0]
            if sections.get(first) in _LIBRARY_SECTIONS and first not in skipped:
                todo.append(first)
    return sorted(chosen)
