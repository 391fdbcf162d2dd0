"""The hardware inventory, in ironic-python-agent's JSON shape, from /proc, /sys and udev.

Theory of operation: `collect` reads only files under ``root`` (``/`` in the ramdisk, a fake
tree in tests), so the same code is tested against a tree built in a temporary directory and
against the real host. Nothing here runs a program. Sources, per section (field names are
IPA's, see ``ironic_python_agent/hardware.py``):

* ``cpu``: ``/proc/cpuinfo`` (``processor`` entries, ``model name``, ``cpu MHz``, ``flags`` or
  ``Features``, distinct ``physical id``), the architecture from ``/proc/sys/kernel/arch``;
* ``memory``: ``total`` is ``MemTotal`` of ``/proc/meminfo`` in bytes; ``physical_mb`` counts
  the online blocks of ``/sys/devices/system/memory`` (what the firmware gave the kernel,
  before the kernel's own reservations), else ``total`` rounded up to 128 MiB;
* ``disks``: ``/sys/block`` without loop, ram, zram, floppy and optical devices; sizes from
  ``size`` (512-byte units, always: ``block/genhd.c``), udev's ``/run/udev/data/b<maj>:<min>``
  for serial, WWN, ``by_path`` and bus when present, else sysfs;
* ``interfaces``: Ethernet-type (``type`` 1) entries of ``/sys/class/net``, carrier from
  ``carrier``, PCI/virtio vendor and product from ``device/vendor``/``device/device``, the
  IPv4 address from the ramdisk's lease file (``/run/pxeforge/network``) or, on the live host,
  ``SIOCGIFADDR``;
* ``system_vendor``: ``/sys/class/dmi/id``; ``boot``: UEFI when ``/sys/firmware/efi`` exists.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import socket
import struct
from pathlib import Path
from typing import Any, Final

__all__ = ["SKIP_DISKS", "collect", "disk_entry", "override_mac", "read_network_file"]

SKIP_DISKS: Final = re.compile(r"^(loop|ram|zram|fd|sr|nbd|md\d+p)")
_HCTL: Final = re.compile(r"^\d+:\d+:\d+:\d+$")
_ARPHRD_ETHER: Final = "1"
_SIOCGIFADDR: Final = 0x8915
_MIB: Final = 1024 * 1024
_NETWORK_FILE: Final = "run/pxeforge/network"


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


def _int(text: str | None, base: int = 10) -> int | None:
    if text is None:
        return None
    try:
        return int(text, base)
    except ValueError:
        return None


# ---- cpu and memory -------------------------------------------------------------------------


def _cpuinfo(root: Path) -> list[dict[str, str]]:
    text = _read(root / "proc/cpuinfo") or ""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
            current = {}
            continue
        key, _, value = line.partition(":")
        current[key.strip()] = value.strip()
    if current:
        blocks.append(current)
    return blocks


def _cpu(root: Path) -> dict[str, Any]:
    blocks = _cpuinfo(root)
    processors = [b for b in blocks if "processor" in b]
    first = processors[0] if processors else (blocks[0] if blocks else {})
    common = {k: v for b in blocks for k, v in b.items()}  # arm: model/Hardware lines apart
    arch = _read(root / "proc/sys/kernel/arch") or os.uname().machine
    flags_text = first.get("flags") or first.get("Features") or ""
    sockets = {b["physical id"] for b in processors if "physical id" in b}
    frequency = first.get("cpu MHz")
    if frequency is None:
        max_khz = _int(_read(root / "sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq"))
        frequency = str(max_khz / 1000) if max_khz else None
    return {
        "model_name": first.get("model name") or common.get("Model") or common.get("Hardware"),
        "frequency": frequency,
        "count": len(processors) or 1,
        "architecture": arch,
        "flags": flags_text.split(),
        "socket_count": len(sockets) or 1,
    }


def _memory(root: Path) -> dict[str, Any]:
    total = 0
    for line in (_read(root / "proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            total = int(line.split()[1]) * 1024
    physical: int | None = None
    base = root / "sys/devices/system/memory"
    block = _int(_read(base / "block_size_bytes"), 16)
    if block:
        online = 0
        with contextlib.suppress(OSError):
            for entry in base.iterdir():
                if entry.name.startswith("memory") and _read(entry / "online") == "1":
                    online += 1
        if online:
            physical = online * block // _MIB
    if physical is None or physical * _MIB < total:
        step = 128
        physical = -(-total // (step * _MIB)) * step
    return {"total": total, "physical_mb": physical}


# ---- disks ----------------------------------------------------------------------------------


def _udev(root: Path, kind: str, devnum: str | None) -> dict[str, str]:
    """udev's database entry (``E:KEY=VALUE`` lines) for a ``b``lock or ``c``har device."""
    if not devnum:
        return {}
    text = _read(root / "run/udev/data" / f"{kind}{devnum}")
    out: dict[str, str] = {}
    for line in (text or "").splitlines():
        if line.startswith("E:"):
            key, _, value = line[2:].partition("=")
            out[key] = value
    return out


def _tran(name: str, udev: dict[str, str], device: Path) -> str | None:
    if name.startswith("nvme"):
        return "nvme"
    bus = udev.get("ID_BUS")
    if bus == "ata":
        return "sata"
    if bus in ("usb", "scsi"):
        return bus
    if name.startswith("vd"):
        return "virtio"
    try:
        real = str(device.resolve())
    except OSError:
        return None
    for marker, tran in (("/usb", "usb"), ("/ata", "sata"), ("/virtio", "virtio")):
        if marker in real:
            return tran
    return None


def disk_entry(root: Path, entry: Path) -> dict[str, Any] | None:
    """IPA's disk record for ``/sys/block/<name>`` (``entry``); None for an empty device."""
    name = entry.name
    sectors = _int(_read(entry / "size"))
    if not sectors:
        return None  # empty card readers, detached devices
    device = entry / "device"
    udev = _udev(root, "b", _read(entry / "dev"))
    hctl = None
    with contextlib.suppress(OSError):
        target = os.readlink(device)
        if _HCTL.match(os.path.basename(target)):
            hctl = os.path.basename(target)
    serial = (
        udev.get("ID_SERIAL_SHORT")
        or _read(device / "serial")
        or _read(entry / "serial")
        or udev.get("ID_SERIAL")
    )
    wwn = udev.get("ID_WWN") or _read(entry / "wwid") or _read(device / "wwid")
    model = udev.get("ID_MODEL") or _read(device / "model")
    vendor = udev.get("ID_VENDOR") or _read(device / "vendor")
    path_id = udev.get("ID_PATH")
    rotational = _read(entry / "queue/rotational")
    return {
        "name": f"/dev/{name}",
        "model": model or "",
        "size": sectors * 512,
        "rotational": rotational == "1",
        "wwn": wwn,
        "serial": serial,
        "vendor": vendor,
        "wwn_with_extension": udev.get("ID_WWN_WITH_EXTENSION") or wwn,
        "wwn_vendor_extension": udev.get("ID_WWN_VENDOR_EXTENSION"),
        "hctl": hctl,
        "by_path": f"/dev/disk/by-path/{path_id}" if path_id else None,
        "logical_sectors": _int(_read(entry / "queue/logical_block_size")),
        "physical_sectors": _int(_read(entry / "queue/physical_block_size")),
        "tran": _tran(name, udev, device),
        "uuid": udev.get("ID_PART_TABLE_UUID"),
    }


def _disks(root: Path) -> list[dict[str, Any]]:
    base = root / "sys/block"
    try:
        entries = sorted(base.iterdir(), key=lambda p: p.name)
    except OSError:
        return []
    disks = []
    for entry in entries:
        if SKIP_DISKS.match(entry.name):
            continue
        disk = disk_entry(root, entry)
        if disk is not None:
            disks.append(disk)
    return disks


# ---- network --------------------------------------------------------------------------------


def read_network_file(root: Path) -> dict[str, str]:
    """The ramdisk's lease (``/run/pxeforge/network``, ``key=value`` lines); {} if absent."""
    out: dict[str, str] = {}
    for line in (_read(root / _NETWORK_FILE) or "").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _ioctl_ipv4(name: str) -> str | None:
    """The interface's IPv4 address on the live system (``SIOCGIFADDR``); None if none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            packed = fcntl.ioctl(
                sock.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15])
            )
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


def _interfaces(root: Path, live: bool) -> list[dict[str, Any]]:
    base = root / "sys/class/net"
    lease = read_network_file(root)
    try:
        entries = sorted(base.iterdir(), key=lambda p: p.name)
    except OSError:
        return []
    out = []
    for entry in entries:
        if entry.name == "lo" or _read(entry / "type") != _ARPHRD_ETHER:
            continue
        mac = (_read(entry / "address") or "").lower()
        if not mac or mac == "00:00:00:00:00:00":
            continue
        ip = None
        if lease.get("interface") == entry.name and lease.get("ip"):
            ip = lease["ip"]
        elif live:
            ip = _ioctl_ipv4(entry.name)
        out.append(
            {
                "name": entry.name,
                "mac_address": mac,
                "ipv4_address": ip,
                "ipv6_address": None,
                "has_carrier": _read(entry / "carrier") == "1",
                "lldp": None,
                "vendor": _read(entry / "device/vendor"),
                "product": _read(entry / "device/device"),
                "client_id": None,
                "biosdevname": None,
            }
        )
    return out


# ---- system ---------------------------------------------------------------------------------


def _system_vendor(root: Path) -> dict[str, Any]:
    dmi = root / "sys/class/dmi/id"
    return {
        "product_name": _read(dmi / "product_name"),
        "serial_number": _read(dmi / "product_serial"),
        "manufacturer": _read(dmi / "sys_vendor"),
        "firmware": {
            "vendor": _read(dmi / "bios_vendor"),
            "version": _read(dmi / "bios_version"),
            "build_date": _read(dmi / "bios_date"),
        },
    }


def collect(root: Path | str = "/", *, bootif: str | None = None) -> dict[str, Any]:
    """The inventory of the machine whose /proc and /sys are under ``root``.

    ``bootif``: the boot NIC's MAC (from ``BOOTIF``), reported as ``boot.pxe_interface``;
    without it, the NIC named in the ramdisk's lease file.
    """
    root = Path(root)
    live = root.resolve() == Path("/")
    interfaces = _interfaces(root, live)
    pxe = bootif or read_network_file(root).get("mac")
    hostname = _read(root / "proc/sys/kernel/hostname") or (socket.gethostname() if live else None)
    return {
        "cpu": _cpu(root),
        "memory": _memory(root),
        "disks": _disks(root),
        "interfaces": interfaces,
        "system_vendor": _system_vendor(root),
        "boot": {
            "current_boot_mode": "uefi" if (root / "sys/firmware/efi").is_dir() else "bios",
            "pxe_interface": pxe,
        },
        "bmc_address": None,
        "bmc_v6address": None,
        "hostname": hostname,
    }


def override_mac(inventory: dict[str, Any], mac: str) -> dict[str, Any]:
    """Present the boot NIC (else the first NIC) as having ``mac`` (tests on a shared host)."""
    interfaces = inventory["interfaces"]
    if not interfaces:
        raise ValueError("no network interface to give the MAC to")
    pxe = inventory["boot"].get("pxe_interface")
    chosen = next((i for i in interfaces if i["mac_address"] == pxe), interfaces[0])
    chosen["mac_address"] = mac
    inventory["boot"]["pxe_interface"] = mac
    return inventory
