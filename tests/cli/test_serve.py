"""`pxeforge serve` as a user runs it: a real process, real curl, clear startup errors."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

PXEFORGE = [sys.executable, "-m", "pxeforge"]


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def boot_tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    (root / "pxelinux.0").write_bytes(b"\xeb\x3c" + os.urandom(4000))
    (tmp_path / "vmlinuz").write_bytes(os.urandom(300_000))
    (tmp_path / "initrd.img").write_bytes(os.urandom(100_000))
    return tmp_path


def serve_args(tree: Path, tftp: int, http: int, *extra: str) -> list[str]:
    return [
        *PXEFORGE,
        "serve",
        "--dhcp", "off",
        "--address", "127.0.0.1",
        "--tftp-port", str(tftp),
        "--http-port", str(http),
        "--root", str(tree / "root"),
        "--data-dir", str(tree / "data"),
        "--kernel", str(tree / "vmlinuz"),
        "--initrd", str(tree / "initrd.img"),
        "--cmdline", "ks=http://10.10.3.167/ks_config/CentOS-6.9-ks.cfg ksdevice=eth0",
        "--api-port", "0",
        *extra,
    ]  # fmt: skip


@pytest.fixture
def running(boot_tree: Path) -> Iterator[tuple[Path, int, int]]:
    tftp, http = free_port(), free_port(socket.SOCK_STREAM)
    proc = subprocess.Popen(serve_args(boot_tree, tftp, http), stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 20
        line = ""
        while time.monotonic() < deadline and "pxeforge serving" not in line:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                pytest.fail(f"serve exited early with {proc.returncode}")
        yield boot_tree, tftp, http
    finally:
        proc.terminate()
        try:
            assert proc.wait(timeout=10) == 0, "serve must exit cleanly on SIGTERM"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stderr:
                proc.stderr.close()


def curl(*args: str) -> bytes:
    return subprocess.run(
        ["curl", "-sS", "--fail", "--max-time", "20", *args],
        check=True,
        capture_output=True,
    ).stdout


@pytest.mark.interop
def test_serve_boots_files_over_tftp_and_http(running: tuple[Path, int, int]) -> None:
    tree, tftp, http = running
    config = curl(f"tftp://127.0.0.1:{tftp}/pxelinux.cfg/default").decode()
    assert "ks=http://10.10.3.167/ks_config/CentOS-6.9-ks.cfg ksdevice=eth0" in config
    assert "kernel" in config and "initrd=" in config
    # the kernel the config names is served over TFTP, byte for byte
    kernel_ref = next(
        line.split()[1] for line in config.splitlines() if line.strip().startswith("kernel")
    )
    kernel = curl("--tftp-blksize", "1408", f"tftp://127.0.0.1:{tftp}/{kernel_ref.lstrip('/')}")
    assert kernel == (tree / "vmlinuz").read_bytes()
    assert curl(f"tftp://127.0.0.1:{tftp}/pxelinux.0") == (tree / "root/pxelinux.0").read_bytes()
    assert curl(f"http://127.0.0.1:{http}/pxelinux.0") == (tree / "root/pxelinux.0").read_bytes()
    script = curl(f"http://127.0.0.1:{http}/ipxe?mac=52:54:00:12:34:56&platform=pcbios").decode()
    assert script.startswith("#!ipxe") and "ksdevice=eth0" in script


def run_serve(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=30)


def test_port_in_use_is_a_clear_error(boot_tree: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        result = run_serve(serve_args(boot_tree, port, free_port(socket.SOCK_STREAM)))
    assert result.returncode == 1
    assert f"TFTP: port {port} is already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_interface_is_a_clear_error(boot_tree: Path) -> None:
    result = run_serve(serve_args(boot_tree, free_port(), free_port(), "--interface", "nope9"))
    assert result.returncode == 1
    assert "no network interface 'nope9'" in result.stderr and "lo" in result.stderr


def test_missing_kernel_is_a_clear_error(boot_tree: Path) -> None:
    (boot_tree / "vmlinuz").unlink()
    result = run_serve(serve_args(boot_tree, free_port(), free_port()))
    assert result.returncode == 1
    assert "vmlinuz does not exist" in result.stderr


def test_missing_root_points_at_assets_fetch(boot_tree: Path) -> None:
    shutil.rmtree(boot_tree / "root")
    result = run_serve(serve_args(boot_tree, free_port(), free_port()))
    assert result.returncode == 1
    assert "pxeforge assets fetch" in result.stderr


def test_pool_needed_for_full_dhcp(boot_tree: Path) -> None:
    args = serve_args(boot_tree, free_port(), free_port())
    args[args.index("off")] = "full"
    result = run_serve(args)
    assert result.returncode == 2
    assert "--pool" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root+setpriv")
def test_privileged_port_without_privilege_is_a_clear_error(boot_tree: Path) -> None:
    # Drop CAP_NET_BIND_SERVICE from the bounding set: as a non-root user would be.
    args = ["setpriv", "--bounding-set", "-net_bind_service", "--inh-caps", "-all", "--"]
    result = run_serve(args + serve_args(boot_tree, 69, free_port(socket.SOCK_STREAM)))
    assert result.returncode == 1
    assert "TFTP: binding port 69 needs root" in result.stderr


def test_unsafe_cmdline_is_refused_at_startup(boot_tree: Path) -> None:
    args = serve_args(boot_tree, free_port(), free_port())
    args[args.index("--cmdline") + 1] = "quiet\nlabel evil"
    result = run_serve(args)
    assert result.returncode == 2
    assert "cmdline" in result.stderr and "Traceback" not in result.stderr
