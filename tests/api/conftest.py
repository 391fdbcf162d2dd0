"""A live API server for the tests: real store (SQLite or PostgreSQL), real conductor, real
aiohttp server on 127.0.0.1, talked to over HTTP with `http.client`.

The server runs its own event loop in a thread (`LiveApi`), so test functions stay plain sync
code. Drivers are the real ``fake-hardware`` and ``manual-management`` objects, one
`FakeDriver` per server so tests can look at its machines and calls.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pxeforge.api.app import ApiContext, ApiServer, start_api
from pxeforge.api.auth import Htpasswd, ensure_credentials
from pxeforge.conductor.manager import Conductor
from pxeforge.config import Settings
from pxeforge.drivers.base import Driver, UnknownDriver
from pxeforge.drivers.fake import FakeDriver
from pxeforge.drivers.manual import ManualDriver
from pxeforge.inventory.store import Store

LATEST = "1.87"


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    raw: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.raw)

    @property
    def fault(self) -> str:
        """The faultstring of an Ironic error body (decoded twice, as the client does)."""
        body = json.loads(self.raw)
        assert set(body) == {"error_message"}, body
        inner = json.loads(body["error_message"])
        assert set(inner) == {"faultstring", "faultcode", "debuginfo"}, inner
        assert inner["faultcode"] == ("Client" if self.status < 500 else "Server")
        text: str = inner["faultstring"]
        return text


class LiveApi:
    """The API and conductor on a thread's event loop, on a free loopback port."""

    def __init__(
        self,
        db_url: str,
        *,
        data_dir: Path | None = None,
        settings: Settings | None = None,
        workers: int = 16,
    ) -> None:
        self.db_url = db_url
        self.fake = FakeDriver()
        self.manual = ManualDriver()
        self.settings = settings or Settings()
        self.data_dir = data_dir
        self.workers = workers
        self.password: str | None = None
        self.user: str | None = None
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def drivers(self, name: str) -> Driver:
        if name == "fake-hardware":
            return self.fake
        if name == "manual-management":
            return self.manual
        raise UnknownDriver(f"No valid driver: {name!r} is not enabled")

    def start(self) -> LiveApi:
        self.store = Store.connect(self.db_url)
        self.conductor = Conductor(
            self.store,
            self.drivers,
            holder="test-conductor",
            settings=self.settings,
            workers=self.workers,
        )
        htpasswd = None
        if self.data_dir is not None:
            creds = ensure_credentials(self.data_dir)
            assert creds is not None
            self.user, self.password = creds.user, creds.password
            htpasswd = Htpasswd(self.data_dir / "htpasswd")
        self.ctx = ApiContext(self.store, self.conductor, htpasswd)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        server: ApiServer | None = None
        try:
            await self.conductor.start()
            server = await start_api(self.ctx, "127.0.0.1", 0)
            self.port = server.port
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await server.close()
            await self.conductor.stop()

    def close(self) -> None:
        if self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(30)
        self.ctx.close()
        self.store.close()

    # -- client --

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        version: str | None = LATEST,
        raw: bytes | None = None,
        auth: tuple[str, str] | None | bool = True,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            sent = dict(headers or {})
            if version is not None:
                sent["X-OpenStack-Ironic-API-Version"] = version
            if auth is True and self.password is not None:
                auth = (self.user or "", self.password)
            if isinstance(auth, tuple):
                token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
                sent["Authorization"] = f"Basic {token}"
            data = raw
            if data is None and body is not None:
                data = json.dumps(body).encode()
                sent["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=sent)
            response = conn.getresponse()
            return Reply(response.status, response.headers, response.read())
        finally:
            conn.close()

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.request("POST", path, body, **kw)

    def put(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.request("PUT", path, body, **kw)

    def patch(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.request("PATCH", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> Reply:
        return self.request("DELETE", path, **kw)

    def wait_idle(self) -> None:
        self.conductor.wait_idle()

    def node(self, ident: str) -> dict[str, Any]:
        reply = self.get(f"/v1/nodes/{ident}")
        assert reply.status == 200, reply.raw
        node: dict[str, Any] = reply.json
        return node


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'pxeforge.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def api(db_url: str) -> Iterator[LiveApi]:
    """A live API with ``noauth``."""
    live = LiveApi(db_url).start()
    try:
        yield live
    finally:
        live.close()


@pytest.fixture
def sqlite_api(tmp_path: Path) -> Iterator[LiveApi]:
    """A live API on SQLite only (for tests whose point is not the database)."""
    live = LiveApi(f"sqlite:///{tmp_path / 'pxeforge.db'}").start()
    try:
        yield live
    finally:
        live.close()
