"""Minimal cases the TFTP fuzz run found, against `start_tftp` in this process."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from pxeforge.boot.files import RootFiles
from pxeforge.protocols.tftp import Opcode, encode_error, encode_request
from pxeforge.servers.tftp import start_tftp


def test_two_transfers_from_one_client_port_are_both_counted(tmp_path: Path) -> None:
    # A client may start a second transfer from the same port before the first one ended
    # (the fuzzer's socket does): each gets its own TID (RFC 1350 §4) and both run.
    (tmp_path / "a").write_bytes(bytes(5000))
    (tmp_path / "b").write_bytes(bytes(5000))

    async def main() -> tuple[int, set[int]]:
        server = await start_tftp("127.0.0.1", 0, RootFiles(tmp_path))
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.bind(("127.0.0.1", 0))
            client.setblocking(False)
            tids = set()
            for name in ("a", "b"):
                client.sendto(encode_request(Opcode.RRQ, name), ("127.0.0.1", server.port))
                data, addr = await asyncio.wait_for(loop.sock_recvfrom(client, 1024), 5)
                assert data[:4] == b"\0\3\0\1"  # DATA 1 of each file
                tids.add(addr[1])
            active = server.active
            for tid in tids:  # the client stops both, so nothing outlives the test
                client.sendto(encode_error(0, "enough"), ("127.0.0.1", tid))
            for _ in range(100):
                if server.stats.aborted == 2:
                    break
                await asyncio.sleep(0.01)
            await server.close()
        return active, tids

    active, tids = asyncio.run(main())
    assert len(tids) == 2
    assert active == 2
