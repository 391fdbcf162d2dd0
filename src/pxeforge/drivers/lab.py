"""``lab``: power control of a lab VM through QEMU's QMP socket, when no BMC can be attached.

Theory of operation
-------------------
QEMU Machine Protocol (QMP, ``docs/interop/qmp-spec``): JSON lines over a unix socket. The
server greets, ``qmp_capabilities`` leaves negotiation mode, then each ``{"execute": …}`` gets
one ``{"return": …}`` or ``{"error": {"class", "desc"}}``, with asynchronous
``{"event": …}`` lines (STOP, RESET, SHUTDOWN…) interleaved, which `Qmp` skips. One
connection per driver call; every read has a timeout.

A QEMU process cannot be "off" and come back without someone starting it again, so power is
mapped onto the VM's **run state** (``query-status``), measured on QEMU 7.2:

=================  ==============================================================
``power on``       run state ``running`` (or ``suspended``: ACPI S3 is still on)
``power off``      ``prelaunch`` (reset, never resumed), ``paused``, ``shutdown``
``error``          any other (``guest-panicked``, ``internal-error``, migration…)
=================  ==============================================================

* **hard off** = ``stop`` (vCPUs halt at once) + ``system_reset``: the machine is reset while
  paused, which QEMU reports as ``prelaunch``; nothing runs until it is powered on.
* **on** = ``cont`` from ``prelaunch``; from any other off state ``system_reset`` first (and
  wait for ``prelaunch``), so power on always starts the firmware afresh — like a real machine.
* **soft off** = ``system_powerdown`` (the ACPI power button) and wait for the guest to shut
  down: the run state becomes ``shutdown``. A guest that ignores ACPI times out.
* **reboot** = ``system_reset`` while running (from off: power on).

This only works if QEMU neither exits when the guest shuts down nor turns a reset into a
shutdown, so every call first sends ``set-action`` (QEMU ≥ 6.0) with ``reboot=reset`` and
``shutdown=pause`` — it overrides ``-no-reboot`` (the lab's boot runs use it so that a failed
boot ends QEMU at once) for a VM under this driver's control. ``quit`` is never sent: a VM
whose process ended has no way back; its socket is gone and the driver says so
(`BmcUnreachable`).

Boot device: lab VMs are built to boot from the network first (``-boot n`` for BIOS,
``bootindex=1`` on the NIC for UEFI, `pxeforge.lab.qemu`), and pxeforge itself answers a
machine that should boot its disk with a local-boot config. So ``pxe`` and ``disk`` are
accepted with a note saying how (the order itself never changes), ``cdrom``/``bios``/``safe``
are `UnsupportedError`, and the reported setting is always (pxe, persistent).

``driver_info``: ``lab_qmp_socket`` (required), the absolute path of the VM's QMP socket.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from io import BufferedRWPair
from typing import Any, ClassVar

from pxeforge.drivers.base import (
    DEFAULT_POWER_TIMEOUT,
    BmcError,
    BmcUnreachable,
    BootDevice,
    BootSetting,
    DriverInfo,
    PowerState,
    PowerTimeout,
    UnsupportedError,
    check_fields,
)

__all__ = ["LabDriver", "Qmp", "QmpCommandError", "lab_power_state"]

log = logging.getLogger(__name__)

ON_STATES = frozenset({"running", "suspended"})
OFF_STATES = frozenset({"prelaunch", "paused", "shutdown"})
MAX_LINE = 1024 * 1024


def lab_power_state(status: str) -> PowerState:
    """A QEMU run state (``query-status``'s ``status``) → our power state."""
    if status in ON_STATES:
        return PowerState.POWER_ON
    if status in OFF_STATES:
        return PowerState.POWER_OFF
    return PowerState.ERROR


class QmpCommandError(BmcError):
    """QEMU answered a command with an error; ``error_class`` is QMP's ``class``."""

    def __init__(self, message: str, error_class: str) -> None:
        super().__init__(message)
        self.error_class = error_class


class Qmp:
    """A synchronous QMP client on one connection: use as a context manager.

    ``timeout`` bounds each socket operation; ``deadline`` (time.monotonic) bounds them all.
    """

    def __init__(self, path: str, timeout: float = 5.0, deadline: float | None = None) -> None:
        self.path, self.timeout, self.deadline = path, timeout, deadline
        self._sock: socket.socket | None = None
        self._stream: BufferedRWPair | None = None

    def __enter__(self) -> Qmp:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self._timeout())
            sock.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            raise BmcUnreachable(
                f"lab: no QEMU listening on the QMP socket {self.path} ({exc.strerror}): "
                "is the VM running?"
            ) from None
        except OSError as exc:
            sock.close()
            raise BmcUnreachable(f"lab: QMP socket {self.path}: {exc}") from None
        self._sock, self._stream = sock, sock.makefile("rwb")
        try:
            greeting = self._read()
            if "QMP" not in greeting:
                raise BmcError(f"lab: {self.path} is not a QMP socket (greeting {greeting!r})")
            self.execute("qmp_capabilities")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._stream is not None:
            try:
                self._stream.close()
            except OSError:
                pass
            self._stream = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _timeout(self) -> float:
        if self.deadline is None:
            return self.timeout
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise PowerTimeout(f"lab: the operation's time ran out (QMP {self.path})")
        return min(self.timeout, left)

    def _read(self) -> dict[str, Any]:
        assert self._stream is not None and self._sock is not None
        self._sock.settimeout(self._timeout())
        try:
            line = self._stream.readline(MAX_LINE)
        except TimeoutError:
            raise BmcUnreachable(f"lab: QEMU did not answer on {self.path} in time") from None
        except OSError as exc:
            raise BmcUnreachable(f"lab: QMP socket {self.path}: {exc}") from None
        if not line:
            raise BmcUnreachable(f"lab: QEMU closed the QMP socket {self.path} (did it exit?)")
        try:
            message = json.loads(line)
        except ValueError:
            raise BmcError(f"lab: not JSON on the QMP socket {self.path}: {line[:80]!r}") from None
        if not isinstance(message, dict):
            raise BmcError(f"lab: unexpected QMP message on {self.path}: {line[:80]!r}")
        return message

    def execute(self, command: str, **arguments: Any) -> Any:
        """Run ``command``; return its ``return`` value; `QmpCommandError` on an error."""
        assert self._stream is not None and self._sock is not None
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        self._sock.settimeout(self._timeout())
        try:
            self._stream.write(json.dumps(request).encode() + b"\n")
            self._stream.flush()
        except OSError as exc:
            raise BmcUnreachable(f"lab: QMP socket {self.path}: {exc}") from None
        while True:
            reply = self._read()
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                error = reply["error"] if isinstance(reply["error"], dict) else {}
                raise QmpCommandError(
                    f"lab: QEMU refused {command}: {error.get('desc', reply['error'])}",
                    str(error.get("class", "")),
                )
            # an asynchronous event ({"event": …}): not ours to act on

    def status(self) -> str:
        """The VM's run state (``query-status``)."""
        reply = self.execute("query-status")
        if not isinstance(reply, dict) or not isinstance(reply.get("status"), str):
            raise BmcError(f"lab: unexpected query-status answer {reply!r}")
        return str(reply["status"])


def _check_socket(value: Any) -> str | None:
    if not isinstance(value, str) or not value.startswith("/"):
        return "must be the absolute path of the VM's QMP socket"
    return None


class LabDriver:
    """Power control of a QEMU VM over QMP (see the module docstring for the semantics)."""

    name: ClassVar[str] = "lab"

    def __init__(self, *, qmp_timeout: float = 5.0, poll_interval: float = 0.05) -> None:
        self.qmp_timeout = qmp_timeout
        self.poll_interval = poll_interval

    def _connect(self, info: DriverInfo, deadline: float | None = None) -> Qmp:
        self.validate(info)
        return Qmp(str(info["lab_qmp_socket"]), self.qmp_timeout, deadline)

    @staticmethod
    def _take_over(qmp: Qmp) -> None:
        """Make a guest shutdown pause the VM and a reset reset it (see the docstring)."""
        try:
            qmp.execute("set-action", reboot="reset", shutdown="pause")
        except QmpCommandError as exc:  # QEMU < 6.0
            log.warning("lab %s: cannot set the reboot/shutdown actions: %s", qmp.path, exc)

    def _await(self, qmp: Qmp, wanted: frozenset[str], deadline: float, what: str) -> str:
        """Poll the run state until it is one of ``wanted``; `PowerTimeout` at ``deadline``."""
        status = "unknown"
        while True:
            try:
                status = qmp.status()
            except PowerTimeout:
                status = f"{status} (the last answer)"
            else:
                if status in wanted:
                    return status
                if time.monotonic() + self.poll_interval < deadline:
                    time.sleep(self.poll_interval)
                    continue
            raise PowerTimeout(f"lab {qmp.path}: {what}: still {status} when the time ran out")

    # -- PowerDriver --

    def validate(self, info: DriverInfo) -> None:
        check_fields(
            self.name,
            info,
            {"lab_qmp_socket": "the path of the VM's QMP socket"},
            {"lab_qmp_socket": _check_socket},
        )

    def get_power_state(self, info: DriverInfo) -> PowerState | None:
        with self._connect(info) as qmp:
            return lab_power_state(qmp.status())

    def set_power_state(
        self, info: DriverInfo, state: PowerState, timeout: float | None = None
    ) -> str | None:
        if state not in (
            PowerState.POWER_ON,
            PowerState.POWER_OFF,
            PowerState.SOFT_POWER_OFF,
            PowerState.REBOOT,
            PowerState.SOFT_REBOOT,
        ):
            raise UnsupportedError(f'lab: "{state}" is not a power target')
        deadline = time.monotonic() + (DEFAULT_POWER_TIMEOUT if timeout is None else timeout)
        with self._connect(info, deadline) as qmp:
            self._take_over(qmp)
            if state is PowerState.POWER_ON:
                self._on(qmp, deadline)
            elif state is PowerState.POWER_OFF:
                self._off(qmp, deadline)
            elif state is PowerState.SOFT_POWER_OFF:
                self._soft_off(qmp, deadline)
            elif state is PowerState.REBOOT:
                self._reboot(qmp, deadline)
            else:
                self._soft_off(qmp, deadline)
                self._on(qmp, deadline)
        return None

    def reboot(self, info: DriverInfo, timeout: float | None = None) -> str | None:
        return self.set_power_state(info, PowerState.REBOOT, timeout)

    def _on(self, qmp: Qmp, deadline: float) -> None:
        status = qmp.status()
        if status in ON_STATES:
            return
        if status != "prelaunch":
            qmp.execute("system_reset")  # start from the firmware, not where it stopped
            self._await(qmp, frozenset({"prelaunch"}), deadline, "reset before power on")
        qmp.execute("cont")
        self._await(qmp, ON_STATES, deadline, "power on")

    def _off(self, qmp: Qmp, deadline: float) -> None:
        if qmp.status() in OFF_STATES:
            return
        qmp.execute("stop")  # "paused" at once …
        qmp.execute("system_reset")  # … and "prelaunch" once the main loop has reset it
        self._await(qmp, frozenset({"prelaunch"}), deadline, "power off")

    def _soft_off(self, qmp: Qmp, deadline: float) -> None:
        if qmp.status() in OFF_STATES:
            return
        qmp.execute("system_powerdown")
        self._await(
            qmp,
            OFF_STATES,
            deadline,
            "soft power off (ACPI power button; does the guest handle it?)",
        )

    def _reboot(self, qmp: Qmp, deadline: float) -> None:
        if qmp.status() == "running":
            qmp.execute("system_reset")
            self._await(qmp, ON_STATES, deadline, "reboot")
        else:
            self._on(qmp, deadline)

    # -- ManagementDriver --

    def set_boot_device(
        self, info: DriverInfo, device: BootDevice, persistent: bool = False
    ) -> str | None:
        self.validate(info)
        device = BootDevice(device)
        if device is BootDevice.PXE:
            return "lab VM: network boot is its fixed first boot device"
        if device is BootDevice.DISK:
            return (
                "lab VM: it keeps booting from the network first; pxeforge answers it with a "
                "local-boot config, which boots its disk"
            )
        raise UnsupportedError(
            f'lab: a lab VM always boots from the network first; "{device}" cannot be set'
        )

    def get_boot_device(self, info: DriverInfo) -> BootSetting:
        self.validate(info)
        return BootSetting(BootDevice.PXE, True)
