"""Answer iPXE's IPv6 router solicitations in the lab, so that it stops waiting for them.

Theory of operation
-------------------
iPXE configures IPv4 (DHCP) and IPv6 (NDP autoconfiguration) side by side and goes on only
when both are done. With no router on the segment its router solicitations go unanswered and
it waits them out: measured in the lab, ~16 s between the DHCP ACK and the first HTTP request
of every iPXE boot (BIOS ROM and snponly.efi alike; docs/lab.md: 19.6 s instead of 31–36 s
with RAs on the segment). Any router advertisement ends that wait: one that names no prefix,
sets neither the *managed* nor the *other* flag and has router lifetime 0 says "nothing to
configure here, and I am not a default router", so IPv6 is done at once and nothing else
changes — no address, no route.

The namespace keeps IPv6 off (`pxeforge.lab.netns`), so this works one layer down: an
``AF_PACKET`` socket on the bridge sees each solicitation (ICMPv6 type 133) and answers with
a whole Ethernet frame — IPv6 header, link-local source derived from the bridge's MAC
(EUI-64), destination all-nodes (ff02::1), hop limit 255 as NDP requires, and the ICMPv6
checksum over the pseudo-header (RFC 4443 §2.3). `router_advertisement_frame` and
`is_router_solicitation` are pure; `RouterAdvertiser` is the thread that joins them.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
from typing import Final

from pxeforge.lab.netns import netns_call

__all__ = [
    "RouterAdvertiser",
    "is_router_solicitation",
    "link_local",
    "router_advertisement_frame",
]

ETH_P_IPV6: Final = 0x86DD
IPPROTO_ICMPV6: Final = 58
ROUTER_SOLICITATION: Final = 133
ROUTER_ADVERTISEMENT: Final = 134
ALL_NODES: Final = bytes.fromhex("ff020000000000000000000000000001")
ALL_NODES_MAC: Final = bytes.fromhex("333300000001")
_ETH_LEN: Final = 14
_IP6_LEN: Final = 40


def _mac_bytes(mac: str) -> bytes:
    raw = bytes.fromhex(mac.replace(":", ""))
    if len(raw) != 6:
        raise ValueError(f"not a MAC address: {mac!r}")
    return raw


def link_local(mac: str) -> bytes:
    """fe80::/64 with the modified EUI-64 interface identifier of ``mac`` (RFC 4291 App. A)."""
    m = _mac_bytes(mac)
    return bytes.fromhex("fe80000000000000") + bytes([m[0] ^ 0x02]) + m[1:3] + b"\xff\xfe" + m[3:]


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def router_advertisement_frame(mac: str) -> bytes:
    """An Ethernet frame carrying an RA from ``mac``: no prefix, flags 0, router lifetime 0."""
    src = link_local(mac)
    # type, code, checksum, cur hop limit 64, flags 0, router lifetime 0, reachable 0,
    # retrans timer 0; option 1 (source link-layer address), length 1 (8 bytes)
    body = struct.pack("!BBHBBHII", ROUTER_ADVERTISEMENT, 0, 0, 64, 0, 0, 0, 0)
    body += bytes([1, 1]) + _mac_bytes(mac)
    pseudo = src + ALL_NODES + struct.pack("!I3xB", len(body), IPPROTO_ICMPV6)
    body = body[:2] + struct.pack("!H", _checksum(pseudo + body)) + body[4:]
    ip6 = struct.pack("!IHBB", 6 << 28, len(body), IPPROTO_ICMPV6, 255) + src + ALL_NODES
    return ALL_NODES_MAC + _mac_bytes(mac) + struct.pack("!H", ETH_P_IPV6) + ip6 + body


def is_router_solicitation(frame: bytes) -> bool:
    """Whether ``frame`` (Ethernet) is an ICMPv6 router solicitation with no extension header."""
    if len(frame) < _ETH_LEN + _IP6_LEN + 8:
        return False
    if struct.unpack_from("!H", frame, 12)[0] != ETH_P_IPV6 or frame[_ETH_LEN] >> 4 != 6:
        return False
    return frame[_ETH_LEN + 6] == IPPROTO_ICMPV6 and frame[_ETH_LEN + _IP6_LEN] == (
        ROUTER_SOLICITATION
    )


class RouterAdvertiser:
    """A thread answering router solicitations on ``bridge`` inside namespace ``ns``."""

    def __init__(self, ns: str, bridge: str, mac: str) -> None:
        self.ns, self.bridge = ns, bridge
        self.frame = router_advertisement_frame(mac)
        self.answered = 0  # solicitations answered (tests, reports)
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        def open_socket() -> socket.socket:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IPV6))
            try:
                sock.bind((self.bridge, ETH_P_IPV6))
            except OSError:
                sock.close()
                raise
            return sock

        self._sock = netns_call(self.ns, open_socket)  # the socket stays in the namespace
        self._thread = threading.Thread(target=self._run, name=f"ra-{self.ns}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sock = self._sock
        assert sock is not None
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([sock], [], [], 0.2)
                if not ready:
                    continue
                frame, addr = sock.recvfrom(4096)
            except OSError:
                return  # closed by stop()
            if addr[2] == socket.PACKET_OUTGOING or not is_router_solicitation(frame):
                continue
            try:
                sock.send(self.frame)
                self.answered += 1
            except OSError:
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
