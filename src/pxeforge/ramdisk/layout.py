"""The layout file: how `pack` rebuilds the image that `unpack` took apart.

Theory of operation
-------------------
A directory tree only holds the *result* of extracting an initramfs: which archive each file
came from, in which order, with which compression and padding, is gone. `unpack` therefore
writes ``DIR/.pxeforge-ramdisk.json``, a `Layout`: per stream its compression (and level when
known) and the zero bytes around it, per archive its header format, block size (512 when it was
padded like GNU cpio's output, else 4), extra zero padding and its member names as spelled and
ordered in the archive. A member that a later archive replaces (the early archive's ``.``,
usually) is kept whole in ``shadowed`` (metadata, and contents up to 64 KiB), because the tree
on disk has only the later one. The file is plain JSON; names that are not UTF-8 survive as
``\\udcXX`` escapes (``os.fsdecode``'s surrogates).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from pxeforge.errors import AssetError
from pxeforge.ramdisk.compress import Compression
from pxeforge.ramdisk.cpio import Entry, Format
from pxeforge.ramdisk.image import Image

__all__ = ["LAYOUT_NAME", "ArchiveLayout", "Layout", "StreamLayout", "read_layout"]

LAYOUT_NAME: Final = ".pxeforge-ramdisk.json"
_LAYOUT_KEY: Final = "pxeforge-ramdisk"
_LAYOUT_VERSION: Final = 1
_SHADOW_DATA_MAX: Final = 64 << 10  # shadowed file contents kept in the layout up to this size
_BLOCK: Final = 512


def _entry_json(e: Entry) -> dict[str, Any]:
    return {
        "mode": e.mode,
        "uid": e.uid,
        "gid": e.gid,
        "mtime": e.mtime,
        "rdev": [e.rdev_major, e.rdev_minor],
        "data": base64.b64encode(e.data).decode("ascii"),
    }


def _entry_from_json(name: str, raw: Any) -> Entry:
    try:
        rdev = raw["rdev"]
        return Entry(
            name=name,
            mode=int(raw["mode"]),
            data=base64.b64decode(raw["data"], validate=True),
            uid=int(raw["uid"]),
            gid=int(raw["gid"]),
            mtime=int(raw["mtime"]),
            rdev_major=int(rdev[0]),
            rdev_minor=int(rdev[1]),
        )
    except (KeyError, IndexError, TypeError, ValueError, binascii.Error) as exc:
        raise AssetError(f"layout file: bad shadowed entry {name!r}: {exc}") from None


@dataclass(frozen=True, slots=True)
class ArchiveLayout:
    format: Format
    block_size: int
    padding: int
    names: tuple[str, ...]  # member names as spelled in the archive, in archive order
    shadowed: Mapping[str, Entry] = field(default_factory=dict)  # name → entry a later hides


@dataclass(frozen=True, slots=True)
class StreamLayout:
    compression: Compression
    level: int | None
    lead: int
    padding: int
    archives: tuple[ArchiveLayout, ...]


@dataclass(frozen=True, slots=True)
class Layout:
    """The shape of an unpacked image, kept in ``DIR/.pxeforge-ramdisk.json`` by `unpack` so
    that `pack` rebuilds the same streams and archives."""

    streams: tuple[StreamLayout, ...]
    leading: int = 0

    @classmethod
    def single(
        cls, compression: Compression = Compression.GZIP, level: int | None = None
    ) -> Layout:
        """One archive in one stream: what ``find . | cpio -H newc -o | gzip`` makes."""
        return cls(
            (StreamLayout(compression, level, 0, 0, (ArchiveLayout(Format.NEWC, 512, 0, ()),)),)
        )

    @classmethod
    def of_image(cls, image: Image, segment: int | None = None) -> Layout:
        """The layout of a whole image, or of one of its archives alone."""
        if segment is not None:
            arch = image.archive(segment)
            s = image.streams[arch.stream]
            one = ArchiveLayout(
                arch.format, arch.block_size, 0, tuple(e.name for e in arch.entries)
            )
            return cls((StreamLayout(s.compression, s.level, 0, 0, (one,)),))
        archives = image.archives
        last: dict[str, int] = {}
        for a in archives:
            for e in a.entries:
                last[e.path] = a.index
        streams: list[StreamLayout] = []
        for s in image.streams:
            alayouts: list[ArchiveLayout] = []
            for a in s.archives:
                shadowed = {
                    e.name: e
                    for e in a.entries
                    if last[e.path] > a.index and len(e.data) <= _SHADOW_DATA_MAX
                }
                names = tuple(e.name for e in a.entries)
                alayouts.append(ArchiveLayout(a.format, a.block_size, a.padding, names, shadowed))
            streams.append(StreamLayout(s.compression, s.level, s.lead, s.zeros, tuple(alayouts)))
        return cls(tuple(streams), image.leading)

    def to_json(self) -> str:
        doc = {
            _LAYOUT_KEY: _LAYOUT_VERSION,
            "leading": self.leading,
            "streams": [
                {
                    "compression": s.compression.value,
                    "level": s.level,
                    "lead": s.lead,
                    "padding": s.padding,
                    "archives": [
                        {
                            "format": a.format.value,
                            "block_size": a.block_size,
                            "padding": a.padding,
                            "names": list(a.names),
                            "shadowed": {n: _entry_json(e) for n, e in a.shadowed.items()},
                        }
                        for a in s.archives
                    ],
                }
                for s in self.streams
            ],
        }
        return json.dumps(doc, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Layout:
        """Parse a layout file; `AssetError` says what is wrong with it."""
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise AssetError(f"layout file is not JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get(_LAYOUT_KEY) != _LAYOUT_VERSION:
            raise AssetError(f"not a version {_LAYOUT_VERSION} pxeforge ramdisk layout file")
        try:
            streams: list[StreamLayout] = []
            for s in doc["streams"]:
                archives: list[ArchiveLayout] = []
                for a in s["archives"]:
                    names = tuple(str(n) for n in a["names"])
                    shadowed = {
                        str(n): _entry_from_json(str(n), raw)
                        for n, raw in dict(a.get("shadowed", {})).items()
                    }
                    block = int(a["block_size"])
                    if block not in (4, _BLOCK) or int(a["padding"]) < 0:
                        raise ValueError(f"block size {block} / padding {a['padding']}")
                    archives.append(
                        ArchiveLayout(
                            Format(a["format"]), block, int(a["padding"]), names, shadowed
                        )
                    )
                level = s.get("level")
                streams.append(
                    StreamLayout(
                        Compression(s["compression"]),
                        None if level is None else int(level),
                        int(s.get("lead", 0)),
                        int(s.get("padding", 0)),
                        tuple(archives),
                    )
                )
            layout = cls(tuple(streams), int(doc.get("leading", 0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise AssetError(f"layout file is malformed: {exc}") from None
        if not layout.streams or any(not s.archives for s in layout.streams):
            raise AssetError("layout file is malformed: a stream without archives")
        if min(layout.leading, *(min(s.lead, s.padding) for s in layout.streams)) < 0:
            raise AssetError("layout file is malformed: negative padding")
        return layout


def read_layout(directory: Path) -> Layout | None:
    """The layout `unpack` left in ``directory``, or None."""
    path = Path(directory) / LAYOUT_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AssetError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise AssetError(f"{path} is not UTF-8 text") from None
    return Layout.from_json(text)
