"""`pxeforge image …` with click's CliRunner against a live `pxeforge serve` (http_basic, the
credentials read from --data-dir): upload prints the URL and checksums, the boot plane's HTTP
server sends the image back byte for byte, list and delete."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pxeforge.cli.image import QCOW2_MAGIC, disk_format, image


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path, int]]:
    """`pxeforge serve` (inventory boot) on loopback: (API URL, data dir, HTTP port)."""
    (tmp_path / "root").mkdir()
    api_port, http_port = _free_port(), _free_port()
    data = tmp_path / "data"
    log_path = tmp_path / "serve.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "pxeforge", "serve",
            "--dhcp", "off", "--address", "127.0.0.1",
            "--tftp-port", str(_free_port(socket.SOCK_DGRAM)),
            "--http-port", str(http_port),
            "--api-port", str(api_port),
            "--root", str(tmp_path / "root"),
            "--data-dir", str(data),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while "pxeforge serving" not in log_path.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        yield f"http://127.0.0.1:{api_port}", data, http_port
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
    assert proc.returncode == 0 and "Traceback" not in log_path.read_text()


def run(server: tuple[str, Path, int], *args: str, code: int = 0) -> Result:
    url, data, _ = server
    result = CliRunner().invoke(image, ["--url", url, "--data-dir", str(data), *args])
    assert result.exit_code == code, (args, result.output, result.exception)
    return result


def test_upload_serve_list_delete(server: tuple[str, Path, int], tmp_path: Path) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 1)
    path = tmp_path / "disk.raw"
    path.write_bytes(payload)
    out = run(server, "upload", str(path)).output
    sha256 = hashlib.sha256(payload).hexdigest()
    url = f"http://127.0.0.1:{server[2]}/images/disk.raw"
    assert f"url     {url}" in out and f"sha256  {sha256}" in out
    assert f"image_os_hash_value={sha256}" in out and "image_disk_format=raw" in out
    with urllib.request.urlopen(url, timeout=30) as reply:
        assert reply.read() == payload
    listed = run(server, "list").output
    assert "disk.raw" in listed and sha256 in listed
    again = run(server, "upload", str(path), "--name", "copy.qcow2", "--json").output
    assert '"name": "copy.qcow2"' in again
    bad = run(server, "upload", str(path), "--name", "../x", code=1)
    assert "Invalid image name" in bad.output and "HTTP 400" in bad.output
    run(server, "delete", "disk.raw")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(url, timeout=30)
    assert info.value.code == 404
    info.value.close()
    assert "disk.raw" not in run(server, "list").output
    missing = run(server, "delete", "disk.raw", code=1)
    assert "could not be found" in missing.output


def test_upload_needs_credentials(server: tuple[str, Path, int], tmp_path: Path) -> None:
    path = tmp_path / "a.raw"
    path.write_bytes(b"a")
    url = server[0]
    result = CliRunner().invoke(
        image, ["--url", url, "--data-dir", str(tmp_path / "none"), "upload", str(path)]
    )
    assert result.exit_code == 1 and "HTTP 401" in result.output


def test_disk_format_from_magic(tmp_path: Path) -> None:
    (tmp_path / "q").write_bytes(QCOW2_MAGIC + b"\x00\x00\x00\x03")
    (tmp_path / "r").write_bytes(b"\xeb\x63\x90")
    assert disk_format(tmp_path / "q") == "qcow2" and disk_format(tmp_path / "r") == "raw"
