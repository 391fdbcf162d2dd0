"""Power and boot-device drivers (Ironic's power and management interfaces).

`base` holds the two Protocols, the vocabulary (`PowerState`, `BootDevice`) and the errors;
one module per driver (`manual`, `fake`, `ipmi`, `redfish`, `lab`); `registry` maps
``node.driver`` names to driver objects. Calls are synchronous with bounded waits: run them in
a thread (``loop.run_in_executor``) from asyncio code.
"""

from pxeforge.drivers.base import (
    BmcAuthError,
    BmcError,
    BmcUnreachable,
    BootDevice,
    BootSetting,
    Driver,
    DriverError,
    DriverInfo,
    DriverInfoError,
    ManagementDriver,
    PowerDriver,
    PowerState,
    PowerTimeout,
    UnknownDriver,
    UnsupportedError,
)
from pxeforge.drivers.registry import DRIVERS, Registry, enabled_drivers, get_driver

__all__ = [
    "DRIVERS",
    "BmcAuthError",
    "BmcError",
    "BmcUnreachable",
    "BootDevice",
    "BootSetting",
    "Driver",
    "DriverError",
    "DriverInfo",
    "DriverInfoError",
    "ManagementDriver",
    "PowerDriver",
    "PowerState",
    "PowerTimeout",
    "Registry",
    "UnknownDriver",
    "UnsupportedError",
    "enabled_drivers",
    "get_driver",
]
