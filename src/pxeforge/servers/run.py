"""Start and stop every listener of `pxeforge serve` together.

Each service starts in order (HTTP, TFTP, DHCP — clients need the files before they are told
where to fetch them); a failure to bind is turned into a `StartupError` that names the service,
the port and the usual fix, and whatever had started is closed again.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pxeforge.boot.booter import Booter
from pxeforge.boot.clients import ClientRegistry
from pxeforge.boot.resolve import BootFiles
from pxeforge.config import DhcpMode, Settings
from pxeforge.errors import StartupError

__all__ = ["Services", "start_services"]

log = logging.getLogger("pxeforge.serve")
T = TypeVar("T")


@dataclass
class Services:
    registry: ClientRegistry
    files: BootFiles
    http: Any = None
    tftp: Any = None
    dhcp: Any = None
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def close(self) -> None:
        while self._closers:
            closer = self._closers.pop()
            try:
                await closer()
            except Exception:  # pragma: no cover - best effort on shutdown
                log.exception("error while stopping a service")


async def _start(service: str, port: int, starter: Awaitable[T]) -> T:
    try:
        return await starter
    except PermissionError:
        raise StartupError(
            f"{service}: binding port {port} needs root (or CAP_NET_BIND_SERVICE); "
            f"run as root or pick a port above 1023 for testing"
        ) from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                f"{service}: port {port} is already in use by another program "
                f"(find it with `ss -lnup 'sport = :{port}'` / `ss -lntp 'sport = :{port}'`)"
            ) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise StartupError(
                f"{service}: address not available on this host ({exc.strerror}); check --address"
            ) from None
        if exc.errno == errno.ENODEV:
            raise StartupError(f"{service}: no such network interface ({exc.strerror})") from None
        raise StartupError(f"{service}: cannot start on port {port}: {exc.strerror}") from None


async def start_services(settings: Settings, booter: Booter) -> Services:
    """Start HTTP, TFTP and (unless off) DHCP; on any failure stop what started and raise."""
    from pxeforge.servers.dhcp import start_dhcp
    from pxeforge.servers.http import start_http
    from pxeforge.servers.tftp import start_tftp

    registry = ClientRegistry()
    files = BootFiles(booter, settings.root, registry, http_base=settings.http_base)
    services = Services(registry=registry, files=files)
    bind = str(settings.address) if settings.address is not None else "0.0.0.0"
    try:
        services.http = await _start(
            "HTTP",
            settings.http_port,
            start_http(
                bind,
                settings.http_port,
                files,
                booter=booter,
                registry=registry,
                http_base=settings.http_base,
            ),
        )
        services._closers.append(_async(services.http.close))
        log.info("HTTP on %s:%d", bind, services.http.port)
        services.tftp = await _start(
            "TFTP", settings.tftp_port, start_tftp(bind, settings.tftp_port, files)
        )
        services._closers.append(_async(services.tftp.close))
        log.info("TFTP on %s:%d", bind, services.tftp.port)
        if settings.dhcp_mode is not DhcpMode.OFF:
            pool = store = None
            if settings.dhcp_mode is DhcpMode.FULL:
                from pxeforge.leases import LeasePool, LeaseStore

                pool = _make_pool(settings, LeasePool)
                store = LeaseStore(Path(settings.data_dir) / "leases.db")
            services.dhcp = await _start(
                "DHCP",
                settings.dhcp_port,
                start_dhcp(settings, booter, registry, pool=pool, store=store),
            )
            services._closers.append(_async(services.dhcp.close))
            log.info(
                "DHCP (%s) on port %d%s",
                settings.dhcp_mode.value,
                settings.dhcp_port,
                f" and {settings.proxy_port}" if settings.dhcp_mode is DhcpMode.PROXY else "",
            )
    except BaseException:
        await services.close()
        raise
    return services


def _make_pool(settings: Settings, pool_cls: Any) -> Any:
    if settings.pool is None:
        raise StartupError("--dhcp full needs --pool FIRST-LAST")
    exclude = {a for a in (settings.address, settings.router) if a is not None}
    return pool_cls(
        settings.pool[0],
        settings.pool[1],
        subnet=settings.subnet,
        reservations=settings.reservations,
        exclude=exclude,
    )


def _async(fn: Callable[[], Any]) -> Callable[[], Awaitable[None]]:
    """Adapt a close() that may be sync or async."""

    async def call() -> None:
        result = fn()
        if isinstance(result, Awaitable):
            await result

    return call
