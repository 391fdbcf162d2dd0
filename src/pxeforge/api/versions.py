"""API microversions: which version a request asked for, and what each version shows.

Theory of operation (Ironic's ``api/controllers/v1/versions.py`` and ``utils.py``):

* A version is ``1.N``. The client asks with ``X-OpenStack-Ironic-API-Version: 1.N`` (or
  ``latest``; or the newer ``OpenStack-API-Version: baremetal 1.N``). No header means the
  *minimum*, 1.1: an old client sees the old API. A malformed header, or one outside
  [`MIN_VERSION`, `MAX_VERSION`], is answered 406 (the client's negotiation reads the range
  from the response headers and retries).
* Every response carries ``X-OpenStack-Ironic-API-Minimum-Version``, ``…-Maximum-Version`` and
  the version used (`response_headers`).
* The version decides what a resource looks like: a node field introduced in 1.N is hidden from
  older requests and refused (406) in their writes (`NODE_FIELD_VERSIONS`), and some verbs need a
  version too (`VERB_VERSIONS`).

`MAX_VERSION` is 1.87: enough for ``baremetal`` to negotiate everything this server implements
(history 1.78, inventory 1.81, ``continue_inspection`` 1.84, ``unhold`` 1.85, ``service`` 1.87).
Later versions add resources pxeforge does not have (runbooks, port names…).
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

__all__ = [
    "DEPLOY_UNDEPLOY_VERBS",
    "DETAIL_QUERY",
    "ENROLL_STATE",
    "FIELDS_QUERY",
    "HEADER",
    "INSPECT_WAIT_STATE",
    "MAX_HEADER",
    "MAX_VERSION",
    "MIN_HEADER",
    "MIN_VERSION",
    "NODE_FIELD_VERSIONS",
    "NODE_HISTORY",
    "NODE_INVENTORY",
    "NODE_NAME",
    "PORT_FIELD_VERSIONS",
    "PROVISION_STATE_FILTER",
    "STANDARD_HEADER",
    "VERB_VERSIONS",
    "Version",
    "VersionError",
    "negotiate",
    "response_headers",
]

HEADER: Final = "X-OpenStack-Ironic-API-Version"
MIN_HEADER: Final = "X-OpenStack-Ironic-API-Minimum-Version"
MAX_HEADER: Final = "X-OpenStack-Ironic-API-Maximum-Version"
STANDARD_HEADER: Final = "OpenStack-API-Version"  # "baremetal 1.N" (Dalmatian and later)
_SERVICE_TYPE: Final = "baremetal"


class Version(NamedTuple):
    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"

    def at_least(self, minor: int) -> bool:
        return self.minor >= minor


MIN_VERSION: Final = Version(1, 1)
MAX_VERSION: Final = Version(1, 87)

# minor versions that change behaviour (names as Ironic's MINOR_* constants)
AVAILABLE_STATE: Final = 2  # NOSTATE renamed "available"
NODE_NAME: Final = 5
FIELDS_QUERY: Final = 8
PROVISION_STATE_FILTER: Final = 9
ENROLL_STATE: Final = 11  # new nodes start in enroll, not available
DRIVER_FILTER: Final = 16
PORT_INTERNAL_INFO: Final = 18
PORT_ADVANCED_NET_FIELDS: Final = 19
RESOURCE_CLASS: Final = 21
PORTGROUPS_SUBCONTROLLERS: Final = 24
SOFT_POWER_OFF: Final = 27
PORT_PHYSICAL_NETWORK: Final = 34
INSPECT_WAIT_STATE: Final = 39
DETAIL_QUERY: Final = 43
PORT_SMARTNIC: Final = 53
DEPLOY_UNDEPLOY_VERBS: Final = 73
NODE_HISTORY: Final = 78
NODE_INVENTORY: Final = 81

NODE_FIELD_VERSIONS: Final[dict[str, int]] = {
    "driver_internal_info": 3,
    "name": NODE_NAME,
    "inspection_finished_at": 6,
    "inspection_started_at": 6,
    "clean_step": 7,
    "raid_config": 12,
    "target_raid_config": 12,
    "network_interface": 20,
    "resource_class": RESOURCE_CLASS,
    "boot_interface": 31,
    "console_interface": 31,
    "deploy_interface": 31,
    "inspect_interface": 31,
    "management_interface": 31,
    "power_interface": 31,
    "raid_interface": 31,
    "vendor_interface": 31,
    "storage_interface": 33,
    "traits": 37,
    "rescue_interface": 38,
    "bios_interface": 40,
    "fault": 42,
    "deploy_step": 44,
    "conductor_group": 46,
    "automated_clean": 47,
    "protected": 48,
    "protected_reason": 48,
    "conductor": 49,
    "owner": 50,
    "description": 51,
    "allocation_uuid": 52,
    "retired": 61,
    "retired_reason": 61,
    "lessee": 65,
    "network_data": 66,
    "boot_mode": 75,
    "secure_boot": 75,
    "shard": 82,
    "parent_node": 83,
    "firmware_interface": 86,
}
"""Node field → the minor version that introduced it (Ironic's ``VERSIONED_FIELDS``)."""

PORT_FIELD_VERSIONS: Final[dict[str, int]] = {
    "internal_info": PORT_INTERNAL_INFO,
    "local_link_connection": PORT_ADVANCED_NET_FIELDS,
    "pxe_enabled": PORT_ADVANCED_NET_FIELDS,
    "portgroup_uuid": PORTGROUPS_SUBCONTROLLERS,
    "physical_network": PORT_PHYSICAL_NETWORK,
    "is_smartnic": PORT_SMARTNIC,
}
"""Port field → the minor version that introduced it."""

VERB_VERSIONS: Final[dict[str, int]] = {
    "manage": 4,
    "provide": 4,
    "inspect": 6,
    "abort": 13,
    "clean": 15,
    "adopt": 17,
    "rescue": 38,
    "unrescue": 38,
    "deploy": DEPLOY_UNDEPLOY_VERBS,
    "undeploy": DEPLOY_UNDEPLOY_VERBS,
    "unhold": 85,
    "service": 87,
}
"""Provision verb → the minor version that introduced it (Ironic's ``MIN_VERB_VERSIONS``)."""

_VERSION_RE: Final = re.compile(r"^\s*(\d+)\.(\d+)\s*$")


class VersionError(Exception):
    """The requested version is malformed or unsupported: answer 406 with this message."""


def _parse(text: str) -> Version:
    if text.strip().lower() == "latest":
        return MAX_VERSION
    match = _VERSION_RE.match(text)
    if match is None:
        raise VersionError(f"Invalid value for {HEADER} header")
    return Version(int(match.group(1)), int(match.group(2)))


def negotiate(legacy: str | None, standard: str | None = None) -> Version:
    """The version a request asked for (its headers' values; None when absent).

    The standard ``OpenStack-API-Version: baremetal 1.N`` header wins when it names this
    service, as in Ironic. Raises `VersionError` (406) for a bad or unsupported version.
    """
    requested: str | None = None
    if standard:
        service, _, value = standard.strip().partition(" ")
        if service.lower() == _SERVICE_TYPE and value.strip():
            requested = value.strip()
    if requested is None:
        requested = legacy
    if requested is None or not requested.strip():
        return MIN_VERSION
    version = _parse(requested)
    if version.major != MIN_VERSION.major:
        raise VersionError(
            f"Mutually exclusive versions requested. Version {version} requested but not "
            f"supported by this service. The supported version range is: "
            f"[{MIN_VERSION}, {MAX_VERSION}]."
        )
    if not MIN_VERSION <= version <= MAX_VERSION:
        raise VersionError(
            f"Version {version} was requested but the minor version is not supported by this "
            f"service. The supported version range is: [{MIN_VERSION}, {MAX_VERSION}]."
        )
    return version


def response_headers(version: Version | None) -> dict[str, str]:
    """Headers every response carries (``version``: the one used, None when none was)."""
    headers = {MIN_HEADER: str(MIN_VERSION), MAX_HEADER: str(MAX_VERSION)}
    if version is not None:
        headers[HEADER] = str(version)
        headers[STANDARD_HEADER] = f"{_SERVICE_TYPE} {version}"
    return headers
