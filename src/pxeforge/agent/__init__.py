"""The pxeforge agent: runs inside the deploy ramdisk, standard library only.

Modules (one concern each):

config.py     the kernel command line (``/proc/cmdline``) → `AgentConfig`
inventory.py  the hardware inventory in ironic-python-agent's JSON, from /proc, /sys and udev
client.py     the pxeforge API as the agent sees it: lookup, heartbeat, continue_inspection
heartbeat.py  Ironic's heartbeat interval and the heartbeat loop (faster while a command runs)
errors.py     the agent's errors in IPA's shapes (command errors, API error bodies)
commands.py   the command registry, results in IPA's serialize() shape, the runner
server.py     the command API on port 9999 (docs/agent-protocol.md)
disks.py      disks from /sys/block, root device hints, the root device choice
parttable.py  MBR/GPT partitions read from the disk itself
blockio.py    raw disk I/O: open, size, write, zero, drop cache, hash back
qcow2.py      a qcow2 reader converting an image to a raw disk
image.py      prepare_image's work: download, check, write, verify
standby.py    the standby commands: prepare_image, sync, run_image, power_off
clean.py      the clean commands: get_clean_steps, erase_devices(_metadata)
__main__.py   ``python3 -m pxeforge.agent``: look up, heartbeat, inspect or serve commands

The ramdisk's ``pxeforge/__init__.py`` has only ``__version__``: nothing here may import the
server's modules (or anything outside the standard library).
"""

from __future__ import annotations

__all__ = ["AGENT_VERSION"]

AGENT_VERSION = "pxeforge-agent 0.1"
"""Sent as ``agent_version`` in heartbeats."""
