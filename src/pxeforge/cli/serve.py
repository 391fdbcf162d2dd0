"""`pxeforge serve`: DHCP, TFTP and HTTP in one asyncio process.

Settings come from `Settings` defaults, then ``--config FILE`` (TOML), then flags. Every check
that can fail before binding (interface, addresses, files) fails here with one clear message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import click

from pxeforge.boot.booter import Booter, StaticBooter
from pxeforge.boot.machine import normalize_mac
from pxeforge.config import (
    ApiAuth,
    BootMethod,
    DhcpMode,
    IdleBoot,
    Settings,
    load_toml,
    parse_pool,
)
from pxeforge.errors import ConfigError, StartupError
from pxeforge.netif import interface_network, require_interface

__all__ = ["build_settings", "check_settings", "serve"]

log = logging.getLogger("pxeforge.serve")


def _ip(value: str, flag: str) -> IPv4Address:
    try:
        return IPv4Address(value)
    except ValueError:
        raise ConfigError(f"{flag}: {value!r} is not an IPv4 address") from None


def build_settings(config: Path | None, flags: dict[str, Any]) -> Settings:
    """Defaults < TOML file < flags given on the command line (None = not given)."""
    values: dict[str, Any] = load_toml(config) if config is not None else {}
    for key, value in flags.items():
        if value is None or value == ():
            continue
        match key:
            case "address" | "router":
                value = _ip(value, f"--{key}")
            case "subnet":
                try:
                    value = IPv4Network(value, strict=False)
                except ValueError as exc:
                    raise ConfigError(f"--subnet: {exc}") from None
            case "dns":
                value = tuple(_ip(v, "--dns") for v in value)
            case "pool":
                value = parse_pool(value)
            case "dhcp_mode":
                value = DhcpMode(value)
            case "boot_method":
                value = BootMethod(value)
            case "api_auth":
                value = ApiAuth(value)
            case "idle_boot":
                value = IdleBoot(value)
            case "root" | "data_dir" | "kernel" | "deploy_kernel" | "deploy_ramdisk":
                value = Path(value)
            case "templates_dir":
                value = Path(value)
            case "initrds":
                value = tuple(Path(p) for item in value for p in item.split(",") if p)
            case "reservations":
                out = dict(values.get("reservations", {}))
                for item in value:
                    mac, sep, ip = item.partition("=")
                    if not sep:
                        raise ConfigError(f"--reserve wants MAC=IP, got {item!r}")
                    try:
                        out[normalize_mac(mac)] = _ip(ip, "--reserve")
                    except ValueError as exc:
                        raise ConfigError(f"--reserve: {exc}") from None
                value = out
        values[key] = value
    return Settings(**values)


def check_settings(settings: Settings) -> Settings:
    """Fill what can be derived (address, subnet) and refuse what cannot work."""
    if settings.interface is not None:
        require_interface(settings.interface)
        found = interface_network(settings.interface)
        if settings.address is None:
            if found is None:
                raise StartupError(
                    f"interface {settings.interface} has no IPv4 address; give it one or "
                    f"pass --address"
                )
            settings = settings.replace(address=found[0])
        if settings.subnet is None and found is not None:
            settings = settings.replace(subnet=found[1])
    if settings.dhcp_mode is not DhcpMode.OFF and settings.address is None:
        raise StartupError("DHCP needs to know our address: pass --interface or --address")
    if settings.subnet is None and settings.address is not None:
        settings = settings.replace(subnet=IPv4Network(f"{settings.address}/24", strict=False))
    if settings.dhcp_mode is DhcpMode.FULL:
        if settings.pool is None:
            raise ConfigError("--dhcp full needs --pool FIRST-LAST (or use --dhcp proxy)")
        assert settings.subnet is not None
        for end in settings.pool:
            if end not in settings.subnet:
                raise ConfigError(f"--pool: {end} is outside the subnet {settings.subnet}")
        for mac, ip in settings.reservations.items():
            if ip not in settings.subnet:
                raise ConfigError(f"reservation {mac}={ip} is outside the subnet {settings.subnet}")
    if not settings.root.is_dir():
        raise StartupError(
            f"boot root {settings.root} is not a directory; create it or fill it with "
            f"`pxeforge assets fetch --root {settings.root}`"
        )
    if settings.kernel is None and settings.initrds:
        raise ConfigError("--initrd needs --kernel (without --kernel the inventory decides)")
    if settings.templates_dir is not None and not settings.templates_dir.is_dir():
        raise StartupError(f"--templates-dir {settings.templates_dir} is not a directory")
    for path in (*((settings.kernel,) if settings.kernel else ()), *settings.initrds):
        if not path.is_file():
            raise StartupError(f"boot file {path} does not exist (or is not a regular file)")
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(
            f"cannot create --data-dir {settings.data_dir}: {exc.strerror}"
        ) from None
    return settings


async def _serve(settings: Settings, booter: Booter | None) -> None:
    from pxeforge.servers.run import start_services

    services = await start_services(settings, booter)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    creds = services.new_credentials
    if creds is not None:
        click.echo(
            f"pxeforge: created API user {creds.user!r} with password {creds.password} — shown "
            f"only this once (also in {settings.data_dir / 'api-credentials'}, mode 0600; "
            f"the hash is in {settings.data_dir / 'htpasswd'})",
            err=True,
        )
    api_host = str(settings.address) if settings.address is not None else "127.0.0.1"
    boots = "static --kernel" if booter is not None else "inventory"
    click.echo(
        f"pxeforge serving: DHCP {settings.dhcp_mode.value}, TFTP :{services.tftp.port}, "
        f"boot answers from the {boots}, "
        f"HTTP {settings.http_base} (boot method {settings.boot_method.value}), "
        f"API http://{api_host}:{services.api.port}/v1 (auth {settings.api_auth.value}); "
        "Ctrl-C stops",
        err=True,
    )
    try:
        await stop.wait()
    finally:
        await services.close()


@click.command()
@click.option(
    "--config",
    "config",
    type=click.Path(path_type=Path, dir_okay=False),
    help="TOML file with the same settings (flags override it).",
)
@click.option("--interface", help="Network interface to serve DHCP on (e.g. eth1).")
@click.option("--address", help="Our IPv4 address: bound and advertised to clients.")
@click.option(
    "--dhcp",
    "dhcp_mode",
    type=click.Choice([m.value for m in DhcpMode]),
    help="full: hand out addresses; proxy: ProxyDHCP beside another server; off.",
)
@click.option("--pool", help="Address pool FIRST-LAST for --dhcp full.")
@click.option("--subnet", help="Subnet, e.g. 10.0.0.0/24 (default: the interface's).")
@click.option("--router", help="Default gateway offered to clients (option 3).")
@click.option("--dns", multiple=True, help="DNS server offered to clients (repeatable).")
@click.option(
    "--reserve",
    "reservations",
    multiple=True,
    metavar="MAC=IP",
    help="Fixed address for a MAC (repeatable).",
)
@click.option("--lease-time", type=int, help="Default lease time, seconds (21600).")
@click.option("--max-lease-time", type=int, help="Longest lease granted, seconds (43200).")
@click.option(
    "--netboot-only/--all-clients",
    "netboot_only",
    default=None,
    help="Answer only PXE/HTTPClient/iPXE clients (default) or every DHCP client.",
)
@click.option("--dhcp-port", type=int, help="DHCP server port (67).")
@click.option("--proxy-port", type=int, help="ProxyDHCP port (4011).")
@click.option("--tftp-port", type=int, help="TFTP port (69).")
@click.option("--http-port", type=int, help="HTTP port (8080).")
@click.option("--root", type=click.Path(path_type=Path), help="Boot files directory.")
@click.option("--data-dir", type=click.Path(path_type=Path), help="State directory (leases…).")
@click.option(
    "--boot-method",
    type=click.Choice([m.value for m in BootMethod]),
    help="pxelinux: pxelinux.0 / shim+GRUB over TFTP; ipxe: iPXE script over HTTP.",
)
@click.option("--kernel", type=click.Path(path_type=Path), help="Kernel every client boots.")
@click.option(
    "--initrd",
    "initrds",
    multiple=True,
    metavar="FILE[,FILE]",
    help="Initrd(s) for --kernel (comma-separated or repeated).",
)
@click.option("--cmdline", help="Kernel command line for --kernel.")
@click.option(
    "--deploy-kernel",
    type=click.Path(path_type=Path),
    help="Agent ramdisk kernel (inventory mode: inspecting, cleaning, agent deploys).",
)
@click.option("--deploy-ramdisk", type=click.Path(path_type=Path), help="Agent ramdisk initrd.")
@click.option("--agent-cmdline", help="Extra kernel parameters for the agent ramdisk.")
@click.option(
    "--idle-boot",
    type=click.Choice([m.value for m in IdleBoot]),
    help="What enroll/manageable/available nodes boot: none (default) or local disk.",
)
@click.option(
    "--auto-enroll/--no-auto-enroll",
    "auto_enroll",
    default=None,
    help="Enroll unknown PXE clients as nodes (driver manual-management); off by default.",
)
@click.option(
    "--discovery/--no-discovery",
    "discovery",
    default=None,
    help="Boot unknown PXE clients into the agent ramdisk, which enrolls them from their "
    "inventory (inspection rules apply); off by default, wins over --auto-enroll.",
)
@click.option("--discovery-driver", help="Driver of discovered nodes (manual-management).")
@click.option(
    "--automated-clean/--no-automated-clean",
    "automated_clean",
    default=None,
    help="Clean nodes through the agent ramdisk on provide and after undeploy (default on; "
    "a node's automated_clean field wins).",
)
@click.option(
    "--templates-dir",
    type=click.Path(path_type=Path),
    help="Installer templates (kickstart.ks.j2, preseed.cfg.j2, …) overriding the built-in.",
)
@click.option("--api-port", type=int, help="REST API port (6385, Ironic's; 0: any free port).")
@click.option(
    "--api-auth",
    type=click.Choice([a.value for a in ApiAuth]),
    help="http_basic (default: htpasswd under --data-dir, created on first start) or noauth.",
)
@click.option(
    "--db",
    "db_url",
    metavar="URL",
    help="Inventory database (default sqlite in --data-dir; postgresql+psycopg://user@host/db).",
)
def serve(config: Path | None, **flags: Any) -> None:
    """Run DHCP, TFTP and HTTP boot services and the inventory API in one process.

    With --kernel every PXE client boots that kernel; without it, what each machine boots
    follows its node in the inventory (agent ramdisk, installer, local disk, or nothing).
    """
    settings = check_settings(build_settings(config, flags))
    booter: StaticBooter | None = None
    if settings.kernel is not None:
        booter = StaticBooter(settings.kernel, settings.initrds, settings.cmdline)
        booter.validate()
    else:
        from pxeforge.inventory.booter import check_settings as check_inventory_boot

        check_inventory_boot(settings)
    try:
        asyncio.run(_serve(settings, booter))
    except KeyboardInterrupt:
        pass
