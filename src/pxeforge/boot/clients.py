"""Clients seen on the wire: a bounded in-memory map the DHCP server fills and TFTP/HTTP read.

TFTP and HTTP requests carry only an IP address; the DHCP exchange tells us which MAC, arch and
UUID sit behind it. Entries are kept in LRU order up to ``capacity`` so a flood of fake MACs
cannot grow memory without bound.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from ipaddress import IPv4Address

from pxeforge.boot.machine import Machine

__all__ = ["ClientRegistry"]


class ClientRegistry:
    def __init__(self, capacity: int = 65536) -> None:
        self.capacity = capacity
        self._by_mac: OrderedDict[str, Machine] = OrderedDict()
        self._mac_by_ip: dict[IPv4Address, str] = {}

    def __len__(self) -> int:
        return len(self._by_mac)

    def seen(self, machine: Machine) -> None:
        """Record (or refresh) a machine; an address, if known, now points to it."""
        old = self._by_mac.pop(machine.mac, None)
        if machine.ip is None and old is not None and old.ip is not None:
            machine = replace(machine, ip=old.ip)
        self._by_mac[machine.mac] = machine
        if machine.ip is not None:
            self._mac_by_ip[machine.ip] = machine.mac
        while len(self._by_mac) > self.capacity:
            _, evicted = self._by_mac.popitem(last=False)
            if evicted.ip is not None and self._mac_by_ip.get(evicted.ip) == evicted.mac:
                del self._mac_by_ip[evicted.ip]

    def by_mac(self, mac: str) -> Machine | None:
        return self._by_mac.get(mac)

    def by_ip(self, ip: IPv4Address | None) -> Machine | None:
        if ip is None:
            return None
        mac = self._mac_by_ip.get(ip)
        return self._by_mac.get(mac) if mac is not None else None

    def by_uuid(self, uuid: str) -> Machine | None:
        uuid = uuid.lower()
        for machine in reversed(self._by_mac.values()):
            if machine.uuid == uuid:
                return machine
        return None
