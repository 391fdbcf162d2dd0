"""The lab's router advertisements: the frame (pure) and a real Linux host that accepts it.

The real test puts a second namespace with IPv6 *on* behind a veth on the lab bridge: its
kernel solicits a router when the link comes up, `RouterAdvertiser` answers, and the client's
own ICMPv6 counters must show the advertisement received and no checksum or other error — the
kernel drops an RA whose checksum, hop limit or source is wrong.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import time
from ipaddress import IPv4Interface

import pytest

from pxeforge.lab import netns
from pxeforge.lab.ra import (
    RouterAdvertiser,
    is_router_solicitation,
    link_local,
    router_advertisement_frame,
)

MAC = "52:54:00:fe:00:01"


def test_link_local_is_eui64() -> None:
    assert socket.inet_ntop(socket.AF_INET6, link_local(MAC)) == "fe80::5054:ff:fefe:1"
    with pytest.raises(ValueError):
        link_local("52:54:00")


def test_frame_is_an_ra_to_all_nodes_with_hop_limit_255() -> None:
    frame = router_advertisement_frame(MAC)
    assert frame[:6] == bytes.fromhex("333300000001") and frame[6:12] == bytes.fromhex(
        "525400fe0001"
    )
    assert frame[12:14] == b"\x86\xdd"
    ip6 = frame[14:54]
    assert ip6[0] >> 4 == 6 and ip6[6] == 58 and ip6[7] == 255
    assert struct.unpack("!H", ip6[4:6])[0] == len(frame) - 54 == 24
    assert socket.inet_ntop(socket.AF_INET6, ip6[24:40]) == "ff02::1"
    icmp = frame[54:]
    assert icmp[0] == 134 and icmp[1] == 0
    assert icmp[4:16] == bytes([64, 0, 0, 0]) + bytes(8)  # flags 0, lifetime 0: not a router
    assert icmp[16:] == bytes([1, 1]) + bytes.fromhex("525400fe0001")
    assert not is_router_solicitation(frame)
    rs = frame[:54] + bytes([133]) + frame[55:]
    assert is_router_solicitation(rs)
    assert not is_router_solicitation(rs[:60])
    assert not is_router_solicitation(b"\0" * 12 + b"\x08\x00" + rs[14:])


def _snmp6(ns: str) -> dict[str, int]:
    out = subprocess.run(
        netns.ns_exec(ns, ["cat", "/proc/net/snmp6"]), capture_output=True, text=True, check=True
    ).stdout
    return {k: int(v) for k, v in (line.split() for line in out.splitlines() if line.strip())}


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, timeout=30)


@pytest.mark.lab
def test_a_linux_host_accepts_the_advertisement() -> None:
    net = netns.LabNetwork(netns.unique_name(), address=IPv4Interface("10.213.9.1/24"))
    client = netns.unique_name()
    ra = RouterAdvertiser(net.name, net.bridge, net.bridge_mac)
    netns.create(net)
    try:
        _ip("netns", "add", client)
        _ip("-n", net.name, "link", "add", "rav0", "type", "veth", "peer", "rav1", "netns", client)
        _ip("-n", net.name, "link", "set", "rav0", "master", net.bridge, "up")
        ra.start()
        _ip("-n", client, "link", "set", "rav1", "up")  # IPv6 on: the kernel solicits
        deadline = time.monotonic() + 20
        counters = _snmp6(client)
        while counters.get("Icmp6InRouterAdvertisements", 0) < 1:
            assert time.monotonic() < deadline, f"no RA accepted: {counters}"
            time.sleep(0.2)
            counters = _snmp6(client)
        assert ra.answered >= 1
        assert counters["Icmp6OutRouterSolicits"] >= 1
        assert counters["Icmp6InErrors"] == 0 and counters["Icmp6InCsumErrors"] == 0
    finally:
        ra.stop()
        subprocess.run(["ip", "netns", "del", client], capture_output=True)
        netns.delete(net)
    assert not netns.exists(net.name) and not netns.exists(client)
