"""Driver names → driver objects: what ``node.driver`` may say, and which of those are enabled.

Theory of operation
-------------------
Ironic calls these *hardware types* and enables a configurable subset of them
(``enabled_hardware_types``). `DRIVERS` lists every driver pxeforge has, by the name a node
carries; a `Registry` is built with the names enabled in this process (all by default) and
hands out **one object per name**, made on first use and kept: drivers hold no per-node state,
and the fake one keeps its machines across calls that way. Tests of other layers build a
`Registry` with their own factories (a pre-made `FakeDriver`, say).

An unknown or disabled name is `UnknownDriver` (HTTP 400) with Ironic's wording and the list
of names that would work.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping

from pxeforge.drivers.base import Driver, DriverInfo, UnknownDriver
from pxeforge.drivers.fake import FakeDriver
from pxeforge.drivers.ipmi import IpmiDriver
from pxeforge.drivers.lab import LabDriver
from pxeforge.drivers.manual import ManualDriver
from pxeforge.drivers.redfish import RedfishDriver

__all__ = ["DRIVERS", "Registry", "enabled_drivers", "get_driver"]

DRIVERS: Mapping[str, Callable[[], Driver]] = {
    IpmiDriver.name: IpmiDriver,
    RedfishDriver.name: RedfishDriver,
    ManualDriver.name: ManualDriver,
    FakeDriver.name: FakeDriver,
    LabDriver.name: LabDriver,
}
"""Every driver, by the name in ``node.driver``."""


class Registry:
    """The enabled drivers of one process; `get` returns the same object for a name."""

    def __init__(
        self,
        enabled: Iterable[str] | None = None,
        factories: Mapping[str, Callable[[], Driver]] = DRIVERS,
    ) -> None:
        names = tuple(factories) if enabled is None else tuple(dict.fromkeys(enabled))
        unknown = [name for name in names if name not in factories]
        if unknown:
            raise UnknownDriver(_not_found(unknown, tuple(factories)))
        self._factories = {name: factories[name] for name in names}
        self._made: dict[str, Driver] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> tuple[str, ...]:
        """The names a node may use, in order."""
        return tuple(self._factories)

    def get(self, name: str) -> Driver:
        """The driver called ``name``; `UnknownDriver` if it is not enabled."""
        with self._lock:
            driver = self._made.get(name)
            if driver is None:
                factory = self._factories.get(name)
                if factory is None:
                    raise UnknownDriver(_not_found([name], self.enabled))
                driver = self._made[name] = factory()
            return driver

    def validate(self, name: str, info: DriverInfo) -> Driver:
        """`get` then the driver's offline `validate` of ``info``; returns the driver."""
        driver = self.get(name)
        driver.validate(info)
        return driver


def _not_found(names: Iterable[str], enabled: Iterable[str]) -> str:
    return (
        f"Could not find the following driver(s) or hardware type(s): {', '.join(names)}. "
        f"Enabled: {', '.join(enabled)}."
    )


_default = Registry()


def get_driver(name: str) -> Driver:
    """The driver ``name`` from the process-wide registry (every driver enabled)."""
    return _default.get(name)


def enabled_drivers() -> tuple[str, ...]:
    """The names the process-wide registry accepts."""
    return _default.enabled
