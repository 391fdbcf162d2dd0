"""What inspection makes of an agent's inventory: node properties, plugin data, new ports.

Theory of operation (Ironic's in-band inspection hooks ``validate_interfaces``,
``ports``, ``architecture``, ``memory``, ``cpu_capabilities`` and ``root_device``, reduced):

* ``cpus`` = ``cpu.count``, ``cpu_arch`` = ``cpu.architecture``, ``memory_mb`` =
  ``memory.physical_mb`` (else ``total`` in MiB);
* ``local_gb``: the root disk is the smallest disk of at least 4 GiB (IPA's default root
  device), and ``local_gb`` its size in GiB minus one (Ironic's ``disk_partitioning_spacing``:
  room for the partition table); no such disk → 0;
* ports: Ironic's default ``add_ports = pxe`` — only the NIC the machine booted from
  (``boot.pxe_interface``, a MAC or ``01-aa-bb-…``); when the agent could not tell, every
  NIC that has an IPv4 address.

Pure functions: no store, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

__all__ = ["MIN_ROOT_DISK", "inventory_macs", "plugin_data", "port_macs", "properties"]

GIB: Final = 1024**3
MIN_ROOT_DISK: Final = 4 * GIB


def _mac(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    text = value.strip().lower().replace("-", ":")
    if len(text) == 20 and text.startswith("01:"):
        text = text[3:]
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        return None
    try:
        bytes.fromhex("".join(parts))
    except ValueError:
        return None
    return text


def inventory_macs(inventory: Mapping[str, Any]) -> list[str]:
    """The valid MACs of ``inventory.interfaces`` (normalized, in order, no duplicates)."""
    out: dict[str, None] = {}
    for iface in inventory.get("interfaces") or ():
        if isinstance(iface, Mapping):
            mac = _mac(iface.get("mac_address"))
            if mac:
                out[mac] = None
    return list(out)


def _root_disk(inventory: Mapping[str, Any]) -> Mapping[str, Any] | None:
    disks = [
        d
        for d in inventory.get("disks") or ()
        if isinstance(d, Mapping) and isinstance(d.get("size"), int) and d["size"] >= MIN_ROOT_DISK
    ]
    return min(disks, key=lambda d: int(d["size"])) if disks else None


def properties(inventory: Mapping[str, Any]) -> dict[str, Any]:
    """``cpus``, ``cpu_arch``, ``memory_mb``, ``local_gb`` found in ``inventory``."""
    out: dict[str, Any] = {}
    cpu = inventory.get("cpu")
    if isinstance(cpu, Mapping):
        if isinstance(cpu.get("count"), int):
            out["cpus"] = cpu["count"]
        if isinstance(cpu.get("architecture"), str) and cpu["architecture"]:
            out["cpu_arch"] = cpu["architecture"]
    memory = inventory.get("memory")
    if isinstance(memory, Mapping):
        if isinstance(memory.get("physical_mb"), int) and memory["physical_mb"] > 0:
            out["memory_mb"] = memory["physical_mb"]
        elif isinstance(memory.get("total"), int):
            out["memory_mb"] = memory["total"] // (1024 * 1024)
    root = _root_disk(inventory)
    out["local_gb"] = max(0, int(root["size"]) // GIB - 1) if root is not None else 0
    return out


def plugin_data(inventory: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Ironic's ``plugin_data``: what the agent sent besides the inventory, and our results."""
    data = dict(extra)
    data.update(properties(inventory))
    data["macs"] = inventory_macs(inventory)
    root = _root_disk(inventory)
    if root is not None:
        data["root_disk"] = dict(root)
    return data


def port_macs(inventory: Mapping[str, Any]) -> list[str]:
    """MACs that should be ports of the node (see the module docstring)."""
    boot = inventory.get("boot")
    pxe = _mac(boot.get("pxe_interface")) if isinstance(boot, Mapping) else None
    macs = inventory_macs(inventory)
    if pxe is not None:
        return [pxe] if pxe in macs else []
    return [
        m
        for iface in inventory.get("interfaces") or ()
        if isinstance(iface, Mapping) and iface.get("ipv4_address")
        for m in [_mac(iface.get("mac_address"))]
        if m
    ]
