"""servers.tftp against real TFTP clients: curl, atftp and tftp-hpa's ``tftp`` (skipped if absent).

Every download is compared byte for byte (sha256). The 33 MiB file at blksize 512 needs 67584
blocks, so the 16-bit block number rolls over to 0 (RFC 1350 sets no size limit; curl and
tftp-hpa follow the wrap).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from pxeforge.boot.files import RootFiles
from pxeforge.protocols.tftp import Outcome
from pxeforge.servers.tftp import EventKind, TftpEvent, TftpServer, start_tftp

pytestmark = pytest.mark.interop

HOST = "127.0.0.1"
SIZES = {
    "empty": 0,
    "one": 1,
    "block": 512,
    "window": 1468 * 16,
    "mib": 1 << 20,
    "big": 33 << 20,  # > 65535 blocks of 512 bytes
}


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed")
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("tftp-interop")
    root = base / "root"
    root.mkdir()
    for name, size in SIZES.items():
        (root / name).write_bytes(os.urandom(size))
    (root / "notes.txt").write_bytes(b"first line\nsecond line\r\nbare\rcr\n")
    (base / "secret").write_text("not for clients\n")
    (root / "escape").symlink_to(base / "secret")
    return root


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def run(*argv: str, timeout: float = 30.0) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace")


def serve(
    root: Path, scenario: Callable[[TftpServer], Awaitable[None]]
) -> tuple[TftpServer, list[TftpEvent]]:
    events: list[TftpEvent] = []

    async def main() -> TftpServer:
        server = await start_tftp(HOST, 0, RootFiles(root), on_event=events.append)
        try:
            await scenario(server)
            for _ in range(400):  # clients may exit before their last ACK is read
                if server.active == 0:
                    break
                await asyncio.sleep(0.005)
        finally:
            await server.close()
        return server

    return asyncio.run(main()), events


def curl(port: int, name: str, out: Path, blksize: int | None = None) -> list[str]:
    argv = [need("curl"), "-sS", "--path-as-is", f"tftp://{HOST}:{port}/{name}", "-o", str(out)]
    if blksize is not None:
        argv[2:2] = ["--tftp-blksize", str(blksize)]
    return argv


def atftp(port: int, name: str, out: Path, *options: str) -> list[str]:
    argv = [need("atftp")]
    for option in options:
        argv += ["--option", option]
    return argv + ["-g", "-r", name, "-l", str(out), HOST, str(port)]


def hpa(port: int, name: str, out: Path, mode: str = "binary") -> list[str]:
    return [need("tftp"), "-m", mode, HOST, str(port), "-c", "get", name, str(out)]


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("blksize", [None, 1468, 8192])
@pytest.mark.parametrize("name", ["empty", "one", "block", "window", "mib"])
def test_curl(root: Path, tmp_path: Path, name: str, blksize: int | None) -> None:
    out = tmp_path / "out"

    async def scenario(server: TftpServer) -> None:
        argv = curl(server.port, name, out, blksize)
        if name == "empty":
            # curl refuses "tsize 0" in an OACK (so it fails against tftpd-hpa too): without
            # options it gets DATA 1, empty, at once
            argv.insert(1, "--tftp-no-options")
        code, text = await run(*argv)
        assert code == 0, text

    server, _ = serve(root, scenario)
    assert digest(out) == digest(root / name)
    assert server.stats.completed == 1 and server.stats.failed == 0


@pytest.mark.parametrize(
    "options",
    [
        (),
        ("blksize 1468",),
        ("blksize 1468", "windowsize 16"),
        ("blksize 1468", "windowsize 4", "tsize enable"),
        ("blksize 8", "windowsize 64"),
    ],
    ids=["plain", "blksize", "window16", "ovmf-like", "tiny-blocks"],
)
@pytest.mark.parametrize("name", ["empty", "window", "mib"])
def test_atftp(root: Path, tmp_path: Path, name: str, options: tuple[str, ...]) -> None:
    if name == "mib" and "blksize 8" in options:
        name = "window"  # 131072 lock-step-sized blocks would only measure the client
    out = tmp_path / "out"

    async def scenario(server: TftpServer) -> None:
        code, text = await run(*atftp(server.port, name, out, *options))
        assert code == 0, text

    server, events = serve(root, scenario)
    assert digest(out) == digest(root / name)
    assert server.stats.completed == 1
    started = next(e for e in events if e.kind is EventKind.STARTED)
    if "windowsize 16" in options:
        assert started.windowsize == 16


def test_atftp_big_window_with_a_default_socket_buffer(root: Path, tmp_path: Path) -> None:
    """blksize 8192 × windowsize 16 stalls atftpd against the client's default 208 KiB buffer
    (peers.md: 0.9 MiB/s); the window we grant fits it, so 1 MiB takes well under a second."""
    out = tmp_path / "out"

    async def scenario(server: TftpServer) -> None:
        started = time.monotonic()
        options = ("blksize 8192", "windowsize 16")
        code, text = await run(*atftp(server.port, "mib", out, *options))
        assert code == 0, text
        assert time.monotonic() - started < 3.0

    server, events = serve(root, scenario)
    assert digest(out) == digest(root / "mib")
    assert server.stats.retransmits <= 16
    started_event = next(e for e in events if e.kind is EventKind.STARTED)
    assert started_event.windowsize == 8  # 64 KiB windows


@pytest.mark.parametrize("name", ["empty", "block", "window", "mib"])
def test_tftp_hpa(root: Path, tmp_path: Path, name: str) -> None:
    out = tmp_path / "out"

    async def scenario(server: TftpServer) -> None:
        code, text = await run(*hpa(server.port, name, out))
        assert code == 0 and "rror" not in text, text

    serve(root, scenario)
    assert digest(out) == digest(root / name)


def test_tftp_hpa_netascii_round_trip(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"

    async def scenario(server: TftpServer) -> None:
        code, text = await run(*hpa(server.port, "notes.txt", out, mode="netascii"))
        assert code == 0, text

    server, _ = serve(root, scenario)
    # the client turns CR LF back into LF and CR NUL back into CR
    assert out.read_bytes() == (root / "notes.txt").read_bytes()
    assert server.stats.bytes_sent == len((root / "notes.txt").read_bytes()) + 5


@pytest.mark.parametrize("client", ["curl", "tftp-hpa"])
def test_rollover_33_mib_at_blksize_512(root: Path, tmp_path: Path, client: str) -> None:
    out = tmp_path / "out"

    async def scenario(server: TftpServer) -> None:
        if client == "curl":
            argv = curl(server.port, "big", out, 512)
        else:
            argv = hpa(server.port, "big", out)
        code, text = await run(*argv, timeout=45)
        assert code == 0 and "rror" not in text, text

    server, events = serve(root, scenario)
    assert digest(out) == digest(root / "big")
    finished = next(e for e in events if e.kind is EventKind.FINISHED)
    assert finished.outcome is Outcome.COMPLETE and finished.bytes == SIZES["big"]


def test_missing_files_fail_fast(root: Path, tmp_path: Path) -> None:
    """pxelinux walks a chain of config names; each miss must be answered at once."""
    names = ["pxelinux.cfg/01-52-54-00-77-00-10", "pxelinux.cfg/C0A84D91", "pxelinux.cfg/C0A8"]

    async def scenario(server: TftpServer) -> None:
        for name in names:
            started = time.monotonic()
            code, _ = await run(*curl(server.port, name, tmp_path / "out"))
            assert code == 68  # curl: TFTP file not found
            assert time.monotonic() - started < 1.0
            code, text = await run(*hpa(server.port, name, tmp_path / "out2"))
            assert "Error code 1: File not found" in text

    server, _ = serve(root, scenario)
    assert server.stats.refused == 2 * len(names) and server.stats.started == 0


@pytest.mark.parametrize("name", ["../etc/passwd", "../secret", "escape", "a/../../secret"])
def test_path_traversal_with_real_clients(root: Path, tmp_path: Path, name: str) -> None:
    async def scenario(server: TftpServer) -> None:
        code, text = await run(*hpa(server.port, name, tmp_path / "out"))
        assert "Error code 2: Access violation" in text, text
        code, _ = await run(*curl(server.port, name, tmp_path / "out2"))
        assert code == 69  # curl: TFTP permission problem

    server, _ = serve(root, scenario)
    assert server.stats.started == 0
    assert not (tmp_path / "out2").exists()


def test_twenty_concurrent_curl_transfers(root: Path, tmp_path: Path) -> None:
    async def scenario(server: TftpServer) -> None:
        results = await asyncio.gather(
            *(
                run(*curl(server.port, "mib", tmp_path / f"out{i}", 1468 if i % 2 else None))
                for i in range(20)
            )
        )
        assert [code for code, _ in results] == [0] * 20

    server, _ = serve(root, scenario)
    expected = digest(root / "mib")
    assert all(digest(tmp_path / f"out{i}") == expected for i in range(20))
    assert server.stats.completed == 20 and server.stats.failed == 0


_MTU_SCRIPT = """
import asyncio, hashlib, json, logging, sys
from pathlib import Path
from pxeforge.boot.files import RootFiles
from pxeforge.servers.tftp import start_tftp
from pxeforge.servers.tftp_engine import Session

logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)

async def main(root, out, windows):
    server = await start_tftp("127.0.0.1", 0, RootFiles(Path(root)))
    digests = []
    try:
        for options in windows:
            argv = ["atftp"]
            for option in options:
                argv += ["--option", option]
            argv += ["-g", "-r", "mib", "-l", out, "127.0.0.1", str(server.port)]
            process = await asyncio.create_subprocess_exec(*argv)
            code = await asyncio.wait_for(process.wait(), 30)
            digests.append([code, hashlib.sha256(Path(out).read_bytes()).hexdigest()])
    finally:
        await server.close()
    print(json.dumps({"digests": digests, "gso_works": Session.gso_works,
                      "completed": server.stats.completed}))

asyncio.run(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))
"""


@pytest.mark.root
def test_windows_above_the_mtu_fall_back_to_one_send_per_block(root: Path, tmp_path: Path) -> None:
    """UDP GSO refuses segments above the path MTU (EINVAL): on a 1500-byte loopback, blksize
    8192 windows go out block by block (IP fragments them), blksize 1428 ones still use GSO."""
    need("atftp")
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and ip(8) for a network namespace")
    ns = f"pxf-{os.getpid()}-tftp-mtu"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=20)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "mtu", "1500", "up"], check=True)
        windows = [["blksize 8192", "windowsize 4"], ["blksize 1428", "windowsize 8"]]
        done = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", _MTU_SCRIPT, str(root),
             str(tmp_path / "out"), json.dumps(windows)],
            capture_output=True, text=True, timeout=90,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads(done.stdout)
    finally:
        subprocess.run(["ip", "netns", "del", ns], timeout=20)
    assert report["digests"] == [[0, digest(root / "mib")]] * 2
    assert report["completed"] == 2 and report["gso_works"] is True
    assert "no UDP GSO" in done.stderr  # the 8192-byte windows fell back, for their session
