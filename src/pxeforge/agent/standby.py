"""The ``standby`` extension: write the image, sync, reboot or power off.

Theory of operation (docs/agent-protocol.md, "Commands"):

* ``standby.prepare_image`` (async): `image.parse_image_info` checks ``image_info`` and
  `disks.parse_hints` the optional ``root_device_hints`` before the command starts (400 when
  bad); the command then picks the root device (`disks.choose_root_device` over the
  `DiskScope`) and writes the image (`image.write_image`), reporting
  ``"prepare_image: 120.0/512.0 MiB written (23 %)"``-style progress: ``downloaded`` while a
  raw image that fits the scratch budget (or a qcow2 image) comes into RAM to be checked
  before the disk is touched, ``written`` while it goes to the disk (straight from the
  network when streamed), ``converted`` (qcow2), ``verified`` while it is read back.
* ``standby.sync`` (sync): ``sync(2)``.
* ``standby.run_image`` / ``standby.power_off`` (async): sync, wait `POWER_GRACE` so the
  answer and a heartbeat can leave, then the ``power`` action — by default `power_action`:
  busybox ``reboot -f`` / ``poweroff -f`` (the ``reboot(2)`` call, no init to ask), else
  ``/proc/sysrq-trigger`` (``b`` / ``o``). Tests pass their own action.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from pxeforge.agent.commands import Command, Params, Progress
from pxeforge.agent.disks import DiskScope, choose_root_device, parse_hints
from pxeforge.agent.errors import CommandExecutionError, InvalidCommandParamsError
from pxeforge.agent.image import parse_image_info, write_image

__all__ = ["POWER_GRACE", "PowerAction", "power_action", "progress_text", "standby_commands"]

log = logging.getLogger("pxeforge.agent")

POWER_GRACE: Final = 1.0
"""Seconds between answering run_image/power_off and pulling the plug."""

PowerAction = Callable[[str], None]
"""``action("reboot")`` / ``action("poweroff")``: returns only if it failed (or in tests)."""

_SYSRQ: Final = {"reboot": "b", "poweroff": "o"}
_VERBS: Final = {"download": "downloaded", "write": "written", "convert": "converted",
                 "verify": "verified"}  # fmt: skip


def power_action(action: str, *, sysrq: Path = Path("/proc/sysrq-trigger")) -> None:
    """Reboot or power off now (busybox ``-f``, else sysrq); raises if both fail."""
    os.sync()
    reasons = []
    try:
        done = subprocess.run([action, "-f"], capture_output=True, timeout=30, check=False)
        reasons.append(f"{action} -f: exit {done.returncode} {done.stderr.decode().strip()}")
    except (OSError, subprocess.TimeoutExpired) as exc:
        reasons.append(f"{action} -f: {exc}")
    time.sleep(5)  # reboot(2) may take a moment; still here: try sysrq
    try:
        sysrq.write_text(_SYSRQ[action])
    except OSError as exc:
        reasons.append(f"{sysrq}: {exc}")
    time.sleep(5)
    raise CommandExecutionError(f"{action} did not happen: " + "; ".join(reasons))


def progress_text(phase: str, done: int, total: int | None) -> str:
    """``prepare_image: 120.0/512.0 MiB written (23 %)``."""
    verb = _VERBS.get(phase, phase)
    mib = done / 1024 / 1024
    if total:
        pct = done * 100 // total
        return f"prepare_image: {mib:.1f}/{total / 1024 / 1024:.1f} MiB {verb} ({pct} %)"
    return f"prepare_image: {mib:.1f} MiB {verb}"


def _check_prepare(params: Params) -> None:
    parse_image_info(params.get("image_info"))
    try:
        parse_hints(params.get("root_device_hints"))
    except ValueError as exc:
        raise InvalidCommandParamsError(str(exc)) from None


def standby_commands(
    scope: DiskScope,
    *,
    power: PowerAction = power_action,
    scratch_dir: str | None = None,
    grace: float = POWER_GRACE,
) -> list[Command]:
    """The standby commands over ``scope``'s disks, powering with ``power``."""

    def prepare_image(params: Params, progress: Progress) -> dict[str, Any]:
        info = parse_image_info(params["image_info"])
        disk = choose_root_device(
            scope.disks(), params.get("root_device_hints"), min_size=scope.min_root_size
        )
        log.info("image %s → %s", info.id, disk.describe())
        progress(f"prepare_image: the image goes to {disk.name}")
        return write_image(
            info,
            disk.name,
            progress=lambda phase, done, total: progress(progress_text(phase, done, total)),
            scratch_dir=scratch_dir,
        )

    def sync(params: Params, progress: Progress) -> dict[str, Any]:
        os.sync()
        return {}

    def powering(action: str) -> Callable[[Params, Progress], dict[str, Any]]:
        def run(params: Params, progress: Progress) -> dict[str, Any]:
            os.sync()
            progress(f"{action} in {grace:.0f} s")
            time.sleep(grace)
            log.info("%s now", action)
            power(action)
            return {}

        return run

    return [
        Command("standby.prepare_image", prepare_image, is_async=True, check=_check_prepare),
        Command("standby.sync", sync),
        Command("standby.run_image", powering("reboot"), is_async=True),
        Command("standby.power_off", powering("poweroff"), is_async=True),
    ]
