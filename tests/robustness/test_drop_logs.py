"""A dropped DHCP datagram is logged with whom it came from: the client's MAC when its chaddr
can be read, else its source address (style.md: "log with the client MAC/address").

Only malformed datagrams are sent, so the server (on 127.0.0.1, a high port) answers nothing.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from pxeforge.boot.booter import StaticBooter
from pxeforge.boot.clients import ClientRegistry
from pxeforge.config import Settings
from pxeforge.servers.dhcp import start_dhcp

from .fuzzlab import dhcp_requests

MAC = "52:54:00:77:00:10"  # the firmware of tests/data/bios-ipxe-boot-control.pcap


def drop_logs(datagrams: list[bytes], caplog: pytest.LogCaptureFixture) -> tuple[int, list[str]]:
    """Send ``datagrams`` to a live server; (its dropped count, its log lines about them)."""

    async def main() -> int:
        settings = Settings(
            address=IPv4Address("127.0.0.1"),
            pool=(IPv4Address("127.0.0.100"), IPv4Address("127.0.0.199")),
            subnet=IPv4Network("127.0.0.0/24"),
            dhcp_port=0,
        )
        booter = StaticBooter(Path(__file__))  # never asked: nothing here decodes
        server = await start_dhcp(settings, booter, ClientRegistry(), pool=None, store=None)
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            assert server.port is not None
            for data in datagrams:
                client.sendto(data, ("127.0.0.1", server.port))
            for _ in range(200):
                if server.dropped >= len(datagrams):
                    break
                await asyncio.sleep(0.01)
            return server.dropped
        finally:
            client.close()
            await server.close()

    with caplog.at_level(logging.INFO, logger="pxeforge.dhcp"):
        dropped = asyncio.run(main())
    return dropped, [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]


def lying_option(data: bytes) -> bytes:
    """The captured DISCOVER with its first option's length byte claiming 255."""
    out = bytearray(data)
    out[241] = 255
    return bytes(out)


def test_a_datagram_without_a_readable_chaddr_is_logged_with_its_source(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dropped, lines = drop_logs([b"\x01\x01\x06\x00short"], caplog)
    assert dropped == 1
    assert len(lines) == 1 and "from 127.0.0.1:" in lines[0], lines


def test_a_malformed_datagram_with_a_readable_chaddr_is_logged_with_its_mac(
    caplog: pytest.LogCaptureFixture,
) -> None:
    discover = dhcp_requests()[0].payload
    bad = [
        lying_option(discover),  # option length runs past the end
        discover[:239],  # header cut before the magic cookie: chaddr is whole
        discover[:236] + b"\0\0\0\0" + discover[240:],  # bad magic cookie
    ]
    dropped, lines = drop_logs(bad, caplog)
    assert dropped == len(bad)
    assert len(lines) == len(bad)
    assert all(MAC in line for line in lines), lines
