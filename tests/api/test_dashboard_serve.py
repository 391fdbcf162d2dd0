"""The dashboard as `pxeforge serve` serves it, end to end: a real TFTP client (atftp) and a
real HTTP fetch reach the page open in Chromium, live; stopping the server with the page (and
its open stream) still there takes seconds, not aiohttp's 60 s shutdown timeout."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .chromium import Browser, chromium_binary

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(chromium_binary() is None, reason="chromium is not installed"),
    pytest.mark.skipif(shutil.which("atftp") is None, reason="atftp is not installed"),
]

TIMELINE = "Array.from(document.querySelectorAll('#timeline tbody tr'), r => r.innerText)"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Serve:
    """``pxeforge serve`` (no DHCP, noauth API) on free loopback ports."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tftp, self.http, self.api = free_port(socket.SOCK_DGRAM), free_port(), free_port()
        (root / "tftp").mkdir()
        (root / "tftp" / "hello.txt").write_text("hello from pxeforge\n")
        (root / "vmlinuz").write_bytes(b"\x00" * 64)
        self.log = (root / "serve.log").open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "pxeforge", "serve",
                "--dhcp", "off", "--address", "127.0.0.1",
                "--tftp-port", str(self.tftp), "--http-port", str(self.http),
                "--api-port", str(self.api), "--api-auth", "noauth",
                "--root", str(root / "tftp"), "--data-dir", str(root / "data"),
                "--kernel", str(root / "vmlinuz"),
            ],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.url("/dashboard"), timeout=5) as reply:
                    assert reply.status == 200
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError((root / "serve.log").read_text()[-3000:]) from None
                time.sleep(0.2)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.api}{path}"

    def stop(self) -> float:
        """SIGTERM; seconds until it exited (SIGKILL after 30 s)."""
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log.close()
        return time.monotonic() - started


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    server = Serve(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def test_real_fetches_arrive_live_and_stop_is_quick(
    tmp_path: Path, serve: Serve, browser: Browser
) -> None:
    async def scenario() -> None:
        page = await browser.page()
        try:
            # a client known by its address only (no DHCP with us): its own page, empty yet
            await page.navigate(serve.url("/dashboard/macs/ip:127.0.0.1"))
            assert await page.evaluate("!document.getElementById('timeline-empty').hidden")
            await page.wait_for("document.getElementById('live').textContent.includes('live')")

            fetched = tmp_path / "fetched.txt"
            await asyncio.to_thread(
                subprocess.run,
                ["atftp", "-g", "-r", "hello.txt", "-l", str(fetched), "127.0.0.1",
                 str(serve.tftp)],
                check=True, timeout=30, capture_output=True,
            )  # fmt: skip
            assert fetched.read_text() == "hello from pxeforge\n"
            lines = await page.wait_for(
                f"{TIMELINE}.some(l => l.includes('hello.txt finished')) && {TIMELINE}"
            )
            assert any("TFTP hello.txt started" in line for line in lines), lines
            url = f"http://127.0.0.1:{serve.http}/hello.txt"
            body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
            assert body == b"hello from pxeforge\n"
            await page.wait_for(f"{TIMELINE}[0].includes('HTTP GET /hello.txt: 200')")
            assert await page.evaluate("document.getElementById('timeline-empty').hidden")
            assert page.errors == []

            # the page, its stream open, does not hold up stopping the server
            seconds = await asyncio.to_thread(serve.stop)
            assert serve.process.returncode == 0, (tmp_path / "serve.log").read_text()[-2000:]
            assert seconds < 15
            await page.wait_for("document.getElementById('live').textContent.includes('reconn')")
        finally:
            await page.close()

    asyncio.run(scenario())


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    chromium = Browser(tmp_path / "chromium").start()
    try:
        yield chromium
    finally:
        chromium.close()
