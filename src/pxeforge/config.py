"""Settings: the only place defaults live.

`Settings` is a frozen dataclass; every field has its default here and nowhere else. The CLI
builds one from (in increasing priority) these defaults, a TOML file (``--config``), and flags.
Keys in the TOML file are the field names (``dhcp_mode``, ``pool``…), also accepted with dashes.
"""

from __future__ import annotations

import dataclasses
import enum
import tomllib
from dataclasses import dataclass, field, fields
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from pxeforge.boot.machine import normalize_mac
from pxeforge.errors import ConfigError

__all__ = [
    "ApiAuth",
    "BootMethod",
    "DhcpMode",
    "IdleBoot",
    "Settings",
    "load_toml",
    "parse_pool",
]


class DhcpMode(enum.Enum):
    FULL = "full"  # hand out addresses from --pool
    PROXY = "proxy"  # ProxyDHCP: boot info only, beside an existing DHCP server (67 and 4011)
    OFF = "off"  # no DHCP; another server points clients at us


class ApiAuth(enum.Enum):
    """How the REST API authenticates callers (Ironic's ``[DEFAULT]auth_strategy`` names)."""

    HTTP_BASIC = "http_basic"  # an htpasswd file (bcrypt) under --data-dir, created on first start
    NOAUTH = "noauth"  # no authentication: only when asked for (the lab, on loopback)


class BootMethod(enum.Enum):
    PXELINUX = "pxelinux"  # pxelinux.0 (BIOS) / shim + GRUB (UEFI) over TFTP
    IPXE = "ipxe"  # undionly.kpxe / snponly.efi, then an iPXE script over HTTP


class IdleBoot(enum.Enum):
    """What an enrolled node boots when it has nothing to do (enroll, manageable, available)."""

    NONE = "none"  # nothing: no DHCP boot answer, the firmware tries its next boot option
    LOCAL = "local"  # boot from the local disk (pxelinux localboot, GRUB chain, iPXE exit)


@dataclass(frozen=True, slots=True)
class Settings:
    # where we are
    interface: str | None = None  # bind DHCP to this interface (SO_BINDTODEVICE)
    address: IPv4Address | None = None  # our IP: bound and advertised (next-server, URLs)
    # DHCP
    dhcp_mode: DhcpMode = DhcpMode.FULL
    pool: tuple[IPv4Address, IPv4Address] | None = None
    subnet: IPv4Network | None = None  # default: address/24, or the interface's network
    router: IPv4Address | None = None  # option 3
    dns: tuple[IPv4Address, ...] = ()  # option 6
    domain: str | None = None  # option 15
    lease_time: int = 21600  # seconds; the seed's dhcpd.conf default-lease-time
    max_lease_time: int = 43200  # the seed's max-lease-time
    reservations: dict[str, IPv4Address] = field(default_factory=dict)  # MAC → fixed address
    netboot_only: bool = True  # answer only PXEClient / HTTPClient / iPXE clients
    dhcp_port: int = 67
    proxy_port: int = 4011  # ProxyDHCP (PXE "BINL") port
    # boot files
    tftp_port: int = 69
    http_port: int = 8080
    root: Path = Path("/var/lib/pxeforge/tftpboot")
    data_dir: Path = Path("/var/lib/pxeforge")
    boot_method: BootMethod = BootMethod.PXELINUX
    # static boot (pixiecore-style `boot`): every PXE client boots this
    kernel: Path | None = None
    initrds: tuple[Path, ...] = ()
    cmdline: str = ""
    # TFTP tuning
    tftp_timeout: float = 1.0  # first retransmit after this many seconds (backoff doubles it)
    tftp_retries: int = 5  # give up after this many retransmits of one window
    tftp_max_blksize: int = 65464  # RFC 2348 upper bound; clients rarely ask above 1468
    tftp_max_windowsize: int = 64  # RFC 7440; what we grant at most
    tftp_max_transfers: int = 1000  # concurrent transfers; beyond, ERROR 0 "Server busy"
    # inventory and REST API (Ironic's option names and defaults)
    api_port: int = 6385  # Ironic's port
    api_auth: ApiAuth = ApiAuth.HTTP_BASIC  # noauth only when asked for
    db_url: str | None = None  # SQLAlchemy URL; None: sqlite:///<data_dir>/pxeforge.db
    deploy_callback_timeout: float = 1800.0  # [conductor]deploy_callback_timeout; 0: forever
    inspect_wait_timeout: float = 1800.0  # [conductor]inspect_wait_timeout
    clean_callback_timeout: float = 1800.0  # [conductor]clean_callback_timeout
    automated_clean: bool = True  # [conductor]automated_clean; a node's automated_clean wins
    agent_command_timeout: float = 60.0  # [agent]command_timeout: each HTTP call to an agent
    heartbeat_interval: float = 10.0  # [conductor]heartbeat_interval, seconds
    heartbeat_timeout: float = 60.0  # [conductor]heartbeat_timeout: a silent conductor is dead
    check_provision_state_interval: float = 60.0  # [conductor]…: how often waits are checked
    # the boot plane follows the inventory (`pxeforge serve` without --kernel)
    deploy_kernel: Path | None = None  # agent ramdisk kernel ([conductor]deploy_kernel)
    deploy_ramdisk: Path | None = None  # agent ramdisk initrd ([conductor]deploy_ramdisk)
    agent_cmdline: str = ""  # extra kernel parameters for the agent ramdisk
    idle_boot: IdleBoot = IdleBoot.NONE  # enroll / manageable / available nodes boot this
    auto_enroll: bool = False  # unknown PXE MACs become nodes in "enroll" (manual-management)
    discovery: bool = False  # unknown PXE MACs boot the agent, which enrolls them (wins over
    # auto_enroll); Ironic's [auto_discovery]enabled
    discovery_driver: str = "manual-management"  # driver of discovered nodes ([auto_discovery])
    templates_dir: Path | None = None  # kickstart/preseed/autoinstall templates overriding ours
    boot_cache_ttl: float = 1.0  # seconds a MAC's boot answer is cached (DHCP asks per packet)
    api_url: str | None = None  # the API URL ramdisks call; default http://<address>:<api_port>
    # the live timeline (pxeforge.timeline): what each service saw of each machine, in memory
    timeline: bool = True  # record events (off: the timeline stays empty; for benchmarks)
    timeline_per_key: int = 256  # events kept per MAC / node
    timeline_max_keys: int = 20000  # MACs / nodes kept; the least recently active go first
    timeline_max_events: int = 200_000  # events kept in all (~700 B each): the memory bound

    @property
    def http_base(self) -> str:
        """The URL prefix clients use to reach our HTTP server."""
        host = str(self.address) if self.address is not None else "127.0.0.1"
        return f"http://{host}:{self.http_port}"

    @property
    def api_base(self) -> str:
        """The URL prefix ramdisks use to reach the REST API (no trailing slash)."""
        if self.api_url:
            return self.api_url.rstrip("/")
        host = str(self.address) if self.address is not None else "127.0.0.1"
        return f"http://{host}:{self.api_port}"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def parse_pool(text: str) -> tuple[IPv4Address, IPv4Address]:
    """``"10.0.0.100-10.0.0.200"`` → the two ends, checked."""
    first_s, sep, last_s = text.partition("-")
    if not sep:
        raise ConfigError(f"--pool wants FIRST-LAST, got {text!r}")
    try:
        first, last = IPv4Address(first_s.strip()), IPv4Address(last_s.strip())
    except ValueError as exc:
        raise ConfigError(f"--pool: {exc}") from None
    if int(last) < int(first):
        raise ConfigError(f"--pool: {last} comes before {first}")
    return first, last


def _coerce(name: str, value: Any) -> Any:
    """Turn a TOML value into the field's type."""
    try:
        match name:
            case "address" | "router":
                return IPv4Address(value)
            case "subnet":
                return IPv4Network(value, strict=False)
            case "dns":
                return tuple(IPv4Address(v) for v in value)
            case "pool":
                return parse_pool(value)
            case "dhcp_mode":
                return DhcpMode(value)
            case "boot_method":
                return BootMethod(value)
            case "api_auth":
                return ApiAuth(value)
            case "idle_boot":
                return IdleBoot(value)
            case "auto_enroll" | "timeline" | "automated_clean" | "discovery":
                if not isinstance(value, bool):
                    raise TypeError(f"expected true or false, got {value!r}")
                return value
            case "boot_cache_ttl":
                return float(value)
            case "agent_cmdline" | "api_url" | "discovery_driver":
                if not isinstance(value, str):
                    raise TypeError(f"expected a string, got {value!r}")
                return value
            case "deploy_kernel" | "deploy_ramdisk" | "templates_dir":
                return Path(value)
            case (
                "deploy_callback_timeout"
                | "inspect_wait_timeout"
                | "clean_callback_timeout"
                | "agent_command_timeout"
                | "heartbeat_interval"
                | "heartbeat_timeout"
                | "check_provision_state_interval"
            ):
                return float(value)
            case "api_port":
                if isinstance(value, bool) or not isinstance(value, int):
                    raise TypeError(f"expected an integer port, got {value!r}")
                return value
            case "timeline_per_key" | "timeline_max_keys" | "timeline_max_events":
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise TypeError(f"expected a positive integer, got {value!r}")
                return value
            case "db_url":
                if not isinstance(value, str):
                    raise TypeError(f"expected a URL string, got {value!r}")
                return value
            case "root" | "data_dir" | "kernel":
                return Path(value)
            case "initrds":
                return tuple(Path(v) for v in value)
            case "reservations":
                return {normalize_mac(k): IPv4Address(v) for k, v in dict(value).items()}
            case _:
                return value
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config key {name!r}: {exc}") from None


def load_toml(path: Path) -> dict[str, Any]:
    """Read a TOML config file into `Settings` field values (unknown keys are errors)."""
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path}: {exc}") from None
    known = {f.name for f in fields(Settings)}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name == "initrd":
            name = "initrds"
        if name not in known:
            raise ConfigError(f"config {path}: unknown key {key!r}")
        out[name] = _coerce(name, value)
    return out
