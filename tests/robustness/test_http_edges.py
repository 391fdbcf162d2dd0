"""Minimal cases the HTTP fuzz run found, against `start_http` in this process.

Each sends one request over a raw connection and looks at the server's log: a client's
mistake is the client's fault (a 4xx, one log line), never an exception in our handlers.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from pxeforge.boot.booter import StaticBooter
from pxeforge.boot.clients import ClientRegistry
from pxeforge.boot.resolve import BootFiles
from pxeforge.servers.http import start_http


def send_raw(tmp_path: Path, request: bytes, *, eof: bool) -> bytes:
    """Send ``request`` (then our end of file when ``eof``); what the server answered."""
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"K" * 64)
    (tmp_path / "root").mkdir(exist_ok=True)

    async def main() -> bytes:
        booter = StaticBooter(kernel)
        registry = ClientRegistry()
        files = BootFiles(booter, tmp_path / "root", registry, http_base="http://127.0.0.1:1")
        server = await start_http("127.0.0.1", 0, files, booter=booter, registry=registry)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            try:
                writer.write(request)
                if eof:
                    writer.write_eof()
                answer = await asyncio.wait_for(reader.read(), 5)
            finally:
                writer.close()
                await writer.wait_closed()
            await asyncio.sleep(0.1)  # the handler finishes after the connection is gone
            return answer
        finally:
            await server.close()

    return asyncio.run(main())


def problems(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{r.levelname} {r.name}: {r.getMessage()} ({r.exc_info[0].__name__ if r.exc_info else ''})"
        for r in caplog.records
        if r.levelno >= logging.ERROR or r.exc_info is not None
    ]


def test_a_callback_whose_body_is_cut_short_is_not_a_server_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The client promises 100 bytes, sends 5 and hangs up. Found by test_http_fuzz.py: the
    # handler's request.read() raised ConnectionResetError, aiohttp logged it as an ERROR
    # with a traceback and a 500 in the access log.
    request = b"POST /_pxeforge/callback HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nmac=1"
    with caplog.at_level(logging.INFO):
        send_raw(tmp_path, request, eof=True)
    assert not problems(caplog)
    assert not [r for r in caplog.records if '" 500 ' in r.getMessage()]


def test_a_request_the_parser_refuses_is_one_log_line_not_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        answer = send_raw(tmp_path, b"GET /a\xffb HTTP/1.1\r\nHost: x\r\n\r\n", eof=False)
    assert answer.startswith((b"HTTP/1.0 400 ", b"HTTP/1.1 400 "))
    assert not problems(caplog)
