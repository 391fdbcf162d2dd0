"""``manual-management``: a person powers the machine and picks its boot device.

Theory of operation
-------------------
Ironic's ``manual-management`` hardware type is for machines with no BMC we can reach: the
conductor does everything else and the operator presses the power button. Here every order
succeeds at once and returns a **note** ("please power on the machine …") that the lifecycle
writes into the node's history, so the timeline says who has to act. The power state is
unknown (None), always: nothing can read it. ``driver_info`` needs no field.
"""

from __future__ import annotations

from typing import ClassVar

from pxeforge.drivers.base import (
    BootDevice,
    BootSetting,
    DriverInfo,
    PowerState,
    UnsupportedError,
)

__all__ = ["ManualDriver"]

_ASK: dict[PowerState, str] = {
    PowerState.POWER_ON: "please power on the machine",
    PowerState.POWER_OFF: "please power off the machine",
    PowerState.SOFT_POWER_OFF: "please shut the machine down",
    PowerState.REBOOT: "please reset the machine (or power it off and on)",
    PowerState.SOFT_REBOOT: "please restart the machine",
}

_BOOT: dict[BootDevice, str] = {
    BootDevice.PXE: "from the network (PXE)",
    BootDevice.DISK: "from its local disk",
    BootDevice.CDROM: "from CD/DVD",
    BootDevice.BIOS: "into the firmware setup",
    BootDevice.SAFE: "from its local disk in safe mode",
}


class ManualDriver:
    """No power control: every order becomes a note for the operator."""

    name: ClassVar[str] = "manual-management"

    def validate(self, info: DriverInfo) -> None:
        """Nothing to check: ``driver_info`` may be empty."""

    def get_power_state(self, info: DriverInfo) -> PowerState | None:
        return None

    def set_power_state(
        self, info: DriverInfo, state: PowerState, timeout: float | None = None
    ) -> str | None:
        try:
            ask = _ASK[state]
        except KeyError:
            raise UnsupportedError(f'{self.name}: "{state}" is not a power target') from None
        return f"{ask} (driver {self.name}: pxeforge has no power control over it)"

    def reboot(self, info: DriverInfo, timeout: float | None = None) -> str | None:
        return self.set_power_state(info, PowerState.REBOOT, timeout)

    def set_boot_device(
        self, info: DriverInfo, device: BootDevice, persistent: bool = False
    ) -> str | None:
        when = "every time" if persistent else "next time"
        where = _BOOT[BootDevice(device)]
        return f"please make the machine boot {where} {when} (driver {self.name})"

    def get_boot_device(self, info: DriverInfo) -> BootSetting:
        return BootSetting(None, None)
