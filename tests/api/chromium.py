"""Headless Chromium driven over the DevTools protocol, for the dashboard's browser tests.

Why the DevTools protocol (CDP) and not selenium + chromedriver: it needs no new Python
dependency (aiohttp, already one, speaks WebSocket), no chromedriver whose version must track
the browser's, and it gives the tests exactly what they use: navigate, run JavaScript in the
page, screenshots, the page's console errors and CSP violations, and the answer to an HTTP
Basic challenge (``Fetch.authRequired``: what a person types into the browser's prompt).

`Browser` starts Debian's ``chromium`` with a fresh profile and ``--remote-debugging-port=0``
(Chromium writes the port it chose into ``DevToolsActivePort`` in the profile), in its own
process group, and stops that group by its id. `Page` is one tab's WebSocket session.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

FLAGS = (
    "--headless",
    "--no-sandbox",  # we run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--window-size=1280,900",
)


def chromium_binary() -> str | None:
    """The browser itself (not Debian's wrapper script, which cannot ``exec``)."""
    for candidate in ("/usr/lib/chromium/chromium", shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


class CdpError(Exception):
    pass


class Browser:
    """One headless Chromium with a throwaway profile under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.profile = root / "profile"
        self.log = root / "chromium.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self, timeout: float = 60.0) -> Browser:
        binary = chromium_binary()
        assert binary is not None, "chromium is not installed (scripts/setup.sh --test)"
        self.profile.mkdir(parents=True)
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    *FLAGS,
                    f"--user-data-dir={self.profile}",
                    "--remote-debugging-address=127.0.0.1",
                    "--remote-debugging-port=0",
                    "about:blank",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # its own process group: stopped as one in close()
            )
        active = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while True:
            if active.exists():
                first = active.read_text().split("\n", 1)[0].strip()
                if first.isdigit():
                    self.port = int(first)
                    return self
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError("chromium did not open its DevTools port")
            time.sleep(0.05)

    def close(self) -> None:
        process = self.process
        if process is None:
            return
        self.process = None
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        else:
            try:  # the browser is gone; helpers left in its group are not
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    async def page(self) -> Page:
        """A session on the browser's first tab."""
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{self.port}/json/list") as reply:
                targets = await reply.json()
        url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        page = Page(url)
        await page.connect()
        return page


class Page:
    """One tab: commands, events, and what the page complained about (`errors`)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.errors: list[str] = []
        self.credentials: tuple[str, str] | None = None  # answers Basic challenges when set
        self.challenges = 0
        self._tries: dict[str, int] = {}
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._waiters: list[tuple[str, asyncio.Future[dict[str, Any]]]] = []
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(self.url, max_msg_size=64 * 1024 * 1024)
        self._reader = asyncio.create_task(self._read())
        for domain in ("Page", "Runtime", "Log"):
            await self.send(f"{domain}.enable")
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            width=1280,
            height=900,
            deviceScaleFactor=1,
            mobile=False,
        )

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):
                pass
        if self._session is not None:
            await self._session.close()

    # -- protocol --

    async def _read(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            if "id" in data:
                future = self._pending.pop(data["id"], None)
                if future is not None and not future.done():
                    if "error" in data:
                        future.set_exception(CdpError(data["error"]))
                    else:
                        future.set_result(data.get("result", {}))
            else:
                self._event(data["method"], data.get("params", {}))
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError("the DevTools connection closed"))

    def _event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(details.get("exception", {}).get("description") or str(details))
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            self.errors.append(" ".join(str(a.get("value")) for a in params["args"]))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            self.errors.append(f"{entry.get('source')}: {entry['text']} {entry.get('url', '')}")
        elif method == "Fetch.requestPaused":
            self._fire("Fetch.continueRequest", requestId=params["requestId"])
        elif method == "Fetch.authRequired":
            self.challenges += 1
            tries = self._tries[params["requestId"]] = self._tries.get(params["requestId"], 0) + 1
            if self.credentials is None or tries > 2:  # wrong twice: give up, as people do
                answer = {"response": "CancelAuth"}
            else:
                user, password = self.credentials
                answer = {"response": "ProvideCredentials", "username": user,
                          "password": password}  # fmt: skip
            self._fire(
                "Fetch.continueWithAuth",
                requestId=params["requestId"],
                authChallengeResponse=answer,
            )
        for wanted, future in list(self._waiters):
            if wanted == method and not future.done():
                future.set_result(params)
                self._waiters.remove((wanted, future))

    def _fire(self, method: str, **params: Any) -> None:
        """Send without waiting for the answer (from the reader: it cannot wait on itself)."""
        assert self._ws is not None
        message = json.dumps({"id": next(self._ids), "method": method, "params": params})
        asyncio.ensure_future(self._ws.send_str(message))

    async def send(self, method: str, *, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        assert self._ws is not None
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        await self._ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        return await asyncio.wait_for(future, timeout)

    def expect(self, method: str) -> asyncio.Future[dict[str, Any]]:
        """A future for the next ``method`` event (register it before causing the event)."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.append((method, future))
        return future

    # -- what the tests use --

    async def loads(self, action: Callable[[], Awaitable[Any]], timeout: float = 30.0) -> None:
        """Run ``action`` (a navigation, a click) and wait for the new page's load event."""
        loaded = self.expect("Page.loadEventFired")
        await action()
        await asyncio.wait_for(loaded, timeout)

    async def navigate(self, url: str, timeout: float = 30.0) -> None:
        async def go() -> None:
            result = await self.send("Page.navigate", url=url)
            if result.get("errorText"):
                raise CdpError(f"{url}: {result['errorText']}")

        await self.loads(go, timeout)

    async def evaluate(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise CdpError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 15.0) -> Any:
        """Poll ``expression`` until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"still false after {timeout} s: {expression}")
            await asyncio.sleep(0.05)

    async def screenshot(self, path: Path) -> None:
        result = await self.send("Page.captureScreenshot", format="png")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(result["data"]))

    async def handle_basic_auth(self, credentials: tuple[str, str] | None) -> None:
        """Answer HTTP Basic challenges from now on, as a person at the browser's prompt
        would: with ``credentials`` (change them with `credentials`), or Cancel (None)."""
        self.credentials = credentials
        await self.send("Fetch.enable", handleAuthRequests=True, patterns=[{"urlPattern": "*"}])
