"""``pxeforge ramdisk``: list, unpack, pack and patch initramfs images.

The work is in `pxeforge.ramdisk.tools`; this module parses options, reads and writes files and
prints. Exit codes: 0 ok, 1 the image or a file is at fault (``Error: …`` on stderr, never a
traceback), 2 usage (bad options or arguments).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import Progress as RichProgress
from rich.progress import SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from pxeforge.assets.fetch import ProgressEvent
from pxeforge.cli.common import cli_error
from pxeforge.errors import ConfigError, PxeforgeError
from pxeforge.ramdisk.build import (
    COMPRESSIONS,
    DEFAULT_LEVELS,
    DOWNLOAD_PREFIX,
    INITRAMFS_NAME,
    KERNEL_NAME,
    MANIFEST_NAME,
    SIZE_BUDGET,
    SUPPORTED_ARCHES,
    BuildConfig,
    build_ramdisk,
)
from pxeforge.ramdisk.build_kernel import MODULES
from pxeforge.ramdisk.compress import Compression
from pxeforge.ramdisk.cpio import Entry
from pxeforge.ramdisk.tools import (
    DEFAULT_MAX_IMAGE,
    WRITABLE,
    Image,
    format_entry,
    inject,
    pack,
    parse_injection,
    scan_image,
    unpack,
    write_atomic,
)

__all__ = ["ramdisk"]

_IMAGE = click.Path(exists=True, dir_okay=False, path_type=Path)
_COMPRESSIONS = [k.value for k in WRITABLE]


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except ConfigError as exc:
        raise cli_error(str(exc), settings=True) from None
    except PxeforgeError as exc:
        raise cli_error(str(exc)) from None
    except MemoryError:
        raise cli_error("out of memory (the image is too large to handle in memory)") from None
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise cli_error(f"{where}{exc.strerror or exc}") from None


def _read(path: Path) -> bytes:
    with _errors():
        return path.read_bytes()


def _scan(path: Path, max_size: int) -> Image:
    data = _read(path)
    with _errors():
        return scan_image(data, max_size=max_size)


def _owner(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    uid, sep, gid = value.partition(":")
    try:
        return int(uid), int(gid if sep else uid)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not UID:GID (numbers)") from None


def _compression(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    return None if value is None else Compression(value)


_max_size = click.option(
    "--max-size",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_IMAGE,
    show_default=True,
    help="Refuse images that decompress to more bytes than this.",
)
_compress = click.option(
    "--compress",
    "compression",
    type=click.Choice(_COMPRESSIONS),
    callback=_compression,
    default=None,
    help="Compression of the (last) stream [pack default: gzip, or the layout's; "
    "inject default: keep the image's].",
)
_level = click.option("--level", type=int, default=None, help="Compression level.")
_mtime = click.option(
    "--mtime",
    type=click.IntRange(min=0),
    envvar="SOURCE_DATE_EPOCH",
    show_envvar=True,
    default=None,
    metavar="EPOCH",
    help="Clamp member mtimes to this time (seconds since the epoch).",
)
_owner_opt = click.option(
    "--owner",
    callback=_owner,
    default=None,
    metavar="UID:GID",
    help="Owner of every member written (default: as on disk).",
)


@click.group()
def ramdisk() -> None:
    """Initramfs images: newc cpio archives, gzip/xz/zstd/bzip2/lzma/lz4 compressed or not,
    possibly several back to back (uncompressed early microcode, then the main archive)."""


def _entry_json(e: Entry) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": os.fsencode(e.name).decode("utf-8", "backslashreplace"),
        "mode": f"{e.mode:o}",
        "uid": e.uid,
        "gid": e.gid,
        "nlink": e.nlink,
        "mtime": e.mtime,
        "size": e.size,
        "ino": e.ino,
    }
    if e.is_symlink:
        doc["target"] = e.data.decode("utf-8", "backslashreplace")
    if e.is_device:
        doc["rdev"] = [e.rdev_major, e.rdev_minor]
    return doc


@ramdisk.command("ls", short_help="List the segments and members of IMAGE.")
@click.argument("image", type=_IMAGE)
@click.option("-l", "--long", "long_", is_flag=True, help="Long listing, like cpio -tv.")
@click.option("-n", "--numeric-uid-gid", "numeric", is_flag=True, help="Numeric owners.")
@click.option(
    "--segment",
    type=click.IntRange(min=0),
    default=None,
    help="List only this archive (0 = first), without the segment header: like cpio -t.",
)
@click.option("--json", "as_json", is_flag=True, help="Segments and entries as JSON.")
@_max_size
def ls(
    image: Path, long_: bool, numeric: bool, segment: int | None, as_json: bool, max_size: int
) -> None:
    """List every segment of IMAGE (offset, compression, format, entry count) and its
    members."""
    img = _scan(image, max_size)
    archives = img.archives
    if segment is not None and segment >= len(archives):
        plural = "s" if len(archives) != 1 else ""
        raise click.BadParameter(
            f"{image} has {len(archives)} segment{plural} (0-{len(archives) - 1})",
            param_hint="'--segment'",
        )
    chosen = archives if segment is None else (archives[segment],)
    if as_json:
        doc = {
            "size": img.size,
            "segments": [
                {
                    "index": a.index,
                    "offset": img.streams[a.stream].offset,
                    "length": img.streams[a.stream].length,
                    "compression": img.streams[a.stream].compression.value,
                    "format": a.format.value,
                    "entries": [_entry_json(e) for e in a.entries],
                }
                for a in chosen
            ],
        }
        click.echo(json.dumps(doc, indent=1))
        return
    now = time.time()
    out = sys.stdout.buffer
    for a in chosen:
        if segment is None:
            s = img.streams[a.stream]
            click.echo(
                f"segment {a.index}: offset {s.offset}, {s.length} bytes, "
                f"{s.compression.value}, {a.format.value}, {len(a.entries)} entries"
            )
        lines = [format_entry(e, long=long_, numeric=numeric, now=now) for e in a.entries]
        out.write(b"".join(line + b"\n" for line in lines))
        out.flush()


@ramdisk.command("unpack", short_help="Extract IMAGE into DIRECTORY, like cpio -idm.")
@click.argument("image", type=_IMAGE)
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--segment", type=click.IntRange(min=0), default=None, help="Only this archive.")
@click.option(
    "--no-layout",
    is_flag=True,
    help="Do not write DIR/.pxeforge-ramdisk.json (pack then makes one gzip'd archive).",
)
@click.option("--force", is_flag=True, help="Extract into a directory that is not empty.")
@_max_size
def unpack_cmd(
    image: Path,
    directory: Path,
    segment: int | None,
    no_layout: bool,
    force: bool,
    max_size: int,
) -> None:
    """Extract every archive of IMAGE into DIRECTORY, like cpio -idm (modes, mtimes, owners
    and device nodes as root, symlinks, hard links), and record the segment layout so that
    pack rebuilds the same image. Hostile archives are refused before anything is written."""
    data = _read(image)
    with _errors():
        result = unpack(
            data, directory, segment=segment, layout=not no_layout, force=force, max_size=max_size
        )
    click.echo(
        f"unpacked {len(result.made)} members from {result.segments} "
        f"segment{'s' if result.segments != 1 else ''} into {directory}"
    )
    if result.skipped:
        click.echo(
            f"warning: not created (device nodes need root): {', '.join(result.skipped)}",
            err=True,
        )


@ramdisk.command("pack", short_help="Pack DIRECTORY into IMAGE, reproducibly.")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("image", type=click.Path(dir_okay=False, path_type=Path))
@_compress
@_level
@_mtime
@_owner_opt
@click.option(
    "--flat", is_flag=True, help="Ignore DIR/.pxeforge-ramdisk.json: one archive of the tree."
)
def pack_cmd(
    directory: Path,
    image: Path,
    compression: Compression | None,
    level: int | None,
    mtime: int | None,
    owner: tuple[int, int] | None,
    flat: bool,
) -> None:
    """Pack DIRECTORY into IMAGE like find . | LC_ALL=C sort | cpio -H newc -o | gzip, but
    reproducible (inodes renumbered, device numbers zeroed, --mtime clamp). A layout left by
    unpack is followed: same segments, same order, same compression."""
    with _errors():
        result = pack(
            directory, compression=compression, level=level, mtime=mtime, owner=owner, flat=flat
        )
        write_atomic(image, result.data)
    kinds = ", ".join(s.compression.value for s in result.layout.streams)
    archives = sum(len(s.archives) for s in result.layout.streams)
    click.echo(
        f"wrote {image}: {len(result.data)} bytes, {archives} segment"
        f"{'s' if archives != 1 else ''} ({kinds}), {result.entries} members"
        + (" (layout from unpack)" if result.from_layout else "")
    )


@ramdisk.command("inject")
@click.argument("image", type=_IMAGE)
@click.argument("sources", nargs=-1, required=True, metavar="SRC[:DEST]...")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write here instead of replacing IMAGE (in place, atomically).",
)
@_compress
@_level
@_mtime
@_owner_opt
@_max_size
def inject_cmd(
    image: Path,
    sources: tuple[str, ...],
    output: Path | None,
    compression: Compression | None,
    level: int | None,
    mtime: int | None,
    owner: tuple[int, int] | None,
    max_size: int,
) -> None:
    """Add or replace files in IMAGE's main (last) archive, in memory.

    SRC is a file, symlink, device node or directory on this machine; DEST its path in the
    image (default /BASENAME). A directory's contents are merged into DEST. A file goes inside
    DEST when DEST ends with / or is a directory of the image. Missing parent directories are
    created; the image's own symlinks are followed (lib -> usr/lib)."""
    items = []
    for arg in sources:
        try:
            item = parse_injection(arg)
        except ConfigError as exc:
            raise click.BadParameter(str(exc), param_hint="SRC[:DEST]") from None
        if not os.path.lexists(item.src):
            raise click.BadParameter(
                f"{item.src}: no such file or directory", param_hint="SRC[:DEST]"
            )
        items.append(item)
    data = _read(image)
    target = output if output is not None else image
    with _errors():
        result = inject(
            data,
            items,
            compression=compression,
            level=level,
            mtime=mtime,
            owner=owner,
            max_size=max_size,
        )
        write_atomic(target, result)
    click.echo(f"wrote {target}: {len(result)} bytes, {len(items)} source(s) injected")


# --------------------------------------------------------------------------- build


class _BuildReporter:
    """Build progress: a rich spinner row per step and per download on a terminal, else one
    line per step; packages found in the cache are counted, not listed."""

    def __init__(self, progress: RichProgress, log: Console) -> None:
        self._progress = progress
        self._log = log
        self._tasks: dict[str, TaskID] = {}
        self._cached_debs = 0
        self._cached_row: TaskID | None = None

    def __call__(self, ev: ProgressEvent) -> None:
        if ev.kind in ("info", "advance") and not ev.task.startswith(DOWNLOAD_PREFIX):
            return
        if ev.task.startswith(DOWNLOAD_PREFIX) and ev.kind == "cached":
            self._cached_debs += 1
            text = f"packages in the cache: {self._cached_debs}"
            if self._progress.disable:
                return
            if self._cached_row is None:
                self._cached_row = self._progress.add_task(text, total=1, completed=1)
            self._progress.update(self._cached_row, description=text)
            return
        label = f"{ev.task}: {ev.message}" if ev.message else ev.task
        if self._progress.disable:
            if ev.kind in ("start", "done", "cached") and ev.message:
                self._log.print(
                    f"{ev.kind:>7} {label}", markup=False, highlight=False, soft_wrap=True
                )
            return
        task = self._tasks.get(ev.task)
        if task is None:
            task = self._progress.add_task(label, total=ev.total)
            self._tasks[ev.task] = task
        if ev.kind in ("start", "advance"):
            self._progress.update(task, description=label, completed=ev.done, total=ev.total)
        else:
            total = ev.total or 1
            self._progress.update(task, description=label, completed=total, total=total)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


@ramdisk.command("build", short_help="Build the deploy kernel and initramfs with the agent.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help=f"Where to write {KERNEL_NAME}, {INITRAMFS_NAME} and {MANIFEST_NAME}.",
)
@click.option(
    "--cache",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Downloads and built parts (default: $PXEFORGE_CACHE, else /var/cache/pxeforge as "
    "root, ~/.cache/pxeforge otherwise; shared with `pxeforge lab`).",
)
@click.option("--arch", type=click.Choice(SUPPORTED_ARCHES), default="amd64", show_default=True)
@click.option(
    "--compress",
    "compression",
    type=click.Choice([c.value for c in COMPRESSIONS]),
    default=Compression.ZSTD.value,
    show_default=True,
    help="Compression of the initramfs archives (zstd unpacks fastest at boot).",
)
@click.option(
    "--level",
    type=int,
    default=None,
    help="Compression level (default: "
    + ", ".join(f"{k.value} {v}" for k, v in DEFAULT_LEVELS.items())
    + ").",
)
@click.option(
    "--qemu-img/--no-qemu-img",
    default=True,
    show_default=True,
    help="Include qemu-img and its libraries (qcow2 → raw in the agent).",
)
@click.option(
    "--module",
    "extra_modules",
    multiple=True,
    metavar="NAME",
    help="Another kernel module to include, with its dependencies (repeatable).",
)
@click.option("--rebuild", is_flag=True, help="Rebuild cached parts (downloads are reused).")
def build_cmd(
    out: Path,
    cache: Path | None,
    arch: str,
    compression: str,
    level: int | None,
    qemu_img: bool,
    extra_modules: tuple[str, ...],
    rebuild: bool,
) -> None:
    """Build the deploy ramdisk: Debian's kernel and an initramfs holding busybox, a Python
    3.11 with the stdlib the agent needs, qemu-img, the NIC and disk modules (with a generated
    modules.dep) and the pxeforge agent, started by /init after DHCP on the BOOTIF interface.

    Packages are downloaded with apt-get download (never installed) into the cache; the big
    parts are cached by package versions, so a second build takes seconds. The output is
    reproducible: the same inputs give the same bytes. The manifest lists every package
    version and SHA-256."""
    from pxeforge.lab.guest import default_cache_dir

    try:
        config = BuildConfig(
            out=out,
            cache=cache if cache is not None else default_cache_dir(),
            arch=arch,
            compression=Compression(compression),
            level=level,
            qemu_img=qemu_img,
            modules=tuple(dict.fromkeys((*MODULES, *extra_modules))),
            rebuild=rebuild,
        )
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None
    log = Console(stderr=True)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with _errors(), RichProgress(*columns, console=log, disable=not log.is_terminal) as bar:
        result = build_ramdisk(config, progress=_BuildReporter(bar, log))
    data = result.data
    for what, path, size, sha in (
        ("kernel", result.kernel, result.kernel_size, data["kernel"]["sha256"]),
        ("initramfs", result.initramfs, result.initramfs_size, data["initramfs"]["sha256"]),
    ):
        click.echo(f"{what:<10} {path}  {size:,} bytes  sha256:{sha}")
    click.echo(f"{'manifest':<10} {result.manifest}")
    kinfo, uinfo = data["kernel"], data["userland"]
    click.echo(
        f"contents:  kernel {kinfo['release']} with {len(kinfo['modules'])} modules; "
        f"Python {uinfo['python_version']} (pyc by {uinfo['pyc']}); "
        + (f"qemu-img ({_mib(uinfo['qemu_img_bytes'])} with its libraries); " if qemu_img else "")
        + f"{_mib(result.uncompressed_size)} unpacked"
    )
    budget = "within" if result.within_budget else "OVER"
    reused = f" (from the cache: {', '.join(result.cached)})" if result.cached else ""
    click.echo(
        f"total:     {_mib(result.total_size)}, {budget} the {_mib(SIZE_BUDGET)} budget; "
        f"built in {result.seconds:.1f} s{reused}"
    )
    if result.agent == "placeholder":
        click.echo(
            "warning: pxeforge.agent is not installed; the image runs a placeholder agent",
            err=True,
        )
