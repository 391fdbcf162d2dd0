"""The pxeforge agent: runs inside the deploy ramdisk, standard library only.

Modules (one concern each):

config.py     the kernel command line (``/proc/cmdline``) → `AgentConfig`
inventory.py  the hardware inventory in ironic-python-agent's JSON, from /proc, /sys and udev
client.py     the pxeforge API as the agent sees it: lookup, heartbeat, continue_inspection
heartbeat.py  Ironic's heartbeat interval and the heartbeat loop
__main__.py   ``python3 -m pxeforge.agent``: look up, heartbeat, inspect

The ramdisk's ``pxeforge/__init__.py`` has only ``__version__``: nothing here may import the
server's modules (or anything outside the standard library).
"""

from __future__ import annotations

__all__ = ["AGENT_VERSION"]

AGENT_VERSION = "pxeforge-agent 0.1"
"""Sent as ``agent_version`` in heartbeats."""
