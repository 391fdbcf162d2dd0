"""The boot plane's ``/images/<name>``: images uploaded through the API, sent by sendfile with
Range and HEAD, to the real curl; unsafe names, symlinks and half uploads are 404."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pxeforge.boot.booter import StaticBooter
from pxeforge.boot.clients import ClientRegistry
from pxeforge.boot.resolve import BootFiles
from pxeforge.images import ImageStore
from pxeforge.servers.http import start_http

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("curl") is None, reason="needs the curl client"),
]

DATA = os.urandom(2 * 1024 * 1024 + 5)


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-sS", "--max-time", "20", *args], capture_output=True,
                          timeout=30, check=False)  # fmt: skip


async def _scenario(tmp_path: Path) -> None:
    (tmp_path / "root" / "images").mkdir(parents=True)
    (tmp_path / "root" / "images" / "shadowed.raw").write_bytes(b"boot root")
    (tmp_path / "vmlinuz").write_bytes(b"K" * 100)
    store = ImageStore(tmp_path / "data" / "images")
    upload = store.begin("disk.raw")
    upload.write(DATA)
    upload.commit()
    (store.root / "disk.raw.gz").write_bytes(b"not a gzip of it")  # no sibling substitution
    secret = tmp_path / "secret"
    secret.write_text("SECRET")
    (store.root / "link.raw").symlink_to(secret)
    half = store.begin("half.raw")
    half.write(b"half")  # never committed
    booter = StaticBooter(tmp_path / "vmlinuz", [], "")
    registry = ClientRegistry()
    files = BootFiles(booter, tmp_path / "root", registry, http_base="http://unused")
    server = await start_http("127.0.0.1", 0, files, booter=booter, registry=registry,
                              images=store)  # fmt: skip
    base = f"http://127.0.0.1:{server.port}"
    try:
        whole = await asyncio.to_thread(curl, "-f", "-H", "Accept-Encoding: gzip",
                                        f"{base}/images/disk.raw")  # fmt: skip
        assert (
            whole.returncode == 0
            and hashlib.sha256(whole.stdout).digest() == hashlib.sha256(DATA).digest()
        )
        part = await asyncio.to_thread(curl, "-f", "-r", "1000-1999", f"{base}/images/disk.raw")
        assert part.stdout == DATA[1000:2000]
        head = await asyncio.to_thread(curl, "-I", f"{base}/images/disk.raw")
        text = head.stdout.decode()
        assert " 200 " in text and f"Content-Length: {len(DATA)}" in text
        assert "Accept-Ranges: bytes" in text
        for name in ("link.raw", "half.raw", "missing.raw", ".meta", "%2e%2e%2fsecret",
                     "shadowed.raw"):  # fmt: skip
            reply = await asyncio.to_thread(curl, "-o", "/dev/null", "-w", "%{http_code}",
                                            f"{base}/images/{name}")  # fmt: skip
            assert reply.stdout == b"404", name
        # .. in the path never leaves the store
        escape = await asyncio.to_thread(curl, "--path-as-is", f"{base}/images/../../secret")
        assert b"SECRET" not in escape.stdout
    finally:
        half.abort()
        await server.close()


def test_images_are_served(tmp_path: Path) -> None:
    asyncio.run(_scenario(tmp_path))
