"""servers.tftp on 127.0.0.1 with a temporary root, driven by a small asyncio TFTP client."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from pxeforge.boot.files import BootFile, MemoryFile, RootFiles
from pxeforge.errors import FileNotFound
from pxeforge.protocols.tftp import (
    DataPacket,
    ErrorCode,
    ErrorPacket,
    OackPacket,
    Opcode,
    Outcome,
    TransferConfig,
    encode_ack,
    encode_error,
    encode_request,
    parse_packet,
)
from pxeforge.servers.tftp import EventKind, TftpEvent, TftpServer, start_tftp

HOST = "127.0.0.1"


class ClientError(Exception):
    def __init__(self, packet: ErrorPacket, after: float) -> None:
        super().__init__(f"ERROR {packet.code}: {packet.message}")
        self.code = packet.code
        self.message = packet.message
        self.after = after  # seconds from the request to the ERROR


async def recv(sock: socket.socket, timeout: float = 5.0) -> tuple[bytes, Any]:
    loop = asyncio.get_running_loop()
    return await asyncio.wait_for(loop.sock_recvfrom(sock, 65536), timeout)


def client_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind((HOST, 0))
    return sock


async def fetch(
    port: int,
    name: str,
    options: dict[str, str] | None = None,
    *,
    mode: str = "octet",
    request: bytes | None = None,
) -> bytes:
    """Download a file: RFC 1350 lock-step, or RFC 7440 windows if the OACK grants them."""
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    with client_socket() as sock:
        rrq = request or encode_request(Opcode.RRQ, name, mode, options)
        await loop.sock_sendto(sock, rrq, (HOST, port))
        server = None
        blksize, windowsize, expected, since_ack = 512, 1, 1, 0
        received = bytearray()
        while True:
            data, addr = await recv(sock)
            packet = parse_packet(data)
            if isinstance(packet, ErrorPacket):  # refusals come from the request port
                raise ClientError(packet, time.monotonic() - started)
            if server is None:
                server = addr
                assert addr[1] != port, "a transfer must answer from its own port (TID)"
            assert addr == server
            if isinstance(packet, OackPacket):
                blksize = int(packet.options.get("blksize", "512"))
                windowsize = int(packet.options.get("windowsize", "1"))
                await loop.sock_sendto(sock, encode_ack(0), server)
                continue
            assert isinstance(packet, DataPacket)
            if packet.block != expected & 0xFFFF:
                await loop.sock_sendto(sock, encode_ack((expected - 1) & 0xFFFF), server)
                since_ack = 0
                continue
            received += packet.payload
            expected += 1
            since_ack += 1
            if len(packet.payload) < blksize:
                await loop.sock_sendto(sock, encode_ack(packet.block), server)
                return bytes(received)
            if since_ack == windowsize:
                await loop.sock_sendto(sock, encode_ack(packet.block), server)
                since_ack = 0


async def refusal(port: int, request: bytes) -> ErrorPacket:
    """Send one request and return the ERROR it gets (from any port)."""
    loop = asyncio.get_running_loop()
    with client_socket() as sock:
        await loop.sock_sendto(sock, request, (HOST, port))
        data, _ = await recv(sock, 2.0)
        packet = parse_packet(data)
        assert isinstance(packet, ErrorPacket), packet
        return packet


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("tftp")
    root = base / "root"
    (root / "pxelinux.cfg").mkdir(parents=True)
    for size in (0, 1, 511, 512, 513, 1468 * 4, 100_000, 1_000_000):
        (root / f"f{size}").write_bytes(os.urandom(size))
    (root / "pxelinux.cfg" / "default").write_text("DEFAULT linux\n")
    (base / "secret").write_text("outside the root\n")
    (root / "escape").symlink_to(base / "secret")
    (root / "inside").symlink_to(root / "f512")
    (root / "text.txt").write_bytes(b"one\ntwo\r\n")
    return root


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


Scenario = Callable[[TftpServer], Awaitable[None]]


def serve(
    root: Path | RootFiles | Any,
    scenario: Scenario,
    *,
    config: TransferConfig | None = None,
    events: list[TftpEvent] | None = None,
) -> TftpServer:
    """Run ``scenario`` against a server on 127.0.0.1 (port 0), then close it."""
    files = RootFiles(root) if isinstance(root, Path) else root

    async def main() -> TftpServer:
        server = await start_tftp(
            HOST, 0, files, config=config, on_event=events.append if events is not None else None
        )
        try:
            await scenario(server)
            await settle(server)
        finally:
            await server.close()
        return server

    return asyncio.run(main())


async def settle(server: TftpServer, timeout: float = 2.0) -> None:
    """Wait until no transfer runs (a client returns before its last ACK is processed)."""
    for _ in range(int(timeout / 0.005)):
        if server.active == 0:
            return
        await asyncio.sleep(0.005)


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 511, 512, 513, 1468 * 4, 100_000, 1_000_000])
def test_files_arrive_byte_exact(root: Path, size: int) -> None:
    expected = (root / f"f{size}").read_bytes()

    async def scenario(server: TftpServer) -> None:
        assert await fetch(server.port, f"f{size}") == expected
        assert await fetch(server.port, f"/f{size}", {"blksize": "1468", "tsize": "0"}) == expected
        got = await fetch(server.port, f"f{size}", {"blksize": "1432", "windowsize": "4"})
        assert sha(got) == sha(expected)

    server = serve(root, scenario)
    assert server.stats.completed == 3 and server.stats.failed == 0
    assert server.stats.bytes_sent == 3 * size
    assert server.active == 0


def test_netascii(root: Path) -> None:
    async def scenario(server: TftpServer) -> None:
        assert await fetch(server.port, "text.txt", mode="netascii") == b"one\r\ntwo\r\0\r\n"

    serve(root, scenario)


def test_missing_file_is_error_1_at_once_without_paths(root: Path) -> None:
    async def scenario(server: TftpServer) -> None:
        for name in ("nope", "pxelinux.cfg/01-52-54-00-77-00-10", "/pxelinux.cfg/C0A84D91"):
            with pytest.raises(ClientError) as info:
                await fetch(server.port, name)
            assert info.value.code == ErrorCode.FILE_NOT_FOUND
            assert info.value.message == "File not found"
            assert info.value.after < 0.5
        assert await fetch(server.port, "pxelinux.cfg/default") == b"DEFAULT linux\n"

    events: list[TftpEvent] = []
    server = serve(root, scenario, events=events)
    assert server.stats.refused == 3
    assert [e.kind for e in events] == [EventKind.REFUSED] * 3 + [
        EventKind.STARTED,
        EventKind.FINISHED,
    ]


@pytest.mark.parametrize(
    ("name", "codes"),
    [
        ("../etc/passwd", {ErrorCode.ACCESS_VIOLATION}),
        ("pxelinux.cfg/../../secret", {ErrorCode.ACCESS_VIOLATION}),
        ("..\\secret", {ErrorCode.ACCESS_VIOLATION}),
        ("escape", {ErrorCode.ACCESS_VIOLATION}),  # a symlink out of the root
        ("/etc/passwd", {ErrorCode.FILE_NOT_FOUND}),  # joined under the root: not there
        ("f1\x01", {ErrorCode.ACCESS_VIOLATION}),
        ("pxelinux.cfg", {ErrorCode.FILE_NOT_FOUND}),  # a directory
    ],
)
def test_path_traversal_is_refused(root: Path, name: str, codes: set[int]) -> None:
    async def scenario(server: TftpServer) -> None:
        error = await refusal(server.port, encode_request(Opcode.RRQ, name))
        assert error.code in codes
        assert str(root) not in error.message and "secret" not in error.message
        assert error.message in ("File not found", "Access violation")

    serve(root, scenario)


def test_symlink_inside_the_root_is_served(root: Path) -> None:
    async def scenario(server: TftpServer) -> None:
        assert await fetch(server.port, "inside") == (root / "f512").read_bytes()

    serve(root, scenario)


def test_nul_injection_is_refused_and_serves_nothing(root: Path) -> None:
    async def scenario(server: TftpServer) -> None:
        # "f512\0../../secret" cannot be one name: the rest becomes the mode, which is refused
        error = await refusal(server.port, b"\x00\x01f512\x00../../secret\x00octet\x00")
        assert error.code == ErrorCode.ILLEGAL_OPERATION

    server = serve(root, scenario)
    assert server.stats.started == 0 and server.stats.dropped == 1


def test_write_request_is_refused(root: Path) -> None:
    async def scenario(server: TftpServer) -> None:
        error = await refusal(server.port, encode_request(Opcode.WRQ, "upload"))
        assert (error.code, error.message) == (ErrorCode.ACCESS_VIOLATION, "Read-only server")

    serve(root, scenario)
    assert not (root / "upload").exists()


def test_ovmf_size_probe_then_download(root: Path) -> None:
    async def scenario(server: TftpServer) -> None:
        loop = asyncio.get_running_loop()
        options = {"tsize": "0", "blksize": "1468", "windowsize": "4"}
        with client_socket() as sock:
            await loop.sock_sendto(
                sock, encode_request(Opcode.RRQ, "f100000", options=options), (HOST, server.port)
            )
            data, addr = await recv(sock)
            assert parse_packet(data) == OackPacket(
                {"tsize": "100000", "blksize": "1468", "windowsize": "4"}
            )
            await loop.sock_sendto(sock, encode_error(8, "User aborted the transfer"), addr)
        await settle(server)
        got = await fetch(server.port, "f100000", {"blksize": "1468", "windowsize": "4"})
        assert got == (root / "f100000").read_bytes()

    events: list[TftpEvent] = []
    server = serve(root, scenario, events=events)
    assert server.stats.aborted == 1 and server.stats.completed == 1 and server.stats.failed == 0
    finished = [e for e in events if e.kind is EventKind.FINISHED]
    assert [e.outcome for e in finished] == [Outcome.PROBED, Outcome.COMPLETE]
    assert finished[0].error == "User aborted the transfer"
    assert finished[1].bytes == 100_000 and finished[1].windowsize == 4


def test_wrong_tid_gets_error_5_and_the_transfer_goes_on(root: Path) -> None:
    async def scenario(server: TftpServer) -> None:
        loop = asyncio.get_running_loop()
        with client_socket() as sock, client_socket() as stray:
            await loop.sock_sendto(
                sock, encode_request(Opcode.RRQ, "f1000000"), (HOST, server.port)
            )
            data, tid = await recv(sock)
            assert parse_packet(data) == DataPacket(1, (root / "f1000000").read_bytes()[:512])
            await loop.sock_sendto(stray, encode_ack(1), tid)
            error, _ = await recv(stray)
            assert parse_packet(error) == ErrorPacket(ErrorCode.UNKNOWN_TID, "Unknown transfer ID")
            await loop.sock_sendto(sock, encode_ack(1), tid)
            data, _ = await recv(sock)
            assert parse_packet(data).block == 2  # type: ignore[union-attr]
            await loop.sock_sendto(sock, encode_error(0, "enough"), tid)

    server = serve(root, scenario)
    assert server.stats.wrong_tid == 1


def test_twenty_concurrent_transfers(root: Path) -> None:
    names = ["f1000000", "f100000", "f513", "f0"] * 5
    options = [None, {"blksize": "1468"}, {"blksize": "1468", "windowsize": "8"}, {"tsize": "0"}]

    async def scenario(server: TftpServer) -> None:
        results = await asyncio.gather(
            *(fetch(server.port, n, options[i % 4]) for i, n in enumerate(names))
        )
        for name, got in zip(names, results, strict=True):
            assert sha(got) == sha((root / name).read_bytes())

    events: list[TftpEvent] = []
    server = serve(root, scenario, events=events)
    assert server.stats.completed == 20 and server.stats.failed == 0
    started = [e for e in events if e.kind is EventKind.STARTED]
    assert len({e.client for e in started}) == 20


def test_malformed_storm_then_a_good_transfer(root: Path) -> None:
    junk = [b"", b"\x00", b"\x00\x01", b"\x00\x01no-nul", b"\x00\x09xx", b"\xff" * 600]
    junk += [os.urandom(n) for n in range(1, 200)]
    junk += [
        b"\x00\x04\x00\x01",
        b"\x00\x03\x00\x01data",
        b"\x00\x01f\x00octet\x00blksize\x00x\x00",
    ]

    async def scenario(server: TftpServer) -> None:
        loop = asyncio.get_running_loop()
        with client_socket() as sock:
            for _ in range(3):
                for datagram in junk:
                    await loop.sock_sendto(sock, datagram, (HOST, server.port))
        got = await fetch(server.port, "f100000", {"blksize": "1024"})
        assert got == (root / "f100000").read_bytes()

    server = serve(root, scenario)
    assert server.stats.dropped >= len(junk)  # random bytes may form a valid RRQ, rarely
    assert server.stats.completed >= 1


def test_a_retransmitted_request_does_not_start_a_second_transfer(root: Path) -> None:
    async def scenario(server: TftpServer) -> None:
        loop = asyncio.get_running_loop()
        rrq = encode_request(Opcode.RRQ, "f100000", options={"blksize": "1024"})
        with client_socket() as sock:
            await loop.sock_sendto(sock, rrq, (HOST, server.port))
            await loop.sock_sendto(sock, rrq, (HOST, server.port))
            data, tid = await recv(sock)
            assert isinstance(parse_packet(data), OackPacket)
            assert server.active == 1
            await loop.sock_sendto(sock, encode_error(0, "bye"), tid)

    server = serve(root, scenario)
    assert server.stats.started == 1 and server.stats.duplicate_requests == 1


def test_silent_client_times_out(root: Path) -> None:
    config = TransferConfig(timeout=0.05, max_timeout=0.1, retries=2)

    async def scenario(server: TftpServer) -> None:
        loop = asyncio.get_running_loop()
        with client_socket() as sock:
            await loop.sock_sendto(
                sock, encode_request(Opcode.RRQ, "f1000000"), (HOST, server.port)
            )
            seen = [await recv(sock) for _ in range(3)]  # DATA 1, then 2 retransmissions
            assert {parse_packet(d) for d, _ in seen} == {
                DataPacket(1, (root / "f1000000").read_bytes()[:512])
            }
            await settle(server)

    events: list[TftpEvent] = []
    server = serve(root, scenario, config=config, events=events)
    assert server.stats.failed == 1 and server.stats.retransmits == 2
    assert events[-1].kind is EventKind.FAILED and events[-1].outcome is Outcome.TIMED_OUT


def test_close_cancels_running_transfers_and_closes_files(root: Path) -> None:
    closed: list[str] = []

    class Tracked:
        def __init__(self, name: str, file: BootFile) -> None:
            self.name, self.size, self.path, self._file = name, file.size, file.path, file

        def read_at(self, offset: int, length: int) -> bytes:
            return self._file.read_at(offset, length)

        def close(self) -> None:
            closed.append(self.name)
            self._file.close()

    class Tracking(RootFiles):
        def open(self, path: str, client: Any = None) -> BootFile:
            return Tracked(path, super().open(path, client))

    got: list[bytes] = []

    async def scenario(server: TftpServer) -> None:
        loop = asyncio.get_running_loop()
        with client_socket() as sock:
            rrq = encode_request(Opcode.RRQ, "f1000000")
            await loop.sock_sendto(sock, rrq, (HOST, server.port))
            await recv(sock)
            await server.close()
            data, _ = await recv(sock)
            got.append(data)

    server = serve(Tracking(root), scenario)
    assert parse_packet(got[0]) == ErrorPacket(0, "Server shutting down")
    assert closed == ["f1000000"] and server.stats.failed == 1 and server.active == 0


def test_file_source_errors_and_bugs_do_not_stop_the_server() -> None:
    class Source:
        def open(self, path: str, client: Any = None) -> BootFile:
            if path == "boom":
                raise RuntimeError("a bug in a booter")
            if path == "mem":
                return MemoryFile("mem", b"rendered\n")
            raise FileNotFound(path)

    async def scenario(server: TftpServer) -> None:
        error = await refusal(server.port, encode_request(Opcode.RRQ, "boom"))
        assert (error.code, error.message) == (0, "Internal error")
        assert await fetch(server.port, "mem") == b"rendered\n"

    serve(Source(), scenario)


def test_event_handler_errors_are_contained(root: Path) -> None:
    def broken(event: TftpEvent) -> None:
        raise ValueError("timeline is down")

    async def scenario(server: TftpServer) -> None:
        assert await fetch(server.port, "f513") == (root / "f513").read_bytes()

    async def main() -> None:
        server = await start_tftp(HOST, 0, RootFiles(root), on_event=broken)
        try:
            await scenario(server)
        finally:
            await server.close()

    asyncio.run(main())


def test_bind_errors_propagate(root: Path) -> None:
    async def main() -> None:
        first = await start_tftp(HOST, 0, RootFiles(root))
        try:
            with pytest.raises(OSError):
                await start_tftp(HOST, first.port, RootFiles(root))
        finally:
            await first.close()

    asyncio.run(main())


# ---------------------------------------------------------------------------------------------
# the transfer thread


def test_beyond_max_transfers_is_error_0_server_busy(root: Path) -> None:
    config = TransferConfig(max_transfers=2)

    async def scenario(server: TftpServer) -> None:
        loop = asyncio.get_running_loop()
        with client_socket() as a, client_socket() as b:
            tids = []
            for sock in (a, b):  # two transfers wait for their first ACK
                await loop.sock_sendto(
                    sock, encode_request(Opcode.RRQ, "f100000"), (HOST, server.port)
                )
                tids.append((await recv(sock))[1])
            assert server.active == 2
            error = await refusal(server.port, encode_request(Opcode.RRQ, "f513"))
            assert (error.code, error.message) == (ErrorCode.NOT_DEFINED, "Server busy")
            for sock, tid in zip((a, b), tids, strict=True):
                await loop.sock_sendto(sock, encode_error(0, "enough"), tid)
            await settle(server)
        assert await fetch(server.port, "f513") == (root / "f513").read_bytes()

    server = serve(root, scenario, config=config)
    assert server.stats.busy == 1 and server.stats.refused == 1 and server.stats.completed == 1


def test_lost_final_ack_finishes_unconfirmed_not_failed(root: Path) -> None:
    config = TransferConfig(timeout=0.05, max_timeout=0.2)
    expected = (root / "f513").read_bytes()

    async def scenario(server: TftpServer) -> None:
        loop = asyncio.get_running_loop()
        with client_socket() as sock:
            await loop.sock_sendto(sock, encode_request(Opcode.RRQ, "f513"), (HOST, server.port))
            got = b""
            for block in (1, 2):
                packet, tid = await recv(sock)
                got += parse_packet(packet).payload  # type: ignore[union-attr]
                if block == 1:  # like curl: ACK, and after the last block leave at once
                    await loop.sock_sendto(sock, encode_ack(1), tid)
            assert got == expected
            await settle(server)

    events: list[TftpEvent] = []
    server = serve(root, scenario, config=config, events=events)
    assert server.stats.unconfirmed == 1 and server.stats.failed == 0
    assert server.stats.completed == 0 and server.stats.retransmits == 2
    assert events[-1].kind is EventKind.FINISHED
    assert events[-1].outcome is Outcome.COMPLETE_UNCONFIRMED


class Faulty:
    """A boot file whose ``read_at`` hits a bug (not an OSError) on read number ``bad``."""

    def __init__(self, data: bytes, bad: int) -> None:
        self.name, self.size, self.path = "faulty", len(data), None
        self._data, self._reads, self._bad = data, 0, bad
        self.closed = False

    def read_at(self, offset: int, length: int) -> bytes:
        self._reads += 1
        if self._reads == self._bad:
            raise RuntimeError("a bug in a renderer")
        return self._data[offset : offset + length]

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("bad", [1, 3])  # the first read (on the loop), a later one (thread)
def test_a_bug_while_reading_ends_that_transfer_only(root: Path, bad: int) -> None:
    opened: list[Faulty] = []

    class Source(RootFiles):
        def open(self, path: str, client: Any = None) -> BootFile:
            if path == "faulty":
                opened.append(Faulty(os.urandom(1_000_000), bad))
                return opened[-1]
            return super().open(path, client)

    async def scenario(server: TftpServer) -> None:
        with pytest.raises(ClientError) as info:  # 64 KiB per read: read 3 is near block 256
            await fetch(server.port, "faulty", {"blksize": "512"})
        assert (info.value.code, info.value.message) == (0, "Internal error")
        await settle(server)
        assert await fetch(server.port, "f100000") == (root / "f100000").read_bytes()

    events: list[TftpEvent] = []
    server = serve(Source(root), scenario, events=events)
    assert opened[0].closed and server.active == 0
    failed = [e for e in events if e.kind is EventKind.FAILED]
    assert [e.outcome for e in failed] == [Outcome.CANCELLED]
    assert server.stats.failed == 1 and server.stats.completed == 1


def test_close_leaves_no_thread_and_no_descriptor(root: Path) -> None:
    def fds() -> set[str]:
        return set(os.listdir("/proc/self/fd"))

    before_fds = fds()
    before_threads = {t.ident for t in threading.enumerate()}

    async def scenario(server: TftpServer) -> None:
        assert any(t.name == "pxeforge-tftp" for t in threading.enumerate())
        names = ["f100000", "f1000000", "f513"] * 4
        await asyncio.gather(*(fetch(server.port, n, {"blksize": "1468"}) for n in names))

    serve(root, scenario)
    assert {t.ident for t in threading.enumerate()} == before_threads
    assert fds() == before_fds


def test_a_new_transfer_is_served_while_another_waits(root: Path) -> None:
    """A lone transfer waits in a blocking recv; a second one must not wait for it."""

    async def scenario(server: TftpServer) -> None:
        loop = asyncio.get_running_loop()
        with client_socket() as idle:
            await loop.sock_sendto(
                idle, encode_request(Opcode.RRQ, "f1000000"), (HOST, server.port)
            )
            _, tid = await recv(idle)  # DATA 1, never acknowledged for now
            await asyncio.sleep(0.05)
            started = time.monotonic()
            for _ in range(5):
                assert await fetch(server.port, "f100000") == (root / "f100000").read_bytes()
            assert time.monotonic() - started < 1.0
            await loop.sock_sendto(idle, encode_error(0, "bye"), tid)

    server = serve(root, scenario)
    assert server.stats.completed == 5 and server.stats.aborted == 1


def test_two_hundred_concurrent_transfers(root: Path) -> None:
    async def scenario(server: TftpServer) -> None:
        results = await asyncio.gather(
            *(fetch(server.port, "f100000", {"blksize": "1468"}) for _ in range(200))
        )
        assert all(r == (root / "f100000").read_bytes() for r in results)

    server = serve(root, scenario)
    assert server.stats.completed == 200 and server.stats.failed == 0


def test_ipv6(root: Path) -> None:
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback")

    async def main() -> TftpServer:
        loop = asyncio.get_running_loop()
        server = await start_tftp("::1", 0, RootFiles(root))
        try:
            with (
                socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock,
                socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as stray,
            ):
                sock.bind(("::1", 0))
                stray.bind(("::1", 0))
                sock.setblocking(False)
                stray.setblocking(False)
                await loop.sock_sendto(
                    sock, encode_request(Opcode.RRQ, "f513"), ("::1", server.port)
                )
                got = b""
                for block in (1, 2):
                    data, tid = await recv(sock)
                    got += parse_packet(data).payload  # type: ignore[union-attr]
                    if block == 1:  # a stranger first: ERROR 5 from the transfer's port
                        await loop.sock_sendto(stray, encode_ack(1), tid)
                        error, source = await recv(stray)
                        assert parse_packet(error) == ErrorPacket(5, "Unknown transfer ID")
                        assert source[:2] == tid[:2]
                    await loop.sock_sendto(sock, encode_ack(block), tid)
                assert got == (root / "f513").read_bytes()
                await settle(server)
        finally:
            await server.close()
        return server

    server = asyncio.run(main())
    assert server.stats.completed == 1 and server.stats.wrong_tid == 1


def test_two_requests_from_one_client_port_run_side_by_side(root: Path) -> None:
    async def scenario(server: TftpServer) -> None:
        loop = asyncio.get_running_loop()
        with client_socket() as sock:
            tids = {}
            for name in ("f100000", "f513"):
                await loop.sock_sendto(sock, encode_request(Opcode.RRQ, name), (HOST, server.port))
                data, tid = await recv(sock)
                assert parse_packet(data) == DataPacket(1, (root / name).read_bytes()[:512])
                tids[name] = tid
            assert server.active == 2 and tids["f100000"] != tids["f513"]
            await loop.sock_sendto(sock, encode_error(0, "enough"), tids["f100000"])
            await loop.sock_sendto(sock, encode_ack(1), tids["f513"])
            data, _ = await recv(sock)
            assert parse_packet(data) == DataPacket(2, (root / "f513").read_bytes()[512:])
            await loop.sock_sendto(sock, encode_ack(2), tids["f513"])

    server = serve(root, scenario)
    assert server.stats.started == 2 and server.stats.aborted == 1
    assert server.stats.completed == 1 and server.active == 0
