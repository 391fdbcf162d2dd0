"""Block devices, their partitions, and the root device choice (Ironic's root device hints).

Theory of operation: `list_disks` reads ``/sys/block`` under ``root`` (``/`` in the ramdisk, a
fake tree in tests) with the inventory's reader (`inventory.disk_entry`: size, model, vendor,
serial, WWN, rotational from sysfs and udev), skipping loop, RAM, optical and floppy devices
unless ``only`` names the devices to consider (tests pick their own loop devices). Partitions
come from the disk's sysfs children (``<disk>/<part>/partition``, ``start``, ``size``).

`parse_hints` checks a node's ``properties.root_device`` (ironic-lib's hint syntax, reduced):

* ``size``: GiB as an integer, or a string with an operator: ``">= 100"``, ``"<= 100"``,
  ``"== 100"``, ``"!= 100"``, ``"> 100"``, ``"< 100"`` (a disk's size in GiB is rounded down);
* ``name``: ``/dev/sda`` or ``sda`` (also matches the disk's ``/dev/disk/by-path`` name);
* ``serial``, ``wwn``, ``wwn_with_extension``, ``wwn_vendor_extension``, ``model``,
  ``vendor``, ``hctl``, ``by_path``: strings, compared without case and surrounding blanks;
  ``"s== x"``/``"s!= x"`` spell equality and inequality, ``"<in> x"`` a substring;
* ``rotational``: a boolean (or ``"true"``/``"false"``).

`choose_root_device` is docs/agent-protocol.md's rule: the **smallest** disk of at least
``min_size`` (4 GiB, IPA's minimum) matching every hint, ties broken by name; none →
`DeviceNotFound` listing what was there.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pxeforge.agent.errors import DeviceNotFound
from pxeforge.agent.inventory import SKIP_DISKS, disk_entry

__all__ = [
    "GIB",
    "MIN_ROOT_SIZE",
    "Disk",
    "DiskScope",
    "Hint",
    "Partition",
    "choose_root_device",
    "human_size",
    "list_disks",
    "matches",
    "parse_hints",
    "partitions",
]

GIB: Final = 1024**3
MIN_ROOT_SIZE: Final = 4 * GIB
"""IPA's smallest root device: smaller disks (USB sticks, card readers) are never chosen."""

_STRING_HINTS: Final = frozenset(
    {
        "serial",
        "wwn",
        "wwn_with_extension",
        "wwn_vendor_extension",
        "model",
        "vendor",
        "hctl",
        "by_path",
    }
)
_OPERATORS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "==": operator.eq, "!=": operator.ne, ">=": operator.ge, "<=": operator.le,
    ">": operator.gt, "<": operator.lt,
}  # fmt: skip
_SIZE: Final = re.compile(r"^\s*(==|!=|>=|<=|>|<)?\s*(\d+)\s*$")


@dataclass(frozen=True, slots=True)
class Partition:
    name: str  # /dev/sda1
    start: int  # bytes from the disk's start
    size: int  # bytes


@dataclass(frozen=True, slots=True)
class Disk:
    name: str  # /dev/sda
    sysname: str  # sda (the /sys/block entry)
    size: int  # bytes
    model: str = ""
    vendor: str | None = None
    serial: str | None = None
    wwn: str | None = None
    wwn_with_extension: str | None = None
    wwn_vendor_extension: str | None = None
    rotational: bool = False
    hctl: str | None = None
    by_path: str | None = None
    block_size: int = 512  # logical sector size: partition tables count in these

    def describe(self) -> str:
        facts = [human_size(self.size)]
        facts += [f"{k} {v}" for k, v in (("model", self.model), ("serial", self.serial),
                                           ("wwn", self.wwn)) if v]  # fmt: skip
        return f"{self.name} ({', '.join(facts)})"


def human_size(n: int) -> str:
    """``20.0 GiB`` / ``64.0 MiB``."""
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / 1024 / 1024:.1f} MiB"


@dataclass(frozen=True, slots=True)
class DiskScope:
    """Which disks the agent works on: the /sys tree under ``root``, optionally ``only``
    some /sys/block names (tests), and the smallest root device (``min_root_size``)."""

    root: Path = Path("/")
    only: frozenset[str] | None = None
    min_root_size: int = MIN_ROOT_SIZE

    def disks(self) -> list[Disk]:
        return list_disks(self.root, only=self.only)

    def partitions(self, disk: Disk) -> list[Partition]:
        return partitions(self.root, disk)

    def read_only(self, disk: Disk) -> bool:
        return _read_int(self.root / "sys/block" / disk.sysname / "ro") == 1


def _dev_name(sysname: str) -> str:
    return "/dev/" + sysname.replace("!", "/")  # cciss!c0d0 is /dev/cciss/c0d0


def list_disks(root: Path | str = "/", *, only: Collection[str] | None = None) -> list[Disk]:
    """The machine's disks, by name; ``only``: consider just these /sys/block names."""
    base = Path(root) / "sys/block"
    try:
        entries = sorted(base.iterdir(), key=lambda p: p.name)
    except OSError:
        return []
    disks = []
    for entry in entries:
        if only is not None:
            if entry.name not in only:
                continue
        elif SKIP_DISKS.match(entry.name):
            continue
        info = disk_entry(Path(root), entry)
        if info is None:
            continue
        disks.append(
            Disk(
                name=_dev_name(entry.name),
                sysname=entry.name,
                size=int(info["size"]),
                model=str(info.get("model") or ""),
                vendor=info.get("vendor"),
                serial=info.get("serial"),
                wwn=info.get("wwn"),
                wwn_with_extension=info.get("wwn_with_extension"),
                wwn_vendor_extension=info.get("wwn_vendor_extension"),
                rotational=bool(info.get("rotational")),
                hctl=info.get("hctl"),
                by_path=info.get("by_path"),
                block_size=int(info.get("logical_sectors") or 512),
            )
        )
    return disks


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def partitions(root: Path | str, disk: Disk) -> list[Partition]:
    """The partitions the kernel knows on ``disk`` (sysfs), by start."""
    base = Path(root) / "sys/block" / disk.sysname
    found = []
    try:
        children = list(base.iterdir())
    except OSError:
        return []
    for child in children:
        if not (child / "partition").exists():
            continue
        start, size = _read_int(child / "start"), _read_int(child / "size")
        if start is None or size is None:
            continue
        found.append(Partition(_dev_name(child.name), start * 512, size * 512))
    return sorted(found, key=lambda p: (p.start, p.name))


# ---- root device hints ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hint:
    """One parsed hint: ``field``, an operator name, and the value compared to."""

    field: str
    op: str
    value: Any

    def test(self, disk: Disk) -> bool:
        if self.field == "size":
            return bool(_OPERATORS[self.op](disk.size // GIB, self.value))
        if self.field == "rotational":
            return disk.rotational is self.value
        if self.field == "name":
            names = {disk.name, disk.by_path}
            return self.value in names
        have = getattr(disk, self.field)
        have = "" if have is None else str(have).strip().lower()
        if self.op == "<in>":
            return bool(have) and self.value in have
        equal = have == self.value
        return equal if self.op == "s==" else not equal


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"root device hint {name}: {value!r} is not a boolean")


def parse_hints(hints: dict[str, Any] | None) -> list[Hint]:
    """Check and parse root device hints; ValueError naming the bad one."""
    if not hints:
        return []
    if not isinstance(hints, dict):
        raise ValueError(f"root device hints must be an object, not {type(hints).__name__}")
    out = []
    for name, value in sorted(hints.items()):
        if name == "size":
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise ValueError(f"root device hint size: {value!r} is not a size in GiB")
            m = _SIZE.match(str(value))
            if m is None:
                raise ValueError(
                    f"root device hint size: {value!r} is not GiB with an optional operator "
                    "(==, !=, >=, <=, >, <)"
                )
            out.append(Hint("size", m.group(1) or "==", int(m.group(2))))
        elif name == "rotational":
            out.append(Hint("rotational", "==", _bool(name, value)))
        elif name == "name":
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"root device hint name: {value!r} is not a device name")
            text = value.strip()
            out.append(Hint("name", "==", text if text.startswith("/") else "/dev/" + text))
        elif name in _STRING_HINTS:
            if not isinstance(value, str | int):
                raise ValueError(f"root device hint {name}: {value!r} is not a string")
            text = str(value).strip()
            op = "s=="
            for prefix in ("s==", "s!=", "<in>"):
                if text.startswith(prefix):
                    op, text = prefix, text[len(prefix) :].strip()
                    break
            out.append(Hint(name, op, text.lower()))
        else:
            known = ", ".join(sorted({"size", "rotational", "name", *_STRING_HINTS}))
            raise ValueError(f"unknown root device hint {name!r} (known: {known})")
    return out


def matches(disk: Disk, hints: Iterable[Hint]) -> bool:
    return all(h.test(disk) for h in hints)


def choose_root_device(
    disks: Iterable[Disk],
    hints: dict[str, Any] | None = None,
    *,
    min_size: int = MIN_ROOT_SIZE,
) -> Disk:
    """The smallest disk of at least ``min_size`` bytes matching every hint."""
    parsed = parse_hints(hints)
    disks = list(disks)
    candidates = [d for d in disks if d.size >= min_size and matches(d, parsed)]
    if not candidates:
        seen = "; ".join(d.describe() for d in disks) or "none"
        wanted = f" matching the root device hints {hints}" if hints else ""
        raise DeviceNotFound(
            f"no disk of at least {human_size(min_size)}{wanted}; disks found: {seen}"
        )
    return min(candidates, key=lambda d: (d.size, d.name))
