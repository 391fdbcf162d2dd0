"""``redfish``: power and boot device over DMTF Redfish (HTTP + JSON), with a small client.

Theory of operation
-------------------
Redfish (DSP0266; schema ``ComputerSystem``) models the machine as a JSON resource,
``/redfish/v1/Systems/{id}``. This driver needs four requests of it:

* ``GET`` the system: ``PowerState`` (``On``/``Off``/``PoweringOn``/``PoweringOff``) and
  ``Boot`` (``BootSourceOverrideTarget`` ``Pxe``/``Hdd``/``Cd``/``BiosSetup``/``None`` and
  ``BootSourceOverrideEnabled`` ``Once``/``Continuous``/``Disabled``);
* ``POST`` its ``#ComputerSystem.Reset`` action (the ``target`` URI the system advertises) with
  ``{"ResetType": "On" | "ForceOff" | "GracefulShutdown" | "ForceRestart" | "GracefulRestart"}``
  — a type missing from ``ResetType@Redfish.AllowableValues`` is refused before sending;
* ``PATCH`` it with ``{"Boot": {"BootSourceOverrideTarget": …, "BootSourceOverrideEnabled":
  "Once" | "Continuous"}}`` (``If-Match`` with the ETag the GET returned, when it returned one);
* without ``redfish_system_id``: ``GET /redfish/v1/`` → its ``Systems`` collection; exactly one
  member is used, more is a `DriverInfoError` listing them.

After a reset the driver polls ``PowerState`` until it is the stable target (a ``Powering…``
value is "not yet"), as Ironic's redfish power interface does. A reboot of a machine that is on
is ``ForceRestart`` (``GracefulRestart`` for a soft one); of a machine that is off, ``On``.

Why our own client instead of ``sushy``: the driver needs those four requests; ``http.client``
does them synchronously with a timeout per request, ignores ``*_proxy`` variables (a BMC is
never reached through a proxy), is typed, and keeps pxeforge's errors precise (401 →
`BmcAuthError`, refused connection → `BmcUnreachable`, 404 on the system → `DriverInfoError`).
sushy would bring pbr, stevedore, requests and untyped objects for the same result. The wire
behaviour is checked against sushy-tools' emulator, the reference Redfish test server.

Authentication is HTTP basic (``redfish_auth_type`` ``basic``, or ``auto`` which we treat as
basic); sessions (``X-Auth-Token``) are not implemented.

``driver_info`` (Ironic's names): ``redfish_address`` (required: ``https://host[:port]``, or a
bare host meaning https), ``redfish_system_id`` (``/redfish/v1/Systems/1`` or ``1``; optional
when the BMC has one system), ``redfish_username``, ``redfish_password``, ``redfish_verify_ca``
(true | false | a CA bundle file or directory; default true), ``redfish_auth_type``.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import ssl
import time
import urllib.parse
from collections.abc import Mapping
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
    DriverInfo,
    DriverInfoError,
    PowerState,
    PowerTimeout,
    UnsupportedError,
    as_bool,
    check_fields,
    wait_for_power_state,
)

__all__ = ["BOOT_TARGETS", "RedfishDriver", "parse_address", "redfish_power_state"]

log = logging.getLogger(__name__)

SERVICE_ROOT = "/redfish/v1/"
MAX_BODY = 4 * 1024 * 1024  # a Redfish resource is a few KiB; refuse to buffer more

BOOT_TARGETS: dict[BootDevice, str] = {
    BootDevice.PXE: "Pxe",
    BootDevice.DISK: "Hdd",
    BootDevice.CDROM: "Cd",
    BootDevice.BIOS: "BiosSetup",
}
_DEVICES = {target: device for device, target in BOOT_TARGETS.items()}

# ComputerSystem.PowerState → ours. Transitional values count as the state being entered, as
# in Ironic; waits only accept the stable ones (`_STABLE`).
_POWER: dict[str, PowerState] = {
    "On": PowerState.POWER_ON,
    "PoweringOn": PowerState.POWER_ON,
    "Off": PowerState.POWER_OFF,
    "PoweringOff": PowerState.POWER_OFF,
}
_STABLE = {"On": PowerState.POWER_ON, "Off": PowerState.POWER_OFF}


def redfish_power_state(value: Any) -> PowerState:
    """A ``PowerState`` property → ours (``ERROR`` for ``Paused`` or anything unknown)."""
    return _POWER.get(str(value), PowerState.ERROR)


@dataclass(frozen=True, slots=True)
class Address:
    scheme: str  # "http" | "https"
    host: str
    port: int | None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}" + (f":{self.port}" if self.port else "")


def parse_address(text: str) -> Address:
    """``redfish_address`` → scheme, host, port; a bare host means https (as Ironic)."""
    raw = text.strip()
    if "://" not in raw:
        raw = "https://" + raw
    try:
        parts = urllib.parse.urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise DriverInfoError(
            f'redfish: driver_info "redfish_address" is not a URL ({exc}): {text!r}',
            ["redfish_address"],
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DriverInfoError(
            f'redfish: driver_info "redfish_address" must be http(s)://host[:port] (got {text!r})',
            ["redfish_address"],
        )
    return Address(parts.scheme, parts.hostname, port)


def _check_address(value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    try:
        parse_address(value)
    except DriverInfoError:
        return "must be http(s)://host[:port] or a host name"
    return None


def _check_verify(value: Any) -> str | None:
    if as_bool(value) is not None:
        return None
    if isinstance(value, str) and os.path.exists(value):
        return None
    return "must be true, false, or the path of a CA bundle file or directory that exists"


def _check_auth(value: Any) -> str | None:
    return None if value in ("basic", "auto") else 'must be "basic" or "auto"'


def _check_str(value: Any) -> str | None:
    return None if isinstance(value, str) else "must be a string"


def _ssl_context(verify: Any) -> ssl.SSLContext:
    flag = as_bool(verify)
    if flag is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if flag is None and isinstance(verify, str):
        if os.path.isdir(verify):
            return ssl.create_default_context(capath=verify)
        return ssl.create_default_context(cafile=verify)
    return ssl.create_default_context()


def _redfish_message(body: bytes) -> str:
    """The human text of a Redfish error body (``error.message`` + extended info)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body[:200].decode(errors="replace").strip()
    error = doc.get("error", {}) if isinstance(doc, dict) else {}
    if not isinstance(error, dict):
        return str(error)[:200]
    texts = [str(error.get("message", ""))]
    for extra in error.get("@Message.ExtendedInfo", []) or []:
        if isinstance(extra, dict) and extra.get("Message"):
            texts.append(str(extra["Message"]))
    return "; ".join(t for t in texts if t) or str(error)[:200]


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    etag: str | None
    body: Any  # decoded JSON, or None for an empty body


class _Client:
    """One BMC's Redfish service: requests with basic auth and a timeout, errors mapped."""

    def __init__(self, info: DriverInfo, timeout: float) -> None:
        self.address = parse_address(str(info["redfish_address"]))
        self.timeout = timeout
        self.user = info.get("redfish_username")
        self.headers = {"Accept": "application/json", "OData-Version": "4.0"}
        if self.user:
            token = f"{self.user}:{info.get('redfish_password') or ''}".encode()
            self.headers["Authorization"] = "Basic " + base64.b64encode(token).decode()
        self.verify = info.get("redfish_verify_ca", True)

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.address.scheme == "https":
            return http.client.HTTPSConnection(
                self.address.host,
                self.address.port,
                timeout=timeout,
                context=_ssl_context(self.verify),
            )
        return http.client.HTTPConnection(self.address.host, self.address.port, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        deadline: float | None = None,
    ) -> Response:
        timeout = self.timeout
        if deadline is not None:
            timeout = min(timeout, deadline - time.monotonic())
            if timeout <= 0:
                raise PowerTimeout(f"redfish {self.address}: the operation's time ran out")
        all_headers = dict(self.headers, **(headers or {}))
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        where = f"{self.address}{path}"
        conn = self._connection(timeout)
        try:
            conn.request(method, path, body=data, headers=all_headers)
            resp = conn.getresponse()
            raw = resp.read(MAX_BODY + 1)
            status, etag = resp.status, resp.getheader("ETag")
        except ssl.SSLCertVerificationError as exc:
            raise BmcError(
                f"redfish: the TLS certificate of {self.address} is not trusted ({exc.reason}): "
                "set redfish_verify_ca to its CA bundle, or to false"
            ) from None
        except TimeoutError:
            raise BmcUnreachable(
                f"redfish: no answer from {where} within {timeout:g} s "
                "(check redfish_address and the network)"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise BmcUnreachable(
                f"redfish: cannot reach {where}: {exc} (check redfish_address and the network)"
            ) from None
        finally:
            conn.close()
        if len(raw) > MAX_BODY:
            raise BmcError(f"redfish: {where} answered more than {MAX_BODY} bytes")
        if status in (401, 403):
            who = f"user {self.user!r}" if self.user else "an anonymous request"
            why = "refused the credentials" if status == 401 else "does not allow this"
            raise BmcAuthError(
                f"redfish: authentication failed at {self.address} for {who}: the BMC {why} "
                f"(HTTP {status}; check redfish_username / redfish_password)"
            )
        if status == 404:
            raise _NotFound(f"redfish: {where} not found (HTTP 404): {_redfish_message(raw)}")
        if status >= 400:
            raise BmcError(
                f"redfish: {method} {where} failed with HTTP {status}: {_redfish_message(raw)}"
            )
        decoded: Any = None
        if raw.strip():
            try:
                decoded = json.loads(raw)
            except ValueError:
                raise BmcError(f"redfish: {where} did not answer JSON: {raw[:80]!r}") from None
        return Response(status, etag, decoded)

    def get(self, path: str, deadline: float | None = None) -> tuple[dict[str, Any], str | None]:
        resp = self.request("GET", path, deadline=deadline)
        if not isinstance(resp.body, dict):
            raise BmcError(f"redfish: {self.address}{path} is not a JSON object")
        return resp.body, resp.etag


class _NotFound(BmcError):
    """HTTP 404 (callers that know what was looked for turn it into a precise error)."""


def _odata_id(doc: Mapping[str, Any], key: str) -> str | None:
    link = doc.get(key)
    if isinstance(link, dict) and isinstance(link.get("@odata.id"), str):
        return str(link["@odata.id"])
    return None


class RedfishDriver:
    """Power and boot device through a Redfish service (basic auth).

    ``request_timeout`` bounds each HTTP request; ``poll_interval`` paces the state reads
    after a reset.
    """

    name: ClassVar[str] = "redfish"

    def __init__(
        self, *, request_timeout: float = 10.0, poll_interval: float = POLL_INTERVAL
    ) -> None:
        self.request_timeout = request_timeout
        self.poll_interval = poll_interval

    # -- plumbing --

    def _client(self, info: DriverInfo) -> _Client:
        self.validate(info)
        return _Client(info, self.request_timeout)

    def _system_path(self, client: _Client, info: DriverInfo, deadline: float | None) -> str:
        given = info.get("redfish_system_id")
        if given:
            text = str(given)
            if text.startswith("/"):
                return text
            return SERVICE_ROOT + "Systems/" + urllib.parse.quote(text, safe="")
        root, _ = client.get(SERVICE_ROOT, deadline)
        collection = _odata_id(root, "Systems")
        if collection is None:
            raise BmcError(f"redfish: the service root of {client.address} lists no Systems")
        systems, _ = client.get(collection, deadline)
        members = [
            str(m["@odata.id"])
            for m in systems.get("Members", [])
            if isinstance(m, dict) and isinstance(m.get("@odata.id"), str)
        ]
        if len(members) == 1:
            return members[0]
        if not members:
            raise BmcError(f"redfish: {client.address} has no computer system")
        raise DriverInfoError(
            f'redfish: driver_info "redfish_system_id" is needed: {client.address} has '
            f"{len(members)} systems ({', '.join(members)})",
            ["redfish_system_id"],
        )

    def _system(
        self, client: _Client, info: DriverInfo, deadline: float | None = None
    ) -> tuple[str, dict[str, Any], str | None]:
        path = self._system_path(client, info, deadline)
        try:
            doc, etag = client.get(path, deadline)
        except _NotFound:
            raise DriverInfoError(
                f'redfish: driver_info "redfish_system_id": no system {path} at {client.address}',
                ["redfish_system_id"],
            ) from None
        return path, doc, etag

    def _reset(
        self,
        client: _Client,
        path: str,
        system: Mapping[str, Any],
        reset_type: str,
        deadline: float,
    ) -> None:
        actions = system.get("Actions")
        action = actions.get("#ComputerSystem.Reset") if isinstance(actions, dict) else None
        if not isinstance(action, dict):
            action = {}
        allowed = action.get("ResetType@Redfish.AllowableValues")
        if isinstance(allowed, list) and reset_type not in allowed:
            raise UnsupportedError(
                f"redfish: {client.address}{path} does not offer ResetType {reset_type} "
                f"(it offers {', '.join(map(str, allowed))})"
            )
        target = action.get("target") or f"{path.rstrip('/')}/Actions/ComputerSystem.Reset"
        client.request("POST", str(target), {"ResetType": reset_type}, deadline=deadline)

    def _wait(
        self, client: _Client, path: str, target: PowerState, deadline: float, what: str
    ) -> None:
        def read() -> PowerState | None:
            doc, _ = client.get(path, deadline)
            return _STABLE.get(str(doc.get("PowerState")))

        wait_for_power_state(
            read,
            target,
            max(deadline - time.monotonic(), 0.0),
            what=f"redfish {client.address}: {what}",
            interval=self.poll_interval,
        )

    # -- PowerDriver --

    def validate(self, info: DriverInfo) -> None:
        check_fields(
            self.name,
            info,
            {"redfish_address": "the BMC's URL, https://host[:port]"},
            {
                "redfish_address": _check_address,
                "redfish_system_id": _check_str,
                "redfish_username": _check_str,
                "redfish_password": _check_str,
                "redfish_verify_ca": _check_verify,
                "redfish_auth_type": _check_auth,
            },
        )

    def get_power_state(self, info: DriverInfo) -> PowerState | None:
        client = self._client(info)
        _, doc, _ = self._system(client, info)
        return redfish_power_state(doc.get("PowerState"))

    def set_power_state(
        self, info: DriverInfo, state: PowerState, timeout: float | None = None
    ) -> str | None:
        client = self._client(info)
        deadline = time.monotonic() + (DEFAULT_POWER_TIMEOUT if timeout is None else timeout)
        path, doc, _ = self._system(client, info, deadline)
        now = _STABLE.get(str(doc.get("PowerState")))
        order: str | None
        target: PowerState
        if state is PowerState.POWER_ON:
            order = "On" if now is not PowerState.POWER_ON else None
            target = state
        elif state is PowerState.POWER_OFF:
            order = "ForceOff" if now is not PowerState.POWER_OFF else None
            target = state
        elif state is PowerState.SOFT_POWER_OFF:
            order = "GracefulShutdown" if now is not PowerState.POWER_OFF else None
            target = PowerState.POWER_OFF
        elif state in (PowerState.REBOOT, PowerState.SOFT_REBOOT):
            restart = "ForceRestart" if state is PowerState.REBOOT else "GracefulRestart"
            order = restart if now is PowerState.POWER_ON else "On"
            target = PowerState.POWER_ON
        else:
            raise UnsupportedError(f'redfish: "{state}" is not a power target')
        if order is not None:
            self._reset(client, path, doc, order, deadline)
        self._wait(client, path, target, deadline, f"{order or 'no change'} → {target}")
        return None

    def reboot(self, info: DriverInfo, timeout: float | None = None) -> str | None:
        return self.set_power_state(info, PowerState.REBOOT, timeout)

    # -- ManagementDriver --

    def set_boot_device(
        self, info: DriverInfo, device: BootDevice, persistent: bool = False
    ) -> str | None:
        client = self._client(info)
        target = BOOT_TARGETS.get(BootDevice(device))
        if target is None:
            raise UnsupportedError(f'redfish: Redfish has no boot device "{device}"')
        path, doc, etag = self._system(client, info)
        boot = doc.get("Boot", {}) if isinstance(doc.get("Boot"), dict) else {}
        allowed = boot.get("BootSourceOverrideTarget@Redfish.AllowableValues")
        if isinstance(allowed, list) and target not in allowed:
            raise UnsupportedError(
                f"redfish: {client.address}{path} cannot boot from {target} "
                f"(it offers {', '.join(map(str, allowed))})"
            )
        patch = {
            "Boot": {
                "BootSourceOverrideTarget": target,
                "BootSourceOverrideEnabled": "Continuous" if persistent else "Once",
            }
        }
        headers = {"If-Match": etag} if etag else None
        client.request("PATCH", path, patch, headers=headers)
        return None

    def get_boot_device(self, info: DriverInfo) -> BootSetting:
        client = self._client(info)
        _, doc, _ = self._system(client, info)
        boot = doc.get("Boot")
        if not isinstance(boot, dict):
            return BootSetting(None, None)
        enabled = boot.get("BootSourceOverrideEnabled")
        if enabled == "Disabled":
            return BootSetting(None, None)
        device = _DEVICES.get(str(boot.get("BootSourceOverrideTarget")))
        persistent = {"Continuous": True, "Once": False}.get(str(enabled))
        return BootSetting(device, persistent)
