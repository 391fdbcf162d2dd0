"""servers.tftp_engine pieces on real loopback sockets: transfer IDs and GSO sends.

The engine loop itself is exercised end to end by test_tftp_server.py and test_tftp_interop.py.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time

import pytest

from pxeforge.boot.files import MemoryFile
from pxeforge.protocols.tftp import ReadRequest, ReadTransfer, encode_error
from pxeforge.servers.tftp_engine import Session, TransferEngine, transfer_sockets

HOST = "127.0.0.1"


def client_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.settimeout(2.0)
    return sock


def drain(sock: socket.socket, count: int) -> list[bytes]:
    return [sock.recv(65536) for _ in range(count)]


def test_the_client_reaches_the_connected_socket_and_strangers_the_twin() -> None:
    with client_socket() as client, client_socket() as stranger:
        sock, twin = transfer_sockets(socket.AF_INET, HOST, client.getsockname(), 1 << 20)
        with sock, twin:
            port = sock.getsockname()[1]
            assert twin.getsockname() == (HOST, port) and sock.getpeername() == client.getsockname()
            client.sendto(b"from the client", (HOST, port))
            stranger.sendto(b"from a stranger", (HOST, port))
            sock.settimeout(2.0)
            twin.settimeout(2.0)
            assert sock.recv(100) == b"from the client"
            assert twin.recvfrom(100) == (b"from a stranger", stranger.getsockname())
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
                with pytest.raises(OSError):  # nobody else gets the port without SO_REUSEADDR
                    other.bind((HOST, port))


def test_each_transfer_gets_a_port_of_its_own() -> None:
    with client_socket() as client:
        pairs = [
            transfer_sockets(socket.AF_INET, HOST, client.getsockname(), 65536) for _ in range(50)
        ]
        try:
            assert len({sock.getsockname()[1] for sock, _ in pairs}) == 50
        finally:
            for sock, twin in pairs:
                sock.close()
                twin.close()


def datagram(block: int, size: int) -> bytes:
    return struct.pack("!HH", 3, block) + os.urandom(size)


@pytest.mark.parametrize(
    "sizes",
    [
        [1468] * 16,  # one window
        [1468] * 15 + [17],  # the last window of a file: a short block ends the run
        [1468] * 3 + [0],  # an empty final block
        [8192] * 16,  # above 65000 bytes: several sends
        [512] * 100,  # above 64 segments
        [1468, 1468, 100, 1468, 1468],  # a short block in the middle starts a new run
        [30, 1468, 1468],  # a small datagram first (its own run)
    ],
    ids=["window", "tail", "empty-tail", "big", "many", "middle", "small-first"],
)
def test_windows_leave_as_the_same_datagrams(sizes: list[int]) -> None:
    """Session.send joins runs of equal-sized datagrams into UDP GSO sends; the client must
    see exactly the datagrams it would see one send at a time, in order."""
    with client_socket() as client:
        sockets = transfer_sockets(socket.AF_INET, HOST, client.getsockname(), 4 << 20)
        file = MemoryFile("f", b"")
        session = Session(
            sockets, client.getsockname(), ReadTransfer(ReadRequest("f"), file, now=0.0), file
        )
        try:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sent = [datagram(i + 1, size) for i, size in enumerate(sizes)]
            session.send(sent)
            assert drain(client, len(sent)) == sent
            assert session.gso and Session.gso_works
        finally:
            session.close()


def test_engine_stop_cancels_and_hands_back() -> None:
    """A transfer in the thread is told ERROR 0 on stop and handed back with its socket
    closed; the thread is gone afterwards."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        finished: list[Session] = []
        engine = TransferEngine(loop, finished.extend)
        engine.start()
        with client_socket() as client:
            sockets = transfer_sockets(socket.AF_INET, HOST, client.getsockname(), 65536)
            file = MemoryFile("f", bytes(100_000))
            session = Session(
                sockets,
                client.getsockname(),
                ReadTransfer(ReadRequest("f"), file, now=time.monotonic()),
                file,
            )
            session.send_pending(time.monotonic())
            engine.add([session])
            assert len(client.recv(1000)) == 516  # DATA 1
            await asyncio.sleep(0.02)
            await engine.stop()
            assert client.recv(1000) == encode_error(0, "Server shutting down")
        assert finished == [session] and session.sock.fileno() == -1
        assert session.stray.fileno() == -1

    asyncio.run(main())
