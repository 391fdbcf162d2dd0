"""HTTP boot server: boot files by sendfile, iPXE scripts, and the lab's callback.

Theory of operation
-------------------
One aiohttp application (low-level `web.AppRunner` + `web.TCPSite`), four kinds of request:

``GET/HEAD /<path>``
    A boot file from the `FileSource` (normally `pxeforge.boot.resolve.BootFiles`), with the
    client's IP address so per-machine configs can be found. The path is taken from the raw
    request line, percent-decoded once (strict UTF-8), then goes through the same
    `safe_relpath` rules as TFTP: ``..`` (also ``%2e%2e``), NUL and control characters are
    refused with 403, symlinks out of the root too (`RootFiles`), a miss is 404. Error bodies
    are one short line and never name a server path. Files on disk are sent with
    `web.FileResponse` (``loop.sendfile``; Content-Length, ``Range`` → 206, HEAD, ETag) opened
    through ``/proc/self/fd/N`` of the descriptor the file source already checked, so exactly
    that file is sent: no second path lookup, and none of FileResponse's ``.gz``/``.br``
    sibling substitution. Rendered files are plain responses with Content-Length.
``GET /boot.ipxe``
    The chain script (`render_ipxe_chain`): for each NIC it asks
    ``/ipxe?mac=${netX/mac}&uuid=${uuid}&arch=${buildarch}&platform=${platform}``, and sleeps
    before starting over when no NIC got an answer.
``GET /ipxe?mac=…``
    `render_ipxe` of ``booter.boot_spec(machine)``. The machine is the registry's entry for
    that MAC when the DHCP server saw it, else built from the query (``platform=pcbios`` →
    BIOS; ``platform=efi`` with ``arch`` x86_64 / i386 / arm64 / arm32 → the EFI firmware).
    No spec → 404 whose body is an iPXE script that prints why and sleeps (iPXE does not run
    a 404 body: ``chain`` fails and boot.ipxe's loop tries the next NIC, then waits).
``POST /_pxeforge/callback`` and ``GET /_pxeforge/callbacks``
    The lab's test guest reports back (at least ``mac``; usually ``cmdline`` and inventory).
    The body may be a JSON object, a form (``a=1&b=2``, what busybox ``wget --post-data``
    sends) or ``key=value`` lines; query parameters are merged under the body's. Records are
    logged ("callback from <mac>") and kept in memory, newest last, at most
    `CALLBACK_HISTORY`; the GET returns them as a JSON list. A malformed body is 400.
``GET /ks/<uuid>[/<name>]`` and ``POST /ks/<uuid>/done?token=…``
    Only when an `InstallerHooks` is given (``pxeforge serve`` with the inventory): the
    per-node installer file (kickstart, preseed, cloud-init ``user-data``/``meta-data``) and
    the installer's final callback. The server passes the UUID, name and token through and
    answers what the hooks say; it never sees the inventory.
``GET/HEAD /images/<name>``
    Only when an `ImageStore` is given (``pxeforge serve``: ``<data_dir>/images``, filled
    through the API's ``PUT /v1/images/<name>``): the disk image the agent ramdisk downloads,
    sent like a boot file (sendfile from the descriptor `ImageStore.open` checked — a safe
    name, a regular file, no symlink — with Range and HEAD). Any other name is 404. This path
    shadows a boot-root directory named ``images``.

Every answered request, once its response is completely sent (sendfile included), updates
`HttpServer.stats` and, if ``on_event`` is given, becomes one `HttpEvent` (client address,
path, status, bytes, seconds; the MAC of ``/ipxe?mac=``, the node of ``/ks/<uuid>``): the hook
is aiohttp's access logger (`_AccessLog`), the one place that sees a response end.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import os
import re
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address
from typing import Any, Final, Protocol
from urllib.parse import parse_qsl, unquote

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_log import AccessLogger

from pxeforge.boot.booter import Booter
from pxeforge.boot.clients import ClientRegistry
from pxeforge.boot.files import BootFile, FileSource
from pxeforge.boot.machine import Firmware, Machine, normalize_mac
from pxeforge.boot.render import IPXE_RETRY_SECONDS, render_ipxe, render_ipxe_chain
from pxeforge.errors import AccessViolation, FileNotFound
from pxeforge.images import ImageNotFound, ImageStore

__all__ = [
    "CALLBACK_HISTORY",
    "HttpEvent",
    "HttpServer",
    "HttpStats",
    "InstallerHooks",
    "firmware_from_ipxe",
    "parse_callback",
    "start_http",
]

log = logging.getLogger("pxeforge.http")
access_log = logging.getLogger("pxeforge.http.access")


class _ClientFaultFilter(logging.Filter):
    """aiohttp logs every request its parser refuses as ERROR with a traceback; that is the
    client's fault (answered 400), so it becomes one INFO line naming the client."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            text = record.getMessage()
            record.msg = "%s: refused a malformed request (%s)"
            record.args = (text, exc.message or type(exc).__name__)
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


_server_log = logging.getLogger("pxeforge.http.server")
_server_log.addFilter(_ClientFaultFilter())

CALLBACK_HISTORY = 1000
CALLBACK_MAX_BYTES = 64 * 1024  # request bodies: callbacks are small
TEXT = "text/plain"

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# iPXE ${buildarch} under ${platform} efi → firmware (BIOS iPXE is i386 or x86_64 alike).
_EFI_BY_BUILDARCH = {
    "x86_64": Firmware.EFI_X64,
    "i386": Firmware.EFI_IA32,
    "arm64": Firmware.EFI_ARM64,
    "arm32": Firmware.EFI_ARM32,
}


def firmware_from_ipxe(buildarch: str, platform: str) -> Firmware:
    """Firmware from iPXE's ``${buildarch}`` and ``${platform}`` settings."""
    if platform == "pcbios":
        return Firmware.BIOS
    if platform == "efi":
        return _EFI_BY_BUILDARCH.get(buildarch, Firmware.UNKNOWN)
    return Firmware.UNKNOWN


def parse_callback(body: bytes, query: Mapping[str, str]) -> dict[str, Any]:
    """A callback record from a JSON object, form or ``key=value`` lines; `ValueError` if bad."""
    try:
        text = body.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ValueError("body is not UTF-8") from None
    data: dict[str, Any]
    if text.startswith("{"):
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"bad JSON: {exc.msg} at offset {exc.pos}") from None
        if not isinstance(loaded, dict):
            raise ValueError("JSON body must be an object")
        data = loaded
    elif text:
        form = text.replace("\r\n", "&").replace("\n", "&")
        try:
            data = dict(parse_qsl(form, keep_blank_values=True, strict_parsing=True))
        except ValueError:
            raise ValueError("body is neither JSON nor key=value pairs") from None
    else:
        data = {}
    record: dict[str, Any] = {**query, **data}
    mac = record.get("mac")
    if not isinstance(mac, str):
        raise ValueError("'mac' is missing")
    record["mac"] = normalize_mac(mac)  # ValueError names the bad value
    return record


class InstallerHooks(Protocol):
    """What the HTTP server asks about installer deploys; answers are (status, text body)."""

    async def installer_config(self, node: str, name: str) -> tuple[int, str]:
        """``GET /ks/<node>`` (``name`` "") or ``/ks/<node>/<name>``."""
        ...

    async def installer_done(self, node: str, token: str) -> tuple[int, str]:
        """``POST /ks/<node>/done?token=<token>``: the installer finished."""
        ...


@dataclass(frozen=True, slots=True)
class HttpEvent:
    """One answered request (sent completely, or as far as the client took it)."""

    client: str  # the client's address as aiohttp saw it ("" if unknown)
    method: str
    path: str  # without the query
    status: int
    bytes: int  # body bytes sent
    seconds: float  # from the request's arrival to the end of the response
    mac: str | None = None  # /ipxe?mac=…
    node: str | None = None  # /ks/<uuid>…


@dataclass(slots=True)
class HttpStats:
    responses: Counter[int] = field(default_factory=Counter)  # by status code
    bytes_sent: int = 0  # response body bytes


@dataclass
class HttpServer:
    """A running HTTP server; ``port`` is the bound port (useful with port 0)."""

    port: int
    http_base: str
    callbacks: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=CALLBACK_HISTORY))
    stats: HttpStats = field(default_factory=HttpStats)
    on_event: Callable[[HttpEvent], object] | None = None
    _runner: web.AppRunner | None = None

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def _answered(self, request: web.BaseRequest, response: web.StreamResponse, t: float) -> None:
        size = _body_bytes(request, response)
        self.stats.responses[response.status] += 1
        self.stats.bytes_sent += size
        if self.on_event is None:
            return
        path = request.path
        mac = node = None
        if path == "/ipxe":
            try:
                mac = normalize_mac(request.query.get("mac", ""))
            except ValueError:
                mac = None
        elif path.startswith("/ks/"):
            candidate = path[4:].partition("/")[0].lower()
            node = candidate if _UUID.fullmatch(candidate) else None
        event = HttpEvent(
            request.remote or "", request.method, path, response.status, size, t, mac, node
        )
        try:
            self.on_event(event)
        except Exception:
            log.exception("HTTP event handler failed")


def _body_bytes(request: web.BaseRequest, response: web.StreamResponse) -> int:
    """Body bytes sent: a sendfile bypasses aiohttp's byte count, Content-Length does not."""
    if request.method == "HEAD" or response.status in (204, 304):
        return 0
    if isinstance(response, web.FileResponse) and response.content_length is not None:
        return response.content_length
    return response.body_length


class _AccessLog(AccessLogger):
    """aiohttp's access log line (when INFO is on), then `HttpServer._answered`."""

    @property
    def enabled(self) -> bool:
        return True

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if self.logger.isEnabledFor(logging.INFO):
            super().log(request, response, time)
        server = None
        if isinstance(request, web.Request):
            try:
                server = request.app.get(_SERVER)
            except (AssertionError, AttributeError):
                pass  # a request the parser refused never matched a route: it has no app
        if server is not None:
            server._answered(request, response, time)


_SERVER: Final = web.AppKey("pxeforge_http_server", HttpServer)


class _Closable(Protocol):
    def close(self) -> None: ...


class _Descriptor:
    """An open file descriptor as something to close."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _OpenFileResponse(web.FileResponse):
    """`web.FileResponse` of an already opened, already checked file; closes it when sent."""

    def __init__(self, file: BootFile | _Closable, fd: int, content_type: str) -> None:
        super().__init__(f"/proc/self/fd/{fd}", headers={hdrs.CONTENT_TYPE: content_type})
        self._file = file

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        try:
            return await super().prepare(request)
        finally:
            self._file.close()


def _client_ip(request: web.BaseRequest) -> IPv4Address | None:
    try:
        return IPv4Address(request.remote or "")
    except ValueError:
        return None


def _content_type(name: str) -> str:
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed or "application/octet-stream"


def _text(status: int, body: str) -> web.Response:
    return web.Response(status=status, text=body, content_type=TEXT)


class _Handlers:
    def __init__(
        self,
        files: FileSource,
        booter: Booter,
        registry: ClientRegistry,
        server: HttpServer,
        installer: InstallerHooks | None = None,
        images: ImageStore | None = None,
    ) -> None:
        self.files = files
        self.booter = booter
        self.registry = registry
        self.server = server
        self.installer = installer
        self.images = images

    async def image(self, request: web.Request) -> web.StreamResponse:
        assert self.images is not None
        try:
            fd = self.images.open(request.match_info["name"])
        except ImageNotFound:
            return _text(404, "not found\n")
        return _OpenFileResponse(_Descriptor(fd), fd, "application/octet-stream")

    async def file(self, request: web.Request) -> web.StreamResponse:
        raw = request.raw_path.partition("?")[0]
        try:
            path = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            return _text(400, "bad request: path is not UTF-8\n")
        client = _client_ip(request)
        try:
            boot_file = self.files.open(path, client)
        except FileNotFound:
            return _text(404, "not found\n")
        except AccessViolation as exc:
            log.warning("HTTP %s from %s refused: %s", raw[:200], request.remote, exc)
            return _text(403, "forbidden\n")
        if boot_file.path is not None:
            content_type = _content_type(boot_file.name)
            fileno = getattr(boot_file, "fileno", None)
            if callable(fileno):
                return _OpenFileResponse(boot_file, fileno(), content_type)
            boot_file.close()  # a disk file we cannot hold open: serve it by path
            return web.FileResponse(boot_file.path, headers={hdrs.CONTENT_TYPE: content_type})
        try:
            data = boot_file.read_at(0, boot_file.size)
        finally:
            boot_file.close()
        return web.Response(body=data, content_type=TEXT)

    async def boot_ipxe(self, request: web.Request) -> web.Response:
        return _text(200, render_ipxe_chain(self.server.http_base))

    async def ipxe(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            mac = normalize_mac(query.get("mac", ""))
        except ValueError:
            return _text(400, self._wait_script("no valid mac= in the request"))
        machine = self.registry.by_mac(mac)
        firmware = firmware_from_ipxe(query.get("arch", ""), query.get("platform", ""))
        if machine is None:
            uuid = query.get("uuid", "").lower()
            machine = Machine(
                mac=mac,
                firmware=firmware,
                uuid=uuid if _UUID.fullmatch(uuid) else None,
                ipxe=True,
                ip=_client_ip(request),
            )
        else:  # DHCP's option 93 is the better witness of the firmware; keep it when known
            known = machine.firmware is not Firmware.UNKNOWN
            machine = replace(machine, firmware=machine.firmware if known else firmware, ipxe=True)
        spec = self.booter.boot_spec(machine)
        if spec is None:
            log.info("iPXE script for %s: no boot configuration", mac)
            return _text(404, self._wait_script(f"no boot configuration for {mac}"))
        try:
            script = render_ipxe(spec, http_base=self.server.http_base, firmware=machine.firmware)
        except ValueError as exc:
            log.error("iPXE script for %s: booter's boot spec refused: %s", mac, exc)
            return _text(500, self._wait_script(f"boot configuration for {mac} refused"))
        log.info("iPXE script for %s (%s)", mac, machine.firmware.value)
        return _text(200, script)

    def _wait_script(self, why: str) -> str:
        return (
            f"#!ipxe\necho pxeforge: {why}\nsleep {IPXE_RETRY_SECONDS}\n"
            f"chain --autofree {self.server.http_base.rstrip('/')}/boot.ipxe\n"
        )

    async def callback(self, request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except ConnectionError:  # the client hung up before its whole body arrived
            log.info(
                "callback from %s: connection lost before the body was complete", request.remote
            )
            return _text(400, "incomplete body\n")
        try:
            record = parse_callback(body, request.query)
        except ValueError as exc:
            log.warning("bad callback from %s: %s", request.remote, exc)
            return _text(400, f"bad callback: {exc}\n")
        record["remote"] = request.remote
        record["time"] = time.time()
        self.server.callbacks.append(record)
        log.info("callback from %s (%s)", record["mac"], request.remote)
        return web.json_response({"ok": True})

    async def callbacks(self, request: web.Request) -> web.Response:
        return web.json_response(list(self.server.callbacks))

    async def installer_config(self, request: web.Request) -> web.Response:
        assert self.installer is not None
        node, name = request.match_info["node"], request.match_info.get("name", "")
        if not _UUID.fullmatch(node):
            return _text(404, "not found\n")
        try:
            status, body = await self.installer.installer_config(node, name)
        except Exception:  # a bug in the hooks: one 500, the server goes on
            log.exception("installer file %s/%s for %s", node, name, request.remote)
            return _text(500, "internal error\n")
        return _text(status, body)

    async def installer_done(self, request: web.Request) -> web.Response:
        assert self.installer is not None
        node, token = request.match_info["node"], request.query.get("token", "")
        if not _UUID.fullmatch(node) or not token:
            return _text(404, "not found\n")
        try:
            await request.read()  # the body (curl sends none, wget "done") is ignored
        except ConnectionError:
            return _text(400, "incomplete body\n")
        try:
            status, body = await self.installer.installer_done(node, token)
        except Exception:
            log.exception("installer callback for %s from %s", node, request.remote)
            return _text(500, "internal error\n")
        log.info("installer callback for %s from %s: %d", node, request.remote, status)
        return _text(status, body)


async def start_http(
    host: str,
    port: int,
    files: FileSource,
    *,
    booter: Booter,
    registry: ClientRegistry,
    http_base: str | None = None,
    installer: InstallerHooks | None = None,
    on_event: Callable[[HttpEvent], object] | None = None,
    images: ImageStore | None = None,
) -> HttpServer:
    """Bind and serve. ``http_base`` (the URL clients reach us at) defaults to the bound
    ``http://host:port`` — what tests on port 0 want; ``pxeforge serve`` passes its own.
    ``installer``: serve ``/ks/…`` through these hooks (see the module docstring).
    ``on_event``: called with an `HttpEvent` for every answered request.
    ``images``: serve ``/images/<name>`` from this store."""
    server = HttpServer(port=0, http_base=http_base or "", on_event=on_event)
    handlers = _Handlers(files, booter, registry, server, installer, images)
    app = web.Application(client_max_size=CALLBACK_MAX_BYTES)
    app[_SERVER] = server
    app.router.add_get("/boot.ipxe", handlers.boot_ipxe)
    app.router.add_get("/ipxe", handlers.ipxe)
    app.router.add_post("/_pxeforge/callback", handlers.callback)
    app.router.add_get("/_pxeforge/callbacks", handlers.callbacks)
    if installer is not None:
        app.router.add_get("/ks/{node}", handlers.installer_config)
        app.router.add_get("/ks/{node}/{name}", handlers.installer_config)
        app.router.add_post("/ks/{node}/done", handlers.installer_done)
    if images is not None:
        app.router.add_get("/images/{name}", handlers.image)
    app.router.add_get(r"/{path:[\s\S]*}", handlers.file)
    runner = web.AppRunner(
        app, access_log=access_log, access_log_class=_AccessLog, logger=_server_log
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    server._runner = runner
    server.port = int(runner.addresses[0][1])
    if not server.http_base:
        shown = "127.0.0.1" if host in ("", "0.0.0.0") else host
        server.http_base = f"http://{shown}:{server.port}"
    return server
