"""What boot file a client gets, and where its DHCP reply goes. Pure functions, no I/O.

Theory of operation
-------------------
`boot_answer` maps (`Machine`, `BootMethod`) to a `BootAnswer`: the boot file (a TFTP name or
an HTTP URL), the next-server address and the DHCP options that carry them. The rules, from
the lab notes on real firmware (docs/lab.md, "What a server must answer"):

1. An iPXE client (user class ``iPXE`` or option 175) with method ``ipxe`` gets the HTTP
   script URL ``{http_base}/boot.ipxe``, never a loader: handing iPXE ``undionly.kpxe`` again
   makes it chainload itself forever.
2. Otherwise the loader comes from `boot.firmware` by option 93 only. With method
   ``pxelinux`` a BIOS client gets ``pxelinux.0`` even when it is iPXE (QEMU's ROM is iPXE;
   pxelinux runs on its PXE stack).
3. UEFI HTTP-boot clients (arch 15/16/18/19, or vendor class ``HTTPClient``) get the loader
   as ``{http_base}/<loader>`` and option 60 ``HTTPClient``, without which EDK2 ignores the
   offer (UEFI 2.5+ §24.7).
4. Options: 67 always (NUL-terminated, as dnsmasq sends it); 66 our address for TFTP files;
   175 with 0xb0 ("no-pxedhcp") = 1 for iPXE, so it does not wait ~3 s for ProxyDHCP offers;
   in ProxyDHCP mode 60 ``PXEClient`` (PXE 2.1 §2.2.4: a ProxyDHCP offer identifies itself so)
   and 43 with discovery control 8 instead of 175.

The answer depends on nothing but its arguments, so the OFFER and the ACK carry the same
boot file: pxelinux and GRUB reuse the firmware's cached ACK.

`reply_destination` applies RFC 2131 §4.1 (how a server addresses its reply).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from types import MappingProxyType

from pxeforge.boot.firmware import loader_for
from pxeforge.boot.machine import Machine
from pxeforge.config import BootMethod
from pxeforge.protocols.dhcp import (
    MessageType,
    Option,
    Packet,
    make_reply,
)
from pxeforge.protocols.pxe import (
    HTTP_CLIENT,
    PXE_CLIENT,
    IpxeSetting,
    encode_ipxe_encap,
    encode_pxe_vendor_options,
)

__all__ = [
    "BOOT_SCRIPT",
    "BROADCAST",
    "BootAnswer",
    "boot_answer",
    "build_reply",
    "reply_destination",
]

BOOT_SCRIPT = "boot.ipxe"  # served by our HTTP server to iPXE clients
BROADCAST = "255.255.255.255"
_FILE_FIELD_MAX = 127  # the BOOTP file field holds 128 bytes, NUL-terminated
_NO_ADDRESS = IPv4Address(0)


@dataclass(frozen=True)
class BootAnswer:
    """The boot part of an OFFER/ACK: file, next-server and the options carrying them."""

    file: str  # TFTP file name relative to the boot root, or a full http:// URL
    siaddr: IPv4Address  # next-server
    options: dict[int, bytes] = field(default_factory=dict)

    @property
    def is_url(self) -> bool:
        return "://" in self.file


def boot_answer(
    machine: Machine,
    method: BootMethod,
    server_ip: IPv4Address,
    http_base: str,
    *,
    proxy: bool = False,
) -> BootAnswer | None:
    """The boot file and options for ``machine``; None when we have nothing it can boot."""
    base = http_base.rstrip("/")
    http_boot = machine.firmware.is_http_boot or machine.http_client
    if method is BootMethod.IPXE and machine.ipxe:
        file = f"{base}/{BOOT_SCRIPT}"
    else:
        loader = loader_for(machine.firmware, method)
        if loader is None:
            return None
        file = f"{base}/{loader}" if http_boot else loader
    options: dict[int, bytes] = {}
    is_url = "://" in file
    if not is_url:
        options[Option.TFTP_SERVER_NAME] = str(server_ip).encode()
    options[Option.BOOTFILE_NAME] = file.encode() + b"\0"
    if http_boot:
        options[Option.VENDOR_CLASS] = HTTP_CLIENT.encode()
    elif proxy:
        options[Option.VENDOR_CLASS] = PXE_CLIENT.encode()
    if proxy:
        if not http_boot:
            options[Option.VENDOR_SPECIFIC] = encode_pxe_vendor_options()
    elif machine.ipxe:
        options[Option.IPXE_ENCAP] = encode_ipxe_encap({IpxeSetting.NO_PXEDHCP: b"\x01"})
    return BootAnswer(file=file, siaddr=server_ip, options=options)


def build_reply(
    request: Packet,
    message_type: MessageType,
    answer: BootAnswer | None,
    *,
    server_id: IPv4Address,
    yiaddr: IPv4Address = _NO_ADDRESS,
    options: Mapping[int, bytes] = MappingProxyType({}),
) -> Packet:
    """An OFFER/ACK carrying ``answer``: `make_reply` with siaddr, the BOOTP ``file`` field
    (when the name fits, for clients that ignore option 67) and the answer's options after
    the lease ``options``. ``answer=None`` gives a plain reply with no boot information.
    """
    if answer is None:
        return make_reply(
            request, message_type, server_id=server_id, yiaddr=yiaddr, options=options
        )
    raw = answer.file.encode()
    merged = dict(options)
    merged.update(answer.options)
    return make_reply(
        request,
        message_type,
        server_id=server_id,
        yiaddr=yiaddr,
        siaddr=answer.siaddr,
        options=merged,
        file=raw if len(raw) <= _FILE_FIELD_MAX else b"",
    )


def reply_destination(
    request: Packet,
    reply: Packet,
    *,
    server_port: int = 67,
    client_port: int = 68,
) -> tuple[str, int, bool]:
    """Where to send ``reply``: (address, port, needs_arp_injection), RFC 2131 §4.1.

    * giaddr set: to the relay agent's server port (`make_reply` already set the broadcast
      bit on a NAK, so the relay broadcasts it).
    * NAK: broadcast.
    * ciaddr set (renewing, rebinding, INFORM): unicast to ciaddr.
    * broadcast bit set, or no yiaddr to send to: broadcast.
    * otherwise unicast to yiaddr at the client port; the client cannot answer ARP yet, so
      the caller must add an ARP entry for (yiaddr, chaddr) first, or broadcast instead —
      that is ``needs_arp_injection``.
    """
    if int(request.giaddr):
        return str(request.giaddr), server_port, False
    if reply.message_type is MessageType.NAK:
        return BROADCAST, client_port, False
    if int(request.ciaddr):
        return str(request.ciaddr), client_port, False
    if request.broadcast or not int(reply.yiaddr):
        return BROADCAST, client_port, False
    return str(reply.yiaddr), client_port, True
