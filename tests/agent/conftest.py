"""Fixtures for the agent's deploy and cleaning tests: an image HTTP server, loop devices,
qemu-img, and a GPT writer.

* `image_server`: a real ``ThreadingHTTPServer`` on 127.0.0.1 serving a directory:
  ``/NAME`` with ``Content-Length``; ``/nolength/NAME`` without it (the body ends when the
  connection closes); ``/chunked/NAME`` sends it HTTP/1.1 ``Transfer-Encoding: chunked``
  (1 MiB chunks, no length); ``/short/NAME`` announces the full length but sends half and
  closes; ``/slow/NAME`` sends 1 MiB per second.
* `loop_device`: ``losetup -f --show -P`` on a file of the asked size (``-r``: read-only,
  every write to it fails with EPERM; root only, skipped otherwise), detached at the
  end even when the test fails.
* `qemu_img`: the oracle of the qcow2 tests (Debian's qemu-utils, which scripts/setup.sh
  --test installs); skipped locally when missing, a failure when $CI is set.
* `write_gpt`: a GUID partition table (protective MBR, both headers and entry arrays with
  their CRC32s — UEFI spec §5.3) written with Python; the kernel's partition scan is the
  proof that it is real.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

MIB = 1024 * 1024


class _ImageHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        for prefix in ("/nolength/", "/chunked/", "/short/", "/slow/"):
            if self.path.startswith(prefix):
                return self._special(prefix.strip("/"), self.path[len(prefix) :])
        super().do_GET()

    def _special(self, kind: str, name: str) -> None:
        path = Path(self.directory) / name
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        if kind == "chunked":
            return self._chunked(data)
        self.protocol_version = "HTTP/1.0"
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if kind != "nolength":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if kind == "short":
            self.wfile.write(data[: len(data) // 2])
        elif kind == "slow":
            for i in range(0, len(data), MIB):
                self.wfile.write(data[i : i + MIB])
                self.wfile.flush()
                time.sleep(1.0)
        else:
            self.wfile.write(data)

    def _chunked(self, data: bytes) -> None:
        self.protocol_version = "HTTP/1.1"
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        for i in range(0, len(data), MIB):
            part = data[i : i + MIB]
            self.wfile.write(b"%x\r\n" % len(part) + part + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up early (refused images) are part of the tests


class ImageServer:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        handler = type("H", (_ImageHandler,), {})

        def make(*args: Any, **kw: Any) -> _ImageHandler:
            return handler(*args, directory=str(directory), **kw)

        self.httpd = _QuietServer(("127.0.0.1", 0), make)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str, kind: str = "") -> str:
        port = self.httpd.server_address[1]
        return f"http://127.0.0.1:{port}/{kind + '/' if kind else ''}{name}"

    def add(self, name: str, data: bytes) -> str:
        (self.directory / name).write_bytes(data)
        return self.url(name)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


@pytest.fixture
def image_server(tmp_path: Path) -> Iterator[ImageServer]:
    root = tmp_path / "images"
    root.mkdir()
    server = ImageServer(root)
    try:
        yield server
    finally:
        server.close()


def _need_root_tools(*tools: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("loop devices need root")
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is missing")


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """``make(size, fill=b"", read_only=False)`` → ``/dev/loopN`` backed by a new file of
    ``size`` bytes (``fill`` repeated)."""
    _need_root_tools("losetup")
    made: list[str] = []

    def make(size: int, fill: bytes = b"", read_only: bool = False) -> str:
        backing = tmp_path / f"disk{len(made)}.img"
        with open(backing, "wb") as f:
            if fill:
                f.write((fill * (size // len(fill) + 1))[:size])
            f.truncate(size)
        ro = ["-r"] if read_only else []
        done = subprocess.run(["losetup", "-f", "--show", "-P", *ro, str(backing)],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        if done.returncode != 0:
            pytest.skip(f"losetup failed: {done.stderr.strip()}")
        dev = done.stdout.strip()
        made.append(dev)
        return dev

    try:
        yield make
    finally:
        for dev in made:
            subprocess.run(["losetup", "-d", dev], capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def qemu_img() -> str:
    path = shutil.which("qemu-img")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("qemu-img is missing (apt-get install qemu-utils)")
        pytest.skip("qemu-img is missing (apt-get install qemu-utils)")
    return path


def read(path: str | Path, offset: int = 0, length: int = -1) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def sys_name(dev: str) -> str:
    return os.path.basename(dev)


# ---- GPT ------------------------------------------------------------------------------------

LINUX_FS = uuid.UUID("0fc63daf-8483-4772-8e79-3d69d8477de4")
_ENTRIES = 128
_ENTRY_SIZE = 128


def _gpt_header(current: int, backup: int, first: int, last: int, disk_guid: bytes,
                entries_lba: int, entries_crc: int) -> bytes:  # fmt: skip
    def pack(crc: int) -> bytes:
        return struct.pack("<8sIIIIQQQQ16sQIII", b"EFI PART", 0x00010000, 92, crc, 0, current,
                           backup, first, last, disk_guid, entries_lba, _ENTRIES, _ENTRY_SIZE,
                           entries_crc)  # fmt: skip

    return pack(zlib.crc32(pack(0))).ljust(512, b"\0")


def write_gpt(path: str, size: int, parts: list[tuple[int, int]]) -> None:
    """A GPT on ``path`` (``size`` bytes) with Linux partitions ``(first LBA, last LBA)``."""
    sectors = size // 512
    entries = bytearray(_ENTRIES * _ENTRY_SIZE)
    for i, (first, last) in enumerate(parts):
        name = f"part{i + 1}".encode("utf-16-le").ljust(72, b"\0")
        struct.pack_into("<16s16sQQQ72s", entries, i * _ENTRY_SIZE, LINUX_FS.bytes_le,
                         uuid.uuid4().bytes_le, first, last, 0, name)  # fmt: skip
    entries_crc = zlib.crc32(entries)
    disk_guid = uuid.uuid4().bytes_le
    first_usable, last_usable = 34, sectors - 34
    mbr = bytearray(512)
    struct.pack_into("<B3sB3sII", mbr, 446, 0, b"\x00\x02\x00", 0xEE, b"\xff\xff\xff", 1,
                     min(sectors - 1, 0xFFFFFFFF))  # fmt: skip
    mbr[510:512] = b"\x55\xaa"
    primary = _gpt_header(1, sectors - 1, first_usable, last_usable, disk_guid, 2, entries_crc)
    backup = _gpt_header(sectors - 1, 1, first_usable, last_usable, disk_guid, sectors - 33,
                         entries_crc)  # fmt: skip
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, bytes(mbr), 0)
        os.pwrite(fd, primary, 512)
        os.pwrite(fd, bytes(entries), 1024)
        os.pwrite(fd, bytes(entries), (sectors - 33) * 512)
        os.pwrite(fd, backup, (sectors - 1) * 512)
        os.fsync(fd)
    finally:
        os.close(fd)
