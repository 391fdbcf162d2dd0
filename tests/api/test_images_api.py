"""``/v1/images`` over HTTP with http_basic auth: streamed upload beyond the JSON body limit,
list/show/delete, safe names, an interrupted upload stores nothing."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxeforge.config import Settings

from .conftest import LiveApi


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveApi]:
    settings = Settings(data_dir=tmp_path / "data", address=None, http_port=8123)
    api = LiveApi(f"sqlite:///{tmp_path / 'db.sqlite'}", data_dir=tmp_path,
                  settings=settings).start()  # fmt: skip
    try:
        yield api
    finally:
        api.close()


def put(api: LiveApi, name: str, data: bytes, **kw: object) -> object:
    return api.request("PUT", f"/v1/images/{name}", raw=data,
                       headers={"Content-Type": "application/octet-stream"}, **kw)  # type: ignore[arg-type]  # fmt: skip


def test_upload_list_show_delete(live: LiveApi, tmp_path: Path) -> None:
    data = os.urandom(5 * 1024 * 1024 + 7)  # beyond the API's 1 MiB JSON body limit
    reply = put(live, "disk.raw", data)
    assert reply.status == 201, reply.raw  # type: ignore[attr-defined]
    answer = reply.json  # type: ignore[attr-defined]
    assert answer == {
        "name": "disk.raw",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "sha512": hashlib.sha512(data).hexdigest(),
        "url": "http://127.0.0.1:8123/images/disk.raw",
    }
    assert (tmp_path / "data" / "images" / "disk.raw").read_bytes() == data
    assert live.get("/v1/images").json == {"images": [answer]}
    assert live.get("/v1/images/disk.raw").json == answer
    assert live.delete("/v1/images/disk.raw").status == 204
    assert live.get("/v1/images").json == {"images": []}
    missing = live.get("/v1/images/disk.raw")
    assert missing.status == 404 and "disk.raw could not be found" in missing.fault
    assert live.delete("/v1/images/disk.raw").status == 404


def test_auth_and_names(live: LiveApi) -> None:
    assert put(live, "disk.raw", b"x", auth=False).status == 401  # type: ignore[attr-defined]
    assert live.get("/v1/images", auth=False).status == 401
    for name in (".hidden", "a%20b", "-x", "%2e%2e"):
        reply = put(live, name, b"x")
        assert reply.status == 400, (name, reply.raw)  # type: ignore[attr-defined]
        assert "Invalid image name" in reply.fault  # type: ignore[attr-defined]
    assert live.get("/v1/images").json == {"images": []}


def test_interrupted_upload_stores_nothing(live: LiveApi, tmp_path: Path) -> None:
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        auth = __import__("base64").b64encode(f"{live.user}:{live.password}".encode()).decode()
        sock.sendall(
            b"PUT /v1/images/cut.raw HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n"
            + f"Authorization: Basic {auth}\r\n\r\n".encode()
            + b"y" * 100_000
        )
        time.sleep(0.3)
    images = tmp_path / "data" / "images"
    deadline = time.monotonic() + 10
    while any(p.name.startswith(".upload") for p in images.iterdir()):
        assert time.monotonic() < deadline, list(images.iterdir())
        time.sleep(0.05)
    assert live.get("/v1/images").json == {"images": []}
    assert not (images / "cut.raw").exists()
    # the server keeps serving
    assert put(live, "ok.raw", b"fine").status == 201  # type: ignore[attr-defined]
