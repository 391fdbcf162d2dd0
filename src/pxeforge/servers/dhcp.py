"""The DHCP listener: full DHCP with leases, or ProxyDHCP beside another server.

Theory of operation
-------------------
Two layers. `DhcpResponder` is the policy and has no I/O: it takes one parsed request, the
time and where it came from, consults the `LeasePool`, the `Booter` and `boot.offer`, and
returns a `Decision` — the reply bytes with their destination (or none) and a `DhcpEvent`.
`DhcpServer` is the asyncio glue: non-blocking sockets read with ``loop.add_reader`` (up to
`_BURST` datagrams per wake-up, so one event-loop tick sees a batch), parse, decide, send.

Full mode (RFC 2131 §4.3): DISCOVER → OFFER (address held ``offer_hold``); REQUEST in
SELECTING state (option 54 present) → ACK/NAK if 54 is ours, else the client took another
server's offer and ours is forgotten silently; INIT-REBOOT (50, no 54) and RENEWING /
REBINDING (ciaddr) → ACK or NAK; DECLINE quarantines the address; RELEASE frees it; INFORM →
ACK without lease options (§3.4). Lease options: 1, 3, 6, 15, 28, 51, 58 (T1 = ½ lease),
59 (T2 = ⅞ lease), 54. A network-boot client (vendor class PXEClient / HTTPClient, or iPXE)
also gets the `boot_answer`: option 67, the BOOTP ``file`` field and ``siaddr`` — the same in
OFFER and ACK, because pxelinux and GRUB reuse the firmware's ACK. With ``netboot_only``
other clients are ignored unless we already know the MAC (its PXE boot leased it an address:
the installed OS then keeps that address); without it they get an address only.

ProxyDHCP (PXE 2.1 §2.2.4): on the DHCP port, a PXEClient DISCOVER gets an OFFER with no
address (yiaddr 0, no lease options), option 60 ``PXEClient``, option 43 and the boot file; on
the proxy port (4011) its REQUEST gets the same as an ACK, sent back to its source address.
Nobody else is ever answered in proxy mode.

"No ACK before the lease is on disk": an ACK that binds a lease waits in ``_pending``. After
each batch of datagrams the pool's journal is drained and written to the `LeaseStore` in one
transaction (a worker thread by default, so the loop keeps reading while sqlite fsyncs; the
next batch collects meanwhile — a group commit), and the ACKs are sent when it returned.

Replies go where RFC 2131 §4.1 says (`reply_destination`): to the relay (giaddr:67), to
ciaddr, broadcast, or unicast to yiaddr. A client without an address cannot answer ARP, so
for that last case an ARP entry (yiaddr → chaddr) is added with the SIOCSARP ioctl first, as
dnsmasq and ISC dhcpd do; if the ioctl fails the reply is broadcast instead (logged once).
Each datagram is received with IP_PKTINFO and answered out of the interface it came in on,
so broadcasts leave by the right interface even without ``--interface``.

A malformed datagram is counted in ``dropped`` and logged with its source; the loop goes on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import errno
import fcntl
import logging
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from types import MappingProxyType
from typing import Literal

from pxeforge.boot.booter import Booter
from pxeforge.boot.clients import ClientRegistry
from pxeforge.boot.machine import Machine
from pxeforge.boot.offer import BROADCAST, BootAnswer, boot_answer, build_reply, reply_destination
from pxeforge.config import DhcpMode, Settings
from pxeforge.errors import ConfigError, DhcpError, LeaseError, StartupError
from pxeforge.leases import LeasePool, LeaseStore
from pxeforge.protocols.dhcp import (
    BOOTREQUEST,
    FLAG_BROADCAST,
    MessageType,
    Option,
    Packet,
    ip_bytes,
    make_reply,
    max_reply_size,
    parse,
    u32_bytes,
)
from pxeforge.protocols.pxe import (
    client_arch,
    is_http_client,
    is_ipxe,
    is_pxe_client,
    machine_from_packet,
)

__all__ = [
    "Decision",
    "DhcpEvent",
    "DhcpResponder",
    "DhcpServer",
    "start_dhcp",
    "with_request",
]

log = logging.getLogger("pxeforge.dhcp")

_BURST = 64  # datagrams read per wake-up before the loop gets control back
_RECV_SIZE = 4096
_RCVBUF = 1 << 20
_IP_PKTINFO = 8  # <linux/in.h>; not exported by Python's socket module
_PKTINFO = struct.Struct("=i4s4s")  # struct in_pktinfo: ifindex, spec_dst, addr
_SIOCSARP = 0x8955  # <linux/sockios.h>
_ATF_COM = 0x02  # completed entry (not permanent: the kernel ages it out)
_ARPHRD_ETHER = 1

Commit = Literal["thread", "inline"]


@dataclass(frozen=True, slots=True)
class DhcpEvent:
    """One decision, for logs and the timeline. ``type`` is the request's message type.

    The request's own details (``vendor_class`` … ``server``, and ``arch`` when the decision
    did not look at it) are filled in by `DhcpServer` only when someone listens (``on_event``),
    and take no part in comparisons.
    """

    mac: str
    type: str
    outcome: str  # offer, ack, nak, ignored:<why>, no-address, declined, released, forgotten…
    ip: IPv4Address | None = None
    arch: int | None = None
    loader: str | None = None
    vendor_class: str | None = field(default=None, compare=False)  # option 60
    user_class: str | None = field(default=None, compare=False)  # option 77, as text
    ipxe: bool = field(default=False, compare=False)  # option 77 "iPXE" or option 175
    server: str | None = field(default=None, compare=False)  # option 54 (a REQUEST's choice)


@dataclass(frozen=True, slots=True)
class Decision:
    """What to send for one request: ``data`` to ``(ip, port)``, or nothing (``data`` None).

    ``arp``: unicast to an address that cannot answer ARP yet — add an entry for
    (``ip``, ``chaddr``) first. ``durable``: an ACK binding a lease, sent after the commit.
    """

    event: DhcpEvent
    data: bytes | None = None
    ip: str = BROADCAST
    port: int = 68
    arp: bool = False
    durable: bool = False
    chaddr: bytes = b""


class DhcpResponder:
    """The DHCP policy: request in, `Decision` out. No sockets, no disk, time passed in."""

    def __init__(
        self,
        settings: Settings,
        booter: Booter,
        registry: ClientRegistry,
        pool: LeasePool | None,
    ) -> None:
        if settings.address is None:
            raise ConfigError("DHCP needs our address (--address or --interface)")
        if settings.dhcp_mode is DhcpMode.FULL and pool is None:
            raise ConfigError("--dhcp full needs an address pool (--pool FIRST-LAST)")
        self.settings = settings
        self.booter = booter
        self.registry = registry
        self.pool = pool
        self.server_ip: IPv4Address = settings.address
        self.subnet = settings.subnet or IPv4Network(f"{settings.address}/24", strict=False)
        self.server_port = settings.dhcp_port
        self.client_port = 68 if settings.dhcp_port == 67 else settings.dhcp_port + 1
        self._static = self._static_options()
        self._by_lease_time: dict[int, Mapping[int, bytes]] = {}

    def _static_options(self) -> dict[int, bytes]:
        s = self.settings
        out: dict[int, bytes] = {Option.SUBNET_MASK: self.subnet.netmask.packed}
        if s.router is not None:
            out[Option.ROUTER] = ip_bytes(s.router)
        if s.dns:
            out[Option.DNS] = ip_bytes(*s.dns)
        if s.domain:
            out[Option.DOMAIN_NAME] = s.domain.encode()
        out[Option.BROADCAST_ADDRESS] = self.subnet.broadcast_address.packed
        return out

    # ---------------------------------------------------------------- entry point

    def handle(
        self, p: Packet, now: float, *, source: tuple[str, int], proxy_port: bool
    ) -> Decision:
        """Decide the answer to ``p`` (received on the DHCP port, or the proxy port)."""
        mtype = p.message_type
        name = mtype.name if mtype is not None else "BOOTP"
        mac = p.mac  # DhcpError for non-Ethernet: the caller drops it
        if p.op != BOOTREQUEST or mtype is None:
            return self._ignore(mac, name, "not-a-dhcp-request")
        if self.settings.dhcp_mode is DhcpMode.PROXY:
            return self._proxy(p, mtype, mac, source, proxy_port)
        if proxy_port:
            return self._ignore(mac, name, "proxy-port-in-full-mode")
        if mtype is MessageType.DISCOVER:
            return self._discover(p, mac, now)
        if mtype is MessageType.REQUEST:
            return self._request(p, mac, now)
        if mtype is MessageType.DECLINE:
            return self._decline(p, mac, now)
        if mtype is MessageType.RELEASE:
            return self._release(p, mac, now)
        if mtype is MessageType.INFORM:
            return self._inform(p, mac)
        return self._ignore(mac, name, "unhandled-type")

    # ------------------------------------------------------------------- helpers

    @staticmethod
    def _ignore(mac: str, name: str, why: str, ip: IPv4Address | None = None) -> Decision:
        return Decision(DhcpEvent(mac, name, f"ignored:{why}", ip))

    def _boot(self, p: Packet, machine: Machine, *, proxy: bool) -> tuple[bool, BootAnswer | None]:
        """(answer this client at all?, its boot answer or None for an address only)."""
        netboot = is_pxe_client(p) or is_http_client(p) or machine.ipxe
        if not netboot:
            if not self.settings.netboot_only or self._known(p, machine.mac):
                return True, None
            return False, None
        if self.booter.boot_spec(machine) is None:
            return False, None
        answer = boot_answer(
            machine,
            self.settings.boot_method,
            self.server_ip,
            self.settings.http_base,
            proxy=proxy,
        )
        if answer is None and self.settings.netboot_only:
            return False, None
        return True, answer

    def _known(self, p: Packet, mac: str) -> bool:
        """A plain client we already booted (its firmware leased an address from us)."""
        if self.registry.by_mac(mac) is not None:
            return True
        return self.pool is not None and self.pool.lease_of(mac, p.client_id) is not None

    def _lease_time(self, p: Packet) -> int:
        asked = p.u32(Option.LEASE_TIME)
        if asked is None:
            return self.settings.lease_time
        return max(60, min(asked, self.settings.max_lease_time))

    def _lease_options(self, lease_time: int) -> Mapping[int, bytes]:
        out = self._by_lease_time.get(lease_time)
        if out is None:
            opts = dict(self._static)
            opts[Option.LEASE_TIME] = u32_bytes(lease_time)
            opts[Option.RENEWAL_TIME] = u32_bytes(lease_time // 2)  # T1 (RFC 2131 §4.4.5)
            opts[Option.REBINDING_TIME] = u32_bytes(lease_time * 7 // 8)  # T2
            out = MappingProxyType(opts)
            if len(self._by_lease_time) < 64:  # clients choose option 51: keep the cache small
                self._by_lease_time[lease_time] = out
        return out

    def _send(
        self,
        p: Packet,
        reply: Packet,
        event: DhcpEvent,
        *,
        durable: bool = False,
        to: tuple[str, int] | None = None,
    ) -> Decision:
        if int(reply.giaddr) and reply.message_type is MessageType.NAK:
            # RFC 2131 §4.1: a NAK through a relay has the broadcast bit set for the relay
            reply = dataclasses.replace(reply, flags=reply.flags | FLAG_BROADCAST)
        data = reply.to_bytes(max_reply_size(p))
        if to is not None:
            ip, port, arp = to[0], to[1], False
        else:
            ip, port, arp = reply_destination(
                p, reply, server_port=self.server_port, client_port=self.client_port
            )
        return Decision(event, data, ip, port, arp, durable, p.chaddr[:6])

    def _nak(self, p: Packet, mac: str, why: str, ip: IPv4Address | None) -> Decision:
        log.info("DHCP NAK to %s for %s: %s", mac, ip, why)
        reply = make_reply(
            p,
            MessageType.NAK,
            server_id=self.server_ip,
            options={Option.MESSAGE: why.encode()},
        )
        return self._send(p, reply, DhcpEvent(mac, "REQUEST", "nak", ip, None))

    # ---------------------------------------------------------------- full mode

    def _discover(self, p: Packet, mac: str, now: float) -> Decision:
        assert self.pool is not None
        machine = machine_from_packet(p)
        answer_it, answer = self._boot(p, machine, proxy=False)
        if not answer_it:
            return self._ignore(mac, "DISCOVER", "not-for-us")
        try:
            ip = self.pool.offer(mac, p.client_id, p.requested_ip, now)
        except LeaseError as exc:
            log.warning("DHCP DISCOVER from %s: %s", mac, exc)
            return Decision(DhcpEvent(mac, "DISCOVER", "no-address", None, machine.arch))
        self.registry.seen(dataclasses.replace(machine, ip=ip))
        reply = build_reply(
            p,
            MessageType.OFFER,
            answer,
            server_id=self.server_ip,
            yiaddr=ip,
            options=self._lease_options(self._lease_time(p)),
        )
        loader = answer.file if answer is not None else None
        log.info("DHCP OFFER %s to %s (arch %s, boot %s)", ip, mac, machine.arch, loader)
        return self._send(p, reply, DhcpEvent(mac, "DISCOVER", "offer", ip, machine.arch, loader))

    def _request(self, p: Packet, mac: str, now: float) -> Decision:
        assert self.pool is not None
        server_id = p.server_id
        requested = p.requested_ip
        if server_id is not None and server_id != self.server_ip:
            self.pool.forget_offer(mac, now, client_id=p.client_id)
            return Decision(DhcpEvent(mac, "REQUEST", "forgotten", requested))
        machine = machine_from_packet(p)
        answer_it, answer = self._boot(p, machine, proxy=False)
        if not answer_it:
            return self._ignore(mac, "REQUEST", "not-for-us", requested)
        lease_time = self._lease_time(p)
        if server_id is not None or int(p.ciaddr) == 0:
            # SELECTING (54 and 50) or INIT-REBOOT (50 only)
            if requested is None:
                return self._nak(p, mac, "no requested address", None)
            lease = self.pool.request(mac, requested, now, lease_time, client_id=p.client_id)
            ip = requested
        else:  # RENEWING (unicast) / REBINDING (broadcast): ciaddr is the address
            ip = p.ciaddr
            lease = self.pool.renew(mac, ip, now, lease_time, client_id=p.client_id)
        if lease is None:
            return self._nak(p, mac, f"address {ip} not available", ip)
        self.registry.seen(dataclasses.replace(machine, ip=ip))
        reply = build_reply(
            p,
            MessageType.ACK,
            answer,
            server_id=self.server_ip,
            yiaddr=ip,
            options=self._lease_options(lease_time),
        )
        loader = answer.file if answer is not None else None
        log.info("DHCP ACK %s to %s (%ss, boot %s)", ip, mac, lease_time, loader)
        event = DhcpEvent(mac, "REQUEST", "ack", ip, machine.arch, loader)
        return self._send(p, reply, event, durable=True)

    def _decline(self, p: Packet, mac: str, now: float) -> Decision:
        assert self.pool is not None
        ip = p.requested_ip
        if ip is None or (p.server_id is not None and p.server_id != self.server_ip):
            return self._ignore(mac, "DECLINE", "not-ours", ip)
        if not self.pool.decline(mac, ip, now, client_id=p.client_id):
            return self._ignore(mac, "DECLINE", "unknown-lease", ip)
        log.warning("DHCP DECLINE from %s: %s is in use by another host; quarantined", mac, ip)
        return Decision(DhcpEvent(mac, "DECLINE", "declined", ip))

    def _release(self, p: Packet, mac: str, now: float) -> Decision:
        assert self.pool is not None
        ip = p.ciaddr
        if not self.pool.release(mac, ip, client_id=p.client_id, now=now):
            return self._ignore(mac, "RELEASE", "unknown-lease", ip)
        log.info("DHCP RELEASE of %s by %s", ip, mac)
        return Decision(DhcpEvent(mac, "RELEASE", "released", ip))

    def _inform(self, p: Packet, mac: str) -> Decision:
        assert self.pool is not None
        ip = p.ciaddr
        if not int(ip) or not self.pool.inform(ip):
            return self._ignore(mac, "INFORM", "not-our-subnet", ip)
        machine = machine_from_packet(p)
        answer_it, answer = self._boot(p, machine, proxy=False)
        if not answer_it:
            return self._ignore(mac, "INFORM", "not-for-us", ip)
        self.registry.seen(machine)
        reply = build_reply(
            p, MessageType.ACK, answer, server_id=self.server_ip, options=dict(self._static)
        )
        loader = answer.file if answer is not None else None
        return self._send(p, reply, DhcpEvent(mac, "INFORM", "ack", ip, machine.arch, loader))

    # ---------------------------------------------------------------- proxy mode

    def _proxy(
        self,
        p: Packet,
        mtype: MessageType,
        mac: str,
        source: tuple[str, int],
        proxy_port: bool,
    ) -> Decision:
        name = mtype.name
        if not is_pxe_client(p):
            return self._ignore(mac, name, "not-pxe")
        if proxy_port:
            if mtype not in (MessageType.REQUEST, MessageType.INFORM):
                return self._ignore(mac, name, "proxy-wants-request")
            kind, to = MessageType.ACK, (source[0], source[1])
        else:
            if mtype is not MessageType.DISCOVER:
                return self._ignore(mac, name, "proxy-answers-discover-only")
            kind, to = MessageType.OFFER, None
        machine = machine_from_packet(p)
        answer_it, answer = self._boot(p, machine, proxy=True)
        if not answer_it or answer is None:
            return self._ignore(mac, name, "not-for-us")
        ip = machine.ip
        if ip is None and proxy_port and source[0] != "0.0.0.0":
            ip = IPv4Address(source[0])
        self.registry.seen(dataclasses.replace(machine, ip=ip))
        reply = build_reply(p, kind, answer, server_id=self.server_ip)
        log.info("ProxyDHCP %s to %s (boot %s)", kind.name, mac, answer.file)
        event = DhcpEvent(mac, name, "proxy-" + kind.name.lower(), ip, machine.arch, answer.file)
        return self._send(p, reply, event, to=to)


# --------------------------------------------------------------------- the glue


def _udp_socket(port: int, interface: str | None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
        if interface:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        else:  # learn each datagram's interface, to answer out of the same one
            sock.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
        sock.bind(("0.0.0.0", port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _arpreq(ip: str, mac: bytes, device: str) -> bytes:
    """struct arpreq (<net/if_arp.h>): protocol address, hardware address, flags, mask, dev."""
    pa = struct.pack("=HH4s8x", socket.AF_INET, 0, socket.inet_aton(ip))
    ha = struct.pack("=H14s", _ARPHRD_ETHER, mac)
    return pa + ha + struct.pack("=i16x16s", _ATF_COM, device.encode()[:15])


class DhcpServer:
    """Running DHCP listeners; build with `start_dhcp`, stop with `close`.

    ``stats`` counts ``<TYPE>:<outcome>`` per request (``DISCOVER:offer``,
    ``REQUEST:nak`` …) plus ``sent``, ``send-error``, ``commits``; ``dropped`` counts
    malformed datagrams.
    """

    def __init__(
        self,
        responder: DhcpResponder | None,
        store: LeaseStore | None,
        *,
        interface: str | None,
        on_event: Callable[[DhcpEvent], object] | None = None,
        commit: Commit = "thread",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.responder = responder
        self.store = store
        self.interface = interface
        self.on_event = on_event
        self.commit = commit
        self.clock = clock
        self.stats: Counter[str] = Counter()
        self.dropped = 0
        self.port: int | None = None
        self.proxy_port: int | None = None
        self._socks: list[socket.socket] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[tuple[socket.socket, Decision, int]] = []
        self._writing: asyncio.Future[None] | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._arp_ok = True
        self._closed = False

    # ------------------------------------------------------------------- start

    def _listen(self, loop: asyncio.AbstractEventLoop, port: int, *, proxy: bool) -> int:
        sock = _udp_socket(port, self.interface)
        self._socks.append(sock)
        loop.add_reader(sock.fileno(), self._on_readable, sock, proxy)
        bound: int = sock.getsockname()[1]
        return bound

    # ------------------------------------------------------------------ reading

    def _on_readable(self, sock: socket.socket, proxy: bool) -> None:
        pktinfo = self.interface is None  # bound to a device: no need to ask which one
        for _ in range(_BURST):
            ifindex = 0
            try:
                if pktinfo:
                    data, ancdata, _flags, addr = sock.recvmsg(_RECV_SIZE, 64)
                    for level, kind, value in ancdata:
                        if level == socket.IPPROTO_IP and kind == _IP_PKTINFO and len(value) >= 12:
                            ifindex = _PKTINFO.unpack_from(value)[0]
                else:
                    data, addr = sock.recvfrom(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                log.warning("DHCP receive error: %s", exc)
                break
            self._datagram(sock, data, addr, ifindex, proxy)
        self._maybe_commit()

    def _datagram(
        self, sock: socket.socket, data: bytes, addr: tuple[str, int], ifindex: int, proxy: bool
    ) -> None:
        assert self.responder is not None
        try:
            packet = parse(data)
            decision = self.responder.handle(packet, self.clock(), source=addr, proxy_port=proxy)
        except DhcpError as exc:
            self.dropped += 1
            log.info(
                "DHCP: dropped a malformed datagram from %s:%d%s: %s",
                addr[0],
                addr[1],
                _readable_mac(data),
                exc,
            )
            return
        except Exception:  # a bug in policy or booter must not stop the server
            self.dropped += 1
            log.exception("DHCP: error while answering %s:%d", addr[0], addr[1])
            return
        event = decision.event
        self.stats[f"{event.type}:{event.outcome}"] += 1
        if self.on_event is not None:
            try:
                self.on_event(with_request(event, packet))
            except Exception:
                log.exception("DHCP on_event callback failed")
        if decision.data is None:
            return
        if decision.durable and self.store is not None:
            self._pending.append((sock, decision, ifindex))
        else:
            self._transmit(sock, decision, ifindex)

    # ------------------------------------------------------------ group commit

    def _has_work(self) -> bool:
        pool = self.responder.pool if self.responder is not None else None
        return bool(self._pending) or (pool is not None and pool.has_changes)

    def _maybe_commit(self) -> None:
        if self.store is None or self._writing is not None or not self._has_work():
            return
        assert self.responder is not None and self.responder.pool is not None
        batch, self._pending = self._pending, []
        upserts, deletes = self.responder.pool.drain_changes()
        if self.commit == "inline" or self._loop is None or self._executor is None:
            try:
                self.store.write(upserts, deletes)
            except Exception as exc:
                self._commit_failed(exc, batch)
            else:
                self._committed(batch)
            return
        fut = self._loop.run_in_executor(self._executor, self.store.write, upserts, deletes)
        self._writing = fut
        fut.add_done_callback(lambda f: self._write_done(f, batch))

    def _write_done(
        self, fut: asyncio.Future[None], batch: list[tuple[socket.socket, Decision, int]]
    ) -> None:
        self._writing = None
        exc = fut.exception() if not fut.cancelled() else asyncio.CancelledError()
        if exc is not None:
            self._commit_failed(exc, batch)
        else:
            self._committed(batch)
        if not self._closed:
            self._maybe_commit()

    def _committed(self, batch: list[tuple[socket.socket, Decision, int]]) -> None:
        self.stats["commits"] += 1
        for sock, decision, ifindex in batch:
            self._transmit(sock, decision, ifindex)

    def _commit_failed(
        self, exc: BaseException, batch: list[tuple[socket.socket, Decision, int]]
    ) -> None:
        # The ACKs are withheld: the clients retransmit their REQUEST and the pool, which
        # still holds their lease, journals it again for the next commit.
        self.stats["commit-error"] += 1
        log.error("lease database write failed, %d ACK(s) withheld: %s", len(batch), exc)

    # ----------------------------------------------------------------- sending

    def _transmit(self, sock: socket.socket, d: Decision, ifindex: int) -> None:
        assert d.data is not None
        ip = d.ip
        if d.arp and not self._inject_arp(ip, d.chaddr, ifindex):
            ip = BROADCAST
        try:
            if ifindex:
                anc = [(socket.IPPROTO_IP, _IP_PKTINFO, _PKTINFO.pack(ifindex, bytes(4), bytes(4)))]
                sock.sendmsg([d.data], anc, 0, (ip, d.port))
            else:
                sock.sendto(d.data, (ip, d.port))
        except OSError as exc:
            self.stats["send-error"] += 1
            log.warning("DHCP: cannot send to %s:%d for %s: %s", ip, d.port, d.event.mac, exc)
            return
        self.stats["sent"] += 1

    def _inject_arp(self, ip: str, mac: bytes, ifindex: int) -> bool:
        if not self._arp_ok or len(mac) != 6:
            return False
        device = self.interface or ""
        if not device and ifindex:
            with contextlib.suppress(OSError):
                device = socket.if_indextoname(ifindex)
        try:
            fcntl.ioctl(self._socks[0].fileno(), _SIOCSARP, _arpreq(ip, mac, device))
        except OSError as exc:
            self._arp_ok = False
            hint = " (needs CAP_NET_ADMIN)" if exc.errno == errno.EPERM else ""
            log.warning(
                "DHCP: cannot add ARP entries (%s)%s; unicast replies are broadcast instead",
                exc.strerror,
                hint,
            )
            return False
        return True

    # ------------------------------------------------------------------- stop

    async def close(self) -> None:
        """Stop reading, commit and send what is pending, close sockets and the store."""
        if self._closed:
            return
        self._closed = True
        loop = self._loop
        for sock in self._socks:
            if loop is not None:
                loop.remove_reader(sock.fileno())
        if self._writing is not None:
            with contextlib.suppress(Exception):
                await self._writing
        if self.store is not None and self._has_work():
            self.commit = "inline"
            self._maybe_commit()
        for sock in self._socks:
            sock.close()
        self._socks.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self.store is not None:
            self.store.close()


async def start_dhcp(
    settings: Settings,
    booter: Booter,
    registry: ClientRegistry,
    *,
    pool: LeasePool | None,
    store: LeaseStore | None,
    on_event: Callable[[DhcpEvent], object] | None = None,
    commit: Commit = "thread",
) -> DhcpServer:
    """Start DHCP as ``settings.dhcp_mode`` says: bind the ports, load the leases.

    Full mode: ``dhcp_port``, answering from ``pool`` (built from the settings when None),
    leases persisted in ``store`` (None: in memory only). Proxy mode: ``dhcp_port`` and
    ``proxy_port``, no pool. Off: nothing is started. OSError from bind propagates (the
    service runner turns it into a `StartupError`).
    """
    loop = asyncio.get_running_loop()
    mode = settings.dhcp_mode
    if mode is DhcpMode.OFF:
        return DhcpServer(None, None, interface=settings.interface)
    if mode is DhcpMode.FULL and pool is None:
        pool = pool_from_settings(settings)
    if mode is not DhcpMode.FULL:
        pool, store = None, None
    responder = DhcpResponder(settings, booter, registry, pool)
    server = DhcpServer(
        responder, store, interface=settings.interface, on_event=on_event, commit=commit
    )
    server._loop = loop
    try:
        if store is not None:
            assert pool is not None
            store.open()
            kept = pool.restore(store.load(), server.clock())
            log.info("DHCP: %d lease(s) loaded from %s", kept, store.path)
            server._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="pxeforge-leases"
            )
        server.port = server._listen(loop, settings.dhcp_port, proxy=False)
        if mode is DhcpMode.PROXY:
            server.proxy_port = server._listen(loop, settings.proxy_port, proxy=True)
    except BaseException:
        await server.close()
        raise
    return server


def pool_from_settings(settings: Settings) -> LeasePool:
    """The `LeasePool` the settings describe (our address and the router excluded)."""
    if settings.pool is None:
        raise StartupError("--dhcp full needs --pool FIRST-LAST")
    subnet = settings.subnet
    if subnet is None and settings.address is not None:
        subnet = IPv4Network(f"{settings.address}/24", strict=False)
    if subnet is None:
        raise ConfigError("DHCP needs a subnet (--subnet) or our address (--address)")
    exclude = {a for a in (settings.address, settings.router) if a is not None}
    return LeasePool(
        settings.pool[0],
        settings.pool[1],
        subnet=subnet,
        reservations=settings.reservations,
        exclude=exclude,
    )


def with_request(event: DhcpEvent, p: Packet) -> DhcpEvent:
    """``event`` with the request's details (vendor and user class, iPXE, server id, arch)."""
    vendor = p.options.get(Option.VENDOR_CLASS)
    user = p.options.get(Option.USER_CLASS)
    server = p.options.get(Option.SERVER_ID)
    return DhcpEvent(
        event.mac,
        event.type,
        event.outcome,
        event.ip,
        event.arch if event.arch is not None else client_arch(p),
        event.loader,
        None if vendor is None else _printable(vendor),
        None if user is None else _printable(user),
        is_ipxe(p),
        str(IPv4Address(server)) if server is not None and len(server) == 4 else None,
    )


def _printable(value: bytes) -> str:
    """Option text for a person: Latin-1, NULs stripped, control characters as ``?``."""
    text = value.decode("latin-1").rstrip("\0")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else "?" for c in text)


def _readable_mac(data: bytes) -> str:
    """`` (MAC aa:bb:…)`` when a broken datagram still has an Ethernet chaddr, else ``""``."""
    if len(data) >= 34 and data[1] == 1 and data[2] == 6:  # htype Ethernet, hlen 6
        return " (MAC " + ":".join(f"{b:02x}" for b in data[28:34]) + ")"
    return ""
