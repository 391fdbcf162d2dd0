"""Start and stop every listener of `pxeforge serve` together.

Each service starts in order (HTTP, TFTP, DHCP — clients need the files before they are told
where to fetch them — then the inventory and its REST API); a failure to bind is turned into a
`StartupError` that names the service, the port and the usual fix, and whatever had started is
closed again.

The HTTP server also serves the images uploaded through the API (``/images/<name>`` from
``<data_dir>/images``, `pxeforge.images`).

Without a booter (``pxeforge serve`` without ``--kernel``) the boot plane follows the
inventory: the database and the conductor start *first* (`_open_inventory`), then the
servers with an `InventoryBooter` and the installer hooks (`InstallerService`, ``/ks/…``),
then the API. With a booter (``--kernel``: `StaticBooter`) the inventory starts last.

The inventory part (`_open_inventory`, `_start_api`): open the database (``--db``, default SQLite in
``--data-dir``; migrations run), start the conductor (register, `recover_stuck`, periodic
heartbeat and wait timeouts), create the ``http_basic`` credentials on first start (returned in
`Services.new_credentials` for the caller to print once), and serve the API on ``--api-port``.

One `Timeline` per process (`Services.timeline`, sized by ``timeline_per_key`` /
``timeline_max_keys``): every service records into it (`pxeforge.recording`: the servers'
``on_event``, the store's history observers, the API's agent middleware) and the API reads it
(`ApiContext.timeline`). With ``timeline = false`` nothing records; it stays empty.
One `Metrics` per process too (`Services.metrics`, served at ``/metrics``): it reads the
servers' own counters when scraped and observes the store's history.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pxeforge.boot.booter import Booter
from pxeforge.boot.clients import ClientRegistry
from pxeforge.boot.resolve import BootFiles
from pxeforge.config import DhcpMode, Settings
from pxeforge.errors import StartupError
from pxeforge.images import ImageStore
from pxeforge.metrics import Metrics
from pxeforge.protocols.tftp import TransferConfig
from pxeforge.recording import BootPlaneRecorder, HistoryRecorder
from pxeforge.timeline import Timeline

__all__ = ["Services", "start_services"]

log = logging.getLogger("pxeforge.serve")
T = TypeVar("T")


@dataclass
class Services:
    registry: ClientRegistry
    timeline: Timeline = field(default_factory=Timeline)  # start_services sizes it from Settings
    metrics: Metrics = field(default_factory=Metrics)
    recorder: BootPlaneRecorder | None = None  # None: the timeline is off
    files: BootFiles | None = None  # set once the booter is known
    http: Any = None
    tftp: Any = None
    dhcp: Any = None
    api: Any = None  # pxeforge.api.app.ApiServer
    booter: Any = None  # the Booter in use (an InventoryBooter without --kernel)
    installer: Any = None  # pxeforge.deploy.installer.InstallerService (inventory booter only)
    conductor: Any = None  # pxeforge.conductor.Conductor
    store: Any = None  # pxeforge.inventory.store.Store
    new_credentials: Any = None  # pxeforge.api.auth.Credentials, first start only
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


async def start_services(settings: Settings, booter: Booter | None = None) -> Services:
    """Start HTTP, TFTP, (unless off) DHCP and the inventory with its API; on any failure stop
    what started and raise. ``booter`` None: the `InventoryBooter` (see the docstring)."""
    from pxeforge.servers.dhcp import start_dhcp
    from pxeforge.servers.http import start_http
    from pxeforge.servers.tftp import start_tftp

    registry = ClientRegistry()
    timeline = Timeline(
        per_key=settings.timeline_per_key,
        max_keys=settings.timeline_max_keys,
        max_events=settings.timeline_max_events,
    )
    services = Services(registry=registry, timeline=timeline)
    if settings.timeline:
        services.recorder = BootPlaneRecorder(timeline, registry, next_server=settings.address)
    recorder = services.recorder
    bind = str(settings.address) if settings.address is not None else "0.0.0.0"
    try:
        if booter is None:
            booter = await _open_inventory(settings, services)
        services.booter = booter
        files = BootFiles(booter, settings.root, registry, http_base=settings.http_base)
        services.files = files
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
                installer=services.installer,
                on_event=recorder.http if recorder is not None else None,
                images=ImageStore(Path(settings.data_dir) / "images"),
            ),
        )
        services._closers.append(_async(services.http.close))
        log.info("HTTP on %s:%d", bind, services.http.port)
        services.tftp = await _start(
            "TFTP",
            settings.tftp_port,
            start_tftp(
                bind,
                settings.tftp_port,
                files,
                config=_tftp_config(settings),
                on_event=recorder.tftp if recorder is not None else None,
            ),
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
                start_dhcp(
                    settings,
                    booter,
                    registry,
                    pool=pool,
                    store=store,
                    on_event=recorder.dhcp if recorder is not None else None,
                ),
            )
            if recorder is not None and services.dhcp.responder is not None:
                recorder.pool = services.dhcp.responder.pool
            services._closers.append(_async(services.dhcp.close))
            log.info(
                "DHCP (%s) on port %d%s",
                settings.dhcp_mode.value,
                settings.dhcp_port,
                f" and {settings.proxy_port}" if settings.dhcp_mode is DhcpMode.PROXY else "",
            )
        await _start_api(settings, services, bind)
        services.metrics.watch(services)
    except BaseException:
        await services.close()
        raise
    return services


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not even a URL: say so without echoing it back
        return "(unparsable URL)"


async def _open_inventory(settings: Settings, services: Services) -> Booter:
    """Database and conductor, then the `InventoryBooter` and the installer hooks over them."""
    from pxeforge.deploy.installer import InstallerService
    from pxeforge.inventory.booter import InventoryBooter

    await _open_store(settings, services)
    booter = InventoryBooter(services.store, settings)
    services.installer = InstallerService(services.store, settings, booter=booter)
    await _start_conductor(settings, services)
    services.installer.conductor = services.conductor
    return booter


async def _open_store(settings: Settings, services: Services) -> None:
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from pxeforge.inventory.db import default_url
    from pxeforge.inventory.store import Store

    url = settings.db_url or default_url(Path(settings.data_dir))
    try:
        store = await asyncio.to_thread(Store.connect, url)
    except (SQLAlchemyError, ArgumentError, ValueError, OSError, ImportError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StartupError(
            f"database {_redacted(url)}: cannot open or migrate it ({reason}); check --db"
        ) from None
    services.store = store
    services._closers.append(_async(store.close))
    store.observers.append(services.metrics.observe_history)
    if settings.timeline:
        store.observers.append(HistoryRecorder(services.timeline, store))


async def _start_conductor(settings: Settings, services: Services) -> None:
    from sqlalchemy.exc import SQLAlchemyError

    from pxeforge.conductor.manager import Conductor
    from pxeforge.inventory.db import default_url

    url = settings.db_url or default_url(Path(settings.data_dir))
    store = services.store
    holder = f"{socket.gethostname()}:{settings.api_port}"
    conductor = Conductor(store, holder=holder, settings=settings)
    try:
        await conductor.start()
    except SQLAlchemyError as exc:
        raise StartupError(f"database {_redacted(url)}: {str(exc).splitlines()[0]}") from None
    services.conductor = conductor
    services._closers.append(conductor.stop)


async def _start_api(settings: Settings, services: Services, bind: str) -> None:
    """Database and conductor (unless already open), then the REST API."""
    from pxeforge.api.app import ApiContext, start_api
    from pxeforge.api.auth import HTPASSWD_FILE, Htpasswd, ensure_credentials
    from pxeforge.config import ApiAuth

    if services.store is None:
        await _open_store(settings, services)
    if services.conductor is None:
        await _start_conductor(settings, services)
    store, conductor = services.store, services.conductor
    htpasswd = None
    if settings.api_auth is ApiAuth.HTTP_BASIC:
        data_dir = Path(settings.data_dir)
        try:
            services.new_credentials = await asyncio.to_thread(ensure_credentials, data_dir)
        except OSError as exc:
            raise StartupError(
                f"API: cannot create the http_basic credentials in {data_dir}: {exc.strerror} "
                "(fix --data-dir, or run with --api-auth noauth on a trusted network)"
            ) from None
        htpasswd = Htpasswd(data_dir / HTPASSWD_FILE)
    ctx = ApiContext(
        store, conductor, htpasswd, timeline=services.timeline, metrics=services.metrics
    )
    ctx.record_agent = settings.timeline
    services._closers.append(_async(ctx.close))
    services.api = await _start("API", settings.api_port, start_api(ctx, bind, settings.api_port))
    services._closers.append(_async(services.api.close))
    log.info("API on %s:%d (auth %s)", bind, services.api.port, settings.api_auth.value)


def _tftp_config(settings: Settings) -> TransferConfig:
    return TransferConfig(
        timeout=settings.tftp_timeout,
        retries=settings.tftp_retries,
        max_blksize=settings.tftp_max_blksize,
        max_windowsize=settings.tftp_max_windowsize,
        max_transfers=settings.tftp_max_transfers,
    )


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
