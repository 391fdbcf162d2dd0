"""Synthesized captures for the trace tests: our codecs build the payloads, dpkt the frames.

`Wire` collects frames with their times and writes them as pcap or pcapng (dpkt writers).
Helpers speak the protocols the way real clients do: a PXE DISCOVER like QEMU's iPXE ROM or
OVMF, a server's OFFER/ACK via `make_reply`, a whole TFTP transfer (RRQ, OACK, DATA/ACK in
lock step, with retransmits, errors or silence on demand), an HTTP GET over a TCP connection.

(tests/trace has no __init__.py on purpose: as a package it would be named ``trace`` and hide
the standard library's ``trace`` module for the whole test session. Its modules are therefore
imported by their own, prefixed, names.)
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address

import dpkt

from pxeforge.protocols import pxe, tftp
from pxeforge.protocols.dhcp import (
    FLAG_BROADCAST,
    MessageType,
    Option,
    Packet,
    ip_bytes,
    make_reply,
    u16_bytes,
    u32_bytes,
)

BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"
SERVER_MAC = "02:77:00:00:00:01"
SERVER_IP = IPv4Address("192.168.77.1")
ROGUE_MAC = "02:66:00:00:00:66"
ROGUE_IP = IPv4Address("192.168.77.66")
ZERO = IPv4Address(0)
BCAST = IPv4Address("255.255.255.255")
UUID97 = bytes.fromhex("0000b01a5a000000408000525400770010")  # QEMU -uuid 5a1ab000-…-525400770010
IPXE_175 = bytes.fromhex("b105011af41000eb03010000170101220101130101110101270101190101100102")


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


@dataclass
class Wire:
    """Frames in the order they were added; times are seconds from ``start``."""

    start: float = 1_700_000_000.0
    frames: list[tuple[float, bytes]] = field(default_factory=list)
    _ip_id: int = 1

    # -- raw

    def frame(self, t: float, data: bytes) -> int:
        self.frames.append((self.start + t, data))
        return len(self.frames)

    def ip(
        self,
        t: float,
        src_mac: str,
        dst_mac: str,
        src: IPv4Address,
        dst: IPv4Address,
        proto: int,
        body: bytes,
    ) -> int:
        self._ip_id += 1
        ip = dpkt.ip.IP(
            src=src.packed,
            dst=dst.packed,
            p=proto,
            id=self._ip_id & 0xFFFF,
            ttl=64,
            data=body,
        )
        eth = dpkt.ethernet.Ethernet(
            src=mac_bytes(src_mac), dst=mac_bytes(dst_mac), type=dpkt.ethernet.ETH_TYPE_IP, data=ip
        )
        return self.frame(t, bytes(eth))

    def udp(
        self,
        t: float,
        src_mac: str,
        dst_mac: str,
        src: IPv4Address,
        sport: int,
        dst: IPv4Address,
        dport: int,
        payload: bytes,
    ) -> int:
        udp = dpkt.udp.UDP(sport=sport, dport=dport, ulen=8 + len(payload), data=payload)
        return self.ip(t, src_mac, dst_mac, src, dst, dpkt.ip.IP_PROTO_UDP, bytes(udp))

    def tcp(
        self,
        t: float,
        src_mac: str,
        dst_mac: str,
        src: IPv4Address,
        sport: int,
        dst: IPv4Address,
        dport: int,
        seq: int,
        ack: int,
        flags: int,
        payload: bytes = b"",
    ) -> int:
        seg = dpkt.tcp.TCP(
            sport=sport,
            dport=dport,
            seq=seq % 2**32,
            ack=ack % 2**32,
            flags=flags,
            win=65535,
            data=payload,
        )
        return self.ip(t, src_mac, dst_mac, src, dst, dpkt.ip.IP_PROTO_TCP, bytes(seg))

    def arp(self, t: float, src_mac: str = SERVER_MAC) -> int:
        """A gratuitous ARP: a frame that is not IP (and marks the capture's end, if last)."""
        body = bytes.fromhex("0001080006040001") + mac_bytes(src_mac) + SERVER_IP.packed
        body += bytes(6) + SERVER_IP.packed
        eth = dpkt.ethernet.Ethernet(
            src=mac_bytes(src_mac), dst=mac_bytes(BROADCAST_MAC), type=0x0806, data=body
        )
        return self.frame(t, bytes(eth))

    # -- output

    def pcap(self, *, nano: bool = False, snaplen: int = 65535) -> bytes:
        out = io.BytesIO()
        writer = dpkt.pcap.Writer(out, snaplen=snaplen, nano=nano)
        for ts, data in self.frames:
            writer.writepkt(data, ts=ts)
        return out.getvalue()

    def pcapng(self) -> bytes:
        out = io.BytesIO()
        writer = dpkt.pcapng.Writer(out, snaplen=65535)
        for ts, data in self.frames:
            writer.writepkt(data, ts=ts)
        return out.getvalue()

    # -- DHCP

    def dhcp_client(
        self, t: float, packet: Packet, *, dst: IPv4Address = BCAST, port: int = 67
    ) -> int:
        mac = packet.mac
        src = packet.ciaddr if int(packet.ciaddr) else ZERO
        dst_mac = BROADCAST_MAC if dst == BCAST else SERVER_MAC
        return self.udp(t, mac, dst_mac, src, 68, dst, port, packet.to_bytes())

    def dhcp_server(
        self,
        t: float,
        packet: Packet,
        *,
        server: IPv4Address = SERVER_IP,
        server_mac: str = SERVER_MAC,
        port: int = 67,
    ) -> int:
        to_bcast = packet.broadcast or not int(packet.yiaddr)
        dst = BCAST if to_bcast else packet.yiaddr
        dst_mac = BROADCAST_MAC if to_bcast else packet.mac
        return self.udp(t, server_mac, dst_mac, server, port, dst, 68, packet.to_bytes())

    # -- TFTP

    def tftp_request(
        self,
        t: float,
        mac: str,
        client: IPv4Address,
        port: int,
        filename: str,
        options: Mapping[str, str] | None = None,
        server: IPv4Address = SERVER_IP,
    ) -> int:
        data = tftp.encode_request(tftp.Opcode.RRQ, filename, "octet", options or {})
        return self.udp(t, mac, SERVER_MAC, client, port, server, 69, data)

    def tftp_transfer(
        self,
        t: float,
        mac: str,
        client: IPv4Address,
        port: int,
        filename: str,
        size: int,
        *,
        options: Mapping[str, str] | None = None,
        oack: Mapping[str, str] | None = None,
        tid: int = 40000,
        error: tuple[int, str] | None = None,
        client_abort: tuple[int, str] | None = None,
        resend: Iterable[int] = (),
        resend_times: int = 1,
        stop_after: int | None = None,
        server: IPv4Address = SERVER_IP,
        step: float = 0.001,
    ) -> tuple[int, float]:
        """A whole transfer; returns (the RRQ's frame number, the time after it).

        ``oack`` is what the server acknowledges (None: no OACK, plain RFC 1350); ``error``
        makes the server refuse the request; ``client_abort`` makes the client ERROR right
        after the OACK; ``resend`` lists blocks the server sends ``resend_times`` extra times;
        ``stop_after`` stops the exchange after that many blocks (the client vanishes: the
        server then resends the block three times).
        """
        rrq = self.tftp_request(t, mac, client, port, filename, options, server)
        now = t + step
        if error is not None:
            self.udp(now, SERVER_MAC, mac, server, tid, client, port, tftp.encode_error(*error))
            return rrq, now + step
        blksize = tftp.DEFAULT_BLKSIZE
        if oack is not None:
            self.udp(now, SERVER_MAC, mac, server, tid, client, port, tftp.encode_oack(oack))
            now += step
            if "blksize" in oack:
                blksize = int(oack["blksize"])
            if client_abort is not None:
                self.udp(
                    now,
                    mac,
                    SERVER_MAC,
                    client,
                    port,
                    server,
                    tid,
                    tftp.encode_error(*client_abort),
                )
                return rrq, now + step
            self.udp(now, mac, SERVER_MAC, client, port, server, tid, tftp.encode_ack(0))
            now += step
        blocks = size // blksize + 1
        extra = set(resend)
        for block in range(1, blocks + 1):
            payload = bytes(min(blksize, size - (block - 1) * blksize))
            wire_block = block & 0xFFFF
            data = tftp.encode_data(wire_block, payload)
            self.udp(now, SERVER_MAC, mac, server, tid, client, port, data)
            now += step
            if stop_after is not None and block >= stop_after:
                for _ in range(3):
                    now += 1.0
                    self.udp(now, SERVER_MAC, mac, server, tid, client, port, data)
                return rrq, now
            if block in extra:
                for _ in range(resend_times):
                    self.udp(now, SERVER_MAC, mac, server, tid, client, port, data)
                    now += step
            self.udp(now, mac, SERVER_MAC, client, port, server, tid, tftp.encode_ack(wire_block))
            now += step
        return rrq, now

    # -- HTTP

    def http_get(
        self,
        t: float,
        mac: str,
        client: IPv4Address,
        port: int,
        path: str,
        *,
        status: str = "200 OK",
        body: bytes = b"",
        server: IPv4Address = SERVER_IP,
        server_port: int = 8080,
        method: str = "GET",
        request_body: bytes = b"",
        mss: int = 1448,
        drop_segments: Iterable[int] = (),
        step: float = 0.001,
    ) -> tuple[int, float]:
        """One connection, one request; ``drop_segments``: server segments not captured."""
        c_isn, s_isn = 1000, 500000
        syn, ack, psh, fin = dpkt.tcp.TH_SYN, dpkt.tcp.TH_ACK, dpkt.tcp.TH_PUSH, dpkt.tcp.TH_FIN
        now = t
        self.tcp(now, mac, SERVER_MAC, client, port, server, server_port, c_isn, 0, syn)
        now += step
        self.tcp(
            now, SERVER_MAC, mac, server, server_port, client, port, s_isn, c_isn + 1, syn | ack
        )
        now += step
        head = f"{method} {path} HTTP/1.1\r\nHost: {server}:{server_port}\r\nUser-Agent: test\r\n"
        if request_body:
            head += f"Content-Length: {len(request_body)}\r\n"
        request = (head + "\r\n").encode() + request_body
        first = self.tcp(
            now,
            mac,
            SERVER_MAC,
            client,
            port,
            server,
            server_port,
            c_isn + 1,
            s_isn + 1,
            psh | ack,
            request,
        )
        now += step
        response = (
            f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nContent-Type: text/plain\r\n\r\n"
        ).encode() + body
        dropped = set(drop_segments)
        seq = s_isn + 1
        c_seq = c_isn + 1 + len(request)
        for index, offset in enumerate(range(0, len(response), mss)):
            chunk = response[offset : offset + mss]
            if index not in dropped:
                self.tcp(
                    now, SERVER_MAC, mac, server, server_port, client, port, seq, c_seq, ack, chunk
                )
            now += step
            seq += len(chunk)
            self.tcp(now, mac, SERVER_MAC, client, port, server, server_port, c_seq, seq, ack)
            now += step
        self.tcp(now, SERVER_MAC, mac, server, server_port, client, port, seq, c_seq, fin | ack)
        now += step
        self.tcp(now, mac, SERVER_MAC, client, port, server, server_port, c_seq, seq + 1, fin | ack)
        now += step
        self.tcp(now, SERVER_MAC, mac, server, server_port, client, port, seq + 1, c_seq + 1, ack)
        return first, now + step


# -- DHCP packets, as real clients send them -----------------------------------------------------


def pxe_request(
    mac: str,
    kind: MessageType,
    *,
    arch: int | None = 0,
    ipxe: bool = False,
    xid: int = 0x1234,
    secs: int = 4,
    server_id: IPv4Address | None = None,
    requested: IPv4Address | None = None,
    broadcast: bool = False,
    vendor: str | None = None,
) -> Packet:
    """A DISCOVER or REQUEST like QEMU's iPXE ROM (``ipxe``) or a PXE firmware sends."""
    options: dict[int, bytes] = {
        Option.MESSAGE_TYPE: bytes((kind,)),
        Option.MAX_MESSAGE_SIZE: u16_bytes(1472),
    }
    if arch is not None:
        options[Option.CLIENT_ARCH] = arch.to_bytes(2, "big")
        options[Option.CLIENT_NDI] = b"\x01\x02\x01" if arch == 0 else b"\x01\x03\x00"
        undi = "002001" if arch == 0 else "003000"
        options[Option.VENDOR_CLASS] = (vendor or f"PXEClient:Arch:{arch:05d}:UNDI:{undi}").encode()
    elif vendor is not None:
        options[Option.VENDOR_CLASS] = vendor.encode()
    if ipxe:
        options[Option.USER_CLASS] = b"iPXE"
    options[Option.PARAMETER_REQUEST_LIST] = bytes((1, 3, 6, 43, 60, 66, 67))
    if ipxe:
        options[Option.IPXE_ENCAP] = IPXE_175
    options[Option.CLIENT_ID] = b"\x01" + mac_bytes(mac)
    if arch is not None:
        options[Option.CLIENT_UUID] = UUID97
    if server_id is not None:
        options[Option.SERVER_ID] = server_id.packed
    if requested is not None:
        options[Option.REQUESTED_IP] = requested.packed
    return Packet(
        xid=xid,
        secs=secs,
        flags=FLAG_BROADCAST if broadcast else 0,
        chaddr=mac_bytes(mac),
        options=options,
    )


def server_reply(
    request: Packet,
    kind: MessageType,
    *,
    yiaddr: IPv4Address,
    server: IPv4Address = SERVER_IP,
    file: str | None = None,
    extra: Mapping[int, bytes] | None = None,
) -> Packet:
    options: dict[int, bytes] = {
        Option.LEASE_TIME: u32_bytes(3600),
        Option.SUBNET_MASK: ip_bytes(IPv4Address("255.255.255.0")),
    }
    if file is not None:
        options[Option.BOOTFILE_NAME] = file.encode()
    options.update(extra or {})
    return make_reply(
        request,
        kind,
        server_id=server,
        yiaddr=yiaddr,
        siaddr=server,
        options=options,
        file=(file or "").encode()[:127],
    )


def proxy_offer(request: Packet, *, server: IPv4Address, file: str) -> Packet:
    """A ProxyDHCP OFFER (PXE 2.1 §2.2.3): no address, PXEClient, option 43."""
    return make_reply(
        request,
        MessageType.OFFER,
        server_id=server,
        siaddr=server,
        options={
            Option.VENDOR_CLASS: b"PXEClient",
            Option.VENDOR_SPECIFIC: pxe.encode_pxe_vendor_options(),
            Option.BOOTFILE_NAME: file.encode(),
        },
    )


def dora(
    wire: Wire,
    t: float,
    mac: str,
    yiaddr: IPv4Address,
    file: str | None,
    *,
    arch: int | None = 0,
    ipxe: bool = False,
    xid: int = 0x1234,
    server: IPv4Address = SERVER_IP,
) -> float:
    """DISCOVER, OFFER, REQUEST, ACK; returns the time after the ACK."""
    disc = pxe_request(mac, MessageType.DISCOVER, arch=arch, ipxe=ipxe, xid=xid)
    wire.dhcp_client(t, disc)
    wire.dhcp_server(
        t + 0.001, server_reply(disc, MessageType.OFFER, yiaddr=yiaddr, server=server, file=file)
    )
    req = pxe_request(
        mac, MessageType.REQUEST, arch=arch, ipxe=ipxe, xid=xid, server_id=server, requested=yiaddr
    )
    wire.dhcp_client(t + 0.01, req)
    wire.dhcp_server(
        t + 0.011, server_reply(req, MessageType.ACK, yiaddr=yiaddr, server=server, file=file)
    )
    return t + 0.02
