"""`pxeforge serve` start-up errors of the inventory and API part: one clear line, no traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    (tmp / "root").mkdir(exist_ok=True)
    (tmp / "vmlinuz").write_bytes(b"\x00" * 64)
    return subprocess.run(
        [
            sys.executable, "-m", "pxeforge", "serve",
            "--dhcp", "off", "--address", "127.0.0.1",
            "--tftp-port", str(_free_port(socket.SOCK_DGRAM)), "--http-port", str(_free_port()),
            "--root", str(tmp / "root"), "--data-dir", str(tmp / "data"),
            "--kernel", str(tmp / "vmlinuz"), *extra,
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_unreachable_database(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://someone:secret@127.0.0.1:{_free_port()}/nothing"
    result = serve(tmp_path, "--api-port", "0", "--db", url)
    assert result.returncode == 1, result.stderr
    assert "database postgresql+psycopg://someone:***@127.0.0.1" in result.stderr
    assert "secret" not in result.stderr and "Traceback" not in result.stderr
    assert "check --db" in result.stderr


def test_bad_database_url(tmp_path: Path) -> None:
    result = serve(tmp_path, "--api-port", "0", "--db", "nonsense://")
    assert result.returncode == 1 and "check --db" in result.stderr
    assert "Traceback" not in result.stderr


def test_api_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = serve(tmp_path, "--api-port", str(port), "--api-auth", "noauth")
    assert result.returncode == 1
    assert f"API: port {port} is already in use" in result.stderr
    assert "Traceback" not in result.stderr
