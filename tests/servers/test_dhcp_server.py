"""The DHCP server: policy (DhcpResponder, no sockets), glue on loopback, glue in namespaces.

Loopback can carry only the unicast paths (ciaddr, relay, proxy port); broadcast, ARP
injection and real clients run in network namespaces (see dhcp_lab.py and
test_dhcp_interop.py).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterable
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from pxeforge.boot.clients import ClientRegistry
from pxeforge.boot.files import BootFile
from pxeforge.boot.machine import BootSpec, Machine
from pxeforge.config import BootMethod, DhcpMode, Settings
from pxeforge.leases import Lease, LeasePool, LeaseState, LeaseStore
from pxeforge.protocols.dhcp import (
    BOOTREPLY,
    FLAG_BROADCAST,
    MessageType,
    Option,
    Packet,
    ip_bytes,
    parse,
    u32_bytes,
)
from pxeforge.protocols.pxe import PxeVendorOption, parse_ipxe_encap, parse_pxe_vendor_options
from pxeforge.servers.dhcp import Decision, DhcpEvent, DhcpResponder, start_dhcp

from .dhcp_lab import (
    SERVER_IP,
    Lab,
    ServerProc,
    dhcp_lab,
    dhcp_server,
    full_settings,
    have_netns,
)

A = IPv4Address
ZERO = IPv4Address(0)
SERVER = A("10.0.0.1")
MAC = "52:54:00:12:34:56"
PXE_BIOS = b"PXEClient:Arch:00000:UNDI:002001"


class Booter:
    per_machine = False

    def __init__(self, ignore: Iterable[str] = ()) -> None:
        self.ignore = set(ignore)
        self.asked: list[Machine] = []

    def boot_spec(self, machine: Machine) -> BootSpec | None:
        self.asked.append(machine)
        return None if machine.mac in self.ignore else BootSpec(kernel="vmlinuz")

    def open_file(self, ref: str) -> BootFile | None:
        return None


def settings(**kw: Any) -> Settings:
    base: dict[str, Any] = dict(
        address=SERVER,
        pool=(A("10.0.0.100"), A("10.0.0.102")),
        subnet=IPv4Network("10.0.0.0/24"),
        router=SERVER,
        dns=(A("10.0.0.2"), A("10.0.0.3")),
        domain="lab.test",
        lease_time=3600,
        max_lease_time=7200,
    )
    base.update(kw)
    return Settings(**base)


def responder(
    s: Settings | None = None, booter: Booter | None = None
) -> tuple[DhcpResponder, ClientRegistry, LeasePool | None]:
    s = s or settings()
    pool = None
    if s.dhcp_mode is DhcpMode.FULL:
        assert s.pool is not None and s.subnet is not None
        pool = LeasePool(*s.pool, subnet=s.subnet, exclude={SERVER})
    registry = ClientRegistry()
    return DhcpResponder(s, booter or Booter(), registry, pool), registry, pool


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def request(
    mtype: MessageType,
    mac: str = MAC,
    *,
    vendor: bytes | None = PXE_BIOS,
    arch: int | None = 0,
    user_class: bytes | None = None,
    requested: IPv4Address | None = None,
    server_id: IPv4Address | None = None,
    ciaddr: IPv4Address = ZERO,
    giaddr: IPv4Address = ZERO,
    flags: int = 0,
    lease_time: int | None = None,
    client_id: bytes | None = None,
) -> Packet:
    options: dict[int, bytes] = {Option.MESSAGE_TYPE: bytes([mtype])}
    if arch is not None:
        options[Option.CLIENT_ARCH] = arch.to_bytes(2, "big")
    if vendor is not None:
        options[Option.VENDOR_CLASS] = vendor
    if user_class is not None:
        options[Option.USER_CLASS] = user_class
    if requested is not None:
        options[Option.REQUESTED_IP] = requested.packed
    if server_id is not None:
        options[Option.SERVER_ID] = server_id.packed
    if lease_time is not None:
        options[Option.LEASE_TIME] = u32_bytes(lease_time)
    if client_id is not None:
        options[Option.CLIENT_ID] = client_id
    options[Option.PARAMETER_REQUEST_LIST] = bytes([1, 3, 6, 15, 66, 67])
    return Packet(
        xid=0xC0FFEE,
        flags=flags,
        ciaddr=ciaddr,
        giaddr=giaddr,
        chaddr=mac_bytes(mac),
        options=options,
    )


def answer(d: Decision) -> Packet:
    assert d.data is not None, d.event
    p = parse(d.data)
    assert p.op == BOOTREPLY and p.xid == 0xC0FFEE
    return p


SRC = ("0.0.0.0", 68)


def handle(r: DhcpResponder, p: Packet, now: float = 1000.0, *, proxy: bool = False) -> Decision:
    # every decision goes through the wire format both ways
    return r.handle(parse(p.to_bytes()), now, source=SRC, proxy_port=proxy)


# ------------------------------------------------------------------ full mode policy


def test_discover_offers_lease_and_boot_file() -> None:
    r, registry, _ = responder()
    d = handle(r, request(MessageType.DISCOVER))
    offer = answer(d)
    assert offer.message_type is MessageType.OFFER
    assert offer.yiaddr == A("10.0.0.100")
    assert offer.siaddr == SERVER
    assert offer.server_id == SERVER
    assert offer.boot_file_name == "pxelinux.0"
    assert offer.file.rstrip(b"\0") == b"pxelinux.0"
    assert offer.get(Option.SUBNET_MASK) == A("255.255.255.0").packed
    assert offer.get(Option.ROUTER) == SERVER.packed
    assert offer.get(Option.DNS) == ip_bytes(A("10.0.0.2"), A("10.0.0.3"))
    assert offer.text(Option.DOMAIN_NAME) == "lab.test"
    assert offer.get(Option.BROADCAST_ADDRESS) == A("10.0.0.255").packed
    assert offer.u32(Option.LEASE_TIME) == 3600
    assert offer.u32(Option.RENEWAL_TIME) == 1800
    assert offer.u32(Option.REBINDING_TIME) == 3150
    # no broadcast flag: unicast to the new address, after an ARP entry
    assert (d.ip, d.port, d.arp, d.chaddr) == ("10.0.0.100", 68, True, mac_bytes(MAC))
    assert not d.durable
    assert d.event == DhcpEvent(MAC, "DISCOVER", "offer", A("10.0.0.100"), 0, "pxelinux.0")
    seen = registry.by_mac(MAC)
    assert seen is not None and seen.ip == A("10.0.0.100") and seen.arch == 0


def test_broadcast_flag_is_honoured() -> None:
    r, _, _ = responder()
    d = handle(r, request(MessageType.DISCOVER, arch=7, flags=FLAG_BROADCAST))
    assert (d.ip, d.port, d.arp) == ("255.255.255.255", 68, False)
    assert answer(d).boot_file_name == "bootx64.efi"


def test_request_selecting_acks_with_the_same_boot_file() -> None:
    r, registry, pool = responder()
    offer = answer(handle(r, request(MessageType.DISCOVER, arch=7)))
    d = handle(
        r,
        request(MessageType.REQUEST, arch=7, requested=offer.yiaddr, server_id=SERVER),
        1001.0,
    )
    ack = answer(d)
    assert ack.message_type is MessageType.ACK
    assert ack.yiaddr == offer.yiaddr
    assert (ack.boot_file_name, ack.file, ack.siaddr) == (
        offer.boot_file_name,
        offer.file,
        offer.siaddr,
    )
    assert d.durable and d.event.outcome == "ack"
    assert pool is not None
    lease = pool.lookup(offer.yiaddr)
    assert lease is not None and lease.state is LeaseState.BOUND and lease.expires == 4601.0
    upserts, _ = pool.drain_changes()
    assert [x.ip for x in upserts] == [offer.yiaddr]  # the ACK has something to commit


def test_request_for_another_server_forgets_our_offer() -> None:
    r, _, pool = responder()
    offer = answer(handle(r, request(MessageType.DISCOVER)))
    d = handle(r, request(MessageType.REQUEST, requested=A("10.0.0.50"), server_id=A("10.0.0.254")))
    assert d.data is None and d.event.outcome == "forgotten"
    assert pool is not None
    lease = pool.lookup(offer.yiaddr)
    assert lease is not None and lease.state is LeaseState.EXPIRED


def test_init_reboot_wrong_network_is_nakked_by_broadcast() -> None:
    r, _, _ = responder()
    d = handle(r, request(MessageType.REQUEST, requested=A("192.168.7.7")))
    nak = answer(d)
    assert nak.message_type is MessageType.NAK
    assert nak.yiaddr == A(0) and Option.LEASE_TIME not in nak.options
    assert (d.ip, d.port, d.arp) == ("255.255.255.255", 68, False)
    assert d.event.outcome == "nak" and not d.durable


def test_nak_through_a_relay_sets_the_broadcast_bit() -> None:
    r, _, _ = responder()
    relay = A("10.0.0.254")
    d = handle(r, request(MessageType.REQUEST, requested=A("192.168.7.7"), giaddr=relay))
    nak = answer(d)
    assert nak.message_type is MessageType.NAK and nak.broadcast
    assert (d.ip, d.port) == (str(relay), 67)
    # and a relayed DISCOVER is answered to the relay's server port
    d = handle(r, request(MessageType.DISCOVER, giaddr=relay))
    assert (d.ip, d.port, d.arp) == (str(relay), 67, False)
    assert answer(d).giaddr == relay


def test_init_reboot_and_renew_keep_the_address() -> None:
    r, _, _ = responder()
    ip = answer(handle(r, request(MessageType.DISCOVER))).yiaddr
    ack = answer(handle(r, request(MessageType.REQUEST, requested=ip)))  # INIT-REBOOT
    assert ack.message_type is MessageType.ACK and ack.yiaddr == ip
    d = handle(r, request(MessageType.REQUEST, ciaddr=ip), 2000.0)  # RENEWING
    ack = answer(d)
    assert ack.message_type is MessageType.ACK and ack.yiaddr == ip and ack.ciaddr == ip
    assert (d.ip, d.arp) == (str(ip), False)
    # someone else's address: NAK
    d = handle(r, request(MessageType.REQUEST, mac="52:54:00:00:00:09", ciaddr=ip), 2001.0)
    assert answer(d).message_type is MessageType.NAK


def test_requested_lease_time_is_capped() -> None:
    r, _, _ = responder()
    assert answer(handle(r, request(MessageType.DISCOVER, lease_time=99999))).u32(51) == 7200
    assert answer(handle(r, request(MessageType.DISCOVER, lease_time=900))).u32(51) == 900


def test_netboot_only_ignores_plain_clients_until_they_netbooted() -> None:
    r, _, _ = responder()
    plain = request(MessageType.DISCOVER, vendor=b"udhcp 1.35.0", arch=None)
    d = handle(r, plain)
    assert d.data is None and d.event.outcome == "ignored:not-for-us"
    ip = answer(handle(r, request(MessageType.DISCOVER))).yiaddr  # the PXE stage
    offer = answer(handle(r, plain))  # the installed OS: same machine, same address
    assert offer.yiaddr == ip
    assert offer.boot_file_name is None and offer.siaddr == A(0)
    assert Option.TFTP_SERVER_NAME not in offer.options


def test_plain_client_gets_an_address_only_without_netboot_only() -> None:
    booter = Booter()
    r, _, _ = responder(settings(netboot_only=False), booter)
    offer = answer(handle(r, request(MessageType.DISCOVER, vendor=None, arch=None)))
    assert offer.yiaddr == A("10.0.0.100") and offer.boot_file_name is None
    assert booter.asked == []  # the booter is asked about netboot clients only


def test_booter_none_means_silence_and_no_address_taken() -> None:
    r, _, pool = responder(booter=Booter(ignore=[MAC]))
    d = handle(r, request(MessageType.DISCOVER))
    assert d.data is None and d.event.outcome == "ignored:not-for-us"
    assert pool is not None and len(pool) == 0


def test_ipxe_gets_the_script_url() -> None:
    r, _, _ = responder(settings(boot_method=BootMethod.IPXE))
    offer = answer(handle(r, request(MessageType.DISCOVER, user_class=b"iPXE")))
    assert offer.boot_file_name == "http://10.0.0.1:8080/boot.ipxe"
    encap = offer.get(Option.IPXE_ENCAP)
    assert encap is not None and parse_ipxe_encap(encap)[0xB0] == b"\x01"
    offer = answer(handle(r, request(MessageType.DISCOVER, mac="52:54:00:00:00:01")))
    assert offer.boot_file_name == "undionly.kpxe"  # the ROM first gets iPXE


def test_exhausted_pool_is_silence() -> None:
    r, _, _ = responder()
    for n in range(3):
        assert handle(r, request(MessageType.DISCOVER, mac=f"52:54:00:00:00:0{n}")).data
    d = handle(r, request(MessageType.DISCOVER, mac="52:54:00:00:00:09"))
    assert d.data is None and d.event.outcome == "no-address"


def test_inform_gets_no_lease_options() -> None:
    r, _, _ = responder()
    d = handle(r, request(MessageType.INFORM, ciaddr=A("10.0.0.77")))
    ack = answer(d)
    assert ack.message_type is MessageType.ACK and ack.yiaddr == A(0)
    for code in (Option.LEASE_TIME, Option.RENEWAL_TIME, Option.REBINDING_TIME):
        assert code not in ack.options
    assert ack.get(Option.SUBNET_MASK) is not None and ack.boot_file_name == "pxelinux.0"
    assert (d.ip, d.port, d.arp, d.durable) == ("10.0.0.77", 68, False, False)
    d = handle(r, request(MessageType.INFORM, ciaddr=A("172.16.0.5")))
    assert d.data is None


def test_decline_and_release() -> None:
    r, _, pool = responder()
    assert pool is not None
    ip = answer(handle(r, request(MessageType.DISCOVER))).yiaddr
    handle(r, request(MessageType.REQUEST, requested=ip, server_id=SERVER))
    d = handle(r, request(MessageType.DECLINE, requested=ip, server_id=SERVER))
    assert d.data is None and d.event.outcome == "declined"
    lease = pool.lookup(ip)
    assert lease is not None and lease.state is LeaseState.DECLINED
    ip2 = answer(handle(r, request(MessageType.DISCOVER))).yiaddr
    assert ip2 != ip
    handle(r, request(MessageType.REQUEST, requested=ip2, server_id=SERVER))
    d = handle(r, request(MessageType.RELEASE, ciaddr=ip2, server_id=SERVER))
    assert d.data is None and d.event.outcome == "released"
    lease = pool.lookup(ip2)
    assert lease is not None and lease.state is LeaseState.RELEASED
    d = handle(r, request(MessageType.RELEASE, mac="52:54:00:00:00:09", ciaddr=ip2))
    assert d.event.outcome == "ignored:unknown-lease"


def test_bootp_and_replies_are_ignored() -> None:
    r, _, _ = responder()
    p = request(MessageType.DISCOVER)
    bootp = replace(p, options={k: v for k, v in p.options.items() if k != 53})
    assert handle(r, bootp).event.outcome == "ignored:not-a-dhcp-request"
    assert handle(r, replace(p, op=BOOTREPLY)).event.outcome == "ignored:not-a-dhcp-request"


# ------------------------------------------------------------------ proxy mode policy


def test_proxy_discover_offers_boot_file_without_address() -> None:
    r, registry, pool = responder(settings(dhcp_mode=DhcpMode.PROXY, pool=None))
    assert pool is None
    d = handle(r, request(MessageType.DISCOVER))
    offer = answer(d)
    assert offer.message_type is MessageType.OFFER
    assert offer.yiaddr == A(0) and offer.siaddr == SERVER
    assert offer.text(Option.VENDOR_CLASS) == "PXEClient"
    vendor = offer.get(Option.VENDOR_SPECIFIC)
    assert vendor is not None
    assert parse_pxe_vendor_options(vendor)[PxeVendorOption.DISCOVERY_CONTROL] == b"\x08"
    assert offer.boot_file_name == "pxelinux.0"
    for code in (1, 3, 6, 51, 58, 59):
        assert code not in offer.options
    assert (d.ip, d.port, d.arp) == ("255.255.255.255", 68, False)
    assert registry.by_mac(MAC) is not None


def test_proxy_port_request_is_acked_to_its_source() -> None:
    r, registry, _ = responder(settings(dhcp_mode=DhcpMode.PROXY, pool=None))
    p = request(MessageType.REQUEST, ciaddr=A("10.0.0.57"))
    d = r.handle(p, 0.0, source=("10.0.0.57", 68), proxy_port=True)
    ack = answer(d)
    assert ack.message_type is MessageType.ACK and ack.yiaddr == A(0)
    assert ack.boot_file_name == "pxelinux.0" and ack.text(Option.VENDOR_CLASS) == "PXEClient"
    assert (d.ip, d.port) == ("10.0.0.57", 68)
    seen = registry.by_mac(MAC)
    assert seen is not None and seen.ip == A("10.0.0.57")


def test_proxy_never_answers_others() -> None:
    r, _, _ = responder(settings(dhcp_mode=DhcpMode.PROXY, pool=None))
    assert handle(r, request(MessageType.DISCOVER, vendor=b"udhcp", arch=None)).data is None
    assert handle(r, request(MessageType.DISCOVER, vendor=None)).data is None
    assert handle(r, request(MessageType.REQUEST, requested=A("10.0.0.9"))).data is None
    assert handle(r, request(MessageType.DISCOVER), proxy=True).data is None
    r2, _, _ = responder(settings(dhcp_mode=DhcpMode.PROXY, pool=None), Booter(ignore=[MAC]))
    assert handle(r2, request(MessageType.DISCOVER)).data is None


# ------------------------------------------------------------ glue, on loopback
#
# Loopback carries the unicast paths: a RENEWING REQUEST (ciaddr) is answered to
# ciaddr:client_port, and with a DHCP port P other than 67 the client port is P + 1.


class SlowStore(LeaseStore):
    """A real store that also records when each commit finished (and can be slowed down)."""

    def __init__(self, path: Path, delay: float = 0.0) -> None:
        super().__init__(path)
        self.delay = delay
        self.done_at: list[float] = []
        self.batches: list[int] = []

    def write(self, upserts: Iterable[Lease], deletes: Iterable[IPv4Address] = ()) -> None:
        upserts = list(upserts)
        time.sleep(self.delay)
        super().write(upserts, deletes)
        self.batches.append(len(upserts))
        self.done_at.append(time.monotonic())


def _free_port() -> int:
    """An even/odd free pair P, P + 1 on 127.0.0.1 (server, client)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port < 65000:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s2:
                try:
                    s2.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port pair")


def loop_settings(port: int, **kw: Any) -> Settings:
    return Settings(
        address=A("127.0.0.1"),
        pool=(A("127.0.0.100"), A("127.0.0.199")),
        subnet=IPv4Network("127.0.0.0/24"),
        lease_time=600,
        dhcp_port=port,
        proxy_port=port + 2,
        **kw,
    )


def renew(mac: str, ip: IPv4Address, xid: int = 1) -> bytes:
    p = request(MessageType.REQUEST, mac=mac, ciaddr=ip)
    return replace(p, xid=xid).to_bytes()


def mac_n(n: int) -> str:
    return f"02:00:00:00:{n >> 8:02x}:{n & 255:02x}"


async def _collect(sock: socket.socket, n: int, timeout: float) -> list[tuple[Packet, float]]:
    loop = asyncio.get_running_loop()
    out: list[tuple[Packet, float]] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        try:
            data = await asyncio.wait_for(
                loop.sock_recv(sock, 4096), timeout=deadline - time.monotonic()
            )
        except TimeoutError:
            break
        out.append((parse(data), time.monotonic()))
    return out


def test_glue_acks_only_after_commit_and_groups_commits(tmp_path: Path) -> None:
    port = _free_port()

    async def main() -> tuple[Any, ...]:
        store = SlowStore(tmp_path / "leases.db", delay=0.05)
        events: list[DhcpEvent] = []
        server = await start_dhcp(
            loop_settings(port, netboot_only=False),
            Booter(),
            ClientRegistry(),
            pool=None,
            store=store,
            on_event=events.append,
        )
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            client.bind(("0.0.0.0", port + 1))
            client.setblocking(False)
            n = 60
            for i in range(n):
                ip = A(int(A("127.0.0.100")) + i)
                client.sendto(renew(mac_n(i), ip, xid=i), ("127.0.0.1", port))
            got = await _collect(client, n, 10.0)
            stats = dict(server.stats)
        finally:
            client.close()
            await server.close()
        return got, store, stats, events

    got, store, stats, events = asyncio.run(main())
    assert len(got) == 60
    assert all(p.message_type is MessageType.ACK for p, _ in got)
    assert sorted(p.xid for p, _ in got) == list(range(60))
    first_commit = store.done_at[0]
    assert all(t >= first_commit for _, t in got), "an ACK left before its lease was on disk"
    # a 50 ms commit: the 60 ACKs share a few transactions instead of 60 fsyncs
    assert sum(store.batches) == 60 and len(store.batches) < 30, store.batches
    assert stats["REQUEST:ack"] == 60 and stats["sent"] == 60
    assert stats["commits"] == len(store.batches)
    assert len(events) == 60 and events[0].outcome == "ack"
    # the leases are on disk
    with LeaseStore(tmp_path / "leases.db") as check:
        on_disk = {str(x.ip) for x in check.load() if x.state is LeaseState.BOUND}
    assert on_disk == {str(p.yiaddr) for p, _ in got}


def test_glue_drops_malformed_datagrams_and_keeps_serving(tmp_path: Path) -> None:
    port = _free_port()
    good = renew(MAC, A("127.0.0.100"))
    bad = [
        b"",
        b"\x01" * 10,
        good[:239],
        good[:236] + b"\x00\x00\x00\x00" + good[240:],  # bad magic cookie
        good[:240] + bytes([53, 9, 1]),  # option runs past the end
        bytes([1, 6, 6, 0]) + good[4:],  # htype 6 is not Ethernet
    ]

    async def main() -> tuple[list[tuple[Packet, float]], int, dict[str, int]]:
        server = await start_dhcp(
            loop_settings(port, netboot_only=False),
            Booter(),
            ClientRegistry(),
            pool=None,
            store=LeaseStore(tmp_path / "l.db"),
        )
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            client.bind(("0.0.0.0", port + 1))
            client.setblocking(False)
            for data in bad:
                client.sendto(data, ("127.0.0.1", port))
            client.sendto(good, ("127.0.0.1", port))
            got = await _collect(client, 1, 5.0)
            dropped, stats = server.dropped, dict(server.stats)
        finally:
            client.close()
            await server.close()
        return got, dropped, stats

    got, dropped, stats = asyncio.run(main())
    assert [p.message_type for p, _ in got] == [MessageType.ACK]
    assert dropped == len(bad)
    assert stats == {"REQUEST:ack": 1, "sent": 1, "commits": 1}


def test_glue_restart_keeps_leases(tmp_path: Path) -> None:
    port = _free_port()
    db = tmp_path / "leases.db"

    async def once(mac: str, ip: IPv4Address) -> Packet | None:
        server = await start_dhcp(
            loop_settings(port, netboot_only=False),
            Booter(),
            ClientRegistry(),
            pool=None,
            store=LeaseStore(db),
        )
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            client.bind(("0.0.0.0", port + 1))
            client.setblocking(False)
            client.sendto(renew(mac, ip), ("127.0.0.1", port))
            got = await _collect(client, 1, 5.0)
        finally:
            client.close()
            await server.close()
        return got[0][0] if got else None

    first = asyncio.run(once(MAC, A("127.0.0.150")))
    assert first is not None and first.message_type is MessageType.ACK
    # after a restart, another client cannot take that address: the lease was kept
    other = asyncio.run(once("52:54:00:99:99:99", A("127.0.0.150")))
    assert other is not None and other.message_type is MessageType.NAK
    again = asyncio.run(once(MAC, A("127.0.0.150")))
    assert again is not None and again.message_type is MessageType.ACK


def test_off_mode_starts_nothing() -> None:
    async def main() -> None:
        server = await start_dhcp(
            Settings(dhcp_mode=DhcpMode.OFF), Booter(), ClientRegistry(), pool=None, store=None
        )
        assert server.port is None and server.proxy_port is None
        await server.close()

    asyncio.run(main())


def test_glue_proxy_port_on_loopback() -> None:
    port = _free_port()

    async def main() -> list[tuple[Packet, float]]:
        s = loop_settings(port, dhcp_mode=DhcpMode.PROXY)
        s = replace(s, proxy_port=0, pool=None)
        server = await start_dhcp(s, Booter(), ClientRegistry(), pool=None, store=None)
        assert server.proxy_port not in (None, 0)
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            client.bind(("127.0.0.1", 0))
            client.setblocking(False)
            p = request(MessageType.REQUEST, ciaddr=A("127.0.0.1"))
            client.sendto(p.to_bytes(), ("127.0.0.1", server.proxy_port or 0))
            return await _collect(client, 1, 5.0)
        finally:
            client.close()
            await server.close()

    got = asyncio.run(main())
    assert len(got) == 1
    ack = got[0][0]
    assert ack.message_type is MessageType.ACK and ack.boot_file_name == "pxelinux.0"


# ------------------------------------------------------------ glue, in namespaces

needs_netns = pytest.mark.skipif(not have_netns(), reason="needs root and iproute2")

_CLIENT = r"""
import socket, sys, time, select
bind_ip, bind_port, dest_ip, dest_port, want, timeout = sys.argv[1:7]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"cli0")
s.bind((bind_ip, int(bind_port)))
for line in sys.stdin:
    if line.strip():
        s.sendto(bytes.fromhex(line.strip()), (dest_ip, int(dest_port)))
deadline = time.monotonic() + float(timeout)
got = 0
while got < int(want) and time.monotonic() < deadline:
    if not select.select([s], [], [], max(0.0, deadline - time.monotonic()))[0]:
        break
    data, addr = s.recvfrom(4096)
    print(addr[0], addr[1], data.hex(), flush=True)
    got += 1
"""


def exchange(
    lab: Lab,
    packets: list[bytes],
    *,
    bind: tuple[str, int],
    dest: tuple[str, int],
    want: int,
    timeout: float = 5.0,
) -> list[tuple[str, int, Packet]]:
    """Send ``packets`` from the client namespace; return the replies (source, packet)."""
    import subprocess
    import sys

    argv = ["timeout", str(timeout + 10), "ip", "netns", "exec", lab.cli, sys.executable, "-c"]
    argv += [_CLIENT, bind[0], str(bind[1]), dest[0], str(dest[1]), str(want), str(timeout)]
    done = subprocess.run(
        argv,
        input="".join(p.hex() + "\n" for p in packets),
        capture_output=True,
        text=True,
        timeout=timeout + 20,
    )
    assert done.returncode == 0, done.stderr
    out = []
    for line in done.stdout.splitlines():
        ip, port, data = line.split()
        out.append((ip, int(port), parse(bytes.fromhex(data))))
    return out


@pytest.mark.root
@needs_netns
def test_netns_relay_and_malformed() -> None:
    relay = A("10.77.0.50")
    with dhcp_lab() as lab:
        lab.in_cli("ip", "addr", "add", "10.77.0.50/24", "dev", lab.cli_if)
        with dhcp_server(lab, full_settings()) as server:
            junk = [b"\x00" * 50, b"\x01" * 300]
            d = request(MessageType.DISCOVER, mac="52:54:00:00:77:01", giaddr=relay)
            got = exchange(
                lab, [*junk, d.to_bytes()], bind=("0.0.0.0", 67), dest=(SERVER_IP, 67), want=1
            )
            assert len(got) == 1
            src_ip, src_port, offer = got[0]
            assert (src_ip, src_port) == (SERVER_IP, 67)
            assert offer.message_type is MessageType.OFFER and offer.giaddr == relay
            assert A("10.77.0.100") <= offer.yiaddr <= A("10.77.0.119")
            r = request(
                MessageType.REQUEST,
                mac="52:54:00:00:77:01",
                giaddr=relay,
                requested=offer.yiaddr,
                server_id=A(SERVER_IP),
            )
            bad = request(
                MessageType.REQUEST, mac="52:54:00:00:77:02", giaddr=relay, requested=A("1.2.3.4")
            )
            got = exchange(
                lab,
                [r.to_bytes(), bad.to_bytes()],
                bind=("0.0.0.0", 67),
                dest=(SERVER_IP, 67),
                want=2,
            )
            by_type = {p.message_type: p for _, _, p in got}
            assert by_type[MessageType.ACK].yiaddr == offer.yiaddr
            nak = by_type[MessageType.NAK]
            assert nak.broadcast and nak.giaddr == relay
            stats = server.stop()
    assert stats["dropped"] == 2
    assert stats["stats"]["DISCOVER:offer"] == 1
    assert stats["stats"]["REQUEST:ack"] == 1 and stats["stats"]["REQUEST:nak"] == 1


@pytest.mark.root
@needs_netns
def test_netns_proxy_mode() -> None:
    settings_ = {
        "address": SERVER_IP,
        "interface": "srv0",
        "dhcp_mode": "proxy",
        "subnet": "10.77.0.0/24",
    }
    with dhcp_lab() as lab:
        # the "other" DHCP server already gave the client an address
        lab.in_cli("ip", "addr", "add", "10.77.0.60/24", "dev", lab.cli_if)
        with dhcp_server(lab, settings_) as server:
            assert server.proxy_port == 4011
            pxe = request(MessageType.DISCOVER, mac="52:54:00:00:88:01", arch=7)
            plain = request(
                MessageType.DISCOVER, mac="52:54:00:00:88:02", vendor=b"udhcp 1.35", arch=None
            )
            got = exchange(
                lab,
                [plain.to_bytes(), pxe.to_bytes()],
                bind=("0.0.0.0", 68),
                dest=("255.255.255.255", 67),
                want=2,
                timeout=2.0,
            )
            assert len(got) == 1, "answered a non-PXE client in proxy mode"
            src, _, offer = got[0]
            assert src == SERVER_IP and offer.message_type is MessageType.OFFER
            assert offer.yiaddr == A(0) and offer.text(Option.VENDOR_CLASS) == "PXEClient"
            assert offer.boot_file_name == "bootx64.efi" and offer.siaddr == A(SERVER_IP)
            assert Option.LEASE_TIME not in offer.options
            req = request(
                MessageType.REQUEST, mac="52:54:00:00:88:01", arch=7, ciaddr=A("10.77.0.60")
            )
            got = exchange(
                lab, [req.to_bytes()], bind=("10.77.0.60", 3068), dest=(SERVER_IP, 4011), want=1
            )
            assert len(got) == 1
            src, src_port, ack = got[0]
            assert (src, src_port) == (SERVER_IP, 4011)  # back to our source port 3068
            assert ack.message_type is MessageType.ACK and ack.yiaddr == A(0)
            assert ack.boot_file_name == "bootx64.efi"
            stats = server.stop()
    assert stats["stats"]["DISCOVER:proxy-offer"] == 1
    assert stats["stats"]["REQUEST:proxy-ack"] == 1
    assert stats["stats"]["DISCOVER:ignored:not-pxe"] == 1


_BURST_CLIENT = r"""
import socket, sys, time, select
n = int(sys.argv[1])
packets = [bytes.fromhex(line.strip()) for line in sys.stdin if line.strip()]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"cli0")
s.bind(("10.77.0.50", 67))
s.setblocking(False)
deadline = time.monotonic() + 20
sent = 0
quiet_since = None
while time.monotonic() < deadline:
    if sent < len(packets):
        for p in packets[sent : sent + 20]:
            s.sendto(p, ("10.77.0.1", 67))
        sent += 20
    if select.select([s], [], [], 0.004)[0]:
        quiet_since = None
        while True:
            try:
                data = s.recv(4096)
            except BlockingIOError:
                break
            print(data.hex(), flush=True)
    elif sent >= len(packets):
        quiet_since = quiet_since or time.monotonic()
        if time.monotonic() - quiet_since > 1.0:
            break
"""


@pytest.mark.root
@needs_netns
def test_netns_sigkill_mid_burst_keeps_every_acked_lease(tmp_path: Path) -> None:
    """kill -9 while ACKs are flowing: every lease a client saw ACKed is in the database."""
    import os
    import signal
    import sqlite3
    import subprocess
    import sys

    relay = A("10.77.0.50")
    db = tmp_path / "leases.db"
    s = full_settings(subnet="10.77.0.0/16", pool="10.77.1.1-10.77.20.254", netboot_only=False)
    n = 3000
    packets = [
        request(
            MessageType.REQUEST,
            mac=f"02:00:00:01:{i >> 8:02x}:{i & 255:02x}",
            vendor=None,
            arch=None,
            giaddr=relay,
            requested=A(int(A("10.77.1.1")) + i),
        ).to_bytes()
        for i in range(n)
    ]
    with dhcp_lab() as lab:
        lab.in_cli("ip", "addr", "add", "10.77.0.50/24", "dev", lab.cli_if)
        server = ServerProc(lab, s, db=db, log_level="WARNING", report_events=False).start()
        client = subprocess.Popen(
            ["timeout", "40", "ip", "netns", "exec", lab.cli, sys.executable, "-c"]
            + [_BURST_CLIENT, str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert client.stdin is not None and client.stdout is not None
            client.stdin.write("".join(p.hex() + "\n" for p in packets))
            client.stdin.close()
            acked: list[IPv4Address] = []
            while len(acked) < 300:
                line = client.stdout.readline()
                if not line:
                    break
                acked.append(parse(bytes.fromhex(line.strip())).yiaddr)
            assert server.proc is not None
            os.killpg(server.proc.pid, signal.SIGKILL)  # mid-burst: no clean shutdown
            rest = client.stdout.read()  # the client stops after 1 s of silence
            client.wait(timeout=60)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
            if client.stdout is not None:
                client.stdout.close()
            server.close()
    acked += [parse(bytes.fromhex(x)).yiaddr for x in rest.split()]
    assert 300 <= len(acked) < n, len(acked)  # killed mid-burst indeed
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
    with LeaseStore(db) as store:
        on_disk = {x.ip for x in store.load() if x.state is LeaseState.BOUND}
    missing = set(acked) - on_disk
    assert not missing, f"{len(missing)} ACKed leases lost, e.g. {sorted(missing)[:3]}"


def test_arp_injection_failure_falls_back_once(caplog: pytest.LogCaptureFixture) -> None:
    """SIOCSARP on an interface that does not exist fails: logged once, then not retried."""
    from pxeforge.servers.dhcp import DhcpServer

    server = DhcpServer(None, None, interface="pxf-nosuch0")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        server._socks.append(sock)
        with caplog.at_level("WARNING", logger="pxeforge.dhcp"):
            assert not server._inject_arp("10.0.0.5", mac_bytes(MAC), 0)
            assert not server._inject_arp("10.0.0.6", mac_bytes(MAC), 0)
        warnings = [r for r in caplog.records if "ARP" in r.getMessage()]
        assert len(warnings) == 1 and "broadcast instead" in warnings[0].getMessage()
    finally:
        sock.close()
