"""Facts about local network interfaces, read with two ioctls (no subprocess, no parsing)."""

from __future__ import annotations

import fcntl
import socket
import struct
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from pxeforge.errors import StartupError

__all__ = ["interface_names", "interface_network", "require_interface"]

_SIOCGIFADDR = 0x8915
_SIOCGIFNETMASK = 0x891B


def interface_names() -> list[str]:
    try:
        return sorted(p.name for p in Path("/sys/class/net").iterdir())
    except OSError:
        return []


def require_interface(name: str) -> None:
    if not Path("/sys/class/net", name).exists() or "/" in name:
        have = ", ".join(interface_names()) or "none"
        raise StartupError(f"no network interface {name!r} (this host has: {have})")


def _ioctl_ipv4(sock: socket.socket, request: int, name: str) -> IPv4Address:
    packed = struct.pack("256s", name.encode()[:15])
    result = fcntl.ioctl(sock.fileno(), request, packed)
    return IPv4Address(result[20:24])


def interface_network(name: str) -> tuple[IPv4Address, IPv4Network] | None:
    """The interface's first IPv4 address and its network, or None when it has none."""
    require_interface(name)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            address = _ioctl_ipv4(sock, _SIOCGIFADDR, name)
            netmask = _ioctl_ipv4(sock, _SIOCGIFNETMASK, name)
        except OSError:
            return None
    return address, IPv4Network(f"{address}/{netmask}", strict=False)
