"""``ipmi``: power and boot device over IPMI LAN, by running ``ipmitool``.

Theory of operation
-------------------
Each operation is one ``ipmitool`` process (``-I lanplus``, IPMI 2.0 / RMCP+; ``-I lan`` when
``ipmi_protocol_version`` is ``"1.5"``), as Ironic's ``ipmitool`` power interface does. The
password goes to ipmitool through its environment (``-E`` reads ``IPMI_PASSWORD``), never on
the command line where ``ps`` shows it to every user; stdin is /dev/null so ipmitool can never
stop to prompt. `ipmitool_argv` builds the command (pure); the parsers read ipmitool's output
(pure); `IpmiDriver` runs them.

Bounded waits: ipmitool itself retransmits (``-R retries``, ``-N interval``); each process is
killed after ``command_timeout`` seconds (or when the caller's ``timeout`` runs out), and the
failures the BMC calls temporary (Ironic's list: "insufficient resources for session", "Node
busy", "Timeout", "Out of space", "BMC initialization in progress") are retried up to
``retries`` times. A refused login is never retried: BMCs lock accounts after a few failures.

ipmitool prints every session failure as "Unable to establish IPMI v2 / RMCP+ session"; with
``-v`` it also says why (RAKP 2 "HMAC is invalid" is a wrong password, "unauthorized name" an
unknown user, "Get Auth Capabilities error" no BMC answering), which `classify` turns into
`BmcAuthError` or `BmcUnreachable`. Verbose lines go to stderr; the parsers read stdout only.

Power (IPMI v2.0 §28.3 Chassis Control): on, off and soft (ACPI) off are ipmitool's ``power on``
/ ``power off`` / ``power soft``; a reboot is off then on (Ironic does the same: ``power reset``
is unreliable on some BMCs and would not apply a boot device that waits for a power cycle).
Every order is followed by ``power status`` polls until the state is reached.

Boot device (§28.13 System Boot Options, parameter 5 "boot flags"): ``chassis bootdev <dev>``
(``options=persistent`` for every boot). Unless ``ipmi_disable_boot_timeout`` is false, the
BMC is first told not to clear the flags after 60 s (parameter 3, bit 3), as Ironic does; a BMC
that refuses that is not an error. Reading uses ``raw 0x00 0x09 0x05 0x00 0x00``: data byte 1
bit 6 is "persistent", data byte 2 bits 5:2 the device selector. Like Ironic we report the
selector even when the "valid" bit (byte 1 bit 7) is clear — OpenIPMI's simulator never sets it.

``driver_info`` (Ironic's names): ``ipmi_address`` (required), ``ipmi_port`` (623),
``ipmi_username`` (anonymous when absent), ``ipmi_password`` (""), ``ipmi_priv_level``
(ADMINISTRATOR | OPERATOR | USER | CALLBACK), ``ipmi_protocol_version`` ("2.0" | "1.5"),
``ipmi_cipher_suite`` (0–17), ``ipmi_bridging`` ("no" | "single" | "dual", with
``ipmi_target_channel`` / ``ipmi_target_address`` and for "dual" ``ipmi_transit_channel`` /
``ipmi_transit_address``; ``ipmi_local_address``), ``ipmi_disable_boot_timeout`` (true).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from pxeforge.drivers.base import (
    DEFAULT_POWER_TIMEOUT,
    POLL_INTERVAL,
    BmcAuthError,
    BmcError,
    BmcUnreachable,
    BootDevice,
    BootSetting,
    DriverError,
    DriverInfo,
    PowerState,
    PowerTimeout,
    UnsupportedError,
    as_bool,
    check_fields,
    wait_for_power_state,
)

__all__ = [
    "BOOT_SELECTORS",
    "IpmiDriver",
    "IpmiResult",
    "classify",
    "ipmitool_argv",
    "parse_boot_flags",
    "parse_power_status",
]

log = logging.getLogger(__name__)

DEFAULT_PORT = 623
PRIV_LEVELS = ("ADMINISTRATOR", "OPERATOR", "USER", "CALLBACK")
BRIDGING = ("no", "single", "dual")

# Boot device selector, data byte 2 bits 5:2 of boot option parameter 5 (IPMI v2.0 Table 28-14).
BOOT_SELECTORS: dict[int, BootDevice | None] = {
    0x0: None,  # no override
    0x1: BootDevice.PXE,
    0x2: BootDevice.DISK,  # "default hard drive"
    0x3: BootDevice.SAFE,  # "default hard drive, request Safe Mode"
    0x5: BootDevice.CDROM,
    0x6: BootDevice.BIOS,  # "BIOS setup"
}

# ipmitool's `chassis bootdev` argument for each device.
_BOOTDEV = {
    BootDevice.PXE: "pxe",
    BootDevice.DISK: "disk",
    BootDevice.CDROM: "cdrom",
    BootDevice.BIOS: "bios",
    BootDevice.SAFE: "safe",
}

# What ipmitool prints (with -v) when the BMC refuses the login.
_AUTH_MARKERS = (
    "RAKP 2 HMAC is invalid",  # wrong password (RMCP+)
    "unauthorized name",  # unknown user (RMCP+)
    "invalid integrity check value",
    "Activate Session error",  # IPMI 1.5
    "Invalid user name",
)
# ... when nothing usable answers.
_UNREACHABLE_MARKERS = (
    "Get Auth Capabilities error",
    "Error issuing Get Channel Authentication Capabilities",
    "No response from remote controller",
)
# ... when the BMC says "later" (Ironic's IPMITOOL_RETRYABLE_FAILURES).
_RETRYABLE_MARKERS = (
    "insufficient resources for session",
    "Node busy",
    "Timeout",
    "Out of space",
    "BMC initialization in progress",
)

_POWER_RE = re.compile(r"Chassis Power is (on|off)", re.IGNORECASE)
_HEX_RE = re.compile(r"\b[0-9a-fA-F]{2}\b")


# ---- pure parts -----------------------------------------------------------------------------


def _int_in(lo: int, hi: int, base: int = 0) -> Callable[[Any], str | None]:
    """A check for an integer in [lo, hi]; base 0 also takes "0x20" (IPMB addresses)."""

    def check(value: Any) -> str | None:
        if isinstance(value, bool):
            return f"must be an integer from {lo} to {hi}"
        try:
            number = int(str(value), base)
        except ValueError:
            return f"must be an integer from {lo} to {hi}"
        return None if lo <= number <= hi else f"must be from {lo} to {hi}"

    return check


def _one_of(choices: Sequence[str], upper: bool = False) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        text = str(value).upper() if upper else str(value)
        return None if text in choices else "must be one of " + ", ".join(choices)

    return check


def _is_str(value: Any) -> str | None:
    return None if isinstance(value, str) else "must be a string"


def _is_bool(value: Any) -> str | None:
    return None if as_bool(value) is not None else "must be true or false"


def validate_info(info: DriverInfo) -> None:
    """Raise `DriverInfoError` naming every missing or malformed ``ipmi_*`` field."""
    checks: dict[str, Callable[[Any], str | None]] = {
        "ipmi_address": _is_str,
        "ipmi_port": _int_in(1, 65535, base=10),
        "ipmi_username": _is_str,
        "ipmi_password": _is_str,
        "ipmi_priv_level": _one_of(PRIV_LEVELS, upper=True),
        "ipmi_protocol_version": _one_of(("2.0", "1.5")),
        "ipmi_cipher_suite": _int_in(0, 17),
        "ipmi_bridging": _one_of(BRIDGING),
        "ipmi_local_address": _int_in(0, 255),
        "ipmi_target_channel": _int_in(0, 15),
        "ipmi_target_address": _int_in(0, 255),
        "ipmi_transit_channel": _int_in(0, 15),
        "ipmi_transit_address": _int_in(0, 255),
        "ipmi_disable_boot_timeout": _is_bool,
    }
    required = {"ipmi_address": "the BMC's host name or IP address"}
    bridging = info.get("ipmi_bridging", "no")
    if bridging in ("single", "dual"):
        required["ipmi_target_channel"] = f'needed with ipmi_bridging "{bridging}"'
        required["ipmi_target_address"] = f'needed with ipmi_bridging "{bridging}"'
    if bridging == "dual":
        required["ipmi_transit_channel"] = 'needed with ipmi_bridging "dual"'
        required["ipmi_transit_address"] = 'needed with ipmi_bridging "dual"'
    check_fields("ipmi", info, required, checks)


def ipmitool_argv(
    info: DriverInfo,
    args: Sequence[str],
    *,
    tool: str = "ipmitool",
    retries: int = 3,
    interval: int = 1,
) -> list[str]:
    """The ipmitool command for ``args`` (e.g. ``["power", "status"]``); never the password.

    The password must be given as ``IPMI_PASSWORD`` in the environment (see `IpmiDriver`).
    """
    interface = "lan" if str(info.get("ipmi_protocol_version", "2.0")) == "1.5" else "lanplus"
    argv = [tool, "-I", interface, "-H", str(info["ipmi_address"])]
    argv += ["-p", str(int(str(info.get("ipmi_port", DEFAULT_PORT))))]
    argv += ["-L", str(info.get("ipmi_priv_level", "ADMINISTRATOR")).upper()]
    if info.get("ipmi_username"):
        argv += ["-U", str(info["ipmi_username"])]
    argv += ["-E", "-v", "-R", str(retries), "-N", str(interval)]
    if info.get("ipmi_cipher_suite") is not None and interface == "lanplus":
        argv += ["-C", str(int(str(info["ipmi_cipher_suite"]), 0))]
    bridging = info.get("ipmi_bridging", "no")
    if bridging != "no" and info.get("ipmi_local_address") is not None:
        argv += ["-m", str(info["ipmi_local_address"])]
    if bridging == "dual":
        argv += ["-B", str(info["ipmi_transit_channel"]), "-T", str(info["ipmi_transit_address"])]
    if bridging in ("single", "dual"):
        argv += ["-b", str(info["ipmi_target_channel"]), "-t", str(info["ipmi_target_address"])]
    return argv + list(args)


def parse_power_status(stdout: str) -> PowerState:
    """``Chassis Power is on`` → POWER_ON; anything unexpected is a `BmcError`."""
    match = _POWER_RE.search(stdout)
    if match is None:
        raise BmcError(f"ipmi: cannot read the power state from ipmitool's {stdout.strip()!r}")
    return PowerState.POWER_ON if match.group(1).lower() == "on" else PowerState.POWER_OFF


def parse_boot_flags(stdout: str) -> BootSetting:
    """Decode ``raw 0x00 0x09 0x05 0x00 0x00`` output (hex bytes) into a `BootSetting`.

    Response data: parameter version, parameter selector, then the five boot-flag bytes.
    """
    data = [int(tok, 16) for tok in _HEX_RE.findall(stdout)]
    if len(data) < 4 or data[1] & 0x7F != 0x05:
        raise BmcError(f"ipmi: unexpected boot flags from the BMC: {stdout.strip()!r}")
    flags1, flags2 = data[2], data[3]
    selector = (flags2 >> 2) & 0x0F
    device = BOOT_SELECTORS.get(selector)
    persistent = bool(flags1 & 0x40)
    return BootSetting(device, persistent)


@dataclass(frozen=True, slots=True)
class IpmiResult:
    """What one ipmitool run printed."""

    returncode: int
    stdout: str
    stderr: str


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def classify(result: IpmiResult, where: str, user: str | None) -> DriverError | None:
    """The error a failed run means (None when it did not fail).

    A session that could not be opened is explained by ``-v`` lines anywhere in the output;
    a command that failed inside a session by ipmitool's last line (earlier verbose lines
    report harmless probes, "Insufficient privilege level" among them).
    """
    text = result.stderr + "\n" + result.stdout
    no_session = "Unable to establish" in text
    if result.returncode == 0 and not no_session:
        return None
    said = _last_line(result.stderr) or _last_line(result.stdout) or f"exit {result.returncode}"
    who = f"user {user!r}" if user else "the anonymous user"
    if (no_session and "unauthorized role or privilege level" in text) or (
        not no_session and "Insufficient privilege level" in said
    ):
        return BmcAuthError(
            f"ipmi: {who} lacks the privilege for this at {where}: raise ipmi_priv_level or "
            f"use another user [ipmitool: {said}]"
        )
    if no_session and any(marker in text for marker in _AUTH_MARKERS):
        return BmcAuthError(
            f"ipmi: authentication failed at {where} for {who}: the BMC refused the user name "
            f"or password (ipmi_username / ipmi_password) [ipmitool: {said}]"
        )
    if no_session or any(marker in text for marker in _UNREACHABLE_MARKERS):
        return BmcUnreachable(
            f"ipmi: no IPMI session with the BMC at {where}: it did not answer "
            f"(check ipmi_address, ipmi_port and the network) [ipmitool: {said}]"
        )
    return BmcError(f"ipmi: the BMC at {where} refused the command [ipmitool: {said}]")


def _retryable(result: IpmiResult) -> bool:
    text = result.stderr + result.stdout
    if "Unable to establish" not in text:
        text = _last_line(result.stderr)
    return any(marker.lower() in text.lower() for marker in _RETRYABLE_MARKERS)


# ---- the driver -----------------------------------------------------------------------------


class IpmiDriver:
    """Power and boot device through ``ipmitool``.

    ``command_timeout`` bounds one ipmitool process; ``retries`` is both ipmitool's own ``-R``
    and how often a temporary failure is tried again, ``retry_interval`` seconds apart.
    """

    name: ClassVar[str] = "ipmi"

    def __init__(
        self,
        *,
        ipmitool: str = "ipmitool",
        command_timeout: float = 30.0,
        retries: int = 3,
        retry_interval: float = 1.0,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self.ipmitool = ipmitool
        self.command_timeout = command_timeout
        self.retries = retries
        self.retry_interval = retry_interval
        self.poll_interval = poll_interval

    # -- running ipmitool --

    @staticmethod
    def _where(info: DriverInfo) -> str:
        return f"{info.get('ipmi_address')}:{info.get('ipmi_port', DEFAULT_PORT)}"

    def _run_once(
        self, info: DriverInfo, args: Sequence[str], timeout: float, cut_by_caller: bool
    ) -> IpmiResult:
        argv = ipmitool_argv(info, args, tool=self.ipmitool, retries=self.retries)
        env = dict(os.environ, IPMI_PASSWORD=str(info.get("ipmi_password") or ""))
        try:
            proc = subprocess.run(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=max(timeout, 0.1),
            )
        except FileNotFoundError:
            raise DriverError(
                f"ipmi: {self.ipmitool} is not installed (apt-get install ipmitool)"
            ) from None
        except subprocess.TimeoutExpired:
            what = f"ipmi: ipmitool {' '.join(args)} against {self._where(info)}"
            if cut_by_caller:
                raise PowerTimeout(f"{what}: the operation's time ran out") from None
            raise BmcUnreachable(f"{what} did not finish within {timeout:g} s") from None
        return IpmiResult(proc.returncode, proc.stdout, proc.stderr)

    def _run(
        self, info: DriverInfo, args: Sequence[str], deadline: float | None = None
    ) -> IpmiResult:
        """Run ipmitool ``args`` with retries of temporary failures; raise on failure."""
        self.validate(info)
        attempt = 0
        while True:
            attempt += 1
            left = self.command_timeout
            if deadline is not None and deadline - time.monotonic() < left:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise PowerTimeout(f"ipmi {self._where(info)}: the operation's time ran out")
                result = self._run_once(info, args, left, cut_by_caller=True)
            else:
                result = self._run_once(info, args, left, cut_by_caller=False)
            error = classify(result, self._where(info), info.get("ipmi_username"))
            if error is None:
                return result
            if isinstance(error, BmcAuthError) or not _retryable(result):
                raise error
            if attempt > self.retries or (
                deadline is not None and time.monotonic() + self.retry_interval >= deadline
            ):
                raise error
            log.info("ipmi %s: %s; retrying", self._where(info), _last_line(result.stderr))
            time.sleep(self.retry_interval)

    # -- PowerDriver --

    def validate(self, info: DriverInfo) -> None:
        validate_info(info)

    def get_power_state(self, info: DriverInfo) -> PowerState | None:
        return self._power_status(info, None)

    def _power_status(self, info: DriverInfo, deadline: float | None) -> PowerState:
        return parse_power_status(self._run(info, ["power", "status"], deadline).stdout)

    def _order(self, info: DriverInfo, verb: str, target: PowerState, deadline: float) -> None:
        """``power <verb>`` unless already there, then wait for ``target``."""
        if self._power_status(info, deadline) == target:
            return
        self._run(info, ["power", verb], deadline)
        wait_for_power_state(
            lambda: self._power_status(info, deadline),
            target,
            max(deadline - time.monotonic(), 0.0),
            what=f"ipmi {self._where(info)}: power {verb}",
            interval=self.poll_interval,
        )

    def set_power_state(
        self, info: DriverInfo, state: PowerState, timeout: float | None = None
    ) -> str | None:
        self.validate(info)
        deadline = time.monotonic() + (DEFAULT_POWER_TIMEOUT if timeout is None else timeout)
        if state is PowerState.POWER_ON:
            self._order(info, "on", PowerState.POWER_ON, deadline)
        elif state is PowerState.POWER_OFF:
            self._order(info, "off", PowerState.POWER_OFF, deadline)
        elif state is PowerState.SOFT_POWER_OFF:
            self._order(info, "soft", PowerState.POWER_OFF, deadline)
        elif state is PowerState.REBOOT:
            self._order(info, "off", PowerState.POWER_OFF, deadline)
            self._order(info, "on", PowerState.POWER_ON, deadline)
        elif state is PowerState.SOFT_REBOOT:
            self._order(info, "soft", PowerState.POWER_OFF, deadline)
            self._order(info, "on", PowerState.POWER_ON, deadline)
        else:
            raise UnsupportedError(f'ipmi: "{state}" is not a power target')
        return None

    def reboot(self, info: DriverInfo, timeout: float | None = None) -> str | None:
        return self.set_power_state(info, PowerState.REBOOT, timeout)

    # -- ManagementDriver --

    def set_boot_device(
        self, info: DriverInfo, device: BootDevice, persistent: bool = False
    ) -> str | None:
        self.validate(info)
        if as_bool(info.get("ipmi_disable_boot_timeout", True)):
            # Parameter 3 (boot flag valid bit clearing), bit 3: keep the flags past 60 s.
            try:
                self._run(info, ["raw", "0x00", "0x08", "0x03", "0x08"])
            except BmcError as exc:
                log.info("ipmi %s: boot flag timeout not disabled: %s", self._where(info), exc)
        args = ["chassis", "bootdev", _BOOTDEV[BootDevice(device)]]
        if persistent:
            args.append("options=persistent")
        result = self._run(info, args)
        if "Set Boot Device to" not in result.stdout:  # ipmitool exits 0 even when refused
            said = _last_line(result.stderr) or _last_line(result.stdout)
            raise BmcError(
                f'ipmi: the BMC at {self._where(info)} refused boot device "{device}" '
                f"[ipmitool: {said}]"
            )
        return None

    def get_boot_device(self, info: DriverInfo) -> BootSetting:
        result = self._run(info, ["raw", "0x00", "0x09", "0x05", "0x00", "0x00"])
        return parse_boot_flags(result.stdout)
