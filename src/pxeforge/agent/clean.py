"""The ``clean`` extension: the clean steps the agent offers, and running one.

Theory of operation (ironic-python-agent's ``extensions/clean.py`` and the
``GenericHardwareManager`` steps, reduced to the two pxeforge needs):

* ``clean.get_clean_steps`` (sync) answers `STEPS` under ``GenericHardwareManager`` with the
  hardware manager version; Ironic sends that version back as ``clean_version`` with every
  step, and a different one fails the step with ``CleanVersionMismatch`` (the steps changed
  under a running cleaning: the conductor starts it over).
* ``clean.execute_clean_step`` (async) runs ``step["step"]`` and answers
  ``{"clean_result": …, "clean_step": step}``. An unknown step is refused at once (400).

Steps, over every disk the agent sees (`DiskScope`; read-only devices are skipped and
reported):

* ``erase_devices_metadata`` (priority 99) zeroes the first and last MiB of each disk and of
  each partition — where partition tables (MBR, both GPT copies), filesystem superblocks
  and RAID/LVM signatures live. Partitions are those the kernel lists (sysfs) and those the
  disk's own MBR/GPT lists (`parttable.read_partitions`: a kernel without the parsers, or a
  table it rejected, must not hide one). A region smaller than 2 MiB is zeroed whole.
  Partitions with a device node are zeroed through it (so its page cache cannot keep
  showing the old signatures), the others through the disk. Then the kernel is asked to
  re-read the (now empty) partition table (``BLKRRPART``; refused while a partition is in
  use, which is only logged).
* ``erase_devices`` (priority 0: manual cleaning only) zeroes every byte of every disk, in
  `ERASE_CHUNK` pieces so that progress can be reported.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from pxeforge.agent import blockio
from pxeforge.agent.commands import Command, Params, Progress
from pxeforge.agent.disks import Disk, DiskScope, human_size
from pxeforge.agent.errors import CleaningError, CleanVersionMismatch, InvalidCommandParamsError
from pxeforge.agent.parttable import read_partitions

__all__ = [
    "ERASE_CHUNK",
    "HARDWARE_MANAGER",
    "HARDWARE_MANAGER_VERSION",
    "METADATA_SPAN",
    "STEPS",
    "clean_commands",
    "erase_devices",
    "erase_devices_metadata",
    "metadata_ranges",
]

log = logging.getLogger("pxeforge.agent")

HARDWARE_MANAGER: Final = "GenericHardwareManager"
HARDWARE_MANAGER_VERSION: Final = {"generic_hardware_manager": "1.2"}
METADATA_SPAN: Final = 1024 * 1024
ERASE_CHUNK: Final = 64 * 1024 * 1024
_BLKRRPART: Final = 0x125F  # _IO(0x12, 95): re-read the partition table

STEPS: Final = (
    {"step": "erase_devices_metadata", "priority": 99, "interface": "deploy",
     "reboot_requested": False, "abortable": True},
    {"step": "erase_devices", "priority": 0, "interface": "deploy",
     "reboot_requested": False, "abortable": True},
)  # fmt: skip


def metadata_ranges(size: int, span: int = METADATA_SPAN) -> list[tuple[int, int]]:
    """``(offset, length)`` of the first and last ``span`` bytes of ``size`` (merged)."""
    if size <= 2 * span:
        return [(0, size)] if size > 0 else []
    return [(0, span), (size - span, span)]


def _zero_ranges(path: str, fd: int, ranges: list[tuple[int, int]]) -> None:
    try:
        for offset, length in ranges:
            blockio.zero_range(fd, offset, length)
        blockio.drop_cache(fd)
    except OSError as exc:
        raise CleaningError(f"zeroing {path} failed: {exc}") from None


def _open(path: str) -> int:
    try:
        return blockio.open_target(path)
    except OSError as exc:
        raise CleaningError(f"cannot open {path} for writing: {exc.strerror or exc}") from None


def _writable_disks(scope: DiskScope) -> tuple[list[Disk], list[str]]:
    disks, skipped = [], []
    for disk in scope.disks():
        if scope.read_only(disk):
            skipped.append(disk.name)
        else:
            disks.append(disk)
    return disks, skipped


def _table_partitions(disk: Disk) -> list[tuple[int, int]]:
    """The partitions the disk's own MBR/GPT lists (the kernel may not know them)."""
    fd = _open(disk.name)
    try:
        size = blockio.size_of(fd)
        return read_partitions(lambda offset, n: os.pread(fd, n, offset), size, disk.block_size)
    except OSError as exc:
        raise CleaningError(f"reading the partition table of {disk.name} failed: {exc}") from None
    finally:
        os.close(fd)


def erase_devices_metadata(scope: DiskScope, progress: Progress) -> dict[str, Any]:
    """Zero the metadata regions of every disk and partition (see the module docstring)."""
    disks, skipped = _writable_disks(scope)
    erased: dict[str, dict[str, Any]] = {}
    for number, disk in enumerate(disks, 1):
        progress(f"erase_devices_metadata: {disk.name} ({number}/{len(disks)})")
        known = scope.partitions(disk)
        parts = {(p.start, p.size) for p in known} | set(_table_partitions(disk))
        through_disk: list[tuple[int, int]] = []
        for start, size in sorted(parts):
            node = next((p.name for p in known if (p.start, p.size) == (start, size)), None)
            if node is not None and Path(node).exists():  # its own page cache: use its node
                fd = _open(node)
                try:
                    _zero_ranges(node, fd, metadata_ranges(size))
                finally:
                    os.close(fd)
            else:
                through_disk += [(start + o, n) for o, n in metadata_ranges(size)]
        fd = _open(disk.name)
        try:
            _zero_ranges(disk.name, fd, through_disk + metadata_ranges(blockio.size_of(fd)))
            try:
                fcntl.ioctl(fd, _BLKRRPART)
            except OSError as exc:
                log.info("%s: partition table not re-read: %s", disk.name, exc)
        finally:
            os.close(fd)
        erased[disk.name] = {"partitions": [list(p) for p in sorted(parts)]}
    return {"erased": erased, "skipped_read_only": skipped}


def erase_devices(scope: DiskScope, progress: Progress) -> dict[str, Any]:
    """Zero every byte of every disk, reporting progress per chunk."""
    disks, skipped = _writable_disks(scope)
    erased: dict[str, int] = {}
    for number, disk in enumerate(disks, 1):
        fd = _open(disk.name)
        try:
            size = blockio.size_of(fd)
            offset = 0
            while offset < size:
                n = min(ERASE_CHUNK, size - offset)
                try:
                    blockio.zero_range(fd, offset, n)
                except OSError as exc:
                    raise CleaningError(f"zeroing {disk.name} at {offset} failed: {exc}") from None
                offset += n
                progress(
                    f"erase_devices: {disk.name} ({number}/{len(disks)}) "
                    f"{human_size(offset)}/{human_size(size)} zeroed ({offset * 100 // size} %)"
                )
            with contextlib.suppress(OSError):
                fcntl.ioctl(fd, _BLKRRPART)
            try:
                blockio.drop_cache(fd)
            except OSError as exc:
                raise CleaningError(f"flushing {disk.name} failed: {exc}") from None
        finally:
            os.close(fd)
        erased[disk.name] = size
    return {"erased": erased, "skipped_read_only": skipped}


_STEP_FUNCTIONS: Final[dict[str, Callable[[DiskScope, Progress], dict[str, Any]]]] = {
    "erase_devices_metadata": erase_devices_metadata,
    "erase_devices": erase_devices,
}


def _check_step(params: Params) -> None:
    step = params.get("step")
    if not isinstance(step, dict) or not isinstance(step.get("step"), str):
        raise InvalidCommandParamsError("'step' must be a clean step object with a 'step' name")
    if step["step"] not in _STEP_FUNCTIONS:
        offered = ", ".join(_STEP_FUNCTIONS)
        raise InvalidCommandParamsError(f"unknown clean step {step['step']!r} "
                                        f"(this agent offers {offered})")  # fmt: skip


def clean_commands(scope: DiskScope) -> list[Command]:
    """``clean.get_clean_steps`` and ``clean.execute_clean_step`` over ``scope``'s disks."""

    def get_clean_steps(params: Params, progress: Progress) -> dict[str, Any]:
        return {
            "clean_steps": {HARDWARE_MANAGER: [dict(s) for s in STEPS]},
            "hardware_manager_version": dict(HARDWARE_MANAGER_VERSION),
        }

    def execute_clean_step(params: Params, progress: Progress) -> dict[str, Any]:
        step = params["step"]
        version = params.get("clean_version")
        if version and version != HARDWARE_MANAGER_VERSION:
            raise CleanVersionMismatch(
                f"the agent's hardware manager version is {HARDWARE_MANAGER_VERSION}, "
                f"cleaning started with {version}"
            )
        result = _STEP_FUNCTIONS[step["step"]](scope, progress)
        return {"clean_result": result, "clean_step": step}

    return [
        Command("clean.get_clean_steps", get_clean_steps),
        Command("clean.execute_clean_step", execute_clean_step, is_async=True, check=_check_step),
    ]
